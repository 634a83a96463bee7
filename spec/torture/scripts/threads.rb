# frozen_string_literal: true

# Scenario 1 of the torture suite (spec/torture/threads_spec.rb), run under
# the preload: ARGV = helper.so, seconds, seed. Prints one JSON object with
# what ran and every broken invariant in "failures".
require "mwrap"
require "json"
require_relative "torture_native"
abort "not running under a compatible preload" unless Mwrap.preloaded?
native = TortureNative.new(ARGV[0])
seconds = Float(ARGV[1])
failures = []
stats = Hash.new(0)
has_lookup = Mwrap.respond_to?(:[])
has_live = Mwrap.respond_to?(:live_snapshot)
native.start(8, Integer(ARGV[2]))
stop = false
devnull = File.open(File::NULL, "w")

ruby_threads = 4.times.map do |i|
  Thread.new do
    keep = []
    until stop
      case i
      when 0 # strings of random sizes, most dropped soon
        200.times { keep << ("s" * rand(0..20_000)) }
        keep.shift(keep.size > 5000 ? 200 : 180)
        stats[:strings] += 200
      when 1 # read every location while everything else runs
        rows = 0
        Mwrap.each do |loc, total, allocations, frees, _age, _max|
          rows += 1
          failures << "each: #{loc} frees #{frees} > allocations #{allocations}" if frees > allocations
          failures << "each: #{loc} total #{total} < 0" if total.negative?
        end
        stats[:each_calls] += 1
        stats[:each_rows] += rows
        if has_lookup
          Mwrap.each(4096).first(20).each do |loc, *|
            sl = Mwrap[loc]
            next failures << "Mwrap[#{loc.inspect}] is nil" if sl.nil?
            sl.each { |*| stats[:live_blocks_seen] += 1 } if sl.respond_to?(:each)
            stats[:lookups] += 1
          end
        end
      when 2 # clear every few milliseconds (the sleep is this thread's pace, not a wait)
        Mwrap.clear
        stats[:clears] += 1
        sleep 0.005
      else # arrays, hashes, a dump, live snapshots when present
        h = {}
        500.times { |k| h["k#{k}"] = [k] * 10 }
        Mwrap.dump(devnull, 100_000)
        if has_live
          Mwrap.live_snapshot.each do |loc, (_lb, live_count, allocations, frees, _total)|
            failures << "live_snapshot: #{loc} live_count #{live_count} != #{allocations} - #{frees}" \
              if live_count != allocations - frees
          end
        end
        stats[:mixed] += 1
      end
    end
  rescue Exception => e # rubocop:disable Lint/RescueException
    failures << "ruby thread #{i}: #{e.class}: #{e.message}"
  end
end
sleep seconds # the run's length: everything above works meanwhile
stop = true
ruby_threads.each(&:join)
native.stop
stats[:native_ops] = native.join
stats[:native_errors] = native.errors
failures << "native helper saw #{stats[:native_errors]} corrupted or failed blocks" if stats[:native_errors] != 0

# Books. Nothing clears from here on, and the native threads are gone:
# each of the helper's sites freed exactly what it allocated since the
# last clear.
rows = Mwrap.each.to_a
own = rows.select { |loc, *| native.own?(loc) }
stats[:native_sites] = own.size
failures << "no location of #{native.path} after the last clear" if own.empty?
own.each do |loc, _total, allocations, frees|
  failures << "#{loc}: allocations #{allocations} != frees #{frees} after join" if allocations != frees
end
rows.each do |loc, _total, allocations, frees|
  failures << "#{loc}: frees #{frees} > allocations #{allocations}" if frees > allocations
end

# Sums: totals only grow without a clear, so their sum, taken site by
# site, lies between the global total before and after.
a0 = Mwrap.total_bytes_allocated
sum = Mwrap.each.sum { |_loc, total, *| total }
a1 = Mwrap.total_bytes_allocated
failures << "sum of totals #{sum} not within [#{a0}, #{a1}]" unless a0 <= sum && sum <= a1
stats[:total_bytes_allocated] = a1
if has_live
  a0 = Mwrap.total_bytes_allocated
  f0 = Mwrap.total_bytes_freed
  snap = Mwrap.live_snapshot
  a1 = Mwrap.total_bytes_allocated
  f1 = Mwrap.total_bytes_freed
  live = snap.sum { |_loc, (lb, *)| lb }
  snap.each do |loc, (lb, lc, allocations, frees, total)|
    failures << "#{loc}: live_count #{lc} != #{allocations} - #{frees}" if lc != allocations - frees
    failures << "#{loc}: live_bytes #{lb} > total #{total}" if lb > total
  end
  failures << "live bytes #{live} not within [#{a0 - f1}, #{a1 - f0}] (allocated - freed)" \
    unless a0 - f1 <= live && live <= a1 - f0
  stats[:live_bytes] = live
end

# An exact count: 1000 blocks of 10,001 bytes kept by one native call site.
native.keep(1000, 10_001)
kept = Mwrap.each.select { |loc, *| native.own?(loc) && loc.include?("torture_keep_thread") }
if kept.size != 1
  failures << "expected one torture_keep_thread location, got #{kept.map(&:first).inspect}"
else
  loc, total, allocations, frees = kept.first
  failures << "#{loc}: #{[total, allocations, frees].inspect} != [10001000, 1000, 0]" \
    unless [total, allocations, frees] == [10_001_000, 1000, 0]
  if has_lookup && (sl = Mwrap[loc]).respond_to?(:each)
    sizes = []
    sl.each { |size, *| sizes << size }
    failures << "Mwrap[#{loc}].each yielded #{sizes.size} blocks, sizes #{sizes.uniq.inspect}" \
      unless sizes.size == 1000 && sizes.uniq == [10_001]
  end
  native.release
  _, total, allocations, frees = Mwrap.each.find { |l, *| l == loc }
  failures << "#{loc} after release: #{[total, allocations, frees].inspect}" \
    unless [total, allocations, frees] == [10_001_000, 1000, 1000]
end
stats[:has_lookup] = has_lookup
stats[:has_live_snapshot] = has_live
puts JSON.generate(stats: stats, failures: failures.first(50), failure_count: failures.size)
