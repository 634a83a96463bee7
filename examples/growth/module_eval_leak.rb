# frozen_string_literal: true

module GrowthExamples
  # A leak of instruction sequences: every round defines PER_ROUND new
  # methods from strings on one module (think of templates compiled on
  # each request under a fresh name). Methods are never removed, so their
  # compiled code stays. The growth check fails naming the module_eval line.
  module ModuleEvalLeak
    PER_ROUND = 1_000

    # Where the generated methods go.
    module Templates; end

    @defined = 0

    def self.round
      PER_ROUND.times do
        n = (@defined += 1)
        Templates.module_eval("def render_#{n}(x) = \"<p>\#{x}</p>\"", __FILE__, __LINE__)
      end
    end
  end
end
