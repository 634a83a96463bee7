# frozen_string_literal: true

require "spec_helper"
require "support/mwrap_api"

# Mwrap.pprof: the bytes the endpoint serves as /heap.pb.gz (a gzip'd
# pprof profile.proto), read back by `go tool pprof` (README: "pprof:
# /heap.pb.gz and Mwrap.pprof"). Needs `go` (Debian: golang-go, which
# .ci/setup installs).
RSpec.describe "Mwrap.pprof read by go tool pprof" do
  before do
    require_preload!
    skip "go is not installed (Debian: apt-get install golang-go), needed for `go tool pprof`" unless which("go")
  end

  let(:tmp) { Dir.mktmpdir("mwrap-pprof") }
  after { FileUtils.rm_rf(tmp) }

  # 1000 Strings of 10,000 bytes (10,001-byte buffers), all kept, from
  # the "# leak" line, called from the "# call" line.
  def script = <<~'RUBY'
    require "mwrap"
    KEEP = []
    def leak
      1000.times { KEEP << "x" * 10_000 } # leak
    end
    leak # call
    bytes = Mwrap.pprof
    File.binwrite(ARGV[0], bytes)
    show :encoding, bytes.encoding.name
    show :frozen, bytes.frozen?
  RUBY

  def code = MwrapApiHelpers::SHOW + script
  def path = File.join(tmp, "script.rb")
  def loc(marker) = "#{path}:#{line_of(code, "# #{marker}")}"

  # Writes the profile under MWRAP=`mwrap`; returns [file, values shown].
  def profile(mwrap)
    file = File.join(tmp, "heap-#{mwrap.tr(':,', '__')}.pb.gz")
    File.write(path, code)
    r = run_ruby(path, file, env: { "MWRAP" => mwrap })
    raise "script failed (#{r.status.inspect}):\n#{r.stderr}" unless r.success?

    [file, values(r.stdout)]
  end

  def pprof(*args)
    r = capture({ "HOME" => tmp }, "go", "tool", "pprof", *args, timeout: 120)
    raise "go tool pprof #{args.join(' ')} failed:\n#{r.stderr}" unless r.success?

    r.stdout
  end

  # The rows of `-top`: [flat, cum, name], in its order.
  TOP_ROW = /\A\s*(\S+)\s+\S+%\s+\S+%\s+(\S+)\s+\S+%\s+(.+)\z/.freeze

  def top(file, *args)
    pprof("-top", *args, file).lines.filter_map { |l| TOP_ROW.match(l.chomp)&.captures }
  end

  # pprof's byte units (`-unit=B` makes them plain).
  def bytes(text) = Integer(text.delete_suffix("B"))

  it "is a binary String holding gzip'd profile.proto, the leak first by inuse_space and alloc_space" do
    file, v = profile("")
    expect(v).to include(encoding: "ASCII-8BIT", frozen: false)
    expect(File.binread(file, 2).bytes).to eq([0x1f, 0x8b])

    inuse = top(file, "-sample_index=inuse_space", "-unit=B")
    expect(inuse.first[2]).to eq(loc("leak"))
    expect(bytes(inuse.first[0])).to be >= 10_001_000

    alloc = top(file, "-sample_index=alloc_space", "-unit=B")
    expect(alloc.first[2]).to eq(loc("leak"))
    expect(bytes(alloc.first[0])).to be >= 10_001_000

    # Ruby's own native locations may hold more (smaller) blocks.
    objects = top(file, "-sample_index=inuse_objects", "-nodecount=1000")
    leak_objects = objects.find { |row| row[2] == loc("leak") }
    expect(Integer(leak_objects[0])).to be_between(1000, 1100)
  end

  it "names the four sample types, inuse_space the default, period 1 byte" do
    file, = profile("")
    raw = pprof("-raw", file)
    expect(raw).to include("PeriodType: space bytes\nPeriod: 1\n")
    expect(raw).to include("alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes[dflt]")
    expect(pprof("-top", file)).to include("Type: inuse_space")
  end

  it "has the Ruby frames of a stack, under the native ones, with bt:8,ruby_bt:8" do
    file, = profile("bt:8,ruby_bt:8")
    # The leaf of a stack is the caller of malloc: a native frame. Showing
    # only Ruby lines makes the innermost Ruby frame the leaf.
    ruby = top(file, "-sample_index=inuse_space", "-unit=B", "-show=\\.rb:")
    expect(ruby.first[2]).to eq(loc("leak"))
    expect(bytes(ruby.first[0])).to be >= 10_001_000
    expect(top(file, "-sample_index=alloc_space", "-show=\\.rb:").first[2]).to eq(loc("leak"))

    # A trace: "VALUE   leaf" then one frame a line, the value column 11
    # wide, the frames from column 13.
    traces = pprof("-traces", "-sample_index=inuse_space", file).split(/^-+\+-+\n/).drop(1)
    leak = traces.find { |t| t.include?(loc("leak")) && t.lines.first[0, 11].strip.end_with?("MB") }
    expect(leak).not_to be_nil, "no trace of #{loc('leak')} holding megabytes:\n#{traces.first(3).join}"
    frames = leak.lines.map { |l| l[13..].to_s.strip }.reject(&:empty?)
    ruby_frames = frames.grep(/\.rb:\d+\z/)
    # The block, the method (both on the leak line), then the caller.
    expect(ruby_frames.first(3)).to eq([loc("leak"), loc("leak"), loc("call")])
    # Native frames come first (innermost), all before the Ruby ones.
    first_ruby = frames.index { |f| f.match?(/\.rb:\d+\z/) }
    expect(first_ruby).to be > 0
    expect(frames[first_ruby..]).to all(match(/\.rb:\d+\z/))
  end
end
