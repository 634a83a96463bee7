# frozen_string_literal: true

require_relative "hardening_helper"

# Item 6: `dump_fd:N` names the file that was open as N at start-up. The
# baseline looked the number up at exit: a program that had closed N and
# opened another file there got the dump spliced into that file; coreutils,
# which close stdout and stderr in an exit handler, lost a dump_fd:2 dump;
# and a descriptor that was never open was not reported. Now the preload
# keeps a private copy of N from start-up; a program that closes that copy
# too (closefrom) gets no dump and one stderr line, never a spliced file.
RSpec.describe "hardening: dump_fd is the file open at start-up" do
  include HardeningHelpers

  before { require_preload! }

  let(:tmp) { Dir.mktmpdir("mwrap-hardening-dump-fd") }
  after { FileUtils.rm_rf(tmp) }

  it "writes the dump to the file fd 3 was at start-up, not to the data file the program opened as fd 3" do
    need_cc!
    prog = native("fd_reuse", flags: ["-rdynamic"])
    data_text = "the program's own data, line 1\nand line 2\n"
    runs = { plain: nil, preloaded: nil }
    runs.each_key do |how|
      dump = File.join(tmp, "#{how}.dump")
      data = File.join(tmp, "#{how}.data")
      File.open(dump, "w") do |f|
        env = { "MWRAP" => "dump_fd:3" }
        runs[how] = if how == :plain
                      without_preload(prog, data, env: env, 3 => f)
                    else
                      with_preload(prog, data, env: env, 3 => f)
                    end
      end
      r = runs[how]
      expect([r.stdout, r.stderr, r.exitstatus]).to eq(["data on fd 3\n", "", 0]), r.describe
      expect(File.read(data)).to eq(data_text)
    end
    expect(File.read(File.join(tmp, "plain.dump"))).to eq("")
    rows = dump_rows(File.read(File.join(tmp, "preloaded.dump")))
    mine = rows.select { |row| row.location.include?("(keep_some+0x") }
    expect(mine.map { |row| [row.total, row.allocations] }).to eq([[10_000, 10]])
  end

  it "writes no dump, and says so, when the program closed every descriptor from 3 up and reused 3" do
    need_cc!
    prog = native("fd_reuse", flags: ["-rdynamic"])
    data_text = "the program's own data, line 1\nand line 2\n"
    line = "mwrap: dump_fd 3 was closed or reused before exit; dump not written\n"
    { plain: "", preloaded: line }.each do |how, stderr|
      dump = File.join(tmp, "#{how}.dump")
      data = File.join(tmp, "#{how}.data")
      File.open(dump, "w") do |f|
        args = [prog, data, "closefrom"]
        env = { "MWRAP" => "dump_fd:3" }
        r = how == :plain ? without_preload(*args, env: env, 3 => f) : with_preload(*args, env: env, 3 => f)
        expect([r.stdout, r.stderr, r.exitstatus]).to eq(["data on fd 3\n", stderr, 0]), r.describe
      end
      expect(File.read(data)).to eq(data_text)
      expect(File.read(dump)).to eq("")
    end
  end

  describe "dump_fd:2 with coreutils, which close stderr in an exit handler" do
    before do
      File.write(File.join(tmp, "input.txt"), "pear\napple\nfig\n")
      Dir.mkdir(File.join(tmp, "listed"))
      %w[one two three].each { |f| File.write(File.join(tmp, "listed", f), f) }
    end

    [%w[ls listed], %w[cat input.txt], %w[sort input.txt]].each do |cmd|
      it "puts the dump on stderr for `#{cmd.join(' ')}`, stdout unchanged" do
        plain = without_preload(*cmd, env: { "MWRAP" => "dump_fd:2" }, chdir: tmp)
        expect([plain.stderr, plain.exitstatus]).to eq(["", 0]), plain.describe
        expect(plain.stdout).not_to be_empty
        r = with_preload(*cmd, env: { "MWRAP" => "dump_fd:2" }, chdir: tmp)
        expect([r.stdout, r.exitstatus]).to eq([plain.stdout, 0]), r.describe
        rows = dump_rows(r.stderr)
        expect(rows).not_to be_empty, "no dump on stderr: #{r.stderr.inspect}"
        expect(rows.sum(&:allocations)).to be > 0
      end
    end
  end

  it "reports a dump_fd that was never open in one stderr line naming it; output unchanged" do
    line = "mwrap: ignoring bad MWRAP entries: dump_fd 7 is not an open file descriptor: Bad file descriptor\n"
    File.write(File.join(tmp, "input.txt"), "pear\napple\n")
    [%w[cat input.txt], [RbConfig.ruby, "-e", "puts 6 * 7"]].each do |cmd|
      # 7 => :close: closed even if whatever started rspec left it open.
      plain = without_preload(*cmd, env: { "MWRAP" => "dump_fd:7" }, chdir: tmp, 7 => :close)
      expect([plain.stderr, plain.exitstatus]).to eq(["", 0]), plain.describe
      r = with_preload(*cmd, env: { "MWRAP" => "dump_fd:7" }, chdir: tmp, 7 => :close)
      expect([r.stdout, r.stderr, r.exitstatus]).to eq([plain.stdout, line, 0]), r.describe
    end
  end
end
