# frozen_string_literal: true

require "fileutils"
require "json"
require "net/http"
require "spec_helper"
require "support/endpoint_helpers"

# The HTML pages in a real browser: headless Chromium (Debian's
# `chromium`, which .ci/setup installs) loads a report, a diff and the
# endpoint's /each (through `mwrapctl proxy`), and the specs read the DOM
# it built (`--dump-dom`, after the page's scripts ran) and take
# screenshots (tmp/screenshots/) to look at.
RSpec.describe "the pages in headless Chromium" do
  CHROMIUM = %w[chromium chromium-browser].filter_map { |c| SpecProcess.which(c) }.first
  CTL = EndpointHelpers::CTL
  SHOTS = File.expand_path("../../tmp/screenshots", __dir__)

  before do
    skip "chromium is not installed (.ci/setup installs it for CI)" unless CHROMIUM
    require_preload!
    FileUtils.mkdir_p(SHOTS)
  end

  def chromium(*args)
    r = capture({ "HOME" => Dir.tmpdir }, CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", *args, timeout: 120)
    expect(r.exitstatus).to eq(0), r.describe
    r
  end

  def dom(url) = chromium("--virtual-time-budget=2000", "--dump-dom", url).stdout

  def screenshot(url, name)
    path = File.join(SHOTS, name)
    chromium("--window-size=1280,900", "--screenshot=#{path}", url)
    expect(File.size(path)).to be > 10_000 # a page, not a blank
    expect(File.binread(path, 8)).to eq("\x89PNG\r\n\x1a\n".b)
  end

  # The cells of a table's body rows (tags stripped).
  def body_rows(html, id)
    table = html[%r{<table[^>]*id="#{id}"[^>]*>(.*?)</table>}m, 1] or raise "no table #{id}"
    table[%r{<tbody>(.*?)</tbody>}m, 1].scan(%r{<tr>(.*?)</tr>}m).map do |(r)|
      r.scan(%r{<td[^>]*>(.*?)</td>}m).flatten.map { |c| c.gsub(/<[^>]*>/, "") }
    end
  end

  # A JSON dump of a script that leaks `n` 10 KB strings at line 2.
  def leak_dump(dir, name, n)
    script = File.join(dir, "leak.rb")
    File.write(script, "keep = []\n#{n}.times { keep << 'x' * 10_000 } # leak\n" \
                       "tmp = Array.new(50_000) { |i| i.to_s }\n")
    dump = File.join(dir, name)
    r = run_ruby(script, env: { "MWRAP" => "ruby_bt:8,dump_format:json,dump_path:#{dump}" })
    expect(r).to be_success, r.stderr
    [script, dump]
  end

  it "sorts a report's table by a click on a heading, and names the leak line in its flame graph" do
    Dir.mktmpdir do |dir|
      script, dump = leak_dump(dir, "a.json", 300)
      html = File.join(dir, "report.html")
      r = capture({}, RbConfig.ruby, CTL, "report", dump, "-o", html)
      expect(r.exitstatus).to eq(0), r.stderr
      plain = dom("file://#{html}")
      by_total = dom("file://#{html}#sort=total")
      col = plain[%r{<table[^>]*id="locations".*?</tr>}m].scan(%r{<th[^>]*>(.*?)</th>}).flatten.index("total")
      totals = body_rows(by_total, "locations").map { |c| Integer(c[col].delete(",")) }
      expect(totals).to eq(totals.sort.reverse)
      expect(body_rows(plain, "locations").map { |c| Integer(c[col].delete(",")) }).not_to eq(totals)
      expect(by_total).to match(%r{<th[^>]*class="sorted"[^>]*>total</th>})
      expect(plain).to match(%r{<svg.*<title>[^<]*#{Regexp.escape("#{script}:2")}[^<]*</title>}m)
      screenshot("file://#{html}", "report.png")
    end
  end

  it "sorts a diff's table by a click, the grown line first by live growth" do
    Dir.mktmpdir do |dir|
      _, a = leak_dump(dir, "a.json", 100)
      script, b = leak_dump(dir, "b.json", 400)
      html = File.join(dir, "diff.html")
      r = capture({}, RbConfig.ruby, CTL, "diff", a, b, "-o", html)
      expect(r.exitstatus).to eq(0), r.stderr
      page = dom("file://#{html}")
      expect(page).to include("#{script}:2")
      ids = page.scan(/<table[^>]*id="([^"]+)"/).flatten
      expect(ids).not_to be_empty
      first = body_rows(page, ids.first).first
      expect(first.last).to include("#{script}:2")
      # a click on the live_bytes_a heading reorders the first table by it
      header = page[%r{<table[^>]*id="#{ids.first}".*?</tr>}m].scan(%r{<th[^>]*>(.*?)</th>}).flatten
      col = header.index("live_bytes_a")
      by_a = dom("file://#{html}#sort=live_bytes_a")
      values = body_rows(by_a, ids.first).map { |c| Integer(c[col].delete(",")) rescue -1 }
      expect(values).to eq(values.sort.reverse)
      expect(by_a).to match(%r{<th[^>]*class="sorted"[^>]*>live_bytes_a</th>})
      screenshot("file://#{html}", "diff.png")
    end
  end

  it "follows /each's heading links to reorder the endpoint's table, and draws /timeline's points (through mwrapctl proxy)" do
    Dir.mktmpdir do |dir|
      serving_leak(dir, mwrap: "interval_ms:50") do |_child, pid, sockets, script|
        proxying(sockets) do |port|
          base = "http://127.0.0.1:#{port}/#{pid}"
          page = dom("#{base}/each?limit=20")
          rows = page.scan(%r{<tr><td>.*?</tr>}m).map { |r| r.scan(%r{<td>(.*?)</td>}m).flatten }
          expect(rows.first.last).to include("#{script}:2") # first by live bytes
          href = page[%r{<th><a href="([^"]*sort=total[^"]*)">total</a></th>}, 1]
          expect(href).to start_with("/#{pid}/each?")
          by_total = dom("http://127.0.0.1:#{port}#{href.gsub('&amp;', '&')}")
          totals = by_total.scan(%r{<tr><td>(\d+)</td>}).flatten.map(&:to_i)
          expect(totals.size).to be > 5
          expect(totals).to eq(totals.sort.reverse)
          screenshot("#{base}/each?limit=40", "each.png")

          # The ring has samples every 50 ms: wait (with a deadline) for
          # three, then let the browser draw them.
          deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 10
          until Net::HTTP.get(URI("#{base}/timeline")).scan("<circle").size >= 6
            raise "no 3 samples in 10 s" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

            Thread.pass
          end
          timeline = dom("#{base}/timeline")
          expect(timeline.scan(/<circle[^>]*class="rss"/).size).to be >= 3
          expect(timeline.scan(/<circle[^>]*class="live"/).size).to be >= 3
          expect(timeline).to include("<svg")
          screenshot("#{base}/timeline", "timeline.png")
        end
      end
    end
  end
end
