# frozen_string_literal: true

require_relative "stacks_helper"
require "json"

# MWRAP=dump_format:folded and dump_format:json, checked against the
# stacks the same process reads with Mwrap.each_stack. The script lives in
# a directory whose name holds a `;`.
RSpec.describe "dump_format" do
  before(:all) { require_preload! }

  DUMP_NEST_SCRIPT = <<~RUBY
    def c
      "x" * 100_000 # c
    end
    def b = c # b
    def a = b # a
    $kept = a # measured
    freed = "y" * 200_000 # freed
    freed = nil
    GC.start
    require "mwrap"
    GC.disable
    show :rows, Mwrap.each_stack.select { |row| row[0].start_with?(__FILE__) }
    show :c, Mwrap[__FILE__ + ":2"].then { |l| [l.total, l.allocations, l.frees, l.live_bytes, l.live_count] }
    show :pid, $$
  RUBY

  # [path, rows shown, dump text] of the script run in "dir/a;b" with MWRAP.
  def dumped(dir, mwrap)
    app = File.join(dir, "a;b")
    FileUtils.mkdir_p(app)
    dump = File.join(dir, "dump.out")
    path, v = stack_values(DUMP_NEST_SCRIPT, dir: app, mwrap: "#{mwrap},dump_path:#{dump}", stderr: :any)
    [path, v, File.read(dump)]
  end

  def at(path, marker)
    "#{path}:#{line_of(DUMP_NEST_SCRIPT, marker)}"
  end

  # A frame as the folded format writes it.
  def folded(frame)
    frame.gsub(";", "\\x3b")
  end

  it "folded: outermost first, Ruby frames above native ones, `;` escaped, live bytes" do
    Dir.mktmpdir do |dir|
      path, v, text = dumped(dir, "bt:2,ruby_bt:8,dump_format:folded")
      lines = text.lines
      expect(lines).to all(match(/\A\S.* \d+\n\z/))
      stacks = lines.map { |l| l.chomp.rpartition(" ") }.map { |frames, _, bytes| [frames.split(";"), bytes.to_i] }
      # No raw `;` is left inside a frame: every frame of the script's is a whole `path:line`.
      script_frames = stacks.flat_map(&:first).select { |f| f.include?("a\\x3bb") }
      expect(script_frames).to all(match(%r{\A#{Regexp.escape(folded(File.dirname(path)))}/(script|show)\.rb:\d+\z}))
      expect(script_frames).not_to be_empty
      row = v.fetch(:rows).find { |r| r[1] == %w[#\ c #\ b #\ a #\ measured].map { |m| at(path, m) } && r[6] >= 100_000 }
      expect(row[2].size).to eq(2)
      expected = "#{[*row[1].reverse, *row[2].reverse].map { |f| folded(f) }.join(';')} #{row[6]}\n"
      expect(lines).to include(expected)
      expect(row[6]).to be >= 100_001
      expect(text.scan("#{folded(at(path, '# c'))};").size).to eq(v.fetch(:rows).count { |r| r[0] == at(path, "# c") && r[6].positive? })
    end
  end

  it "folded: a location stands as the innermost Ruby frame without Ruby frames, and dump_min applies to live bytes" do
    Dir.mktmpdir do |dir|
      path, v, text = dumped(dir, "bt:2,dump_format:folded,dump_min:100000")
      row = v.fetch(:rows).find { |r| r[0] == at(path, "# c") && r[6] >= 100_000 }
      expect(row[1]).to eq([])
      expect(text.lines).to include("#{folded(row[0])};#{row[2].reverse.map { |f| folded(f) }.join(';')} #{row[6]}\n")
      expect(text.lines.map { |l| l[/ (\d+)\n\z/, 1].to_i }).to all(be > 100_000)
      # The freed line's total passes dump_min, its live bytes (0) do not.
      freed = v.fetch(:rows).find { |r| r[0] == at(path, "# freed") && r[3] > 200_000 }
      expect(freed[6]).to eq(0)
      expect(text).not_to include(folded(at(path, "# freed")))
    end
  end

  it "json: one document with mwrap 1, the locations' numbers and their stacks" do
    Dir.mktmpdir do |dir|
      path, v, text = dumped(dir, "ruby_bt:8,dump_format:json,dump_min:100000")
      expect(text).to start_with("{\"mwrap\":1,\"locations\":[\n")
      expect(text.lines.last).to match(/\A\],"pid":\d+\}\n\z/)
      doc = JSON.parse(text)
      # no memory breakdown at exit (an exit may interrupt the allocator;
      # snapshots and the endpoint's /json carry it)
      expect(doc.keys).to eq(%w[mwrap locations pid])
      expect(doc["pid"]).to eq(v.fetch(:pid))
      expect(doc["mwrap"]).to eq(1)
      expect(doc["locations"].map { |l| l["total"] }).to all(be > 100_000)
      by_name = doc["locations"].to_h { |l| [l["location"], l] }
      c = by_name.fetch(at(path, "# c"))
      expect(c.values_at("total", "allocations", "frees", "live_bytes", "live_count")).to eq(v.fetch(:c))
      rows = v.fetch(:rows).select { |r| r[0] == at(path, "# c") }
      expect(c["stacks"]).to eq(rows.map do |r|
        { "ruby" => r[1], "native" => r[2], "total" => r[3], "allocations" => r[4], "frees" => r[5],
          "live_bytes" => r[6], "live_count" => r[7] }
      end)
      %w[total allocations frees live_bytes live_count].each do |key|
        expect(c["stacks"].sum { |st| st[key] }).to eq(c[key]), key
      end
      expect(c["stacks"].first["ruby"]).to eq(%w[#\ c #\ b #\ a #\ measured].map { |m| at(path, m) })
      # dump_min is on the totals here: the freed line is in.
      freed = by_name.fetch(at(path, "# freed"))
      expect(freed.values_at("total", "live_bytes")).to eq([200_001, 0])
    end
  end

  it "json: dump_heap is refused with a message, and the dump stays JSON" do
    Dir.mktmpdir do |dir|
      _, r = run_stacks("1\n", dir: dir, mwrap: "dump_format:json,dump_heap:1,dump_fd:1", stderr: :any)
      expect(r.stderr.lines.size).to eq(1), r.stderr
      expect(r.stderr).to match(/\Amwrap: .*dump_heap goes with dump_format:text only.*\n\z/)
      expect(JSON.parse(r.stdout)["mwrap"]).to eq(1)
    end
  end
end
