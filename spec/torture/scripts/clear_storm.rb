# frozen_string_literal: true

# Part of scenario 1 (spec/torture/threads_spec.rb), run under the preload:
# Mwrap.clear in a tight loop (thousands per second) while 8 native
# threads allocate, resize and free; every 100 clears the tables are
# checked. ARGV = helper.so, seconds. Prints one JSON object.
require "mwrap"
require "json"
require_relative "torture_native"
abort "not running under a compatible preload" unless Mwrap.preloaded?

native = TortureNative.new(ARGV[0])
native.start(8, 1)
failures = []
clears = 0
checks = 0
deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + Float(ARGV[1])
while Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
  Mwrap.clear
  clears += 1
  next unless (clears % 100).zero?

  checks += 1
  if Mwrap.respond_to?(:live_snapshot)
    Mwrap.live_snapshot.each do |loc, (lb, lc, allocations, frees, total)|
      failures << "#{loc}: live_count #{lc} != #{allocations} - #{frees}" if lc != allocations - frees
      failures << "#{loc}: live_bytes #{lb} > total #{total}" if lb > total
    end
  end
  Mwrap.each { |loc, _t, allocations, frees| failures << "#{loc}: frees #{frees} > #{allocations}" if frees > allocations }
end
native.stop
ops = native.join
failures << "native helper: #{native.errors} errors" unless native.errors.zero?
own = Mwrap.each.select { |loc, *| native.own?(loc) }
own.each { |loc, _t, a, f| failures << "#{loc}: allocations #{a} != frees #{f} after join" if a != f }
if Mwrap.respond_to?(:live_snapshot)
  left = Mwrap.live_snapshot.select { |loc, *| native.own?(loc) }
  failures << "live blocks left at the helper's sites: #{left}" unless left.empty?
end
puts JSON.generate(stats: { clears: clears, checks: checks, native_ops: ops, native_sites: own.size },
                   failures: failures.first(50))
