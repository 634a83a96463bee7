# frozen_string_literal: true

# Runs one workload file under Mwrap.measure_growth; what Mwrap::RakeTask
# starts (under the preload) in a child process. Usable directly:
#
#   mwrap ruby lib/mwrap/growth_runner.rb --rounds 5 --max-growth 1000000 test/memory/render.rb
#
# The workload file's body is one round. It is compiled once and its
# instruction sequence evaluated once per round (at the top level, like a
# script), so parsing it is not counted as growth. Define classes and
# constants it needs in a --require file (loaded once, before warmup).
#
# Exit status: 0 passed, 1 memory grew beyond the limits, 2 bad usage or
# setup (missing file, bad option, no preload), 3 the workload raised.

$LOAD_PATH.unshift(File.expand_path("..", __dir__)) unless $LOAD_PATH.include?(File.expand_path("..", __dir__))
require "optparse"
require "fileutils"
require "mwrap/growth"

module Mwrap
  # Command-line driver of one growth measurement (see the file comment).
  module GrowthRunner
    EXIT_PASSED = 0
    EXIT_GREW = 1
    EXIT_USAGE = 2
    EXIT_WORKLOAD_ERROR = 3
    OUR_FRAMES = /kernel_require|#{Regexp.escape(File.basename(__FILE__))}/.freeze

    Options = Struct.new(:workload, :requires, :libs, :rounds, :warmup, :min_growth, :max_growth,
                         :max_growth_per_location, :ignore, :report, :limit, :app_root, keyword_init: true)

    module_function

    # Parses argv, measures, prints the verdict to `out` and writes the
    # report. Returns the exit status.
    def run(argv, out: $stdout, err: $stderr)
      options = parse(argv)
      FileUtils.rm_f(options.report) if options.report
      workload = load_workload(options)
      report = Mwrap.measure_growth(rounds: options.rounds, warmup: options.warmup,
                                    min_growth: options.min_growth, ignore: options.ignore,
                                    app_root: options.app_root) do
        workload.eval
      rescue StandardError, ScriptError => e
        raise WorkloadError, "the workload #{options.workload} raised", cause: e
      end
      limits = { max_growth: options.max_growth, max_growth_per_location: options.max_growth_per_location }
      passed = report.passed?(**limits)
      write_report(options, report, limits) if options.report
      out.puts(passed ? report.summary(**limits) : report.failure_message(limit: options.limit, **limits))
      out.puts("mwrap: report written to #{options.report}") if options.report && !passed
      out.flush
      passed ? EXIT_PASSED : EXIT_GREW
    rescue UsageError, OptionParser::ParseError, NotPreloadedError, ArgumentError => e
      err.puts("mwrap growth: #{e.message}")
      EXIT_USAGE
    rescue WorkloadError => e
      cause = e.cause
      err.puts("mwrap growth: #{e.message}: #{cause.class}: #{cause.message}")
      trace = (cause.backtrace || []).take_while { |l| !l.match?(OUR_FRAMES) }
      err.puts(trace.first(20).map { |l| "\t#{l}" })
      EXIT_WORKLOAD_ERROR
    end

    class UsageError < StandardError; end
    class WorkloadError < StandardError; end

    def parse(argv)
      o = Options.new(requires: [], libs: [], rounds: 5, warmup: 2, min_growth: 0, max_growth: 0,
                      max_growth_per_location: nil, ignore: [], report: nil, limit: Growth::TABLE_LIMIT)
      parser = OptionParser.new do |p|
        p.banner = "Usage: mwrap ruby #{__FILE__} [options] WORKLOAD.rb"
        p.on("-r", "--require FEATURE", "require FEATURE once, before warmup (repeatable)") { |f| o.requires << f }
        p.on("-I", "--include DIR", "prepend DIR to $LOAD_PATH (repeatable)") { |d| o.libs << d }
        p.on("--rounds N", Integer, "measured rounds (default 5)") { |n| o.rounds = n }
        p.on("--warmup N", Integer, "warmup rounds (default 2)") { |n| o.warmup = n }
        p.on("--min-growth BYTES", Integer, "ignore locations that grew this much or less") { |n| o.min_growth = n }
        p.on("--max-growth BYTES", Integer, "fail above this growth, all locations (default 0)") do |n|
          o.max_growth = n
        end
        p.on("--max-growth-per-location BYTES", Integer, "fail when one location grows more") do |n|
          o.max_growth_per_location = n
        end
        p.on("--ignore REGEXP", "leave out locations matching REGEXP (repeatable)") do |re|
          o.ignore << Regexp.new(re)
        rescue RegexpError => e
          raise UsageError, "--ignore #{re.inspect}: #{e.message}"
        end
        p.on("--report FILE", "write the JSON report to FILE") { |f| o.report = f }
        p.on("--app-root DIR", "charge allocations to the innermost frame under DIR") { |d| o.app_root = d }
        p.on("--limit N", Integer, "rows in the failure table (default #{Growth::TABLE_LIMIT})") { |n| o.limit = n }
      end
      rest = parser.parse(argv)
      raise UsageError, "exactly one workload file expected, got #{rest.size}\n#{parser.help}" unless rest.size == 1

      o.workload = rest.first
      Growth.check_limits!(o.max_growth, o.max_growth_per_location)
      Growth.check_options!(rounds: o.rounds, warmup: o.warmup, min_growth: o.min_growth, ignore: o.ignore)
      o.app_root = Growth.check_app_root!(o.app_root)
      raise UsageError, "--limit must be >= 1, got #{o.limit}" unless o.limit >= 1

      o
    end

    # Loads the requires and compiles the workload; returns its
    # instruction sequence.
    def load_workload(options)
      path = File.expand_path(options.workload)
      raise UsageError, "workload file not found: #{options.workload} (#{path})" unless File.file?(path)

      options.libs.reverse_each { |dir| $LOAD_PATH.unshift(File.expand_path(dir)) }
      options.requires.each do |feature|
        require feature
      rescue StandardError, ScriptError => e
        # The file's own frames, not RubyGems' require or ours.
        trace = e.is_a?(LoadError) ? [] : (e.backtrace || []).take_while { |l| !l.match?(OUR_FRAMES) }
        where = trace.first(5).map { |line| "\n\t#{line}" }.join
        raise UsageError, "cannot load requires entry #{feature.inspect}: #{e.class}: #{e.message}#{where}"
      end
      RubyVM::InstructionSequence.compile_file(path)
    rescue SyntaxError => e
      raise UsageError, "cannot compile workload #{options.workload}: #{e.message}"
    end

    def write_report(options, report, limits)
      data = report.to_h(**limits).merge("workload" => File.expand_path(options.workload),
                                          "requires" => options.requires)
      dir = File.dirname(options.report)
      FileUtils.mkdir_p(dir)
      tmp = "#{options.report}.tmp#{$$}"
      File.write(tmp, "#{JSON.pretty_generate(data)}\n")
      File.rename(tmp, options.report)
    end
  end
end

exit(Mwrap::GrowthRunner.run(ARGV)) if $PROGRAM_NAME == __FILE__
