# frozen_string_literal: true

require_relative "stacks_helper"

# The issue's first case: examples/iseq_leak.rb compiles 2,000 methods
# with module_eval and keeps them; with bt:16 the module_eval line's
# largest live stack shows the compiler allocating.
RSpec.describe "MWRAP=bt:16 on examples/iseq_leak.rb" do
  before(:all) { require_preload! }

  let(:example) { File.join(MwrapSpecHelpers::EXAMPLES, "iseq_leak.rb") }
  let(:line) { "#{example}:#{line_of(File.read(example), 'module_eval(')}" }

  it "shows the ISeq compiler in the largest live stack, and the line's totals are its rows' sums" do
    Dir.mktmpdir do |dir|
      _, v = stack_values(<<~RUBY, dir: dir, mwrap: "bt:16")
        load #{example.dump}
        require "mwrap"
        GC.disable # nothing freed between the reads below
        loc = Mwrap[#{line.dump}]
        show :location, [loc.total, loc.allocations, loc.frees, loc.live_bytes, loc.live_count]
        each = []
        Mwrap.each { |name, *numbers| each << numbers if name == #{line.dump} }
        show :each, each
        show :rows, loc.stacks
        show :each_stack, Mwrap.each_stack.select { |row| row[0] == #{line.dump} }
      RUBY
      rows = v.fetch(:rows)
      expect(rows.size).to be > 1
      expect(rows.map(&:first).uniq).to eq([line])
      largest = rows.max_by { |row| row[6] }
      expect(largest[7]).to be >= 2000 # a block per method compiled, at least
      expect(largest[2]).to include(match(/\((rb_iseq_compile_node|rb_iseq_new_with_opt|rb_iseq_new_eval)\+0x\h+\)/))
      expect(largest[2].size).to be_between(2, 16)
      expect(largest[1]).to eq([]) # bt only: no Ruby frames recorded
      expect(v.fetch(:location)[3]).to be > 2_000 * 1_000 # a few MB of instruction sequences live
      sums = rows.map { |row| row[3..7] }.transpose.map(&:sum)
      expect(sums).to eq(v.fetch(:location))
      # Mwrap.each yields total, allocations, frees, mean_life, max_life for the line.
      expect(v.fetch(:each).map { |n| n[0, 3] }).to eq([v.fetch(:location)[0, 3]])
      expect(v.fetch(:each_stack).sort).to eq(rows.sort)
    end
  end
end
