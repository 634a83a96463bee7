# frozen_string_literal: true

# One round of the fiddle_leak example (see ../fiddle_leak.rb).
GrowthExamples::FiddleLeak.round
