# frozen_string_literal: true

require "mwrap/growth/report"

module Mwrap
  module Growth
    # Indexes into one row of Mwrap.live_snapshot.
    LIVE_BYTES = 0
    LIVE_COUNT = 1
    ALLOCATIONS = 2
    FREES = 3

    module_function

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
  end
end
