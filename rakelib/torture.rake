# frozen_string_literal: true

require "rbconfig"
require "json"
require "fileutils"

# The torture suite lives in spec/torture. `rake spec` (and so `rake test`)
# runs it CI-sized; these tasks run it long.
namespace :torture do
  root = File.expand_path("..", __dir__)
  report = File.join(root, "tmp", "torture-report.jsonl")

  run_rspec = lambda do |env, *files|
    FileUtils.mkdir_p(File.dirname(report))
    FileUtils.rm_f(report)
    rspec = ENV.fetch("RSPEC", "rspec")
    args = ["-I", "spec", "--format", ENV.fetch("SPEC_FORMAT", "documentation"), *files]
    puts "#{env.map { |k, v| "#{k}=#{v}" }.join(' ')} rspec #{args.join(' ')}"
    ok = system(env.merge("TORTURE_REPORT" => report), RbConfig.ruby, "-S", rspec, *args, chdir: root)
    if File.file?(report)
      puts "\nper-scenario numbers (#{report}):"
      File.foreach(report) { |line| puts "  #{line}" }
    end
    abort "torture failed" unless ok
  end

  desc "Run spec/torture CI-sized (what `rake spec` runs), with a per-scenario report"
  task ci: :compile do
    run_rspec.call({ "TORTURE" => "" }, "spec/torture")
  end

  desc "Run spec/torture long-sized (TORTURE_SECONDS, TORTURE_FORKS, TORTURE_SIGNALS, TORTURE_SITES override)"
  task long: :compile do
    run_rspec.call({ "TORTURE" => "1" }, "spec/torture")
  end

  desc "Soak: a mixed workload under the preload for TORTURE_SECONDS (default 600), reporting its memory"
  task soak: :compile do
    sh RbConfig.ruby, File.join(root, "spec", "torture", "soak.rb")
  end
end

desc "The long torture suite, then the soak (TORTURE_SECONDS sizes both; see spec/torture)"
task torture: ["torture:long", "torture:soak"]
