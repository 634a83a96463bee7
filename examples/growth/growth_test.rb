# frozen_string_literal: true

# The growth examples as minitest tests, with assert_no_memory_growth. Run
# under the preload (three tests fail on purpose, naming the leaking line):
#
#   mwrap ruby examples/growth/growth_test.rb
#
# (In a checkout: exe/mwrap ruby -I lib examples/growth/growth_test.rb)
require "minitest/autorun"
require "mwrap/minitest"
%w[fiddle_leak module_eval_leak native_thread_leak bounded_cache leak_free].each do |name|
  require_relative name
end

class GrowthTest < Minitest::Test

  def test_fiddle_leak_fails_on_purpose
    assert_no_memory_growth { GrowthExamples::FiddleLeak.round }
  end

  def test_module_eval_leak_fails_on_purpose
    assert_no_memory_growth(rounds: 5, warmup: 2) { GrowthExamples::ModuleEvalLeak.round }
  end

  def test_native_thread_leak_fails_on_purpose
    assert_no_memory_growth(max_growth: 100_000) { GrowthExamples::NativeThreadLeak.round }
  end

  def test_bounded_cache
    assert_no_memory_growth(rounds: 5, warmup: 2) { GrowthExamples::BoundedCache.round }
  end

  def test_leak_free
    assert_no_memory_growth(max_growth: 0) { GrowthExamples::LeakFree.round }
  end
end
