# frozen_string_literal: true

require "json"
require "spec_helper"
require "support/mwrap_api"
require "cgi"

MwrapSpecHelpers.require_extension!
$LOAD_PATH.unshift(MwrapSpecHelpers::LIB) unless $LOAD_PATH.include?(MwrapSpecHelpers::LIB)

begin
  require "rack"
  require "rack/mock"
  require "rack/lint"
rescue LoadError
  nil
end
require "mwrap/rack"

RSpec.describe Mwrap::RackApp do
  # The start of a script that serves the app through Rack::MockRequest.
  RACK_SCRIPT = <<~'RUBY'
    require "rack"
    require "rack/mock"
    require "rack/lint"
    require "mwrap/rack"
  RUBY

  before { skip "rack is not installed (Debian: apt-get install ruby-rack)" unless defined?(::Rack::MockRequest) }

  let(:request) { ::Rack::MockRequest.new(::Rack::Lint.new(described_class.new)) }

  # Cells of every <tr> of the first table holding a <th>COLUMN</th> header.
  def cells(html)
    html.scan(%r{<tr>(.*?)</tr>}m).map { |(row)| row.scan(%r{<t[dh]>(.*?)</t[dh]>}m).flatten }
  end

  it "is also MwrapRack, mwrap 2.x's name, and runs on the installed Rack" do
    expect(MwrapRack).to equal(described_class)
    expect(::Rack.release).to match(/\A[23]\./)
  end

  it "still answers to Mwrap::Rack, warning once with the new name and the caller's line; Rack in Mwrap is ::Rack" do
    Dir.mktmpdir do |dir|
      path, r = run_script(<<~'RUBY', dir: dir, preload: nil)
        require "mwrap/rack"
        old = Mwrap::Rack
        2.times { Mwrap::Rack }
        without_rack = Mwrap.module_eval("Rack") # no ::Rack yet: the old name
        require "rack"
        p [without_rack, old, MwrapRack].map { |app| app.equal?(Mwrap::RackApp) }
        p [Mwrap.module_eval("Rack"), Mwrap.module_eval { Rack }].map { |rack| rack.equal?(::Rack) }
        module Mwrap
          p Rack.equal?(::Rack)
        end
        p Mwrap::Rack.equal?(Mwrap::RackApp)
      RUBY
      expect(r.stdout).to eq("[true, true, true]\n[true, true]\ntrue\ntrue\n")
      expect(r.stderr).to eq("#{path}:2: warning: Mwrap::Rack is deprecated: use Mwrap::RackApp (or MwrapRack)\n")
      expect(r.exitstatus).to eq(0)
    end
  end

  describe "in this process (no preload: empty tables)" do
    it "serves an index linking every page, uncached" do
      res = request.get("/")
      expect(res.status).to eq(200)
      expect(res.headers["cache-control"]).to eq("no-cache")
      expect(res.headers["content-type"]).to eq("text/html; charset=utf-8")
      expect(res.body).to include('href="/each"', 'href="/heap_pages"', 'href="/leaks"', 'action="/mark"')
    end

    it "prefixes links with SCRIPT_NAME" do
      res = request.get("/mwrap/", "SCRIPT_NAME" => "/mwrap", "PATH_INFO" => "/")
      expect(res.status).to eq(200)
      expect(res.body).to include('href="/mwrap/each?sort=total"', 'href="/mwrap/breakdown"')
    end

    it "sends mwrap 2.x's /each/MIN?sort=COLUMN on to /each?min=MIN&sort=COLUMN" do
      res = request.get("/mwrap/each/100", "SCRIPT_NAME" => "/mwrap", "PATH_INFO" => "/each/100",
                                           "QUERY_STRING" => "sort=frees")
      expect(res.status).to eq(301)
      expect(res.headers["location"]).to eq("/mwrap/each?min=100&sort=frees")
      expect(request.get("/each/7").headers["location"]).to eq("/each?min=7&sort=total")
    end

    it "says there are no tables without the preload" do
      res = request.get("/each")
      expect(res.status).to eq(200)
      expect(res.body).to include("does not run under mwrap&#39;s preload").or include("does not run under mwrap's preload")
      expect(request.get("/leaks").body).to include("No leak scan without the preload.")
    end

    it "answers 400 naming a bad MIN or sort column, HTML-escaped" do
      { "/each/abc" => "&quot;abc&quot;", "/each/-1" => "&quot;-1&quot;", "/each/" => "&quot;&quot;",
        "/each/1.5" => "&quot;1.5&quot;", "/each/0?sort=bogus" => "&quot;bogus&quot;",
        "/each/0?sort=%3Cscript%3E" => "&quot;&lt;script&gt;&quot;",
        "/each/%3Cb%3E" => "&quot;%3Cb%3E&quot;" }.each do |path, named|
        res = request.get(path)
        expect(res.status).to eq(400), path
        expect(res.body).to include(named)
        expect(res.body).not_to include("<script>", "<b>")
        expect(res.headers["cache-control"]).to eq("no-cache")
      end
    end

    it "answers 404 for unknown paths and unknown locations" do
      %w[/nope /each/1/2 /at/ /heap_pages/x /eachx].each do |path|
        expect(request.get(path).status).to eq(404), path
      end
      expect(request.get("/%3Cscript%3E").body).not_to include("<script>")
    end

    it "answers HEAD without a body and other methods with 405" do
      head = request.request("HEAD", "/heap_pages")
      expect(head.status).to eq(200)
      expect(head.body).to eq("")
      post = request.post("/each/0")
      expect(post.status).to eq(405)
      expect(post.headers["allow"]).to eq("GET, HEAD")
      expect(request.get("/mark").status).to eq(405)
      expect(request.get("/mark").headers["allow"]).to eq("POST")
    end

    it "shows Mwrap.memory_report as a table on /breakdown, linked from the index, with a trim button" do
      expect(request.get("/").body).to include('href="/breakdown"')
      res = request.get("/breakdown")
      expect(res.status).to eq(200)
      expect(res.headers["cache-control"]).to eq("no-cache")
      rows = res.body.scan(%r{<tr[^>]*>(.*?)</tr>}m).map { |(r)| r.scan(%r{<t[dh]>(.*?)</t[dh]>}m).flatten }
      expect(rows.first).to eq(["part", "bytes", "human", "% of rss"])
      by_part = rows.drop(1).to_h { |r| [r.first, r.drop(1)] }
      expect(by_part.keys).to include("rss", "file_rss", "malloc_in_use", "malloc_free_held", "ruby_heap",
                                      "thread_stacks", "mmap_other", "unexplained")
      expect(by_part["rss"][0]).to match(/\A\d+\z/)
      expect(by_part["rss"][2]).to eq("100.0 %")
      expect(by_part["malloc_in_use"]).to eq(["unknown"]) # no preload here
      expect(res.body).to include('<form method="post" action="/trim">')
      trimmed = request.post("/trim")
      expect(trimmed.status).to eq(200)
      expect(trimmed.body).to match(/Mwrap\.trim gave \d+ bytes of RSS back/)
      expect(request.get("/trim").status).to eq(405)
      expect(request.get("/trim").headers["allow"]).to eq("POST")
    end

    it "shows heap page statistics and GC.stat" do
      res = request.get("/heap_pages")
      expect(res.status).to eq(200)
      MwrapApiHelpers::HEAP_STAT_KEYS.each { |k| expect(res.body).to include("<td>#{k}</td>") }
      expect(res.body).to include("GC.stat(:heap_allocated_pages)")
    end
  end

  context "under the real preload" do
    before { require_preload! }

    it "shows the breakdown of a process holding much free memory, with the advice line" do
      Dir.mktmpdir do |dir|
        code = MwrapApiHelpers::SHOW + RACK_SCRIPT + <<~'RUBY'
          require "fiddle"
          ptrs = Array.new(50_000) { Fiddle.malloc(1024) }
          (0...ptrs.size).step(2) { |i| Fiddle.free(ptrs[i]) }
          res = Rack::MockRequest.new(Rack::Lint.new(Mwrap::RackApp.new)).get("/breakdown")
          show :page, [res.status, res.body]
        RUBY
        _, out = run_api(code, dir: dir)
        status, body = values(out)[:page]
        expect(status).to eq(200)
        rows = body.scan(%r{<tr[^>]*>(.*?)</tr>}m).map { |(r)| r.scan(%r{<t[dh]>(.*?)</t[dh]>}m).flatten }
        by_part = rows.drop(1).to_h { |r| [r.first, r.drop(1)] }
        expect(Integer(by_part["malloc_in_use"][0])).to be > 25_000_000
        expect(Integer(by_part["malloc_free_held"][0])).to be > 20_000_000
        expect(body).to match(%r{<p>advice: .*MALLOC_ARENA_MAX.*Mwrap\.trim.*jemalloc.*</p>})
      end
    end

    it "lists leaked memory on /leaks (one scan when asked, none on other pages), linked from the index" do
      Dir.mktmpdir do |dir|
        code = MwrapApiHelpers::SHOW + RACK_SCRIPT + <<~'RUBY'
          require "fiddle"
          ptrs = Array.new(2000)
          Fiddle.free(Fiddle.malloc(512))
          2000.times { |i| ptrs[i] = Fiddle.malloc(512) } # leak
          request = Rack::MockRequest.new(Rack::Lint.new(Mwrap::RackApp.new))
          plain = request.get("/each")
          show :plain, [plain.status, Mwrap.last_leak_scan]
          res = request.get("/leaks")
          show :leaks, [res.status, res.body]
          show :bad, request.get("/leaks?min=x").body
          show :index, request.get("/").body
        RUBY
        path, out = run_api(code, dir: dir)
        v = values(out)
        expect(v[:plain]).to eq([200, nil]) # a plain view scans nothing
        status, body = v[:leaks]
        expect(status).to eq(200)
        expect(body).to match(/Leak scan: \d+ of \d+ live blocks \(\d+ of \d+ bytes\) are reached by no pointer/)
        first = body.scan(%r{<tr><td>.*?</tr>}m).first.scan(%r{<td>(.*?)</td>}m).flatten
        expect(first.last).to include(CGI.escapeHTML("#{path}:#{line_of(code, "# leak")}"))
        expect(Integer(first[1])).to be_between(1900, 2000) # leaked_count
        expect(Integer(first[0])).to eq(Integer(first[1]) * 512)
        expect(v[:bad]).to include("bad min &quot;x&quot;")
        expect(v[:index]).to include('href="/leaks">leaked memory</a>')
      end
    end

    it "serves the endpoint's own pages as they are: /json, /folded, /heap.pb.gz, /timeline; POST /reset" do
      Dir.mktmpdir do |dir|
        code = MwrapApiHelpers::SHOW + RACK_SCRIPT + <<~'RUBY'
          keep = Array.new(100) { "x" * 10_000 } # kept
          request = Rack::MockRequest.new(Rack::Lint.new(Mwrap::RackApp.new))
          pages = %w[/json /folded /heap.pb.gz /timeline].to_h do |path|
            res = request.get(path)
            [path, [res.status, res.headers["content-type"], res.body]]
          end
          show :pages, pages
          show :pid, $$
          reset = request.post("/reset")
          show :reset, [reset.status, reset.body, Mwrap.total_bytes_allocated < 1_000_000]
          show :get_reset, request.get("/reset").status
          show :index, request.get("/").body
        RUBY
        path, out = run_api(code, dir: dir)
        v = values(out)
        json = v[:pages]["/json"]
        expect(json[0, 2]).to eq([200, "application/json"])
        doc = JSON.parse(json[2])
        expect(doc["pid"]).to eq(v[:pid])
        expect(doc["locations"].map { |l| l["location"] }).to include("#{path}:#{line_of(code, '# kept')}")
        expect(v[:pages]["/folded"][0]).to eq(200)
        pprof = v[:pages]["/heap.pb.gz"]
        expect(pprof[0, 2]).to eq([200, "application/octet-stream"])
        expect(pprof[2].b[0, 2]).to eq("\x1f\x8b".b)
        expect(v[:pages]["/timeline"][0]).to eq(200)
        expect(v[:reset]).to eq([200, "reset\n", true])
        expect(v[:get_reset]).to eq(405)
        expect(v[:index]).to include('href="/heap.pb.gz"', 'action="/reset"')
      end
    end

    # A script file whose name needs escaping in HTML and in URLs.
    let(:odd_name) { "a<b>&c d+e%.rb" }

    it "lists, sorts and links real locations, escaped, and records nothing while serving" do
      Dir.mktmpdir do |dir|
        code = MwrapApiHelpers::SHOW + RACK_SCRIPT + <<~'RUBY'
          keep = []
          keep << ("helloworld" * 1000) # cold
          keep << ("helloworld" * 1000) # warm
          req = Rack::MockRequest.new(Rack::Lint.new(Mwrap::RackApp.new))
          rack_rb = $LOADED_FEATURES.find { |f| f.end_with?("/mwrap/rack.rb") }
          Mwrap.clear
          keep << ("helloworld" * 1000) # measured
          show :loc, "#{__FILE__}:#{__LINE__ - 1}"
          pages = {}
          %w[/each?limit=10000 /each?limit=10000&sort=total /each?limit=10000&sort=allocations
             /each?limit=10000&sort=location /each?limit=10000&sort=mean_life /heap_pages].each do |path|
            res = req.get(path)
            pages[path] = [res.status, res.body]
          end
          show :pages, pages
          show :rack_rb, rack_rb
          show :served_from_rack_rb, Mwrap.each.select { |loc, *| loc.start_with?(rack_rb) }.map(&:first)
          show :heap_count, Mwrap::HeapPageBody.each {}
          show :size, keep.size
        RUBY
        path, out = run_api(code, dir: dir, name: odd_name)
        v = values(out)
        pages = v[:pages]
        pages.each { |p, (status, _)| expect(status).to eq(200), p }

        loc = v[:loc]
        expect(loc).to eq("#{path}:#{line_of(code, '# measured')}")
        body = pages["/each?limit=10000"][1]
        escaped = CGI.escapeHTML(loc)
        expect(body).to include(">#{escaped}</a>")
        expect(body).not_to include(odd_name)
        href = body[%r{<a href="([^"]*)">#{Regexp.escape(escaped)}</a>}, 1]
        expect(href).to start_with("/at/%2F")
        expect(href).not_to match(%r{/at/.*[/<>&+ ]})

        # The row for the script's warm line: one 10001-byte String since
        # the clear, live; no mark, so no growth.
        row = cells(body).find { |c| c.last.include?(">#{escaped}<") }
        expect(row.first(7)).to eq(%w[10001 1 0 10001 1 - Infinity])

        # Sorting: numbers largest first (live bytes by default), locations A-Z.
        column = ->(p, i) { cells(pages[p][1]).drop(1).map { |c| c[i] } }
        lives = column.("/each?limit=10000", 3).map(&:to_i)
        expect(lives).to eq(lives.sort.reverse)
        totals = column.("/each?limit=10000&sort=total", 0).map(&:to_i)
        expect(totals).to eq(totals.sort.reverse)
        allocations = column.("/each?limit=10000&sort=allocations", 1).map(&:to_i)
        expect(allocations).to eq(allocations.sort.reverse)
        names = column.("/each?limit=10000&sort=location", 9).map { |c| CGI.unescapeHTML(c.gsub(/<[^>]*>/, "")).b }
        expect(names).to eq(names.sort)
        means = column.("/each?limit=10000&sort=mean_life", 6).map { |c| c == "Infinity" ? Float::INFINITY : Float(c) }
        expect(means).to eq(means.sort.reverse)

        heap_rows = cells(pages["/heap_pages"][1]).select { |c| c.first&.match?(/\A0x\h+\z/) }
        expect(heap_rows.size).to be_within(50).of(v[:heap_count])

        # Building the pages happened inside Mwrap.quiet: only the lines calling
        # it may have allocated (before the quiet section starts).
        source = File.readlines(v[:rack_rb])
        v[:served_from_rack_rb].each do |l|
          expect(source[Integer(l[/\d+\z/]) - 1]).to include("Mwrap.quiet"), "#{l} allocated while serving"
        end
      end
    end

    it "follows a location link to its live allocations, and 404s once it is unknown" do
      Dir.mktmpdir do |dir|
        code = MwrapApiHelpers::SHOW + <<~'RUBY'
          require "rack"
          require "rack/mock"
          require "mwrap/rack"
          require "cgi"
          keep = []
          keep << ("helloworld" * 1000) # cold
          keep << ("helloworld" * 1000) # warm
          loc = "#{__FILE__}:#{__LINE__ - 1}"
          req = Rack::MockRequest.new(Mwrap::RackApp.new)
          list = req.get("/each?limit=10000").body
          href = list[%r{<a href="([^"]*)">#{Regexp.escape(CGI.escapeHTML(loc))}</a>}, 1]
          at = req.get(CGI.unescapeHTML(href))
          show :at, [at.status, at.body, GC.count]
          show :unknown, req.get("/at/#{CGI.escape("#{__FILE__}:999")}").status
        RUBY
        _, out = run_api(code, dir: dir, name: odd_name)
        v = values(out)
        status, body, gc_count = v[:at]
        expect(status).to eq(200)
        expect(body).to include("<h1>live allocations at #{CGI.escapeHTML(File.join(dir, odd_name))}:")
        rows = cells(body)
        expect(rows).to include(["total", "10001"], ["allocations", "1"], ["frees", "0"],
                                ["live_bytes", "10001"], ["live_count", "1"], %w[mean_lifespan Infinity])
        # live blocks by birth generation: [generation, count, bytes]
        generation, count, bytes = rows.find { |c| c.size == 3 && c.last == "10001" }
        expect([count, bytes]).to eq(%w[1 10001])
        expect(Integer(generation)).to be_between(0, gc_count)
        expect(v[:unknown]).to eq(404)
      end
    end

    it "links a location whose file name is not UTF-8 and holds % sequences, and serves its page" do
      Dir.mktmpdir do |dir|
        code = MwrapApiHelpers::SHOW + <<~'RUBY'
          require "rack"
          require "rack/mock"
          require "cgi"
          require "mwrap/rack"
          keep = []
          keep << ("helloworld" * 1000) # cold
          keep << ("helloworld" * 1000) # warm
          req = Rack::MockRequest.new(Rack::Lint.new(Mwrap::RackApp.new))
          hrefs = req.get("/each?limit=10000").body.scan(/<a href="([^"]*)">/).flatten.map { |h| CGI.unescapeHTML(h) }
          show :pages, hrefs.grep(%r{\A/at/}).to_h { |href| [href, req.get(href).then { |r| [r.status, r.body.b]}] }
        RUBY
        path, out = run_api(code, dir: dir.b, name: "odd \xFF\xFE %2F%zz+&.rb".b)
        loc = "#{path}:#{line_of(code, '# warm')}".b
        # Every byte but A-Z a-z 0-9 _ . ~ - as %XX: the links' encoding, "/" included.
        href = "/at/#{loc.gsub(/[^A-Za-z0-9_.~-]/n) { |c| format('%%%02X', c.ord) }}"
        status, body = values(out)[:pages].fetch(href) { raise "no link #{href} in #{values(out)[:pages].keys}" }
        expect(status).to eq(200)
        expect(body).to include("<tr><th>total</th><td>10001</td></tr>", "<tr><th>live_count</th><td>1</td></tr>")
      end
    end

    it "serves a real HTTP client through WEBrick on 127.0.0.1, mounted under a prefix" do
      Dir.mktmpdir do |dir|
        code = MwrapApiHelpers::SHOW + <<~'RUBY'
          require "rack"
          begin
            require "rack/handler/webrick"
          rescue LoadError
            show :skip, "no Rack::Handler::WEBrick in rack #{Rack.release}"
            exit
          end
          require "webrick"
          require "net/http"
          require "mwrap/rack"
          keep = []
          keep << ("helloworld" * 1000) # cold
          keep << ("helloworld" * 1000) # warm
          loc = "#{__FILE__}:#{__LINE__ - 1}"
          server = WEBrick::HTTPServer.new(BindAddress: "127.0.0.1", Port: 0,
                                           Logger: WEBrick::Log.new(IO::NULL), AccessLog: [])
          server.mount("/mwrap", Rack::Handler::WEBrick, Mwrap::RackApp.new)
          thread = Thread.new { server.start }
          port = server.config[:Port]
          get = lambda do |path|
            Net::HTTP.start("127.0.0.1", port, read_timeout: 600) { |http| http.get(path) }
          end
          list = get.("/mwrap/each?min=10000&limit=10000")
          href = list.body[%r{<a href="([^"]*)">#{Regexp.escape(CGI.escapeHTML(loc))}</a>}, 1]
          at = href && get.(CGI.unescapeHTML(href))
          heap = get.("/mwrap/heap_pages")
          bad = get.("/mwrap/each/x")
          server.shutdown
          thread.join
          show :port, port
          show :responses, [[list.code, list["cache-control"], list["content-type"]],
                            href, at&.code, at&.body.to_s.include?("<td>10001</td>"), heap.code, bad.code]
        RUBY
        _, out = run_api(code, dir: dir, name: odd_name)
        v = values(out)
        skip v[:skip] if v[:skip]
        expect(v[:port]).to be > 0
        list, href, at_code, at_has_string, heap_code, bad_code = v[:responses]
        expect(list).to eq(["200", "no-cache", "text/html; charset=utf-8"])
        expect(href).to start_with("/mwrap/at/%2F")
        expect([at_code, at_has_string, heap_code, bad_code]).to eq(["200", true, "200", "400"])
      end
    end
  end
end
