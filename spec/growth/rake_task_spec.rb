# frozen_string_literal: true

require "spec_helper"
require "support/growth_helpers"
require "json"

$LOAD_PATH.unshift(MwrapSpecHelpers::LIB) unless $LOAD_PATH.include?(MwrapSpecHelpers::LIB)
require "mwrap/rake_task"

RSpec.describe Mwrap::RakeTask do
  around do |example|
    saved = Rake.application
    metadata = Rake::TaskManager.record_task_metadata
    Rake::TaskManager.record_task_metadata = true # as under `rake -T`: keep descriptions
    Rake.application = Rake::Application.new
    example.run
  ensure
    Rake.application = saved
    Rake::TaskManager.record_task_metadata = metadata
  end

  def define(name = :memcheck, **attrs)
    described_class.new(name) do |t|
      t.workload = "test/memory/render.rb"
      attrs.each { |k, v| t.public_send("#{k}=", v) }
    end
  end

  describe "definition" do
    it "defines a described task with the documented defaults" do
      t = define
      expect(Rake::Task.task_defined?("memcheck")).to be(true)
      expect(Rake::Task["memcheck"].comment).to include("test/memory/render.rb")
      expect([t.rounds, t.warmup, t.min_growth, t.max_growth, t.max_growth_per_location, t.ignore, t.report,
              t.requires, t.libs]).to eq([5, 2, 0, 0, nil, [], nil, [], ["lib"]])
    end

    it "takes prerequisites the rake way" do
      described_class.new(memcheck: [:compile]) { |t| t.workload = "w.rb" }
      expect(Rake::Task["memcheck"].prerequisites).to eq(["compile"])
    end

    it "rejects invalid values with an ArgumentError naming them" do
      expect { define(rounds: -1) }.to raise_error(ArgumentError, /memcheck: rounds must be an Integer >= 2.*-1/)
      expect { define(rounds: 1) }.to raise_error(ArgumentError, /rounds/)
      expect { define(warmup: -2) }.to raise_error(ArgumentError, /warmup must be an Integer >= 0, got -2/)
      expect { define(max_growth: "1MB") }.to raise_error(ArgumentError, /max_growth must be .*"1MB"/)
      expect { define(max_growth_per_location: -5) }.to raise_error(ArgumentError, /max_growth_per_location/)
      expect { define(min_growth: nil) }.to raise_error(ArgumentError, /min_growth/)
      expect { define(ignore: [:vendor]) }.to raise_error(ArgumentError, /ignore takes Regexps or Strings, got :vendor/)
      expect { define(report: 42) }.to raise_error(ArgumentError, /report/)
      expect { described_class.new(:memcheck) { |t| t.rounds = 3 } }
        .to raise_error(ArgumentError, /workload must be set/)
    end

    it "checks the measurement's values with Mwrap.measure_growth's own checks, naming the task" do
      expect { define(min_growth: 1.5) }
        .to raise_error(ArgumentError, "Mwrap::RakeTask memcheck: min_growth must be an Integer >= 0 (bytes), got 1.5")
      expect { define(max_growth_per_location: "1") }
        .to raise_error(ArgumentError, "Mwrap::RakeTask memcheck: max_growth_per_location must be nil or " \
                                       'an Integer >= 0 (bytes), got "1"')
    end

    it "loads without the native extension (a Rakefile may load before `rake compile` has run)" do
      r = capture({}, RbConfig.ruby, "-I", MwrapSpecHelpers::LIB, "-e",
                  'require "mwrap/rake_task"; puts $LOADED_FEATURES.grep(/mwrap/).map { |f| File.basename(f) }')
      expect(r.stderr).to eq("")
      loaded = r.stdout.lines(chomp: true)
      expect(loaded).to include("rake_task.rb", "options.rb")
      expect(loaded.grep(/_ext/)).to be_empty
    end

    it "raises NoMethodError for an unknown attribute" do
      expect { define(roundz: 3) }.to raise_error(NoMethodError, /roundz=/)
    end
  end

  describe "the child process" do
    it "runs the runner with every setting, under the preload first in LD_PRELOAD" do
      t = define(requires: ["./lib/app"], rounds: 7, warmup: 1, max_growth: 10, max_growth_per_location: 5,
                 min_growth: 2, ignore: [%r{/vendor/}i, "a.b"], report: "tmp/m.json")
      cmd = t.command
      expect(cmd.first).to eq(RbConfig.ruby)
      expect(cmd).to include(File.join(MwrapSpecHelpers::LIB, "mwrap", "growth_runner.rb"))
      args = cmd.drop(cmd.index(File.join(MwrapSpecHelpers::LIB, "mwrap", "growth_runner.rb")) + 1)
      expect(args).to eq(["-I", "lib", "--require", "./lib/app", "--rounds", "7", "--warmup", "1",
                          "--min-growth", "2", "--max-growth", "10", "--limit", "25",
                          "--max-growth-per-location", "5", "--ignore", "(?i-mx:\\/vendor\\/)", "--ignore", "a\\.b",
                          "--report", "tmp/m.json", "--", "test/memory/render.rb"])
      expect(Regexp.new(args[args.index("--ignore") + 1])).to match("/app/VENDOR/x.rb:1")
    end

    it "puts the preload first and drops stale copies of it from LD_PRELOAD" do
      saved = ENV.fetch("LD_PRELOAD", nil)
      ENV["LD_PRELOAD"] = "/old/libmwrap_preload.so:/usr/lib/libjemalloc.so.2"
      preload = define.environment["LD_PRELOAD"].split(":")
      expect(File.basename(preload.first)).to eq("libmwrap_preload.so")
      expect(preload.drop(1)).to eq(["/usr/lib/libjemalloc.so.2"])
    ensure
      ENV["LD_PRELOAD"] = saved
    end

    it "passes an LD_PRELOAD entry that is not UTF-8 to the child as it is, and prints it with verbose" do
      require_preload!
      saved = ENV.fetch("LD_PRELOAD", nil)
      Dir.mktmpdir do |dir|
        workload = File.join(dir, "wörk.rb") # a UTF-8 command line next to binary LD_PRELOAD bytes
        File.write(workload, "nil\n")
        odd = "/nonexistent/\xFF\xFE/libodd.so".b
        ENV["LD_PRELOAD"] = "#{odd} /old/libmwrap_preload.so".b
        t = define(workload: workload, libs: [MwrapSpecHelpers::LIB], verbose: true)
        expect(t.environment["LD_PRELOAD"].b.split(":").drop(1)).to eq([odd])
        # ld.so in the child names the entry it cannot load: the bytes arrived unchanged.
        expected = Regexp.new("\\ALD_PRELOAD=\\S*#{Regexp.escape(odd)} .*#{Regexp.escape(workload.b)}\n" \
                              ".*object '#{Regexp.escape(odd)}'".b, Regexp::MULTILINE)
        expect { t.run }.to output(satisfy("print #{expected.inspect}") { |err| err.b.match?(expected) })
          .to_stderr_from_any_process
          .and output(/\Amwrap: passed/).to_stdout_from_any_process
      end
    ensure
      ENV["LD_PRELOAD"] = saved
    end

    it "fails with a clear error naming a missing workload file" do
      expect { define(workload: "test/memory/nope.rb").run }
        .to raise_error(Mwrap::MemoryGrowthError, %r{memcheck: workload file not found: test/memory/nope\.rb})
    end
  end

  # Real runs, through `rake -f examples/growth/Rakefile TASK` (the checked-in example tasks).
  describe "on the examples" do
    before(:all) do
      require_preload!
      @tmp = Dir.mktmpdir("mwrap-growth-rake")
      @runs = MwrapGrowthHelpers::ALL.to_h do |name|
        report_dir = File.join(@tmp, name)
        out, err, status = MwrapGrowthHelpers.run_child(MwrapGrowthHelpers.child_env("REPORT_DIR" => report_dir),
                                                        RbConfig.ruby, "-S", "rake", "-f", "Rakefile", name,
                                                        chdir: MwrapGrowthHelpers::DIR)
        report = File.join(report_dir, "#{name}.json")
        [name, [out, err, status, File.file?(report) ? JSON.parse(File.read(report)) : nil]]
      end
    end

    after(:all) { FileUtils.rm_rf(@tmp) if @tmp }

    MwrapGrowthHelpers::FAILING.each do |name|
      it "fails on #{name}, naming the leaking location first, and writes the report" do
        out, err, status, report = @runs.fetch(name)
        skip "the native helper could not be built" if name == "native_thread_leak" && !MwrapGrowthHelpers.native_leak_so
        expect(status.exitstatus).to eq(1), "#{out}\n#{err}"
        expected = MwrapGrowthHelpers.expected_location(name)
        lines = out.lines
        expect(lines[0]).to start_with("mwrap: FAILED: ")
        expect(lines[1]).to match(/\A +growth +bytes +per round +allocs +frees +location$/)
        expect(lines[2].chomp.split("  ").last.strip).to match(expected)
        expect(err).to include("Mwrap::MemoryGrowthError: mwrap #{name}: memory grew in ").and include("report: ")
        expect(report).to include("passed" => false, "rounds" => 5, "warmup" => 2, "max_growth" => 100_000,
                                  "max_growth_per_location" => 64_000)
        expect(report["growing"].first["location"]).to match(expected)
        expect(report["growing"].first["per_round"].size).to eq(5)
        expect(report["workload"]).to eq(File.join(MwrapGrowthHelpers::DIR, "rounds", "#{name}.rb"))
      end
    end

    MwrapGrowthHelpers::PASSING.each do |name|
      it "passes on #{name} with a one-line summary, and writes the report" do
        out, err, status, report = @runs.fetch(name)
        expect(status.exitstatus).to eq(0), "#{out}\n#{err}"
        expect(out.lines.size).to eq(1)
        expect(out).to match(/\Amwrap: passed: /)
        expect(report).to include("passed" => true, "format" => "mwrap-growth/1")
      end
    end
  end

  describe "the runner" do
    before { require_preload! }

    it "leaves out ignored locations and passes" do
      out, _err, status, report = MwrapGrowthHelpers.run_example("fiddle_leak", "--ignore", "fiddle_leak\\.rb")
      expect(status.exitstatus).to eq(0), out
      expect(report["ignored"]).to eq([MwrapGrowthHelpers.line_of("fiddle_leak", /Fiddle\.malloc\(/)])
      expect(report["ignore"]).to eq(["/fiddle_leak\\.rb/"])
    end

    it "exits 2 naming a missing workload, and 3 with the error when the workload raises" do
      Dir.mktmpdir do |dir|
        env = MwrapGrowthHelpers.child_env
        runner = [RbConfig.ruby, MwrapGrowthHelpers::EXE, RbConfig.ruby, MwrapGrowthHelpers::RUNNER]
        _, err, status = MwrapGrowthHelpers.run_child(env, *runner, File.join(dir, "missing.rb"))
        expect(status.exitstatus).to eq(2)
        expect(err).to include("workload file not found: #{File.join(dir, 'missing.rb')}")

        File.write(File.join(dir, "raises.rb"), "raise ArgumentError, 'boom'\n")
        _, err, status = MwrapGrowthHelpers.run_child(env, *runner, File.join(dir, "raises.rb"))
        expect(status.exitstatus).to eq(3)
        expect(err).to include("raised: ArgumentError: boom")

        _, err, status = MwrapGrowthHelpers.run_child(env, *runner, "--rounds", "-3", File.join(dir, "raises.rb"))
        expect(status.exitstatus).to eq(2)
        expect(err).to include("rounds must be an Integer >= 2")
      end
    end

    it "exits 2 saying how to run it without the preload" do
      Dir.mktmpdir do |dir|
        File.write(File.join(dir, "w.rb"), "nil\n")
        _, err, status = MwrapGrowthHelpers.run_child(MwrapGrowthHelpers.child_env, RbConfig.ruby,
                                                      MwrapGrowthHelpers::RUNNER, File.join(dir, "w.rb"))
        expect(status.exitstatus).to eq(2)
        expect(err).to include("needs the mwrap preload library", "Mwrap::RakeTask")
      end
    end
  end
end
