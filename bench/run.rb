# frozen_string_literal: true

# The mwrap overhead benchmark. `rake bench` / `rake bench:quick` run it;
# `ruby bench/run.rb` works too (after `rake compile`). README.md
# (Benchmarks) says what it measures. Every number it prints is a ratio
# against plain Ruby (or plain glibc) measured in the same run, and it
# asserts nothing: its exit status says only whether everything ran.
#
# Environment:
#   QUICK=1                 workloads at ~1/10 size, 1 repetition, no warm-up,
#                           no heaptrack, no callgrind (unless asked)
#   REPS=n, WARMUP=n        repetitions counted (default 5) and discarded (1)
#   WORKLOADS=w1,w3         only these workloads (ids or file names); none:
#                           only the native benchmark and callgrind
#   HEAPTRACK=0|1           heaptrack variant (default: full mode, if installed)
#   CALLGRIND=0|1           instruction counts (default: full mode, if valgrind)
#   NATIVE=0                skip the native (no Ruby) micro-benchmarks
#   STACK_VARIANTS=0        skip the stack variants: our preload with
#                           MWRAP=bt:0 (stacks off, the per-frame costs'
#                           reference), MWRAP=bt:16 (native stacks),
#                           MWRAP=ruby_bt:16
#                           (Ruby frames) and MWRAP=app_root:<bench/workloads>
#                           (default: on, in quick mode too, at its sizes);
#                           they run in the workloads (interleaved with plain
#                           and mwrap, with the stack targets) and under
#                           callgrind, not in the native wall-time and fork
#                           benchmarks. With w1, one extra untimed run per
#                           stack variant reads Mwrap.each_stack
#                           (bench/stack_stats.rb) for the frames per stack
#                           of the cost per unwound frame
#   FORK_SITES=n            call sites of the fork benchmark (default 1,000,000;
#                           quick: 100,000)
#   PERF=0|1                perf profile of the native 2-thread run (default:
#                           full mode, if perf is installed)
#   MWRAP_BENCH_PRELOAD     our preload (default lib/mwrap/libmwrap_preload.so)
#   MWRAP_BENCH_OTHER       more preload libraries to compare, ':'-separated,
#                           each labelled by its basename
#   BENCH_JSON              where to write the JSON (default
#                           bench/results/latest.json, quick.json in quick mode)
#   BENCH_KEEP=dir          keep the callgrind output files in dir
#   BENCH_ENV="A=1 B=2"     added to the environment of every workload run
#                           (e.g. RUBY_GC_HEAP_INIT_SLOTS=30000 to hold Ruby's
#                           heap size equal across variants)

require "digest"
require "etc"
require "fileutils"
require "json"
require "rbconfig"
require "time"
require "tmpdir"
require_relative "callgrind"

