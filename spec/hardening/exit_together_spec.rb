# frozen_string_literal: true

require_relative "hardening_helper"
require "json"

# Item 8: dumps of processes that exit together. A Ruby parent forks 8
# children, each allocating from 2,000 eval'd lines of its own; they wait
# on a barrier and exit at once, all appending to one dump_path. The
# baseline wrote its dump in several pieces, so children's lines
# interleaved (in most runs here; the example makes 8). Now each dump is
# one piece under a lock. Also dump_path's `%p` (the pid) and `%%` (a
# `%`), and a bad `%` sequence reported in one line.
RSpec.describe "hardening: processes that exit together" do
  include HardeningHelpers

  before { require_preload! }

  let(:tmp) { Dir.mktmpdir("mwrap-hardening-together") }
  let(:script) { File.join(__dir__, "scripts", "exit_together.rb") }
  after { FileUtils.rm_rf(tmp) }

  # "childI-J.rb:1": child I's line J.
  def child_line = /\Achild(\d+)-(\d+)\.rb:1\z/

  # Runs the script (8 children, 2,000 lines each) with `mwrap`; returns
  # the pid => child index map it printed.
  def exit_together(mwrap, preloaded: true)
    r = ruby_run(script, "8", "2000", preloaded: preloaded, env: { "MWRAP" => mwrap }, timeout: 60, chdir: tmp)
    expect(r.success?).to be(true), r.describe
    # Under a preload of another ABI (the baseline) the extension says so
    # once and Mwrap.clear does nothing; that is not what is checked here.
    expect(r.stderr.lines.grep_v(/\Amwrap: ignoring the preloaded .* ABI version/)).to eq([])
    out = JSON.parse(r.stdout.lines.last)
    expect(out["children"].size).to eq(8)
    out["children"].to_h { |pid, i| [Integer(pid), i] }
  end

  # Problems with one child's rows: 2,000 lines of one 1001-byte String
  # each, so at least 2,000 allocations and 2,002,000 bytes over its rows
  # (plus the odd heap page header or Array growth). Which row holds which
  # String is checked by eval_attribution_spec.rb.
  def child_rows_problems(rows, i)
    mine = rows.select { |row| (m = child_line.match(row.location)) && Integer(m[1]) == i }
    allocations = mine.sum(&:allocations)
    total = mine.sum(&:total)
    return [] if allocations.between?(2000, 2100) && total.between?(2000 * 1001, 2000 * 1001 + 65_536)

    ["child #{i}: #{mine.size} rows, #{allocations} allocations, #{total} bytes"]
  end

  it "writes each child's dump contiguously into one dump_path, every line whole (8 runs)" do
    done, failure = repeat(8, jobs: 1) do |k|
      path = File.join(tmp, "dump-#{k}.txt")
      children = exit_together("dump_path:#{path}")
      text = File.read(path)
      rows = begin
        dump_rows(text)
      rescue RuntimeError => e
        next e.message[0, 300]
      end
      next "the file does not end with a newline" unless text.end_with?("\n")

      owners = rows.map { |row| (m = child_line.match(row.location)) && Integer(m[1]) }
      problems = children.values.flat_map do |i|
        at = owners.each_index.select { |n| owners[n] == i }
        between = owners[at.first..at.last].compact.uniq - [i]
        found = between.empty? ? [] : ["child #{i}: lines of children #{between.sort} between its first and last"]
        found + child_rows_problems(rows, i)
      end
      problems.empty? ? nil : problems.first(5).join("; ")
    end
    expect(failure).to be_nil
    expect(done).to eq(8)
  end

  it "writes one file per process with dump_path %p, each child's file holding its own lines only" do
    children = exit_together("dump_path:#{tmp}/dump.%p.txt")
    files = Dir.children(tmp).grep(/\Adump\.\d+\.txt\z/)
    # The children and the parent (its pid is not printed: the one left).
    expect(files.size).to eq(9)
    children.each do |pid, i|
      rows = dump_rows(File.read(File.join(tmp, "dump.#{pid}.txt")))
      others = rows.filter_map { |row| (m = child_line.match(row.location)) && Integer(m[1]) }.uniq - [i]
      expect(others).to eq([]), "child #{i}'s file holds lines of children #{others}"
      expect(child_rows_problems(rows, i)).to eq([])
    end
  end

  it "takes %% as a literal % in dump_path" do
    r = with_preload(RbConfig.ruby, "-e", "puts Process.pid", env: { "MWRAP" => "dump_path:#{tmp}/100%%-%p.txt" })
    expect([r.stderr, r.exitstatus]).to eq(["", 0]), r.describe
    pid = Integer(r.stdout)
    expect(Dir.children(tmp)).to eq(["100%-#{pid}.txt"])
    expect(dump_rows(File.read(File.join(tmp, "100%-#{pid}.txt")))).not_to be_empty
  end

  it "names the dump by the time it is written with %t, leaving no file of the start-up time" do
    template = File.join(tmp, "dump.%p.%t.log")
    # The program runs into the next second, so a file made at start-up
    # would carry another time than the dump.
    code = "t = Time.now.to_i; x = nil; x = 'x' * 100 until Time.now.to_i > t; puts $$"
    before = Time.now.to_i
    r = with_preload(RbConfig.ruby, "-e", code, env: { "MWRAP" => "dump_path:#{template}" })
    after = Time.now.to_i
    expect(r.stderr).to eq("")
    pid = r.stdout.to_i
    files = Dir.children(tmp)
    expect(files.size).to eq(1), files.inspect
    expect(files.first).to match(/\Adump\.#{pid}\.(\d+)\.log\z/)
    written = Integer(files.first[/\.(\d+)\.log\z/, 1])
    expect(written).to be_between(before + 1, after)
    expect(File.size(File.join(tmp, files.first))).to be > 0
  end

  it "reports an unknown % sequence in one stderr line naming it, and writes no file" do
    ["x%q", "y%"].each do |name|
      path = File.join(tmp, name)
      seq = name[/%.?\z/]
      line = "mwrap: ignoring bad MWRAP entries: dump_path \"#{path}\" has an unknown % sequence " \
             "\"#{seq}\" (%p is the pid, %t the time in Unix seconds, %% a %)\n"
      plain = without_preload(RbConfig.ruby, "-e", "puts 1", env: { "MWRAP" => "dump_path:#{path}" })
      expect([plain.stdout, plain.stderr, plain.exitstatus]).to eq(["1\n", "", 0])
      r = with_preload(RbConfig.ruby, "-e", "puts 1", env: { "MWRAP" => "dump_path:#{path}" })
      expect([r.stdout, r.stderr, r.exitstatus]).to eq(["1\n", line, 0]), r.describe
    end
    expect(Dir.children(tmp)).to eq([])
  end
end
