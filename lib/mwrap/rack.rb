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
  # * <tt>/each?min=&sort=&limit=&offset=</tt>, <tt>/at/LOCATION</tt> —
  #   the per-process endpoint's own pages (see README, "The live
  #   endpoint"), rendered by the preload from its tables
  #   (Mwrap.render_page), so the Rack app pages them the same way and
  #   builds no Ruby object per location: 200 rows at a time by default,
  #   sortable by any column, with live bytes and the growth since the
  #   last mark. <tt>POST /mark</tt> sets that mark.
  # * <tt>/json</tt>, <tt>/folded</tt>, <tt>/dump</tt>, <tt>/heap.pb.gz</tt>,
  #   <tt>/timeline</tt>, <tt>/peak</tt>, <tt>POST /reset</tt> — the
  #   endpoint's own pages, as it serves them.
  # * <tt>/each/MIN?sort=COLUMN</tt> — mwrap 2.x's address for the table:
  #   a redirect (301) to <tt>/each?min=MIN&sort=COLUMN</tt>.
  # * <tt>/leaks?min=MIN</tt> — runs one Mwrap.leaks scan and lists the
  #   locations with leaked blocks (a link, never on every view: a scan
  #   copies the process).
  # * <tt>/heap_pages</tt> — Mwrap::HeapPageBody.stat, a few GC.stat
  #   values and every live heap page.
  # * <tt>/breakdown</tt> — Mwrap.memory_report as a table: where the
  #   resident memory is, part by part, and its advice line; with a
  #   "trim" button, a POST to <tt>/trim</tt>, which runs Mwrap.trim and
  #   shows the page again with what it gave back.
  #
  # A malformed MIN or an unknown sort column is a 400 naming it; any other
  # path is a 404. POST is allowed on <tt>/trim</tt>, <tt>/mark</tt> and
  # <tt>/reset</tt> only. Every page is built inside Mwrap.quiet (so serving it records
  # nothing), HTML-escaped, with Cache-Control: no-cache. It depends on no
  # Rack code and works with Rack 2 and 3.
  #
  # Not named Mwrap::Rack: inside `module Mwrap`, `Rack` must mean ::Rack.
  class RackApp
    # The endpoint's own pages the app serves as they are (rendered by the
    # preload; /breakdown and /leaks are the app's, which ask Ruby too).
    PRELOAD_PAGES = %w[/json /folded /dump /heap.pb.gz /timeline /peak].freeze
    # Columns of mwrap 2.x's /each/MIN: the sort values its address allows
    # (each is a column of the preload's /each too).
    COLUMNS = %w[total allocations frees mean_life max_life location].freeze
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
      if method == "POST" && %w[/mark /reset].include?(env["PATH_INFO"].to_s)
        return Mwrap.quiet { preload_page(env, "POST", env["PATH_INFO"].to_s) }
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
      when "/each", *PRELOAD_PAGES then preload_page(env, "GET", path)
      when %r{\A/each/([^/]*)\z} then each_redirect(base, Regexp.last_match(1), env["QUERY_STRING"].to_s)
      when %r{\A/at/(.+)\z}m then preload_page(env, "GET", "/at/#{encoded_location(env, Regexp.last_match(1))}")
      when "/leaks" then leaks_page(base, env["QUERY_STRING"].to_s)
      when "/heap_pages" then heap_pages
      when "/breakdown" then breakdown(base)
      when "/trim" then error(405, "/trim takes a POST (the button on /breakdown)", "allow" => "POST")
      when "/mark", "/reset" then error(405, "#{path} takes a POST (the buttons on the index)", "allow" => "POST")
      else error(404, "not found: #{path.inspect}")
      end
    end

    def index(base)
      page("mwrap", <<~HTML)
        <ul>
        <li><a href="#{h(base)}/each">locations by live bytes</a></li>
        <li><a href="#{h(base)}/each?sort=total">locations by total</a></li>
        <li><a href="#{h(base)}/heap_pages">heap pages</a></li>
        <li><a href="#{h(base)}/breakdown">memory breakdown</a></li>
        <li><a href="#{h(base)}/leaks">leaked memory</a> (scans a copy of the process: the link runs
        Mwrap.leaks)</li>
        <li><a href="#{h(base)}/json">/json</a>, <a href="#{h(base)}/folded">/folded</a>,
        <a href="#{h(base)}/dump">/dump</a>, <a href="#{h(base)}/heap.pb.gz">/heap.pb.gz</a> (pprof),
        <a href="#{h(base)}/timeline">/timeline</a>, <a href="#{h(base)}/peak">/peak</a></li>
        </ul>
        <form method="post" action="#{h(base)}/mark"><button type="submit">mark (baseline of the growth
        column)</button></form>
        <form method="post" action="#{h(base)}/reset"><button type="submit">reset (Mwrap.reset)</button></form>
        <p>preloaded: #{Mwrap.preloaded?}</p>
      HTML
    end

    # A page the preload renders from its tables (nil: no preload).
    def preload_page(env, method, path)
      status, headers, body = Mwrap.render_page(method, path, env["QUERY_STRING"].to_s, env["SCRIPT_NAME"].to_s)
      unless status
        return page("no preload", "<p>This process does not run under mwrap's preload: it has no tables. " \
                                  "Start it with <code>mwrap</code>.</p>\n")
      end
      [status, headers.merge("cache-control" => "no-cache", "content-length" => body.bytesize.to_s), [body]]
    end

    # mwrap 2.x's /each/MIN?sort=COLUMN: checked, then sent on to /each.
    def each_redirect(base, min_text, query)
      return error(400, "bad MIN #{min_text.inspect} in /each/MIN: expected a non-negative integer") unless
        min_text.match?(/\A\d+\z/)

      params = query_params(query)
      return params if params.is_a?(Array) # a 400 response

      sort = params.fetch("sort", "total")
      return error(400, "bad sort column #{sort.inspect}: expected one of #{COLUMNS.join(', ')}") unless
        COLUMNS.include?(sort)

      to = "#{base}/each?min=#{Integer(min_text, 10)}&sort=#{sort}"
      page("moved to #{to}", %(<p><a href="#{h(to)}">#{h(to)}</a></p>\n), status: 301, headers: { "location" => to })
    end

    # /leaks?min=MIN: one scan, the locations with leaked blocks.
    def leaks_page(base, query)
      params = query_params(query)
      return params if params.is_a?(Array)

      min_text = params.fetch("min", "0")
      return error(400, "bad min #{min_text.inspect}: expected a non-negative integer") unless
        min_text.match?(/\A\d+\z/)

      leaks = begin
        Mwrap.leaks(Integer(min_text, 10))
      rescue Mwrap::Error => e
        return error(503, e.message)
      end
      rows = +""
      leaks.each do |loc, (bytes, count)|
        href = "#{base}/at/#{ERB::Util.url_encode(loc)}"
        rows << "<tr><td>#{bytes}</td><td>#{count}</td><td><a href=\"#{h(href)}\">#{h(loc)}</a></td></tr>\n"
      end
      page("leaked memory", <<~HTML)
        #{leak_summary}<table>
        <tr><th>leaked_bytes</th><th>leaked_count</th><th>location</th></tr>
        #{rows}</table>
        <p><a href="#{h(base)}/">index</a></p>
      HTML
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

    # The /at/ path's location, percent-encoded for the preload's page.
    # Servers differ: WEBrick decodes PATH_INFO and squeezes "//", Puma and
    # Rack::MockRequest leave it encoded. The raw request URI, when there
    # is one, is used as sent; a decoded PATH_INFO is encoded again.
    def encoded_location(env, path_rest)
      uri = env["REQUEST_URI"].to_s
      raw = begin
        URI.parse(uri).path if uri != ""
      rescue URI::Error
        nil
      end
      encoded = raw && raw[%r{/at/([^/]+)\z}, 1]
      return encoded if encoded

      # Decoded as bytes (a "%" not followed by two hex digits stays), then
      # every byte but A-Z a-z 0-9 _ . ~ - encoded again.
      URI_DECODER.unescape(path_rest.b).b.gsub(/[^A-Za-z0-9_.~-]/n) { |c| format("%%%02X", c.ord) }
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
