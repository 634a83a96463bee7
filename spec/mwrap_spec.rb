# frozen_string_literal: true

require "spec_helper"
require "support/spawn_options"
require "stringio"
require "tempfile"

MwrapSpecHelpers.require_extension!
$LOAD_PATH.unshift(MwrapSpecHelpers::LIB) unless $LOAD_PATH.include?(MwrapSpecHelpers::LIB)
require "mwrap"

RSpec.describe Mwrap do
  it "has a version and an ABI version" do
    expect(Mwrap::VERSION).to eq("0.1.0")
    expect(Mwrap.abi_version).to be_a(Integer).and be > 0
  end

  it "defines its error classes in Ruby" do
    expect(Mwrap::Error.superclass).to eq(StandardError)
    expect(Mwrap::PreloadNotFound.superclass).to eq(Mwrap::Error)
  end

  describe ".preload_path" do
    it "is the absolute path of mwrap/libmwrap_preload.so on $LOAD_PATH" do
      Dir.mktmpdir do |dir|
        FileUtils.mkdir_p(File.join(dir, "mwrap"))
        so = File.join(dir, "mwrap", "libmwrap_preload.so")
        File.write(so, "")
        saved = $LOAD_PATH.dup
        begin
          $LOAD_PATH.replace([File.join(dir, "nonexistent"), dir, *saved])
          expect(Mwrap.preload_path).to eq(so)
        ensure
          $LOAD_PATH.replace(saved)
        end
      end
    end

    it "raises Mwrap::Error naming the file when it is nowhere on $LOAD_PATH" do
      saved = $LOAD_PATH.dup
      error = begin
        $LOAD_PATH.replace(["/nonexistent"])
        Mwrap.preload_path
      rescue Mwrap::Error => e
        e
      ensure
        $LOAD_PATH.replace(saved)
      end
      expect(error).to be_a(Mwrap::PreloadNotFound)
      expect(error.message).to match(%r{mwrap/libmwrap_preload\.so})
    end
  end

  context "without the preload (this process)" do
    before { skip "rspec itself runs under the preload" if Mwrap.preloaded? }

    it "is not preloaded" do
      expect(Mwrap.preloaded?).to be(false)
    end

    it "reports zero totals and generation" do
      expect(Mwrap.total_bytes_allocated).to eq(0)
      expect(Mwrap.total_bytes_freed).to eq(0)
      expect(Mwrap.current_generation).to eq(0)
    end

    it "yields nothing from each and returns nil" do
      yielded = []
      expect(Mwrap.each { |*row| yielded << row }).to be_nil
      expect(Mwrap.each(0) { |*row| yielded << row }).to be_nil
      expect(yielded).to be_empty
    end

    it "returns an Enumerator from each without a block" do
      enum = Mwrap.each
      expect(enum).to be_a(Enumerator)
      expect(enum.to_a).to eq([])
      expect(Mwrap.each(100).to_a).to eq([])
    end

    it "dumps nothing and returns nil" do
      Tempfile.create("mwrap-dump") do |f|
        expect(Mwrap.dump(f)).to be_nil
        expect(Mwrap.dump(f, 10)).to be_nil
        f.flush
        expect(File.size(f.path)).to eq(0)
      end
    end

    it "clears and resets without raising" do
      expect(Mwrap.clear).to be_nil
      expect(Mwrap.reset).to be_nil
    end

    it "has no pprof profile: nil" do
      expect(Mwrap.pprof).to be_nil
    end
  end

  describe "argument checking (with or without the preload)" do
    it "refuses a StringIO in dump, naming the class" do
      expect { Mwrap.dump(StringIO.new) }.to raise_error(TypeError, /StringIO/)
    end

    it "refuses any non-IO in dump, naming the class" do
      expect { Mwrap.dump("stderr") }.to raise_error(TypeError, /String/)
      expect { Mwrap.dump(2) }.to raise_error(TypeError, /Integer/)
    end

    it "raises ArgumentError naming a negative min" do
      expect { Mwrap.dump($stderr, -1) }.to raise_error(ArgumentError, /-1/)
      expect { Mwrap.each(-5) {} }.to raise_error(ArgumentError, /-5/)
      expect { Mwrap.each(-(2**70)) {} }.to raise_error(ArgumentError, /#{-(2**70)}/)
      expect { Mwrap.each(-5) }.to raise_error(ArgumentError, /-5/)
    end

    it "raises TypeError naming a non-Integer min" do
      expect { Mwrap.dump($stderr, "10") }.to raise_error(TypeError, /"10"/)
      expect { Mwrap.each(1.5) {} }.to raise_error(TypeError, /1\.5/)
      expect { Mwrap.each(:x) {} }.to raise_error(TypeError, /:x/)
    end

    it "accepts nil and huge Integers as min" do
      expect(Mwrap.each(nil) {}).to be_nil
      expect(Mwrap.each(2**70) {}).to be_nil
      expect(Mwrap.dump(nil, 2**70)).to be_nil
    end

    it "rejects extra arguments" do
      expect { Mwrap.each(1, 2) {} }.to raise_error(ArgumentError)
      expect { Mwrap.dump($stderr, 1, 2) }.to raise_error(ArgumentError)
    end
  end

  context "with a fake preload speaking the ABI (ext/mwrap-abi/examples/fake_preload.rs)" do
    def run_fake(code, env: {})
      run_ruby("-r", "mwrap", "-e", code, preload: fake_preload, env: env)
    end

    def fake_report(result)
      m = /^fake-preload: (.*)$/.match(result.stderr) or raise "no report in #{result.stderr.inspect}"
      m[1].split.to_h { |kv| k, v = kv.split("="); [k.to_sym, v.to_i] }
    end

    it "is preloaded, asks the preload to attach to Ruby once, and stays balanced" do
      r = run_fake("p Mwrap.preloaded?, Mwrap.current_generation, Mwrap.total_bytes_allocated, " \
                   "Mwrap.total_bytes_freed")
      expect(r.stdout).to eq("true\n42\n1732\n123\n")
      expect(fake_report(r)).to include(attach_calls: 1, quiet_depth: 0, unquiet_calls: 0)
    end

    it "hands over the preload's pprof bytes as a binary String" do
      r = run_fake("s = Mwrap.pprof; p s.bytes, s.encoding")
      expect(r.stdout).to eq("[31, 139]\n#<Encoding:ASCII-8BIT>\n")
    end

    it "yields every location above min, largest first, with all six counters" do
      r = run_fake("Mwrap.each { |*row| p row }; Mwrap.each(299) { |*row| p row }")
      expect(r.stdout.lines.map(&:chomp)).to eq([
        '["/app/b.rb:20", 1000, 1, 0, 0, 0]',
        '["/app/a.rb:10", 300, 3, 1, 5, 4]',
        '["[0xdead]", 300, 2, 2, 2, 1]',
        '["/usr/lib/libfoo.so(func+0x1c) [0x7f000000101c]", 50, 5, 5, 10, 3]',
        '["/app/\xFF.rb:1", 5, 1, 0, 0, 0]',
        '["/app/b.rb:20", 1000, 1, 0, 0, 0]',
        '["/app/a.rb:10", 300, 3, 1, 5, 4]',
        '["[0xdead]", 300, 2, 2, 2, 1]',
      ])
      report = fake_report(r)
      expect(report).to include(quiet_depth: 0, unquiet_calls: 0)
      expect(report[:max_depth]).to be >= 1
    end

    it "yields frozen, interned location strings" do
      r = run_fake(<<~'RUBY')
        a = Mwrap.each.map { |loc, *| loc }
        b = Mwrap.each.map { |loc, *| loc }
        p a.all?(&:frozen?), a.zip(b).all? { |x, y| x.equal?(y) }
        p a.first.equal?(-"/app/b.rb:20"), a.map(&:encoding).uniq
      RUBY
      expect(r.stdout).to eq("true\ntrue\ntrue\n[#<Encoding:UTF-8>, #<Encoding:ASCII-8BIT>]\n")
    end

    it "returns an Enumerator without a block, nil with one, and supports break" do
      r = run_fake(<<~'RUBY')
        e = Mwrap.each(100)
        p e.class, e.to_a.size, e.first[0]
        p Mwrap.each {}
        p(Mwrap.each { |loc, *| break loc })
      RUBY
      expect(r.stdout).to eq("Enumerator\n3\n\"/app/b.rb:20\"\nnil\n\"/app/b.rb:20\"\n")
      expect(fake_report(r)).to include(quiet_depth: 0)
    end

    it "propagates an exception raised by the block and leaves nothing entered" do
      r = run_fake('begin; Mwrap.each { raise "boom" }; rescue => e; p e.message; end')
      expect(r.stdout).to eq("\"boom\"\n")
      expect(fake_report(r)).to include(quiet_depth: 0, unquiet_calls: 0)
    end

    it "dumps in the 2.x format, largest first, to $stderr by default" do
      Tempfile.create("mwrap-dump") do |f|
        r = run_fake("File.open(#{f.path.dump}, 'w') { |io| Mwrap.dump(io, 60) }; Mwrap.dump")
        expect(File.read(f.path)).to eq(format("%16d %12d %s\n", 1000, 1, "/app/b.rb:20") +
                                        format("%16d %12d %s\n", 300, 3, "/app/a.rb:10") +
                                        format("%16d %12d %s\n", 300, 2, "[0xdead]"))
        rows = parse_dump(r.stderr.b.lines.grep_v(/^fake-preload/).join)
        expect(rows.map(&:total)).to eq([1000, 300, 300, 50, 5])
        expect(rows[3].location).to eq("/usr/lib/libfoo.so(func+0x1c) [0x7f000000101c]")
      end
    end

    it "writes through io.write (an IO subclass or $stdout)" do
      r = run_fake(<<~'RUBY')
        r, w = IO.pipe
        def w.write(*s) = (($calls ||= 0) && $calls += 1; super)
        Mwrap.dump(w, 999); w.close
        p r.read, $calls
        Mwrap.dump($stdout, 999)
      RUBY
      line = format("%16d %12d %s\n", 1000, 1, "/app/b.rb:20")
      expect(r.stdout).to eq("#{line.inspect}\n1\n#{line}")
    end

    it "zeroes every counter on clear and reset" do
      r = run_fake("Mwrap.clear; p Mwrap.each.to_a, Mwrap.total_bytes_allocated, " \
                   "Mwrap.total_bytes_freed; Mwrap.reset")
      expect(r.stdout).to eq("[]\n0\n0\n")
      expect(fake_report(r)).to include(reset_calls: 2)
    end

    it "warns once and reports nothing when the preload speaks another ABI version" do
      r = run_fake("p Mwrap.preloaded?, Mwrap.each.to_a, Mwrap.total_bytes_allocated; Mwrap.dump; " \
                   "Mwrap.clear", env: { "FAKE_MWRAP_ABI_VERSION" => "999" })
      expect(r.stdout).to eq("false\n[]\n0\n")
      warnings = r.stderr.lines.grep(/^mwrap:/)
      expect(warnings.size).to eq(1)
      expect(warnings.first).to match(/\b999\b/).and match(/\b#{Mwrap.abi_version}\b/)
      expect(fake_report(r)).to include(attach_calls: 0, reset_calls: 0)
    end

    it "treats a table smaller than its own as a mismatch" do
      r = run_fake("p Mwrap.preloaded?", env: { "FAKE_MWRAP_STRUCT_SIZE" => "16" })
      expect(r.stdout).to eq("false\n")
      expect(r.stderr.lines.grep(/^mwrap:/).size).to eq(1)
    end
  end

  context "under the real preload" do
    before { require_preload! }

    it "is preloaded and counts this process's allocations" do
      r = run_ruby("-r", "mwrap", "-e", <<~'RUBY')
        s = "x" * 100_000
        p Mwrap.preloaded?
        p Mwrap.total_bytes_allocated >= 100_000, Mwrap.total_bytes_freed.is_a?(Integer)
        p Mwrap.current_generation.is_a?(Integer)
        p Mwrap.each.any? { |loc, total, *| loc == "-e:1" && total >= 100_001 }
      RUBY
      expect(r.stderr).to eq("")
      expect(r.stdout).to eq("true\ntrue\ntrue\ntrue\ntrue\n")
    end

    it "yields six Integers after a frozen location, all above min" do
      r = run_ruby("-r", "mwrap", "-e", <<~'RUBY')
        rows = Mwrap.each(1000).to_a
        p rows.any?
        p rows.all? { |loc, *n| loc.frozen? && n.size == 5 && n.all?(Integer) && n[0] > 1000 }
        p rows.map { _2 } == rows.map { _2 }.sort.reverse
      RUBY
      expect(r.stdout).to eq("true\ntrue\ntrue\n")
    end

    it "dumps lines in the 2.x format to an IO" do
      Tempfile.create("mwrap-dump") do |f|
        r = run_ruby("-r", "mwrap", "-e", "File.open(#{f.path.dump}, 'w') { |io| Mwrap.dump(io, 4096) }")
        expect(r).to be_success
        rows = parse_dump(path: f.path)
        expect(rows).not_to be_empty
        expect(rows.map(&:total)).to all(be > 4096)
        expect(rows.map(&:total)).to eq(rows.map(&:total).sort.reverse)
      end
    end

    it "zeroes the counters on clear" do
      r = run_ruby("-r", "mwrap", "-e", <<~'RUBY')
        Mwrap.clear
        p Mwrap.each(10_000).to_a
      RUBY
      if MwrapSpawnOptions.gc_stress?
        # The GCs GC.stress forces allocate for themselves (native locations).
        expect(eval(r.stdout).reject { |loc, *| loc.include?("[0x") }).to eq([]) # rubocop:disable Security/Eval
      else
        expect(r.stdout).to eq("[]\n")
      end
    end
  end
end
