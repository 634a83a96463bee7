# frozen_string_literal: true

require "spec_helper"
require "support/spawn_options"
require "tmpdir"

# Exact numbers for allocations made by Ruby code under the real preload.
RSpec.describe "attribution of Ruby allocations" do
  before { require_preload! }

  # Prints "LINE total allocations frees" for each location in the script.
  let(:report) do
    <<~'RUBY'
      Mwrap.each do |loc, total, allocations, frees|
        file, line = loc.split(/:(?=\d+\z)/)
        puts "#{line} #{total} #{allocations} #{frees}" if file == __FILE__
      end
    RUBY
  end

  def rows_by_line(stdout)
    stdout.lines.to_h do |l|
      line, *counts = l.split.map { |s| Integer(s) }
      [line, counts]
    end
  end

  it "charges a String buffer to its line: exactly 10001 bytes, 1 allocation, 1 free when warm" do
    Dir.mktmpdir do |dir|
      _path, r = run_script(<<~RUBY + report, dir: dir)
        require "mwrap"
        ("helloworld" * 1000).clear
        ("helloworld" * 1000).clear
      RUBY
      expect(r.stderr).to eq("")
      rows = rows_by_line(r.stdout)
      expect(rows[3]).to eq([10_001, 1, 1])
      cold_total, cold_allocations, cold_frees = rows.fetch(2)
      expect(cold_total).to be >= 10_001
      expect(cold_allocations).to be >= 1
      expect(cold_frees).to be >= 1
      expect(cold_total > 10_001 || cold_allocations > 1).to be(true),
                                                             "cold line #{rows[2]} should have more than the warm one"
    end
  end

  it "charges the Fiddle leak to the Fiddle.malloc line of examples/fiddle_leak.rb" do
    example = File.join(MwrapSpecHelpers::EXAMPLES, "fiddle_leak.rb")
    source = File.readlines(example)
    malloc_line = source.index { |l| l =~ /\.times.*Fiddle\.malloc/ } + 1
    free_line = source.index { |l| l =~ /\.times.*Fiddle\.free/ } + 1
    r = run_ruby("-r", "mwrap", "-e", <<~RUBY, example)
      load ARGV[0]
      Mwrap.each do |loc, total, allocations, frees|
        puts "MWRAP \#{loc.split(":").last} \#{total} \#{allocations} \#{frees}" if loc.start_with?(ARGV[0] + ":")
      end
    RUBY
    expect(r.stdout).to include("fiddle_leak: allocated 100000")
    rows = r.stdout.lines.grep(/\AMWRAP /).to_h do |l|
      line, *counts = l.split.drop(1).map { |s| Integer(s) }
      [line, counts]
    end
    total, allocations, frees = rows.fetch(malloc_line)
    expect(total).to be >= 102_400_000
    expect(total).to be < 102_400_000 + 64 * 1024
    # Under `rake spec:gc_stress` mwrap is loaded first and the heap grows
    # differently: a few more heap page headers may land on this line.
    expect(allocations).to be_between(100_000, MwrapSpawnOptions.gc_stress? ? 100_030 : 100_010)
    expect(frees).to eq(50_000)
    # Freeing allocates nothing worth a location of its own.
    expect(rows.fetch(free_line, [0]).first).to be < 64 * 1024
  end
end
