# frozen_string_literal: true

require_relative "hardening_helper"

# Item 13: the dump must not change the program's exit status. A C program
# (spec/hardening/native/exit_status.c) that prints nothing and exits 3,
# with MWRAP=dump_fd:1 and a stdout pipe whose reader has gone: the
# baseline's dump raised SIGPIPE and the program "exited" 141 (killed by
# SIGPIPE). Now SIGPIPE is held while the dump is written; the program
# exits 3 and one stderr line says the dump was cut short. The same for a
# dump to /dev/full.
RSpec.describe "hardening: the dump leaves the exit status alone" do
  include HardeningHelpers

  before do
    require_preload!
    need_cc!
  end

  let(:prog) { native("exit_status") }

  # Runs `cmd` with its stdout a pipe whose read end is closed before the
  # program may exit: the program waits for the end of its stdin, which
  # is closed only after the read end. Returns a TimedResult (stdout: "").
  # Not through SpecProcess: the dead stdout pipe is the condition under
  # test, and SpecProcess's stdout is a pipe it reads to the end; the time
  # limit, the group's stacks and the group kill are done here instead.
  def with_dead_stdout(env, *cmd, timeout: HardeningHelpers::TIMEOUT)
    start = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    in_r, in_w = IO.pipe
    out_r, out_w = IO.pipe
    err_r, err_w = IO.pipe
    env = MwrapSpecHelpers.clean_env(env)
    pid = Process.spawn(env, *cmd, in: in_r, out: out_w, err: err_w, pgroup: true)
    [in_r, out_w, err_w].each(&:close)
    err_reader = Thread.new { err_r.read }
    out_r.close # the reader goes
    in_w.close # then the program may exit
    waiter = Process.detach(pid)
    timed_out = waiter.join(timeout).nil?
    stacks = nil
    if timed_out
      stacks = SpecProcess.group_stacks(pid)
      begin
        Process.kill(:KILL, -pid)
      rescue Errno::ESRCH
        nil
      end
    end
    status = waiter.value
    TortureHelpers::TimedResult.new("", err_reader.value, status, timed_out,
                                    Process.clock_gettime(Process::CLOCK_MONOTONIC) - start, stacks,
                                    SpecProcess.command_line(env, cmd, Dir.pwd))
  end

  it "exits 3 when the dump goes to a stdout pipe whose reader has gone (dump_fd:1)" do
    plain = with_dead_stdout({ "LD_PRELOAD" => nil, "MWRAP" => "dump_fd:1" }, prog)
    expect([plain.exitstatus, plain.stderr]).to eq([3, ""]), plain.describe
    r = with_dead_stdout({ "LD_PRELOAD" => preload, "MWRAP" => "dump_fd:1" }, prog)
    expect(r.termsig).to be_nil, r.describe
    expect(r.exitstatus).to eq(3), r.describe
    expect(r.stderr).to match(/\Amwrap: the dump to dump_fd 1 was cut short after 0 of \d+ bytes: Broken pipe\n\z/)
  end

  it "exits 3 with one stderr line when the dump goes to /dev/full (dump_path:/dev/full)" do
    skip "no /dev/full here" unless File.exist?("/dev/full")
    plain = without_preload(prog, env: { "MWRAP" => "dump_path:/dev/full" })
    expect([plain.exitstatus, plain.stdout, plain.stderr]).to eq([3, "", ""]), plain.describe
    r = with_preload(prog, env: { "MWRAP" => "dump_path:/dev/full" })
    expect([r.exitstatus, r.stdout]).to eq([3, ""]), r.describe
    expect(r.stderr).to match(
      %r{\Amwrap: the dump to dump_path "/dev/full" was cut short after 0 of \d+ bytes: No space left on device\n\z}
    )
  end
end
