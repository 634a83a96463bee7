# frozen_string_literal: true

require "spec_helper"
require "support/mwrap_api"

MwrapSpecHelpers.require_extension!
$LOAD_PATH.unshift(MwrapSpecHelpers::LIB) unless $LOAD_PATH.include?(MwrapSpecHelpers::LIB)
require "mwrap"

RSpec.describe "Mwrap.quiet" do
  describe "depth and control flow (this process)" do
    it "yields the nesting depth and returns the block's value" do
      expect(Mwrap.quiet { |d| d }).to eq(1)
      expect(Mwrap.quiet { |a| Mwrap.quiet { |b| Mwrap.quiet { |c| [a, b, c] } } }).to eq([1, 2, 3])
      expect(Mwrap.quiet { :value }).to eq(:value)
      expect(Mwrap.quiet { nil }).to be_nil
    end

    it "propagates exceptions and unwinds the depth" do
      expect { Mwrap.quiet { Mwrap.quiet { raise IOError, "inner" } } }.to raise_error(IOError, "inner")
      expect(Mwrap.quiet { |d| d }).to eq(1)
    end

    it "unwinds on break, throw and next" do
      expect(Mwrap.quiet { |d| break d + 10 }).to eq(11)
      expect([1, 2].each { Mwrap.quiet { |d| Mwrap.quiet { break d } } }).to eq([1, 2])
      expect(catch(:out) { Mwrap.quiet { Mwrap.quiet { |d| throw :out, d } } }).to eq(2)
      expect([1].map { Mwrap.quiet { |d| next d * 5 } }).to eq([5])
      expect(Mwrap.quiet { |d| d }).to eq(1)
    end

    it "counts per thread" do
      depths = Mwrap.quiet { |outer| [outer, Thread.new { Mwrap.quiet { |d| d } }.value] }
      expect(depths).to eq([1, 1])
    end

    it "needs a block" do
      expect { Mwrap.quiet }.to raise_error(LocalJumpError, /block/)
    end
  end

  context "with the fake preload" do
    it "enters the preload's quiet section once per level and always leaves it" do
      r = run_ruby("-r", "mwrap", "-e", <<~'RUBY', preload: fake_preload)
        p(Mwrap.quiet { |a| Mwrap.quiet { |b| Mwrap.quiet { |c| [a, b, c] } } })
        begin
          Mwrap.quiet { Mwrap.quiet { raise "x" } }
        rescue RuntimeError
        end
        p(catch(:t) { Mwrap.quiet { throw :t, 1 } })
        p(Mwrap.quiet { Mwrap.quiet { break 2 } })
      RUBY
      expect(r.stdout).to eq("[1, 2, 3]\n1\n2\n")
      expect(r.stderr).to match(/quiet_depth=0 max_depth=3 /)
    end
  end

  context "under the real preload" do
    before { require_preload! }

    it "records nothing allocated inside the block on its thread and resumes afterwards" do
      Dir.mktmpdir do |dir|
        code = MwrapApiHelpers::SHOW + <<~'RUBY'
          require "mwrap"
          keep = []
          keep << ("helloworld" * 1000) # warm-up
          depth = Mwrap.quiet do |d|
            keep << ("helloworld" * 1000) # quiet
            Mwrap.quiet { |inner| keep << ("helloworld" * 1000) } # nested
            d
          end
          keep << ("helloworld" * 1000) # after
          begin
            Mwrap.quiet { keep << ("helloworld" * 1000); raise "boom" } # raises
          rescue RuntimeError
          end
          keep << ("helloworld" * 1000) # after-raise
          catch(:done) { Mwrap.quiet { keep << ("helloworld" * 1000); throw :done } } # throws
          keep << ("helloworld" * 1000) # after-throw
          other = Mwrap.quiet { Thread.new { ("helloworld" * 1000) }.value } # thread
          lines = %w[quiet nested after raises after-raise throws after-throw thread].to_h do |m|
            line = File.readlines(__FILE__).index { |l| l.include?("# #{m}\n") } + 1
            [m, Mwrap["#{__FILE__}:#{line}"]&.then { |l| [l.total, l.allocations] }]
          end
          show :depth, depth
          show :lines, lines
          show :other, other.bytesize
        RUBY
        _, out = run_api(code, dir: dir)
        v = values(out)
        expect(v[:depth]).to eq(1)
        lines = v[:lines]
        expect(lines["quiet"]).to be_nil
        expect(lines["nested"]).to be_nil
        expect(lines["after"]).to one_string_line
        expect(lines["after-raise"]).to one_string_line
        expect(lines["after-throw"]).to one_string_line
        # The String made inside the block before it raised or threw is not
        # recorded (Ruby may allocate on those lines outside the block).
        expect(lines["raises"]&.first.to_i).to be < 10_001
        expect(lines["throws"]&.first.to_i).to be < 10_001
        # Another thread is not quiet because this one is.
        total, allocations = lines["thread"]
        expect(total).to be >= 10_001
        expect(allocations).to be >= 1
      end
    end
  end
end
