# frozen_string_literal: true

require "spec_helper"
require "support/mwrap_api"

MwrapSpecHelpers.require_extension!
$LOAD_PATH.unshift(MwrapSpecHelpers::LIB) unless $LOAD_PATH.include?(MwrapSpecHelpers::LIB)
require "mwrap"

# Mwrap.memory_breakdown, Mwrap.memory_report and Mwrap.trim, in real
# processes (README: "Memory breakdown"). Each program prints what it
# measured with `show`; the examples compare.
module MemoryBreakdownPrograms
  PARTS = %i[rss anon_rss file_rss malloc_in_use malloc_overhead malloc_free_held malloc_not_resident
             ruby_heap iseq thread_stacks mmap_other unexplained].freeze
  # What a tracked process adds up to RSS (iseq and malloc_not_resident are
  # for information).
  SUMMED = %i[file_rss malloc_in_use malloc_overhead malloc_free_held ruby_heap thread_stacks mmap_other].freeze
  ADVICE = /^advice: .*MALLOC_ARENA_MAX.*Mwrap\.trim \(malloc_trim\).*jemalloc/.freeze

  # The Fiddle program of examples/fiddle_leak.rb, freeing every other
  # block (the even indices): half of the 100 MB stays live, the other half
  # is free inside glibc's heap, between live blocks.
  FIDDLE = MwrapApiHelpers::SHOW + <<~'RUBY'
    require "mwrap"
    require "fiddle"
    COUNT = 100_000
    SIZE = 1024
    ptrs = Array.new(COUNT)
    Fiddle.free(Fiddle.malloc(SIZE))
    before = Mwrap.memory_breakdown
    COUNT.times { |i| ptrs[i] = Fiddle.malloc(SIZE) }
    (0...COUNT).step(2) { |i| Fiddle.free(ptrs[i]) }
    show :before, before
    show :after, Mwrap.memory_breakdown
    report = Mwrap.memory_report
    show :report, report
    show :report_parts, Mwrap.memory_breakdown
  RUBY

  # Threads (so thread stacks exist), large malloc'd blocks (mmapped by
  # glibc) and 32 MiB of anonymous mmap, every page of it touched.
  MIXED = MwrapApiHelpers::SHOW + <<~'RUBY'
    require "mwrap"
    require "fiddle"
    libc = Fiddle::Handle::DEFAULT
    mmap = Fiddle::Function.new(libc["mmap"], [Fiddle::TYPE_VOIDP, Fiddle::TYPE_SIZE_T, Fiddle::TYPE_INT,
                                Fiddle::TYPE_INT, Fiddle::TYPE_INT, Fiddle::TYPE_LONG], Fiddle::TYPE_VOIDP)
    memset = Fiddle::Function.new(libc["memset"], [Fiddle::TYPE_VOIDP, Fiddle::TYPE_INT, Fiddle::TYPE_SIZE_T],
                                  Fiddle::TYPE_VOIDP)
    before = Mwrap.memory_breakdown
    ready = Queue.new
    stop = Queue.new
    threads = Array.new(4) { Thread.new { ready << ("x" * 100); stop.pop } }
    4.times { ready.pop }
    blocks = Array.new(8) { Fiddle.malloc(2 << 20).tap { |b| memset.call(b, 1, 2 << 20) } }
    len = 32 << 20
    map = mmap.call(nil, len, 3, 0x22, -1, 0) # PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS
    memset.call(map, 1, len)
    after = Mwrap.memory_breakdown
    fiber = Fiber.new { Fiber.yield Mwrap.memory_breakdown[:thread_stacks] }
    show :in_fiber, fiber.resume
    show :before, before
    show :after, after
    show :report, Mwrap.memory_report
    show :report_parts, Mwrap.memory_breakdown
    4.times { stop << 1 }
    threads.each(&:join)
    blocks.each { |b| Fiddle.free(b) }
  RUBY

  # 100,000 blocks of 1 KiB, then the first 90 % freed: the free memory is
  # one run of whole pages below live blocks, which glibc keeps until
  # malloc_trim gives it back.
  TRIM = MwrapApiHelpers::SHOW + <<~'RUBY'
    require "mwrap"
    require "fiddle"
    ptrs = Array.new(100_000) { Fiddle.malloc(1024) }
    90_000.times { |i| Fiddle.free(ptrs[i]) }
    before = Mwrap.memory_breakdown
    released = Mwrap.trim
    after = Mwrap.memory_breakdown
    show :trim, [before, released, after]
    show :again, Mwrap.trim
  RUBY
end

