# frozen_string_literal: true

# Part of scenario 7 (spec/torture/ruby_stress_spec.rb), run under the
# preload: 4 Ractors (running in parallel, each with its own GVL) keep N
# strings of 10,001 bytes each; then every live 10,001-byte block is
# looked up by location. ARGV = N. Prints one JSON object.
require "mwrap"
require "json"
abort "not running under a compatible preload" unless Mwrap.preloaded?
Warning[:experimental] = false

n = Integer(ARGV[0])
ractors = Array.new(4) do |i|
  Ractor.new(n, i) do |count, _i|
    a = []
    count.times { a << ("r" * 10_000) } # RACTOR LINE
    a # copied to the main Ractor by take, sharing the string buffers
  end
end
arrays = ractors.map(&:take)
kept = arrays.sum(&:size)
line = File.readlines(__FILE__).index { |l| l.include?("# RACTOR LINE") } + 1
where = Hash.new(0)
Mwrap.each do |loc, *|
  sl = Mwrap[loc] or next
  sl.each { |size, *| where[loc] += 1 if size == 10_001 }
end
at_line = where.delete("#{__FILE__}:#{line}").to_i
puts JSON.generate(kept: kept, at_line: at_line, elsewhere: where)
