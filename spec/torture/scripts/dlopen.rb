# frozen_string_literal: true

# Part of scenario 1 (spec/torture/threads_spec.rb), run under the preload:
# a native thread dlopens and dlcloses a library that allocates, while
# other native threads allocate, Ruby threads read the tables (naming
# native locations takes the dynamic linker's lock) and the main thread
# forks. ARGV = helper.so, churn.so, seconds, child mode: "counts" (the
# child reads counters only: Mwrap.each with a min so high that no location
# is named, and the totals) or "names" (the child runs Mwrap.each, naming
# every location with dladdr). With MWRAP=bt:N the first reader also runs
# Mwrap.each_stack. Prints one JSON object.
require "mwrap"
require "json"
require_relative "torture_native"
require_relative "../../support/spec_process"
abort "not running under a compatible preload" unless Mwrap.preloaded?

native = TortureNative.new(ARGV[0])
churn = ARGV[1]
seconds = Float(ARGV[2])
names = ARGV[3] == "names"
stacks = Mwrap.recording[:bt].positive? # MWRAP=bt:N: reader 0 also reads every stack
failures = []
stats = Hash.new(0)
native.start(2, 11)
native.dlopen_start(churn)
stop = false
readers = 2.times.map do |i|
  Thread.new do
    devnull = File.open(File::NULL, "w")
    until stop
      if i.zero?
        Mwrap.each { |loc, *| stats[:churn_rows] += 1 if loc.include?("churn") }
        stats[:each] += 1
        if stacks
          # names every frame, those of the churned library too (gone or not)
          Mwrap.each_stack { |_, ruby, native, *| stats[:stack_frames] += ruby.size + native.size }
          stats[:each_stack] += 1
        end
      else
        Mwrap.dump(devnull)
        stats[:dumps] += 1
      end
    end
  end
end
deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
while Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
  pid = fork do
    ok = if names
           Mwrap.each.count.positive?
         else
           Mwrap.each(1 << 62).count.zero? && Mwrap.total_bytes_allocated.positive?
         end
    exit!(ok ? 0 : 3)
  end
  status = SpecProcess.wait_child(pid, timeout: 30) { |hang| failures << "fork child #{hang} (dlopen churn)" }
  failures << "fork child #{pid}: #{status.inspect}" if status && !status.success?
  stats[:forks] += 1
  # Pacing, not a wait: in "counts" mode the churn runs between forks too.
  sleep 0.02 unless names
end
stop = true
readers.each(&:join)
stats[:dlopen_rounds] = native.dlopen_stop
stats[:native_ops] = native.join
failures << "dlopen failed" if stats[:dlopen_rounds].negative?
failures << "native helper: #{native.errors} errors" unless native.errors.zero?
puts JSON.generate(stats: stats, failures: failures)
