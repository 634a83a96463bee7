# frozen_string_literal: true

require "rake"
require "rake/tasklib"
require "rbconfig"
require "mwrap/error"
require "mwrap/growth/options"
require "mwrap/ld_preload"

module Mwrap
  # The workload of a Mwrap::RakeTask kept growing beyond its limits (the
  # table is printed above the error), or could not be measured.
  class MemoryGrowthError < Error; end

  # Defines a rake task that fails when a workload's memory grows:
  #
  #   require "mwrap/rake_task"
  #   Mwrap::RakeTask.new(:memcheck) do |t|
  #     t.workload = "test/memory/render.rb"  # a Ruby file; its body is one round
  #     t.requires = ["./lib/app"]             # loaded once, before warmup
  #     t.rounds = 5
  #     t.warmup = 2
  #     t.max_growth = 1_000_000               # bytes, all growing locations together
  #     t.max_growth_per_location = 256_000
  #     t.ignore = [%r{/vendor/}]              # locations left out
  #     t.report = "tmp/memcheck.json"
  #   end
  #
  # The task runs lib/mwrap/growth_runner.rb in a child Ruby
  # (RbConfig.ruby) under the preload library, so `rake memcheck` needs no
  # `mwrap` in front of it.
  class RakeTask < Rake::TaskLib
    RUNNER = File.expand_path("growth_runner.rb", __dir__)

    # Task name (default :memcheck).
    attr_accessor :name
    # Ruby file whose body is one round (required).
    attr_accessor :workload
    # Features required once before warmup, e.g. ["./lib/app"] (default []).
    attr_accessor :requires
    # Directories prepended to the child's $LOAD_PATH (default ["lib"]).
    attr_accessor :libs
    # Measured rounds (default 5) and warmup rounds (default 2).
    attr_accessor :rounds, :warmup
    # Locations that grew this many bytes or less are not reported (default 0).
    attr_accessor :min_growth
    # Limits in bytes: all growing locations together (default 0) and any
    # one location (default nil: no per-location limit).
    attr_accessor :max_growth, :max_growth_per_location
    # Regexps (or substrings) of locations to leave out (default []).
    attr_accessor :ignore
    # Path of the JSON report, written whether the check passes or fails (default nil: none).
    attr_accessor :report
    # Directory whose Ruby files are the app's: allocations are charged to
    # the innermost frame under it (default nil: the innermost frame).
    attr_accessor :app_root
    # Extra options for the child ruby, e.g. ["-W0"] (default []).
    attr_accessor :ruby_opts
    # Rows of the failure table (default 25).
    attr_accessor :table_rows
    # Print the child's command line first (default false).
    attr_accessor :verbose
    # Task description for `rake -T`.
    attr_accessor :description

    def initialize(name = :memcheck, *prerequisites)
      super()
      # Rake's own form: Mwrap::RakeTask.new(memcheck: [:compile]).
      name, *prerequisites = [*name.first, *prerequisites] if name.is_a?(Hash) && name.size == 1
      @name = name
      @prerequisites = prerequisites.flatten
      @workload = nil
      @requires = []
      @libs = ["lib"]
      @rounds = 5
      @warmup = 2
      @min_growth = 0
      @max_growth = 0
      @max_growth_per_location = nil
      @ignore = []
      @report = nil
      @app_root = nil
      @ruby_opts = []
      @table_rows = 25
      @verbose = false
      @description = nil
      yield self if block_given?
      validate!
      define
    end

    # The child's command line (after validation).
    def command
      args = [RbConfig.ruby, *ruby_opts, "-I", File.expand_path("..", __dir__), RUNNER]
      Array(libs).each { |dir| args.push("-I", dir.to_s) }
      Array(requires).each { |feature| args.push("--require", feature.to_s) }
      args.push("--rounds", rounds.to_s, "--warmup", warmup.to_s, "--min-growth", min_growth.to_s,
                "--max-growth", max_growth.to_s, "--limit", table_rows.to_s)
      args.push("--max-growth-per-location", max_growth_per_location.to_s) if max_growth_per_location
      Array(ignore).each { |pattern| args.push("--ignore", ignore_source(pattern)) }
      args.push("--report", report.to_s) if report
      args.push("--app-root", Growth.check_app_root!(app_root)) if app_root
      args.push("--", workload.to_s)
    end

    # The child's environment: the preload first in LD_PRELOAD, other
    # entries kept, stale copies of mwrap's preload dropped (as exe/mwrap).
    def environment
      { "LD_PRELOAD" => LdPreload.value(preload) }
    end

    # Runs the check (what the task does). Raises MemoryGrowthError on failure.
    def run
      path = File.expand_path(workload.to_s)
      unless File.file?(path)
        raise MemoryGrowthError, "mwrap #{name}: workload file not found: #{workload} (looked for #{path})", []
      end

      cmd = command
      env = environment
      # Bytes: LD_PRELOAD may hold entries that are not valid in the locale's encoding.
      $stderr.puts(["LD_PRELOAD=#{env['LD_PRELOAD']}", *cmd].map(&:b).join(" ")) if verbose
      system(env, *cmd)
      status = $?
      return if status.success?

      where = report ? "; report: #{report}" : ""
      message = case status.exitstatus
                when 1 then "mwrap #{name}: memory grew in #{workload} (table above#{where})"
                when 2 then "mwrap #{name}: could not run the check on #{workload} (see above)"
                when 3 then "mwrap #{name}: the workload #{workload} raised (see above)"
                else "mwrap #{name}: the check on #{workload} ended with #{status.inspect}"
                end
      # No backtrace: rake would print this file's lines under the message.
      raise MemoryGrowthError, message, []
    end

    private

    def preload
      next_to_us = File.expand_path(Mwrap::PRELOAD_BASENAME, __dir__)
      File.file?(next_to_us) ? next_to_us : Mwrap.preload_path
    rescue PreloadNotFound => e
      raise MemoryGrowthError, "mwrap #{name}: #{e.message}"
    end

    def ignore_source(pattern)
      return Regexp.escape(pattern.to_s) unless pattern.is_a?(Regexp)

      # The source alone when there are no flags, so the report shows the pattern as written.
      pattern.options.zero? ? pattern.source : pattern.to_s
    end

    def define
      desc(description || "Fail when #{workload} keeps growing memory (mwrap, #{rounds} rounds)")
      task(name => @prerequisites) { run }
    end

    def validate!
      raise ArgumentError, "Mwrap::RakeTask #{name}: workload must be set to a Ruby file" unless workload

      unless workload.is_a?(String) || workload.respond_to?(:to_path)
        raise ArgumentError, "Mwrap::RakeTask #{name}: workload must be a path, got #{workload.inspect}"
      end
      self.requires = Array(requires)
      self.libs = Array(libs)
      self.ignore = Array(ignore)
      self.ruby_opts = Array(ruby_opts)
      # No Procs, unlike Mwrap.measure_growth: the patterns go to the child on its command line.
      ignore.each do |pattern|
        next if pattern.is_a?(Regexp) || pattern.is_a?(String)

        raise ArgumentError, "Mwrap::RakeTask #{name}: ignore takes Regexps or Strings, got #{pattern.inspect}"
      end
      check_growth_options!
      unless table_rows.is_a?(Integer) && table_rows >= 1
        raise ArgumentError, "Mwrap::RakeTask #{name}: table_rows must be an Integer >= 1, got #{table_rows.inspect}"
      end
      return if report.nil? || report.is_a?(String) || report.respond_to?(:to_path)

      raise ArgumentError, "Mwrap::RakeTask #{name}: report must be a path or nil, got #{report.inspect}"
    end

    # The checks Mwrap.measure_growth and Report#passed? make, here when
    # the Rakefile is loaded rather than in the child.
    def check_growth_options!
      Growth.check_options!(rounds: rounds, warmup: warmup, min_growth: min_growth, ignore: ignore)
      Growth.check_limits!(max_growth, max_growth_per_location)
      Growth.check_app_root!(app_root)
    rescue ArgumentError => e
      raise ArgumentError, "Mwrap::RakeTask #{name}: #{e.message}"
    end
  end
end
