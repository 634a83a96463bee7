# frozen_string_literal: true

require_relative "html"
require_relative "json_dump"

module Mwrap
  # `mwrapctl diff A.json B.json`: what changed between two
  # `dump_format:json` dumps, per location and per stack, the largest
  # growth of live bytes first.
  #
  # Native names are matched by object and offset, not by address: ASLR
  # moves every address between runs, so ` [0x7f…]` is dropped from
  # `obj(func+0x1c) [0x7f…]` and `obj(+0x1234) [0x…]`. A bare `[0x…]` (no
  # object holds it) has nothing else to go by and is kept as it is.
  class Diff
    NUMBERS = %w[live_bytes live_count total allocations].freeze
    # Rows of each HTML table (the text tables show -n N).
    MAX_ROWS = 2000

    # One row: a key's numbers in A and B (nil where it is absent).
    Row = Struct.new(:name, :a, :b) do
      def status
        return "new" unless a
        return "gone" unless b

        "both"
      end

      def growth(key)
        (b ? b[key] : 0) - (a ? a[key] : 0)
      end

      def sort_key
        [-growth("live_bytes"), -growth("total"), -growth("allocations"), name]
      end
    end

    # `name` with the run's addresses dropped (see above).
    def self.normalise(name)
      name.gsub(/\) \[0x\h+\]/, ")")
    end

    attr_reader :a, :b

    def initialize(a, b)
      @a = a
      @b = b
    end

    def locations
      @locations ||= rows(@a.locations, @b.locations) { |l| Diff.normalise(l["location"]) }
    end

    # Per (location, stack); a stack is shown as its frames, outermost
    # first (the flame graph's order), after its location.
    def stacks
      @stacks ||= rows(@a.stacks, @b.stacks) { |st| Diff.stack_name(st) }
    end

    def self.stack_name(stack)
      frames = [*stack.ruby.reverse, *stack.native.reverse].map { |f| normalise(f) }
      frames.empty? ? normalise(stack.location) : "#{normalise(stack.location)}: #{frames.join(' ; ')}"
    end

    # Whether any stack has frames (else the stack rows repeat the locations).
    def stacks?
      [@a, @b].any? { |d| d.stacks.any? { |st| !(st.ruby.empty? && st.native.empty?) } }
    end

    def text(limit)
      out = +""
      out << "A: #{@a.path} (#{@a.locations.size} locations, #{@a.sum('live_bytes')} bytes live)\n"
      out << "B: #{@b.path} (#{@b.locations.size} locations, #{@b.sum('live_bytes')} bytes live)\n"
      out << summary_line << "\n\n"
      out << table_text("locations", locations, limit)
      out << "\n" << table_text("stacks", stacks, limit) if stacks?
      out
    end

    def html
      body = +""
      body << "<h1>mwrap diff</h1>\n"
      body << "<p>A: #{Html.h(@a.path)} (#{@a.locations.size} locations, #{@a.sum('live_bytes')} bytes live)<br>\n"
      body << "B: #{Html.h(@b.path)} (#{@b.locations.size} locations, #{@b.sum('live_bytes')} bytes live)<br>\n"
      body << "#{Html.h(summary_line)}</p>\n"
      body << "<p class=\"u\">Largest growth of live bytes first; click a heading to sort by it. " \
              "Native frames are matched by object and offset (addresses dropped).</p>\n"
      body << table_html("Locations", locations, "locations")
      body << table_html("Stacks", stacks, "stacks") if stacks?
      Html.page("mwrap diff: #{File.basename(@a.path)} → #{File.basename(@b.path)}", body)
    end

    private

    def summary_line
      %w[live_bytes total allocations].map do |k|
        "#{k} #{@a.sum(k)} -> #{@b.sum(k)} (#{signed(@b.sum(k) - @a.sum(k))})"
      end.join(", ")
    end

    # Rows of the union of A's and B's items by `key`, numbers summed per
    # key (two addresses of one run could share a normalised name).
    def rows(items_a, items_b)
      sums = Hash.new { |hash, k| hash[k] = [nil, nil] }
      [items_a, items_b].each_with_index do |items, side|
        items.each do |item|
          cell = (sums[yield(item)][side] ||= NUMBERS.to_h { |n| [n, 0] })
          NUMBERS.each { |n| cell[n] += item[n] }
        end
      end
      sums.map { |name, (a, b)| Row.new(name, a, b) }.sort_by(&:sort_key)
    end

    def signed(n)
      n.positive? ? "+#{n}" : n.to_s
    end

    COLUMNS = %w[live_growth live_count_growth total_growth allocations_growth live_bytes_a live_bytes_b status].freeze

    def cells(row)
      [signed(row.growth("live_bytes")), signed(row.growth("live_count")), signed(row.growth("total")),
       signed(row.growth("allocations")), row.a ? row.a["live_bytes"].to_s : "-",
       row.b ? row.b["live_bytes"].to_s : "-", row.status]
    end

    def table_text(what, rows, limit)
      out = +"#{rows.size} #{what}#{rows.size > limit ? ", the #{limit} of largest growth" : ''}:\n"
      line = ->(c, name) { format("%12s %17s %12s %18s %12s %12s %-6s %s\n", *c, name) }
      out << line.call(COLUMNS, what == "stacks" ? "location: frames (outermost first)" : "location")
      rows.first(limit).each { |r| out << line.call(cells(r), r.name) }
      out
    end

    def table_html(title, rows, id)
      columns = COLUMNS.map { |c| [c, c == "status" ? :text : :num] } << [title == "Stacks" ? "location: frames" : "location", :text]
      shown = rows.first(MAX_ROWS)
      html_rows = shown.map do |r|
        c = cells(r).map { |v| Html.h(v) }
        growth = r.growth("live_bytes")
        c[0] = %(<span class="#{growth.positive? ? 'grow' : 'shrink'}">#{c[0]}</span>) unless growth.zero?
        c << Html.h(r.name)
      end
      note = rows.size > shown.size ? %(<p class="note">Showing #{MAX_ROWS} of #{rows.size} rows, the largest growth first.</p>\n) : ""
      "<h2>#{Html.h(title)}</h2>\n#{note}#{Html.sortable_table(columns, html_rows, id: id)}"
    end
  end
end
