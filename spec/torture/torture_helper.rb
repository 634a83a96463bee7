# frozen_string_literal: true

require "spec_helper"
require "rbconfig"

# Shared by spec/torture/*_spec.rb: sizes for CI and for `rake torture`,
# native helpers compiled with gcc (CBuildCache), and running child
# processes (the scripts in spec/torture/scripts, under the preload) with a
# time bound (SpecProcess).
#
# Sizes: every scenario has a CI size (the default) and a long size (with
# TORTURE=1, which `rake torture:long` sets). These override both:
# TORTURE_SECONDS (durations), TORTURE_FORKS, TORTURE_SIGNALS, TORTURE_EXITS,
# TORTURE_SITES, TORTURE_RACTOR_STRINGS. TORTURE_REPORT names a file that
# collects one JSON line of numbers per scenario. TORTURE_KNOWN_BUGS=1 runs
# the examples that reproduce known bugs (see known_bug!).
module TortureHelpers
  DIR = __dir__
  NATIVE = File.join(DIR, "native")
  SCRIPTS = File.join(DIR, "scripts")
  JEMALLOC_CANDIDATES = %w[
    /usr/lib/x86_64-linux-gnu/libjemalloc.so.2
    /usr/lib/aarch64-linux-gnu/libjemalloc.so.2
    /usr/lib64/libjemalloc.so.2
    /usr/lib/libjemalloc.so.2
    /usr/local/lib/libjemalloc.so.2
  ].freeze

  # Forces a GC every few kilobytes of malloc and keeps the heap tight.
  # (RUBY_GC_HEAP_INIT_SLOTS below Ruby's default crashes Ruby 3.1.2 itself
  # with "[BUG] heap_page_allocate", preload or not: not used.)
  MALLOC_PRESSURE = {
    "RUBY_GC_MALLOC_LIMIT" => "1", "RUBY_GC_MALLOC_LIMIT_MAX" => "16",
    "RUBY_GC_OLDMALLOC_LIMIT" => "1", "RUBY_GC_OLDMALLOC_LIMIT_MAX" => "16"
  }.freeze
  GC_PRESSURE = MALLOC_PRESSURE.merge(
    "RUBY_GC_HEAP_FREE_SLOTS" => "1", "RUBY_GC_HEAP_GROWTH_FACTOR" => "1.01",
    "RUBY_GC_HEAP_GROWTH_MAX_SLOTS" => "100", "RUBY_GC_HEAP_OLDOBJECT_LIMIT_FACTOR" => "0.1"
  ).freeze

  # Signal functions the preload must not import.
  SIGNAL_FUNCTIONS = %w[
    signal sigaction __sigaction sysv_signal __sysv_signal bsd_signal sigset sigvec
    setitimer alarm ualarm timer_create timer_settime
    raise kill tgkill pthread_kill sigqueue
    sigprocmask pthread_sigmask sigaltstack signalfd sigwait sigwaitinfo sigtimedwait sigsuspend
  ].freeze

  # What a child run with a time bound did; see SpecProcess::Result.
  TimedResult = SpecProcess::Result

  module_function

  def long?
    !ENV.fetch("TORTURE", "").empty?
  end

  # A duration in seconds: TORTURE_SECONDS, else `long` under TORTURE=1, else `ci`.
  def seconds(ci:, long:)
    Float(ENV["TORTURE_SECONDS"] || (long? ? long : ci))
  end

  # A count named `env` (e.g. TORTURE_FORKS), else `long` under TORTURE=1, else `ci`.
  def count(env, ci:, long:)
    Integer(ENV[env] || (long? ? long : ci))
  end

  def cc
    CBuildCache.cc
  end

  def cc?
    CBuildCache.cc?
  end

  def build_dir
    CBuildCache.dir
  end

  # Compiles C source (a path under spec/torture/native, or source text with
  # `name:`) once per run; returns the output path. Raises with gcc's
  # message on failure.
  def compile_c(src, name: nil, shared: false, flags: [], libs: [])
    CBuildCache.build(src, name: name, shared: shared, flags: flags, libs: ["-pthread", *libs])
  end

  # The native thread helper (spec/torture/native/torture_threads.c) as a
  # shared library for Fiddle.
  def threads_helper
    compile_c(File.join(NATIVE, "torture_threads.c"), shared: true, libs: ["-ldl"])
  end

  # A small library for the dlopen/dlclose churn: churn_alloc(n) mallocs.
  def churn_library
    compile_c("#include <stdlib.h>\nvoid *churn_alloc(size_t n) { void *p = malloc(n); return p; }\n",
              name: "churn", shared: true, flags: ["-O0"])
  end

  def jemalloc
    ENV["MWRAP_TORTURE_JEMALLOC"] || JEMALLOC_CANDIDATES.find { |f| File.file?(f) }
  end

  # Runs `cmd` with `env` (on top of clean_env), killing its process group
  # after `timeout` seconds (having read its stacks). Never raises on a
  # timeout: check #timed_out.
  def run_timed(env, *cmd, timeout:, stdin_data: "", chdir: MwrapSpecHelpers::ROOT, **opts)
    SpecProcess.run(env, *cmd, timeout: timeout, stdin_data: stdin_data, chdir: chdir, on_timeout: :return, **opts)
  end

  # Examples that reproduce a known preload bug are skipped (RSpec lists
  # them as pending, with the reason) unless TORTURE_KNOWN_BUGS=1, which
  # runs them as ordinary examples: they fail until the bug is fixed.
  def known_bug!(reason)
    return unless ENV.fetch("TORTURE_KNOWN_BUGS", "").empty?

    RSpec.current_example.example_group_instance.skip(
      "known preload bug: #{reason} (TORTURE_KNOWN_BUGS=1 runs it; see the README's torture section)"
    )
  end

  # Appends one JSON line about a scenario to $TORTURE_REPORT (set by the
  # `rake torture:*` tasks), for the summary in the README.
  def note(scenario, data)
    path = ENV["TORTURE_REPORT"]
    return if path.nil? || path.empty?

    require "json"
    File.open(path, "a") { |f| f.puts(JSON.generate({ "scenario" => scenario }.merge(data))) }
  end

  # A script of spec/torture/scripts.
  def script(name)
    File.join(SCRIPTS, "#{name}.rb")
  end

  # Runs the Ruby script at `path` under `preload` (:built, nil, or a list
  # joined with ":") with a time bound. The script sees ARGV = args.
  def ruby_timed(path, *args, timeout:, preload: :built, env: {}, ruby_opts: [], chdir: MwrapSpecHelpers::ROOT)
    child_env, cmd = MwrapSpecHelpers.ruby_command([path, *args], preload: preload, env: env, ruby_opts: ruby_opts)
    run_timed(child_env, *cmd, timeout: timeout, chdir: chdir)
  end
end
