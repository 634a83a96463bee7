# frozen_string_literal: true

require_relative "torture_helper"
require "json"

# Scenario 1: 8 native threads (no GVL) hammer the whole malloc family while
# 4 Ruby threads allocate and read and clear the tables. No crash, no
# corrupted block, and once everything stops the books balance.
RSpec.describe "torture: threads" do
  before do
    require_preload!
    skip "no C compiler (#{TortureHelpers.cc}) to build the native helper" unless TortureHelpers.cc?
  end

  # spec/torture/scripts/threads.rb prints one JSON object: what ran and
  # every broken invariant in "failures".
  it "survives 8 native threads and 4 Ruby threads allocating, reading and clearing, then balances" do
    seconds = TortureHelpers.seconds(ci: 3, long: 10)
    r = TortureHelpers.ruby_timed(TortureHelpers.script("threads"), TortureHelpers.threads_helper, seconds.to_s,
                                  rand(1 << 30).to_s, timeout: seconds + 120)
    expect(r.success?).to be(true), r.describe
    report = JSON.parse(r.stdout.lines.last)
    stats = report["stats"]
    TortureHelpers.note("threads", stats.merge("seconds" => seconds, "wall" => r.seconds.round(1)))
    expect(report["failures"]).to eq([]), "#{report['failure_count']} failures; stats #{stats}"
    expect(stats["native_ops"]).to be > 10_000
    expect(stats["clears"]).to be > 3
    expect(stats["each_calls"]).to be > 1
    expect(stats["native_sites"]).to be > 5
    expect(r.stderr).to eq("")
  end
end

RSpec.describe "torture: threads, dlopen and exit" do
  before do
    require_preload!
    skip "no C compiler (#{TortureHelpers.cc}) to build the native helper" unless TortureHelpers.cc?
  end

  it "survives thousands of Mwrap.clear per second against 8 native threads, then balances" do
    seconds = TortureHelpers.seconds(ci: 2, long: 10)
    r = TortureHelpers.ruby_timed(TortureHelpers.script("clear_storm"), TortureHelpers.threads_helper, seconds.to_s,
                                  timeout: seconds + 120)
    expect(r.success?).to be(true), r.describe
    report = JSON.parse(r.stdout.lines.last)
    expect(report["failures"]).to eq([])
    expect(report["stats"]["clears"]).to be > 1000
    expect(report["stats"]["native_sites"]).to be > 5
    TortureHelpers.note("clear_storm", report["stats"].merge("seconds" => seconds))
  end

  def dlopen_churn(seconds, child_mode, mwrap: nil)
    # Under GC.stress one Mwrap.each of ~2,000 locations takes ~10 s (a GC per
    # allocation), so forked children outlive the script's 30 s per-child bound.
    skip "too slow under MWRAP_GC_STRESS (a GC per allocation in every forked child)" if ENV["MWRAP_GC_STRESS"] == "1"
    r = TortureHelpers.ruby_timed(TortureHelpers.script("dlopen"), TortureHelpers.threads_helper,
                                  TortureHelpers.churn_library, seconds.to_s, child_mode, timeout: seconds + 120,
                                  env: mwrap ? { "MWRAP" => mwrap } : {})
    expect(r.success?).to be(true), r.describe
    report = JSON.parse(r.stdout.lines.last)
    expect(report["failures"]).to eq([]), "#{report['failures'].size} failures, stats #{report['stats']}\n" \
                                          "#{report['failures'].first(3).join("\n")}\n#{r.stderr[0, 3000]}"
    expect(report["stats"]["dlopen_rounds"]).to be > 100
    expect(report["stats"]["forks"]).to be >= 1
    expect(report["stats"]["each_stack"]).to be >= 1 if mwrap
    expect(r.stderr).to eq("")
    TortureHelpers.note("dlopen", report["stats"].merge("seconds" => seconds, "child" => child_mode, "mwrap" => mwrap))
  end

  it "survives dlopen/dlclose churn while tables are read (dladdr) and the process forks" do
    dlopen_churn(TortureHelpers.seconds(ci: 3, long: 10), "counts")
  end

  # With stacks on, every malloc of the churned library is unwound through
  # it while another thread dlcloses it, and a reader names the frames
  # (Mwrap.each_stack) of a library that may be gone by then.
  it "survives the same churn with stacks on (bt:16,ruby_bt:16), reading every stack" do
    dlopen_churn(TortureHelpers.seconds(ci: 2, long: 10), "counts", mwrap: "bt:16,ruby_bt:16")
  end

  # A child forked while another thread is inside dlclose inherits the
  # loader's lists half-updated; dladdr there read unmapped memory and the
  # child died. The preload now counts dlclose calls in flight and, in such
  # a child, names native locations by address alone.
  it "names locations in a child forked during dlopen/dlclose" do
    dlopen_churn(TortureHelpers.seconds(ci: 30, long: 60), "names")
  end

  it "exits with its own status while native threads still allocate, and its dump lands" do
    runs = TortureHelpers.count("TORTURE_EXITS", ci: 5, long: 30)
    Dir.mktmpdir("mwrap-torture-exit") do |dir|
      runs.times do |i|
        dump = File.join(dir, "dump-#{i}.txt")
        r = TortureHelpers.ruby_timed(TortureHelpers.script("exit_busy"), TortureHelpers.threads_helper, "7",
                                      timeout: 60, env: { "MWRAP" => "dump_path:#{dump}" })
        expect(r.exitstatus).to eq(7), "run #{i}: #{r.describe}"
        expect(r.stderr).to eq("")
        rows = parse_dump(path: dump)
        expect(rows.count { |row| row.location == "/exit-busy.rb:1" }).to eq(1)
      end
    end
    TortureHelpers.note("exit_busy", "runs" => runs)
  end
end
