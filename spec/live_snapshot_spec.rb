# frozen_string_literal: true

require "spec_helper"
require "support/mwrap_api"

MwrapSpecHelpers.require_extension!
$LOAD_PATH.unshift(MwrapSpecHelpers::LIB) unless $LOAD_PATH.include?(MwrapSpecHelpers::LIB)
require "mwrap"

RSpec.describe "Mwrap.live_snapshot" do
  describe "arguments (this process)" do
    it "is an empty Hash without the preload" do
      skip "rspec runs under the preload" if Mwrap.preloaded?
      expect(Mwrap.live_snapshot).to eq({})
      expect(Mwrap.live_snapshot(0)).to eq({})
    end

    it "checks min_live_bytes like each checks min, naming the value" do
      expect { Mwrap.live_snapshot(-1) }.to raise_error(ArgumentError, "min_live_bytes must not be negative: -1")
      expect { Mwrap.live_snapshot("1") }.to raise_error(TypeError, 'min_live_bytes must be an Integer, not "1" (String)')
      expect { Mwrap.live_snapshot(1, 2) }.to raise_error(ArgumentError)
      expect(Mwrap.live_snapshot(nil)).to be_a(Hash)
      expect(Mwrap.live_snapshot(2**70)).to eq({})
    end
  end

  context "with the fake preload (exact ABI values)" do
    it "maps each location holding more than min live bytes to [live_bytes, live_count, allocations, frees, total]" do
      r = run_ruby("-r", "mwrap", "-e", MwrapApiHelpers::SHOW + <<~'RUBY', preload: fake_preload)
        snap = Mwrap.live_snapshot
        show :all, snap
        show :above, Mwrap.live_snapshot(199)
        show :keys, [snap.keys.all?(&:frozen?), snap.keys.first.equal?(-"/app/b.rb:20"),
                     snap.keys.first.equal?(Mwrap.each.first.first)]
      RUBY
      expect(r).to be_success, r.stderr
      v = values(r.stdout)
      expect(v[:all]).to eq(
        "/app/b.rb:20" => [1000, 1, 1, 0, 1000],
        "/app/a.rb:10" => [199, 2, 3, 1, 300],
        "/app/\xFF.rb:1".b => [5, 1, 1, 0, 5]
      )
      expect(v[:above]).to eq("/app/b.rb:20" => [1000, 1, 1, 0, 1000])
      expect(v[:keys]).to eq([true, true, true])
      expect(r.stderr).to match(/quiet_depth=0 .*unquiet_calls=0/)
    end
  end

  context "under the real preload" do
    before { require_preload! }

    it "reports a warm line holding one 10001-byte String exactly, filtered by live bytes" do
      Dir.mktmpdir do |dir|
        code = MwrapApiHelpers::SHOW + <<~'RUBY'
          require "mwrap"
          keep = Array.new(4)
          keep[0] = ("helloworld" * 1000) # cold
          keep[1] = ("helloworld" * 1000) # warm
          loc = "#{__FILE__}:#{__LINE__ - 1}"
          snap = Mwrap.live_snapshot
          show :row, snap[loc]
          show :min, [Mwrap.live_snapshot(10_000).key?(loc), Mwrap.live_snapshot(10_001).key?(loc)]
          show :shape, snap.all? { |k, v| k.frozen? && v.size == 5 && v.all?(Integer) && v[0].positive? }
          show :consistent, snap.all? { |_, (bytes, count, allocations, frees, total)|
            bytes <= total && count <= allocations && count.positive? }
          show :interned, snap.keys.all? { |k| k.equal?(-k) }
          show :above, Mwrap.live_snapshot(4096).values.all? { |bytes, *| bytes > 4096 }
          keep.clear
          GC.start
          show :freed, Mwrap.live_snapshot.key?(loc)
        RUBY
        _, out = run_api(code, dir: dir)
        v = values(out)
        expect(v[:row]).to eq([10_001, 1, 1, 0, 10_001])
        expect(v[:min]).to eq([true, false])
        expect(v.values_at(:shape, :consistent, :interned, :above)).to all(be(true))
        expect(v[:freed]).to be(false)
      end
    end
  end
end
