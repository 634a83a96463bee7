# frozen_string_literal: true

# Loaded with `ruby -I lib -r` by bench/run.rb into one untimed w1 run per
# stack variant (MWRAP=bt:16, ruby_bt:16, app_root:...): at exit, reads
# Mwrap.each_stack and writes to $BENCH_STACK_STATS, as JSON, how many
# allocations the lines of $BENCH_STACK_SCRIPT made and how many native
# and Ruby frames their recorded stacks hold (allocation-weighted), and
# the same over the whole process. bench/run.rb divides the extra wall
# time of bt:16 over mwrap by allocations x frames: the cost per frame.
# Does nothing when BENCH_STACK_STATS is unset.
if (path = ENV["BENCH_STACK_STATS"])
  require "mwrap"
  script = ENV.fetch("BENCH_STACK_SCRIPT", "")
  at_exit do
    blank = -> { { "allocations" => 0, "native_frames" => 0, "ruby_frames" => 0, "stacks" => 0,
                   "full_native" => 0, "native_hist" => Hash.new(0) } }
    line = blank.()
    all = blank.()
    Mwrap.each_stack do |location, ruby_frames, native_frames, _total, allocations, _frees, _live_bytes, _live_count|
      rows = [all]
      rows << line if !script.empty? && location.to_s.start_with?("#{script}:")
      rows.each do |r|
        r["allocations"] += allocations
        r["native_frames"] += allocations * native_frames.size
        r["ruby_frames"] += allocations * ruby_frames.size
        r["stacks"] += 1
        r["full_native"] += allocations if native_frames.size >= 16
        r["native_hist"][native_frames.size] += allocations
      end
    end
    summary = lambda do |r|
      a = r["allocations"]
      r.merge("native_frames_per_allocation" => a.zero? ? 0 : (r["native_frames"].to_f / a).round(3),
              "ruby_frames_per_allocation" => a.zero? ? 0 : (r["ruby_frames"].to_f / a).round(3),
              "native_hist" => r["native_hist"].sort.to_h)
    end
    File.write(path, JSON.generate("script_lines" => summary.(line), "process" => summary.(all)) + "\n")
  end
  require "json"
end
