# frozen_string_literal: true

require_relative "hardening_helper"

# Item 3: a FIFO as dump_path. The baseline opened dump_path at start-up
# to check it: with no reader that open blocked (at the program's first
# malloc, forever); with a reader, the check's open and close handed the
# reader an early end of file, and the dump's own open at exit then
# blocked forever.
RSpec.describe "hardening: a FIFO as dump_path" do
  include HardeningHelpers

  before { require_preload! }

  let(:tmp) { Dir.mktmpdir("mwrap-hardening-fifo") }
  let(:fifo) { File.join(tmp, "dump.fifo").tap { |f| mkfifo(f) } }
  after { FileUtils.rm_rf(tmp) }

  def no_reader_line
    "mwrap: dump_path \"#{fifo}\" is a FIFO with no reader; dump not written\n"
  end

  [
    ["ruby -e 'puts 1'", [RbConfig.ruby, "-e", "puts 1"]],
    ["sh -c 'echo 1'", ["sh", "-c", "echo 1"]]
  ].each do |label, cmd|
    it "lets `#{label}` finish when the FIFO has no reader (at most one stderr line says so)" do
      plain = without_preload(*cmd, env: { "MWRAP" => "dump_path:#{fifo}" })
      expect([plain.stdout, plain.stderr, plain.exitstatus]).to eq(["1\n", "", 0]), plain.describe
      r = with_preload(*cmd, env: { "MWRAP" => "dump_path:#{fifo}" })
      expect([r.stdout, r.exitstatus]).to eq(["1\n", 0]), r.describe
      expect(["", no_reader_line]).to include(r.stderr)
      expect(File.ftype(fifo)).to eq("fifo")
    end
  end

  # A reader that is already there when the program starts: opened without
  # blocking (so the FIFO has a reader from now on), then it waits with
  # select, which reports the FIFO readable only once a writer has opened
  # it (and then for data or for that writer's close), and reads to EOF.
  def start_reader
    io = File.open(fifo, File::RDONLY | File::NONBLOCK)
    Thread.new do
      text = +""
      loop do
        IO.select([io], nil, nil, 60) or break text << "[reader: nothing for 60 s]"
        chunk = io.read_nonblock(1 << 16, exception: false)
        break if chunk.nil?

        text << chunk unless chunk == :wait_readable
      end
      text
    ensure
      io.close
    end
  end

  it "writes the whole dump to a reader, and the program exits" do
    code = "x = 'a' * 100_000; puts x.size"
    reader = start_reader
    r = with_preload(RbConfig.ruby, "-e", code, env: { "MWRAP" => "dump_path:#{fifo}" })
    text = reader.join(r.timed_out ? 1 : 60)&.value
    expect([r.stdout, r.stderr, r.exitstatus]).to eq(["100000\n", "", 0]), r.describe
    expect(text).not_to be_nil, "the reader is still waiting"
    expect(text).to end_with("\n")
    rows = dump_rows(text)
    expect(rows.size).to be > 10
    line = rows.find { |row| row.location == "-e:1" }
    expect(line&.total).to be >= 100_001
    expect(rows.map(&:total)).to eq(rows.map(&:total).sort.reverse) # one dump, largest first
  ensure
    reader&.kill
  end
end
