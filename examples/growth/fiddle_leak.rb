# frozen_string_literal: true

require "fiddle"

module GrowthExamples
  # A native leak through Fiddle: every round mallocs 64 blocks of 1 KiB
  # and never frees them (the addresses are dropped). The growth check
  # fails naming the Fiddle.malloc line.
  module FiddleLeak
    BLOCKS = 64
    SIZE = 1024

    def self.round
      BLOCKS.times { Fiddle.malloc(SIZE) } # leaks: nobody calls Fiddle.free
    end
  end
end
