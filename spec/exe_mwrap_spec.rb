# frozen_string_literal: true

require "spec_helper"
require "tmpdir"
require File.join(MwrapSpecHelpers::LIB, "mwrap", "version")

RSpec.describe "exe/mwrap" do
  let(:preload) { File.join(MwrapSpecHelpers::LIB, "mwrap", "libmwrap_preload.so") }

  # `ruby -e 'puts 6*7'` with `env` must print, say and exit under exe/mwrap
  # what it does under the preload alone; returns the preload-alone run.
  def expect_same_as_preload_alone(env)
    command = [RbConfig.ruby, "-e", "puts 6*7"]
    direct = capture(env.merge("LD_PRELOAD" => preload), *command)
    expect(direct.stdout).to eq("42\n")
    wrapped = run_mwrap(*command, env: env)
    expect([wrapped.stdout, wrapped.stderr, wrapped.exitstatus]).to eq([direct.stdout, direct.stderr, direct.exitstatus])
    direct
  end

  describe "usage" do
    it "prints usage on stderr and exits 2 without arguments" do
      r = run_mwrap
      expect(r.exitstatus).to eq(2)
      expect(r.stdout).to eq("")
      expect(r.stderr).to match(/\AUsage: mwrap COMMAND/)
    end

    it "prints usage on stdout and exits 0 for --help and -h" do
      %w[--help -h].each do |opt|
        r = run_mwrap(opt)
        expect(r.exitstatus).to eq(0)
        expect(r.stdout).to match(/\AUsage: mwrap COMMAND/)
        expect(r.stderr).to eq("")
      end
    end

    it "prints its version" do
      r = run_mwrap("--version")
      expect(r.exitstatus).to eq(0)
      expect(r.stdout).to eq("mwrap #{Mwrap::VERSION}\n")
    end

    it "rejects an unknown option before the command with usage and exit 2" do
      r = run_mwrap("-x", "true")
      expect(r.exitstatus).to eq(2)
      expect(r.stderr).to include("-x").and include("Usage: mwrap COMMAND")
    end

    it "passes options after the command through" do
      require_preload!
      r = run_mwrap("sh", "-c", 'printf "%s|" "$@"', "sh", "-x", "--help")
      expect(r.stdout).to eq("-x|--help|")
      expect(r.exitstatus).to eq(0)
    end
  end

  describe "running the command" do
    before { require_preload! }

    it "exits 127 with a message for a missing command" do
      r = run_mwrap("mwrap-no-such-command-xyz", "arg")
      expect(r.exitstatus).to eq(127)
      expect(r.stderr).to eq("mwrap: mwrap-no-such-command-xyz: command not found\n")
      r = run_mwrap("/nonexistent/dir/cmd")
      expect(r.exitstatus).to eq(127)
      expect(r.stderr).to include("/nonexistent/dir/cmd: command not found")
    end

    it "exits 126 for a command that is not executable" do
      Dir.mktmpdir do |dir|
        path = File.join(dir, "not-executable")
        File.write(path, "#!/bin/sh\nexit 0\n")
        File.chmod(0o644, path)
        r = run_mwrap(path)
        expect(r.exitstatus).to eq(126)
        expect(r.stderr).to include(path)
        expect(r.stderr).to eq("mwrap: #{path}: Permission denied\n")
      end
    end

    it "never goes through a shell" do
      r = run_mwrap("echo", "$HOME", "a b", "*")
      expect(r.stdout).to eq("$HOME a b *\n")
      r = run_mwrap("echo $HOME")
      expect(r.exitstatus).to eq(127)
    end

    it "passes exit statuses 0, 1 and 42 through" do
      expect(run_mwrap("true").exitstatus).to eq(0)
      expect(run_mwrap("false").exitstatus).to eq(1)
      expect(run_mwrap("sh", "-c", "exit 42").exitstatus).to eq(42)
    end

    it "puts the preload alone in LD_PRELOAD when there was none" do
      r = run_mwrap("sh", "-c", 'echo "$LD_PRELOAD"')
      expect(r.stdout).to eq("#{preload}\n")
    end

    it "puts the preload first, keeps other entries in order and drops stale copies" do
      stale = "/old/lib/mwrap/libmwrap_preload.so"
      env = { "LD_PRELOAD" => "/nonexistent/libfoo.so #{stale}:/nonexistent/libbar.so\t#{preload}::" }
      r = run_mwrap("sh", "-c", 'echo "$LD_PRELOAD"', env: env)
      expect(r.stdout).to eq("#{preload}:/nonexistent/libfoo.so:/nonexistent/libbar.so\n")
      expect(r.exitstatus).to eq(0)
    end

    it "loads the preload into the command" do
      r = run_mwrap("ruby", "-I", MwrapSpecHelpers::LIB, "-r", "mwrap", "-e", "p Mwrap.preloaded?")
      expect(r.stdout).to eq("true\n")
    end

    it "keeps dump_fd:N open across exec for N > 2" do
      r = run_mwrap("sh", "-c", 'echo hello >&7', env: { "MWRAP" => "dump_fd:7" }) # fd 7 closed here
      expect(r.exitstatus).not_to eq(0)
      Dir.mktmpdir do |dir|
        out = File.join(dir, "out")
        File.open(out, "w") do |f|
          r = capture({ "MWRAP" => "dump_fd:#{f.fileno}" }, RbConfig.ruby,
                      MwrapSpecHelpers::EXE, "sh", "-c", "echo hello >&#{f.fileno}",
                      f.fileno => f.fileno)
          expect(r.exitstatus).to eq(0)
        end
        expect(File.read(out)).to start_with("hello\n")
      end
    end

    it "runs the command when dump_fd is no descriptor number, as the preload alone does" do
      expect_same_as_preload_alone("MWRAP" => "dump_fd:99999999999999999999")
    end

    it "inherits systemd LISTEN_FDS descriptors when LISTEN_PID is its own pid" do
      Dir.mktmpdir do |dir|
        out = File.join(dir, "out")
        File.open(out, "w") do |f|
          # sh execs ruby (same pid), so LISTEN_PID=$$ names exe/mwrap's process.
          script = 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"'
          r = capture({}, "sh", "-c", script, RbConfig.ruby, MwrapSpecHelpers::EXE,
                      "sh", "-c", "echo listening >&3", 3 => f)
          expect(r.exitstatus).to eq(0)
        end
        expect(File.read(out)).to start_with("listening\n")
      end
    end

    it "says a directory is a directory and exits 126, as a shell does" do
      shell = capture({}, "sh", "-c", '"$0"', Dir.tmpdir)
      expect(shell.exitstatus).to eq(126)
      r = run_mwrap(Dir.tmpdir)
      expect(r.stderr).to eq("mwrap: #{Dir.tmpdir}: is a directory\n")
      expect(r.exitstatus).to eq(shell.exitstatus)
      r = run_mwrap("lib/") # relative to the command's directory (ROOT)
      expect([r.stderr, r.exitstatus]).to eq(["mwrap: lib/: is a directory\n", 126])
      # A name without a slash is looked for in PATH only, as a shell does.
      r = run_mwrap("lib")
      expect([r.stderr, r.exitstatus]).to eq(["mwrap: lib: command not found\n", 127])
    end

    it "runs from a tree without the native extension: it loads only pure-Ruby files" do
      Dir.mktmpdir do |dir|
        lib = File.join(dir, "lib")
        FileUtils.mkdir_p([File.join(dir, "exe"), File.join(lib, "mwrap")])
        FileUtils.cp(MwrapSpecHelpers::EXE, File.join(dir, "exe"))
        FileUtils.cp(Dir[File.join(MwrapSpecHelpers::LIB, "mwrap", "*.rb")], File.join(lib, "mwrap"))
        FileUtils.ln_s(preload, File.join(lib, "mwrap", "libmwrap_preload.so"))
        expect(Dir[File.join(lib, "**", "*_ext.so")]).to be_empty
        r = capture({}, RbConfig.ruby, File.join(dir, "exe", "mwrap"), "sh", "-c", 'echo "$LD_PRELOAD"')
        expect([r.stdout, r.stderr, r.exitstatus]).to eq(["#{File.join(lib, 'mwrap', 'libmwrap_preload.so')}\n", "", 0])
      end
    end

    it "profiles a non-Ruby command: MWRAP=dump_path writes native 0x locations" do
      Dir.mktmpdir do |dir|
        dump = File.join(dir, "dump.txt")
        r = run_mwrap("sh", "-c", 'perl -e "print 1"', env: { "MWRAP" => "dump_path:#{dump}" })
        expect(r.stdout).to eq("1")
        expect(r.exitstatus).to eq(0)
        rows = parse_dump(path: dump)
        expect(rows).not_to be_empty
        expect(rows.map(&:location)).to include(a_string_matching(/0x\h+/))
      end
    end
  end

  # Environment values are bytes: under a UTF-8 locale Ruby tags them UTF-8
  # even when they are not valid UTF-8.
  describe "environment values that are not UTF-8, under a UTF-8 locale" do
    let(:utf8_locale) { { "LANG" => "C.UTF-8", "LC_ALL" => "C.UTF-8" } }
    # This process's libc: preloading it again changes nothing.
    let(:libc) { File.readlines("/proc/self/maps").map { |l| l.split[5] }.compact.grep(%r{/libc\.so}).first }

    before do
      require_preload!
      locale = capture(utf8_locale.merge("MWRAP" => "x"), RbConfig.ruby, "-e",
                       "print Encoding.default_external, ENV['MWRAP'].encoding")
      expect(locale.stdout).to eq("UTF-8UTF-8"), "C.UTF-8 is not a UTF-8 locale here: #{locale.stdout}"
    end

    it "runs the command as it runs under the preload alone when MWRAP is not UTF-8" do
      direct = expect_same_as_preload_alone(utf8_locale.merge("MWRAP" => "dump_min:1,\xFFbad:\xFE".b))
      expect(direct.stderr).to include("mwrap: ignoring bad MWRAP entries")
    end

    it "keeps dump_fd:N open across exec when MWRAP also holds bytes that are not UTF-8" do
      Dir.mktmpdir do |dir|
        out = File.join(dir, "dump")
        File.open(out, "w") do |f|
          env = utf8_locale.merge("MWRAP" => "\xFF:1,dump_fd:#{f.fileno}".b)
          # Its stderr (the warning about the bad entry) is captured, not shown.
          r = capture(env, RbConfig.ruby, MwrapSpecHelpers::EXE, "sh", "-c", "echo hello >&#{f.fileno}",
                      f.fileno => f.fileno)
          expect(r.exitstatus).to eq(0)
        end
        expect(File.read(out)).to start_with("hello\n")
      end
    end

    it "keeps an LD_PRELOAD entry that is not UTF-8 as it is" do
      Dir.mktmpdir do |dir|
        odd_dir = File.join(dir.b, "\xFF\xFE".b)
        Dir.mkdir(odd_dir)
        entry = File.join(odd_dir, "libc.so.6")
        File.symlink(libc, entry)
        command = ["sh", "-c", 'printf "%s" "$LD_PRELOAD"']
        wrapped = run_mwrap(*command, env: utf8_locale.merge("LD_PRELOAD" => "#{entry} #{preload}".b))
        expect(wrapped.stdout.b).to eq("#{preload}:#{entry}".b)
        direct = capture(utf8_locale.merge("LD_PRELOAD" => "#{preload}:#{entry}".b), *command)
        expect([wrapped.stdout, wrapped.stderr, wrapped.exitstatus])
          .to eq([direct.stdout, direct.stderr, direct.exitstatus])
        expect(wrapped.stderr).to eq("")
      end
    end
  end
end
