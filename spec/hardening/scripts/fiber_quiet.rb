# frozen_string_literal: true

# Item 5: a Fiber (or an Enumerator's fiber) suspended inside Mwrap.quiet
# must not silence its native thread. Prints one JSON line of findings;
# spec/hardening/fiber_quiet_spec.rb checks them.
require "json"
require "mwrap"
require "mwrap/growth"

out = { "preloaded" => Mwrap.preloaded? }
keep = []
quiet_in_fiber = after_fiber_quiet = quiet_in_enum = leak_line = nil # line numbers
at = ->(line) { "#{__FILE__}:#{line}" }
seen = ->(line) { Mwrap[at.call(line)] && [Mwrap[at.call(line)].total, Mwrap[at.call(line)].allocations] }

# A Fiber suspended inside a quiet block; the thread goes on allocating.
fiber = Fiber.new do
  Mwrap.quiet do
    Fiber.yield
    keep << ("q" * 100_000); quiet_in_fiber = __LINE__ # resumed: quiet again
  end
  keep << ("r" * 100_000); after_fiber_quiet = __LINE__ # the fiber's block ended
end
fiber.resume
keep << ("a" * 100_000); after_yield = __LINE__
out["after_fiber_yield"] = seen.call(after_yield)
out["after_fiber_yield_live"] = Mwrap.live_snapshot(50_000).dig(at.call(after_yield), 0)
fiber.resume
out["quiet_in_fiber"] = seen.call(quiet_in_fiber)
out["after_fiber_quiet"] = seen.call(after_fiber_quiet)

# Enumerator#next over a quiet block: the enumerator's fiber is suspended
# inside it.
enum = Enumerator.new do |y|
  Mwrap.quiet do
    y << 1
    keep << ("e" * 100_000); quiet_in_enum = __LINE__
    y << 2
  end
end
enum.next
keep << ("b" * 100_000); after_next = __LINE__
out["after_enum_next"] = seen.call(after_next)
out["after_enum_next_live"] = Mwrap.live_snapshot(50_000).dig(at.call(after_next), 0)
enum.next
out["quiet_in_enum"] = seen.call(quiet_in_enum)

# A leak measured while both are still suspended inside their quiet blocks.
held = Fiber.new { Mwrap.quiet { Fiber.yield } }
held.resume
leak = []
report = Mwrap.measure_growth(rounds: 3, warmup: 1) do
  leak << ("l" * 100_000); leak_line ||= __LINE__
end
out["growth"] = report.total_growth
out["leak_growth"] = report.growing.find { |g| g.location == at.call(leak_line) }&.growth

puts JSON.generate(out)
