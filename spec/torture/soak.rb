# frozen_string_literal: true

# Soak: a mixed workload under the preload for TORTURE_SECONDS (default
# 600), reporting the profiler's own memory (RSS growth against the bytes
# it tracks as live) and showing that native locations with unique return
# addresses do not grow the table without bound (it caps at ~1M locations,
# then charges "[mwrap: location table full]").
#
#   rake torture:soak                      # 10 minutes
#   TORTURE_SECONDS=120 rake torture:soak  # 2 minutes
#   ruby spec/torture/soak.rb              # the same, without rake
#
# Run directly, it compiles its native helpers with gcc and re-runs itself
# under lib/mwrap/libmwrap_preload.so (MWRAP_PRELOAD_SO to override); exit
# status 0 means every check held. Not part of `rake spec`.
require "rbconfig"
require "json"
require_relative "../support/spec_process"

ROOT = SpecProcess::ROOT
NATIVE = File.join(__dir__, "native")

unless ENV["MWRAP_SOAK_CHILD"]
  require_relative "../support/c_build_cache"
  preload = ENV["MWRAP_PRELOAD_SO"] || File.join(ROOT, "lib", "mwrap", "libmwrap_preload.so")
  abort "soak: #{preload} is missing: run `rake compile` first" unless File.file?(preload)
  libs = %w[torture_threads jit_sites].map do |name|
    CBuildCache.build(File.join(NATIVE, "#{name}.c"), shared: true, libs: %w[-pthread -ldl])
  rescue CBuildCache::Error => e
    abort "soak: #{e.message}"
  end
  seconds = Float(ENV.fetch("TORTURE_SECONDS", "600"))
  # The workload runs with its output shown as it comes; if it outlives its
  # length by 10 minutes it is hung: its stacks are printed, and it is killed.
  r = SpecProcess.run({ "MWRAP_SOAK_CHILD" => "1", "LD_PRELOAD" => preload }, RbConfig.ruby,
                      "-I", File.join(ROOT, "lib"), __FILE__, *libs,
                      timeout: seconds + 600, echo: true, on_timeout: :return)
  if r.timed_out || r.status.signaled?
    warn "soak: the workload #{r.timed_out ? 'hung' : "died by signal #{r.termsig}"}"
    warn "--- stacks at the timeout ---\n#{r.stacks || '(none: no gdb)'}" if r.timed_out
    exit 1
  end
  exit r.exitstatus
end

require "mwrap"
require "zlib"
require "fiddle"
require_relative "scripts/torture_native"
abort "soak: not running under a compatible preload" unless Mwrap.preloaded?

seconds = Float(ENV.fetch("TORTURE_SECONDS", "600"))
interval = Float(ENV.fetch("SOAK_INTERVAL", [10, seconds / 20].max.to_s))
max_sites = 1024 * 1024 - 1
full = "[mwrap: location table full]"
failures = []
native = TortureNative.new(ARGV[0])
# On a native thread: each generated call site stays a native location.
jit = Fiddle::Function.new(Fiddle.dlopen(ARGV[1])["jit_sites_run_in_thread"],
                           [Fiddle::TYPE_LONG, Fiddle::TYPE_SIZE_T, Fiddle::TYPE_INT], Fiddle::TYPE_LONG)
rss_mb = -> { File.read("/proc/self/status")[/VmRSS:\s*(\d+)/, 1].to_i / 1024.0 }
# Bytes and blocks the preload tracks as live (each block also carries a
# 32-byte header).
live = lambda do
  if Mwrap.respond_to?(:live_snapshot)
    rows = Mwrap.live_snapshot.values
    [rows.sum { |lb, *| lb } / 1048576.0, rows.sum { |_lb, lc, *| lc }]
  else
    [(Mwrap.total_bytes_allocated - Mwrap.total_bytes_freed) / 1048576.0, 0]
  end
end
say = ->(msg) { $stdout.puts(msg) || $stdout.flush }

say.call(format("soak: %d s, report every %d s, pid %d, preload %s", seconds, interval, $$, ENV["LD_PRELOAD"]))
native.start(2, 99) # two cores here: leave room for Ruby
stop = false
# While the main thread samples, the workers wait at this gate (so the main
# thread has the GVL): a condition variable, not a polling sleep.
paused = false
gate = Mutex.new
resumed = ConditionVariable.new
pass_gate = -> { gate.synchronize { resumed.wait(gate) while paused } }
ops = Hash.new(0)
workers = []
# Ruby churn: strings, arrays, hashes, zlib. The live set grows for a while
# (up to 20,000 strings, ~90 MB) and then stays level.
workers << Thread.new do
  keep = []
  until stop
    pass_gate.call if paused

    300.times { |i| keep << ("s" * (i * 13 % 9000)) }
    keep.shift(keep.size > 20_000 ? 300 : 290)
    ops[:strings] += 300
  end
