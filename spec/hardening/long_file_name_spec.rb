# frozen_string_literal: true

require_relative "hardening_helper"

# Item 14: the profiler's memory must not grow with the length of file
# names. One eval'd file with a 64 KiB name and 2,000 allocating lines
# (each its own location): the baseline kept the name once per location,
# about +126 MiB of RSS; now each file name is kept once.
RSpec.describe "hardening: profiler memory and long file names" do
  include HardeningHelpers

  before { require_preload! }

  let(:script) { File.join(__dir__, "scripts", "long_file_name.rb") }

  def rss_kib(result)
    expect(result.success?).to be(true), result.describe
    m = /\Astrings 2000 rss_kib (\d+)\n/.match(result.stdout) or raise "unexpected output: #{result.stdout.inspect}"
    Integer(m[1])
  end

  it "adds less than 20 MiB of RSS for 2,000 locations in one file with a 64 KiB name" do
    plain = rss_kib(ruby_run(script, preloaded: false, timeout: 60))
    under = rss_kib(ruby_run(script, preloaded: true, timeout: 60))
    expect(under - plain).to be < 20 * 1024, "RSS #{plain} KiB plain, #{under} KiB under the preload"
  end

  it "still records each of those lines (Mwrap[])" do
    r = ruby_run(script, "api", preloaded: true, timeout: 60)
    expect([r.stderr, r.exitstatus]).to eq(["", 0]), r.describe
    found = r.stdout[/^lines (.*)$/, 1]
    # Line 2 also holds the Array's first growth; the others one 101-byte String each.
    lines = found && found.scan(/\[(\d+), (\d+)\]/).map { |t, a| [Integer(t), Integer(a)] }
    expect(lines&.size).to eq(3), r.stdout
    expect(lines.drop(1)).to eq([[101, 1], [101, 1]])
    expect(lines.first.first).to be >= 101
  end
end
