# frozen_string_literal: true

require_relative "html"
require_relative "json_dump"
require_relative "flame_graph"

module Mwrap
  # `mwrapctl report DUMP.json`: one self-contained HTML page of a
  # `dump_format:json` dump: totals, a sortable table of the locations, an
  # icicle graph of live bytes by stack, the leak scan and the memory
  # breakdown when the dump has them.
  class Report
    # Rows of the locations table, the largest live bytes first: beyond a
    # few thousand rows a browser slows down and nobody reads on.
    MAX_ROWS = 2000

    def initialize(dump)
      @dump = dump
    end

    def html
      Html.page("mwrap report: #{File.basename(@dump.path)}", [header, locations_table, flame_graph,
                                                              leak_scan, memory].compact.join("\n"))
    end

    private

    def h(text)
      Html.h(text)
    end

    def header
      keys = %w[total allocations frees live_bytes live_count]
      keys += JsonDump::LEAK_NUMBERS if @dump.leaks?
      cells = keys.map { |k| "<tr><th>#{k}</th><td class=\"n\">#{@dump.sum(k)} <span class=\"u\">#{unit(k)}</span></td></tr>" }
      rss = @dump.memory && @dump.memory["rss"]
      cells << "<tr><th>rss at exit</th><td class=\"n\">#{rss} <span class=\"u\">(#{h(Html.bytes(rss))})</span></td></tr>" if rss.is_a?(Integer)
      <<~HTML
        <h1>mwrap report: #{h(@dump.path)}</h1>
        <p>#{@dump.locations.size} locations. Sums over them:</p>
        <table class="kv" id="totals"><tbody>
        #{cells.join("\n")}
        </tbody></table>
      HTML
    end

    def unit(key)
      key.end_with?("bytes") || key == "total" ? "(#{h(Html.bytes(@dump.sum(key)))})" : ""
    end

    def locations_table
      leaks = @dump.leaks?
      # dumps of mwrap before temporary allocations were counted have none
      temporary = @dump.locations.any? { |l| l.key?("temporary") }
      columns = [["live_bytes", :num], ["live_count", :num], ["total", :num], ["allocations", :num], ["frees", :num]]
      columns << ["temporary", :num] if temporary
      columns += [["leaked_bytes", :num], ["leaked_count", :num]] if leaks
      columns << ["location", :text]
      sorted = @dump.locations.sort_by { |l| [-l["live_bytes"], -l["total"], l["location"]] }
      shown = sorted.first(MAX_ROWS)
      rows = shown.map do |l|
        nums = %w[live_bytes live_count total allocations frees]
        nums << "temporary" if temporary
        nums += JsonDump::LEAK_NUMBERS if leaks
        nums.map { |k| l[k].nil? ? "-" : l[k].to_s } << h(l["location"])
      end
      note = if sorted.size > shown.size
               rest = sorted.drop(MAX_ROWS).sum { |l| l["live_bytes"] }
               %(<p class="note">Showing the #{MAX_ROWS} locations with the most live bytes of #{sorted.size}; ) +
                 %(the other #{sorted.size - MAX_ROWS} hold #{rest} bytes live (#{h(Html.bytes(rest))}).</p>\n)
             end
      <<~HTML
        <h2>Locations</h2>
        <p class="u">Largest live bytes first; click a heading to sort by it (numbers largest first, click again to reverse).</p>
        #{note}#{Html.sortable_table(columns, rows, id: 'locations')}
      HTML
    end

    def flame_graph
      graph = FlameGraph.new(@dump.stacks)
      svg = graph.svg
      note = graph.note
      <<~HTML
        <h2>Live bytes by stack</h2>
        <p class="u">Outermost frame at the top, Ruby frames (warm) above native ones (blue); a box's width is its share of the #{graph.total} bytes live (#{h(Html.bytes(graph.total))}). Hover a box for its frame and bytes.</p>
        #{note ? %(<p class="note">#{h(note)}</p>\n) : ''}#{svg}
      HTML
    end

    def leak_scan
      return nil unless @dump.leak_scan

      <<~HTML
        <h2>Leak scan</h2>
        <p class="u">Blocks still live at exit that no pointer reaches (dump_leaks:1).</p>
        #{Html.key_value_table(@dump.leak_scan, id: 'leak_scan')}
      HTML
    end

    def memory
      return nil unless @dump.memory

      <<~HTML
        <h2>Memory breakdown</h2>
        <p class="u">The parts of RSS as the process exited (see README, "Memory breakdown").</p>
        #{Html.key_value_table(@dump.memory, id: 'memory')}
      HTML
    end
  end
end
