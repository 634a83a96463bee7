# frozen_string_literal: true

require "spec_helper"
require "support/mwrap_api"

MwrapSpecHelpers.require_extension!

# The endpoint's pages, rendered by the preload (the same renderer serves
# the unix socket and Mwrap::RackApp, through Mwrap.render_page).
RSpec.describe "endpoint pages" do
  before { require_preload! }

  def rows(html)
    html.scan(%r{<tr>(.*?)</tr>}m).map { |(r)| r.scan(%r{<t[dh]>(.*?)</t[dh]>}m).flatten }
  end

  it "pages /each by any column, counts growth since POST /mark, and resets on POST /reset" do
    Dir.mktmpdir do |dir|
      code = MwrapApiHelpers::SHOW + <<~'RUBY'
        require "mwrap"
        page = ->(method, path, query = "") { Mwrap.render_page(method, path, query, "") }
        keep = []
        30.times { |i| eval("keep << ('x' * #{1000 + i})", binding, "site#{i}.rb", 1) } # sites
        show :first, page.("GET", "/each", "limit=5")
        show :second, page.("GET", "/each", "limit=5&offset=5")
        show :by_total, page.("GET", "/each", "limit=3&sort=total&min=1000")
        show :mark, page.("POST", "/mark")
        keep << ("y" * 50_000) # grew
        show :growth, page.("GET", "/each", "limit=2&sort=growth")
        show :bad, [page.("GET", "/each", "offset=x"), page.("GET", "/each", "sort=size"), page.("GET", "/nope"),
                    page.("POST", "/each")].map { |st, h, b| [st, h["allow"], b[%r{<h1>(.*?)</h1>}, 1]] }
        show :reset, page.("POST", "/reset")[2]
        show :after_reset, page.("GET", "/each", "limit=3")[2]
      RUBY
      path, out = run_api(code, dir: dir)
      v = values(out)
      status, headers, body = v[:first]
      expect(status).to eq(200)
      expect(headers["content-type"]).to eq("text/html; charset=utf-8")
      header, *first = rows(body)
      expect(header.map { |c| c.gsub(/<[^>]*>/, "") })
        .to eq(%w[total allocations frees live_bytes live_count growth mean_life max_life temporary location])
      expect(header[3]).to eq("live_bytes") # the sorted column, unlinked
      expect(first.size).to eq(5)
      lives = first.map { |r| Integer(r[3]) }
      expect(lives).to eq(lives.sort.reverse)
      second = rows(v[:second][2]).drop(1)
      expect(second.size).to eq(5)
      expect(Integer(second.first[3])).to be <= lives.last
      expect(v[:second][2]).to include("previous page", "next page")
      expect(body).to match(/\d+ locations with a total above 0 bytes; rows 1–5 by live_bytes/)
      totals = rows(v[:by_total][2]).drop(1).map { |r| Integer(r[0]) }
      expect(totals).to eq(totals.sort.reverse)
      expect(totals).to all(be > 1000)

      expect(v[:mark][0]).to eq(200)
      expect(v[:mark][2]).to match(/\Amarked \d+ locations\n\z/)
      grew = rows(v[:growth][2]).drop(1).first
      expect(grew.last).to include("#{path}:#{line_of(code, '# grew')}")
      expect(Integer(grew[5])).to eq(50_001) # live since the mark
      expect(v[:growth][2]).to include("growth: live bytes since the mark.")

      expect(v[:bad]).to eq([
        [400, nil, "bad offset &quot;x&quot;: expected an integer from 0 to 4294967295"],
        [400, nil, "bad sort column &quot;size&quot;: expected one of total, allocations, frees, live_bytes, " \
                   "live_count, growth, mean_life, max_life, temporary, location"],
        [404, nil, "not found: /nope"],
        [405, "GET, HEAD", "method not allowed (only GET, HEAD)"]
      ])
      expect(v[:reset]).to eq("reset\n")
      expect(rows(v[:after_reset]).drop(1).map { |r| Integer(r[0]) }.sum).to be < 100_000
    end
  end

  it "serves a table of 100,000 locations in pages under 1 MB, and 20 views grow RSS by under 5 MB" do
    Dir.mktmpdir do |dir|
      code = MwrapApiHelpers::SHOW + <<~'RUBY'
        require "mwrap"
        keep = []
        100_000.times { |i| eval("keep << 'x' * 100", binding, "f#{i}.rb", 1) }
        rss = -> { File.read("/proc/self/status")[/^VmRSS:\s+(\d+)/, 1].to_i * 1024 }
        sizes = []
        page = Mwrap.render_page("GET", "/each", "", "") # warm the call site
        before = rss.call
        20.times do |i|
          sort = %w[live_bytes total location growth][i % 4]
          sizes << Mwrap.render_page("GET", "/each", "sort=#{sort}", "")[2].bytesize
        end
        show :sizes, sizes
        show :grown, rss.call - before
        show :count, page[2][/(\d+) locations with a total above/, 1].to_i
      RUBY
      _, out = run_api(code, dir: dir, timeout: 300)
      v = values(out)
      expect(v[:count]).to be >= 100_000
      expect(v[:sizes].max).to be < 1_000_000
      expect(v[:grown]).to be < 5 * 1024 * 1024
    end
  end

  it "shows the memory breakdown (iseq unknown) and a leak scan, on demand" do
    Dir.mktmpdir do |dir|
      code = MwrapApiHelpers::SHOW + <<~'RUBY'
        require "mwrap"
        require "fiddle"
        ptrs = Array.new(2000)
        Fiddle.free(Fiddle.malloc(512))
        2000.times { |i| ptrs[i] = Fiddle.malloc(512) } # leak
        page = ->(path, query = "") { Mwrap.render_page("GET", path, query, "/base") }
        show :breakdown, page.("/breakdown")
        show :leaks, page.("/leaks")
        show :bad, page.("/leaks", "min=x")[0]
        show :index, page.("/")[2]
      RUBY
      path, out = run_api(code, dir: dir)
      v = values(out)
      status, _, body = v[:breakdown]
      expect(status).to eq(200)
      cells = rows(body).to_h { |r| [r.first, r.drop(1)] }
      expect(cells.keys).to include("rss", "malloc_in_use", "malloc_free_held", "unexplained")
      expect(cells["iseq (in malloc)"]).to eq(["unknown"])
      status, _, body = v[:leaks]
      expect(status).to eq(200)
      expect(body).to match(/Leak scan: \d+ of \d+ live blocks/)
      leak = rows(body).find { |r| r.last.include?("#{path}:#{line_of(code, '# leak')}") }
      expect(Integer(leak[1])).to be_between(1900, 2000)
      expect(leak.last).to include('href="/base/at/')
      expect(v[:bad]).to eq(400)
      expect(v[:index]).to include('href="/base/breakdown"', 'href="/base/leaks"')
    end
  end

  it "renders /json and /folded that agree with Mwrap.each and Mwrap.each_stack" do
    Dir.mktmpdir do |dir|
      code = MwrapApiHelpers::SHOW + <<~'RUBY'
        require "mwrap"
        require "json"
        def nest(n) = n.zero? ? "x" * 200_000 : nest(n - 1) # nest
        keep = Array.new(5) { |i| nest(i) }
        GC.disable
        each = Mwrap.each(100_000).map { |loc, total, allocations, frees, *| [loc, [total, allocations, frees]] }
        stacks = Mwrap.each_stack.map { |loc, ruby, native, _t, _a, _f, live, *| [loc, ruby, native, live] }
        json = Mwrap.render_page("GET", "/json", "", "")[2]
        folded = Mwrap.render_page("GET", "/folded", "", "")[2]
        show :each, each
        show :stacks, stacks
        show :json, json
        show :folded, folded
        show :size, keep.size
      RUBY
      path, out = run_api(code, dir: dir, env: { "MWRAP" => "ruby_bt:8" })
      v = values(out)
      nest = "#{path}:#{line_of(code, '# nest')}"
      mine = ->(loc) { loc.start_with?(path) && loc != nest } # the script's own reading lines move
      doc = JSON.parse(v[:json])
      from_json = doc["locations"].select { |l| l["total"] > 100_000 }
                                  .to_h { |l| [l["location"], [l["total"], l["allocations"], l["frees"]]] }
      from_each = v[:each].to_h
      (from_each.keys | from_json.keys).reject(&mine).each do |loc|
        expect(from_json[loc]).to eq(from_each[loc]), loc
      end
      # five Strings of 200,001 bytes, and the call site's first-run caches
      expect(from_each.fetch(nest).first).to be_between(1_000_005, 1_000_005 + 4096)
      expect(from_json.fetch(nest)).to eq(from_each.fetch(nest))
      folded = v[:folded].lines.to_h { |l| f, live = l.chomp.rpartition(" ").values_at(0, 2); [f, Integer(live)] }
      v[:stacks].select { |loc, _, _, live| live.positive? && loc == nest }.each do |_, ruby, native, live|
        frames = [*ruby.reverse, *native.reverse].map { |f| f.gsub(";", "\\x3b") }.join(";")
        expect(folded[frames]).to eq(live), frames
      end
      expect(folded.keys.grep(/#{Regexp.escape(nest)}/)).not_to be_empty
    end
  end
end
