# frozen_string_literal: true

module GrowthExamples
  # An LRU cache of at most `capacity` entries (a Hash keeps insertion
  # order: re-inserting a key makes it the newest, Hash#shift drops the
  # oldest).
  class LRUCache
    def initialize(capacity)
      @capacity = capacity
      @entries = {}
    end

    def [](key)
      return unless @entries.key?(key)

      @entries[key] = @entries.delete(key)
    end

    def []=(key, value)
      @entries.delete(key)
      @entries[key] = value
      @entries.shift while @entries.size > @capacity
    end

    def size
      @entries.size
    end
  end

  # A cache that fills up and then stops growing: every round renders
  # PER_ROUND new pages into an LRU capped at CAPACITY entries, so the
  # warmup rounds fill it and later rounds only replace entries. Live
  # memory is flat after warmup, and the growth check passes.
  module BoundedCache
    CAPACITY = 1_000
    PER_ROUND = 600
    CACHE = LRUCache.new(CAPACITY)

    @next_page = 0

    def self.round
      PER_ROUND.times do
        page = (@next_page += 1)
        CACHE[page] = render(page)
        CACHE[page - 10] # a hit, most of the time
      end
    end

    def self.render(page)
      "<article id=\"page-#{page}\">#{'lorem ipsum ' * 80}</article>"
    end
  end
end
