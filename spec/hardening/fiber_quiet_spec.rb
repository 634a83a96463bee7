# frozen_string_literal: true

require_relative "hardening_helper"
require "json"

# Item 5: a Fiber suspended inside Mwrap.quiet must not silence its native
# thread. The baseline counted quiet depth per native thread, so after
# `Fiber.new { Mwrap.quiet { Fiber.yield } }.resume` (or an Enumerator#next
# over a quiet block) nothing the thread allocated was recorded, and
# Mwrap.measure_growth reported no growth for a real leak. A Ruby-API
# check: against the baseline (ABI 2) it fails at Mwrap.preloaded?.
RSpec.describe "hardening: a Fiber suspended inside Mwrap.quiet" do
  include HardeningHelpers

  before { require_preload! }

  let(:script) { File.join(__dir__, "scripts", "fiber_quiet.rb") }

  # [total, allocations] of a line that made one 100,000-character String:
  # at least its 100,001 bytes, plus at most an Array growth or a heap
  # page header made on the same line.
  def one_big_string
    satisfy("be one 100,001-byte String (plus < 4 KiB)") do |(total, allocations)|
      total.to_i.between?(100_001, 100_001 + 4096) && allocations.to_i.between?(1, 5)
    end
  end

  it "records the thread's allocations after the yield and after Enumerator#next, and quiet resumes with the fiber" do
    r = ruby_run(script, preloaded: true, timeout: 60)
    expect(r.success?).to be(true), r.describe
    expect(r.stderr).to eq("")
    out = JSON.parse(r.stdout.lines.last)
    expect(out["preloaded"]).to be(true)
    # Fiber.yield inside quiet: the thread is not quiet.
    expect(out["after_fiber_yield"]).to one_big_string
    expect(out["after_fiber_yield_live"]).to be >= 100_001
    # Resumed: quiet again inside its block, and not after it.
    expect(out["quiet_in_fiber"]).to be_nil
    expect(out["after_fiber_quiet"]).to one_big_string
    # Enumerator#next over a quiet block: the same.
    expect(out["after_enum_next"]).to one_big_string
    expect(out["after_enum_next_live"]).to be >= 100_001
    expect(out["quiet_in_enum"]).to be_nil
  end

  it "lets Mwrap.measure_growth see a real leak while a fiber is suspended inside a quiet block" do
    r = ruby_run(script, preloaded: true, timeout: 60)
    expect(r.success?).to be(true), r.describe
    out = JSON.parse(r.stdout.lines.last)
    # 3 rounds of one 100,001-byte String kept each.
    expect(out["leak_growth"]).to be >= 3 * 100_001
    expect(out["growth"]).to be >= out["leak_growth"]
  end
end
