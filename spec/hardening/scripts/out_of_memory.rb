# frozen_string_literal: true

# Item 2, in Ruby: under a RLIMIT_AS limit, allocate (Fiddle.malloc: no
# object per block, so Ruby's heap does not need to grow) until
# NoMemoryError, at five sizes from 1 MiB down to 64 bytes, rescuing each;
# free every other 64-byte block, then call 2,000 lambdas compiled
# beforehand, each from a file of its own (so each call is a new location,
# "site-I.rb:1", for the profiler to record while memory is short), each
# rescued; then free everything and carry on with 2,000 more new lines
# ("after-J.rb:1", 'z' * 1000 each). The output is the same with and
# without the preload.
require "fiddle"

sites = Array.new(2000) { |i| eval("-> { Fiddle.malloc(40) }", nil, "site-#{i}.rb", 1) } # rubocop:disable Security/Eval
got = Array.new(2000)
held = Array.new(1 << 20) # addresses: Integers, no object per block
count = 0
small_from = 0
rescued = []
GC.start
GC.disable # a GC when malloc fails would give memory back
vm = File.read("/proc/self/status")[/^VmSize:\s+(\d+)/, 1].to_i * 1024
soft, hard = Process.getrlimit(:AS)
Process.setrlimit(:AS, vm + (64 << 20), hard)
[1 << 20, 64 << 10, 4096, 512, 64].each do |size|
  small_from = count
  while count < held.size
    held[count] = Fiddle.malloc(size)
    count += 1
  end
rescue NoMemoryError
  rescued << size
end
i = small_from
while i < count
  Fiddle.free(held[i])
  held[i] = nil
  i += 2
end
sites.each_with_index do |site, j|
  got[j] = site.call
rescue NoMemoryError
  nil
end
got.each { |a| Fiddle.free(a) if a }
held.each { |a| Fiddle.free(a) if a }
held = got = nil
Process.setrlimit(:AS, soft, hard)
GC.enable
GC.start
more = Array.new(2000) { |j| eval("'z' * 1000", nil, "after-#{j}.rb", 1) } # rubocop:disable Security/Eval
puts "rescued NoMemoryError at #{rescued.join(', ')} bytes; called 2000 sites; carried on with #{more.size} lines"
