# frozen_string_literal: true

# A deliberate leak through Fiddle: 100,000 blocks of 1 KiB are malloc'd on
# one line and only half of them are freed. Run it under mwrap to see that
# line at the top of the dump:
#
#   MWRAP=dump_fd:2,dump_min:1048576 mwrap ruby examples/fiddle_leak.rb
require "fiddle"

COUNT = 100_000
SIZE = 1024

ptrs = Array.new(COUNT) # preallocated: the loop below allocates nothing else
Fiddle.free(Fiddle.malloc(SIZE)) # warm the call site (method cache, etc.)
COUNT.times { |i| ptrs[i] = Fiddle.malloc(SIZE) }
(COUNT / 2).times { |i| Fiddle.free(ptrs[i]) }

puts "fiddle_leak: allocated #{COUNT} x #{SIZE} bytes, freed #{COUNT / 2}, " \
     "leaking #{(COUNT / 2) * SIZE} bytes"
