# frozen_string_literal: true

require "rbconfig"
require_relative "build_env"

# The overhead benchmark (bench/run.rb). It measures and prints ratios
# against plain Ruby; it never fails on a number, only when something
# does not run. Options are environment variables, listed in bench/run.rb
# (REPS, WORKLOADS, HEAPTRACK, CALLGRIND, STACK_VARIANTS, MWRAP_BENCH_OTHER,
# BENCH_JSON …).
module MwrapBench
  module_function

  def run(env, script = "run.rb")
    # A given MWRAP_BENCH_PRELOAD is benchmarked as is; otherwise build ours.
    Rake::Task[:compile].invoke unless ENV["MWRAP_BENCH_PRELOAD"]
    MwrapBuild.sh_env(env, RbConfig.ruby, File.join(MwrapBuild::ROOT, "bench", script))
  end
end

desc "Benchmark mwrap's overhead: wall time, peak RSS, instructions (see README, Benchmarks)"
task :bench do
  MwrapBench.run({})
end

namespace :bench do
  desc "The benchmark at 1/10 size, 1 repetition, no heaptrack or callgrind unless asked (CALLGRIND=1)"
  task :quick do
    MwrapBench.run("QUICK" => "1")
  end

  # The leak scan benchmark (bench/leak_scan.rb): scan throughput and the
  # pause of Mwrap.leaks at 100 MiB and 1 GiB of live blocks, against their
  # goals and a plain fork of the same process. Not part of `rake test`.
  desc "Benchmark Mwrap.leaks: scan MiB/s and pause at 100 MiB and 1 GiB live (see README, Leak scan)"
  task :leaks do
    MwrapBench.run({}, "leak_scan.rb")
  end

  namespace :leaks do
    desc "The leak scan benchmark at 20 MiB and 100 MiB, 1 repetition"
    task :quick do
      MwrapBench.run({ "QUICK" => "1" }, "leak_scan.rb")
    end
  end
end
