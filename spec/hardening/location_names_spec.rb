# frozen_string_literal: true

require_relative "hardening_helper"
require "json"

# Items 11 and 12: Ruby files with awkward names. The baseline printed a
# file name as it was, so `eval(…, nil, "evil\n   999999999            1
# forged.rb", 1)` forged a dump line of its own, and Mwrap[] read any name
# starting with "0x" or holding "[0x" as a native address. Now control
# bytes, DEL and the backslash are printed escaped (\n, \t, \\, \xNN) in
# the exit dump, Mwrap.dump and Mwrap.each alike, and Mwrap[] takes the
# printed name back. The exit-dump example runs against any build; the
# Ruby-API ones need the current ABI.
RSpec.describe "hardening: locations in files with awkward names" do
  include HardeningHelpers

  before { require_preload! }

  let(:tmp) { Dir.mktmpdir("mwrap-hardening-names") }
  let(:script) { File.join(__dir__, "scripts", "location_names.rb") }
  after { FileUtils.rm_rf(tmp) }

  # The file names the script evaluates a line in (its NAMES), and how each
  # must be printed (with ":1").
  def raw_names
    ["0x1f.rb", "x[0x2].rb", "evil\n   999999999            1 forged.rb", "tab\there.rb", "ctl\x01.rb",
     "del\x7f.rb", "back\\slash.rb", "lit\\n.rb"]
  end

  def printed(raw)
    escaped = raw.b.gsub(/[\x00-\x1f\x7f\\]/n) do |c|
      { "\n" => "\\n", "\t" => "\\t", "\\" => "\\\\" }.fetch(c) { format("\\x%02x", c.ord) }
    end
    "#{escaped}:1"
  end

  let(:printed_names) { raw_names.map { |raw| printed(raw) } }

  it "prints the names escaped in the exit dump: every line parses, no line is forged" do
    expect(printed_names).to include("evil\\n   999999999            1 forged.rb:1", "tab\\there.rb:1",
                                     "ctl\\x01.rb:1", "del\\x7f.rb:1", "back\\\\slash.rb:1", "lit\\\\n.rb:1")
    plain = ruby_run(script, preloaded: false)
    expect([plain.stdout, plain.stderr, plain.exitstatus]).to eq(["", "", 0]), plain.describe
    path = File.join(tmp, "dump.txt")
    r = ruby_run(script, preloaded: true, env: { "MWRAP" => "dump_path:#{path}" })
    expect([r.stdout, r.stderr, r.exitstatus]).to eq(["", "", 0]), r.describe
    text = File.binread(path)
    rows = dump_rows(text)
    expect(rows.map(&:location).grep(/\A *forged\.rb/)).to eq([])
    expect(rows.map(&:total)).not_to include(999_999_999)
    by_name = rows.to_h { |row| [row.location, [row.total, row.allocations]] }
    printed_names.drop(1).each { |name| expect(by_name[name]).to eq([10_001, 1]), "#{name.inspect}: #{by_name[name]}" }
    expect(by_name["0x1f.rb:1"]&.first).to be >= 10_001 # also the line's first Array growth
  end

  describe "through the Ruby API" do
    def api_report(*lookups)
      path = File.join(tmp, "dump.txt")
      r = ruby_run(script, "api", *lookups, preloaded: true, env: { "MWRAP" => "dump_path:#{path}" })
      expect([r.stderr, r.exitstatus]).to eq(["", 0]), r.describe
      report = JSON.parse(r.stdout.lines.last)
      expect(report["preloaded"]).to be(true)
      [report, File.binread(path)]
    end

    it "prints each name the same way in the exit dump, Mwrap.dump and Mwrap.each" do
      report, exit_dump = api_report
      each_names = report["each"].map(&:first)
      dump_names = dump_rows(report["dump"]).map(&:location)
      exit_names = dump_rows(exit_dump).map(&:location)
      printed_names.each do |name|
        expect([each_names.include?(name), dump_names.include?(name), exit_names.include?(name)])
          .to eq([true, true, true]), name.inspect
      end
      expect(each_names.grep(/forged/)).to eq([printed_names[2]])
    end

    it "finds each printed name with Mwrap[] (Mwrap[loc.name] == loc), 0x1f.rb and x[0x2].rb included" do
      report, = api_report(*printed_names)
      printed_names.each do |name|
        name_back, total, _allocations, same = report["lookups"].fetch(name)
        expect([name_back, same]).to eq([name, true]), name.inspect
        expect(total).to be >= 10_001
      end
    end

    it "gives back every location of Mwrap.each through Mwrap[]" do
      report, = api_report
      expect(report["each"].size).to be > 100
      expect(report["not_found"]).to eq([])
    end
  end
end
