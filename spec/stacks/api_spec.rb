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

# Exact messages of the argument errors, frame names that need escaping,
# the fake preload's canned rows, and the API without any preload.
RSpec.describe "stacks: the Ruby API's names, errors and canned rows" do
  before { require_preload! }

  let(:tmp) { Dir.mktmpdir("mwrap-stacks-api") }
  after { FileUtils.rm_rf(tmp) }

  it "app_root= takes a relative path (made absolute) or a Pathname, and names every bad value" do
    file = File.join(tmp, "file")
    File.write(file, "")
    code = <<~RUBY
      require "mwrap"
      require "pathname"
      #{MwrapApiHelpers::SHOW}
      show :start, Mwrap.app_root
      Mwrap.app_root = "lib"
      show :rel, [Mwrap.app_root, Mwrap.app_root.frozen?, Mwrap.recording[:app_root]]
      Mwrap.app_root = Pathname.new(#{tmp.dump})
      show :pathname, Mwrap.app_root
      errors = [42, :sym, "", "a\\0b", "/nonexistent", #{file.dump}].map do |bad|
        Mwrap.app_root = bad
        [bad, "no error"]
      rescue => e
        [bad, e.class.name, e.message]
      end
      show :errors, errors
      show :kept, Mwrap.app_root
    RUBY
    _, out = run_api(code, dir: tmp)
    v = values(out)
    expect(v[:start]).to be_nil
    expect(v[:rel]).to eq([File.join(MwrapSpecHelpers::ROOT, "lib"), true, File.join(MwrapSpecHelpers::ROOT, "lib")])
    expect(v[:pathname]).to eq(tmp)
    expect(v[:errors]).to eq([
                               [42, "TypeError", "app_root must be a String, a Pathname or nil, not 42 (Integer)"],
                               [:sym, "TypeError", "app_root must be a String, a Pathname or nil, not :sym (Symbol)"],
                               ["", "ArgumentError", 'app_root must be a directory, not ""'],
                               ["a\0b", "ArgumentError", 'app_root must be a directory, not "a\u0000b"'],
                               ["/nonexistent", "ArgumentError", 'app_root "/nonexistent": No such file or directory'],
                               [file, "ArgumentError", "app_root #{file.dump}: Not a directory"]
                             ])
    expect(v[:kept]).to eq(tmp) # a refused value leaves the last good one
  end

  it "names the argument in each_stack's errors, raised before any Enumerator is made" do
    code = <<~RUBY
      require "mwrap"
      #{MwrapApiHelpers::SHOW}
      calls = { str: -> { Mwrap.each_stack("x") {} }, neg: -> { Mwrap.each_stack(-1) {} },
                neg_enum: -> { Mwrap.each_stack(-1) }, float: -> { Mwrap.each_stack(1.5) {} },
                two: -> { Mwrap.each_stack(1, 2) }, big: -> { Mwrap.each_stack(1 << 64).to_a } }
      calls.each do |key, call|
        show key, [call.call.class.name]
      rescue => e
        show key, [e.class.name, e.message]
      end
    RUBY
    _, out = run_api(code, dir: tmp, env: { "MWRAP" => "bt:2" })
    v = values(out)
    expect(v[:str]).to eq(["TypeError", 'min must be an Integer, not "x" (String)'])
    expect(v[:neg]).to eq(["ArgumentError", "min must not be negative: -1"])
    expect(v[:neg_enum]).to eq(["ArgumentError", "min must not be negative: -1"])
    expect(v[:float]).to eq(["TypeError", "min must be an Integer, not 1.5 (Float)"])
    expect(v[:two]).to eq(["ArgumentError", "wrong number of arguments (given 2, expected 0..1)"])
    expect(v[:big]).to eq(["Array"]) # above every total: nothing, no RangeError
  end

  it "names Ruby frames as locations are named: control bytes and backslashes escaped, other bytes as they are" do
    name = "odd\n\\\xff.rb".b
    File.binwrite(File.join(tmp, name), "def odd = \"z\" * 70_000\n")
    code = <<~RUBY
      require "mwrap"
      #{MwrapApiHelpers::SHOW}
      load Dir[File.join(__dir__, "odd*")].first
      $x = odd # caller
      Mwrap.quiet do
        row = Mwrap.each_stack.find { |r| r[0].include?("odd") && r[1].size == 2 }
        show :row, [row[0].b, row[1].map(&:b), row[1].map { |f| f.encoding.name }]
        show :lookup, [Mwrap[row[0]]&.name == row[0], row[3] >= 70_001]
      end
    RUBY
    path, out = run_api(code, dir: tmp, env: { "MWRAP" => "ruby_bt:4" })
    v = values(out)
    escaped = "#{tmp}/odd\\n\\\\\xff.rb:1".b
    expect(v[:row]).to eq([escaped, [escaped, "#{path}:#{line_of(code, '# caller')}".b], %w[ASCII-8BIT UTF-8]])
    expect(v[:lookup]).to eq([true, true]) # the escaped name finds the location
  end

  context "with the fake preload's canned stacks" do
    def run_fake(code)
      r = run_ruby("-r", "mwrap", "-e", code, preload: fake_preload)
      expect(r.success?).to be(true), r.describe
      values(r.stdout)
    end

    let(:rows) do
      [["/app/a.rb:10", ["/app/a.rb:10", "/app/main.rb:3"],
        ["/usr/lib/libfoo.so(func+0x1c) [0x7f000000101c]", "[0xbeef]"], 200, 2, 1, 100, 1],
       ["/app/a.rb:10", ["/app/a.rb:10", "/app/\xFF.rb:7".b], [], 90, 1, 0, 90, 1],
       ["/app/a.rb:10", [], [], 10, 0, 0, 10, 0]]
    end

    it "yields the canned rows exactly, min strictly, and SourceLocation#stacks gives the same rows" do
      v = run_fake(<<~RUBY)
        #{MwrapApiHelpers::SHOW}
        show :all, Mwrap.each_stack.to_a
        show :min89, Mwrap.each_stack(89).to_a
        show :min90, Mwrap.each_stack(90).to_a
        show :min200, Mwrap.each_stack(200).to_a
        show :first, Mwrap.each_stack.first
        show :stacks, Mwrap["/app/a.rb:10"].stacks
        show :other, Mwrap["/app/b.rb:20"].stacks
        show :enc, Mwrap.each_stack.to_a[1][1].map(&:encoding).map(&:name)
        show :recording, Mwrap.recording
      RUBY
      expect(v[:all]).to eq(rows)
      expect(v[:min89]).to eq(rows.first(2))
      expect(v[:min90]).to eq(rows.first(1))
      expect(v[:min200]).to eq([])
      expect(v[:first]).to eq(rows.first)
      expect(v[:stacks]).to eq(rows)
      expect(v[:other]).to eq([])
      expect(v[:enc]).to eq(%w[UTF-8 ASCII-8BIT])
      expect(v[:recording]).to eq({ bt: 16, ruby_bt: 8, app_root: nil })
    end

    it "passes app_root= to the preload and its refusal back as an ArgumentError naming the directory" do
      v = run_fake(<<~RUBY)
        #{MwrapApiHelpers::SHOW}
        Mwrap.app_root = "/srv/app"
        show :set, [Mwrap.app_root, Mwrap.recording[:app_root]]
        begin
          Mwrap.app_root = "/nonexistent"
        rescue ArgumentError => e
          show :err, e.message
        end
        show :kept, Mwrap.app_root
        Mwrap.app_root = nil
        show :off, Mwrap.app_root
      RUBY
      expect(v[:set]).to eq(["/srv/app", "/srv/app"])
      expect(v[:err]).to eq('app_root "/nonexistent": No such file or directory')
      expect(v[:kept]).to eq("/srv/app")
      expect(v[:off]).to be_nil
    end
  end

  it "without the preload yields nothing, records nothing, and still checks arguments and directories" do
    r = run_ruby("-r", "mwrap", "-e", <<~RUBY, preload: nil)
      p Mwrap.each_stack.to_a, Mwrap.each_stack {}, Mwrap.recording, Mwrap.app_root
      begin; Mwrap.each_stack("x") {}; rescue TypeError => e; p e.message; end
      begin; Mwrap.app_root = 1; rescue TypeError => e; p e.message; end
      ["/nonexistent", #{__FILE__.dump}].each do |bad|
        Mwrap.app_root = bad
      rescue ArgumentError => e
        p e.message
      end
      p((Mwrap.app_root = #{__dir__.dump}), Mwrap.app_root)
    RUBY
    expect(r.success?).to be(true), r.describe
    expect(r.stdout).to eq("[]\nnil\n{:bt=>0, :ruby_bt=>0, :app_root=>nil}\nnil\n" \
                           "\"min must be an Integer, not \\\"x\\\" (String)\"\n" \
                           "\"app_root must be a String, a Pathname or nil, not 1 (Integer)\"\n" \
                           "#{'app_root "/nonexistent": No such file or directory'.dump}\n" \
                           "#{"app_root #{__FILE__.dump}: Not a directory".dump}\n" \
                           "#{__dir__.dump}\nnil\n")
  end
end
