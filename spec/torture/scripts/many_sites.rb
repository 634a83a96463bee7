# frozen_string_literal: true

# Scenario 8 of the torture suite (spec/torture/location_table_spec.rb and
# the soak): native locations with unique return addresses do not grow the
# table without bound. ARGV = kind ("generated" or "jit"), helper.so,
# number of call sites, rounds. Prints one JSON object.
require "mwrap"
require "json"
require "fiddle"
abort "not running under a compatible preload" unless Mwrap.preloaded?

kind, helper, n, rounds = ARGV[0], ARGV[1], Integer(ARGV[2]), Integer(ARGV[3])
lib = Fiddle.dlopen(helper)
# The helpers run the calls on a native thread of their own, so that each
# call site is a native location (a Ruby thread's mallocs, with or without
# the GVL, are charged to its Ruby line).
call = if kind == "generated"
         f = Fiddle::Function.new(lib["many_sites_call_in_thread"], [Fiddle::TYPE_INT, Fiddle::TYPE_SIZE_T],
                                  Fiddle::TYPE_LONG)
         ->(r) { f.call(r, 24) }
       else
         f = Fiddle::Function.new(lib["jit_sites_run_in_thread"], [Fiddle::TYPE_LONG, Fiddle::TYPE_SIZE_T, Fiddle::TYPE_INT],
                                  Fiddle::TYPE_LONG)
         ->(r) { f.call(n, 24, r) }
       end
rss_kb = -> { File.read("/proc/self/status")[/VmRSS:\s*(\d+)/, 1].to_i }
ours = if kind == "generated"
         ->(loc) { loc.start_with?("#{helper}(site_") }
       else
         ->(loc) { loc.match?(/\A\[0x\h+\]\z/) }
       end
full = "[mwrap: location table full]"

report = { kind: kind, sites: n, rounds: rounds, steps: [] }
t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
rss0 = rss_kb.call
rounds.times do |r|
  GC.start
  before = rss_kb.call
  calls = call.call(1)
  if calls.negative?
    puts JSON.generate(unsupported: calls)
    exit 0
  end
  rss = rss_kb.call
  own = 0
  own_allocations = 0
  own_frees = 0
  total_sites = 0
  overflow = nil
  Mwrap.each do |loc, _total, allocations, frees|
    total_sites += 1
    if ours.call(loc)
      own += 1
      own_allocations += allocations
      own_frees += frees
    elsif loc == full
      overflow = [allocations, frees]
    end
  end
  report[:steps] << { round: r + 1, calls: calls, own_sites: own, own_allocations: own_allocations,
                      own_frees: own_frees, all_sites: total_sites, overflow: overflow,
                      rss_growth_kb: rss - rss0, call_rss_growth_kb: rss - before }
end
report[:seconds] = (Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0).round(2)
puts JSON.generate(report)
