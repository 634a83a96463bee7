# frozen_string_literal: true

require "spec_helper"
require "json"

MwrapSpecHelpers.require_extension!
$LOAD_PATH.unshift(MwrapSpecHelpers::LIB) unless $LOAD_PATH.include?(MwrapSpecHelpers::LIB)
require "mwrap/growth"

# The growth decision and the report, on synthetic snapshots (no preload).
RSpec.describe Mwrap::Growth do
  # A snapshot row: [live_bytes, live_count, allocations, frees, total].
  def row(live, count: 1, allocations: count, frees: 0)
    [live, count, allocations, frees, live]
  end

  # Snapshots from per-location live-byte series: { loc => [b0, b1, …] }.
  def snapshots(series)
    n = series.values.first.size
    Array.new(n) do |i|
      series.each_with_object({}) do |(loc, values), snap|
        live = values[i]
        snap[loc] = row(live, count: i + 1, allocations: 10 * (i + 1), frees: 9 * (i + 1)) if live&.positive?
      end
    end
  end

  # analyze("loc" => [b0, b1, …], …, min_growth: …): String keys are series, Symbols options.
  def analyze(**args)
    series, opts = args.partition { |k, _| k.is_a?(String) }.map(&:to_h)
    described_class.analyze(snapshots(series), warmup: 2, **opts)
  end

  describe ".analyze" do
    it "flags a location whose live bytes rose in every round, with its growth and per-round deltas" do
      report = analyze("leak.rb:3" => [1000, 2000, 3000, 4500])
      expect(report.growing.size).to eq(1)
      entry = report.growing.first
      expect(entry.location).to eq("leak.rb:3")
      expect(entry.growth).to eq(3500)
      expect(entry.per_round).to eq([1000, 1000, 1500])
      expect(entry.live).to eq(4500)
      expect(entry.live_count).to eq(4)
      expect(report.rounds).to eq(3)
      expect(report.warmup).to eq(2)
    end

    it "does not flag a cache that fills up and then stops growing (one flat round is enough)" do
      report = analyze("cache.rb:9" => [1000, 5000, 9000, 9000],
                       "late.rb:1" => [1000, 1000, 2000, 3000],
                       "middle.rb:2" => [1000, 2000, 2000, 3000])
      expect(report.growing).to be_empty
      expect(report.total_growth).to eq(0)
      expect(report.passed?).to be(true)
    end

    it "does not flag a location that shrank in any round, nor one that only went down" do
      report = analyze("saw.rb:1" => [1000, 3000, 2000, 4000], "down.rb:1" => [4000, 3000, 2000, 1000])
      expect(report.growing).to be_empty
    end

    it "counts a location missing from a snapshot as nothing live (new locations can grow)" do
      report = analyze("new.rb:1" => [0, 100, 200, 300], "gone.rb:1" => [500, 600, 0, 700])
      expect(report.growing.map(&:location)).to eq(["new.rb:1"])
      expect(report.growing.first.per_round).to eq([100, 100, 100])
    end

    it "sorts by growth, largest first, then by location" do
      report = analyze("b.rb:1" => [1, 2, 3], "a.rb:1" => [1, 2, 3], "big.rb:1" => [1, 1000, 2000])
      expect(report.growing.map(&:location)).to eq(["big.rb:1", "a.rb:1", "b.rb:1"])
      expect(report.total_growth).to eq(1999 + 2 + 2)
    end

    it "keeps only growth strictly above min_growth" do
      series = { "small.rb:1" => [100, 150, 200], "exact.rb:1" => [100, 300, 400], "large.rb:1" => [1, 500, 1000] }
      expect(analyze(**series, min_growth: 300).growing.map(&:location)).to eq(["large.rb:1"])
      expect(analyze(**series, min_growth: 299).growing.map(&:location)).to eq(["large.rb:1", "exact.rb:1"])
    end

    it "leaves out locations matching an ignore pattern (Regexp, substring, Proc) and lists them" do
      series = { "/app/vendor/gem.rb:1" => [1, 2, 3], "/app/lib/a.rb:2" => [1, 2, 3],
                 "libfoo.so(+0x10) [0x7f00]" => [1, 2, 3], "/app/lib/b.rb:5" => [10, 20, 30] }
      report = analyze(**series, ignore: [%r{/vendor/}, "libfoo.so", ->(loc) { loc.end_with?(":2") }])
      expect(report.growing.map(&:location)).to eq(["/app/lib/b.rb:5"])
      expect(report.ignored).to eq(["/app/lib/a.rb:2", "/app/vendor/gem.rb:1", "libfoo.so(+0x10) [0x7f00]"])
      expect(report.live_before).to eq(10)
      expect(report.live_after).to eq(30)
    end

    it "counts allocations and frees over the measured rounds from the baseline counts" do
      counts = { "leak.rb:3" => [100, 40] }
      snaps = [{ "leak.rb:3" => row(10, allocations: 100, frees: 40) },
               { "leak.rb:3" => row(20, allocations: 110, frees: 41) },
               { "leak.rb:3" => row(30, allocations: 125, frees: 45) }]
      entry = described_class.analyze(snaps, counts: counts).growing.first
      expect([entry.allocations, entry.frees]).to eq([25, 5])
      # Without counts, from the first snapshot; a location new after it counts from zero.
      entry = described_class.analyze(snaps).growing.first
      expect([entry.allocations, entry.frees]).to eq([25, 5])
      fresh = [{}, { "n.rb:1" => row(5, allocations: 3, frees: 1) }, { "n.rb:1" => row(9, allocations: 7, frees: 2) }]
      entry = described_class.analyze(fresh).growing.first
      expect([entry.allocations, entry.frees]).to eq([7, 2])
    end

    it "takes live bytes alone for every snapshot but the last" do
      snaps = [{ "a.rb:1" => 10 }, { "a.rb:1" => 20 }, { "a.rb:1" => row(30) }]
      expect(described_class.analyze(snaps).growing.first.growth).to eq(20)
      expect { described_class.analyze([{ "a.rb:1" => 1 }, { "a.rb:1" => 2 }]) }
        .to raise_error(ArgumentError, /last snapshot/)
      expect { described_class.analyze([{}]) }.to raise_error(ArgumentError)
    end
  end

  describe Mwrap::Growth::Report do
    let(:report) do
      snaps = [
        { "/app/a.rb:10" => [1_000, 1, 5, 4, 9], "/app/b.rb:20" => [100, 1, 1, 0, 1] },
        { "/app/a.rb:10" => [401_000, 2, 6, 4, 9], "/app/b.rb:20" => [200, 2, 2, 0, 1] },
        { "/app/a.rb:10" => [801_000, 3, 7, 4, 9], "/app/b.rb:20" => [300, 3, 3, 0, 1],
          "/app/c.rb:1" => [5, 1, 1, 0, 5] }
      ]
      Mwrap::Growth.analyze(snaps, warmup: 2, counts: { "/app/a.rb:10" => [5, 4], "/app/b.rb:20" => [1, 0] })
    end

    it "passes or fails on the total and the per-location limits" do
      expect(report.total_growth).to eq(800_200)
      expect(report.passed?).to be(false)
      expect(report.passed?(max_growth: 800_199)).to be(false)
      expect(report.passed?(max_growth: 800_200)).to be(true)
      expect(report.passed?(max_growth: 1_000_000, max_growth_per_location: 799_999)).to be(false)
      expect(report.passed?(max_growth: 1_000_000, max_growth_per_location: 800_000)).to be(true)
      expect(report.over_limit(max_growth_per_location: 100).map(&:location)).to eq(["/app/a.rb:10", "/app/b.rb:20"])
      expect { report.passed?(max_growth: -1) }.to raise_error(ArgumentError, /max_growth/)
      expect { report.passed?(max_growth_per_location: "1") }.to raise_error(ArgumentError, /max_growth_per_location/)
    end

    it "sums the verdict up in one line" do
      expect(report.summary).to start_with("mwrap: FAILED: 2 locations grew in every one of 2 rounds after 2 warmup, " \
                                           "800.2 kB (800,200 bytes) in total (limit 0 bytes in total;")
      expect(report.summary(max_growth: 1_000_000, max_growth_per_location: 900_000))
        .to include("passed", "limit 1.0 MB (1,000,000 bytes) in total, 900.0 kB (900,000 bytes) per location")
      empty = Mwrap::Growth.analyze([{}, {}, { "x.rb:1" => [0, 0, 0, 0, 0] }], warmup: 1)
      expect(empty.summary).to eq("mwrap: passed: no location grew in every one of 2 rounds after 1 warmup " \
                                  "(live 0 B -> 0 B)")
      expect(empty.table).to eq("")
      expect(empty.failure_message).to eq(empty.summary)
    end

    it "prints an aligned table, largest first, marking locations over the per-location limit" do
      lines = report.table(max_growth_per_location: 1000).lines.map(&:chomp)
      expect(lines.size).to eq(3)
      expect(lines[0]).to match(/\A +growth +bytes +per round +allocs +frees +location\z/)
      expect(lines[1]).to match(%r{\A! +800\.0 kB +800,000 +\+400\.0 kB \+400\.0 kB +2 +0 +/app/a\.rb:10\z})
      expect(lines[2]).to match(%r{\A +200 B +200 +\+100 B \+100 B +2 +0 +/app/b\.rb:20\z})
      # Columns line up: the location starts, and right-aligned numbers end, at one offset.
      location = lines[0].index("location")
      expect(lines.map { |l| l.index(%r{location|/app/}) }).to eq([location] * 3)
      bytes_end = lines[0].index("bytes") + "bytes".size
      expect(lines.map { |l| l[0, bytes_end].split.last }).to eq(%w[bytes 800,000 200])
      expect(report.failure_message).to eq("#{report.summary}\n#{report.table}")
    end

    it "shows the first rows only, and says how many more" do
      names = (1..30).map { |i| "/app/f#{i}.rb:1" }
      snaps = [1, 2, 3].map { |n| names.each_with_index.to_h { |loc, i| [loc, [n * (i + 1), 1, 1, 0, 0]] } }
      big = Mwrap::Growth.analyze(snaps)
      lines = big.table(limit: 5).lines
      expect(lines.size).to eq(1 + 5 + 1)
      expect(lines.last).to match(/\A… and 25 more growing locations \(.*\); the JSON report lists them all\n\z/)
      expect(big.table.lines.size).to eq(1 + Mwrap::Growth::TABLE_LIMIT + 1)
    end

    it "elides the middle of long per-round lists" do
      text = Mwrap::Growth.per_round_text((1..20).to_a)
      expect(text).to eq("+1 B +2 B +3 B +4 B …(13) +18 B +19 B +20 B")
      expect(Mwrap::Growth.per_round_text([1500, 2_000_000])).to eq("+1.5 kB +2.0 MB")
    end

    it "rejects an unknown keyword in every method, naming it and the known ones" do
      limits = "max_growth, max_growth_per_location"
      { passed?: limits, over_limit: limits, summary: limits, to_h: limits, to_json: limits,
        table: "limit, #{limits}", failure_message: "limit, #{limits}" }.each do |method, known|
        expect { report.public_send(method, max_growht: 1) }
          .to raise_error(ArgumentError, "Mwrap::Growth::Report##{method}: unknown keyword :max_growht " \
                                         "(known keywords: #{known})")
      end
      expect { report.to_h(limit: 5, rounds: 2) }
        .to raise_error(ArgumentError, "Mwrap::Growth::Report#to_h: unknown keywords :limit, :rounds " \
                                       "(known keywords: #{limits})")
    end

    it "takes the same limits in every method, so one Hash of them fits all" do
      limits = { max_growth: 900_000, max_growth_per_location: 500_000 }
      expect(report.table(**limits)).to eq(report.table(max_growth_per_location: 500_000))
      expect(report.over_limit(**limits).map(&:location)).to eq(["/app/a.rb:10"])
      expect(report.failure_message(limit: 1, **limits))
        .to eq("#{report.summary(**limits)}\n#{report.table(limit: 1, **limits)}")
      expect { report.table(max_growth: -1) }.to raise_error(ArgumentError, /max_growth must be an Integer >= 0/)
    end

    it "converts to a Hash and to JSON in the documented format" do
      data = JSON.parse(report.to_json(max_growth: 900_000, max_growth_per_location: 500_000))
      expect(data.keys).to eq(%w[format mwrap_version passed rounds warmup min_growth max_growth
                                 max_growth_per_location ignore total_growth live_before live_after duration
                                 growing ignored])
      expect(data).to include("format" => "mwrap-growth/1", "mwrap_version" => Mwrap::VERSION, "passed" => false,
                              "rounds" => 2, "warmup" => 2, "min_growth" => 0, "max_growth" => 900_000,
                              "max_growth_per_location" => 500_000, "total_growth" => 800_200,
                              "live_before" => 1_100, "live_after" => 801_305, "ignored" => [])
      expect(data["growing"].first).to eq("location" => "/app/a.rb:10", "growth" => 800_000,
                                          "per_round" => [400_000, 400_000], "allocations" => 2, "frees" => 0,
                                          "live" => 801_000, "live_count" => 3, "over_limit" => true)
      expect(data["growing"].last["over_limit"]).to be(false)
      expect(JSON.parse(JSON.generate(report))).to include("passed" => false, "max_growth" => 0)
      expect(report.to_h(max_growth: 10**9)["passed"]).to be(true)
    end
  end

  describe ".human_size" do
    it "uses powers of 1000 with one decimal" do
      expect([0, 999, 1000, 1049, 999_949, 999_950, 1_234_567, 10**13, -2048].map { |b| described_class.human_size(b) })
        .to eq(["0 B", "999 B", "1.0 kB", "1.0 kB", "999.9 kB", "1.0 MB", "1.2 MB", "10.0 TB", "-2.0 kB"])
      expect(described_class.bytes_with_exact(1_234_567)).to eq("1.2 MB (1,234,567 bytes)")
      expect(described_class.bytes_with_exact(1)).to eq("1 byte")
      expect(described_class.bytes_with_exact(999)).to eq("999 bytes")
    end
  end

  describe "Mwrap.measure_growth" do
    it "validates its options, naming the bad one" do
      expect { Mwrap.measure_growth(rounds: -1) {} }.to raise_error(ArgumentError, /rounds.*-1/)
      expect { Mwrap.measure_growth(rounds: 1) {} }.to raise_error(ArgumentError, /rounds must be an Integer >= 2/)
      expect { Mwrap.measure_growth(rounds: "5") {} }.to raise_error(ArgumentError, /rounds/)
      expect { Mwrap.measure_growth(warmup: -1) {} }.to raise_error(ArgumentError, /warmup.*-1/)
      expect { Mwrap.measure_growth(min_growth: 1.5) {} }.to raise_error(ArgumentError, /min_growth/)
      expect { Mwrap.measure_growth(ignore: [42]) {} }.to raise_error(ArgumentError, /ignore.*42/)
      expect { Mwrap.measure_growth }.to raise_error(ArgumentError, /needs a block/)
      expect { Mwrap.measure_growth(round: 5) {} }.to raise_error(ArgumentError, /round/)
    end

    it "rejects an unknown keyword, naming it and the known ones, before running the block" do
      ran = 0
      expect { Mwrap.measure_growth(round: 5) { ran += 1 } }
        .to raise_error(ArgumentError, "Mwrap.measure_growth: unknown keyword :round " \
                                       "(known keywords: rounds, warmup, min_growth, ignore, app_root)")
      expect { Mwrap.measure_growth(max_growth: 0) { ran += 1 } }
        .to raise_error(ArgumentError, /unknown keyword :max_growth /)
      expect(ran).to eq(0)
    end

    it "raises NotPreloadedError, saying how to run it, without the preload" do
      skip "this process runs under the preload" if Mwrap.preloaded?
      ran = 0
      expect { Mwrap.measure_growth { ran += 1 } }.to raise_error(Mwrap::NotPreloadedError) { |e|
        expect(e.message).to include("mwrap rspec", "mwrap ruby -Itest", "Mwrap::RakeTask")
      }
      expect(ran).to eq(0)
      expect(Mwrap::NotPreloadedError.superclass).to eq(Mwrap::Error)
    end
  end
end
