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
end
