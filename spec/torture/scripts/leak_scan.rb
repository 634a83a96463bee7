# frozen_string_literal: true

# Torture scenario of spec/torture/leak_scan_spec.rb, run under the
# preload: ARGV = helper.so, scans, seed. Two native threads hammer the
# malloc family (checking every block they own) and two Ruby threads
# allocate while the main thread scans for leaks `scans` times. Prints one
# JSON object with what ran and every broken invariant in "failures".
require "mwrap"
require "json"
require_relative "torture_native"
abort "not running under a compatible preload" unless Mwrap.preloaded?
native = TortureNative.new(ARGV[0])
scans = Integer(ARGV[1])
failures = []
stats = Hash.new(0)
native.start(2, Integer(ARGV[2]))
native.wait_busy(30)
stop = false
rounds = [0, 0]
ruby_threads = 2.times.map do |i|
  Thread.new do
    keep = []
    until stop
      if i.zero?
        100.times { keep << ("s" * rand(0..5000)) }
        keep.shift(100) if keep.size > 2000
      else
        h = {}
        200.times { |k| h["k#{k}"] = [k] * 5 }
      end
      rounds[i] += 1
    end
  rescue Exception => e # rubocop:disable Lint/RescueException
    failures << "ruby thread #{i}: #{e.class}: #{e.message}"
  end
end
Thread.pass until rounds.all?(&:positive?)
pauses = []
scans.times do
  before = rounds.sum
  leaks = Mwrap.leaks
  stats[:progressed_during_scan] += 1 if rounds.sum > before
  failures << "Mwrap.leaks gave #{leaks.class}" unless leaks.is_a?(Hash)
  leaks.each do |loc, (bytes, count)|
    failures << "#{loc}: leaked #{bytes} bytes in #{count} blocks" unless bytes >= 0 && count.positive?
  end
  scan = Mwrap.last_leak_scan
  failures << "leaked blocks #{scan[:leaked_blocks]} > blocks #{scan[:blocks]}" if scan[:leaked_blocks] > scan[:blocks]
  pauses << scan[:pause_seconds]
  stats[:scans] += 1
end
stop = true
ruby_threads.each(&:join)
native.stop
stats[:native_ops] = native.join
stats[:native_errors] = native.errors
failures << "native helper saw #{stats[:native_errors]} corrupted or failed blocks" if stats[:native_errors] != 0
stats[:max_pause_ms] = (pauses.max * 1000).round(2)
stats[:ruby_rounds] = rounds.sum
puts JSON.generate("stats" => stats, "failures" => failures.first(20), "failure_count" => failures.size)
