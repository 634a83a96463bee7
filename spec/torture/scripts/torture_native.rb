# frozen_string_literal: true

# Fiddle binding of spec/torture/native/torture_threads.c for the torture
# scripts (they run under the preload, in processes of their own).
require "fiddle"

class TortureNative
  F = Fiddle
  attr_reader :path

  def initialize(path)
    @path = path
    @lib = F.dlopen(path)
    fn = ->(name, args, ret) { F::Function.new(@lib[name], args, ret) }
    @start = fn.call("torture_start", [F::TYPE_INT, F::TYPE_INT], F::TYPE_INT)
    @wait_busy = fn.call("torture_wait_busy", [F::TYPE_INT], F::TYPE_INT)
    @stop = fn.call("torture_stop", [], F::TYPE_VOID)
    @join = fn.call("torture_join", [], F::TYPE_LONG)
    @errors = fn.call("torture_errors", [], F::TYPE_LONG)
    @keep = fn.call("torture_keep", [F::TYPE_INT, F::TYPE_SIZE_T], F::TYPE_INT)
    @release = fn.call("torture_release_kept", [], F::TYPE_INT)
    @dl_start = fn.call("torture_dlopen_start", [F::TYPE_VOIDP], F::TYPE_INT)
    @dl_stop = fn.call("torture_dlopen_stop", [], F::TYPE_LONG)
  end

  # A thread that dlopens `path`, calls its churn_alloc and dlcloses it in
  # a loop until #dlopen_stop (which returns the number of rounds).
  def dlopen_start(path)
    rc = @dl_start.call(path)
    raise "torture_dlopen_start: #{rc}" unless rc.zero?
  end

  def dlopen_stop
    @dl_stop.call
  end

  # Starts n native threads (Fiddle calls release the GVL; the threads
  # never had it).
  def start(n, seed)
    rc = @start.call(n, seed)
    raise "torture_start: #{rc}" unless rc.zero?
  end

  # Returns once every thread started has made its first operations (a
  # handshake, not a sleep); raises if that takes over `seconds`.
  def wait_busy(seconds)
    rc = @wait_busy.call((seconds * 1000).to_i)
    raise "torture_wait_busy: the native threads were not all allocating after #{seconds} s" unless rc.zero?
  end

  def stop
    @stop.call
  end

  # Joins the threads; returns the number of operations they made.
  def join
    @join.call
  end

  # Corrupted or failed blocks the threads saw (0 when all is well).
  def errors
    @errors.call
  end

  # n blocks of `size` bytes, allocated on a native thread of their own at
  # one call site (torture_keep_thread), kept until #release.
  def keep(n, size)
    rc = @keep.call(n, size)
    raise "torture_keep: #{rc}" unless rc.zero?
  end

  def release
    @release.call
  end

  # True for a location inside this helper library.
  def own?(loc)
    loc.start_with?("#{@path}(")
  end
end
