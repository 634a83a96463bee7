# frozen_string_literal: true

require "spec_helper"
require "support/mwrap_api"

MwrapSpecHelpers.require_extension!
$LOAD_PATH.unshift(MwrapSpecHelpers::LIB) unless $LOAD_PATH.include?(MwrapSpecHelpers::LIB)
require "mwrap"

RSpec.describe "Mwrap[] and Mwrap::SourceLocation" do
  describe "argument checking (this process, no preload needed)" do
    it "raises TypeError naming nil and other non-Strings" do
      expect { Mwrap[nil] }.to raise_error(TypeError, "location must be a String, not nil (NilClass)")
      expect { Mwrap[42] }.to raise_error(TypeError, /not 42 \(Integer\)/)
      expect { Mwrap[:"x.rb:1"] }.to raise_error(TypeError, /:"x\.rb:1" \(Symbol\)/)
    end

    it "raises Mwrap::InvalidLocation, an ArgumentError, for an empty String or a NUL byte" do
      expect(Mwrap::InvalidLocation.ancestors).to include(ArgumentError)
      expect(Mwrap::InvalidLocation.ancestors).not_to include(Mwrap::Error)
      expect { Mwrap[""] }.to raise_error(Mwrap::InvalidLocation, 'location must not be empty: ""')
      expect { Mwrap["x.rb\0:1"] }.to raise_error(ArgumentError, /NUL byte: "x\.rb\\u0000:1"/)
    end

    it "takes what an object's to_str returns, and checks it" do
      good = Object.new
      def good.to_str = "x.rb:1"
      bad = Object.new
      def bad.to_str = 1
      expect { Mwrap[good] }.not_to raise_error
      expect { Mwrap[bad] }.to raise_error(TypeError, /#<Object/)
    end

    it "wants exactly one argument" do
      expect { Mwrap[] }.to raise_error(ArgumentError)
      expect { Mwrap["a:1", "b:2"] }.to raise_error(ArgumentError)
    end

    it "is nil for every location without the preload" do
      skip "rspec runs under the preload" if Mwrap.preloaded?
      expect(Mwrap["#{__FILE__}:1"]).to be_nil
      expect(Mwrap["[0x1234]"]).to be_nil
    end

    it "cannot be instantiated from Ruby" do
      expect { Mwrap::SourceLocation.new }.to raise_error(NoMethodError, /new/)
      expect { Mwrap::SourceLocation.allocate }.to raise_error(TypeError, /allocator undefined/)
    end
  end

  context "with the fake preload (exact ABI values)" do
    it "reads every counter of a location and yields its live allocations" do
      r = run_ruby("-r", "mwrap", "-e", MwrapApiHelpers::SHOW + <<~'RUBY', preload: fake_preload)
        loc = Mwrap["/app/a.rb:10"]
        show :counters, [loc.total, loc.allocations, loc.frees, loc.max_lifespan, loc.live_bytes,
                         loc.live_count, loc.mean_lifespan]
        show :name, [loc.name, loc.name.frozen?, loc.name.equal?(-"/app/a.rb:10")]
        yielded = []
        show :each_returns_self, loc.each { |size, generation| yielded << [size, generation] }.equal?(loc)
        show :yielded, yielded
        show :enum, [loc.each.class, loc.each.to_a]
        show :inspect, loc.inspect
        show :infinite, Mwrap["/app/b.rb:20"].mean_lifespan
        show :native, Mwrap["/usr/lib/libfoo.so(func+0x1c) [0x7f000000101c]"].name
        show :unknown, [Mwrap["/app/nowhere.rb:1"], Mwrap["no colon"]]
        show :equal, [Mwrap["/app/a.rb:10"] == loc, Mwrap["/app/a.rb:10"].eql?(loc),
                      Mwrap["/app/a.rb:10"].hash == loc.hash, Mwrap["/app/b.rb:20"] == loc, loc == 1]
      RUBY
      expect(r).to be_success, r.stderr
      v = values(r.stdout)
      expect(v[:counters]).to eq([300, 3, 1, 4, 199, 2, 5.0])
      expect(v[:name]).to eq(["/app/a.rb:10", true, true])
      expect(v[:each_returns_self]).to be(true)
      expect(v[:yielded]).to eq([[100, 7], [99, 8]])
      expect(v[:enum]).to eq([Enumerator, [[100, 7], [99, 8]]])
      expect(v[:inspect]).to eq('#<Mwrap::SourceLocation "/app/a.rb:10" total=300 allocations=3 frees=1 ' \
                                "live_bytes=199 live_count=2>")
      expect(v[:infinite]).to eq(Float::INFINITY)
      expect(v[:native]).to eq("/usr/lib/libfoo.so(func+0x1c) [0x7f000000101c]")
      expect(v[:unknown]).to eq([nil, nil])
      expect(v[:equal]).to eq([true, true, true, false, false])
      expect(r.stderr).to match(/quiet_depth=0 .*unquiet_calls=0/)
    end

    it "propagates an exception from the each block and supports break" do
      r = run_ruby("-r", "mwrap", "-e", <<~'RUBY', preload: fake_preload)
        loc = Mwrap["/app/a.rb:10"]
        begin
          loc.each { raise "boom" }
        rescue => e
          p e.message
        end
        p(loc.each { |size, _| break size })
      RUBY
      expect(r.stdout).to eq("\"boom\"\n100\n")
      expect(r.stderr).to match(/quiet_depth=0 /)
    end
  end

  context "under the real preload" do
    before { require_preload! }

    it "finds a warm line with exactly one 10001-byte String and stays current" do
      Dir.mktmpdir do |dir|
        code = MwrapApiHelpers::SHOW + <<~'RUBY'
          require "mwrap"
          keep = []
          keep << ("helloworld" * 1000) # cold
          keep << ("helloworld" * 1000) # warm
          loc = Mwrap["#{__FILE__}:#{__LINE__ - 1}"]
          show :before, [loc.total, loc.allocations, loc.frees, loc.live_bytes, loc.live_count,
                         loc.max_lifespan, loc.mean_lifespan]
          show :live, loc.each.to_a
          show :gc_count, GC.count
          show :name, [loc.name, loc.name.frozen?, Mwrap[loc.name] == loc]
          keep.clear
          GC.start
          show :after, [loc.total, loc.allocations, loc.frees, loc.live_bytes, loc.live_count,
                        loc.mean_lifespan.finite?, loc.max_lifespan.class]
          show :live_after, loc.each.to_a
          show :unknown, [Mwrap["#{__FILE__}:999"], Mwrap["#{__FILE__}"]]
        RUBY
        path, out = run_api(code, dir: dir)
        v = values(out)
        expect(v[:before]).to eq([10_001, 1, 0, 10_001, 1, 0, Float::INFINITY])
        expect(v[:live].size).to eq(1)
        size, generation = v[:live].first
        expect(size).to eq(10_001)
        expect(generation).to be_between(0, v[:gc_count])
        expect(v[:name]).to eq(["#{path}:#{line_of(code, '# warm')}", true, true])
        expect(v[:after]).to eq([10_001, 1, 1, 0, 0, true, Integer])
        expect(v[:live_after]).to eq([])
        expect(v[:unknown]).to eq([nil, nil])
      end
    end

    it "finds every location each yields by its printed name, native ones also by address" do
      Dir.mktmpdir do |dir|
        _, out = run_api(MwrapApiHelpers::SHOW + <<~'RUBY', dir: dir)
          require "mwrap"
          names = Mwrap.each.map { |name, *| name }
          show :all_found, names.all? { |n| (l = Mwrap[n]) && l.name.equal?(n) }
          native = names.find { |n| n.match?(/\[0x\h+\]\z/) }
          addr = native[/\[(0x\h+)\]\z/, 1]
          show :native, [Mwrap[native] == Mwrap["[#{addr}]"], Mwrap[native] == Mwrap[addr],
                         Mwrap[addr].name == native]
        RUBY
        v = values(out)
        expect(v[:all_found]).to be(true)
        expect(v[:native]).to eq([true, true, true])
      end
    end

    it "iterates live allocations while 4 other threads allocate and free there" do
      Dir.mktmpdir do |dir|
        code = MwrapApiHelpers::SHOW + <<~'RUBY'
          require "mwrap"
          churn_line = __LINE__ + 1
          def churn(n) = ("x" * n)
          3.times { churn(200) } # warm the line up, then forget what that left live
          Mwrap.clear
          stop = false
          holding = Queue.new # each thread says when it holds its first block
          threads = 4.times.map do |t|
            Thread.new do
              Thread.current.abort_on_exception = true # fail the script, not hang it
              held = []
              i = 0
              until stop
                held << churn(100 + ((i * 37 + t) % 4900))
                holding << t if i.zero?
                held.shift if held.size > 50
                i += 1
                Thread.pass if (i % 64).zero?
              end
            end
          end
          4.times { holding.pop }
          loc = Mwrap["#{__FILE__}:#{churn_line}"]
          raise "no live block at the churn line: #{loc.inspect}" unless loc && loc.live_count > 0
          sizes = []
          results = 300.times.map { loc.each { |size, gen| sizes << size; gen.is_a?(Integer) || raise("gen #{gen}") } }
          stop = true
          threads.each(&:join)
          show :self, results.all? { |r| r.equal?(loc) }
          show :seen, sizes.size
          show :range, sizes.minmax
        RUBY
        _, out = run_api(code, dir: dir)
        v = values(out)
        expect(v[:self]).to be(true)
        expect(v[:seen]).to be > 0
        min, max = v[:range]
        # churn(n) allocates an n+1 byte buffer (n >= 100, so never embedded).
        expect(min).to be >= 101
        expect(max).to be <= 5001
      end
    end
  end
end
