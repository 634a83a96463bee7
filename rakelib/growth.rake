# frozen_string_literal: true

namespace :growth do
  desc "Noise check of the memory-growth examples: passing ones 20 times, failing ones 5 times " \
       "(PASSING_RUNS, FAILING_RUNS, JOBS)"
  task noise: :compile do
    require_relative "../spec/support/growth_helpers"
    passing = Integer(ENV.fetch("PASSING_RUNS", "20"))
    failing = Integer(ENV.fetch("FAILING_RUNS", "5"))
    jobs = Integer(ENV.fetch("JOBS", "2"))
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    results = MwrapGrowthHelpers.noise_check(passing_runs: passing, failing_runs: failing, jobs: jobs, io: $stdout)
    seconds = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    runs = results.values.sum(&:size)
    bad = results.values.sum { |r| r.count { |_, _, ok| !ok } }
    puts format("growth:noise: %d runs in %.1f s (%d at a time), %d not as expected", runs, seconds, jobs, bad)
    abort "growth:noise: #{bad} run(s) not as expected" unless bad.zero?
  end
end
