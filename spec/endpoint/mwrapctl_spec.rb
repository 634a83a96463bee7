# frozen_string_literal: true

require "socket"
require "spec_helper"

# exe/mwrapctl without a live endpoint: usage errors, stale sockets,
# processes that cannot answer.
RSpec.describe "mwrapctl" do
  EXE_CTL = File.expand_path("../../exe/mwrapctl", __dir__)

  def ctl(*args, env: {})
    capture(env, RbConfig.ruby, EXE_CTL, *args)
  end

  it "names a usage error and exits 2" do
    {
      [] => "mwrapctl: no command",
      %w[frob] => 'mwrapctl: unknown command "frob"',
      %w[--bogus ls] => "mwrapctl: unknown option --bogus",
      %w[get 12x /json] => 'mwrapctl: PID must be a number, not "12x"',
      %w[get 12] => "mwrapctl: get needs a PATH (e.g. /json)",
      %w[get 12 json] => 'mwrapctl: PATH must start with /: "json"',
      %w[top 12 -n 0] => 'mwrapctl: -n takes a positive number, not "0"',
      %w[top 12 --sort size] => 'mwrapctl: --sort takes live, total or growth, not "size"',
      %w[--dir] => "mwrapctl: --dir needs a directory"
    }.each do |args, line|
      r = ctl(*args)
      expect(r.exitstatus).to eq(2), args.inspect
      expect(r.stderr.lines.first).to eq("#{line}\n"), args.inspect
      expect(r.stderr).to include("Usage: mwrapctl")
    end
    expect(ctl("--help").then { |r| [r.exitstatus, r.stdout.start_with?("Usage: mwrapctl")] }).to eq([0, true])
  end

  it "removes stale sockets in ls, and says a dead or missing endpoint cannot answer (exit 1)" do
    Dir.mktmpdir do |dir|
      stale = File.join(dir, "999999.sock")
      UNIXServer.new(stale).close # bound, then nobody listens: connect is refused
      File.write(File.join(dir, "notes.txt"), "")
      r = ctl("ls", dir)
      expect(r.exitstatus).to eq(0)
      expect(r.stdout).to eq("PID             RSS  COMMAND\n")
      expect(r.stderr).to eq("mwrapctl: removed stale socket #{stale} (no process answers on it)\n")
      expect(Dir.children(dir)).to eq(["notes.txt"])

      r = ctl("--dir", dir, "get", "999999", "/json")
      expect([r.exitstatus, r.stderr]).to eq([1, "mwrapctl: no endpoint for pid 999999: #{stale} does not exist\n"])
      UNIXServer.new(stale).close
      r = ctl("get", "999999", "/json", env: { "MWRAP" => "dump_fd:2,socket_dir:#{dir}" })
      expect(r.exitstatus).to eq(1)
      expect(r.stderr).to eq("mwrapctl: pid 999999 does not answer on #{stale} (a stale socket: `mwrapctl ls` removes it)\n")
      r = ctl("ls", File.join(dir, "none"))
      expect([r.exitstatus, r.stderr]).to eq([1, "mwrapctl: #{File.join(dir, 'none')}: no such directory\n"])
    end
  end
end
