# frozen_string_literal: true

require "json"
require "mwrap/version"
require "mwrap/growth/options"

module Mwrap
  module Growth
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
    # max_growth_per_location: nil = no per-location limit), so the same
    # limits can be passed to each; an unknown keyword is an ArgumentError.
    class Report
      # Keywords of #table and #failure_message.
      TABLE_KEYWORDS = [:limit, *LIMIT_KEYWORDS].freeze

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
      def passed?(max_growth: 0, max_growth_per_location: nil, **unknown)
        check_limits!(:passed?, unknown, max_growth, max_growth_per_location)
        total_growth <= max_growth && over_limit(max_growth_per_location: max_growth_per_location).empty?
      end

      # Entries that gained more than max_growth_per_location (none when
      # nil). Takes max_growth too, which does not change the answer.
      def over_limit(max_growth: 0, max_growth_per_location: nil, **unknown)
        check_limits!(:over_limit, unknown, max_growth, max_growth_per_location)
        return [] if max_growth_per_location.nil?

        growing.select { |e| e.growth > max_growth_per_location }
      end

      # One line: the verdict and the totals.
      def summary(max_growth: 0, max_growth_per_location: nil, **unknown)
        check_limits!(:summary, unknown, max_growth, max_growth_per_location)
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
      # nothing grew. Takes max_growth too, which does not change the table.
      def table(limit: TABLE_LIMIT, max_growth: 0, max_growth_per_location: nil, **unknown)
        check_limits!(:table, unknown, max_growth, max_growth_per_location, known: TABLE_KEYWORDS)
        Growth.format_table(growing, limit: limit, max_growth_per_location: max_growth_per_location)
      end

      # Summary line and table: what the rake task prints and the matchers
      # put in their failure message.
      def failure_message(limit: TABLE_LIMIT, max_growth: 0, max_growth_per_location: nil, **unknown)
        check_limits!(:failure_message, unknown, max_growth, max_growth_per_location, known: TABLE_KEYWORDS)
        text = summary(max_growth: max_growth, max_growth_per_location: max_growth_per_location)
        body = table(limit: limit, max_growth_per_location: max_growth_per_location)
        body.empty? ? text : "#{text}\n#{body}"
      end

      # The report as JSON-ready data (string keys); format in the README.
      def to_h(max_growth: 0, max_growth_per_location: nil, **unknown)
        check_limits!(:to_h, unknown, max_growth, max_growth_per_location)
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
      def to_json(state = nil, max_growth: 0, max_growth_per_location: nil, **unknown)
        check_limits!(:to_json, unknown, max_growth, max_growth_per_location)
        to_h(max_growth: max_growth, max_growth_per_location: max_growth_per_location).to_json(state)
      end

      def inspect
        "#<#{self.class.name} rounds=#{rounds} warmup=#{warmup} growing=#{growing.size} " \
          "total_growth=#{total_growth}>"
      end

      private

      # What every method taking the limits checks first: no unknown
      # keyword (the message names `method`), and valid limits.
      def check_limits!(method, unknown, max_growth, max_growth_per_location, known: LIMIT_KEYWORDS)
        Growth.check_keywords!(unknown, known, "Mwrap::Growth::Report##{method}")
        Growth.check_limits!(max_growth, max_growth_per_location)
      end
    end

    module_function

    def pattern_text(pattern)
      case pattern
      when Regexp then pattern.inspect
      when String then pattern
      else pattern.inspect
      end
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
end
