# frozen_string_literal: true

require "spec_helper"
require "tmpdir"

# Where allocations go in the places where asking Ruby is subtle: fibers,
# at_exit blocks, finalizers run at exit, threads without the GVL, and
# teardown. Each runs a real process under the preload and reads its dump.
RSpec.describe "attribution in fibers, at_exit, finalizers and GVL-less calls" do
  before { require_preload! }

  def dump_rows(dir, code, env: {})
    dump = File.join(dir, "dump.txt")
    path, r = run_script(code, dir: dir, env: { "MWRAP" => "dump_path:#{dump}" }.merge(env))
    expect(r.stderr).to eq("")
    expect(r.status.success?).to be(true)
    [path, r, parse_dump(path: dump)]
  end

  def row_at(rows, location)
    rows.find { |row| row.location == location } or
      raise "no dump line for #{location}; have #{rows.map(&:location).grep(/script/).inspect}"
  end

  it "charges a fiber's allocation to the line inside the fiber" do
    Dir.mktmpdir do |dir|
      path, _r, rows = dump_rows(dir, <<~RUBY)
        keep = []
        f = Fiber.new do
          keep << ("f" * 20_000)
          Fiber.yield
        end
        f.resume
      RUBY
      row = row_at(rows, "#{path}:3")
      expect(row.total).to be >= 20_001
      expect(row.total).to be < 20_001 + 4096
    end
  end

  it "charges allocations in at_exit blocks and exit-time finalizers to their lines" do
    Dir.mktmpdir do |dir|
      path, _r, rows = dump_rows(dir, <<~RUBY)
        $keep = []
        at_exit do
          $keep << ("a" * 30_000)
        end
        obj = Object.new
        ObjectSpace.define_finalizer(obj, proc do
          $keep << ("z" * 40_000)
        end)
        obj = nil
      RUBY
      expect(row_at(rows, "#{path}:3").total).to be_between(30_001, 30_001 + 4096)
      expect(row_at(rows, "#{path}:7").total).to be_between(40_001, 40_001 + 4096)
    end
  end

  it "charges a malloc made by C code called without the GVL to the Ruby line that released it" do
    Dir.mktmpdir do |dir|
      so = begin
        CBuildCache.build(<<~C, name: "mwtest", shared: true, cflags: %w[-O1])
          #include <stdlib.h>
          void *mw_native_malloc(size_t n) { return malloc(n); }
        C
      rescue CBuildCache::Error => e
        skip "no C compiler: #{e.message}"
      end
      path, _r, rows = dump_rows(dir, <<~RUBY)
        require "fiddle"
        lib = Fiddle.dlopen(#{so.dump})
        nogvl = Fiddle::Function.new(lib["mw_native_malloc"], [Fiddle::TYPE_SIZE_T], Fiddle::TYPE_VOIDP, need_gvl: false)
        gvl = Fiddle::Function.new(lib["mw_native_malloc"], [Fiddle::TYPE_SIZE_T], Fiddle::TYPE_VOIDP, need_gvl: true)
        2.times { nogvl.call(1); gvl.call(1) } # warm both call sites
        $keep = 3.times.map { nogvl.call(12_345) }
        $keep += 3.times.map { gvl.call(12_345) }
      RUBY
      # With the GVL held, the helper's malloc is charged to the Ruby line
      # calling it, as every allocation under the GVL is; released, it
      # lands there too (before, it went to the helper's native address).
      expect(rows.map(&:location).grep(/libmwtest/)).to eq([])
      released = row_at(rows, "#{path}:6")
      held = row_at(rows, "#{path}:7")
      # (releasing the GVL costs Ruby a few small allocations of its own)
      expect(released.total - held.total).to be_between(0, 1024)
      expect(held.total).to be >= 3 * 12_345
    end
  end

  it "survives heavy allocation during teardown, in threads, fibers and a Ractor" do
    Dir.mktmpdir do |dir|
      _path, r, rows = dump_rows(dir, <<~RUBY, env: { "RUBYOPT" => "-W0" })
        threads = 4.times.map { |i| Thread.new { 2_000.times { "t" * (i * 100 + 1) } } }
        fibers = 50.times.map { Fiber.new { 100.times { Fiber.yield("f" * 300) } } }
        fibers.each { |f| 10.times { f.resume } }
        r = Ractor.new { 1_000.times.map { "r" * 200 }.size }
        at_exit { 10_000.times { "x" * 100 } }
        100.times { ObjectSpace.define_finalizer(Object.new, proc { "y" * 1000 }) }
        threads.each(&:join)
        puts r.take
      RUBY
      expect(r.stdout).to eq("1000\n")
      expect(rows).not_to be_empty
    end
  end
end
