# frozen_string_literal: true

require "spec_helper"

# The spec infrastructure itself (spec/support/spec_process.rb and
# c_build_cache.rb): a green suite never reaches the timeout paths, so they
# are run here on purpose, with short limits.
RSpec.describe SpecProcess do
  # Pids of the live processes in process group `pgid` (a killed process
  # not yet reaped by its new parent is a zombie: not counted).
  def live_group_members(pgid)
    Dir.glob("/proc/[0-9]*/stat").filter_map do |f|
      state, _ppid, pgrp = File.read(f).split(") ").last.split
      File.basename(File.dirname(f)).to_i if pgrp.to_i == pgid && state != "Z"
    rescue SystemCallError
      nil
    end
  end

  it "runs a command with a clean environment and returns its output and status" do
    r = SpecProcess.run({ "MWRAP" => "dump_min:1", "EXTRA" => "x" }, "sh", "-c",
                        'echo "$MWRAP/$EXTRA/${LD_PRELOAD-unset}/${RUBYOPT-unset}"; echo err >&2; exit 3',
                        stdin_data: "")
    expect([r.stdout, r.stderr, r.exitstatus, r.timed_out]).to eq(["dump_min:1/x/unset/unset\n", "err\n", 3, false])
    expect(r.success?).to be(false)
    expect(r.describe).to start_with("MWRAP=dump_min:1 EXTRA=x sh -c ").and include("exit 3\n--- stdout ---\n")
  end

  it "kills the whole process group at the limit and fails naming the command" do
    started = SpecProcess.now
    error = begin
      # Stacks: see the next examples (gdb takes about 0.3 s a process).
      SpecProcess.run({}, "sh", "-c", "sleep 30 & sleep 30", timeout: 0.2, stacks: false)
    rescue SpecProcess::TimedOut => e
      e
    end
    expect(error).to be_a(SpecProcess::TimedOut)
    r = error.result
    expect(SpecProcess.now - started).to be < 20
    expect([r.timed_out, r.status.termsig]).to eq([true, Signal.list.fetch("KILL")])
    expect(error.message)
      .to start_with("sh -c sleep\\ 30\\ \\&\\ sleep\\ 30 (in #{SpecProcess::ROOT})\ntimed out after ")
    expect(live_group_members(r.status.pid)).to eq([])
  end

  it "returns the Result instead with on_timeout: :return, even when the child never reads its stdin" do
    r = SpecProcess.run({}, "sleep", "30", stdin_data: "x" * (1 << 20), timeout: 0.2, on_timeout: :return,
                                           stacks: false)
    expect([r.timed_out, r.success?, r.seconds]).to match([true, false, be < 20])
  end

  it "talks to a child line by line" do
    code = '$stdout.sync = true; puts "ready"; while (l = $stdin.gets); puts l.upcase; end'
    lines = []
    r = SpecProcess.open({}, RbConfig.ruby, "-e", code, timeout: 20) do |child|
      lines << child.gets(10)
      child.puts("abc")
      lines << child.gets(10)
      child.close_stdin
      lines << child.gets(10)
    end
    expect(lines).to eq(["ready\n", "ABC\n", nil])
    expect([r.success?, r.stdout]).to eq([true, "ready\nABC\n"])
  end

  it "says whether the child has exited within a time, killing nothing" do
    r = SpecProcess.open({}, "sh", "-c", 'read -r line; echo "got $line"', timeout: 20) do |child|
      expect(child.exited_within?(0.1)).to be(false) # it waits for its line
      child.puts("done")
      child.close_stdin
      expect(child.exited_within?(10)).to be(true)
    end
    expect([r.success?, r.timed_out, r.stdout]).to eq([true, false, "got done\n"])
  end

  it "fails a line that does not come in time, showing the output so far and every process's stacks" do
    error = begin
      SpecProcess.open({}, "sh", "-c", "sleep 30 & sleep 30 & echo started; wait", timeout: 20) do |child|
        expect(child.gets(10)).to eq("started\n") # both sleeps are forked by now
        child.gets(0.2)
      end
    rescue SpecProcess::TimedOut => e
      e
    end
    expect(error.message).to start_with("no line on stdout within 0.2 s\nsh -c ")
    expect(error.message).to include("--- stdout so far ---\nstarted\n")
    expect(error.result.stdout).to eq("started\n")
    expect(live_group_members(error.result.status.pid)).to eq([])
    if ThreadStacks.gdb
      expect(error.result.stacks.scan(/^process \d+ \(/).size).to eq(3)
      expect(error.result.stacks).to match(/^Thread 1 .*\n#0 /)
    else
      expect(error.message).to include("--- stacks at the timeout ---\n(none: no gdb)")
    end
  end

  it "waits for a forked child, and kills one that does not exit in time" do
    pid = fork { exit!(7) }
    expect(SpecProcess.wait_child(pid, timeout: 20).exitstatus).to eq(7)
    pid = fork { sleep 30 }
    hang = nil
    expect(SpecProcess.wait_child(pid, timeout: 0.2) { |message| hang = message }).to be_nil
    expect(hang).to start_with("(pid #{pid}) did not exit within 0.2 s: killed")
    expect { Process.kill(0, pid) }.to raise_error(Errno::ESRCH)
  end
end

RSpec.describe CBuildCache do
  before { skip "no C compiler (#{described_class.cc})" unless described_class.cc? }

  it "compiles a source once per run, keeping the library's name" do
    source = "int spec_cache_probe(void) { return 42; }\n"
    so = described_class.build(source, name: "spec_cache_probe", shared: true)
    expect(File.basename(so)).to eq("libspec_cache_probe.so")
    mtime = File.mtime(so)
    expect(described_class.build(source, name: "spec_cache_probe", shared: true)).to eq(so)
    expect(File.mtime(so)).to eq(mtime)
    expect(described_class.build(source, name: "spec_cache_probe", shared: true, flags: ["-O0"])).not_to eq(so)
  end

  it "raises with the compiler's message, and try_build warns and returns nil" do
    expect { described_class.build("int broken(void) { return }\n", name: "broken", shared: true) }
      .to raise_error(CBuildCache::Error, /broken\.c.*error/m)
    expect { expect(described_class.try_build("nope(\n", name: "nope")).to be_nil }
      .to output(/cannot build nope: /).to_stderr
  end
end
