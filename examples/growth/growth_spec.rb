# frozen_string_literal: true

# The growth examples as RSpec examples, with the leak_memory matcher. Run
# under the preload (three examples fail on purpose, naming the leaking line):
#
#   mwrap rspec examples/growth/growth_spec.rb
#
# (In a checkout: exe/mwrap ruby -S rspec -I lib examples/growth/growth_spec.rb)
require "mwrap/rspec"
%w[fiddle_leak module_eval_leak native_thread_leak bounded_cache leak_free].each do |name|
  require_relative name
end

RSpec.describe "memory growth" do
  it "does not leak through Fiddle (fails on purpose)" do
    expect { GrowthExamples::FiddleLeak.round }.not_to leak_memory
  end

  it "does not leak compiled methods (fails on purpose)" do
    expect { GrowthExamples::ModuleEvalLeak.round }.not_to leak_memory(rounds: 5, warmup: 2)
  end

  it "does not leak on native threads (fails on purpose)" do
    expect { GrowthExamples::NativeThreadLeak.round }.not_to leak_memory(max_growth: 100_000)
  end

  it "lets a bounded cache fill up" do
    expect { GrowthExamples::BoundedCache.round }.not_to leak_memory(rounds: 5, warmup: 2)
  end

  it "does not keep what it allocates" do
    expect { GrowthExamples::LeakFree.round }.not_to leak_memory(max_growth: 0)
  end
end
