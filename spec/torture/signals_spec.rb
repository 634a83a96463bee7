# frozen_string_literal: true

require_relative "torture_helper"
require "json"

# Scenario 9: signals. Ruby trap handlers run (and allocate) while the
# program allocates, every signal still reaches the program, and the
# preload itself uses no signal.
RSpec.describe "torture: signals" do
  before { require_preload! }

  it "imports no signal function (nm -D)" do
    skip "nm not available (binutils)" unless which("nm")
    nm = capture({}, "nm", "-D", "--undefined-only", built_preload)
    skip "nm not available: #{nm.stderr}" unless nm.success?
    imported = nm.stdout.lines.map { |l| l.split.last.sub(/@.*/, "") }
    expect(imported).not_to be_empty
    expect(imported & TortureHelpers::SIGNAL_FUNCTIONS).to eq([])
  end

  it "runs trap handlers that allocate while the program allocates; SIGUSR1 and SIGUSR2 all arrive" do
    helper = TortureHelpers.cc? ? TortureHelpers.threads_helper : ""
    flood = TortureHelpers.count("TORTURE_SIGNALS", ci: 2000, long: 20_000)
    cmd = [RbConfig.ruby, "-I", MwrapSpecHelpers::LIB, TortureHelpers.script("signals"), helper]
    rest = []
    r = SpecProcess.open({ "LD_PRELOAD" => built_preload }, *cmd, timeout: 300) do |child|
      expect(child.gets(30)).to start_with("ready")
      # Flood: both signals, as fast as we can, while it allocates. (The
      # short pause every 50 signals is the flood's pace, not a wait.)
      flood.times do |i|
        Process.kill(i.even? ? :USR1 : :USR2, child.pid)
        sleep 0.0002 if (i % 50).zero?
      end
      # Drain what the flood produced, up to the script's "synced" (printed
      # after every handler line of the flood: see scripts/signals.rb), then
      # count exactly: one signal, one handler run.
      child.puts "sync"
      seen = Hash.new(0)
      while (line = child.gets(30)) != "synced\n"
        line or raise "signals.rb ended its output before answering \"sync\""
        seen[line.split.first] += 1
      end
      exact = { "usr1" => 0, "usr2" => 0 }
      200.times do |i|
        sig = i.even? ? "usr1" : "usr2"
        Process.kill(sig.upcase.to_sym, child.pid)
        line = child.gets(30)
        expect(line).to start_with(sig)
        exact[sig] += 1
      end
      child.puts "stop"
      child.close_stdin
      while (line = child.gets(60))
        rest << line
      end
    end
    expect(r.status.success?).to be(true), r.describe
    summary = JSON.parse(rest.compact.last)
    expect(summary["usr1"]).to be >= 100 + 1
    expect(summary["usr2"]).to be >= 100 + 1
    expect(summary["usr1"] + summary["usr2"]).to be <= flood + 200
    expect(summary["native_errors"]).to eq(0)
    total, allocations = summary["handler_line"]
    expect(allocations).to be >= summary["usr1"]
    expect(total).to be >= 1001 * summary["usr1"]
    expect(r.stderr).to eq("")
    TortureHelpers.note("signals", summary.merge("sent" => flood + 200, "exact_phase" => 200))
  end
end
