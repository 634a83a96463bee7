# frozen_string_literal: true

# Compiles 2,000 methods from strings, as template engines do, and keeps
# them: their instruction sequences live in memory Ruby's ObjectSpace does
# not show. Run it under mwrap with native stacks to see why its
# module_eval line holds so much:
#
#   MWRAP=bt:16,dump_format:folded,dump_path:iseq.folded mwrap ruby examples/iseq_leak.rb
require "securerandom"

module BigModule; end

2_000.times do
  BigModule.module_eval("def _#{SecureRandom.hex}; #{'sleep;' * 100}; end", "tmpl.erb", 1)
end
