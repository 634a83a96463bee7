# frozen_string_literal: true

require_relative "torture_helper"
require "json"

# Scenario 2: fork from a parent whose other threads (Ruby and native) keep
# allocating. Every child runs Ruby, allocates, reads the tables and exits 0
# in time; with MWRAP=dump_path every process's dump lands, whole lines only.
RSpec.describe "torture: fork" do
  before do
    require_preload!
    skip "no C compiler (#{TortureHelpers.cc}) to build the native helper" unless TortureHelpers.cc?
  end

  # spec/torture/scripts/fork.rb does the forking and prints one JSON object.
  it "forks from a busy parent: children exit 0 in time, report, and every dump lands whole" do
    forks = TortureHelpers.count("TORTURE_FORKS", ci: 50, long: 200)
    Dir.mktmpdir("mwrap-torture-fork") do |dir|
      dump = File.join(dir, "dump.txt")
      r = TortureHelpers.ruby_timed(TortureHelpers.script("fork"), TortureHelpers.threads_helper, forks.to_s, "30",
                                    MwrapSpecHelpers::LIB, timeout: 120 + forks,
                                    env: { "MWRAP" => "dump_path:#{dump},dump_min:40000" })
      expect(r.success?).to be(true), r.describe
      report = JSON.parse(r.stdout.lines.last)
      stats = report["stats"]
      expect(report["failures"]).to eq([])
      expect(stats.values_at("fork_block", "fork_plain", "popen_dash").sum).to eq(forks)
      expect(r.stderr).to eq("")

      rows = parse_dump(path: dump) # raises on a line that is not a dump line
      # Each location is one of the forms the preload prints.
      whole = %r{\A(?:\S.*:\d+|(?:\S.*)?\[0x\h+\]|\[mwrap: location table full\])\z}
      bad = rows.map(&:location).grep_v(whole)
      expect(bad).to eq([]), "locations that are not whole: #{bad.first(5).inspect}"
      counts = rows.map(&:location).tally
      children = counts.keys.filter_map { |l| l[%r{\A/torture-child-(\d+)\.rb:1\z}, 1]&.to_i }
      spawned = counts.keys.filter_map { |l| l[%r{\A/torture-spawn-(\d+)\.rb:1\z}, 1]&.to_i }
      expect(children.sort).to eq((0...forks).to_a)
      expect(spawned.sort).to eq((0...stats["spawn"]).to_a)
      expect(counts.select { |l, n| l.start_with?("/torture-") && n != 1 }).to eq({})
      expect(counts["/torture-parent.rb:1"]).to eq(1)
      child_rows = rows.select { |row| row.location.start_with?("/torture-child-") }
      # The line is cold (just compiled by eval): the 50,001-byte string and a few small extras.
      expect(child_rows.map(&:total)).to all(be_between(50_001, 50_001 + 4096))
      TortureHelpers.note("fork", stats.merge("forks" => forks, "dump_lines" => rows.size,
                                              "processes_dumped" => children.size + spawned.size + 1,
                                              "wall" => r.seconds.round(1)))
    end
  end
end
