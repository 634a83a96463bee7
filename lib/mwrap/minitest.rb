# frozen_string_literal: true

require "minitest"
require "mwrap/growth"

module Mwrap
  # Minitest assertion, included into Minitest::Assertions (so into
  # Minitest::Test, Minitest::Spec and any class using the assertions) by
  # `require "mwrap/minitest"`:
  #
  #   assert_no_memory_growth { work }
  #   assert_no_memory_growth(rounds: 5, warmup: 2, max_growth: 100_000) { work }
  #   assert_no_memory_growth(app_root: Dir.pwd) { work } # charged to the app's lines
  #
  # The block runs warmup + rounds times (Mwrap.measure_growth); the
  # assertion fails when the locations whose live bytes rose in every round
  # gained more than max_growth bytes together (default 0) or one of them
  # more than max_growth_per_location (default: no per-location limit).
  # Run the tests under the preload: `mwrap ruby -Itest test/…_test.rb`.
  # Returns the Mwrap::Growth::Report.
  module MinitestAssertions
    KEYWORDS = [*Growth::MEASURE_KEYWORDS, *Growth::LIMIT_KEYWORDS, :message].freeze

    def assert_no_memory_growth(rounds: 5, warmup: 2, max_growth: 0, max_growth_per_location: nil, min_growth: 0,
                                ignore: [], app_root: nil, message: nil, **unknown, &block)
      Growth.check_keywords!(unknown, KEYWORDS, "assert_no_memory_growth")
      raise ArgumentError, "assert_no_memory_growth needs a block (the workload)" unless block

      Growth.check_limits!(max_growth, max_growth_per_location)
      report = Mwrap.measure_growth(rounds: rounds, warmup: warmup, min_growth: min_growth, ignore: ignore,
                                    app_root: app_root, &block)
      limits = { max_growth: max_growth, max_growth_per_location: max_growth_per_location }
      assert(report.passed?(**limits), lambda do
        text = "Memory grew.\n#{report.failure_message(**limits)}"
        message ? "#{message}.\n#{text}" : text
      end)
      report
    end
  end
end

# Classes that included Minitest::Assertions before this line get it too (Ruby >= 3.0).
Minitest::Assertions.include(Mwrap::MinitestAssertions)
