# frozen_string_literal: true

require_relative "torture_helper"
require "json"

# Mwrap.leaks on a busy process: 50 scans while two native threads (no
# GVL) and two Ruby threads allocate. Every scan answers, the threads'
# blocks stay whole, and the Ruby threads run on while a scan waits (it
# holds the GVL only to copy the process).
RSpec.describe "torture: leak scans of a busy process" do
  before do
    require_preload!
    skip "no C compiler (#{TortureHelpers.cc}) to build the native helper" unless TortureHelpers.cc?
  end

  it "scans 50 times while 4 threads allocate, and nothing breaks" do
    r = TortureHelpers.ruby_timed(TortureHelpers.script("leak_scan"), TortureHelpers.threads_helper, "50",
                                  rand(1 << 30).to_s, timeout: 180)
    expect(r.success?).to be(true), r.describe
    report = JSON.parse(r.stdout.lines.last)
    stats = report["stats"]
    TortureHelpers.note("leak_scan", stats.merge("wall" => r.seconds.round(1)))
    expect(report["failures"]).to eq([]), "#{report['failure_count']} failures; stats #{stats}"
    expect(stats["scans"]).to eq(50)
    expect(stats["native_ops"]).to be > 1000
    # a scan holding the GVL while it waits would let them run only on
    # Ruby's 100 ms timer, in few of 50 scans of tens of milliseconds
    expect(stats["progressed_during_scan"]).to be >= 25
    expect(r.stderr).to eq("")
  end
end
