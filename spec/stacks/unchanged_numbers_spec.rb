# frozen_string_literal: true

require_relative "stacks_helper"

# Turning stacks on changes no per-location number: Mwrap.each and the
# text dump give a deterministic script's lines the same numbers with
# bt:16,ruby_bt:16 as with bt:00,ruby_bt:00 (MWRAP of the same length:
# Ruby allocates differently when its environment differs in length).
# Totals and allocations only: frees (and so lifespans) differ between two
# runs of the same command, stacks off too, since Ruby's conservative
# stack scan keeps a few different objects alive each time.
RSpec.describe "per-location numbers with stacks on" do
  before(:all) { require_preload! }

  DETERMINISTIC_SCRIPT = <<~'RUBY'
    def build(n) = Array.new(n) { |i| "item #{i}" * 3 }
    def index(items) = items.each_with_index.to_h { |s, i| [s, i] }
    kept = []
    20.times { |round| kept << index(build(100 + round)) }
    text = kept.map { |h| h.keys.join(",") }.join("\n")
    words = text.split(/[, ]/).tally
    big = "z" * 300_000
    freed = "w" * 50_000
    freed = nil
    require "mwrap"
    GC.disable
    lines = []
    Mwrap.each do |location, total, allocations, *|
      lines << [location, [total, allocations]] if location.start_with?("#{__FILE__}:")
    end
    show :each, lines.sort
    show :kept, [kept.size, words.size, big.size, freed]
  RUBY

  # Mwrap.each's and the text dump's numbers of the script's lines before
  # it loads mwrap (the Mwrap calls themselves allocate a few Ruby objects
  # more with bt on, which moves where Ruby's next heap page is charged).
  def numbers(dir, mwrap, dump)
    path, v = stack_values(DETERMINISTIC_SCRIPT, dir: dir, mwrap: "#{mwrap},dump_path:#{dump}")
    workload = ->(location) { location.delete_prefix("#{path}:").to_i < line_of(DETERMINISTIC_SCRIPT, 'require "mwrap"') }
    rows = parse_dump(path: dump).select { |row| row.location.start_with?("#{path}:") && workload.call(row.location) }
    [v.fetch(:each).select { |location, _| workload.call(location) }, rows.map(&:to_a).sort]
  end

  it "are the same with bt:16,ruby_bt:16 as with stacks off, exactly, for the script's own lines" do
    Dir.mktmpdir do |dir|
      off_each, off_dump = numbers(dir, "bt:00,ruby_bt:00", File.join(dir, "dump.0"))
      on_each, on_dump = numbers(dir, "bt:16,ruby_bt:16", File.join(dir, "dump.1"))
      expect(off_each.size).to be >= 8
      expect(off_each.map { |_, n| n[0] }.max).to be >= 300_001
      expect(on_each).to eq(off_each)
      expect(off_dump.size).to be >= 8
      expect(on_dump).to eq(off_dump)
    end
  end
end
