# frozen_string_literal: true

# Scenario 9 of the torture suite (spec/torture/signals_spec.rb), run under
# the preload: ARGV = helper.so or "" (native threads allocating too).
# Allocates in a loop while the spec sends SIGUSR1/SIGUSR2; both trap
# handlers allocate (and the USR2 one reads the tables). Prints "ready",
# one "usr1 N" / "usr2 N" line per handler run, "synced" for each "sync" on
# stdin, then after "stop" (or the end of stdin) a JSON summary.
#
# "synced" comes from the main thread, which runs the trap handlers: every
# signal whose delivery preceded the "sync" has had its handler line
# printed before it. The spec waits for it instead of sleeping.
require "mwrap"
require "json"
abort "not running under a compatible preload" unless Mwrap.preloaded?
if ARGV[0] && !ARGV[0].empty?
  require_relative "torture_native"
  native = TortureNative.new(ARGV[0])
  native.start(2, 3)
end

counts = Hash.new(0)
kept = []
$stdout.sync = true
trap(:USR1) do
  counts[:usr1] += 1
  kept << ("h" * 1000) # HANDLER1
  kept.shift if kept.size > 100
  $stdout.write("usr1 #{counts[:usr1]}\n")
end
trap(:USR2) do
  counts[:usr2] += 1
  counts[:usr2_rows] += Mwrap.each(100_000).count
  $stdout.write("usr2 #{counts[:usr2]}\n")
end

stop = false
sync_requested = false
reader = Thread.new do
  while (line = $stdin.gets)
    break unless line.chomp == "sync"

    sync_requested = true
  end
  stop = true
end
puts "ready #{$$}"
loops = 0
until stop
  if sync_requested
    sync_requested = false
    $stdout.write("synced\n")
  end
  a = Array.new(100) { |i| "x" * (100 + (i * 37) % 5000) }
  a.map(&:upcase)
  loops += 1
end
reader.join
native_ops = native ? native.join : 0
handler_line = File.readlines(__FILE__).index { |l| l.include?("# HANDLER1") } + 1
_, total, allocations, = Mwrap.each.find { |l, *| l == "#{__FILE__}:#{handler_line}" }
puts JSON.generate(usr1: counts[:usr1], usr2: counts[:usr2], usr2_rows: counts[:usr2_rows], loops: loops,
                   handler_line: [total, allocations], native_ops: native_ops,
                   native_errors: native ? native.errors : 0)
