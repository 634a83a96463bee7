# frozen_string_literal: true

require "mwrap/growth"

module Mwrap
  # RSpec matcher `leak_memory`, included into every example group by
  # `require "mwrap/rspec"`:
  #
  #   expect { work }.not_to leak_memory
  #   expect { work }.not_to leak_memory(rounds: 5, warmup: 2, max_growth: 100_000)
  #   expect { work }.not_to leak_memory(app_root: Dir.pwd) # charged to the app's lines
  #
  # The block runs warmup + rounds times (Mwrap.measure_growth). It "leaks"
  # when the locations whose live bytes rose in every round gained more
  # than max_growth bytes together (default 0) or one of them more than
  # max_growth_per_location (default: no per-location limit). Run the
  # suite under the preload: `mwrap rspec`.
  module RSpecMatchers
    # The matcher object behind #leak_memory.
    class LeakMemory
      OPTIONS = Growth::MEASURE_KEYWORDS
      LIMITS = Growth::LIMIT_KEYWORDS
      KEYWORDS = [*OPTIONS, *LIMITS].freeze

      # The Mwrap::Growth::Report of the last match, for inspection.
      attr_reader :report

      def initialize(rounds: 5, warmup: 2, max_growth: 0, max_growth_per_location: nil, min_growth: 0,
                     ignore: [], app_root: nil, **unknown)
        Growth.check_keywords!(unknown, KEYWORDS, "leak_memory")
        @options = { rounds: rounds, warmup: warmup, min_growth: min_growth,
                     ignore: Growth.check_options!(rounds: rounds, warmup: warmup, min_growth: min_growth,
                                                   ignore: ignore),
                     app_root: Growth.check_app_root!(app_root) }
        Growth.check_limits!(max_growth, max_growth_per_location)
        @limits = { max_growth: max_growth, max_growth_per_location: max_growth_per_location }
      end

      def supports_block_expectations?
        true
      end

      def supports_value_expectations?
        false
      end

      # `to leak_memory`: true when the growth is over the limits.
      def matches?(block)
        !passes?(block)
      end

      # `not_to leak_memory`: true when the growth is within the limits.
      def does_not_match?(block)
        passes?(block)
      end

      def failure_message
        "expected the block to leak memory, but it did not.\n#{@report.failure_message(**@limits)}"
      end

      def failure_message_when_negated
        "expected the block not to leak memory, but it did.\n#{@report.failure_message(**@limits)}"
      end

      def description
        "leak memory (#{@options[:rounds]} rounds after #{@options[:warmup]} warmup, " \
          "#{Growth.limits_text(@limits[:max_growth], @limits[:max_growth_per_location])})"
      end

      private

      def passes?(block)
        unless block.respond_to?(:call)
          raise ArgumentError, "leak_memory takes a block: expect { work }.not_to leak_memory"
        end

        @report = Mwrap.measure_growth(**@options) { block.call }
        @report.passed?(**@limits)
      end
    end

    # See Mwrap::RSpecMatchers.
    def leak_memory(**options)
      LeakMemory.new(**options)
    end
  end
end

require "rspec/core"
RSpec.configure { |config| config.include(Mwrap::RSpecMatchers) }
