# frozen_string_literal: true

# A workload whose counts do not depend on the allocator underneath
# (spec/torture/jemalloc_spec.rb runs it on glibc and on jemalloc):
# ARGV = helper.so. Prints one JSON object: for each labelled location,
# [total, allocations, frees].
require "mwrap"
require "json"
require_relative "torture_native"
abort "not running under a compatible preload" unless Mwrap.preloaded?
native = TortureNative.new(ARGV[0])

strings = []
arrays = []
1000.times do
  strings << "x" * 10_000 # STRINGS: 1,000 buffers of 10,001 bytes, kept
end
500.times do |i|
  arrays << Array.new(1000 + i) # ARRAYS: 500 arrays of 1,000..1,499 slots, kept
end
native.keep(1000, 10_001)

lines = File.readlines(__FILE__)
label_line = ->(label) { lines.index { |l| l.include?("# #{label}:") } + 1 }
rows = Mwrap.each.to_a
at = ->(loc) { rows.find { |l, *| l == loc }&.then { |_, total, allocations, frees| [total, allocations, frees] } }
native_row = rows.find { |l, *| native.own?(l) && l.include?("torture_keep_thread") }
report = {
  "strings" => at.call("#{__FILE__}:#{label_line.call('STRINGS')}"),
  "arrays" => at.call("#{__FILE__}:#{label_line.call('ARRAYS')}"),
  "native_keep" => native_row && native_row[1, 3],
  "kept" => [strings.size, arrays.size],
}
native.release
puts JSON.generate(report)
