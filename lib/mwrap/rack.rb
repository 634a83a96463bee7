# frozen_string_literal: true

require "cgi"
require "erb"
require "uri"
require "mwrap"

module Mwrap
  # A Rack application showing Mwrap's tables as HTML, for a process
  # running under the preload. Mount it in config.ru:
  #
  #   require "mwrap/rack"
  #   map("/mwrap") { run Mwrap::RackApp.new }
  #
  # Routes (GET or HEAD):
  #
  # * <tt>/</tt> — links to the pages below.
  # * <tt>/each/MIN?sort=COLUMN</tt> — every location whose total is above
  #   MIN bytes: total, allocations, frees, mean_life, max_life, location;
  #   sorted by COLUMN (default total; numbers largest first, locations
  #   A–Z). Each location links to its <tt>/at/</tt> page. With
  #   <tt>leaks=1</tt> the page runs one Mwrap.leaks scan and adds the
  #   leaked_bytes and leaked_count columns (a link, never on every view:
  #   a scan copies the process).
  # * <tt>/at/LOCATION</tt> — one location (percent-encoded, "/" as %2F):
  #   its counters and its live allocations (size, generation); 404 when
  #   Mwrap[LOCATION] is nil.
  # * <tt>/heap_pages</tt> — Mwrap::HeapPageBody.stat, a few GC.stat
  #   values and every live heap page.
  # * <tt>/breakdown</tt> — Mwrap.memory_report as a table: where the
  #   resident memory is, part by part, and its advice line; with a
  #   "trim" button, a POST to <tt>/trim</tt>, which runs Mwrap.trim and
  #   shows the page again with what it gave back.
  #
  # A malformed MIN or an unknown sort column is a 400 naming it; any other
  # path is a 404. POST is allowed on <tt>/trim</tt> only. Every page is built as one String inside Mwrap.quiet (so
  # serving it records nothing), HTML-escaped, with Cache-Control: no-cache.
  # It depends on no Rack code and works with Rack 2 and 3.
  #
  # Not named Mwrap::Rack: inside `module Mwrap`, `Rack` must mean ::Rack.
  class RackApp
    # Columns of /each, in order; the sort values allowed.
    COLUMNS = %w[total allocations frees mean_life max_life location].freeze
    # Columns of /each?leaks=1.
    LEAK_COLUMNS = %w[total allocations frees mean_life max_life leaked_bytes leaked_count location].freeze
    # GC.stat keys shown on /heap_pages (those this Ruby knows).
    GC_STAT_KEYS = %i[count heap_allocated_pages heap_live_slots heap_free_slots
                      total_allocated_pages total_freed_pages].freeze
    HTML = "text/html; charset=utf-8"
    # Percent-decoding alone ("+" stays "+"), of any bytes. URI::DEFAULT_PARSER
    # is this parser in Ruby 3.1, but an RFC 3986 one whose #unescape warns
    # from uri 1.0 (Ruby 3.4); URI::RFC2396_PARSER is not in Ruby 3.1's uri.
    URI_DECODER = URI::RFC2396_Parser.new

    def call(env)
      method = env["REQUEST_METHOD"]
      if method == "POST" && env["PATH_INFO"].to_s == "/trim"
        return Mwrap.quiet { breakdown(env["SCRIPT_NAME"].to_s, trimmed: Mwrap.trim) }
      end
      unless method == "GET" || method == "HEAD"
        return Mwrap.quiet do
          error(405, "method #{method.inspect} is not allowed (GET or HEAD only)", "allow" => "GET, HEAD")
        end
      end
      Mwrap.quiet do
        status, headers, body = route(env)
        [status, headers, method == "HEAD" ? [] : body]
      end
    end

    private

    def route(env)
      path = env["PATH_INFO"].to_s
      base = env["SCRIPT_NAME"].to_s
      case path
      when "", "/" then index(base)
      when %r{\A/each/([^/]*)\z} then each_page(base, Regexp.last_match(1), env["QUERY_STRING"].to_s)
      when %r{\A/at/(.+)\z}m then at_page(base, location_from(env, Regexp.last_match(1)))
      when "/heap_pages" then heap_pages
      when "/breakdown" then breakdown(base)
      when "/trim" then error(405, "/trim takes a POST (the button on /breakdown)", "allow" => "POST")
      else error(404, "not found: #{path.inspect}")
      end
    end

    def index(base)
      page("mwrap", <<~HTML)
        <ul>
        <li><a href="#{h(base)}/each/0">every location</a></li>
        <li><a href="#{h(base)}/each/1048576">locations above 1 MiB</a></li>
        <li><a href="#{h(base)}/heap_pages">heap pages</a></li>
        <li><a href="#{h(base)}/breakdown">memory breakdown</a></li>
        <li><a href="#{h(base)}/each/0?leaks=1&amp;sort=leaked_bytes">leaked memory</a> (scans a copy of
        the process: the link runs Mwrap.leaks)</li>
        </ul>
        <p>preloaded: #{Mwrap.preloaded?}</p>
      HTML
    end

    def each_page(base, min_text, query)
      return error(400, "bad MIN #{min_text.inspect} in /each/MIN: expected a non-negative integer") unless
        min_text.match?(/\A\d+\z/)

      min = Integer(min_text, 10)
      params = query_params(query)
      return params if params.is_a?(Array) # a 400 response

      leaks = params["leaks"] == "1"
      columns = leaks ? LEAK_COLUMNS : COLUMNS
      sort = params.fetch("sort", "total")
      unless columns.include?(sort)
        return error(400, "bad sort column #{sort.inspect}: expected one of #{columns.join(', ')}" \
                          "#{leaks ? '' : ' (leaked_bytes and leaked_count come with leaks=1)'}")
      end

      leaked = {}
      if leaks
        begin
          leaked = Mwrap.leaks
        rescue Mwrap::Error => e
          return error(503, e.message)
        end
      end
      rows = []
      Mwrap.each(min) do |loc, total, allocations, frees, age_total, max_life|
        mean_life = frees.zero? ? Float::INFINITY : age_total.fdiv(frees)
        leaked_bytes, leaked_count = leaked.fetch(loc, [0, 0])
        rows << { "total" => total, "allocations" => allocations, "frees" => frees, "mean_life" => mean_life,
                  "max_life" => max_life, "leaked_bytes" => leaked_bytes, "leaked_count" => leaked_count,
                  "location" => loc }
      end
      if sort == "location"
        rows.sort_by! { |r| r["location"] }
      else
        rows.sort_by! { |r| [-r[sort], r["location"]] }
      end

      extra = leaks ? "leaks=1&amp;" : ""
      out = +"<p>#{rows.size} locations with a total above #{min} bytes; " \
             "GC generation #{GC.count}. Click a column to sort by it.</p>\n"
      out << if leaks
               leak_summary
             else
               %(<p><a href="#{h(base)}/each/#{min}?leaks=1&amp;sort=leaked_bytes">add leaked bytes</a> ) +
                 "(runs Mwrap.leaks: scans a copy of the process)</p>\n"
             end
      out << "<table>\n<tr>"
      columns.each do |c|
        out << (c == sort ? "<th>#{c}</th>" : %(<th><a href="#{h(base)}/each/#{min}?#{extra}sort=#{c}">#{c}</a></th>))
      end
      out << "</tr>\n"
      rows.each do |r|
        loc = r["location"]
        # Every byte but A-Z a-z 0-9 _ . ~ - percent-encoded, "/" too: one path segment.
        href = "#{base}/at/#{ERB::Util.url_encode(loc)}"
        out << "<tr>"
        columns.each do |c|
          out << case c
                 when "location" then "<td><a href=\"#{h(href)}\">#{h(loc)}</a></td>"
                 when "mean_life" then "<td>#{format_life(r[c])}</td>"
                 else "<td>#{r[c]}</td>"
                 end
        end
        out << "</tr>\n"
      end
      out << "</table>\n"
      page("Mwrap.each(#{min})", out)
    end

    # One line on the scan Mwrap.leaks just ran.
    def leak_summary
      s = Mwrap.last_leak_scan
      return "<p>No leak scan without the preload.</p>\n" unless s

      format("<p>Leak scan: %<lb>d of %<b>d live blocks (%<lby>d of %<by>d bytes) are reached by no pointer; " \
             "the process stood still %<pause>.1f ms for the copy, which scanned for %<scan>.1f ms.</p>\n",
             lb: s[:leaked_blocks], b: s[:blocks], lby: s[:leaked_bytes], by: s[:bytes],
             pause: s[:pause_seconds] * 1000, scan: s[:scan_seconds] * 1000)
    end

    # The query string's parameters (the last of each name), or a 400
    # response.
    def query_params(query)
      URI.decode_www_form(query).to_h
    rescue ArgumentError => e
      error(400, "bad query string #{query.inspect}: #{e.message}")
    end

    def at_page(base, location)
      loc = Mwrap[location]
      return error(404, "no allocation was ever made at #{location.inspect}") unless loc

      live = +""
      loc.each { |size, generation| live << "<tr><td>#{size}</td><td>#{generation}</td></tr>\n" }
      counters = {
        "total" => loc.total, "allocations" => loc.allocations, "frees" => loc.frees,
        "mean_lifespan" => format_life(loc.mean_lifespan), "max_lifespan" => loc.max_lifespan,
        "live_bytes" => loc.live_bytes, "live_count" => loc.live_count
      }
      page("live allocations at #{loc.name}", <<~HTML)
        <p><a href="#{h(base)}/each/0">every location</a>; GC generation #{GC.count}</p>
        <table>
        #{counters.map { |k, v| "<tr><th>#{k}</th><td>#{h(v.to_s)}</td></tr>" }.join("\n")}
        </table>
        <h2>live allocations</h2>
        <table>
        <tr><th>size</th><th>generation</th></tr>
        #{live}</table>
      HTML
    end

    def heap_pages
      stat = Mwrap::HeapPageBody.stat
      gc = GC.stat
      rows = +""
      count = Mwrap::HeapPageBody.each do |address, generation|
        rows << format("<tr><td>0x%x</td><td>%d</td></tr>\n", address, generation)
      end
      page("heap pages", <<~HTML)
        <table>
        <tr><th>stat</th><th>value</th></tr>
        #{stat.map { |k, v| "<tr><td>#{h(k.to_s)}</td><td>#{h(v.to_s)}</td></tr>" }.join("\n")}
        #{GC_STAT_KEYS.select { |k| gc.key?(k) }.map { |k| "<tr><td>GC.stat(#{h(k.inspect)})</td><td>#{gc[k]}</td></tr>" }.join("\n")}
        </table>
        <p>#{count} live heap pages (page size #{h(Mwrap::HeapPageBody.page_size.inspect)} bytes).
        Finite lifespans mean pages were freed and may indicate fragmentation.</p>
        <table>
        <tr><th>address</th><th>generation</th></tr>
        #{rows}</table>
      HTML
    end

    # Mwrap.memory_report's lines as table rows: its columns are separated
    # by two spaces or more. Rows of parts that are part of another (or
    # shown for information) are indented in the report, and here.
    def breakdown(base, trimmed: :none)
      header, *lines = Mwrap.memory_report.lines(chomp: true)
      advice = lines.select { |l| l.start_with?("advice:") }
      rows = +""
      (lines - advice).each do |line|
        cells = line.strip.split(/ {2,}/)
        cls = line.start_with?(" ") ? ' class="sub"' : ""
        rows << "<tr#{cls}>" << cells.map { |c| "<td>#{h(c)}</td>" }.join << "</tr>\n"
      end
      done = case trimmed
             when :none then ""
             when nil then "<p>Mwrap.trim: the allocator gave nothing back (jemalloc refused to purge).</p>\n"
             else "<p>Mwrap.trim gave #{trimmed} bytes of RSS back.</p>\n"
             end
      page("memory breakdown", <<~HTML)
        #{done}<table>
        <tr>#{header.strip.split(/ {2,}/).map { |c| "<th>#{h(c)}</th>" }.join}</tr>
        #{rows}</table>
        #{advice.map { |a| "<p>#{h(a)}</p>" }.join("\n")}
        <form method="post" action="#{h(base)}/trim"><button type="submit">trim (Mwrap.trim)</button></form>
        <p>Page-level parts are resident pages (smaps, mincore); the malloc parts are the allocator's byte
        counts. Indented rows are part of another or for information, not summed.
        <a href="#{h(base)}/">index</a></p>
      HTML
    end

    # The location named by the /at/ path. Servers differ: WEBrick decodes
    # PATH_INFO and squeezes "//", Puma and Rack::MockRequest leave it
    # encoded. The raw request URI, when there is one, is used as sent.
    def location_from(env, path_rest)
      uri = env["REQUEST_URI"].to_s
      raw = begin
        URI.parse(uri).path if uri != ""
      rescue URI::Error
        nil
      end
      encoded = raw && raw[%r{/at/([^/]+)\z}, 1]
      # Decoded as bytes, then named in UTF-8 as Mwrap.each names locations
      # (a "%" not followed by two hex digits stays as it is).
      URI_DECODER.unescape((encoded || path_rest).b).force_encoding(Encoding::UTF_8)
    end

    def format_life(value)
      value.finite? ? format("%0.3f", value) : value.to_s
    end

    # HTML-escaped; names that are not valid UTF-8 (a binary path) are
    # shown with U+FFFD in place of their bad bytes.
    def h(text)
      text = text.to_s
      text = text.dup.force_encoding(Encoding::UTF_8).scrub unless text.encoding == Encoding::UTF_8 && text.valid_encoding?
      CGI.escapeHTML(text)
    end

    def page(title, body, status: 200, headers: {})
      html = +"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>#{h(title)}</title></head>\n" \
              "<body><h1>#{h(title)}</h1>\n"
      html << body << "</body></html>\n"
      [status, {
        "content-type" => HTML, "cache-control" => "no-cache",
        "content-length" => html.bytesize.to_s
      }.merge(headers), [html]]
    end

    def error(status, message, headers = {})
      page("#{status} #{message}", "<p>#{h(message)}</p>\n", status: status, headers: headers)
    end
  end

  # mwrap 0.1.0 named the application Mwrap::Rack. That name still works,
  # with a warning once per process, but is no constant, so that `Rack`
  # inside `module Mwrap` finds ::Rack.
  def self.const_missing(name)
    return super unless name == :Rack

    unless @rack_app_rename_warned
      @rack_app_rename_warned = true
      warn "Mwrap::Rack is deprecated: use Mwrap::RackApp (or MwrapRack)", uplevel: 1
    end
    RackApp
  end
end

# mwrap 2.x's name for the application.
MwrapRack = Mwrap::RackApp
