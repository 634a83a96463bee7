# frozen_string_literal: true

require_relative "../hardening/hardening_helper"
require "json"

# What a profiled program survives with stacks on (MWRAP=bt:16,ruby_bt:16),
# beside spec/stacks/robustness_spec.rb: fork and exit from a signal
# handler that interrupted malloc, malloc from such a handler, and a
# dlclose'd library whose file is kept, deleted or replaced by another
# build before its frames are named. Every run is time-bounded (a hang
# fails with the stacks).
RSpec.describe "stacks: robustness with bt:16,ruby_bt:16 (signals, replaced libraries)" do
  include HardeningHelpers

  let(:stacks) { "bt:16,ruby_bt:16" }
  let(:native_dir) { File.join(__dir__, "native") }

  before do
    require_preload!
    need_cc!
  end

  let(:tmp) { Dir.mktmpdir("mwrap-stacks-robust") }
  after { FileUtils.rm_rf(tmp) }

  def stacks_native(name, flags: [], shared: false)
    TortureHelpers.compile_c(File.join(native_dir, "#{name}.c"), name: name, shared: shared, flags: ["-rdynamic", *flags])
  end

  # The function a native frame is in ("prog(fn+0x1c) [0x…] at f.c:3" => "fn").
  def function_of(frame)
    frame[/\A[^(]*\((\w+)\+0x\h+\) \[0x\h+\]/, 1]
  end

  def json_dump(path)
    doc = JSON.parse(File.read(path))
    expect(doc["mwrap"]).to eq(1)
    doc["locations"]
  end

  # [total, allocations] of a JSON dump's location, and the same summed
  # over its stacks (equal when every allocation's stack is counted).
  def counts_and_stack_sums(loc)
    keys = %w[total allocations]
    [loc.values_at(*keys), keys.map { |key| loc["stacks"].sum { |s| s[key] } }]
  end

  context "fork and exit from a signal handler" do
    # The hardening suite's program (spec/hardening/native/signal_handler.c),
    # with stacks on: fewer runs than there (each unwinds every malloc).
    let(:sig_prog) { native("signal_handler", flags: ["-rdynamic"]) }

    it "forks 20 times from a signal handler that interrupted malloc, in 10 runs" do
      done, failure = repeat(10) do
        r = with_preload(sig_prog, "fork", "20", env: { "MWRAP" => stacks })
        r.describe unless [r.stdout, r.stderr, r.exitstatus] == ["forks 20\n", "", 0]
      end
      expect(failure).to be_nil
      expect(done).to eq(10)
    end

    it "lets a child forked in the handler allocate and write its own dump with the loop's stacks" do
      done, failure = repeat(6) do |i|
        dir = File.join(tmp, "child-#{i}")
        Dir.mkdir(dir)
        r = with_preload(sig_prog, "child", "1000",
                         env: { "MWRAP" => "#{stacks},dump_format:json,dump_path:#{dir}/d.%p.json" })
        lines = r.stdout.scan(/^(child|parent) pid (\d+) iterations (\d+)$/)
        next r.describe unless r.success? && r.stderr == "" && lines.map(&:first) == %w[child parent]

        lines.filter_map do |who, pid, k|
          file = File.join(dir, "d.#{pid}.json")
          next "#{who}: no dump #{file}" unless File.file?(file)

          loop_loc = json_dump(file).select { |l| l["location"].include?("(loop_alloc+0x") }
          next "#{who}: #{loop_loc.size} loop_alloc locations" unless loop_loc.size == 1

          l = loop_loc[0]
          counts, sums = counts_and_stack_sums(l)
          funcs = l["stacks"].flat_map { |s| s["native"].map { |f| function_of(f) } }.uniq
          "#{who}: #{counts} #{sums} for #{k}; #{funcs}" unless
            counts == [100 * Integer(k), Integer(k)] && sums == counts &&
            funcs.include?("loop_alloc") && funcs.include?("main")
        end.first
      end
      expect(failure).to be_nil
      expect(done).to eq(6)
    end

    it "exits 7 from the handler with the whole dump, the loop's stacks summing to its row" do
      done, failure = repeat(10) do |i|
        file = File.join(tmp, "exit-#{i}.json")
        r = with_preload(sig_prog, "exit", env: { "MWRAP" => "#{stacks},dump_format:json,dump_path:#{file}" })
        next r.describe unless r.exitstatus == 7 && r.stderr == "" && (m = /\Aiterations (\d+)\n\z/.match(r.stdout))
        next "no dump" unless File.file?(file)

        l = json_dump(file).find { |loc| loc["location"].include?("(loop_alloc+0x") }
        next "no loop_alloc location" unless l

        k = Integer(m[1])
        counts, sums = counts_and_stack_sums(l)
        "loop #{counts}, stacks #{sums}, for #{k}" unless
          [k, k + 1].include?(l["allocations"]) && l["total"] == 100 * l["allocations"] && sums == counts
      end
      expect(failure).to be_nil
      expect(done).to eq(10)
    end
  end

  context "signal handlers" do
    it "mallocs in a handler that interrupted malloc: same output, the loop's row exact, the handler's counted at most once each" do
      prog = stacks_native("b_sig_malloc")
      plain = without_preload(prog, "200")
      expect([plain.stderr, plain.exitstatus]).to eq(["", 0]), plain.describe
      expect(plain.stdout).to match(/\Ahandled 200 iterations \d+\n\z/)
      file = File.join(tmp, "sig.json")
      r = with_preload(prog, "200", env: { "MWRAP" => "#{stacks},dump_format:json,dump_path:#{file}" })
      expect([r.stderr, r.exitstatus]).to eq(["", 0]), r.describe
      k = Integer(r.stdout[/\Ahandled 200 iterations (\d+)\n\z/, 1] || raise(r.describe))
      locs = json_dump(file)
      loop_loc = locs.select { |l| l["location"].include?("(b_loop_alloc+0x") }
      handler = locs.select { |l| l["location"].include?("(b_handler_alloc+0x") }
      expect(loop_loc.size).to eq(1)
      expect(loop_loc[0].values_at("total", "allocations", "frees")).to eq([100 * k, k, k])
      expect(loop_loc[0]["stacks"].sum { |s| s["allocations"] }).to eq(k)
      # A malloc made while the handler interrupted the profiler's hook is
      # not recorded (the README does not say so; see the report).
      expect(handler.size).to be <= 1
      h = handler.first
      if h
        expect(h["allocations"]).to be_between(1, 200)
        expect(h["total"]).to eq(40 * h["allocations"])
        expect(h["stacks"].flat_map { |s| s["native"].map { |f| function_of(f) } }).to include("b_handler_alloc", "on_alarm")
      end
    end
  end

  context "dlopen and dlclose" do
    # The library 200 times dlopen'ed (Fiddle), called (it mallocs 1000
    # bytes, kept) and dlclose'd; then, by mode, the file is kept, deleted,
    # or replaced by another build; then the stacks are read.
    def churn(mode)
      lib = File.join(tmp, "libb_churn_copy.so")
      FileUtils.cp(stacks_native("b_churn", shared: true), lib)
      other = File.join(tmp, "libb_churn_v2.so")
      FileUtils.cp(TortureHelpers.compile_c(File.join(native_dir, "b_churn.c"), name: "b_churn_v2", shared: true,
                                                                             flags: ["-DB_VARIANT=2"]), other)
      code = <<~'RUBY'
        require "mwrap"
        require "fiddle"
        lib, mode, other = ARGV
        $keep = []
        200.times do
          h = Fiddle::Handle.new(lib)
          f = Fiddle::Function.new(h["b_churn_alloc"], [Fiddle::TYPE_SIZE_T], Fiddle::TYPE_VOIDP)
          $keep << f.call(1000) # churn
          h.close
        end
        File.unlink(lib) if mode == "delete"
        File.rename(other, lib) if mode == "replace"
        mapped = File.read("/proc/self/maps").include?(lib)
        rows = Mwrap.quiet { Mwrap.each_stack.select { |r| r[0] == "#{__FILE__}:8" && r[2].first.to_s.start_with?("#{lib}(", "[0x") } }
        again = Mwrap.quiet { Mwrap.each_stack.select { |r| r[0] == "#{__FILE__}:8" && r[2].first.to_s.start_with?("#{lib}(", "[0x") } }
        puts Marshal.dump([mapped, rows.map { |r| [r[1], r[2].first, *r[3..]] }, rows == again]).unpack1("H*")
      RUBY
      path = File.join(tmp, "churn.rb")
      File.write(path, code)
      r = ruby_run(path, lib, mode, other, preloaded: true, env: { "MWRAP" => stacks }, timeout: 30)
      expect([r.stderr, r.exitstatus]).to eq(["", 0]), r.describe
      mapped, rows, stable = Marshal.load([r.stdout.strip].pack("H*"))
      expect(mapped).to be(false) # really unloaded
      expect(stable).to be(true)
      expect(rows.size).to eq(1) # loaded at the same address every time
      ruby, frame, *numbers = rows[0]
      expect(ruby).to eq(["#{path}:8", "#{path}:5"])
      expect(numbers).to eq([200_000, 200, 0, 200_000, 200])
      [lib, frame]
    end

    it "names the closed library's frames from its file" do
      lib, frame = churn("keep")
      expect(frame).to match(/\A#{Regexp.escape(lib)}\(b_churn_alloc\+0x\h+\) \[0x\h+\] at \S*b_churn\.c:\d+\z/)
    end

    # Naming a frame looked through every closed object remembered (up to
    # 4,096) for every frame, so once a program had dlclosed that often,
    # reading its stacks took about 5 times as long for good.
    it "reads stacks about as fast after 4,200 dlcloses as before them" do
      code = <<~'RUBY'
        require "mwrap"
        require "fiddle"
        def read_time
          Array.new(2) do
            t = Process.clock_gettime(Process::CLOCK_MONOTONIC)
            Mwrap.each_stack { |*| }
            Process.clock_gettime(Process::CLOCK_MONOTONIC) - t
          end.min
        end
        before = read_time
        4200.times { Fiddle::Handle.new(ARGV[0]).close }
        puts Marshal.dump([before, read_time]).unpack1("H*")
      RUBY
      path = File.join(tmp, "names_after_churn.rb")
      File.write(path, code)
      r = ruby_run(path, stacks_native("b_churn", shared: true), preloaded: true, env: { "MWRAP" => "bt:8" },
                   timeout: 60)
      expect([r.stderr, r.exitstatus]).to eq(["", 0]), r.describe
      before, after = Marshal.load([r.stdout.strip].pack("H*"))
      expect(after).to be < 2.5 * before + 0.05, "each_stack took #{before.round(3)} s before, #{after.round(3)} s after"
    end

    # README: "printed as `[0x…]` when the file is gone or was replaced";
    # the preload prints the object's path and the frame's offset in it
    # (what it recorded at dlclose), without a symbol: accepted here,
    # reported as a README mismatch.
    %w[replace].each do |mode|
      it "shows the frame by address, never with a name from another file, once the file is #{mode}d" do
        lib, frame = churn(mode)
        expect(frame).to match(/\A\[0x\h+\]\z/).or match(/\A#{Regexp.escape(lib)}\(\+0x\h+\) \[0x\h+\]\z/)
        expect(frame).not_to include("b_replaced_pad")
      end
    end
  end

end
