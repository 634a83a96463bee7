# frozen_string_literal: true

# The leak scan benchmark (`rake bench:leaks`, `rake bench:leaks:quick`;
# `ruby bench/leak_scan.rb` after `rake compile`). README.md (Benchmarks,
# Leak scan) says what it measures. Like bench/run.rb it asserts nothing:
# every figure is printed beside its goal and beside a plain fork of the
# same process measured in the same run; the exit status says only
# whether everything ran.
#
# Environment:
#   QUICK=1      20 MiB and 100 MiB instead of 100 MiB and 1 GiB, 1 repetition
#   REPS=n       timed scans per size (default 5, quick 1); medians are kept
#   BENCH_JSON   where to write the JSON (default bench/results/leak_scan.json,
#                leak_scan_quick.json in quick mode)
#   TRIM=1       malloc_trim(0) in each process before its scans (why: see child)
#   MWRAP_BENCH_PRELOAD  the preload (default lib/mwrap/libmwrap_preload.so)
#
# Each size runs in a fresh Ruby process under the preload (this script
# with --child), so that one size's heap does not inflate the next.

require "json"
require "rbconfig"
require "time"

ROOT = File.expand_path("..", __dir__)
GOAL_MIB_PER_S = 500.0
GOAL_PAUSE_MS = 50.0

