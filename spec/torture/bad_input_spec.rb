# frozen_string_literal: true

require_relative "torture_helper"
require "json"

# Scenario 5: bad input never changes the program. Malformed MWRAP values
# give at most one stderr line that names the problem; bad arguments to the
# Ruby API raise Ruby exceptions with a message; exe/mwrap prints usage.
RSpec.describe "torture: bad input" do
  before { require_preload! }

  let(:tmp) { Dir.mktmpdir("mwrap-torture-bad") }
  after { FileUtils.rm_rf(tmp) }

  # [MWRAP value, text the stderr line must hold (nil: no line expected,
  # :any: zero or one line, e.g. a dump that fails only at exit)].
  def mwrap_values
    regular = File.join(tmp, "regular-file")
    File.write(regular, "")
    dir = File.join(tmp, "a-directory")
    Dir.mkdir(dir)
    values = []
    # empty and blank entries are fine
    ["", " ", ",", ",,,", " , ,\t", "dump_min:5,", ",dump_min:5", " dump_min : 5 "].each { |v| values << [v, nil] }
    # unknown keys, each named
    %w[foo bar x dump dump_ dumppath path fd min DUMP_MIN Dump_path dump_min_ _dump_min dump_minimum dump_path2
       dump-min dump.min quiet verbose log 0 123 dümp_min].each do |k|
      values << ["#{k}:1", "unknown key"]
    end
    values << [":5", "unknown key"]
    values << ["dump min:5", "unknown key \"dump min\""]
    values << ["foo:1,foo:2", "foo"]
    # entries without a colon
    ["dump_min", "dump_min=5", "dump_path=/tmp/x", "dump_fd 2", "foo", "1234", "-", "dump_path"].each do |v|
      values << [v, "is not key:value"]
    end
    # numbers: negative, huge, not decimal
    ["-1", "-0", "+5", "18446744073709551616", "99999999999999999999999", "1e6", "0x10", "010x", "1_000", "5k",
     "", " ", "1.5", "١٢", "∞", "NaN", "12 34"].each do |n|
      values << ["dump_min:#{n}", "dump_min"]
    end
    ["-1", "2147483648", "4294967296", "99999999999999999999999", "abc", "", "3.5", "0x3", "+2"].each do |n|
      values << ["dump_fd:#{n}", "dump_fd"]
    end
    values << ["dump_min::5", "dump_min"]
    values << ["dump_fd:2:3", "dump_fd"]
    # repeated keys: the last one wins, no complaint
    values << ["dump_min:1,dump_min:2", nil]
    values << ["dump_min:1,dump_min:2,dump_min:3,dump_min:4", nil]
    values << ["dump_path:#{tmp}/r1,dump_path:#{tmp}/r2", nil]
    values << ["dump_min:1,dump_min:zz", "zz"]
    # several problems, still one line
    values << ["foo:1,bar:2,dump_min:x", "bar"]
    values << [Array.new(50) { |i| "bad#{i}:1" }.join(","), "bad49"]
    # very long values
    values << ["dump_min:#{'9' * 100_000}", "dump_min"]
    values << ["x" * 100_000, "is not key:value"]
    values << ["#{'k' * 50_000}:1", "unknown key"]
    values << ["dump_path:#{tmp}/#{'a' * 5000}", "cannot open dump_path"]
    values << [(["dump_min:1"] * 10_000).join(","), nil]
    # non-UTF-8 and control bytes
    values << ["dump_min:\xff\xfe".b, "dump_min"]
    values << ["\xff:1".b, "unknown key"]
    values << ["\xc3\x28:1".b, "unknown key"]
    values << ["dump_fd:\x80".b, "dump_fd"]
    values << ["dump_min:\e[31m5", "dump_min"]
    values << ["\x01\x02\x03", "is not key:value"]
    values << ["dump_path:#{tmp}/\xff\xfe/dump".b, "cannot open dump_path"]
    # dump_path that cannot be opened (as root too)
    values << ["dump_path:", "dump_path is empty"]
    values << ["dump_path:   ", "dump_path is empty"]
    values << ["dump_path:/nonexistent-mwrap-torture-dir/dump.txt", "cannot open dump_path"]
    values << ["dump_path:#{tmp}/missing/dir/dump.txt", "cannot open dump_path"]
    values << ["dump_path:#{regular}/dump.txt", "cannot open dump_path"]
    values << ["dump_path:#{dir}", "cannot open dump_path"]
    values << ["dump_path:/", "cannot open dump_path"]
    values << ["dump_path:/sys/mwrap-torture-cannot-create", "cannot open dump_path"] if File.directory?("/sys/kernel")
    values << ["dump_path:/proc/mwrap-torture-cannot-create", "cannot open dump_path"] if File.directory?("/proc/self")
    values << ["dump_path:nonexistent-relative-dir/dump.txt", "cannot open dump_path"]
    # opens fine, but writing the dump fails at exit: silently
    values << ["dump_path:/proc/version", :any] if File.file?("/proc/version")
    values << ["dump_path:/dev/full", :any] if File.exist?("/dev/full")
    # descriptors that are not open, or not writable
    ["dump_fd:99", "dump_fd:1000000", "dump_fd:0", "dump_fd:2147483647"].each { |v| values << [v, :any] }
    # mixed good and bad
    values << ["dump_min:100,foo:1,dump_fd:99", "foo"]
    values << ["dump_fd:99,dump_min:-5", "dump_min"]
    values
  end

  it "runs `ruby -e 'puts 6*7'` unchanged under at least 100 malformed MWRAP values, one stderr line each" do
    values = mwrap_values
    expect(values.size).to be >= 100
    queue = Queue.new
    values.each_with_index { |v, i| queue << [i, *v] }
    queue.close
    results = []
    lock = Mutex.new
    Array.new(2) do
      Thread.new do
        while (job = queue.pop)
          i, value, needle = job
          r = TortureHelpers.run_timed({ "LD_PRELOAD" => built_preload, "MWRAP" => value }, RbConfig.ruby, "-e",
                                       "puts 6*7", timeout: 60, chdir: tmp)
          lock.synchronize { results << [i, value, needle, r] }
        end
      end
    end.each(&:join)
    problems = []
    results.sort_by(&:first).each do |_i, value, needle, r|
      label = value.bytesize > 80 ? "#{value.byteslice(0, 60).inspect}... (#{value.bytesize} bytes)" : value.inspect
      lines = r.stderr.b.lines
      problems << "#{label}: #{r.describe}" unless r.success? && r.stdout == "42\n"
      problems << "#{label}: #{lines.size} stderr lines: #{r.stderr[0, 300].inspect}" if lines.size > 1
      case needle
      when nil
        problems << "#{label}: unexpected stderr #{r.stderr[0, 300].inspect}" unless lines.empty?
      when :any
        nil
      else
        line = lines.first.to_s
        problems << "#{label}: stderr #{line[0, 300].inspect} does not name #{needle.inspect}" \
          unless line.start_with?("mwrap: ") && line.include?(needle.b)
        problems << "#{label}: stderr line of #{line.bytesize} bytes" if line.bytesize > 4096
        problems << "#{label}: raw control bytes in #{line[0, 300].inspect}" if line.chomp.match?(/[\x00-\x1f\x7f]/n)
      end
    end
    expect(problems).to eq([])
    TortureHelpers.note("bad_mwrap", "values" => values.size,
                                     "with_message" => values.count { |_, n| n.is_a?(String) },
                                     "passed" => values.size - problems.size)
  end

  describe "Ruby API" do
    # Runs spec/torture/scripts/bad_args.rb (with and without the preload):
    # it calls every Mwrap method with bad arguments and reports.
    def bad_args(preload)
      r = TortureHelpers.ruby_timed(TortureHelpers.script("bad_args"), timeout: 120, preload: preload,
                                                                       chdir: tmp)
      expect(r.success?).to be(true), r.describe
      JSON.parse(r.stdout.lines.last)
    end

    [true, false].each do |preloaded|
      it "raises a Ruby exception with a message for bad arguments to every method (#{preloaded ? 'with' : 'without'} the preload)" do
        report = bad_args(preloaded ? :built : nil)
        expect(report["preloaded"]).to eq(preloaded)
        expect(report["failures"]).to eq([])
        expect(report["checked"]).to be > 30
        TortureHelpers.note("bad_args", "preloaded" => preloaded, "calls" => report["checked"],
                                        "methods" => report["methods"], "skipped" => report["skipped"])
      end
    end
  end

  describe "exe/mwrap with bad arguments" do
    # spec/exe_mwrap_spec.rb covers no arguments, -h/--help, --version and -x.
    ["--", "--bogus", "--help=1", "--version=2", "-hx", "-", "-\xff".b, "--verbose"].each do |arg|
      it "prints usage and exits 2 for #{arg.inspect}" do
        r = TortureHelpers.run_timed({}, RbConfig.ruby, MwrapSpecHelpers::EXE, arg, timeout: 60)
        expect(r.exitstatus).to eq(2), r.describe
        expect(r.stdout).to eq("")
        expect(r.stderr).to include("Usage: mwrap COMMAND")
      end
    end

    it "prints usage and exits 2 for an unknown option before a valid command" do
      r = TortureHelpers.run_timed({}, RbConfig.ruby, MwrapSpecHelpers::EXE, "--bogus", "true", timeout: 60)
      expect(r.exitstatus).to eq(2)
      expect(r.stderr).to include("--bogus").and include("Usage: mwrap COMMAND")
    end

    it "exits 127 for an empty command and 126 for a directory, naming them" do
      r = TortureHelpers.run_timed({}, RbConfig.ruby, MwrapSpecHelpers::EXE, "", timeout: 60)
      expect(r.exitstatus).to eq(127), r.describe
      expect(r.stderr).to start_with("mwrap: ")
      r = TortureHelpers.run_timed({}, RbConfig.ruby, MwrapSpecHelpers::EXE, tmp, timeout: 60)
      expect(r.exitstatus).to eq(126), r.describe
      expect(r.stderr).to include(tmp)
      r = TortureHelpers.run_timed({}, RbConfig.ruby, MwrapSpecHelpers::EXE, "--", "--help", timeout: 60)
      expect(r.exitstatus).to eq(127), r.describe
      expect(r.stderr).to include("--help")
    end

    it "passes a malformed MWRAP through to the command, which reports it once" do
      r = TortureHelpers.run_timed({ "MWRAP" => "dump_min:-1,nope" }, RbConfig.ruby, MwrapSpecHelpers::EXE,
                                   RbConfig.ruby, "-e", "puts 6*7", timeout: 60)
      expect([r.stdout, r.exitstatus]).to eq(["42\n", 0])
      expect(r.stderr.lines.size).to eq(1)
      expect(r.stderr).to include("dump_min").and include("nope")
    end
  end
end
