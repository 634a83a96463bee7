# frozen_string_literal: true

require "spec_helper"
require "open3"
require "rbconfig"
require "tmpdir"
require "fileutils"
require "timeout"
require_relative "scripts/stacks"

# Shared by spec/torture/*_spec.rb: sizes for CI and for `rake torture`,
# native helpers compiled with gcc, and running child processes (the
# scripts in spec/torture/scripts, under the preload) with a time bound.
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

  # Captured output of a child run with a time bound.
  # `stacks`: on a timeout, every thread's backtrace in every process of
  # the group (when gdb is installed), so that a hang in CI can be read.
  TimedResult = Struct.new(:stdout, :stderr, :status, :timed_out, :seconds, :stacks) do
    def success?
      !timed_out && status&.success?
    end

    def exitstatus
      status&.exitstatus
    end

    def termsig
      status&.termsig
    end

    def describe
      how = if timed_out then "timed out after #{seconds.round(1)} s"
            elsif status.signaled? then "killed by signal #{status.termsig}"
            else "exit #{status.exitstatus}"
            end
      text = "#{how}\n--- stdout ---\n#{stdout.to_s[-4000..] || stdout}\n--- stderr ---\n#{stderr.to_s[-4000..] || stderr}"
      text += "\n--- stacks at the timeout ---\n#{stacks}" if stacks
      text
    end
  end

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
    ENV.fetch("CC", "gcc")
  end

  def cc?
    return @cc_ok if defined?(@cc_ok)

    @cc_ok = system(cc, "--version", out: File::NULL, err: File::NULL) ? true : false
  rescue SystemCallError
    @cc_ok = false
  end

  def build_dir
    @build_dir ||= begin
      dir = Dir.mktmpdir("mwrap-torture-build")
      pid = Process.pid
      at_exit { FileUtils.rm_rf(dir) if Process.pid == pid }
      dir
    end
  end

  # Compiles C source (a path under spec/torture/native, or source text with
  # `name:`) once per process; returns the output path. Raises with gcc's
  # message on failure.
  def compile_c(src, name: nil, shared: false, flags: [], libs: [])
    name ||= File.basename(src, ".c")
    @compiled ||= {}
    key = [src, name, shared, flags, libs]
    return @compiled[key] if @compiled[key]

    if src.end_with?(".c") && File.file?(src)
      path = src
    else
      path = File.join(build_dir, "#{name}.c")
      File.write(path, src)
    end
    out = File.join(build_dir, shared ? "lib#{name}.so" : name)
    cmd = [cc, "-std=gnu11", "-O1", "-g", "-Wall", "-fno-builtin", *flags]
    cmd += ["-shared", "-fPIC"] if shared
    cmd += ["-o", out, path, "-pthread", *libs]
    _o, err, st = Open3.capture3(*cmd)
    raise "#{cmd.join(' ')} failed:\n#{err}" unless st.success?

    @compiled[key] = out
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
  # after `timeout` seconds. Never raises on a timeout: check #timed_out.
  def run_timed(env, *cmd, timeout:, stdin_data: "", chdir: MwrapSpecHelpers::ROOT, **opts)
    start = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    out = err = nil
    status = nil
    timed_out = false
    stacks = nil
    Open3.popen3(MwrapSpecHelpers.clean_env(env), *cmd, chdir: chdir, pgroup: true, **opts) do |i, o, e, t|
      reader_o = Thread.new { o.read }
      reader_e = Thread.new { e.read }
      begin
        i.write(stdin_data) unless stdin_data.empty?
      rescue Errno::EPIPE
        nil
      end
      i.close
      unless t.join(timeout)
        timed_out = true
        stacks = process_group_stacks(t.pid)
        begin
          Process.kill(:KILL, -t.pid)
        rescue Errno::ESRCH
          nil
        end
      end
      status = t.value
      out = reader_o.value
      err = reader_e.value
    end
    TimedResult.new(out, err, status, timed_out, Process.clock_gettime(Process::CLOCK_MONOTONIC) - start, stacks)
  end

  # Backtraces of every thread of every process in process group `pgid`,
  # read with gdb (nil without gdb). Compact: one line per frame.
  def process_group_stacks(pgid)
    return nil unless ThreadStacks.gdb

    pids = Dir.glob("/proc/[0-9]*/stat").filter_map do |f|
      fields = File.read(f).split(") ").last.split
      File.basename(File.dirname(f)).to_i if fields[2].to_i == pgid
    rescue SystemCallError
      nil
    end
    pids.sort.first(8).map do |pid|
      command = begin
        File.read("/proc/#{pid}/cmdline").tr("\0", " ").strip[0, 200]
      rescue SystemCallError
        "?"
      end
      "process #{pid} (#{command}):\n#{ThreadStacks.of(pid)}"
    end.join("\n")
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
    preload = MwrapSpecHelpers.built_preload if preload == :built
    preload = preload.join(":") if preload.is_a?(Array)
    run_timed({ "LD_PRELOAD" => preload }.merge(env), RbConfig.ruby, *ruby_opts, "-I", MwrapSpecHelpers::LIB,
              path, *args, timeout: timeout, chdir: chdir)
  end
end

