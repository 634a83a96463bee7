# frozen_string_literal: true

# One round of the bounded_cache example (see ../bounded_cache.rb).
GrowthExamples::BoundedCache.round
