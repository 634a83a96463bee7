# frozen_string_literal: true

# Loaded with `ruby -r` by bench/run.rb into every workload run: at exit,
# writes the GC counters that explain differences in wall time and peak
# RSS between variants (a preload can shift when Ruby's GC runs) as one
# JSON line to $BENCH_GC_STATS. Does nothing when that is unset.
if (path = ENV["BENCH_GC_STATS"])
  at_exit do
    s = GC.stat
    File.write(path, "{\"count\":#{s[:count]},\"major\":#{s[:major_gc_count]}," \
                     "\"heap_slots\":#{s[:heap_available_slots]}}\n")
  end
end
