# frozen_string_literal: true

require "spec_helper"
require "support/growth_helpers"

# False alarms are what users of memory-growth checks complain about most:
# the passing examples must pass every time, and the failing ones must fail
# every time, naming the same location. Same check as `rake growth:noise`
# (about 15 s on 2 cores); GROWTH_NOISE_RUNS=0 skips it.
RSpec.describe "memory-growth checks are not noisy" do
  before(:all) do
    require_preload!
    passing = Integer(ENV.fetch("GROWTH_NOISE_RUNS", "20"))
    @results = if passing.zero?
                 {}
               else
                 MwrapGrowthHelpers.noise_check(passing_runs: passing, failing_runs: [passing / 4, 1].max)
               end
  end

  before { skip "GROWTH_NOISE_RUNS=0" if @results.empty? }

  MwrapGrowthHelpers::PASSING.each do |name|
    it "passes #{name} on every run" do
      runs = @results.fetch(name)
      failed = runs.reject { |_, _, ok| ok }
      expect(failed).to be_empty, "#{failed.size}/#{runs.size} runs failed:\n#{failed.map(&:last).uniq.join("\n")}"
    end
  end

  MwrapGrowthHelpers::FAILING.each do |name|
    it "fails #{name} on every run, naming the same location" do
      runs = @results.fetch(name)
      wrong = runs.reject { |_, _, ok| ok }
      expect(wrong).to be_empty, "#{wrong.size}/#{runs.size} runs not as expected:\n#{wrong.map(&:last).uniq.join("\n")}"
      expect(runs.map { |_, location, _| location.sub(/ \[0x\h+\]\z/, "") }.uniq.size).to eq(1)
    end
  end
end
