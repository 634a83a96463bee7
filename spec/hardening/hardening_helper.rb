# frozen_string_literal: true

require_relative "../torture/torture_helper"

# Shared by spec/hardening/*_spec.rb: the regression specs of the preload's
# hardening fixes. Each example runs a real program with and without the
# preload (MWRAP_PRELOAD_SO picks another build, e.g. the baseline) and
# asserts the outcome the program gets without it. Every process runs
# under TortureHelpers.run_timed, so a hang fails the example with every
# thread's backtrace instead of hanging the suite.
module HardeningHelpers
  NATIVE = File.join(__dir__, "native")

  # How long one run of a small program may take before it counts as hung
  # (they take milliseconds).
  TIMEOUT = 10

  module_function

  def preload
    MwrapSpecHelpers.built_preload
  end

  # Skips the example when there is no C compiler.
  def need_cc!
    return if TortureHelpers.cc?

    RSpec.current_example.example_group_instance.skip("no C compiler (#{TortureHelpers.cc}): skipping")
  end

  # Compiles spec/hardening/native/NAME.c (once per process); `as:` names
  # the binary when the same source is built with other flags.
  def native(name, as: name, flags: [], libs: [])
    TortureHelpers.compile_c(File.join(NATIVE, "#{name}.c"), name: "hardening_#{as}", flags: flags, libs: libs)
  end

  # glibc writes its fatal messages ("free(): invalid pointer") to the
  # terminal unless told otherwise: keep them in the captured stderr.
  FATAL_TO_STDERR = { "LIBC_FATAL_STDERR_" => "1" }.freeze

  # Runs `cmd` with the preload (and `env`) under a time bound.
  def with_preload(*cmd, env: {}, timeout: TIMEOUT, **opts)
    TortureHelpers.run_timed(FATAL_TO_STDERR.merge("LD_PRELOAD" => preload).merge(env), *cmd,
                             timeout: timeout, **opts)
  end

  # Runs `cmd` without any preload (and `env`) under a time bound.
  def without_preload(*cmd, env: {}, timeout: TIMEOUT, **opts)
    TortureHelpers.run_timed(FATAL_TO_STDERR.merge("LD_PRELOAD" => nil).merge(env), *cmd, timeout: timeout, **opts)
  end

  # A Ruby script (`-I lib`) with or without the preload, time-bounded.
  def ruby_run(path, *args, preloaded:, env: {}, timeout: TIMEOUT, chdir: MwrapSpecHelpers::ROOT)
    TortureHelpers.ruby_timed(path, *args, timeout: timeout, preload: preloaded ? :built : nil,
                                           env: FATAL_TO_STDERR.merge(env), chdir: chdir)
  end

  # Calls the block with 0...runs, `jobs` at a time, until one returns a
  # failure (a String): returns [runs done, first failure or nil]. Stops
  # at the first failure, so a hang costs one timeout, not `runs`.
  def repeat(runs, jobs: 2)
    queue = Queue.new
    runs.times { |i| queue << i }
    queue.close
    failure = nil
    done = 0
    lock = Mutex.new
    Array.new(jobs) do
      Thread.new do
        while (i = queue.pop)
          break if lock.synchronize { failure }

          problem = yield(i)
          lock.synchronize do
            done += 1
            failure ||= "run #{i + 1}: #{problem}" if problem
          end
        end
      end
    end.each(&:join)
    [done, failure]
  end

  # The dump rows of `text` (raises on a line that is not a dump line).
  def dump_rows(text)
    MwrapSpecHelpers.parse_dump(text)
  end

  # Makes a FIFO at `path`, readable and writable by its owner only.
  def mkfifo(path)
    File.mkfifo(path, 0o600)
  end
end
