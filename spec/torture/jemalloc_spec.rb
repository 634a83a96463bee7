# frozen_string_literal: true

require_relative "torture_helper"
require "json"

# Scenario 4: jemalloc underneath the preload
# (LD_PRELOAD=<mwrap>:libjemalloc.so.2). The torture workloads run, and the
# counts of a deterministic workload match the glibc run.
RSpec.describe "torture: jemalloc underneath" do
  let(:jemalloc) { TortureHelpers.jemalloc }
  let(:both) { [built_preload, jemalloc] }

  before do
    require_preload!
    skip "libjemalloc.so.2 not installed (apt-get install libjemalloc2)" unless jemalloc
    skip "no C compiler (#{TortureHelpers.cc}) to build the native helper" unless TortureHelpers.cc?
  end

  def deterministic(preload)
    r = TortureHelpers.ruby_timed(TortureHelpers.script("deterministic"), TortureHelpers.threads_helper,
                                  timeout: 120, preload: preload)
    expect(r.success?).to be(true), r.describe
    expect(r.stderr).to eq("")
    JSON.parse(r.stdout.lines.last)
  end

  it "really runs on jemalloc (its symbols are in the process)" do
    r = TortureHelpers.run_timed({ "LD_PRELOAD" => both.join(":") }, RbConfig.ruby, "-rfiddle", "-e",
                                 'print Fiddle::Handle::DEFAULT["mallctl"] != 0', timeout: 60)
    expect(r.stdout).to eq("true"), r.describe
  end

  it "counts a deterministic workload exactly as on glibc" do
    glibc = deterministic(built_preload)
    jem = deterministic(both)
    expect(glibc["native_keep"]).to eq([10_001_000, 1000, 0])
    # The line also grows the `strings` Array (a few reallocs of its buffer).
    expect(glibc["strings"][0]).to be_between(10_001_000, 10_001_000 + 65_536)
    expect(glibc["strings"][1]).to be_between(1000, 1020)
    expect(glibc["arrays"][1]).to be >= 500
    expect(jem).to eq(glibc)
    TortureHelpers.note("jemalloc", "deterministic_glibc" => glibc, "deterministic_jemalloc" => jem)
  end

  it "survives the threads workload and balances" do
    seconds = TortureHelpers.seconds(ci: 2, long: 10)
    r = TortureHelpers.ruby_timed(TortureHelpers.script("threads"), TortureHelpers.threads_helper, seconds.to_s,
                                  rand(1 << 30).to_s, timeout: seconds + 120, preload: both)
    expect(r.success?).to be(true), r.describe
    report = JSON.parse(r.stdout.lines.last)
    expect(report["failures"]).to eq([]), "#{report['failure_count']} failures; stats #{report['stats']}"
    expect(report["stats"]["native_ops"]).to be > 10_000
    TortureHelpers.note("jemalloc", "threads" => report["stats"], "seconds" => seconds)
  end

  it "survives the fork workload; every dump lands" do
    forks = [TortureHelpers.count("TORTURE_FORKS", ci: 50, long: 200) / 5, 5].max
    Dir.mktmpdir("mwrap-torture-jemalloc") do |dir|
      dump = File.join(dir, "dump.txt")
      r = TortureHelpers.ruby_timed(TortureHelpers.script("fork"), TortureHelpers.threads_helper, forks.to_s, "30",
                                    MwrapSpecHelpers::LIB, timeout: 120 + forks, preload: both,
                                    env: { "MWRAP" => "dump_path:#{dump},dump_min:40000" })
      expect(r.success?).to be(true), r.describe
      report = JSON.parse(r.stdout.lines.last)
      expect(report["failures"]).to eq([])
      locations = parse_dump(path: dump).map(&:location)
      expect(locations.grep(%r{\A/torture-child-\d+\.rb:1\z}).size).to eq(forks)
      TortureHelpers.note("jemalloc", "fork" => report["stats"], "forks" => forks)
    end
  end
end
