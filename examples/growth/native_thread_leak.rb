# frozen_string_literal: true

require "fiddle"
require "rbconfig"
require "tmpdir"
require "fileutils"

module GrowthExamples
  # A leak outside the GVL: every round calls a C function (through Fiddle)
  # that starts a native thread, which mallocs BLOCKS blocks of SIZE bytes
  # and keeps them. No Ruby line runs on that thread, so mwrap charges the
  # blocks to the native caller, and the growth check fails naming it:
  # "…/libmwrap_growth_native_leak.so(mwrap_growth_leak_thread+0x…) [0x…]".
  #
  # The C helper (native_thread_leak.c) is taken from
  # $MWRAP_GROWTH_NATIVE_LEAK_SO, or built with gcc ($CC) into a temporary
  # directory.
  module NativeThreadLeak
    BLOCKS = 64
    SIZE = 1024
    SOURCE = File.expand_path("native_thread_leak.c", __dir__)

    def self.library
      so = ENV["MWRAP_GROWTH_NATIVE_LEAK_SO"]
      return so if so && !so.empty?

      dir = Dir.mktmpdir("mwrap-growth-native-leak")
      at_exit { FileUtils.rm_rf(dir) }
      so = File.join(dir, "libmwrap_growth_native_leak.so")
      cc = ENV.fetch("CC", "gcc")
      system(cc, "-shared", "-fPIC", "-O1", "-pthread", "-o", so, SOURCE) or
        raise "cannot build #{SOURCE} with #{cc} (set MWRAP_GROWTH_NATIVE_LEAK_SO to a built copy)"
      so
    end

    HANDLE = Fiddle.dlopen(library)
    SIZE_T = defined?(Fiddle::TYPE_SIZE_T) ? Fiddle::TYPE_SIZE_T : Fiddle::TYPE_UINTPTR_T
    LEAK = Fiddle::Function.new(HANDLE["mwrap_growth_leak"], [SIZE_T, SIZE_T], Fiddle::TYPE_INT)

    def self.round
      err = LEAK.call(BLOCKS, SIZE)
      raise SystemCallError.new("mwrap_growth_leak", err) unless err.zero?
    end
  end
end