# The words of /proc/<pid>/smaps_rollup we report, in bytes (nil if gone).
def smaps(pid = "self")
  text = File.read("/proc/#{pid}/smaps_rollup")
  %w[Rss Pss Shared_Dirty Private_Dirty].to_h do |k|
    [k.downcase.to_sym, text[/^#{k}:\s+(\d+) kB/, 1].to_i * 1024]
  end
rescue Errno::ENOENT, Errno::ESRCH
  nil
end

def median(xs) = xs.sort[xs.size / 2]

def clock = Process.clock_gettime(Process::CLOCK_MONOTONIC)

# --- the measured process ------------------------------------------------

def child(total, block_size, reps)
  require "fiddle"
  require "mwrap"
  abort "leak_scan: not running under the mwrap preload" unless Mwrap.preloaded?

  # What the process leaks by itself (Ruby's boot), so that the blocks
  # found beyond it can be held against the known count below.
  Mwrap.leaks
  own_leaked = Mwrap.last_leak_scan[:leaked_blocks]

  # Every block gets the same content first: one word in four ASCII text,
  # one a small integer, the rest zero, like real heap data; and every page
  # is written, so the live bytes are resident (as a real 1 GiB heap is).
  words = (0...block_size / 8).map { |w| [0x746e_6562_6b61_656c, w, 0, 0][w % 4] }
  template = words.pack("Q*")
  n = total / block_size
  leaked = Array.new(n / 2) # addresses as Integers only: no pointer to them
  head = prev = nil
  n.times do |i|
    addr = Fiddle.malloc(block_size)
    Fiddle::Pointer.new(addr)[0, block_size] = template
    if i.odd?
      leaked[i / 2] = addr
      next
    end
    # anchored: a chain from `head`, each block's first word the next one
    Fiddle::Pointer.new(addr)[0, 8] = [0].pack("Q")
    if prev
      Fiddle::Pointer.new(prev)[0, 8] = [addr].pack("Q")
    else
      head = Fiddle::Pointer.new(addr)
    end
    prev = addr
  end
  prev = nil
  $leak_bench_head = head # the one root of the chain
  GC.start # the Fiddle::Pointer garbage of the loop, before anything is timed
  # TRIM=1: glibc's fastbins and tcache hold freed chunks that still look
  # in use to the scan, and their stale bytes (a freed Fiddle::Pointer's
  # address, say) keep leaked blocks "reachable"; malloc_trim consolidates
  # the fastbins (see README, Leak scan).
  if %w[1 yes true on].include?(ENV.fetch("TRIM", "").downcase)
    Fiddle::Function.new(Fiddle::Handle::DEFAULT["malloc_trim"], [Fiddle::TYPE_SIZE_T], Fiddle::TYPE_INT).call(0)
  end

  # Baseline: a plain fork of this same process, child gone at once.
  forks = Array.new(reps) do
    t0 = clock
    pid = Process.fork { exit!(0) }
    t1 = clock
    Process.wait(pid)
    [t1 - t0, clock - t0]
  end

  scans = Array.new(reps) do
    t0 = clock
    Mwrap.leaks
    Mwrap.last_leak_scan.merge(wall_seconds: clock - t0)
  end

  # One more scan, not timed, for memory: the parent's RSS before, after
  # and while the copy lives, and the copy's own (sampled from another
  # thread, which would slow the timed scans on 2 CPUs).
  before = smaps
  samples = []
  done = false
  sampler = Thread.new do
    until done
      kids = Dir.glob("/proc/self/task/*/children").flat_map { |f| File.read(f).split }
      samples << { parent: smaps, copy: kids.map { |pid| smaps(pid) }.compact.first }
      sleep 0.002
    end
  end
  Mwrap.leaks
  done = true
  sampler.join
  after = smaps
  during = samples.select { |s| s[:copy] }
  memory = {
    parent_before: before, parent_after: after,
    samples_with_copy: during.size,
    parent_max_rss_during: during.map { |s| s[:parent][:rss] }.max,
    parent_max_shared_dirty_during: during.map { |s| s[:parent][:shared_dirty] }.max,
    # pages the parent wrote (copied on write) while the copy lived
    parent_max_private_dirty_during: during.map { |s| s[:parent][:private_dirty] }.max,
    copy_max_private_dirty: during.map { |s| s[:copy][:private_dirty] }.max,
    copy_max_rss: during.map { |s| s[:copy][:rss] }.max
  }
  puts JSON.generate(
    total: total, block_size: block_size, blocks_allocated: n, known_leaked: leaked.size,
    own_leaked_before: own_leaked,
    fork_seconds: forks.map(&:first), fork_wait_seconds: forks.map(&:last), scans: scans, memory: memory
  )
end

# --- the driver ----------------------------------------------------------

def run_case(preload, total, block_size, reps)
  out = IO.popen({ "LD_PRELOAD" => preload }, [RbConfig.ruby, "-I", File.join(ROOT, "lib"), __FILE__,
                                                "--child", total.to_s, block_size.to_s, reps.to_s], &:read)
  return nil unless $?.success?

  JSON.parse(out.lines.last, symbolize_names: true)
end

def mib(bytes) = bytes.nil? ? "-" : format("%.1f", bytes / 1048576.0)

def summarize(r)
  scans = r[:scans]
  m = ->(k) { median(scans.map { |s| s[k] }) }
  live = scans.first[:bytes]
  scan_s = m.(:scan_seconds)
  pause_ms = m.(:pause_seconds) * 1000
  fork_ms = median(r[:fork_seconds]) * 1000
  fork_wait_ms = median(r[:fork_wait_seconds]) * 1000
  rate = live / 1048576.0 / scan_s
  mem = r[:memory]
  {
    size: "#{mib(r[:total])} MiB / #{r[:block_size] / 1024} KiB", blocks: scans.first[:blocks], live_bytes: live,
    root_bytes: scans.first[:root_bytes], scan_seconds: scan_s, scan_mib_per_s: rate, rate_vs_goal: rate / GOAL_MIB_PER_S,
    pause_ms: pause_ms, pause_vs_goal: pause_ms / GOAL_PAUSE_MS, fork_ms: fork_ms, fork_wait_ms: fork_wait_ms,
    pause_vs_fork: pause_ms / fork_ms, pause_vs_fork_wait: pause_ms / fork_wait_ms, leaks_wall_ms: m.(:wall_seconds) * 1000,
    scratch_bytes: scans.first[:scratch_bytes], scratch_pct: 100.0 * scans.first[:scratch_bytes] / live,
    leaked_found: m.(:leaked_blocks) - r[:own_leaked_before], known_leaked: r[:known_leaked],
    leaked_found_first: scans.first[:leaked_blocks] - r[:own_leaked_before],
    parent_rss_before: mem.dig(:parent_before, :rss), parent_rss_after: mem.dig(:parent_after, :rss),
    parent_max_rss_during: mem[:parent_max_rss_during], copy_max_private_dirty: mem[:copy_max_private_dirty],
    parent_max_shared_dirty_during: mem[:parent_max_shared_dirty_during],
    parent_max_private_dirty_during: mem[:parent_max_private_dirty_during]
  }
end

def print_table(rows)
  head = ["size / block", "blocks", "live MiB", "root MiB", "scan MiB/s (x goal)", "pause ms (x goal, x fork, x fork+wait)",
          "fork / fork+wait ms", "leaks wall ms", "scratch MiB (% live)", "leaked found: median (1st scan) / known"]
  body = rows.map do |s|
    [s[:size], s[:blocks].to_s, mib(s[:live_bytes]), mib(s[:root_bytes]),
     format("%.0f (%.2fx)", s[:scan_mib_per_s], s[:rate_vs_goal]),
     format("%.2f (%.2fx, %.2fx, %.2fx)", s[:pause_ms], s[:pause_vs_goal], s[:pause_vs_fork], s[:pause_vs_fork_wait]),
     format("%.2f / %.2f", s[:fork_ms], s[:fork_wait_ms]), format("%.0f", s[:leaks_wall_ms]),
     format("%s (%.1f%%)", mib(s[:scratch_bytes]), s[:scratch_pct]), "#{s[:leaked_found]} (#{s[:leaked_found_first]}) / #{s[:known_leaked]}"]
  end
  puts "| #{head.join(' | ')} |", "| #{head.map { '---' }.join(' | ')} |"
  body.each { |r| puts "| #{r.join(' | ')} |" }
  puts
  puts "Copy-on-write, one more scan per size (smaps_rollup; the parent's RSS before -> at most while the " \
       "copy lived -> after; of it, shared with the copy and still private (written) at most; the copy's own " \
       "Private_Dirty at most, against its scratch):"
  rows.each do |s|
    puts "  #{s[:size]}: parent RSS #{mib(s[:parent_rss_before])} -> #{mib(s[:parent_max_rss_during])} -> " \
         "#{mib(s[:parent_rss_after])} MiB (shared #{mib(s[:parent_max_shared_dirty_during])}, private " \
         "#{mib(s[:parent_max_private_dirty_during])}); copy #{mib(s[:copy_max_private_dirty])} MiB " \
         "(scratch #{mib(s[:scratch_bytes])} MiB)"
  end
end

def main
  $stdout.sync = true
  quick = %w[1 yes true on].include?(ENV.fetch("QUICK", "").downcase)
  reps = Integer(ENV.fetch("REPS", quick ? "1" : "5"))
  preload = File.expand_path(ENV["MWRAP_BENCH_PRELOAD"] || File.join(ROOT, "lib", "mwrap", "libmwrap_preload.so"))
  abort "leak_scan: #{preload} is not built; run `rake compile` (or `rake bench:leaks`, which builds)" \
    unless File.file?(preload)
  cases = quick ? [[20 << 20, 1024], [100 << 20, 1024], [100 << 20, 65536]] : [[100 << 20, 1024], [1 << 30, 1024], [1 << 30, 65536]]
  started = Time.now
  results = cases.map do |total, block|
    $stderr.puts "leak_scan: #{mib(total)} MiB in #{block}-byte blocks, #{reps} scan(s)"
    run_case(preload, total, block, reps) or abort "leak_scan: the #{mib(total)} MiB run failed (#{$?})"
  end
  rows = results.map { |r| summarize(r) }
  print_table(rows)
  json = ENV["BENCH_JSON"] || File.join(ROOT, "bench", "results", quick ? "leak_scan_quick.json" : "leak_scan.json")
  File.write(json, JSON.pretty_generate(
    started: started.utc.iso8601, seconds: (Time.now - started).round(1), quick: quick, reps: reps, trim: ENV["TRIM"],
    nproc: Etc.nprocessors, ruby: RUBY_DESCRIPTION, commit: `git -C #{ROOT} rev-parse --short HEAD`.strip,
    goals: { scan_mib_per_s: GOAL_MIB_PER_S, pause_ms: GOAL_PAUSE_MS }, summary: rows, runs: results
  ) + "\n")
  puts "\nwrote #{json}"
end

if ARGV.first == "--child"
  child(*ARGV[1, 3].map { |a| Integer(a) })
else
  require "etc"
  main
end
