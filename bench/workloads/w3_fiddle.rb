# frozen_string_literal: true

# w3: the Fiddle leak: N blocks of 1 KiB malloc'd from Ruby, half of them
# freed. Usage: ruby w3_fiddle.rb [N]
require "fiddle"

n = Integer(ARGV.fetch(0, "100000"))
ptrs = Array.new(n)
n.times { |i| ptrs[i] = Fiddle.malloc(1024) }
(n / 2).times { |i| Fiddle.free(ptrs[i]) }
