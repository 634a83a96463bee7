# frozen_string_literal: true

require "spec_helper"
require "support/mwrap_api"

# Mwrap.each_stack, Mwrap::SourceLocation#stacks, Mwrap.recording and
# Mwrap.app_root=, read in real Ruby processes under the built preload
# (README: "Why is this line allocating?").
RSpec.describe "stacks: the Ruby API" do
  before { require_preload! }

  let(:tmp) { Dir.mktmpdir("mwrap-stacks-api") }
  after { FileUtils.rm_rf(tmp) }

  # `make` is called from two lines, `a` (3 times, 200,000-byte Strings)
  # and `b` (2 times, 100,000 bytes): one location (the "# make" line)
  # with two Ruby stacks, plus the warm-up call's (an empty String: no
  # malloc, only the call's own cache). All kept, so nothing there is
  # freed. Then the "# tmp" line makes 4 Strings that are dropped and
  # collected.
  def workload = <<~'RUBY'
    require "mwrap"
    def make(n)
      "x" * n # make
    end
    def a = make(200_000) # via_a
    def b = make(100_000) # via_b
    make(0) # warm
    $keep = []
    3.times { $keep << a } # loop_a
    2.times { $keep << b } # loop_b
    def tmp_line = ("y" * 50_000).size # tmp
    4.times { tmp_line }
    GC.start
  RUBY

  def run_workload(tail, mwrap:)
    _path, out = run_api(MwrapApiHelpers::SHOW + workload + tail, dir: tmp, env: { "MWRAP" => mwrap })
    values(out)
  end

  def loc(marker)
    code = MwrapApiHelpers::SHOW + workload
    "#{File.join(tmp, 'script.rb')}:#{line_of(code, "# #{marker}")}"
  end

  it "yields eight values per row, largest total first, honours min, and is an Enumerator without a block" do
    v = run_workload(<<~'RUBY', mwrap: "bt:8,ruby_bt:8")
      rows = []
      Mwrap.each_stack { |*row| rows << row }
      show :arity, rows.map(&:size).uniq
      show :totals, rows.map { |r| r[3] }
      show :types, rows.map { |r| r.map(&:class) }.uniq
      show :frozen, rows.all? { |r| r[1].frozen? && r[2].frozen? && (r[1] + r[2]).all? { |f| f.is_a?(String) && f.frozen? } }
      show :location_frozen, rows.all? { |r| r[0].frozen? }
      show :min_totals, Mwrap.each_stack(300_000).map { |*r| r[3] }
      show :at_edge, [Mwrap.each_stack(600_002).map { |*r| r[3] }, Mwrap.each_stack(600_003).map { |*r| r[3] }]
      show :min_all, Mwrap.each_stack(100_000).map { |*r| r[3] }
      e = Mwrap.each_stack
      show :enum_class, e.class
      first = e.first
      show :first, [first.size, first[3] >= 600_003]
      show :to_a_size, [e.to_a.size, e.to_a.map(&:size).uniq]
      show :neg, begin; Mwrap.each_stack(-1) {}; rescue ArgumentError => ex; ex.class; end
    RUBY
    expect(v[:arity]).to eq([8])
    expect(v[:totals].size).to be > 10
    expect(v[:totals]).to eq(v[:totals].sort.reverse)
    expect(v[:types]).to all(eq([String, Array, Array, Integer, Integer, Integer, Integer, Integer]))
    expect(v[:frozen]).to be(true)
    expect(v[:location_frozen]).to be(true)
    # the a-stack (3 x 200,001 bytes) is above 300,000, the b-stack not ...
    expect(v[:min_totals]).to include(600_003)
    expect(v[:min_totals]).not_to include(200_002)
    expect(v[:min_totals]).to all(be > 300_000)
    # ... and min is strict
    expect(v[:at_edge][0]).to include(600_003)
    expect(v[:at_edge][1]).not_to include(600_003)
    # the b-stack (2 x 100,001) is above 100,000
    expect(v[:min_all]).to include(600_003, 200_002)
    expect(v[:min_all]).to all(be > 100_000)
    expect(v[:min_all]).to eq(v[:min_all].sort.reverse)
    expect(v[:enum_class]).to eq(Enumerator)
    expect(v[:first]).to eq([8, true]) # the largest row: at least the a-stack's
    expect(v[:to_a_size][0]).to be > 10
    expect(v[:to_a_size][1]).to eq([8])
    expect(v[:neg]).to eq(ArgumentError)
  end

  it "records the Ruby stack of each call path, innermost first, with exact numbers" do
    v = run_workload(<<~RUBY, mwrap: "ruby_bt:3")
      show :rows, Mwrap.each_stack.to_a.select { |r| r[0] == #{loc('make').inspect} }
    RUBY
    make, a, b, a3, b2, warm = %w[make via_a via_b loop_a loop_b warm].map { |m| loc(m) }
    expect(v[:rows].size).to eq(3)
    expect(v[:rows][0..1]).to eq([
                                   [make, [make, a, a3], [], 600_003, 3, 0, 600_003, 3],
                                   [make, [make, b, b2], [], 200_002, 2, 0, 200_002, 2]
                                 ])
    # the warm-up call: no String malloc, only a little of the call's own
    expect(v[:rows][2][0..2]).to eq([make, [make, warm], []])
    expect(v[:rows][2][3]).to be_between(1, 256)
  end

  it "with bt:0 and ruby_bt:0 has one row per location, with empty frames and the location's numbers" do
    v = run_workload(<<~RUBY, mwrap: "bt:0,ruby_bt:0")
      rows = Mwrap.each_stack.to_a
      show :recording, Mwrap.recording
      show :unique, rows.size == rows.map(&:first).uniq.size
      show :frames, rows.map { |r| [r[1], r[2]] }.uniq
      mine = rows.select { |r| [#{loc('make').inspect}, #{loc('tmp').inspect}].include?(r[0]) }
      show :mine, mine
      show :locs, mine.map { |r| l = Mwrap[r[0]]; [l.name, [], [], l.total, l.allocations, l.frees, l.live_bytes, l.live_count] }
    RUBY
    expect(v[:recording]).to eq({ bt: 0, ruby_bt: 0, app_root: nil })
    expect(v[:unique]).to be(true)
    expect(v[:frames]).to eq([[[], []]])
    expect(v[:mine].map(&:first)).to eq([loc("make"), loc("tmp")])
    expect(v[:mine]).to eq(v[:locs])
    make = v[:mine].assoc(loc("make"))
    expect(make[4..7]).to eq([7, 0, make[3], 7]) # 3 + 2 Strings and the warm-up's 2 small blocks
    expect(make[3]).to be_between(800_006, 800_005 + 256)
  end

  it "SourceLocation#stacks has each_stack's rows for that location, summing to its numbers" do
    v = run_workload(<<~RUBY, mwrap: "bt:6,ruby_bt:4")
      out = {}
      [#{loc('make').inspect}, #{loc('tmp').inspect}].each do |name|
        l = Mwrap[name]
        rows = l.stacks
        sums = (3..7).map { |i| rows.sum { |r| r[i] } }
        out[name] = { stacks: rows, each: Mwrap.each_stack.to_a.select { |r| r[0] == name },
                      sums: sums, loc: [l.total, l.allocations, l.frees, l.live_bytes, l.live_count] }
      end
      show :out, out
    RUBY
    v[:out].each do |name, h|
      expect(h[:stacks]).to eq(h[:each]), name
      expect(h[:stacks].map { |r| r[3] }).to eq(h[:stacks].map { |r| r[3] }.sort.reverse)
      expect(h[:sums]).to eq(h[:loc]), name
      expect(h[:stacks].map(&:size).uniq).to eq([8])
      expect(h[:stacks].map { |r| r[2].size }).to all(be_between(1, 6))
    end
    make = v[:out][loc("make")]
    expect(make[:loc][1..2]).to eq([7, 0])
    expect(make[:stacks].map { |r| r[1] }.uniq.size).to eq(3) # three Ruby stacks, maybe split by native ones
    tmp_line = v[:out][loc("tmp")]
    called = tmp_line[:stacks].select { |r| r[1].size > 1 } # called from the 4.times block, not defined
    expect(called.sum { |r| r[3] }).to eq(200_004)
    expect(tmp_line[:loc][2]).to be_positive # GC.start freed some of them
  end

  it "Mwrap.recording reflects MWRAP, and app_root= round-trips, nil turns it off, bad values raise" do
    app = File.join(tmp, "app")
    Dir.mkdir(app)
    missing = File.join(tmp, "no-such-dir")
    v = run_workload(<<~RUBY, mwrap: "bt:5,ruby_bt:7,app_root:#{app}")
      show :start, Mwrap.recording
      other = #{tmp.inspect}
      show :set_ret, (Mwrap.app_root = other)
      show :after_set, [Mwrap.recording, Mwrap.app_root]
      Mwrap.app_root = nil
      show :after_nil, [Mwrap.recording, Mwrap.app_root]
      show :missing, begin; Mwrap.app_root = #{missing.inspect}; :none; rescue => e; [e.class, e.message]; end
      show :after_missing, Mwrap.app_root
      show :type, begin; Mwrap.app_root = 42; :none; rescue => e; [e.class, e.message]; end
    RUBY
    expect(v[:start]).to eq({ bt: 5, ruby_bt: 7, app_root: app })
    expect(v[:set_ret]).to eq(tmp)
    expect(v[:after_set]).to eq([{ bt: 5, ruby_bt: 7, app_root: tmp }, tmp])
    expect(v[:after_nil]).to eq([{ bt: 5, ruby_bt: 7, app_root: nil }, nil])
    expect(v[:missing][0]).to eq(ArgumentError)
    expect(v[:missing][1]).to include(missing)
    expect(v[:after_missing]).to be_nil
    expect(v[:type][0]).to eq(TypeError)
    expect(v[:type][1]).to include("42")
  end
end
