# frozen_string_literal: true

# One round of the leak_free example (see ../leak_free.rb).
GrowthExamples::LeakFree.round