module Bench
  ROOT = File.expand_path("..", __dir__)
  BENCH_DIR = File.join(ROOT, "bench")
  BUILD_DIR = File.join(ROOT, "tmp", "bench")
  RUBY = RbConfig.ruby
  GC_STATS = File.join(BENCH_DIR, "gc_stats.rb")

  Workload = Struct.new(:id, :file, :full_n, :description)
  WORKLOADS = [
    Workload.new("w1", "w1_string.rb", 2_000_000, %(N.times { "x" * 200 })),
    Workload.new("w2", "w2_hash.rb", 300_000, "N hashes of 20 arrays of 10"),
    Workload.new("w3", "w3_fiddle.rb", 100_000, "Fiddle.malloc(1024) N times, half freed"),
    Workload.new("w4", "w4_module_eval.rb", 10_000, "module_eval of N methods of 100 sleep calls"),
    Workload.new("w5", "w5_json.rb", 16_000, "JSON.generate + JSON.parse, 50 records, N times"),
    Workload.new("w6", "w6_erb.rb", 5_000, "ERB page with a 100-row table, N times")
  ].freeze

  # A way to run a command: plain, under a preload library, or under heaptrack.
  # `env`: NAME=VALUE strings added to the run's environment (MWRAP).
  Variant = Struct.new(:label, :preload, :heaptrack, :env, keyword_init: true)

  TARGETS = {
    wall: 1.25, rss: 1.15, w1_instructions: 1.15, w1_extra_per_pair: 300,
    native_extra_per_pair: 150, thread_scaling: 1.2, fork_handler_ms: 2.0
  }.freeze
  TARGET_WORKLOADS = %w[w1 w2 w3 w4 w5].freeze

  # The stack variants (our preload with an MWRAP setting) and their
  # targets: the geometric mean of the min-wall ratios over w2-w6, the
  # worst of them, and w1 (a malloc every ~175 ns) on its own. `mwrap
  # bt:0` has no target: it is the reference of the per-frame costs, the
  # same build with stacks off but MWRAP set, which tells the setting's
  # presence from its work.
  STACK_BASE = "mwrap bt:0"
  STACK_VARIANTS = [
    [STACK_BASE, "MWRAP=bt:0"],
    ["mwrap bt:16", "MWRAP=bt:16"],
    ["mwrap ruby_bt:16", "MWRAP=ruby_bt:16"],
    ["mwrap app_root", "MWRAP=app_root:#{File.join(BENCH_DIR, 'workloads')}"]
  ].freeze
  STACK_TARGETS = { geomean: 1.5, worst: 2.0, w1: 2.5 }.freeze
  STACK_TARGET_WORKLOADS = %w[w2 w3 w4 w5 w6].freeze
  STACK_STATS = File.join(BENCH_DIR, "stack_stats.rb")

  # Plain glibc's 2-thread/1-thread time per op above this: the two threads
  # did not run in parallel (fewer than 2 free CPUs), no scaling verdict.
  PARALLEL_LIMIT = 1.5
  CALLGRIND_W1_N = 200_000
  NATIVE_CALLGRIND_OPS = 200_000

  # Helpers shared by the runner.
  module Util
    module_function

    def env_flag(name, default)
      v = ENV[name]
      return default if v.nil? || v.empty?

      !%w[0 no false off].include?(v.downcase)
    end

    def which(cmd)
      ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).map { |d| File.join(d, cmd) }
         .find { |p| File.executable?(p) && !File.directory?(p) }
    end

    def median(xs)
      s = xs.sort
      n = s.size
      n.odd? ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2.0
    end

    def fmt_ratio(r)
      r ? format("%.2fx", r) : "-"
    end

    def fmt_int(n)
      n.round.to_s.reverse.scan(/\d{1,3}/).join(",").reverse.then { |s| n.negative? ? "-#{s}" : s }
    end

    def markdown_table(header, rows)
      widths = header.each_index.map { |i| ([header[i]] + rows.map { |r| r[i].to_s }).map(&:size).max }
      line = ->(cells) { "| " + cells.each_with_index.map { |c, i| c.to_s.ljust(widths[i]) }.join(" | ") + " |" }
      sep = "| " + widths.map { |w| "-" * w }.join(" | ") + " |"
      [line.(header), sep, *rows.map(&line)].join("\n")
    end
  end

  class Runner
    include Util

    attr_reader :results

    def initialize
      @quick = env_flag("QUICK", false)
      @reps = Integer(ENV.fetch("REPS", @quick ? "1" : "5"))
      @warmup = Integer(ENV.fetch("WARMUP", @quick ? "0" : "1"))
      @preload = File.expand_path(ENV.fetch("MWRAP_BENCH_PRELOAD", File.join(ROOT, "lib", "mwrap", "libmwrap_preload.so")))
      @others = ENV.fetch("MWRAP_BENCH_OTHER", "").split(":").reject(&:empty?).map { |p| File.expand_path(p) }
      @heaptrack = env_flag("HEAPTRACK", !@quick) ? which("heaptrack") : nil
      @heaptrack_wanted = env_flag("HEAPTRACK", !@quick)
      @callgrind = env_flag("CALLGRIND", !@quick) ? which("valgrind") : nil
      @callgrind_wanted = env_flag("CALLGRIND", !@quick)
      @native = env_flag("NATIVE", true)
      @stacks = env_flag("STACK_VARIANTS", true)
      @perf = env_flag("PERF", !@quick) ? which("perf") : nil
      @json_path = ENV["BENCH_JSON"] || File.join(BENCH_DIR, "results", @quick ? "quick.json" : "latest.json")
      @keep = ENV["BENCH_KEEP"]
      @extra_env = ENV.fetch("BENCH_ENV", "").split.each do |kv|
        abort "bench: BENCH_ENV: not NAME=VALUE: #{kv}" unless kv.match?(/\A[A-Za-z_][A-Za-z0-9_]*=/)
      end
      @workloads = select_workloads
      @results = {}
      check_inputs
    end

    def run
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      build_native
      Dir.mktmpdir("mwrap-bench") do |tmp|
        @tmp = tmp
        snapshot_libraries
        @load_before = loadavg
        puts header
        warn_if_busy
        @results["workloads"] = @workloads.empty? ? [] : run_workloads
        @results["native"] = run_native if @native
        @results["fork"] = run_fork if @native
        @results["perf"] = run_perf if @native && @perf
        @results["callgrind"] = run_callgrind if @callgrind
        @results["loadavg"] = { "before" => @load_before, "after" => loadavg }
      end
      @results["targets"] = evaluate_targets
      @results["frame_costs"] = frame_costs
      @results["duration_s"] = (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).round(1)
      report
      write_json
      return if essential_failures.empty?

      abort "bench: failed under plain Ruby or our preload: " +
            essential_failures.map { |(v, w), st| "#{w} under #{v} (exit #{st})" }.join(", ")
    end

    private

    # ---- setup -----------------------------------------------------------

    def select_workloads
      wanted = ENV.fetch("WORKLOADS", "").split(/[,\s]+/).reject(&:empty?)
      return WORKLOADS if wanted.empty?
      return [] if wanted == ["none"]

      WORKLOADS.select { |w| wanted.any? { |x| w.id == x || w.file.start_with?(x) } }.tap do |ws|
        abort "bench: WORKLOADS=#{ENV['WORKLOADS']} names no workload (#{WORKLOADS.map(&:id).join(', ')})" if ws.empty?
      end
    end

    def check_inputs
      unless File.file?(@preload)
        abort "bench: #{@preload} not found: run `rake compile` (or set MWRAP_BENCH_PRELOAD)"
      end
      @others.each { |p| abort "bench: MWRAP_BENCH_OTHER: #{p} not found" unless File.file?(p) }
      warn "bench: HEAPTRACK asked for but heaptrack is not installed; skipping it" if @heaptrack_wanted && !@heaptrack && ENV["HEAPTRACK"]
      warn "bench: CALLGRIND asked for but valgrind is not installed; skipping it" if @callgrind_wanted && !@callgrind && ENV["CALLGRIND"]
      abort "bench: REPS must be at least 1" if @reps < 1
    end

    # Copies the libraries under test into the temporary directory, so a
    # `rake compile` running meanwhile cannot swap them in the middle of
    # the run. The copies keep their basenames (callgrind names objects by
    # path, the labels use basenames).
    def snapshot_libraries
      @preload_source = @preload
      @preload_sha = Digest::SHA256.file(@preload).hexdigest[0, 16]
      @preload = snapshot(@preload, "mwrap")
      @others = @others.each_with_index.map { |p, i| snapshot(p, "other#{i}") }
    end

    def snapshot(path, dir)
      dest = File.join(@tmp, "lib", dir, File.basename(path))
      FileUtils.mkdir_p(File.dirname(dest))
      FileUtils.cp(path, dest)
      dest
    end

    def loadavg
      File.read("/proc/loadavg").split.first(3).map(&:to_f)
    rescue SystemCallError
      nil
    end

    def warn_if_busy
      return unless @load_before && @load_before[0] > 0.5

      puts "bench: note: load average #{@load_before.join(' ')} on #{Etc.nprocessors} CPUs before the run: " \
           "wall times will be noisy (the ratios use min and median over interleaved runs)"
    end

    def cc
      @cc ||= ENV["CC"] || which("cc") || which("gcc") || which("clang") or
        abort "bench: no C compiler (cc) found: it builds bench/native/*.c"
    end

    # Builds bench/native/*.c into tmp/bench/ when the source is newer.
    def build_native
      FileUtils.mkdir_p(BUILD_DIR)
      @runone = compile("runone.c", "runone", [])
      @alloc_bench = compile("alloc_bench.c", "alloc_bench", %w[-pthread -fno-builtin-malloc -fno-builtin-free])
      @fork_bench = compile("fork_bench.c", "fork_bench", %w[-ldl])
    end

    def compile(src, out, flags)
      src = File.join(BENCH_DIR, "native", src)
      out = File.join(BUILD_DIR, out)
      return out if File.exist?(out) && File.mtime(out) >= File.mtime(src)

      cmd = [cc, "-O2", "-g", "-Wall", "-Wextra", *flags, "-o", out, src]
      puts cmd.join(" ")
      system(*cmd) or abort "bench: compiling #{src} failed"
      out
    end

    # The native, fork and callgrind parts run plain, mwrap and the
    # MWRAP_BENCH_OTHER libraries; the workloads add the stack variants.
    def variants(with_heaptrack: true, with_stacks: false)
      vs = [Variant.new(label: "plain"), Variant.new(label: "mwrap", preload: @preload)]
      if with_stacks && @stacks
        STACK_VARIANTS.each { |label, env| vs << Variant.new(label: label, preload: @preload, env: [env]) }
      end
      labels = vs.map(&:label)
      @others.each do |path|
        label = File.basename(path)
        label = "#{label}##{labels.count { |l| l.start_with?(label) } + 1}" if labels.include?(label)
        labels << label
        vs << Variant.new(label: label, preload: path)
      end
      vs << Variant.new(label: "heaptrack", heaptrack: @heaptrack) if with_heaptrack && @heaptrack
      vs
    end

    # The environment of every child: no profiler options, no inherited
    # preload (rake itself might run under one).
    def clean_env
      { "MWRAP" => nil, "LD_PRELOAD" => nil }
    end

    # The environment of a run of `variant` started directly (not through
    # runone): clean, with its preload and its own settings (MWRAP).
    def variant_env(variant)
      env = clean_env
      env["LD_PRELOAD"] = variant.preload if variant.preload
      (variant.env || []).each do |setting|
        name, value = setting.split("=", 2)
        env[name] = value
      end
      env
    end

    def workload_n(w)
      @quick ? w.full_n / 10 : w.full_n
    end

    def header
      lines = ["mwrap benchmark (#{@quick ? 'quick' : 'full'} mode): #{@reps} repetition(s) after " \
               "#{@warmup} warm-up, variants interleaved"]
      lines.concat(machine.map { |k, v| "#{k}: #{v}" })
      lines << "preload: #{@preload_source} (sha256 #{@preload_sha}, run from a copy)"
      lines << "variants: #{variants(with_stacks: true).map { |v| v.env ? "#{v.label} (#{v.env.join(' ')})" : v.label }.join(', ')}" \
               "#{@heaptrack_wanted && !@heaptrack ? ' (heaptrack not installed)' : ''}"
      lines << "extra environment of every workload run: #{@extra_env.join(' ')}" unless @extra_env.empty?
      lines.join("\n")
    end

    def machine
      @machine ||= begin
        cpu = File.foreach("/proc/cpuinfo").grep(/\Amodel name/).first.to_s.split(":", 2).last.to_s.strip
        glibc = begin
          Etc.confstr(Etc::CS_GNU_LIBC_VERSION)
        rescue StandardError
          nil
        end
        commit = `git -C #{ROOT} rev-parse --short HEAD 2>/dev/null`.strip
        dirty = `git -C #{ROOT} status --porcelain --untracked-files=no 2>/dev/null`.strip.empty? ? "" : "+dirty"
        {
          "date" => Time.now.utc.iso8601,
          "nproc" => Etc.nprocessors,
          "cpu" => cpu.empty? ? RbConfig::CONFIG["host_cpu"] : cpu,
          "kernel" => `uname -sr 2>/dev/null`.strip,
          "ruby" => RUBY_DESCRIPTION,
          "glibc" => glibc,
          "commit" => commit.empty? ? nil : commit + dirty
        }
      end
    end

    # ---- wall time and peak RSS -----------------------------------------

    # Runs one command through runone: {wall:, rss_kb:, gc:}, or {failed:
    # exit status}.
    def measure(variant, cmd, label)
      result = File.join(@tmp, "result")
      log = File.join(@tmp, "log")
      gc = File.join(@tmp, "gc.json")
      FileUtils.rm_f([result, gc])
      extra_env = ["BENCH_GC_STATS=#{gc}", *@extra_env]
      if variant.heaptrack
        ht_dir = File.join(@tmp, "heaptrack")
        FileUtils.mkdir_p(ht_dir)
        cmd = [variant.heaptrack, "-o", File.join(ht_dir, "out"), *cmd]
      elsif variant.preload
        extra_env << "LD_PRELOAD=#{variant.preload}"
      end
      extra_env.concat(variant.env) if variant.env
      ok = system(clean_env, @runone, result, *extra_env, "--", *cmd,
                  in: File::NULL, out: log, err: [:child, :out], chdir: @tmp)
      FileUtils.rm_rf(File.join(@tmp, "heaptrack")) if variant.heaptrack
      wall_ns, rss_kb, status = File.read(result).split.map { |x| Integer(x) } if File.exist?(result)
      unless ok && status
        failed(variant, label, status || $?.exitstatus, cmd, File.read(log))
        return { failed: status || $?.exitstatus }
      end
      gc_stats = File.exist?(gc) ? JSON.parse(File.read(gc)) : {}
      { wall: wall_ns / 1e9, rss_kb: rss_kb, gc: gc_stats }
    end

    # A run that failed: shown once per variant and workload. Our preload
    # or plain Ruby failing makes the whole benchmark fail at the end; a
    # library given in MWRAP_BENCH_OTHER, or heaptrack, failing is reported
    # in the table and the benchmark goes on.
    def failed(variant, label, status, cmd, log)
      @failures ||= {}
      key = [variant.label, label]
      return if @failures.key?(key)

      @failures[key] = status
      lines = log.lines
      $stderr.puts "\nbench: #{label} under #{variant.label} failed (exit #{status}): #{cmd.join(' ')}"
      $stderr.puts(lines.first(15).join, lines.size > 15 ? "  [... #{lines.size - 15} more lines]" : "")
    end

    def essential_failures
      ours = %w[plain mwrap] + STACK_VARIANTS.map(&:first)
      (@failures || {}).select { |(variant, _), _| ours.include?(variant) }
    end

    def run_workloads
      vs = variants(with_stacks: true)
      samples = Hash.new { |h, k| h[k] = [] } # [workload id, variant label] => [{wall:, rss_kb:}]
      total = @warmup + @reps
      total.times do |rep|
        counted = rep >= @warmup
        print(counted ? "repetition #{rep - @warmup + 1}/#{@reps}:" : "warm-up:")
        @workloads.each do |w|
          script = File.join(BENCH_DIR, "workloads", w.file)
          # Rotate the order each repetition so no variant always runs first.
          vs.rotate(rep).each do |v|
            m = measure(v, [RUBY, "-r", GC_STATS, script, workload_n(w).to_s], w.id)
            samples[[w.id, v.label]] << m if counted
          end
          print " #{w.id}"
          $stdout.flush
        end
        puts
      end
      @stack_stats = run_stack_stats(vs)
      summarize(samples, vs)
    end

    # w1 once more (untimed) under each stack variant with
    # bench/stack_stats.rb, which reads Mwrap.each_stack at exit: how many
    # allocations w1's line made and how many frames their stacks hold.
    def run_stack_stats(vs)
      w = @workloads.find { |x| x.id == "w1" } or return nil
      script = File.join(BENCH_DIR, "workloads", w.file)
      out = File.join(@tmp, "stack_stats.json")
      vs.select { |v| v.env && v.label != STACK_BASE }.to_h do |v|
        FileUtils.rm_f(out)
        env = variant_env(v).merge("BENCH_STACK_STATS" => out, "BENCH_STACK_SCRIPT" => script)
        log = File.join(@tmp, "log")
        ok = system(env, RUBY, "-I", File.join(ROOT, "lib"), "-r", STACK_STATS, script, workload_n(w).to_s,
                    in: File::NULL, out: log, err: [:child, :out], chdir: @tmp)
        unless ok && File.exist?(out)
          $stderr.puts "bench: stack statistics of w1 under #{v.label} failed: #{File.read(log).lines.first(5).join}"
          next [v.label, nil]
        end
        [v.label, JSON.parse(File.read(out))]
      end
    end

    def summarize(samples, vs)
      @workloads.map do |w|
        plain = stats(samples[[w.id, "plain"]])
        rows = vs.map do |v|
          s = stats(samples[[w.id, v.label]])
          next s.merge("variant" => v.label) if s["failed"] || plain["failed"]

          s.merge(
            "variant" => v.label,
            "wall_ratio_min" => (s["wall_min_s"] / plain["wall_min_s"]).round(3),
            "wall_ratio_median" => (s["wall_median_s"] / plain["wall_median_s"]).round(3),
            "rss_ratio" => (s["rss_median_kb"].to_f / plain["rss_median_kb"]).round(3)
          )
        end
        doc = { "id" => w.id, "script" => "bench/workloads/#{w.file}", "n" => workload_n(w),
                "description" => w.description, "variants" => rows }
        doc["stack_stats"] = @stack_stats if w.id == "w1" && @stack_stats && !@stack_stats.empty?
        doc
      end
    end

    def stats(ms)
      bad = ms.find { |m| m[:failed] }
      return { "runs" => ms.size, "failed" => bad[:failed] } if bad

      walls = ms.map { |m| m[:wall] }
      rss = ms.map { |m| m[:rss_kb] }
      gcs = ms.map { |m| m[:gc] }.reject(&:empty?)
      { "runs" => ms.size, "wall_min_s" => walls.min.round(4), "wall_median_s" => median(walls).round(4),
        "rss_median_kb" => median(rss).round, "rss_max_kb" => rss.max,
        "gc_count_median" => gcs.empty? ? nil : median(gcs.map { |g| g["count"] }).round,
        "gc_major_median" => gcs.empty? ? nil : median(gcs.map { |g| g["major"] }).round,
        "heap_slots_median" => gcs.empty? ? nil : median(gcs.map { |g| g["heap_slots"] }).round }
    end

    # ---- native micro-benchmark -----------------------------------------

    def native_ops
      @quick ? 1_000_000 : 5_000_000
    end

    def run_native
      vs = variants(with_heaptrack: false)
      samples = Hash.new { |h, k| h[k] = [] } # [label, threads] => [ns per op]
      print "native alloc_bench (#{fmt_int(native_ops)} malloc+free per thread):"
      (@warmup + @reps).times do |rep|
        [1, 2].each do |threads|
          vs.rotate(rep).each do |v|
            env = clean_env.merge(v.preload ? { "LD_PRELOAD" => v.preload } : {})
            cmd = [@alloc_bench, threads.to_s, native_ops.to_s]
            out = IO.popen(env, cmd, err: [:child, :out], &:read)
            unless $?.success?
              failed(v, "alloc_bench #{threads}", $?.exitstatus || $?.termsig.to_i + 128, cmd, out)
              abort "bench: alloc_bench failed under #{v.label}" if %w[plain mwrap].include?(v.label)
              samples[[v.label, threads]] << nil
              next
            end
            samples[[v.label, threads]] << Float(out.split[3]) if rep >= @warmup
          end
        end
        print " ."
        $stdout.flush
      end
      puts
      plain1 = samples[["plain", 1]].min
      plain_scaling = samples[["plain", 2]].min / plain1
      rows = vs.filter_map do |v|
        next if samples[[v.label, 1]].include?(nil) || samples[[v.label, 2]].include?(nil)

        one = samples[[v.label, 1]].min
        two = samples[[v.label, 2]].min
        scaling = two / one
        { "variant" => v.label, "ns_per_op_1t" => one.round(2), "ns_per_op_2t" => two.round(2),
          "slowdown_1t" => (one / plain1).round(3), "per_thread_2t_over_1t" => scaling.round(3),
          "scaling_vs_plain" => (scaling / plain_scaling).round(3) }
      end
      # With 2 CPUs free, plain glibc runs 2 threads about as fast per thread
      # as 1; when it does not, the machine was busy and a 2-thread
      # slowdown says nothing about our locks.
      { "ops_per_thread" => native_ops, "variants" => rows,
        "parallel" => plain_scaling <= PARALLEL_LIMIT, "plain_scaling" => plain_scaling.round(3) }
    end

    def fork_sites
      Integer(ENV.fetch("FORK_SITES", @quick ? "100000" : "1000000"))
    end

    FORKS = 50

    # fork() of a process holding `fork_sites` locations: the call's wall
    # time under each variant, and (from this build's
    # mwrap_fork_handler_stats) the time spent in mwrap's fork handlers.
    def run_fork
      rows = variants(with_heaptrack: false).filter_map do |v|
        env = clean_env.merge(v.preload ? { "LD_PRELOAD" => v.preload } : {})
        cmd = [@fork_bench, fork_sites.to_s, FORKS.to_s]
        out = IO.popen(env, cmd, err: [:child, :out], &:read)
        unless $?.success?
          failed(v, "fork_bench", $?.exitstatus || $?.termsig.to_i + 128, cmd, out)
          next
        end
        _, _, median, min, handler, rss = out.split.map { |x| Integer(x) }
        { "variant" => v.label, "fork_median_us" => (median / 1000.0).round(1), "fork_min_us" => (min / 1000.0).round(1),
          "handler_us" => handler.negative? ? nil : (handler / 1000.0).round(1), "peak_rss_mb" => (rss / 1024.0).round(1) }
      end
      puts "fork_bench: #{fmt_int(fork_sites)} sites, #{FORKS} forks per variant"
      { "sites" => fork_sites, "forks" => FORKS, "variants" => rows }
    end

    # A cpu-clock sample profile of alloc_bench with 2 threads under our
    # preload: where the 2-thread slowdown goes. Optional (perf may be
    # missing or not allowed); a failure only skips it.
    def run_perf
      data = File.join(@tmp, "perf.data")
      env = clean_env.merge("LD_PRELOAD" => @preload)
      log = File.join(@tmp, "perf.log")
      ok = system(env, @perf, "record", "-q", "-e", "cpu-clock", "-o", data, "--", @alloc_bench, "2", native_ops.to_s,
                  in: File::NULL, out: log, err: [:child, :out])
      unless ok
        puts "bench: perf record failed, no profile of the 2-thread run: #{File.read(log).lines.first&.strip}"
        return nil
      end
      report = IO.popen(clean_env, [@perf, "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,symbol"],
                        err: File::NULL, &:read)
      top = report.lines.grep(/\A\s+\d+\.\d+%/).first(12).map do |l|
        pct, dso, _kind, sym = l.strip.split(/\s+/, 4)
        { "percent" => pct.to_f, "object" => dso, "symbol" => sym.to_s.sub(/(\s+-)+\s*\z/, "").strip }
      end
      { "threads" => 2, "ops_per_thread" => native_ops, "top" => top }
    ensure
      FileUtils.rm_f(data) if data
    end

    # ---- callgrind -------------------------------------------------------

    def callgrind_n
      @quick ? CALLGRIND_W1_N / 10 : CALLGRIND_W1_N
    end

    def callgrind_out(name)
      File.join(@keep || @tmp, "callgrind.#{name.gsub(/[^A-Za-z0-9_.-]+/, '_')}.out")
    end

    def callgrind_run(cmd, variant, name, gc_stats = nil)
      FileUtils.mkdir_p(@keep) if @keep
      out = callgrind_out(name)
      env = variant_env(variant)
      env["BENCH_GC_STATS"] = gc_stats if gc_stats
      log = File.join(@tmp, "callgrind.log")
      ok = system(env, @callgrind, "--tool=callgrind", "--compress-strings=no", "--callgrind-out-file=#{out}", *cmd,
                  in: File::NULL, out: log, err: [:child, :out], chdir: @tmp)
      unless ok
        failed(variant, "callgrind #{name}", $?.exitstatus, cmd, File.read(log))
        abort "bench: callgrind of #{name} failed" if %w[plain mwrap].include?(variant.label)
        return nil
      end
      cg = Callgrind.new(out)
      File.delete(out) unless @keep
      cg
    end

    ALLOC_FNS = %w[malloc calloc realloc].freeze
    FAMILY = %w[malloc calloc realloc reallocarray free cfree malloc_usable_size posix_memalign
                aligned_alloc memalign valloc pvalloc].freeze

    # Inclusive Ir of the program's calls to the malloc family (the
    # preload's own calls to the real allocator excluded).
    def family_cost(cg, variant)
      exclude = variant.preload && /\A#{Regexp.union(variant.preload, File.realpath(variant.preload))}\z/
      cg.cost_of_calls_to(FAMILY, exclude: exclude).inclusive
    end

    def run_callgrind
      vs = variants(with_heaptrack: false, with_stacks: true)
      w1 = File.join(BENCH_DIR, "workloads", "w1_string.rb")
      n = callgrind_n
      print "callgrind: w1 at N=#{fmt_int(n)} and N=0, alloc_bench 1 thread at #{fmt_int(NATIVE_CALLGRIND_OPS)} and 0:"
      ruby = {}
      native = {}
      profile = native_profile = nil
      stack_profiles = {}
      vs = vs.select do |v|
        gc = File.join(@tmp, "gc.json")
        File.delete(gc) if File.exist?(gc)
        full = callgrind_run([RUBY, "-r", GC_STATS, w1, n.to_s], v, "w1-#{n}-#{v.label}", gc) or next false
        gc_full = File.exist?(gc) ? JSON.parse(File.read(gc)) : {}
        empty = callgrind_run([RUBY, "-r", GC_STATS, w1, "0"], v, "w1-0-#{v.label}") or next false
        ruby[v.label] = { full: full, empty: empty, gc: gc_full,
                          family: family_cost(full, v) - family_cost(empty, v) }
        profile = [full, empty, v.preload] if v.label == "mwrap"
        stack_profiles[v.label] = [full, empty, v.preload] if v.env
        print " #{v.label}"
        $stdout.flush
        nfull = callgrind_run([@alloc_bench, "1", NATIVE_CALLGRIND_OPS.to_s], v, "native-#{v.label}") or next false
        nempty = callgrind_run([@alloc_bench, "1", "0"], v, "native0-#{v.label}") or next false
        native[v.label] = { full: nfull.total, empty: nempty.total }
        native_profile = [nfull, nempty, v.preload] if v.label == "mwrap"
        true
      end
      puts
      # Allocations made by the loop: calls into glibc's malloc family in the
      # plain run, at N minus at N=0.
      libc = %r{/libc\.so}
      count = ->(cg, fns) { cg.calls_into(libc, fns) }
      plain = ruby["plain"]
      allocs = count.(plain[:full], ALLOC_FNS) - count.(plain[:empty], ALLOC_FNS)
      frees = count.(plain[:full], %w[free]) - count.(plain[:empty], %w[free])
      plain_delta = plain[:full].total - plain[:empty].total
      profile = profile_summary(*profile, allocs) if profile
      native_profile = profile_summary(*native_profile, NATIVE_CALLGRIND_OPS) if native_profile
      stack_profiles = stack_profiles.transform_values { |pr| profile_summary(*pr, allocs) }
      native_plain_delta = native["plain"][:full] - native["plain"][:empty]
      w1_rows = vs.map do |v|
        r = ruby[v.label]
        delta = r[:full].total - r[:empty].total
        { "variant" => v.label, "ir_n" => r[:full].total, "ir_0" => r[:empty].total, "ir_loop" => delta,
          "loop_ratio" => (delta.to_f / plain_delta).round(3),
          "total_ratio" => (r[:full].total.to_f / plain[:full].total).round(3),
          "extra_per_alloc_free" => ((delta - plain_delta).to_f / allocs).round(1),
          "malloc_family_ir" => r[:family],
          "malloc_family_per_alloc" => (r[:family].to_f / allocs).round(1),
          "extra_in_malloc_family_per_alloc" => ((r[:family] - plain[:family]).to_f / allocs).round(1),
          "gc_count" => r[:gc]["count"], "gc_major" => r[:gc]["major"] }
      end
      native_rows = vs.map do |v|
        delta = native[v.label][:full] - native[v.label][:empty]
        { "variant" => v.label, "ir_loop" => delta, "loop_ratio" => (delta.to_f / native_plain_delta).round(3),
          "per_pair" => (delta.to_f / NATIVE_CALLGRIND_OPS).round(1),
          "extra_per_pair" => ((delta - native_plain_delta).to_f / NATIVE_CALLGRIND_OPS).round(1) }
      end
      { "w1" => { "n" => n, "allocations" => allocs, "frees" => frees, "variants" => w1_rows },
        "native" => { "ops" => NATIVE_CALLGRIND_OPS, "variants" => native_rows },
        "profile" => profile, "native_profile" => native_profile, "stack_profiles" => stack_profiles }
    end

    # Where the preload's instructions go in w1's loop: the run at N minus
    # the run at N=0, per allocation of the loop. Its entry points (called
    # from outside it), what it calls outside itself, and its own code.
    def profile_summary(full, empty, preload, allocs)
      ours = Regexp.union(preload, File.realpath(preload))
      ours = /\A#{ours}\z/
      per = ->(x) { (x.to_f / allocs).round(1) }
      diff = lambda do |a, b|
        (a.keys | b.keys).to_h do |k|
          x = a.fetch(k) { Callgrind::Arc.new(0, 0) }
          y = b.fetch(k) { Callgrind::Arc.new(0, 0) }
          [k, Callgrind::Arc.new(x.calls - y.calls, x.inclusive - y.inclusive)]
        end
      end
      entries = diff.(full.entries_into(ours), empty.entries_into(ours))
                    .reject { |_, a| a.calls <= 0 }.sort_by { |_, a| -a.inclusive }.first(6).map do |fn, a|
        { "fn" => fn, "calls" => a.calls, "inclusive" => a.inclusive,
          "per_call" => (a.inclusive.to_f / a.calls).round(1), "per_alloc" => per.(a.inclusive) }
      end
      outs = diff.(full.calls_out_of(ours), empty.calls_out_of(ours))
                 .reject { |_, a| a.calls <= 0 }.sort_by { |_, a| -a.inclusive }.first(12).map do |(tob, fn), a|
        { "object" => File.basename(tob.to_s), "fn" => fn, "calls" => a.calls, "inclusive" => a.inclusive,
          "per_call" => (a.inclusive.to_f / a.calls).round(1), "per_alloc" => per.(a.inclusive) }
      end
      full_self = full.self_costs(ours)
      empty_self = empty.self_costs(ours)
      selfs = full_self.to_h { |fn, ir| [fn, ir - empty_self[fn]] }
      self_total = selfs.values.sum
      top = selfs.sort_by { |_, ir| -ir }.first(10).map { |fn, ir| { "fn" => fn, "self" => ir, "per_alloc" => per.(ir) } }
      { "allocations" => allocs, "self_total" => self_total, "self_per_alloc" => per.(self_total),
        "entries" => entries, "calls_out" => outs, "self" => top }
    end

    # ---- targets and report ---------------------------------------------

    def evaluate_targets
      t = []
      (@results["workloads"] || []).each do |w|
        next unless TARGET_WORKLOADS.include?(w["id"])

        m = w["variants"].find { |v| v["variant"] == "mwrap" }
        next if m["failed"] || !m["wall_ratio_median"]

        t << target("#{w['id']} wall <= #{TARGETS[:wall]}x (ratio of the minimums)", m["wall_ratio_min"], TARGETS[:wall])
        t << target("#{w['id']} peak RSS <= #{TARGETS[:rss]}x", m["rss_ratio"], TARGETS[:rss])
      end
      t.concat(stack_targets)
      if (cg = @results["callgrind"])
        m = cg["w1"]["variants"].find { |v| v["variant"] == "mwrap" }
        t << target("w1 instructions <= #{TARGETS[:w1_instructions]}x", m["loop_ratio"], TARGETS[:w1_instructions])
        t << target("w1 extra instructions per malloc+free in the malloc family < #{TARGETS[:w1_extra_per_pair]}",
                    m["extra_in_malloc_family_per_alloc"], TARGETS[:w1_extra_per_pair])
        t << target("w1 extra instructions per malloc+free over the whole loop < #{TARGETS[:w1_extra_per_pair]}",
                    m["extra_per_alloc_free"], TARGETS[:w1_extra_per_pair])
        n = cg["native"]["variants"].find { |v| v["variant"] == "mwrap" }
        t << target("native extra instructions per malloc+free <= #{TARGETS[:native_extra_per_pair]}",
                    n["extra_per_pair"], TARGETS[:native_extra_per_pair])
      end
      if (nat = @results["native"])
        m = nat["variants"].find { |v| v["variant"] == "mwrap" }
        name = "2 threads per thread <= #{TARGETS[:thread_scaling]}x of 1 thread (vs plain)"
        t << if nat["parallel"]
               target(name, m["scaling_vs_plain"], TARGETS[:thread_scaling])
             else
               { "target" => name, "measured" => m["scaling_vs_plain"], "met" => nil,
                 "note" => "not measured: plain glibc took #{nat['plain_scaling']}x per thread with 2 threads, " \
                           "so they did not run in parallel (busy machine)" }
             end
      end
      if (fk = @results["fork"]) && (m = fk["variants"].find { |v| v["variant"] == "mwrap" }) && m["handler_us"]
        t << target("time in mwrap's fork handlers <= #{TARGETS[:fork_handler_ms]} ms with #{fmt_int(fk['sites'])} sites",
                    (m["handler_us"] / 1000.0).round(4), TARGETS[:fork_handler_ms])
      end
      t
    end

    # Per stack variant: the geometric mean and the worst of the min-wall
    # ratios over w2-w6 (those that ran), and w1.
    def stack_targets
      ws = @results["workloads"] || []
      STACK_VARIANTS.flat_map do |label, _|
        next [] if label == STACK_BASE

        ratios = ws.to_h do |w|
          v = w["variants"].find { |x| x["variant"] == label }
          [w["id"], v && !v["failed"] ? v["wall_ratio_min"] : nil]
        end
        next [] if ratios.values.none?

        t = []
        rest = STACK_TARGET_WORKLOADS.select { |id| ratios.key?(id) }
        unless rest.empty?
          failed = rest.reject { |id| ratios[id] }
          if failed.empty?
            rs = rest.map { |id| ratios[id] }
            t << target("#{label}: geomean of min-wall ratios over #{rest.join(',')} <= #{STACK_TARGETS[:geomean]}x",
                        geomean(rs).round(3), STACK_TARGETS[:geomean])
            worst = rest.max_by { |id| ratios[id] }
            t << target("#{label}: worst min-wall ratio over #{rest.join(',')} <= #{STACK_TARGETS[:worst]}x (#{worst})",
                        ratios[worst], STACK_TARGETS[:worst])
          else
            t << { "target" => "#{label}: w2-w6", "measured" => nil, "met" => false,
                   "note" => "failed on #{failed.join(', ')}" }
          end
        end
        if ratios.key?("w1")
          t << if ratios["w1"]
                 target("#{label}: w1 min-wall ratio <= #{STACK_TARGETS[:w1]}x", ratios["w1"], STACK_TARGETS[:w1])
               else
                 { "target" => "#{label}: w1", "measured" => nil, "met" => false, "note" => "failed" }
               end
        end
        t
      end
    end

    def geomean(xs)
      Math.exp(xs.sum { |x| Math.log(x) } / xs.size)
    end

    # w1's extra cost under a stack variant over mwrap, per allocation and
    # per recorded frame (native for bt, Ruby for ruby_bt; app_root records
    # none). Wall: the extra minimum wall time over every allocation of the
    # process and every frame recorded for them (stack_stats.rb counted
    # them in an untimed run at the same N). Instructions (callgrind, when
    # it ran): the loop's extra instructions over the loop's allocations,
    # divided by the frames per allocation of w1's line.
    def frame_costs
      w1 = (@results["workloads"] || []).find { |w| w["id"] == "w1" } or return []
      stats = w1["stack_stats"] or return []
      mwrap = w1["variants"].find { |v| v["variant"] == "mwrap" }
      return [] if mwrap["failed"]

      cg = @results.dig("callgrind", "w1")
      cg_mwrap = cg && cg["variants"].find { |v| v["variant"] == "mwrap" }
      base = w1["variants"].find { |v| v["variant"] == STACK_BASE }
      base = nil if base && base["failed"]
      cg_base = cg && cg["variants"].find { |v| v["variant"] == STACK_BASE }
      STACK_VARIANTS.filter_map do |label, _|
        v = w1["variants"].find { |x| x["variant"] == label }
        st = stats[label]
        next if label == STACK_BASE || v.nil? || v["failed"] || st.nil?

        kind = label.include?("ruby_bt") ? "ruby" : "native"
        key = "#{kind}_frames"
        all = st["process"]
        line = st["script_lines"]
        next if all["allocations"].zero?

        extra_ns = (v["wall_min_s"] - mwrap["wall_min_s"]) * 1e9
        per_alloc = all[key].to_f / all["allocations"]
        row = { "variant" => label, "frame_kind" => kind, "allocations" => all["allocations"],
                "frames" => all[key], "frames_per_allocation" => per_alloc.round(3),
                "line_allocations" => line["allocations"], "line_frames_per_allocation" => line["#{key}_per_allocation"],
                "extra_wall_s" => (extra_ns / 1e9).round(4),
                "extra_ns_per_allocation" => (extra_ns / all["allocations"]).round(1),
                "extra_ns_per_frame" => all[key].positive? ? (extra_ns / all[key]).round(2) : nil }
        if base
          extra_base = (v["wall_min_s"] - base["wall_min_s"]) * 1e9
          row["extra_wall_vs_bt0_s"] = (extra_base / 1e9).round(4)
          row["extra_ns_per_allocation_vs_bt0"] = (extra_base / all["allocations"]).round(1)
          row["extra_ns_per_frame_vs_bt0"] = all[key].positive? ? (extra_base / all[key]).round(2) : nil
        end
        # Instructions: the malloc family's inclusive cost per allocation
        # of the loop (the loop's total also holds Ruby's GC, whose count
        # differs between mwrap and the variants with MWRAP set).
        c = cg && cg["variants"].find { |x| x["variant"] == label }
        frames = line["#{key}_per_allocation"].to_f
        [["", cg_mwrap], ["_vs_bt0", cg_base]].each do |suffix, ref|
          next unless c && ref

          extra_ir = c["malloc_family_per_alloc"] - ref["malloc_family_per_alloc"]
          row["extra_ir_per_allocation#{suffix}"] = extra_ir.round(1)
          row["extra_ir_per_frame#{suffix}"] = frames.positive? ? (extra_ir / frames).round(1) : nil
        end
        row
      end
    end

    def target(name, value, limit)
      { "target" => name, "measured" => value, "met" => value <= limit }
    end

    def report
      unless @results["workloads"].empty?
        report_workloads
        report_summary
      end
      report_rest
    end

    def report_workloads
      puts
      puts "Wall time and peak RSS (ratios against plain Ruby in the same run; #{@reps} run(s) each)"
      puts
      rows = []
      @results["workloads"].each do |w|
        w["variants"].each do |v|
          if v["failed"]
            rows << ["#{w['id']} (N=#{fmt_int(w['n'])})", v["variant"], "failed (exit #{v['failed']})", *Array.new(7, "-")]
            next
          end
          rows << ["#{w['id']} (N=#{fmt_int(w['n'])})", v["variant"], format("%.3f", v["wall_min_s"]),
                   format("%.3f", v["wall_median_s"]), fmt_ratio(v["wall_ratio_min"]), fmt_ratio(v["wall_ratio_median"]),
                   format("%.1f", v["rss_median_kb"] / 1024.0), fmt_ratio(v["rss_ratio"]),
                   v["gc_count_median"] ? "#{v['gc_count_median']} (#{v['gc_major_median']})" : "-",
                   v["heap_slots_median"] ? fmt_int(v["heap_slots_median"]) : "-"]
        end
      end
      puts markdown_table(["workload", "variant", "wall min s", "wall median s", "x plain (min)",
                           "x plain (median)", "peak RSS MiB", "x plain RSS", "GCs (major)", "heap slots"], rows)
    end

    # One row per workload: plain's times, then each variant's ratios.
    def report_summary
      others = @results["workloads"].first["variants"].map { |v| v["variant"] } - ["plain"]
      header = ["workload", "plain: wall min / median s, peak RSS MiB"] +
               others.map { |o| "#{o}: wall x (min / median), RSS x" }
      rows = @results["workloads"].map do |w|
        plain = w["variants"].find { |v| v["variant"] == "plain" }
        cells = others.map do |o|
          v = w["variants"].find { |x| x["variant"] == o }
          next "failed (exit #{v['failed']})" if v["failed"]

          "#{fmt_ratio(v['wall_ratio_min'])} / #{fmt_ratio(v['wall_ratio_median'])}, #{fmt_ratio(v['rss_ratio'])}"
        end
        ["#{w['id']} (N=#{fmt_int(w['n'])})",
         format("%.2f / %.2f, %.1f", plain["wall_min_s"], plain["wall_median_s"], plain["rss_median_kb"] / 1024.0),
         *cells]
      end
      ids = STACK_TARGET_WORKLOADS & @results["workloads"].map { |w| w["id"] }
      unless ids.empty?
        cells = others.map do |o|
          rs = @results["workloads"].select { |w| ids.include?(w["id"]) }
                                    .map { |w| w["variants"].find { |x| x["variant"] == o } }
          next "-" if rs.any? { |v| v["failed"] }

          "#{fmt_ratio(geomean(rs.map { |v| v['wall_ratio_min'] }))} / " \
            "#{fmt_ratio(geomean(rs.map { |v| v['wall_ratio_median'] }))}, #{fmt_ratio(geomean(rs.map { |v| v['rss_ratio'] }))}"
        end
        rows << ["geomean #{ids.join(',')}", "-", *cells]
      end
      puts
      puts "Summary (ratios against plain Ruby, same run)"
      puts
      puts markdown_table(header, rows)
    end

    def report_frame_costs
      fc = @results["frame_costs"]
      return if fc.nil? || fc.empty?

      puts
      puts "w1 under the stack variants: extra over mwrap per allocation and per recorded frame " \
           "(wall: min over the repetitions, all allocations of the process, frames counted by " \
           "bench/stack_stats.rb in an untimed run; Ir: callgrind's loop, frames of w1's line)"
      puts
      rows = fc.flat_map do |f|
        [["", "mwrap"], ["_vs_bt0", STACK_BASE]].filter_map do |suffix, ref|
          wall = f[suffix.empty? ? "extra_wall_s" : "extra_wall_vs_bt0_s"]
          next if wall.nil? && f["extra_ir_per_allocation#{suffix}"].nil?

          [f["variant"], ref, fmt_int(f["allocations"]), "#{f['frames_per_allocation']} #{f['frame_kind']}",
           wall ? format("%.3f", wall) : "-", f["extra_ns_per_allocation#{suffix}"] || "-",
           f["extra_ns_per_frame#{suffix}"] || "-",
           f["extra_ir_per_allocation#{suffix}"] || "-", f["extra_ir_per_frame#{suffix}"] || "-"]
        end
      end
      puts markdown_table(["variant", "against", "allocations", "frames per allocation", "extra wall s",
                           "extra ns per allocation", "extra ns per frame", "extra Ir per allocation (malloc family)",
                           "extra Ir per frame"], rows)
    end

    def report_rest
      report_frame_costs
      if (nat = @results["native"])
        puts
        puts "Native alloc_bench (no Ruby; #{fmt_int(nat['ops_per_thread'])} malloc+free per thread, best of #{@reps})"
        puts
        rows = nat["variants"].map do |v|
          [v["variant"], format("%.1f", v["ns_per_op_1t"]), fmt_ratio(v["slowdown_1t"]), format("%.1f", v["ns_per_op_2t"]),
           fmt_ratio(v["per_thread_2t_over_1t"]), fmt_ratio(v["scaling_vs_plain"])]
        end
        puts markdown_table(["variant", "ns/op 1 thread", "x plain", "ns/op per thread, 2 threads",
                             "2 threads / 1 thread", "normalised by plain"], rows)
        unless nat["parallel"]
          puts "(plain glibc: #{nat['plain_scaling']}x per thread with 2 threads: they did not run in parallel, " \
               "the machine was busy; the 2-thread columns say nothing about lock contention)"
        end
      end
      if (fk = @results["fork"])
        puts
        puts "fork() with #{fmt_int(fk['sites'])} locations (#{fk['forks']} forks; the child _exits at once)"
        puts
        rows = fk["variants"].map do |v|
          [v["variant"], format("%.1f", v["fork_median_us"]), format("%.1f", v["fork_min_us"]),
           v["handler_us"] ? format("%.1f", v["handler_us"]) : "-", format("%.1f", v["peak_rss_mb"])]
        end
        puts markdown_table(["variant", "fork() median us", "fork() min us", "in mwrap's handlers us",
                             "peak RSS MiB"], rows)
        puts "(fork() itself grows with the process's mapped memory: the kernel copies its page tables)"
      end
      if (perf = @results["perf"])
        puts
        puts "perf (cpu-clock samples) of alloc_bench, 2 threads under our preload"
        puts
        puts markdown_table(["% samples", "object", "symbol"],
                            perf["top"].map { |t| [format("%.1f", t["percent"]), t["object"], t["symbol"][0, 70]] })
      end
      if (cg = @results["callgrind"])
        w1 = cg["w1"]
        puts
        puts "Instructions (callgrind), w1 at N=#{fmt_int(w1['n'])} minus N=0 " \
             "(#{fmt_int(w1['allocations'])} allocations, #{fmt_int(w1['frees'])} frees in the loop, counted in the plain run)"
        puts
        rows = w1["variants"].map do |v|
          plain = v["variant"] == "plain"
          [v["variant"], fmt_int(v["ir_n"]), fmt_int(v["ir_loop"]), fmt_ratio(v["loop_ratio"]),
           fmt_ratio(v["total_ratio"]), plain ? "-" : format("%.0f", v["extra_per_alloc_free"]),
           format("%.0f", v["malloc_family_per_alloc"]),
           plain ? "-" : format("%.0f", v["extra_in_malloc_family_per_alloc"]),
           v["gc_count"] ? "#{v['gc_count']} (#{v['gc_major']})" : "-"]
        end
        puts markdown_table(["variant", "Ir at N", "Ir of the loop", "loop x plain", "total x plain",
                             "extra Ir per alloc (loop)", "malloc family Ir per alloc", "extra (malloc family)",
                             "GCs at N (major)"], rows)
        puts
        puts "(loop = run at N minus run at N=0; malloc family = inclusive cost of the program's calls to " \
             "malloc/free/malloc_usable_size/..., preload and real allocator included; " \
             "per alloc = divided by the loop's allocations)"
        puts
        nat = cg["native"]
        puts "Instructions (callgrind), alloc_bench 1 thread, #{fmt_int(nat['ops'])} malloc+free pairs minus 0"
        puts
        rows = nat["variants"].map do |v|
          [v["variant"], fmt_int(v["ir_loop"]), format("%.0f", v["per_pair"]), fmt_ratio(v["loop_ratio"]),
           v["variant"] == "plain" ? "-" : format("%.0f", v["extra_per_pair"])]
        end
        puts markdown_table(["variant", "Ir of the loop", "Ir per pair", "x plain", "extra Ir per malloc+free"], rows)
        report_profile(cg["profile"], "w1's loop (run at N minus run at N=0, per allocation of the loop") if cg["profile"]
        report_profile(cg["native_profile"], "alloc_bench (1 thread, run at #{fmt_int(nat['ops'])} pairs minus 0, per pair") if cg["native_profile"]
        (cg["stack_profiles"] || {}).each do |label, pr|
          report_profile(pr, "w1's loop under #{label} (run at N minus run at N=0, per allocation of the loop")
        end
      end
      puts
      puts "Targets (informational; the benchmark asserts nothing)"
      puts
      puts markdown_table(%w[target measured met],
                          @results["targets"].map { |t| [t["target"], t["measured"], target_verdict(t)] })
      @results["targets"].each { |t| puts "note: #{t['target']}: #{t['note']}" if t["note"] }
      puts
      puts "bench: done in #{@results['duration_s']} s"
    end

    def target_verdict(t)
      return "n/a" if t["met"].nil?

      t["met"] ? "yes" : "NO"
    end

    def report_profile(p, what)
      puts
      puts "Where the preload's instructions go in #{what}; the preload's own code: " \
           "#{p['self_per_alloc']} Ir per allocation)"
      puts
      rows = p["entries"].map do |e|
        ["-> #{e['fn']}", fmt_int(e["calls"]), e["per_call"], e["per_alloc"]]
      end
      rows += p["calls_out"].map do |e|
        ["<- #{e['object']}: #{e['fn']}", fmt_int(e["calls"]), e["per_call"], e["per_alloc"]]
      end
      puts markdown_table(["entry point (->) / called from the preload (<-)", "calls", "Ir per call (incl.)",
                           "Ir per allocation"], rows)
      puts
      puts markdown_table(["preload function (self cost, inlined callees included)", "Ir per allocation"],
                          p["self"].map { |s| [s["fn"][0, 90], s["per_alloc"]] })
    end

    def write_json
      FileUtils.mkdir_p(File.dirname(@json_path))
      doc = { "mode" => @quick ? "quick" : "full", "repetitions" => @reps, "warmup" => @warmup,
              "machine" => machine, "bench_env" => @extra_env, "preload" => @preload_source, "preload_sha256" => @preload_sha,
              "others" => @others.map { |o| File.basename(o) },
              "targets_definition" => TARGETS }.merge(@results)
      File.write(@json_path, JSON.pretty_generate(doc) + "\n")
      puts "bench: wrote #{@json_path}"
    end
  end
end

Bench::Runner.new.run if $PROGRAM_NAME == __FILE__
