# frozen_string_literal: true

require "spec_helper"
require "support/mwrap_api"
require "json"

# Stacks on (MWRAP=bt:16,ruby_bt:16) where stacks are hard to take or to
# name: forked children, threads with small stacks, objects dlclosed (and
# deleted) before their frames are named, allocations without the GVL
# while GC.compact moves Ruby's objects.
RSpec.describe "stacks: robustness with bt:16,ruby_bt:16" do
  before do
    require_preload!
    skip "no C compiler (#{CBuildCache.cc})" unless CBuildCache.cc?
  end

  let(:tmp) { Dir.mktmpdir("mwrap-stacks-robust") }
  after { FileUtils.rm_rf(tmp) }

  native = File.join(__dir__, "native")
  let(:native) { native }

  def stacks_env(extra = "")
    { "MWRAP" => "bt:16,ruby_bt:16#{extra}" }
  end

  # The function name of a native frame ("/x/libfoo.so(name+0x1c) [0x…] at f.c:3" => "name").
  def fn(frame)
    frame[/\A.*?\((\w+)\+0x\h+\) \[0x\h+\]/, 1]
  end

  it "forks: the child's table is its own, the parent's is unaffected" do
    code = MwrapApiHelpers::SHOW + <<~'RUBY'
      require "mwrap"
      # The rows of these script lines, one read of the table.
      def rows(*lines)
        table = Mwrap.each_stack.to_a
        lines.to_h { |l| [l, table.select { |r| r[0] == "#{__FILE__}:#{l}" }.map { |r| r[1..] }] }
      end
      keep = []
      keep << "p" * 100_000 # before
      BEFORE, CHILD, AFTER = @BEFORE@, @CHILD@, @AFTER@ # the lines of the markers
      before_rows = rows(BEFORE)[BEFORE]
      rd, wr = IO.pipe
      done_rd, done_wr = IO.pipe
      pid = fork do
        wr.close
        done_rd.close
        keep << "c" * 70_000 # child
        rd.read # returns once the parent has run its "after" line
        done_wr.write(Marshal.dump(rows(BEFORE, CHILD, AFTER)))
        done_wr.close
        exit!(0)
      end
      rd.close
      done_wr.close
      keep << "q" * 30_000 # after
      wr.close
      child = Marshal.load(done_rd.read)
      status = Process.wait2(pid)[1]
      show :status, status.exitstatus
      show :child, child.values
      show :before_then, before_rows
      show :parent, rows(BEFORE, CHILD, AFTER).values
    RUBY
    line = ->(marker) { code.lines.index { |l| l.include?("# #{marker}") } + 1 }
    code = code.gsub(/@(\w+)@/) { line.call(Regexp.last_match(1).downcase).to_s }
    path, out = run_api(code, dir: tmp, env: stacks_env)
    v = values(out)
    at = ->(marker) { "#{path}:#{line.call(marker)}" }
    # [innermost Ruby frame, total, allocations, frees] of each row
    brief = ->(rows) { rows.map { |r| [r[0][0], r[2], r[3], r[4]] } }
    expect(v[:status]).to eq(0)
    before = v[:before_then]
    # the String, and the Array's growth, all at the line
    expect(brief.call(before)).to include([at.call("before"), 100_001, 1, 0])
    expect(before.map { |r| r[0][0] }.uniq).to eq([at.call("before")])
    expect(before.map { |r| r[1].size }).to all(be_between(1, 16))
    child_before, child_child, child_after = v[:child]
    # the child sees the parent's rows as they were at the fork, and its own line
    expect(child_before).to eq(before)
    expect(brief.call(child_child)).to include([at.call("child"), 70_001, 1, 0])
    expect(child_child.map { |r| r[0][0] }.uniq).to eq([at.call("child")])
    expect(child_after).to eq([])
    # the parent never sees the child's line; its own rows are unchanged
    parent_before, parent_child, parent_after = v[:parent]
    expect(parent_child).to eq([])
    expect(parent_before).to eq(before)
    expect(brief.call(parent_after)).to include([at.call("after"), 30_001, 1, 0])
  end

  it "records 16 frames in threads with 32 KiB and 16 KiB stacks, exactly, as the program runs without it" do
    prog = CBuildCache.build(File.join(native, "stack_threads.c"), libs: ["-pthread"])
    plain = capture({}, prog)
    expect([plain.stdout, plain.stderr, plain.exitstatus]).to eq(["32k: ok\n16k: ok\n", "", 0])
    dump = File.join(tmp, "dump.json")
    r = capture({ "LD_PRELOAD" => built_preload }.merge(stacks_env(",dump_format:json,dump_path:#{dump}")), prog)
    expect([r.stdout, r.stderr, r.exitstatus]).to eq(["32k: ok\n16k: ok\n", "", 0]), r.describe
    stacks = JSON.parse(File.read(dump))["locations"].flat_map { |l| l["stacks"] }
    mine = stacks.select { |s| fn(s["native"].first.to_s) == "stack_leaf" }
    by_caller = mine.group_by { |s| s["native"].map { |f| fn(f) }.take_while { |n| n != "start_thread" } }
                    .transform_values { |ss| ss.sum { |s| s["total"] } }
    # 2 threads x 1,000 blocks of 16 + i % 200 bytes (freed), 5 frames deep; 2 x 7 kept blocks of 4,321
    expect(by_caller).to eq(
      %w[stack_leaf stack_mid stack_mid stack_mid stack_mid stack_mid stack_worker] => 231_000,
      %w[stack_leaf stack_worker] => 60_494
    )
    expect(mine.sum { |s| s["allocations"] }).to eq(2014)
    expect(mine.sum { |s| s["frees"] }).to eq(2000)
    expect(mine.sum { |s| s["live_bytes"] }).to eq(60_494)
    expect(mine.flat_map { |s| s["ruby"] }).to eq([])
    expect(mine.map { |s| s["native"].first }).to all(match(/ at \S*stack_threads\.c:\d+\z/))
  end

  # A Ruby script that Fiddle-loads the churn library (or a copy) and
  # calls its churn_alloc(size) (keeping the block), dlcloses it, and
  # then reads the stacks of those blocks.
  def churn_script = MwrapApiHelpers::SHOW + <<~'RUBY'
    require "mwrap"
    require "fiddle"
    lib, gone = ARGV
    def churn(path, size)
      handle = Fiddle::Handle.new(path)
      alloc = Fiddle::Function.new(handle["churn_alloc"], [Fiddle::TYPE_SIZE_T], Fiddle::TYPE_VOIDP)
      alloc.call(size) # churn call
      handle.close # dlclose
    end
    20.times { churn(lib, 12_345) }
    churn(gone, 23_456) # gone
    File.delete(gone)
    churn_rows = Mwrap.each_stack.to_a.select { |r| r[2].any? { |f| f.include?("churn_alloc") } }
    show :named, churn_rows.map { |r| [r[1][0], r[2][0], r[3], r[4]] }
    # the deleted copy's blocks: the same sizes, from the "# gone" call
    gone_line = "#{__FILE__}:#{__LINE__ - 5}"
    show :gone, Mwrap.each_stack.to_a.select { |r| r[1][1] == gone_line && (r[3] % 23_456).zero? }
                     .map { |r| [r[1][0], r[2][0], r[3], r[4]] }
  RUBY

  it "names the frames of a dlclosed library from its file, and a deleted one's as path(+0xOFFSET)" do
    lib = CBuildCache.build("#include <stdlib.h>\nvoid *churn_alloc(size_t n) { return malloc(n); }\n",
                            name: "stackchurn", shared: true, flags: ["-O0"])
    gone = File.join(tmp, "libgone.so")
    FileUtils.cp(lib, gone)
    path = File.join(tmp, "script.rb")
    File.write(path, churn_script)
    r = run_ruby(path, lib, gone, env: stacks_env)
    expect([r.stderr, r.exitstatus]).to eq(["", 0]), r.describe
    v = values(r.stdout)
    call = "#{path}:#{line_of(churn_script, '# churn call')}"
    named = v[:named]
    expect(named.map { |n| n[0] }.uniq).to eq([call])
    expect(named.map { |n| n[1] }).to all(match(/\A#{Regexp.escape(lib)}\(churn_alloc\+0x\h+\) \[0x\h+\]/))
    expect(named.sum { |n| n[2] }).to eq(20 * 12_345)
    expect(named.sum { |n| n[3] }).to eq(20)
    # the deleted copy: its symbols cannot be read any more; the path and
    # load address the dlclose hook recorded still give the offset (README)
    expect(v[:gone].map { |n| [n[0], n[2], n[3]] }).to eq([[call, 23_456, 1]])
    expect(v[:gone][0][1]).to match(/\A#{Regexp.escape(gone)}\(\+0x\h+\) \[0x\h+\]\z/)
  end

  it "records allocations made without the GVL on threads while the main thread runs GC.compact" do
    skip "GC.compact is not supported here" unless GC.respond_to?(:compact)
    lib = CBuildCache.build(File.join(native, "gvl_free_alloc.c"), shared: true)
    code = MwrapApiHelpers::SHOW + <<~'RUBY'
      require "mwrap"
      require "fiddle"
      handle = Fiddle::Handle.new(ARGV[0])
      LOOP = Fiddle::Function.new(handle["gvl_free_loop"], [Fiddle::TYPE_LONG], Fiddle::TYPE_LONG)
      KEEP = Fiddle::Function.new(handle["gvl_free_keep"], [Fiddle::TYPE_SIZE_T], Fiddle::TYPE_VOIDP)
      def work(n) = LOOP.call(n) # loop call
      def keep(size) = KEEP.call(size) # keep call
      threads = 4.times.map do |i|
        Thread.new do
          done = 0
          10.times { done += work(5_000); keep(1000 + i) }
          done
        end
      end
      waiter = Thread.new { threads.map(&:value) }
      compactions = 0
      until waiter.join(0) # nil while a thread is still working
        GC.compact
        compactions += 1
      end
      show :done, waiter.value
      show :compactions, compactions.positive?
      rows = Mwrap.each_stack.to_a
      pick = ->(name) { rows.select { |r| r[2][0].to_s.include?("(#{name}+") } }
      show :loop, pick.call("gvl_free_loop").map { |r| [r[0], r[1][0], r[4], r[5]] }
      show :keep, pick.call("gvl_free_keep").map { |r| [r[0], r[1][0], r[3], r[4], r[6]] }
    RUBY
    path = File.join(tmp, "gvl.rb")
    File.write(path, code)
    r = run_ruby(path, lib, env: stacks_env)
    expect([r.stderr, r.exitstatus]).to eq(["", 0]), r.describe
    v = values(r.stdout)
    loop_call = "#{path}:#{line_of(code, '# loop call')}"
    keep_call = "#{path}:#{line_of(code, '# keep call')}"
    expect(v[:done]).to eq([50_000] * 4)
    expect(v[:compactions]).to be(true)
    loop_rows = v[:loop]
    # charged to the Ruby line that released the GVL, with that line as the innermost Ruby frame
    expect(loop_rows.map { |r| r[0..1] }.uniq).to eq([[loop_call, loop_call]])
    expect(loop_rows.sum { |r| r[2] }).to eq(4 * 10 * 5_000)
    expect(loop_rows.sum { |r| r[3] }).to eq(4 * 10 * 5_000)
    keep_rows = v[:keep]
    expect(keep_rows.map { |r| r[0..1] }.uniq).to eq([[keep_call, keep_call]])
    expect(keep_rows.sum { |r| r[2] }).to eq(10 * (1000 + 1001 + 1002 + 1003))
    expect(keep_rows.sum { |r| r[3] }).to eq(40)
    expect(keep_rows.sum { |r| r[4] }).to eq(10 * (1000 + 1001 + 1002 + 1003))
  end
end
