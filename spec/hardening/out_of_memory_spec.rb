# frozen_string_literal: true

require_relative "hardening_helper"

# Item 2: out of memory. With its address space limited (RLIMIT_AS), a
# program allocates until malloc returns NULL and then calls malloc from
# 2,000 new call sites, so that the profiler has to record new locations
# with no memory left. Without the preload the program carries on; the
# baseline aborted ("memory allocation of 192 bytes failed", SIGABRT) when
# its own bookkeeping could not allocate.
RSpec.describe "hardening: out of memory" do
  include HardeningHelpers

  before { require_preload! }

  let(:tmp) { Dir.mktmpdir("mwrap-hardening-oom") }
  after { FileUtils.rm_rf(tmp) }

  describe "a C program (spec/hardening/native/out_of_memory.c)" do
    before { need_cc! }

    # -O0: no tail calls, so each site_N has a return address of its own;
    # -rdynamic: the dump names them "(site_N+0x…)".
    let(:prog) { native("out_of_memory", flags: ["-O0", "-rdynamic"]) }
    let(:expected) { "out of memory: yes; sites 2000; first round 2000; second round 2000\n" }

    it "carries on after malloc returned NULL and 2,000 new call sites, as without the preload" do
      plain = without_preload(prog)
      expect([plain.stdout, plain.stderr, plain.exitstatus]).to eq([expected, "", 0]), plain.describe
      r = with_preload(prog)
      expect([r.stdout, r.stderr, r.exitstatus]).to eq([expected, "", 0]), r.describe
    end

    it "writes a dump that parses, with a row for every site" do
      path = File.join(tmp, "dump.txt")
      r = with_preload(prog, env: { "MWRAP" => "dump_path:#{path}" })
      expect([r.stdout, r.stderr, r.exitstatus]).to eq([expected, "", 0]), r.describe
      rows = dump_rows(File.read(path))
      sites = rows.select { |row| row.location.match?(/\(site_\d+\+0x\h+\) \[0x\h+\]\z/) }
      expect(sites.map { |row| row.location[/site_\d+/] }.uniq.size).to eq(2000)
      # The second round, made with memory to spare, is on every site's row.
      expect(sites.map(&:allocations).min).to be >= 1
    end

    it "counts every one of the 4,000 calls: on its site's row or in the no-memory bucket" do
      path = File.join(tmp, "dump.txt")
      r = with_preload(prog, env: { "MWRAP" => "dump_path:#{path}" })
      expect(r.exitstatus).to eq(0), r.describe
      rows = dump_rows(File.read(path))
      sites = rows.select { |row| row.location.match?(/\(site_\d+\+0x\h+\) \[0x\h+\]\z/) }
      bucket = rows.find { |row| row.location == "[mwrap: no memory to record a new location]" }
      # Each site: malloc(24) twice, both returned a block (see stdout).
      expect(sites.sum(&:allocations) + (bucket&.allocations || 0)).to eq(4000)
      expect(sites.sum(&:total) + (bucket&.total || 0)).to be >= 4000 * 24
    end
  end

  describe "a Ruby script (spec/hardening/scripts/out_of_memory.rb)" do
    let(:script) { File.join(__dir__, "scripts", "out_of_memory.rb") }
    let(:expected) do
      "rescued NoMemoryError at 1048576, 65536, 4096, 512, 64 bytes; called 2000 sites; " \
        "carried on with 2000 lines\n"
    end

    it "rescues NoMemoryError and carries on, with the same output with and without the preload" do
      plain = ruby_run(script, preloaded: false, timeout: 60)
      expect([plain.stdout, plain.stderr, plain.exitstatus]).to eq([expected, "", 0]), plain.describe
      path = File.join(tmp, "dump.txt")
      r = ruby_run(script, preloaded: true, env: { "MWRAP" => "dump_path:#{path}" }, timeout: 60)
      expect([r.stdout, r.stderr, r.exitstatus]).to eq([expected, "", 0]), r.describe
      # Recording goes on after the squeeze: each of the 2,000 new lines
      # holds its 1001-byte String (at most plus a heap page or a GC's worth).
      after = dump_rows(File.read(path)).select { |row| row.location.match?(/\Aafter-\d+\.rb:1\z/) }
      expect(after.size).to eq(2000)
      expect(after.count { |row| [row.total, row.allocations] == [1001, 1] }).to be >= 1900
      expect(after.map(&:total).min).to be >= 1001
    end
  end
end
