# frozen_string_literal: true

require "json"
require "rbconfig"
require "tmpdir"
require_relative "spec_process"
require_relative "c_build_cache"

# Running the examples in examples/growth/ under the real preload: as the
# runner (what Mwrap::RakeTask starts), as a rake task, and as matchers.
# Also used by rakelib/growth.rake (growth:noise), so it needs no RSpec.
module MwrapGrowthHelpers
  ROOT = SpecProcess::ROOT
  LIB = File.join(ROOT, "lib")
  EXE = File.join(ROOT, "exe", "mwrap")
  RUNNER = File.join(LIB, "mwrap", "growth_runner.rb")
  DIR = File.join(ROOT, "examples", "growth")
  NATIVE_SOURCE = File.join(DIR, "native_thread_leak.c")

  PASSING = %w[bounded_cache leak_free].freeze
  FAILING = %w[fiddle_leak module_eval_leak native_thread_leak].freeze
  ALL = (FAILING + PASSING).freeze

  # What a failing example must name: a Regexp for the location.
  def self.expected_location(name)
    case name
    when "fiddle_leak" then /\A#{Regexp.escape(line_of(name, /Fiddle\.malloc\(/))}\z/
    when "module_eval_leak" then /\A#{Regexp.escape(line_of(name, /\.module_eval\(/))}\z/
    when "native_thread_leak"
      /libmwrap_growth_native_leak\.so\(mwrap_growth_leak_thread\+0x\h+\) \[0x\h+\]\z/
    end
  end

  # "/abs/examples/growth/NAME.rb:LINE" of the only line matching `pattern`.
  def self.line_of(name, pattern)
    path = File.join(DIR, "#{name}.rb")
    lines = File.readlines(path).each_with_index.select { |text, _| text =~ pattern }.map(&:last)
    raise "#{path}: expected one line matching #{pattern.inspect}, found #{lines.size}" unless lines.size == 1

    "#{path}:#{lines.first + 1}"
  end

  module_function

  # The native leak's C helper, built once per process with gcc ($CC);
  # nil (with a warning) when it cannot be built.
  def native_leak_so
    CBuildCache.try_build(NATIVE_SOURCE, name: "mwrap_growth_native_leak", shared: true, cflags: %w[-O1 -Wall],
                                         libs: ["-pthread"])
  end

  # Environment for children: nothing inherited that changes what the
  # preload sees (SpecProcess.clean_env), and the built native helper.
  def child_env(extra = {})
    SpecProcess.clean_env("MWRAP_GROWTH_NATIVE_LEAK_SO" => native_leak_so).merge(extra)
  end

  # Open3.capture3's [stdout, stderr, status], through SpecProcess.run:
  # the command gets its time limit (raising SpecProcess::TimedOut past it),
  # a process group of its own and runs in `chdir` (ROOT unless given).
  def run_child(env, *cmd, chdir: ROOT, **opts)
    r = SpecProcess.run(env, *cmd, chdir: chdir, **opts)
    [r.stdout, r.stderr, r.status]
  end

  # Runs the growth runner on example `name` under exe/mwrap, with
  # SpecProcess's time limit; returns [stdout, stderr, status, report Hash
  # or nil].
  def run_example(name, *options)
    Dir.mktmpdir("mwrap-growth-run") do |tmp|
      report = File.join(tmp, "report.json")
      r = SpecProcess.run(child_env, RbConfig.ruby, EXE, RbConfig.ruby, RUNNER,
                          "--require", File.join(DIR, "#{name}.rb"), "--report", report,
                          *options, File.join(DIR, "rounds", "#{name}.rb"), chdir: ROOT)
      [r.stdout, r.stderr, r.status, File.file?(report) ? JSON.parse(File.read(report)) : nil]
    end
  end

  # The noise check: every passing example `passing_runs` times (each run
  # must pass), every failing one `failing_runs` times (each run must fail
  # with its expected location first). Runs `jobs` processes at a time.
  # Returns { name => [[passed?, first location, ok?], ...] } and prints a
  # line per example to `io` when given.
  def noise_check(passing_runs: 20, failing_runs: 5, jobs: 2, io: nil)
    native_leak_so # built once, before the threads
    work = PASSING.flat_map { |n| [n] * passing_runs } + FAILING.flat_map { |n| [n] * failing_runs }
    results = Hash.new { |h, k| h[k] = [] }
    lock = Mutex.new
    queue = Queue.new
    work.each { |n| queue << n }
    queue.close
    Array.new(jobs) do
      Thread.new do
        while (name = queue.pop)
          result = noise_run(name)
          lock.synchronize { results[name] << result }
        end
      end
    end.each(&:join)
    ALL.each do |name|
      runs = results[name]
      next if runs.empty?

      # A native location's address differs between runs (ASLR); its
      # "object(symbol+0xOFFSET)" part must not.
      if FAILING.include?(name) && runs.map { |r| r[1].to_s.sub(/ \[0x\h+\]\z/, "") }.uniq.size > 1
        runs.each { |r| r[2] = false; r[3] = "not the same location in every run: #{runs.map { |x| x[1] }.uniq}" }
      end
      good = runs.count { |r| r[2] }
      io&.puts(format("%-20s %2d/%-2d as expected (%s)%s", name, good, runs.size,
                      PASSING.include?(name) ? "must pass" : "must fail naming #{runs.first[1]}",
                      good == runs.size ? "" : ": #{runs.reject { |r| r[2] }.map { |r| r[3] }.uniq.join(' | ')}"))
    end
    results
  end

  # One run of the noise check: [passed?, first growing location, as expected?, what went wrong].
  def noise_run(name)
    out, err, status, report = run_example(name)
    first = report && report["growing"].first&.fetch("location")
    if PASSING.include?(name)
      ok = status.success? && report && report["passed"]
      [status.success?, first, ok ? true : false, "exit #{status.exitstatus}: #{out}#{err}".strip]
    else
      ok = status.exitstatus == 1 && report && !report["passed"] && first&.match?(expected_location(name))
      [status.success?, first, ok ? true : false, "exit #{status.exitstatus}, first #{first.inspect}: #{err}".strip]
    end
  end
end
