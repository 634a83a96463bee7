# frozen_string_literal: true

require "rbconfig"
require "tmpdir"
require_relative "build_env"
require_relative "../lib/mwrap/version"

namespace :test do
  desc "cargo test for mwrap-core and mwrap-preload"
  task :cargo do
    MwrapBuild.cargo!("test", "-p", "mwrap-core", "-p", "mwrap-preload")
  end

  desc "Build the gem, install it into a temporary GEM_HOME and profile examples/fiddle_leak.rb with it"
  task :gem do
    Dir.mktmpdir("mwrap-gem") do |tmp|
      Dir.chdir(MwrapBuild::ROOT) do
        sh "gem", "build", "mwrap.gemspec", "--output", File.join(tmp, "mwrap.gem")
      end
      gem_home = File.join(tmp, "gem_home")
      # The gem's own cargo build keeps its target dir between runs (tmp/ is gitignored).
      env = { "GEM_HOME" => gem_home, "GEM_PATH" => gem_home,
              "CARGO_TARGET_DIR" => File.join(MwrapBuild::ROOT, "tmp", "gem-target"),
              "CARGO" => MwrapBuild.cargo }
      MwrapBuild.sh_env(env, "gem", "install", "--local", "--no-document", File.join(tmp, "mwrap.gem"))

      mwrap = File.join(gem_home, "bin", "mwrap")
      dump = File.join(tmp, "dump.txt")
      run_env = env.merge("MWRAP" => "dump_path:#{dump},dump_min:1048576", "LD_PRELOAD" => nil,
                          "RUBYLIB" => nil, "RUBYOPT" => nil)
      # The installed gem's own copy of the example.
      example = File.join(gem_home, "gems", "mwrap-#{Mwrap::VERSION}", "examples", "fiddle_leak.rb")
      MwrapBuild.sh_env(run_env, mwrap, RbConfig.ruby, example)
      preloaded = IO.popen(run_env.merge("MWRAP" => nil),
                           [mwrap, RbConfig.ruby, "-e", 'require "mwrap"; print Mwrap.preloaded?'], &:read)
      abort "installed gem: Mwrap.preloaded? printed #{preloaded.inspect}, expected true" unless preloaded == "true"

      malloc_line = File.readlines(example).index { |l| l =~ /\.times.*Fiddle\.malloc/ } + 1
      text = File.read(dump)
      puts text
      line = text.lines.find { |l| l.end_with?("#{example}:#{malloc_line}\n") }
      abort "installed gem: the dump does not name #{example}:#{malloc_line}" unless line
      total = Integer(line.split.first)
      abort "installed gem: #{example}:#{malloc_line} has #{total} bytes" unless total >= 102_400_000
      puts "gem smoke test: OK (#{line.strip})"
    end
  end
end

desc "Everything CI runs: cargo tests, compile, specs, gem build + install + smoke run, quick bench"
task test: ["test:cargo", :spec, "test:gem", "bench:quick"]
