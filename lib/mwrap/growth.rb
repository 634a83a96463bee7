# frozen_string_literal: true

require "json"
require "mwrap"

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
    # Indexes into one row of Mwrap.live_snapshot.
    LIVE_BYTES = 0
    LIVE_COUNT = 1
    ALLOCATIONS = 2
    FREES = 3

    # Version of the report's JSON format (#to_h / #to_json), "format" key.
    FORMAT = "mwrap-growth/1"

    # Rows shown by Report#table unless told otherwise.
    TABLE_LIMIT = 25
    # Per-round deltas shown in one table cell before eliding the middle.
    PER_ROUND_SHOWN = 8

    # One location whose live bytes rose in every measured round.
    #
    # - location: "path/file.rb:LINE" or a native caller ("lib.so(fn+0x1c) [0x…]")
    # - growth: live bytes gained over the measured rounds (after warmup)
    # - per_round: live bytes gained in each round, in order (all > 0)
    # - allocations, frees: allocations made and freed there during the measured rounds
    # - live, live_count: live bytes and live allocations there after the last round
    Entry = Struct.new(:location, :growth, :per_round, :allocations, :frees, :live, :live_count,
                       keyword_init: true) do
      def to_h
        { "location" => location, "growth" => growth, "per_round" => per_round,
          "allocations" => allocations, "frees" => frees, "live" => live, "live_count" => live_count }
      end
    end

    # What Mwrap.measure_growth found. Thresholds are not part of the
    # measurement: #passed?, #summary, #table, #failure_message, #to_h and
    # #to_json take them as keywords (max_growth: 0 bytes in total,
    # max_growth_per_location: nil = no per-location limit).
    class Report
      # Entries, largest growth first (then by location).
      attr_reader :growing
      # The measurement's parameters.
      attr_reader :rounds, :warmup, :min_growth, :ignore
      # Live bytes over every location not ignored, after warmup and after the last round.
      attr_reader :live_before, :live_after
      # Growing locations left out by `ignore` (their names).
      attr_reader :ignored
      # Seconds the whole measurement took (warmup included), or nil.
      attr_reader :duration

      def initialize(growing:, rounds:, warmup:, min_growth: 0, ignore: [], ignored: [],
                     live_before: 0, live_after: 0, duration: nil)
        @growing = growing.sort_by { |e| [-e.growth, e.location] }.freeze
        @rounds = rounds
        @warmup = warmup
        @min_growth = min_growth
        @ignore = ignore
        @ignored = ignored
        @live_before = live_before
        @live_after = live_after
        @duration = duration
      end

      # Bytes gained by every growing location together.
      def total_growth
        growing.sum(&:growth)
      end

      # True when the growing locations together gained at most max_growth
      # bytes and none gained more than max_growth_per_location.
      def passed?(max_growth: 0, max_growth_per_location: nil)
        Growth.check_limits!(max_growth, max_growth_per_location)
        total_growth <= max_growth && over_limit(max_growth_per_location: max_growth_per_location).empty?
      end

      # Entries that gained more than max_growth_per_location (none when nil).
      def over_limit(max_growth_per_location: nil, **)
        return [] if max_growth_per_location.nil?

        growing.select { |e| e.growth > max_growth_per_location }
      end

      # One line: the verdict and the totals.
      def summary(max_growth: 0, max_growth_per_location: nil)
        ok = passed?(max_growth: max_growth, max_growth_per_location: max_growth_per_location)
        what = "#{rounds} round#{'s' unless rounds == 1} after #{warmup} warmup"
        live = "live #{Growth.human_size(live_before)} -> #{Growth.human_size(live_after)}"
        return "mwrap: passed: no location grew in every one of #{what} (#{live})" if growing.empty?

        grew = "#{growing.size} location#{'s' unless growing.size == 1} grew in every one of #{what}, " \
               "#{Growth.bytes_with_exact(total_growth)} in total"
        limits = Growth.limits_text(max_growth, max_growth_per_location)
        "mwrap: #{ok ? 'passed' : 'FAILED'}: #{grew} (#{limits}; #{live})"
      end

      # The table of growing locations, largest first, for a CI log. Rows
      # over max_growth_per_location are marked with "!". Empty string when
      # nothing grew.
      def table(limit: TABLE_LIMIT, max_growth_per_location: nil, **)
        Growth.format_table(growing, limit: limit, max_growth_per_location: max_growth_per_location)
      end

      # Summary line and table: what the rake task prints and the matchers
      # put in their failure message.
      def failure_message(limit: TABLE_LIMIT, max_growth: 0, max_growth_per_location: nil)
        text = summary(max_growth: max_growth, max_growth_per_location: max_growth_per_location)
        body = table(limit: limit, max_growth_per_location: max_growth_per_location)
        body.empty? ? text : "#{text}\n#{body}"
      end

      # The report as JSON-ready data (string keys); format in the README.
      def to_h(max_growth: 0, max_growth_per_location: nil)
        over = over_limit(max_growth_per_location: max_growth_per_location).map(&:location)
        {
          "format" => FORMAT,
          "mwrap_version" => Mwrap::VERSION,
          "passed" => passed?(max_growth: max_growth, max_growth_per_location: max_growth_per_location),
          "rounds" => rounds,
          "warmup" => warmup,
          "min_growth" => min_growth,
          "max_growth" => max_growth,
          "max_growth_per_location" => max_growth_per_location,
          "ignore" => ignore.map { |pattern| Growth.pattern_text(pattern) },
          "total_growth" => total_growth,
          "live_before" => live_before,
          "live_after" => live_after,
          "duration" => duration&.round(3),
          "growing" => growing.map { |e| e.to_h.merge("over_limit" => over.include?(e.location)) },
          "ignored" => ignored
        }
      end

      # JSON text of #to_h (JSON.generate(report) works too, with no limits).
      def to_json(state = nil, max_growth: 0, max_growth_per_location: nil)
        to_h(max_growth: max_growth, max_growth_per_location: max_growth_per_location).to_json(state)
      end

      def inspect
        "#<#{self.class.name} rounds=#{rounds} warmup=#{warmup} growing=#{growing.size} " \
          "total_growth=#{total_growth}>"
      end
    end

    module_function

    # Runs the block `warmup` times, then `rounds` times, snapshotting live
    # memory per location after the warmup and after every round (after a
    # full GC). Returns a Report. See Mwrap.measure_growth.
    def measure(rounds: 5, warmup: 2, min_growth: 0, ignore: [])
      raise ArgumentError, "Mwrap.measure_growth needs a block (the workload, run once per round)" unless block_given?

      ignore = check_options!(rounds: rounds, warmup: warmup, min_growth: min_growth, ignore: ignore)
      raise NotPreloadedError unless Mwrap.preloaded?

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

    # The decision, on plain data (no preload needed). `snapshots` holds
    # the post-warmup snapshot then one per round, each in the shape of
    # Mwrap.live_snapshot ({ location => [live_bytes, live_count,
    # allocations, frees, total] }; a missing location has nothing live);
    # all but the last may hold just live bytes ({ location => Integer }).
    # `counts` ({ location => [allocations, frees] } at the post-warmup
    # point) makes allocations/frees count the measured rounds only; without
    # it they come from the first snapshot (0 where absent).
    #
    # A location is growing when its live bytes rose in every round (each
    # delta > 0), its growth (last - first) is above min_growth and no
    # ignore pattern matches it.
    def analyze(snapshots, rounds: snapshots.size - 1, warmup: 0, min_growth: 0, ignore: [], counts: nil,
                duration: nil)
      unless snapshots.is_a?(Array) && snapshots.size >= 2
        raise ArgumentError, "analyze needs the post-warmup snapshot and at least one round's"
      end

      ignore = Array(ignore)
      base = snapshots.first
      last = snapshots.last
      unless last.each_value.all?(Array)
        raise ArgumentError, "the last snapshot needs whole Mwrap.live_snapshot rows " \
                             "([live_bytes, live_count, allocations, frees, total])"
      end
      growing = []
      ignored = []
      last.each do |location, row|
        growth = row[LIVE_BYTES] - live_bytes(base, location)
        next if growth <= min_growth

        per_round = snapshots.each_cons(2).map { |a, b| live_bytes(b, location) - live_bytes(a, location) }
        next unless per_round.all?(&:positive?)

        if ignored?(location, ignore)
          ignored << location
          next
        end
        allocations0, frees0 = baseline_counts(base, counts, location)
        growing << Entry.new(location: location, growth: growth, per_round: per_round,
                             allocations: row[ALLOCATIONS] - allocations0, frees: row[FREES] - frees0,
                             live: row[LIVE_BYTES], live_count: row[LIVE_COUNT])
      end
      live_total = lambda do |snapshot|
        snapshot.sum { |location, _| ignore.empty? || !ignored?(location, ignore) ? live_bytes(snapshot, location) : 0 }
      end
      Report.new(growing: growing, rounds: rounds, warmup: warmup, min_growth: min_growth, ignore: ignore,
                 ignored: ignored.sort, live_before: live_total.call(base), live_after: live_total.call(last),
                 duration: duration)
    end

    def live_bytes(snapshot, location)
      row = snapshot[location]
      case row
      when nil then 0
      when Integer then row
      else row[LIVE_BYTES]
      end
    end

    def baseline_counts(base, counts, location)
      if counts
        counts.fetch(location, [0, 0])
      elsif (row = base[location]).is_a?(Array)
        [row[ALLOCATIONS], row[FREES]]
      else
        [0, 0]
      end
    end

    # A String pattern matches locations containing it; anything else
    # (Regexp, Proc) matches by ===.
    def ignored?(location, patterns)
      patterns.any? { |p| p.is_a?(String) ? location.include?(p) : p === location } # rubocop:disable Style/CaseEquality
    end

    def pattern_text(pattern)
      case pattern
      when Regexp then pattern.inspect
      when String then pattern
      else pattern.inspect
      end
    end

    # Validates measure_growth's options; returns `ignore` as an Array.
    def check_options!(rounds:, warmup:, min_growth:, ignore:)
      unless rounds.is_a?(Integer) && rounds >= 2
        raise ArgumentError, "rounds must be an Integer >= 2 (growth is decided over several rounds), " \
                             "got #{rounds.inspect}"
      end
      unless warmup.is_a?(Integer) && warmup >= 0
        raise ArgumentError, "warmup must be an Integer >= 0, got #{warmup.inspect}"
      end
      unless min_growth.is_a?(Integer) && min_growth >= 0
        raise ArgumentError, "min_growth must be an Integer >= 0 (bytes), got #{min_growth.inspect}"
      end
      patterns = ignore.is_a?(Array) ? ignore : [ignore]
      patterns.each do |p|
        next if p.is_a?(Regexp) || p.is_a?(String) || p.is_a?(Proc)

        raise ArgumentError, "ignore takes Regexps, Strings (substrings) or Procs, got #{p.inspect}"
      end
      patterns
    end

    def check_limits!(max_growth, max_growth_per_location)
      unless max_growth.is_a?(Integer) && max_growth >= 0
        raise ArgumentError, "max_growth must be an Integer >= 0 (bytes), got #{max_growth.inspect}"
      end
      return if max_growth_per_location.nil? || (max_growth_per_location.is_a?(Integer) && max_growth_per_location >= 0)

      raise ArgumentError, "max_growth_per_location must be nil or an Integer >= 0 (bytes), " \
                           "got #{max_growth_per_location.inspect}"
    end

    UNITS = %w[kB MB GB TB PB].freeze

    # "512 B", "1.2 kB", "34.5 MB" (powers of 1000, like the limits people
    # write: 1_000_000 is "1.0 MB").
    def human_size(bytes)
      sign = bytes.negative? ? "-" : ""
      n = bytes.abs
      return "#{sign}#{n} B" if n < 1000

      value = n.to_f
      unit = nil
      UNITS.each do |u|
        value /= 1000.0
        unit = u
        break if value.round(1) < 1000
      end
      "#{sign}#{format('%.1f', value)} #{unit}"
    end

    # "1.2 MB (1,234,567 bytes)"; small sizes just "512 bytes".
    def bytes_with_exact(bytes)
      return "#{bytes} byte#{'s' unless bytes == 1}" if bytes.abs < 1000

      "#{human_size(bytes)} (#{group_digits(bytes)} bytes)"
    end

    def group_digits(n)
      n.to_s.reverse.scan(/\d{1,3}/).join(",").reverse.then { |s| n.negative? ? "-#{s}" : s }
    end

    def limits_text(max_growth, max_growth_per_location)
      text = "limit #{bytes_with_exact(max_growth)} in total"
      text += ", #{bytes_with_exact(max_growth_per_location)} per location" if max_growth_per_location
      text
    end

    HEADER = ["", "growth", "bytes", "per round", "allocs", "frees", "location"].freeze
    RIGHT_ALIGNED = [false, true, true, false, true, true, false].freeze

    # Aligned columns: marker, growth (human), growth (exact bytes), growth
    # in each round, allocations and frees during the measured rounds,
    # location. Rows past `limit` are summed up in one last line.
    def format_table(entries, limit: TABLE_LIMIT, max_growth_per_location: nil)
      return +"" if entries.empty?

      shown = limit ? entries.first(limit) : entries
      rows = shown.map do |e|
        over = max_growth_per_location && e.growth > max_growth_per_location
        [over ? "!" : "", human_size(e.growth), group_digits(e.growth), per_round_text(e.per_round),
         group_digits(e.allocations), group_digits(e.frees), e.location]
      end
      all = [HEADER, *rows]
      widths = HEADER.each_index.map { |i| all.map { |r| r[i].length }.max }
      lines = all.map do |r|
        cells = r.each_with_index.map do |cell, i|
          next cell if i == r.size - 1

          RIGHT_ALIGNED[i] ? cell.rjust(widths[i]) : cell.ljust(widths[i])
        end
        cells.join("  ").rstrip
      end
      rest = entries.drop(shown.size)
      unless rest.empty?
        lines << "… and #{rest.size} more growing location#{'s' unless rest.size == 1} " \
                 "(#{bytes_with_exact(rest.sum(&:growth))}); the JSON report lists them all"
      end
      lines.join("\n") << "\n"
    end

    # "+1.0 kB +1.0 kB …": each round's gain; long lists keep both ends.
    def per_round_text(per_round)
      cells = per_round.map { |d| "+#{human_size(d)}" }
      if cells.size > PER_ROUND_SHOWN
        head = PER_ROUND_SHOWN / 2
        tail = PER_ROUND_SHOWN - head - 1
        cells = [*cells.first(head), "…(#{cells.size - head - tail})", *cells.last(tail)]
      end
      cells.join(" ")
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
  # Raises Mwrap::NotPreloadedError when the process is not running under
  # the preload (start it with `mwrap …`).
  def self.measure_growth(rounds: 5, warmup: 2, min_growth: 0, ignore: [], &block)
    Growth.measure(rounds: rounds, warmup: warmup, min_growth: min_growth, ignore: ignore, &block)
  end
end
