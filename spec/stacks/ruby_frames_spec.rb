# frozen_string_literal: true

require_relative "stacks_helper"

# MWRAP=ruby_bt:N: the Ruby frames of an allocation, innermost first, as
# `path:line`; C methods are not frames; ruby_frames[0] stays the
# innermost frame when app_root charges an outer one.
RSpec.describe "MWRAP=ruby_bt" do
  before(:all) { require_preload! }

  # c allocates (String#* is a C method: no frame of its own); the call
  # site on the "# warm" line runs twice first (Ruby 3.1 allocates its
  # inline caches the first time a call site runs), then "# measured".
  NEST_SCRIPT = <<~RUBY
    def c
      "x" * 100_000 # c
    end

    def b
      c # b
    end

    def a
      b # a
    end
    2.times { a } # warm
    a # measured
    require "mwrap"
    GC.disable
    show :rows, Mwrap.each_stack.select { |row| row[0].start_with?(__FILE__) }
    show :recording, Mwrap.recording
    show :frozen, Mwrap.each_stack.first(50).all? { |r| r[1].frozen? && r[2].frozen? && r[1].all?(&:frozen?) }
  RUBY

  def nest_frames(path)
    %w[#\ c #\ b #\ a #\ measured].map { |marker| "#{path}:#{line_of(NEST_SCRIPT, marker)}" }
  end

  it "records c's line, b's and a's call lines and the caller's, in order, with the 100,001-byte String" do
    Dir.mktmpdir do |dir|
      path, v = stack_values(NEST_SCRIPT, dir: dir, mwrap: "ruby_bt:8")
      rows = v.fetch(:rows)
      measured = rows.select { |row| row[1] == nest_frames(path) }
      expect(measured.size).to eq(1), rows.inspect
      location, _, native, total, allocations, frees, live_bytes, live_count = measured.first
      expect(location).to eq("#{path}:#{line_of(NEST_SCRIPT, '# c')}")
      expect(native).to eq([])
      expect([total, allocations, frees, live_bytes, live_count]).to eq([100_001, 1, 0, 100_001, 1])
      # No row has a frame of String#* (a C method: it has no Ruby file).
      expect(rows.flat_map { |row| row[1] }).to all(start_with("#{path}:"))
      expect(v.fetch(:recording)).to eq(bt: 0, ruby_bt: 8, app_root: nil)
      expect(v.fetch(:frozen)).to be(true)
    end
  end

  it "keeps at most N frames, innermost first: ruby_bt:2 rows are ruby_bt:8 rows merged by their first two" do
    Dir.mktmpdir do |dir|
      path, eight = stack_values(NEST_SCRIPT, dir: dir, mwrap: "ruby_bt:8")
      _, two = stack_values(NEST_SCRIPT, dir: dir, mwrap: "ruby_bt:2")
      c_line = "#{path}:#{line_of(NEST_SCRIPT, '# c')}"
      merged = eight.fetch(:rows).select { |row| row[0] == c_line }.group_by { |row| row[1].first(2) }
                    .transform_values { |rows| rows.map { |row| row[3..7] }.transpose.map(&:sum) }
      got = two.fetch(:rows).select { |row| row[0] == c_line }.to_h { |row| [row[1], row[3..7]] }
      expect(got).to eq(merged)
      expect(got.fetch(nest_frames(path).first(2))[0]).to be >= 300_003 # the warm-up's and the measured call's
    end
  end

  it "keeps ruby_frames[0] innermost when app_root charges an outer frame" do
    Dir.mktmpdir do |dir|
      app = File.join(dir, "app")
      Dir.mkdir(app)
      lib = File.join(dir, "lib")
      Dir.mkdir(lib)
      # c lives outside the app: its allocation goes to b's call line.
      File.write(File.join(lib, "c.rb"), "def c\n  \"x\" * 100_000\nend\n")
      code = "require_relative '../lib/c'\n#{NEST_SCRIPT.sub(/\Adef c\n.*\nend\n/, "\n\n\n")}"
      path, v = stack_values(code, dir: app, mwrap: "ruby_bt:8,app_root:#{app}")
      measured = v.fetch(:rows).select { |row| row[1].last == "#{path}:#{line_of(code, '# measured')}" && row[3] >= 100_000 }
      expect(measured.size).to eq(1), v.fetch(:rows).inspect
      expect(measured.first[0]).to eq("#{path}:#{line_of(code, '# b')}")
      expect(measured.first[1]).to eq(["#{File.join(lib, 'c.rb')}:2",
                                       *%w[#\ b #\ a #\ measured].map { |m| "#{path}:#{line_of(code, m)}" }])
      expect(measured.first[3..7]).to eq([100_001, 1, 0, 100_001, 1])
    end
  end
end
