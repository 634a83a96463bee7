# frozen_string_literal: true

# Scenario 7 of the torture suite (spec/torture/ruby_stress_spec.rb), run
# under the preload with GC tuning that forces many GCs: the Mwrap API works
# inside GC.stress and after compaction, lines are still charged correctly,
# and the books balance. Prints one JSON object.
require "mwrap"
require "json"
abort "not running under a compatible preload" unless Mwrap.preloaded?

failures = []
stats = {}
lines = File.readlines(__FILE__)
line_of = ->(label) { lines.index { |l| l.include?("# #{label}") } + 1 }
here = ->(label) { "#{__FILE__}:#{line_of.call(label)}" }
devnull = File.open(File::NULL, "w")
row = ->(loc) { Mwrap.each.find { |l, *| l == loc } }

gc0 = GC.count
gen0 = Mwrap.current_generation
Mwrap.clear
keep = []
3000.times do |i|
  keep << "k" * (i % 3000) # CHURN
  keep.shift if keep.size > 300
end

GC.stress = true
stressed = []
200.times { stressed << ("s" * 10_000) } # STRESSED
stress_rows = Mwrap.each.to_a
snap = Mwrap.respond_to?(:live_snapshot) ? Mwrap.live_snapshot : nil
Mwrap.dump(devnull)
sl = Mwrap.respond_to?(:[]) ? Mwrap[here.call("STRESSED")] : nil
live_sizes = []
sl&.each { |size, *| live_sizes << size }
GC.stress = false
stats[:gcs_under_stress] = GC.count - gc0

failures << "no rows from Mwrap.each under GC.stress" if stress_rows.empty?
stress_rows.each do |loc, _total, allocations, frees|
  failures << "#{loc}: frees #{frees} > allocations #{allocations}" if frees > allocations
end
snap&.each do |loc, (lb, lc, allocations, frees, total)|
  failures << "#{loc}: live_count #{lc} != #{allocations} - #{frees}" if lc != allocations - frees
  failures << "#{loc}: live_bytes #{lb} > total #{total}" if lb > total
end
_, total, allocations, = row.call(here.call("STRESSED"))
failures << "STRESSED line: total #{total.inspect}, allocations #{allocations.inspect}" \
  unless total && total >= 2_000_200 && total <= 2_000_200 + 65_536 && allocations.between?(200, 220)
if sl
  failures << "Mwrap[STRESSED].each: #{live_sizes.count(10_001)} live 10,001-byte blocks, expected 200" \
    unless live_sizes.count(10_001) == 200
  failures << "Mwrap[STRESSED].live_count #{sl.live_count}" \
    if sl.respond_to?(:live_count) && sl.live_count < 200
end

# Compaction moves iseqs and strings: lines must still be charged right.
if GC.respond_to?(:compact)
  GC.compact
  after = []
  100.times { after << ("c" * 20_000) } # COMPACTED
  GC.compact
  100.times { after << ("d" * 30_000) } # COMPACTED TWICE
  { "COMPACTED" => 20_001, "COMPACTED TWICE" => 30_001 }.each do |label, size|
    _, total, allocations, = row.call(here.call(label))
    failures << "#{label} line: total #{total.inspect}, allocations #{allocations.inspect}" \
      unless total && total >= 100 * size && total <= 100 * size + 65_536 && allocations.between?(100, 120)
  end
  stats[:compacted] = true
end

# The books after all that: per site, and the global sums.
rows = Mwrap.each.to_a
rows.each do |loc, _total, allocations, frees|
  failures << "#{loc}: frees #{frees} > allocations #{allocations}" if frees > allocations
end
a0 = Mwrap.total_bytes_allocated
sum = Mwrap.each.sum { |_l, t, *| t }
a1 = Mwrap.total_bytes_allocated
failures << "sum of totals #{sum} not within [#{a0}, #{a1}]" unless a0 <= sum && sum <= a1
if Mwrap.respond_to?(:live_snapshot)
  GC.disable
  a0 = Mwrap.total_bytes_allocated
  f0 = Mwrap.total_bytes_freed
  snap = Mwrap.live_snapshot
  a1 = Mwrap.total_bytes_allocated
  f1 = Mwrap.total_bytes_freed
  GC.enable
  live = snap.sum { |_l, (lb, *)| lb }
  failures << "live bytes #{live} not within [#{a0 - f1}, #{a1 - f0}]" unless a0 - f1 <= live && live <= a1 - f0
  stats[:live_bytes] = live
end
stats[:gc_count] = GC.count - gc0
stats[:generations] = Mwrap.current_generation - gen0
failures << "current_generation did not move (#{gen0} -> #{Mwrap.current_generation})" if stats[:generations] < 10
stats[:sites] = rows.size
puts JSON.generate(stats: stats, failures: failures.first(50), failure_count: failures.size, kept: keep.size + stressed.size)
