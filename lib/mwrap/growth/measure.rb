# frozen_string_literal: true

require "mwrap"
require "mwrap/growth/options"
require "mwrap/growth/analysis"

module Mwrap
  # Mwrap.measure_growth (and so the rake task and the matchers) ran in a
  # process without the preload library: nothing was recorded.
  class NotPreloadedError < Error
    HOW_TO = "Mwrap.measure_growth needs the mwrap preload library in this process, " \
             "and it is not loaded. Start the process under the `mwrap` command: " \
             "`mwrap rspec …` (RSpec), `mwrap ruby -Itest test/…_test.rb` (minitest), " \
             "`mwrap ruby script.rb`; or use Mwrap::RakeTask (require \"mwrap/rake_task\"), " \
             "which starts its workload under the preload by itself."

    def initialize(message = HOW_TO)
      super
    end
  end

  # Measuring how much memory a workload keeps each time it runs, per Ruby
  # line (or native caller), to fail a build when it keeps growing. See
  # Mwrap.measure_growth and the README's "Memory checks in CI".
  module Growth
    module_function

    # Runs the block `warmup` times, then `rounds` times, snapshotting live
    # memory per location after the warmup and after every round (after a
    # full GC). Returns a Report. See Mwrap.measure_growth.
    def measure(rounds: 5, warmup: 2, min_growth: 0, ignore: [], app_root: nil, &block)
      raise ArgumentError, "Mwrap.measure_growth needs a block (the workload, run once per round)" unless block

      ignore = check_options!(rounds: rounds, warmup: warmup, min_growth: min_growth, ignore: ignore)
      app_root = check_app_root!(app_root)
      raise NotPreloadedError unless Mwrap.preloaded?
      return measure_rounds(rounds, warmup, min_growth, ignore, &block) unless app_root

      # Allocations are charged to the app's own lines while the workload
      # runs (see Mwrap.app_root=); the setting it had comes back after.
      previous = Mwrap.app_root
      Mwrap.app_root = app_root
      begin
        measure_rounds(rounds, warmup, min_growth, ignore, &block)
      ensure
        Mwrap.app_root = previous
      end
    end

    def measure_rounds(rounds, warmup, min_growth, ignore)
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      warmup.times { yield }
      # What is kept between rounds holds no Ruby object per location (only
      # Integers, which are immediate, in one Hash per snapshot): kept
      # objects would fill the Ruby heap, and the heap pages it then adds
      # are charged to whatever workload line allocates next, every round.
      snapshots = nil
      counts = nil
      Mwrap.quiet do
        collect_garbage
        counts = BaselineCounts.now
        snapshots = [live_bytes_now]
      end
      rounds.times do |i|
        yield
        Mwrap.quiet do
          collect_garbage
          snapshots << (i == rounds - 1 ? Mwrap.live_snapshot(0) : live_bytes_now)
        end
      end
      Mwrap.quiet do
        analyze(snapshots, counts: counts, rounds: rounds, warmup: warmup, min_growth: min_growth,
                           ignore: ignore,
                           duration: Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
      end
    end

    # { location => live bytes }: Mwrap.live_snapshot without the rows.
    def live_bytes_now
      snapshot = Mwrap.live_snapshot(0)
      snapshot.transform_values! { |row| row[LIVE_BYTES] }
    end

    # Allocations and frees of every location at one moment, in two Hashes
    # of Integers; #fetch(location, default) gives [allocations, frees].
    class BaselineCounts
      def self.now
        allocations = {}
        frees = {}
        Mwrap.each(0) do |location, _total, allocs, freed|
          allocations[location] = allocs
          frees[location] = freed
        end
        new(allocations, frees)
      end

      def initialize(allocations, frees)
        @allocations = allocations
        @frees = frees
      end

      def fetch(location, default)
        return default unless @allocations.key?(location)

        [@allocations[location], @frees[location]]
      end
    end

    # Full GC, twice: the first one's deferred frees (finalizers, zombie
    # objects) run before the second returns.
    def collect_garbage
      GC.start(full_mark: true, immediate_sweep: true)
      GC.start(full_mark: true, immediate_sweep: true)
    end
  end

  # Runs the block `warmup` times, then once per round (`rounds` times),
  # and reports the locations whose live bytes rose in every round: a
  # Mwrap::Growth::Report. Each snapshot follows a full GC; everything the
  # measurement does itself runs inside Mwrap.quiet, so only the block's
  # allocations (and other threads') are recorded. Locations whose growth
  # is not above `min_growth` bytes, or that match an `ignore` pattern
  # (Regexp, substring String, Proc), are left out.
  #
  # With `app_root` (a directory), allocations made while the block runs
  # are charged to the innermost Ruby frame whose file is under it, so that
  # what a library keeps shows on the app line that called it (see
  # Mwrap.app_root=).
  #
  # Raises Mwrap::NotPreloadedError when the process is not running under
  # the preload (start it with `mwrap …`).
  # An unknown keyword is an ArgumentError that names it.
  def self.measure_growth(rounds: 5, warmup: 2, min_growth: 0, ignore: [], app_root: nil, **unknown, &block)
    Growth.check_keywords!(unknown, Growth::MEASURE_KEYWORDS, "Mwrap.measure_growth")
    Growth.measure(rounds: rounds, warmup: warmup, min_growth: min_growth, ignore: ignore, app_root: app_root,
                   &block)
  end
end
