# frozen_string_literal: true

# Item 14: one eval'd file with a 64 KiB name and 2,000 lines, each making
# a 100-byte String (each line its own location). Prints the process's
# VmRSS in KiB at the end (from /proc/self/status) and the number of
# Strings kept; with "api", also [total, allocations] of lines 2, 1000 and
# 2001 as Mwrap[] sees them.
name = "#{'n' * ((64 * 1024) - 3)}.rb"
code = "[\n#{"'x' * 100,\n" * 2000}]" # lines 2 to 2001 allocate
keep = eval(code, nil, name, 1) # rubocop:disable Security/Eval
GC.start
rss = File.read("/proc/self/status")[/^VmRSS:\s+(\d+) kB/, 1]
puts "strings #{keep.size} rss_kib #{rss}"
if ARGV[0] == "api" # a few of the lines, through Mwrap[] (not Mwrap.each: 2,000 names of 64 KiB)
  require "mwrap"
  found = [2, 1000, 2001].map { |line| Mwrap["#{name}:#{line}"]&.then { |loc| [loc.total, loc.allocations] } }
  puts "lines #{found.inspect}"
end
