# frozen_string_literal: true

desc "Print the module graphs of mwrap-preload and mwrap-core; fail on a cycle"
task :modules do
  root = File.expand_path("..", __dir__)
  ruby = RbConfig.ruby
  sh ruby, File.join(root, "tools", "module_graph.rb"),
     File.join(root, "ext", "mwrap-preload", "src"), File.join(root, "ext", "mwrap-core", "src")
end
