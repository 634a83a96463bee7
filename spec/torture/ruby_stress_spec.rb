# frozen_string_literal: true

require_relative "torture_helper"
require "json"

# Scenario 7: Ruby with many C extensions loaded prints exactly the same
# with and without the preload, also with GC tuning that forces many GCs;
# under GC.stress and compaction the Mwrap API works and the books balance.
# (The full suite under GC.stress is another task's; this is a short block.)
RSpec.describe "torture: Ruby under stress" do
  before { require_preload! }

  def smoke(preload, env = {})
    r = TortureHelpers.ruby_timed(TortureHelpers.script("smoke"), timeout: 180, preload: preload, env: env)
    expect(r.success?).to be(true), r.describe
    r
  end

  it "prints the same smoke output (json, zlib, openssl, socket, fiddle, ripper, erb, ...) with and without the preload" do
    plain = smoke(nil)
    expect(plain.stdout).to match(/^smoke: \d+ lines, sha256 \h{64}$/)
    ours = smoke(:built)
    expect(ours.stdout).to eq(plain.stdout)
    expect(ours.stderr).to eq(plain.stderr)
    jem = TortureHelpers.jemalloc
    expect(smoke([built_preload, jem]).stdout).to eq(plain.stdout) if jem
    TortureHelpers.note("ruby_smoke", "lines" => plain.stdout.lines.size, "jemalloc" => !jem.nil?)
  end

  it "prints the same smoke output under GC pressure with the preload" do
    plain = smoke(nil)
    ours = smoke(:built, TortureHelpers::GC_PRESSURE)
    expect(ours.stdout).to eq(plain.stdout)
  end

  [["default GC settings", {}], ["GC pressure", TortureHelpers::GC_PRESSURE]].each do |label, env|
    it "keeps the books under GC.stress and GC.compact (#{label})" do
      r = TortureHelpers.ruby_timed(TortureHelpers.script("gc_books"), timeout: 180, env: env)
      expect(r.success?).to be(true), r.describe
      report = JSON.parse(r.stdout.lines.last)
      expect(report["failures"]).to eq([]), "#{report['failure_count']} failures; #{report['stats']}"
      expect(report["stats"]["gcs_under_stress"]).to be > 200
      expect(r.stderr).to eq("")
      TortureHelpers.note("gc_books", report["stats"].merge("env" => label))
    end
  end

  def ractors(n, env = {})
    r = TortureHelpers.ruby_timed(TortureHelpers.script("ractors"), n.to_s, timeout: 180, env: env)
    expect(r.success?).to be(true), r.describe
    report = JSON.parse(r.stdout.lines.last)
    expect(report["kept"]).to eq(4 * n)
    # Every kept block is tracked, at the line or elsewhere.
    expect(report["at_line"] + report["elsewhere"].values.sum).to eq(4 * n)
    TortureHelpers.note("ractors", report.merge("strings" => 4 * n, "gc_pressure" => !env.empty?))
    report
  end

  def mwrap_lookup?
    run_ruby("-r", "mwrap", "-e", "print Mwrap.respond_to?(:[])").stdout == "true"
  end

  it "runs 4 parallel Ractors allocating under the preload; every block stays tracked" do
    skip "Mwrap[] not available yet" unless mwrap_lookup?
    n = TortureHelpers.count("TORTURE_RACTOR_STRINGS", ci: 5000, long: 20_000)
    report = ractors(n)
    # Nearly all at the line; see the next example for why not exactly.
    expect(report["at_line"]).to be >= (4 * n * 0.99).floor
  end

  # Known bug (README, torture section): the preload treats rb_during_gc()
  # as "a GC runs on this thread", but with Ractors it is true while another
  # Ractor sweeps lazily (Ruby 3.1 stops the other Ractors only to start or
  # continue marking), so some allocations made by Ruby code in parallel are
  # charged to libruby's malloc call site instead of their line. Under GC
  # pressure (a GC every malloc) 70 to 900 of 20,000 are; a shim
  # rb_during_gc that always says false makes them all land on the line.
  # (20 s; smaller runs only fail most of the time.)
  it "charges every block allocated by parallel Ractors to its line, also under GC pressure" do
    TortureHelpers.known_bug!("rb_during_gc() is process-wide, so another Ractor's lazy sweep hides the line")
    skip "Mwrap[] not available yet" unless mwrap_lookup?
    report = ractors(5000, TortureHelpers::MALLOC_PRESSURE)
    expect(report["elsewhere"]).to eq({})
  end
end
