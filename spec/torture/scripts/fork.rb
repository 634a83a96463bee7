# frozen_string_literal: true

# Scenario 2 of the torture suite (spec/torture/fork_spec.rb), run under the
# preload: ARGV = helper.so, number of forks, per-child timeout, lib dir.
# Child i allocates 50,001 bytes at /torture-child-i.rb:1 (a file name of
# its own), spawned child j at /torture-spawn-j.rb:1, the parent at
# /torture-parent.rb:1. Prints one JSON object.
require "mwrap"
require "json"
require "rbconfig"
require_relative "torture_native"
require_relative "../../support/spec_process"
abort "not running under a compatible preload" unless Mwrap.preloaded?
native = TortureNative.new(ARGV[0])
forks = Integer(ARGV[1])
timeout = Float(ARGV[2])
lib = ARGV[3]
failures = []
stats = Hash.new(0)
stop = false

native.start(4, 7)
ruby_threads = 2.times.map do |t|
  Thread.new do
    keep = []
    until stop
      100.times { keep << "p#{t}" * rand(1..3000) }
      keep.shift(90)
      Thread.pass
    end
  end
end

# The child's work: Ruby code, an allocation at a line of its own, a
# read of the tables. Returns the line it reports.
child_work = lambda do |i, file|
  eval("$unique = 'c' * 50_000", TOPLEVEL_BINDING, file, 1)
  words = Array.new(200) { |k| "w#{k}" * 20 }.join(",").split(",")
  rows = Mwrap.each.count
  own = Mwrap.each.count { |loc, *| loc == "#{file}:1" }
  "#{i} #{rows} #{own} #{words.size} #{Mwrap.preloaded?}"
end

# Waits for pid with a time bound; kills it and records a failure (with
# its stacks) if it hangs.
wait_bounded = lambda do |name, pid|
  SpecProcess.wait_child(pid, timeout: timeout) { |hang| failures << "#{name} #{hang}" }
end

read_bounded = lambda do |name, io|
  out = +""
  deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
  loop do
    left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
    if left <= 0
      failures << "#{name}: no report within #{timeout} s"
      break
    end
    next unless IO.select([io], nil, nil, left)

    chunk = io.read_nonblock(4096, exception: false)
    break if chunk.nil?
    out << chunk if chunk.is_a?(String)
  end
  out
end

check_report = lambda do |name, i, line|
  f = line.to_s.split
  if f.size != 5 || f[0] != i.to_s || f[1].to_i < 10 || f[2] != "1" || f[3] != "200" || f[4] != "true"
    failures << "#{name}: bad report #{line.inspect}"
  end
end

started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
slowest = 0.0
(0...forks).each_slice(5) do |slice|
  children = slice.map do |i|
    name = "fork child #{i}"
    file = "/torture-child-#{i}.rb"
    t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    case i % 3
    when 0 # Process.fork with a block
      r, w = IO.pipe
      pid = Process.fork do
        r.close
        w.puts child_work.call(i, file)
        w.close
        exit 0
      end
      w.close
      stats[:fork_block] += 1
      [name, i, t0, pid, r, nil]
    when 1 # fork without a block
      r, w = IO.pipe
      pid = fork
      if pid.nil?
        r.close
        w.puts child_work.call(i, file)
        w.close
        exit 0
      end
      w.close
      stats[:fork_plain] += 1
      [name, i, t0, pid, r, nil]
    else # IO.popen("-"): the child's stdout is the pipe
      # The workload under test, not SpecProcess's: a fork under the
      # preload, bounded by read_bounded and wait_bounded.
      io = IO.popen("-")
      if io.nil?
        $stdout.puts child_work.call(i, file)
        $stdout.flush
        exit 0
      end
      stats[:popen_dash] += 1
      [name, i, t0, io.pid, io, io]
    end
  end
  children.each do |name, i, t0, pid, r, popen|
    line = read_bounded.call(name, r)
    status = wait_bounded.call(name, pid)
    if popen
      begin
        popen.close
      rescue Errno::ECHILD
        nil
      end
    else
      r.close
    end
    slowest = [slowest, Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0].max
    failures << "#{name}: #{status.inspect}" if status && !status.success?
    check_report.call(name, i, line.lines.last)
  end
end
stats[:fork_seconds] = (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).round(2)
stats[:slowest_child] = slowest.round(3)

# spawn: a fresh Ruby under the inherited LD_PRELOAD and MWRAP.
spawns = [forks / 10, 2].max
spawns.times do |j|
  code = "require 'mwrap'; " \
         "eval(%q{$unique = 'c' * 50_000}, TOPLEVEL_BINDING, '/torture-spawn-#{j}.rb', 1); " \
         "puts [#{j}, Mwrap.each.count, Mwrap.each.count { |l, *| l == '/torture-spawn-#{j}.rb:1' }, " \
         "200, Mwrap.preloaded?].join(' ')"
  r, w = IO.pipe
  # The workload, not SpecProcess's: it must inherit LD_PRELOAD and MWRAP,
  # which SpecProcess clears; bounded by read_bounded and wait_bounded.
  pid = spawn(RbConfig.ruby, "-I", lib, "-e", code, out: w)
  w.close
  name = "spawned child #{j}"
  out = read_bounded.call(name, r)
  r.close
  status = wait_bounded.call(name, pid)
  failures << "#{name}: #{status.inspect}" if status && !status.success?
  check_report.call(name, j, out.lines.last)
  stats[:spawn] += 1
end

eval("$parent = 'p' * 50_000", TOPLEVEL_BINDING, "/torture-parent.rb", 1)
stop = true
ruby_threads.each(&:join)
stats[:native_ops] = native.join
failures << "native helper: #{native.errors} errors" unless native.errors.zero?
puts JSON.generate(stats: stats, failures: failures)
