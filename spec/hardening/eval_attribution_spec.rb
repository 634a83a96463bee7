# frozen_string_literal: true

require_relative "hardening_helper"

# Found while writing exit_together_spec.rb (not an item of the issue):
# each eval'd line's allocation must be charged to that line. In the
# current build, in about one fork child in ten, one line's 1001-byte
# String is charged to another eval'd file's line of the same child, 23 or
# 32 evals earlier (that row shows [2002, 2]; the line itself has no
# row). The baseline had none in 160 children. The current build added a
# per-thread cache from Ruby's file-name pointer (and the GC generation)
# to a file id (locate.rs file_id / thread_data.rs cached_file); a name
# freed and its memory reused within one generation would give exactly
# this. Checked: a build whose cached_file always misses has none in 240
# children.
RSpec.describe "hardening: eval'd lines are charged to themselves" do
  include HardeningHelpers

  before { require_preload! }

  let(:tmp) { Dir.mktmpdir("mwrap-hardening-eval") }
  let(:script) { File.join(__dir__, "scripts", "eval_attribution.rb") }
  after { FileUtils.rm_rf(tmp) }

  it "has a row for every one of 80 children × 2,500 eval'd lines",
     pending: "current build: 4-13 of the 200,000 lines have no row in each run, their String " \
              "charged to the line 23 or 32 evals earlier in the same child (rows of [2002, 2]); the baseline " \
              "(aabc2a2) has none, nor a build whose file-name cache (thread_data.rs cached_file, " \
              "keyed by name pointer and GC generation) always misses" do
    path = File.join(tmp, "dump.txt")
    r = ruby_run(script, "80", "2500", preloaded: true, env: { "MWRAP" => "dump_path:#{path}" }, timeout: 120)
    expect([r.stdout, r.stderr, r.exitstatus]).to eq(["80 children\n", "", 0]), r.describe
    rows = dump_rows(File.read(path))
    seen = {}
    doubled = []
    rows.each do |row|
      m = /\Ac(\d+)-(\d+)\.rb:1\z/.match(row.location) or next
      seen[[Integer(m[1]), Integer(m[2])]] = true
      doubled << "#{row.location} #{[row.total, row.allocations]}" if row.total >= 2002 && (row.total % 1001).zero?
    end
    missing = (0...80).flat_map { |i| (0...2500).map { |j| [i, j] } }.reject { |k| seen[k] }
    expect(missing).to eq([]), lambda {
      "#{missing.size} lines without a row, e.g. #{missing.first(5).map { |i, j| "c#{i}-#{j}.rb:1" }}; " \
        "rows holding two Strings: #{doubled.first(5)}"
    }
  end
end
