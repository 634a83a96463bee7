# frozen_string_literal: true

require "spec_helper"
require "support/mwrap_api"

MwrapSpecHelpers.require_extension!
$LOAD_PATH.unshift(MwrapSpecHelpers::LIB) unless $LOAD_PATH.include?(MwrapSpecHelpers::LIB)
require "mwrap"

RSpec.describe Mwrap::HeapPageBody do
  describe "without the preload (this process)" do
    before { skip "rspec runs under the preload" if Mwrap.preloaded? }

    it "yields no page and returns 0; has no page size" do
      expect(described_class.each { raise "yielded" }).to eq(0)
      expect(described_class.each.to_a).to eq([])
      expect(described_class.page_size).to be_nil
    end

    it "reports empty spans as in mwrap 2.x: Infinity, stddev 0.0" do
      inf = Float::INFINITY
      expect(described_class.stat).to eq(
        lifespan_max: inf, lifespan_min: inf, lifespan_mean: inf, lifespan_stddev: 0.0,
        deathspan_max: inf, deathspan_min: inf, deathspan_mean: inf, deathspan_stddev: 0.0,
        resurrects: 0
      )
    end
  end

  describe ".stat's argument" do
    it "fills and returns the Hash it is given, keeping other keys" do
      h = { other: 1 }
      expect(described_class.stat(h)).to equal(h)
      expect(h.keys).to eq([:other, *MwrapApiHelpers::HEAP_STAT_KEYS])
      expect(described_class.stat(nil).keys).to eq(MwrapApiHelpers::HEAP_STAT_KEYS)
    end

    it "raises TypeError naming a non-Hash" do
      expect { described_class.stat([]) }.to raise_error(TypeError, /must be a Hash, not \[\] \(Array\)/)
      expect { described_class.stat(1) }.to raise_error(TypeError, /not 1 \(Integer\)/)
      expect { described_class.stat({}, {}) }.to raise_error(ArgumentError)
    end

    it "raises FrozenError for a frozen Hash" do
      expect { described_class.stat({}.freeze) }.to raise_error(FrozenError)
    end
  end

  it "cannot be instantiated" do
    expect { described_class.new }.to raise_error(NoMethodError)
    expect { described_class.allocate }.to raise_error(TypeError)
  end

  context "with the fake preload (exact ABI values)" do
    it "yields every page by address with its generation, returns the count, and converts stats" do
      r = run_ruby("-r", "mwrap", "-e", MwrapApiHelpers::SHOW + <<~'RUBY', preload: fake_preload)
        pages = []
        show :count, Mwrap::HeapPageBody.each { |address, generation| pages << [address, generation] }
        show :pages, pages
        show :enum, Mwrap::HeapPageBody.each.to_a == pages
        show :page_size, Mwrap::HeapPageBody.page_size
        show :stat, Mwrap::HeapPageBody.stat
        show :break, Mwrap::HeapPageBody.each { |a, _| break a }
      RUBY
      expect(r).to be_success, r.stderr
      v = values(r.stdout)
      expect(v[:count]).to eq(3)
      expect(v[:pages]).to eq([[0x7f0000010000, 1], [0x7f0000020000, 3], [0x7f0000030000, 5]])
      expect(v[:enum]).to be(true)
      expect(v[:page_size]).to eq(65_536)
      expect(v[:stat]).to eq(
        lifespan_max: 9, lifespan_min: 2, lifespan_mean: 5.5, lifespan_stddev: 2.5,
        deathspan_max: 6, deathspan_min: 6, deathspan_mean: 6.0, deathspan_stddev: 0.0,
        resurrects: 1
      )
      expect(v[:break]).to eq(0x7f0000010000)
      expect(r.stderr).to match(/quiet_depth=0 .*unquiet_calls=0/)
    end

    it "maps the preload's NaN means of empty spans to Infinity and its stddev to 0.0" do
      r = run_ruby("-r", "mwrap", "-e", MwrapApiHelpers::SHOW + "show :stat, Mwrap::HeapPageBody.stat",
                   preload: fake_preload, env: { "FAKE_MWRAP_NO_HEAP" => "1" })
      inf = Float::INFINITY
      expect(values(r.stdout)[:stat]).to eq(
        lifespan_max: inf, lifespan_min: inf, lifespan_mean: inf, lifespan_stddev: 0.0,
        deathspan_max: inf, deathspan_min: inf, deathspan_mean: inf, deathspan_stddev: 0.0,
        resurrects: 0
      )
    end
  end

  context "under the real preload" do
    before { require_preload! }

    it "yields exactly GC.stat(:heap_allocated_pages) aligned pages, before and after the heap grows" do
      Dir.mktmpdir do |dir|
        _, out = run_api(MwrapApiHelpers::SHOW + <<~'RUBY', dir: dir)
          require "mwrap"
          size = Mwrap::HeapPageBody.page_size
          check = lambda do |key|
            GC.start
            # The block allocates no object, so the heap cannot grow in between.
            n = 0
            aligned = sorted = true
            newest = prev = -1
            count = Mwrap::HeapPageBody.each do |address, generation|
              n += 1
              aligned &&= (address % size).zero?
              sorted &&= address > prev
              prev = address
              newest = generation if generation > newest
            end
            gc_pages = GC.stat(:heap_allocated_pages)
            show key, [count, n, gc_pages, aligned, sorted, newest <= GC.count]
          end
          show :page_size, size
          check.(:start)
          keep = Array.new(2_000_000) { Object.new }
          check.(:grown)
          show :kept, keep.size
          keep = nil
          5.times { GC.start }
          check.(:shrunk)
          show :stat, Mwrap::HeapPageBody.stat
        RUBY
        v = values(out)
        expect(v[:page_size]).to be >= 16_384
        expect(v[:page_size] & (v[:page_size] - 1)).to eq(0) # a power of two
        %i[start grown shrunk].each do |key|
          count, yielded, gc_pages, aligned, sorted, generations_ok = v[key]
          expect(count).to eq(yielded)
          # Under GC.stress, GCs forced inside `each` free pages after they were copied.
          expect(gc_pages).to(gc_stress? ? be <= count : eq(count), "#{key}: #{v[key].inspect}")
          expect(aligned).to be(true), "#{key}: a page is not aligned to #{v[:page_size]}"
          expect(sorted).to be(true), "#{key}: pages are not yielded by increasing address"
          expect(generations_ok).to be(true), "#{key}: a page was born after GC.count"
        end
        # 2 million objects need thousands of pages (at most 64 KiB / 40 bytes per page).
        expect(v[:grown][0] - v[:start][0]).to be > 2_000_000 * 40 / v[:page_size]
        stat = v[:stat]
        expect(stat.keys).to eq(MwrapApiHelpers::HEAP_STAT_KEYS)
        expect(stat[:resurrects]).to be_a(Integer)
        # Freeing 2 million objects let Ruby free pages: lifespans are finite.
        expect(v[:shrunk][0]).to be < v[:grown][0]
        expect(stat.values_at(:lifespan_max, :lifespan_min)).to all(be_a(Integer))
        expect(stat[:lifespan_min]).to be <= stat[:lifespan_max]
        expect(stat[:lifespan_mean]).to be_a(Float).and be_between(stat[:lifespan_min], stat[:lifespan_max])
        expect(stat[:lifespan_stddev]).to be_a(Float).and be >= 0
      end
    end

    describe "MWRAP=dump_heap:MASK at exit" do
      def dump_heap(mask, dir)
        path = File.join(dir, "dump-#{mask}.txt")
        script = File.join(dir, "heap.rb")
        File.write(script, <<~'RUBY')
          require "mwrap"
          keep = Array.new(200_000) { Object.new }
          GC.start
          print Mwrap::HeapPageBody.each {}
        RUBY
        r = run_ruby(script, env: { "MWRAP" => "dump_path:#{path},dump_heap:#{mask}" })
        expect(r).to be_success, r.stderr
        text = File.exist?(path) ? File.read(path) : ""
        lines = text.lines
        {
          live: Integer(r.stdout),
          pages: lines.grep(/\A0x\h+\t\d+\n\z/),
          stats: lines.grep(/\A[a-z_]+: /).to_h { |l| k, v = l.split(": ", 2); [k.to_sym, v.strip] },
          locations: lines.grep(MwrapSpecHelpers::DUMP_LINE),
          all: lines
        }
      end

      it "1: appends the summary to the location dump" do
        Dir.mktmpdir do |dir|
          d = dump_heap(1, dir)
          expect(d[:locations]).not_to be_empty
          expect(d[:pages]).to be_empty
          expect(d[:stats].keys).to include(*MwrapApiHelpers::HEAP_STAT_KEYS)
          expect(Integer(d[:stats][:live_pages])).to eq(d[:live]) if d[:stats].key?(:live_pages)
        end
      end

      it "2: one line per live page, as many as HeapPageBody.each saw at the end" do
        Dir.mktmpdir do |dir|
          d = dump_heap(2, dir)
          expect(d[:locations]).not_to be_empty
          expect(d[:stats]).to be_empty
          expect(d[:pages].size).to eq(d[:live])
        end
      end

      it "7: only the heap output (summary and pages), no location lines" do
        Dir.mktmpdir do |dir|
          d = dump_heap(7, dir)
          expect(d[:locations]).to be_empty
          expect(d[:pages].size).to eq(d[:live])
          expect(d[:stats].keys).to include(*MwrapApiHelpers::HEAP_STAT_KEYS)
          expect(d[:all].size).to eq(d[:pages].size + d[:stats].size)
        end
      end
    end
  end
end