RSpec.describe "Mwrap.memory_breakdown" do

  def run_program(code, preload: :built, name: "script.rb")
    Dir.mktmpdir("mwrap-breakdown") do |dir|
      _, stdout = run_api(code, dir: dir, name: name, preload: preload)
      values(stdout)
    end
  end

  def percent(part, breakdown)
    (part * 100.0 / breakdown[:rss]).round(2)
  end

  # Every key, in order; Integers but for `nil_parts`.
  def expect_shape(breakdown, nil_parts: [])
    expect(breakdown.keys).to eq(MemoryBreakdownPrograms::PARTS)
    breakdown.each do |key, value|
      if nil_parts.include?(key)
        expect(value).to be_nil, "#{key} should be nil: #{breakdown}"
      else
        expect(value).to be_a(Integer), "#{key} should be an Integer: #{breakdown}"
        expect(value).to be >= 0, "#{key} is negative: #{breakdown}" unless key == :unexplained
      end
    end
  end

  # |unexplained| within 5 % of RSS, and unexplained really RSS minus the parts.
  def expect_adds_up(breakdown, summed: MemoryBreakdownPrograms::SUMMED)
    known = summed.sum { |k| breakdown[k] || 0 }
    expect(breakdown[:unexplained]).to eq(breakdown[:rss] - known)
    expect(breakdown[:unexplained].abs).to be <= 0.05 * breakdown[:rss],
                                           "unexplained #{percent(breakdown[:unexplained], breakdown)} % of RSS: #{breakdown}"
    expect(breakdown[:anon_rss] + breakdown[:file_rss]).to eq(breakdown[:rss])
    return unless breakdown[:malloc_not_resident]

    # Each anonymous page is in one part: what is left is the malloc parts
    # counting bytes that are not resident (beyond free memory, from which
    # they are taken), never pages of no part.
    expect(breakdown[:unexplained]).to be <= 0.01 * breakdown[:rss]
  end

  # The report names every part and has the advice line exactly when
  # free-but-held memory is more than a quarter of what is in use.
  def expect_report(report, breakdown, in_use: breakdown[:malloc_in_use])
    expect(report).to be_a(String)
    %w[rss anon_rss file_rss malloc_in_use malloc_overhead malloc_free_held ruby_heap iseq thread_stacks
       mmap_other unexplained].each { |k| expect(report).to include(k) }
    advise = breakdown[:malloc_free_held] > in_use / 4
    expect(report.match?(MemoryBreakdownPrograms::ADVICE)).to be(advise), "free_held #{breakdown[:malloc_free_held]}, in use #{in_use}:\n#{report}"
    advise
  end

  describe "arguments (this process)" do
    it "takes none, naturally" do
      expect { Mwrap.memory_breakdown(1) }.to raise_error(ArgumentError)
      expect { Mwrap.memory_report(nil) }.to raise_error(ArgumentError)
      expect { Mwrap.trim(0) }.to raise_error(ArgumentError)
    end
  end

  context "under the real preload" do
    before { require_preload! }

    it "shows the Fiddle program's live half as malloc_in_use and its freed half as free-held, adding up to RSS" do
      v = run_program(MemoryBreakdownPrograms::FIDDLE)
      before, after = v.values_at(:before, :after)
      expect_shape(before)
      expect_shape(after)
      # 50,000 live blocks of 1024 bytes on top of what was live before.
      expect(after[:malloc_in_use] - before[:malloc_in_use]).to be_within(0.03 * 51_200_000).of(51_200_000)
      # 50,000 free chunks of 1024 + 32 (mwrap's header) + glibc's 16.
      expect(after[:malloc_free_held]).to be >= 45_000_000
      # A bare Ruby process is small, and a megabyte of it is malloc'd but
      # never touched (the main thread's VM stack): the malloc parts are
      # byte-level, so that much of it is unexplained.
      expect_adds_up(before)
      expect_adds_up(after)
      expect(expect_report(v[:report], v[:report_parts])).to be(true)
    end

    it "puts thread stacks, fiber stacks, mmapped malloc blocks and a plain anonymous mmap in their parts" do
      v = run_program(MemoryBreakdownPrograms::MIXED)
      before, after = v.values_at(:before, :after)
      expect_shape(after)
      # The 32 MiB mapping is all resident and belongs to nothing else.
      expect(after[:mmap_other] - before[:mmap_other]).to be_within(2 << 20).of(32 << 20)
      # 8 blocks of 2 MiB, each its own glibc mapping: tracked, not mmap_other.
      expect(after[:malloc_in_use] - before[:malloc_in_use]).to be_within(1 << 20).of(16 << 20)
      # Four threads' stacks, then a fiber's (from Ruby's fiber pool).
      expect(after[:thread_stacks]).to be > before[:thread_stacks]
      expect(v[:in_fiber]).to be > after[:thread_stacks]
      expect_adds_up(after)
      expect(expect_report(v[:report], v[:report_parts])).to be(false)
    end

    it "trims: Mwrap.trim returns the RSS it gave back, and an Integer >= 0 again" do
      before, released, after = run_program(MemoryBreakdownPrograms::TRIM)[:trim]
      expect(released).to be > 40_000_000
      drop = before[:rss] - after[:rss]
      expect(released).to be_within(0.1 * drop).of(drop)
      # glibc still counts the trimmed pages as free, but they are not
      # resident: free-held (resident free memory) falls by as much, and
      # the parts still add up.
      expect(after[:malloc_not_resident] - before[:malloc_not_resident]).to be_within(0.1 * released).of(released)
      expect(before[:malloc_free_held] - after[:malloc_free_held]).to be_within(0.1 * released).of(released)
      expect_adds_up(before)
      expect_adds_up(after)
      expect(run_program(MemoryBreakdownPrograms::TRIM)[:again]).to be_a(Integer).and be >= 0
    end

    it "under jemalloc, reads malloc_free_held from jemalloc's statistics" do
      jemalloc = %w[/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/lib/aarch64-linux-gnu/libjemalloc.so.2
                    /usr/lib64/libjemalloc.so.2 /usr/lib/libjemalloc.so.2].find { |f| File.file?(f) }
      skip "libjemalloc.so.2 is not installed" unless jemalloc
      v = run_program(MemoryBreakdownPrograms::FIDDLE, preload: [:built, jemalloc])
      after = v[:after]
      expect_shape(after, nil_parts: %i[malloc_not_resident])
      expect(after[:malloc_in_use] - v[:before][:malloc_in_use]).to be_within(0.03 * 51_200_000).of(51_200_000)
      # Free regions of jemalloc's 1280-byte slabs, and dirty pages.
      expect(after[:malloc_free_held]).to be >= 45_000_000
      expect_adds_up(after)
    end
  end

  it "reports the bytes of Mwrap.iseq_memory as iseq, inside malloc_in_use, not summed" do
    code = MwrapApiHelpers::SHOW + <<~'RUBY'
      require "mwrap"
      m = Module.new
      2000.times { |i| m.module_eval("def m#{i}; [#{i}].sum; end", "tmpl.erb", 1) }
      b = Mwrap.memory_breakdown
      show :iseq, b[:iseq]
      show :groups, Mwrap.iseq_memory.sum { |_, (bytes, _)| bytes }
      show :in_use, b[:malloc_in_use]
      show :report, Mwrap.memory_report
    RUBY
    v = run_program(code)
    expect(v[:iseq]).to eq(v[:groups])
    expect(v[:iseq]).to be > 2000 * 300
    expect(v[:iseq]).to be < v[:in_use]
    expect(v[:report]).to match(/^  iseq \(in malloc\) +#{v[:iseq]} /)
  end

  context "without /proc (a tmpfs mounted over it, in a mount namespace of its own)" do
    it "reports nil for the parts that come from /proc, and raises nothing" do
      unshare = which("unshare")
      skip "no unshare(1)" unless unshare
      probe = capture({}, unshare, "--mount", "--map-root-user", "true")
      skip "no user namespaces here: #{probe.stderr.strip}" unless probe.success?
      code = MwrapApiHelpers::SHOW + <<~'RUBY'
        require "mwrap"
        show :breakdown, Mwrap.memory_breakdown
        show :report, Mwrap.memory_report
        show :trim, Mwrap.trim
      RUBY
      Dir.mktmpdir("mwrap-breakdown") do |dir|
        File.write(File.join(dir, "script.rb"), code)
        env, cmd = ruby_command([File.join(dir, "script.rb")])
        r = capture(env, unshare, "--mount", "--map-root-user", "sh", "-c",
                    'mount -t tmpfs none /proc && exec "$@"', "sh", *cmd)
        expect(r).to be_success, r.describe
        v = values(r.stdout)
        from_proc = %i[rss anon_rss file_rss malloc_not_resident thread_stacks mmap_other unexplained]
        expect_shape(v[:breakdown], nil_parts: from_proc)
        expect(v[:report]).to include("rss                          unknown")
        expect(v[:trim]).to be_nil
      end
    end
  end

  context "without the preload" do
    it "knows no tracked parts, and the rest adds up with glibc's own in-use total" do
      v = run_program(MemoryBreakdownPrograms::MIXED, preload: nil)
      before, after = v.values_at(:before, :after)
      tracked = %i[malloc_in_use malloc_overhead]
      expect_shape(before, nil_parts: tracked)
      expect_shape(after, nil_parts: tracked)
      expect(after[:mmap_other] - before[:mmap_other]).to be_within(2 << 20).of(32 << 20)
      expect(after[:thread_stacks]).to be > before[:thread_stacks]
      expect(after[:ruby_heap]).to be > 0
      # unexplained is RSS minus the known parts and mallinfo2's in-use
      # total, which stands in for malloc_in_use + malloc_overhead.
      expect(after[:unexplained].abs).to be <= 0.05 * after[:rss], after.to_s
      expect(after[:unexplained]).to be <= 0.01 * after[:rss]
      expect(run_program(MemoryBreakdownPrograms::TRIM, preload: nil)[:again]).to be_a(Integer).and be >= 0
    end
  end
end