end
workers << Thread.new do
  cache = {}
  until stop
    pass_gate.call if paused

    k = rand(20_000)
    cache[k] = Array.new(rand(1..50)) { |i| { i => "v#{i}" } }
    cache.delete(rand(20_000))
    ops[:hash] += 1
    Zlib::Deflate.deflate("z" * 10_000) if (ops[:hash] % 100).zero?
  end
end
# Readers of the tables.
workers << Thread.new do
  devnull = File.open(File::NULL, "w")
  until stop
    pass_gate.call if paused

    top = Mwrap.each(1 << 20).first(10)
    top.each { |loc, *| Mwrap[loc]&.each { |*| ops[:live_blocks] += 1 } } if Mwrap.respond_to?(:[])
    Mwrap.dump(devnull, 1 << 20)
    ops[:reads] += 1
    sleep 0.2 # this reader's pace
  end
end

start = Process.clock_gettime(Process::CLOCK_MONOTONIC)
elapsed = -> { Process.clock_gettime(Process::CLOCK_MONOTONIC) - start }
samples = []
jit_n = 0
forks = 0
step = 0
# New unique native call sites: each step maps a larger block of stubs at
# new addresses, reaching 1.2M stubs (past the cap) at about half time.
steps = (seconds / interval).floor
jit_step = [(1_200_000.0 / [steps / 2, 1].max).ceil, 1_200_000].min
say.call(format("%8s %9s %9s %10s %10s %9s %12s %10s %6s %8s", "t(s)", "rss(MB)", "live(MB)", "blocks", "sites",
                "native", "overflow", "jit_calls", "forks", "sample(s)"))
while elapsed.call < seconds
  sleep [interval, seconds - elapsed.call].min # the workload runs until the next sample
  step += 1
  t_sample = elapsed.call
  gate.synchronize { paused = true }
  jit_n = [jit_n + jit_step, 1_200_000].min
  calls = jit.call(jit_n, 32, 1)
  failures << "jit_sites_run(#{jit_n}) returned #{calls}" if calls.negative? && calls != -1
  # A fork while everything runs; the child works and exits in time.
  pid = fork do
    a = Array.new(1000) { |i| "child #{i}" * 10 }
    exit!(Mwrap.each(1 << 20).count.positive? && a.size == 1000 ? 0 : 3)
  end
  status = SpecProcess.wait_child(pid, timeout: 60) { |hang| failures << "fork child #{hang}" }
  failures << "fork child #{pid}: #{status.inspect}" if status && !status.success?
  forks += 1
  sites = 0
  native_sites = 0
  overflow = 0
  Mwrap.each do |loc, _t, allocations|
    sites += 1
    native_sites += 1 if loc.start_with?("[0x")
    overflow = allocations if loc == full
  end
  failures << "#{sites} locations, above the cap #{max_sites}" if sites > max_sites
  live_mb, live_blocks = live.call
  sample = { t: elapsed.call.round, rss: rss_mb.call.round(1), live: live_mb.round(1), blocks: live_blocks,
             sites: sites, native: native_sites, overflow: overflow, jit_calls: calls, forks: forks }
  gate.synchronize do
    paused = false
    resumed.broadcast
  end
  sample[:sample_seconds] = (elapsed.call - t_sample).round(1)
  samples << sample
  say.call(format("%8d %9.1f %9.1f %10d %10d %9d %12d %10d %6d %8.1f", *sample.values))
end
stop = true
workers.each(&:join)
native_ops = native.join
failures << "native helper: #{native.errors} corrupted or failed blocks" unless native.errors.zero?
own = Mwrap.each.select { |loc, *| native.own?(loc) }
own.each { |loc, _t, a, f| failures << "#{loc}: allocations #{a} != frees #{f} after join" if a != f }

first = samples.first || { rss: rss_mb.call, live: live.call.first }
last = samples.last || first
summary = {
  seconds: elapsed.call.round, samples: samples.size, native_ops: native_ops, ruby_ops: ops,
  forks: forks, rss_mb: [first[:rss], last[:rss]], live_mb: [first[:live], last[:live]],
  rss_growth_mb: (last[:rss] - first[:rss]).round(1), live_growth_mb: (last[:live] - first[:live]).round(1),
  max_sites: samples.map { |s| s[:sites] }.max, cap: max_sites,
  overflow_allocations: samples.map { |s| s[:overflow] }.max, failures: failures
}
# From the first sample with a full table on: what RSS did against live.
if (capped = samples.find { |s| s[:sites] >= max_sites })
  summary[:after_cap] = { from_t: capped[:t], rss_growth_mb: (last[:rss] - capped[:rss]).round(1),
                          live_growth_mb: (last[:live] - capped[:live]).round(1),
                          blocks_growth: last[:blocks] - capped[:blocks] }
end
say.call("soak summary: #{JSON.generate(summary)}")
exit failures.empty? ? 0 : 1
