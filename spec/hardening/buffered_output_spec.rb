# frozen_string_literal: true

require_relative "hardening_helper"

# Item 7: the dump and the program's own buffered output. The exit dump
# runs from the preload's .fini_array, before exit() flushes stdio; the
# baseline wrote the dump there and then, so with dump_fd:1 (or 2) it
# landed inside what the program printed, at the last buffer boundary.
# Now the program's stdout/stderr are flushed first when they are the
# dump's file: the dump comes after the last program byte, in one piece.
RSpec.describe "hardening: the dump after the program's buffered output" do
  include HardeningHelpers

  before { require_preload! }

  # `text` split into the program's part (`expected`, which it must start
  # with) and the dump after it, parsed.
  def program_then_dump(text, expected)
    text = text.b
    expected = expected.b
    at = (0...expected.bytesize).find { |i| text.getbyte(i) != expected.getbyte(i) }
    expect(at).to be_nil, lambda {
      "the program's #{expected.bytesize} bytes differ from byte #{at} on: " \
        "#{text.byteslice([at - 40, 0].max, 120).inspect} (wanted #{expected.byteslice([at - 40, 0].max, 80).inspect})"
    }
    dump_rows(text.byteslice(expected.bytesize..))
  end

  {
    "stdout" => ["dump_fd:1", :stdout],
    "stderr" => ["dump_fd:2", :stderr]
  }.each do |stream, (mwrap, field)|
    it "writes a C program's 12,000 bytes of fully buffered #{stream} first, then the dump (#{mwrap})" do
      need_cc!
      prog = native("buffered_output", flags: ["-rdynamic"])
      plain = without_preload(prog, stream, env: { "MWRAP" => mwrap })
      expect(plain.exitstatus).to eq(0), plain.describe
      program = plain.public_send(field)
      expect(program.bytesize).to eq(12_000)
      expect(program.lines.last).to eq("program output line       400\n")
      r = with_preload(prog, stream, env: { "MWRAP" => mwrap })
      expect(r.exitstatus).to eq(0), r.describe
      other = field == :stdout ? :stderr : :stdout
      expect(r.public_send(other)).to eq(plain.public_send(other))
      rows = program_then_dump(r.public_send(field), program)
      expect(rows.select { |row| row.location.include?("(keep_some+0x") }.map { |row| [row.total, row.allocations] })
        .to eq([[10_000, 10]])
    end
  end

  it "writes `cmake -h`'s whole help text first, then the dump (dump_fd:1)" do
    cmake = ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).map { |d| File.join(d, "cmake") }
                .find { |f| File.executable?(f) }
    skip "cmake is not installed (apt-get install -y cmake): skipping" unless cmake
    plain = without_preload(cmake, "-h")
    expect(plain.exitstatus).to eq(0), plain.describe
    expect(plain.stdout.bytesize).to be > 4096 # more than one pipe-sized buffer
    r = with_preload(cmake, "-h", env: { "MWRAP" => "dump_fd:1" })
    expect([r.stderr, r.exitstatus]).to eq([plain.stderr, 0]), r.describe
    rows = program_then_dump(r.stdout, plain.stdout)
    expect(rows).not_to be_empty
  end
end
