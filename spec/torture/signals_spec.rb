# frozen_string_literal: true

require_relative "torture_helper"
require "json"
require "timeout"

# Scenario 9: signals. Ruby trap handlers run (and allocate) while the
# program allocates, every signal still reaches the program, and the
# preload itself uses no signal.
RSpec.describe "torture: signals" do
  before { require_preload! }

  it "imports no signal function (nm -D)" do
    out, err, st = Open3.capture3("nm", "-D", "--undefined-only", built_preload)
    skip "nm not available: #{err}" unless st.success?
    imported = out.lines.map { |l| l.split.last.sub(/@.*/, "") }
    expect(imported).not_to be_empty
    expect(imported & TortureHelpers::SIGNAL_FUNCTIONS).to eq([])
  end

  it "runs trap handlers that allocate while the program allocates; SIGUSR1 and SIGUSR2 all arrive" do
    helper = TortureHelpers.cc? ? TortureHelpers.threads_helper : ""
    flood = TortureHelpers.count("TORTURE_SIGNALS", ci: 2000, long: 20_000)
    env = MwrapSpecHelpers.clean_env("LD_PRELOAD" => built_preload)
    cmd = [RbConfig.ruby, "-I", MwrapSpecHelpers::LIB, TortureHelpers.script("signals"), helper]
    Open3.popen3(env, *cmd) do |stdin, stdout, stderr, wait|
      err_reader = Thread.new { stderr.read }
      lines = Queue.new
      out_reader = Thread.new do
        stdout.each_line { |l| lines << l }
        lines.close
      end
      next_line = lambda do
        line = nil
        Timeout.timeout(30) { line = lines.pop }
        line
      end
      begin
        expect(next_line.call).to start_with("ready")
        pid = wait.pid
        # Flood: both signals, as fast as we can, while it allocates.
        flood.times do |i|
          Process.kill(i.even? ? :USR1 : :USR2, pid)
          sleep 0.0002 if (i % 50).zero?
        end
        # Drain what the flood produced, then count exactly: one signal, one handler run.
        sleep 0.5
        seen = Hash.new(0)
        seen[lines.pop.split.first] += 1 until lines.empty?
        exact = { "usr1" => 0, "usr2" => 0 }
        200.times do |i|
          sig = i.even? ? "usr1" : "usr2"
          Process.kill(sig.upcase.to_sym, pid)
          line = next_line.call
          expect(line).to start_with(sig)
          exact[sig] += 1
        end
        stdin.puts "stop"
        stdin.close
        rest = []
        Timeout.timeout(60) { rest << lines.pop until lines.closed? && lines.empty? }
        status = wait.value
        expect(status.success?).to be(true), "#{status.inspect}\n#{err_reader.value}"
        summary = JSON.parse(rest.compact.last)
        expect(summary["usr1"]).to be >= 100 + 1
        expect(summary["usr2"]).to be >= 100 + 1
        expect(summary["usr1"] + summary["usr2"]).to be <= flood + 200
        expect(summary["native_errors"]).to eq(0)
        total, allocations = summary["handler_line"]
        expect(allocations).to be >= summary["usr1"]
        expect(total).to be >= 1001 * summary["usr1"]
        expect(err_reader.value).to eq("")
        TortureHelpers.note("signals", summary.merge("sent" => flood + 200, "exact_phase" => 200))
      ensure
        begin
          Process.kill(:KILL, wait.pid) if wait.alive?
        rescue Errno::ESRCH
          nil
        end
        out_reader.join(5)
      end
    end
  end
end
