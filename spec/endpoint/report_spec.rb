# frozen_string_literal: true

require "json"
require "spec_helper"

# `mwrapctl report` and `mwrapctl diff` on real dump_format:json dumps of
# small scripts run under the preload.
RSpec.describe "mwrapctl report and diff" do
  REPORT_CTL = File.expand_path("../../exe/mwrapctl", __dir__)

  # Keeps N strings of 10,000 bytes from line 3; line 7 is charged to a
  # file name holding markup.
  LEAK_SCRIPT = <<~'RUBY'
    N = Integer(ENV.fetch("N", "100"))
    def grow(keep, n)
      n.times { keep << "x" * 10_000 } # leak
    end
    $keep = []
    grow($keep, N)
    eval('$evil = "y" * 50_000', nil, "<script>alert(1)</script>", 1)
    if (out = ENV["ENDPOINT_JSON"]) # the endpoint's /json: with the memory breakdown
      require "mwrap"
      File.write(out, Mwrap.render_page("GET", "/json", "", "")[2])
    end
  RUBY

  def ctl(*args)
    capture({}, RbConfig.ruby, REPORT_CTL, *args)
  end

  # The JSON dump of LEAK_SCRIPT (at dir/leak.rb) keeping `n` strings.
  def dump(dir, name, n, mwrap: "ruby_bt:8,dump_leaks:1", endpoint_json: nil)
    script = File.join(dir, "leak.rb")
    File.write(script, LEAK_SCRIPT)
    path = File.join(dir, name)
    env = { "N" => n.to_s, "MWRAP" => "dump_format:json,dump_path:#{path},#{mwrap}" }
    env["ENDPOINT_JSON"] = endpoint_json if endpoint_json
    r = run_ruby("--disable-gems", script, env: env)
    expect(r.exitstatus).to eq(0), r.stderr
    [script, path]
  end

  context "with dumps" do
    before(:all) { require_preload! }

    it "shows the memory breakdown of a document that has one (the endpoint's /json)" do
      Dir.mktmpdir do |dir|
        endpoint = File.join(dir, "endpoint.json")
        dump(dir, "exit.json", 10, endpoint_json: endpoint)
        doc = JSON.parse(File.read(endpoint))
        html_path = File.join(dir, "report.html")
        r = ctl("report", endpoint, "-o", html_path)
        expect(r.exitstatus).to eq(0), r.stderr
        memory = File.read(html_path)[%r{<table class="kv" id="memory">.*?</table>}m]
        expect(memory).to include("<th>rss</th><td class=\"n\">#{doc['memory']['rss']} ")
        expect(memory).to include("<th>iseq</th><td class=\"n\">null</td>")
      end
    end

    it "reports a dump as one self-contained page: the table, the stacks' SVG, the leak scan and the breakdown" do
      Dir.mktmpdir do |dir|
        script, json = dump(dir, "a.json", 100)
        doc = JSON.parse(File.read(json))
        leak = doc["locations"].find { |l| l["location"] == "#{script}:3" }
        expect(leak["live_bytes"]).to be >= 1_000_000

        html_path = File.join(dir, "report.html")
        r = ctl("report", json, "-o", html_path)
        expect([r.exitstatus, r.stdout, r.stderr]).to eq([0, "", ""])
        html = File.read(html_path)
        expect(html).to start_with("<!DOCTYPE html>")
        expect(html).not_to match(%r{https?://}) # nothing fetched, no xmlns either
        expect(html).not_to match(/<(?:link|img|iframe)\b|\bsrc=/)
        expect(html).to include("<h1>mwrap report: #{json}</h1>")

        # the locations table: the leak line's row with its live bytes and leaks
        table = html[%r{<table class="sortable" id="locations">.*?</table>}m]
        expect(table).to include(">live_bytes</th>", ">temporary</th>", ">leaked_bytes</th>", ">leaked_count</th>")
        row = table.lines.find { |l| l.include?("<td>#{script}:3</td>") }
        cells = row.scan(%r{<td[^>]*>(.*?)</td>}).flatten
        expect(cells.first(8).map(&:to_i)).to eq(leak.values_at("live_bytes", "live_count", "total", "allocations", "frees",
                                                                "temporary", "leaked_bytes", "leaked_count"))
        # largest live bytes first
        lives = table.scan(%r{<tr><td class="n">(\d+)</td>}).flatten.map(&:to_i)
        expect(lives).to eq(lives.sort.reverse)
        expect(lives.size).to eq([doc["locations"].size, 2000].min)

        # the icicle graph: a box for the leak line's frame, as wide as its live bytes
        svg = html[%r{<svg id="flame".*?</svg>}m]
        expect(svg).to include("<title>#{script}:3 — ")
        root = svg[%r{<title>all — (\d+) bytes live}, 1].to_i
        expect(root).to eq(doc["locations"].sum { |l| l["stacks"].sum { |st| st["live_bytes"] } })
        # the leak's outermost Ruby frame is line 6 (grow's call): one box for its stacks
        frame = svg[%r{<g><title>#{Regexp.escape("#{script}:6")} — (\d+) bytes live.*?width="([\d.]+)"}, 0]
        bytes, width = frame.match(/— (\d+) bytes.*width="([\d.]+)"/).captures
        expect(bytes.to_i).to be >= leak["live_bytes"] - 1000
        expect(width.to_f).to be_within(0.05).of(bytes.to_i * 1200.0 / root)

        # the leak scan (the exit dump has no memory breakdown: see below)
        expect(html[%r{<table class="kv" id="leak_scan">.*?</table>}m]).to include("<th>leaked_bytes</th>")
        expect(html).not_to include('id="memory"')

        # the name holding markup is text, never markup
        expect(html.scan("<script>").size).to eq(1) # the sorter's own
        expect(html).to include("<td>&lt;script&gt;alert(1)&lt;/script&gt;:1</td>")
        expect(html).to include("<title>&lt;script&gt;alert(1)&lt;/script&gt;:1 — ")

        # to stdout without -o
        expect(ctl("report", json).stdout).to eq(html)
      end
    end

    it "diffs two runs: the line that leaks more first, native locations matched by object and offset" do
      Dir.mktmpdir do |dir|
        script, a = dump(dir, "a.json", 100, mwrap: "bt:4,ruby_bt:8")
        _, b = dump(dir, "b.json", 300, mwrap: "bt:4,ruby_bt:8")
        doc_a = JSON.parse(File.read(a))
        doc_b = JSON.parse(File.read(b))
        live = ->(doc) { doc["locations"].find { |l| l["location"] == "#{script}:3" }["live_bytes"] }

        r = ctl("diff", a, b, "-n", "100000")
        expect([r.exitstatus, r.stderr]).to eq([0, ""])
        lines = r.stdout.lines
        expect(lines[0]).to eq("A: #{a} (#{doc_a['locations'].size} locations, #{doc_a['locations'].sum { |l| l['live_bytes'] }} bytes live)\n")
        expect(lines[4]).to match(/\A\d+ locations:\n\z/)
        expect(lines[5].split).to eq(%w[live_growth live_count_growth total_growth allocations_growth live_bytes_a
                                       live_bytes_b status location])
        row = /\A *([-+]?\d+) +([-+]?\d+) +([-+]?\d+) +([-+]?\d+) +(\d+|-) +(\d+|-) (both|new|gone) +(.*)\n\z/
        locations = lines[6..].take_while { |l| l != "\n" }.map { |l| l.match(row) or raise "not a row: #{l.inspect}" }
        first = locations.first
        expect(first[8]).to eq("#{script}:3")
        expect(first[7]).to eq("both")
        expect(Integer(first[1])).to eq(live.call(doc_b) - live.call(doc_a))
        expect(Integer(first[1])).to be_within(20_000).of(200 * 10_001) # 200 more strings, and the Array holding them

        # libruby's allocations (made before Ruby's VM is up: native
        # addresses) are one location each in both runs despite ASLR
        natives = doc_a["locations"].map { |l| l["location"] }.grep(/\) \[0x\h+\]\z/)
        expect(natives).not_to be_empty
        by_name = locations.to_h { |m| [m[8], m[7]] }
        expect(by_name.keys).to all(satisfy { |n| !n.match?(/\) \[0x\h+\]/) })
        matched = natives.map { |n| n.sub(/ \[0x\h+\]\z/, "") }.select { |n| by_name[n] == "both" }
        expect(matched.size).to be >= natives.size / 2
        new_names = locations.select { |m| m[7] == "new" }.map { |m| m[8] }
        gone_names = locations.select { |m| m[7] == "gone" }.map { |m| m[8] }
        expect(new_names & gone_names).to eq([])
        expect(by_name.size).to eq(locations.size) # one row per normalised name

        # stacks too, the leak's first
        stacks_at = lines.index { |l| l.match?(/\A\d+ stacks:\n\z/) }
        stack = lines[stacks_at + 2].match(row)
        expect(stack[8]).to start_with("#{script}:3: #{script}:6 ; #{script}:3")
        expect(stack[8]).not_to include("[0x")

        # -n and -o
        top = ctl("diff", a, b, "-n", "2")
        expect(top.stdout.lines.count { |l| l.match?(row) }).to eq(4)
        html_path = File.join(dir, "diff.html")
        r = ctl("diff", a, b, "-o", html_path)
        expect([r.exitstatus, r.stdout, r.stderr]).to eq([0, "", ""])
        html = File.read(html_path)
        expect(html).not_to match(%r{https?://})
        expect(html).to include('<table class="sortable" id="locations">', '<table class="sortable" id="stacks">')
        expect(html[%r{<tbody>\n<tr>.*?</tr>}m]).to include("<td>#{script}:3</td>")
      end
    end
  end

  context "on made-up dumps" do
    def location(name, live, stacks: nil)
      { "location" => name, "total" => live + 1, "allocations" => 1, "frees" => 0, "live_bytes" => live,
        "live_count" => 1, "age_total" => 0, "max_lifespan" => 0,
        "stacks" => stacks || [{ "ruby" => [], "native" => [], "total" => live + 1, "allocations" => 1, "frees" => 0,
                                 "live_bytes" => live, "live_count" => 1 }] }
    end

    def write_dump(dir, locations)
      path = File.join(dir, "made.json")
      File.write(path, JSON.generate({ "mwrap" => 1, "locations" => locations }))
      path
    end

    it "caps the table at 2,000 rows and merges frames narrower than 0.1 %, saying so" do
      Dir.mktmpdir do |dir|
        # one wide line, 2,500 narrow ones (each 1/10,000th of the bytes)
        many = Array.new(2500) { |i| location("many.rb:#{i + 1}", 100) }
        path = write_dump(dir, [location("big.rb:1", 750_000), *many])
        r = ctl("report", path)
        expect(r.exitstatus).to eq(0), r.stderr
        html = r.stdout
        expect(html.scan(%r{^<tr><td class="n">}).size).to eq(2000)
        expect(html).to include("Showing the 2000 locations with the most live bytes of 2501; the other 501 hold 50100 bytes live")
        svg = html[%r{<svg id="flame".*?</svg>}m]
        expect(svg.scan("<g>").size).to eq(3) # all, big.rb:1, the merged box
        expect(svg).to include("<title>[2500 narrower frames] — 250000 bytes live (25.00 %), 2500 frames merged</title>")
        expect(html).to include("2500 frames (in subtrees narrower than 0.1 % of the width) were merged")
      end
    end

    it "lays frames out outermost first: Ruby frames reversed, then native ones, a frameless row as its location" do
      Dir.mktmpdir do |dir|
        st = lambda do |ruby, native, live|
          { "ruby" => ruby, "native" => native, "total" => live, "allocations" => 1, "frees" => 0, "live_bytes" => live,
            "live_count" => 1 }
        end
        path = write_dump(dir, [
          location("in.rb:2", 600, stacks: [st.call(%w[in.rb:2 out.rb:9], ["lib.so(f+0x1) [0x7f01]", "lib.so(g+0x2) [0x7f02]"], 400),
                                            st.call([], [], 200)]),
          location("lib.so(+0x10) [0x7f10]", 400, stacks: [st.call([], ["lib.so(+0x10) [0x7f10]", "ruby(+0x5) [0x55]"], 400)])
        ])
        svg = ctl("report", path).stdout[%r{<svg id="flame".*?</svg>}m]
        boxes = svg.scan(%r{<title>(.*?) — (\d+) bytes live.*?y="(\d+)"}).map { |name, bytes, y| [name, bytes.to_i, y.to_i / 17] }
        expect(boxes).to eq([["all", 1000, 0], ["out.rb:9", 400, 1], ["in.rb:2", 400, 2], ["lib.so(g+0x2) [0x7f02]", 400, 3],
                             ["lib.so(f+0x1) [0x7f01]", 400, 4], ["ruby(+0x5) [0x55]", 400, 1],
                             ["lib.so(+0x10) [0x7f10]", 400, 2], ["in.rb:2", 200, 1]])
      end
    end

    it "normalises native names: the address goes, the object and offset stay; a bare address stays" do
      require "mwrap/diff"
      {
        "/lib/libruby.so.3.1(+0xd8484) [0x7f8b5ccd8484]" => "/lib/libruby.so.3.1(+0xd8484)",
        "/lib/libc.so.6(strndup+0x1a) [0x7f5f3c7dd52a] at strndup.c:43" => "/lib/libc.so.6(strndup+0x1a) at strndup.c:43",
        "[0x7f5f3c7dd52a]" => "[0x7f5f3c7dd52a]",
        "app/a [0x1].rb:3" => "app/a [0x1].rb:3"
      }.each { |name, normal| expect(Mwrap::Diff.normalise(name)).to eq(normal) }
    end

    it "sorts a table by a heading in its inline script (numbers largest first, then reversed; text A to Z)" do
      node = which("node") or skip "no node to run the page's script"
      require "mwrap/html"
      Dir.mktmpdir do |dir|
        File.write(File.join(dir, "sorter.js"), Mwrap::Html::SORTER_JS)
        File.write(File.join(dir, "dom.js"), <<~'JS')
          // Just the DOM the sorter touches: one table, a number and a text column.
          function classList() {
            var s = new Set();
            return { add: function () { for (var a of arguments) s.add(a); },
                     remove: function () { for (var a of arguments) s.delete(a); },
                     contains: function (c) { return s.has(c); } };
          }
          var rows = [["5", "b"], ["-", "c"], ["+12", "a"], ["-3", "d"]].map(function (r) {
            return { cells: r.map(function (t) { return { textContent: t }; }) };
          });
          var body = { get rows() { return rows.slice(); },
                       appendChild: function (r) { rows.splice(rows.indexOf(r), 1); rows.push(r); } };
          var ths = [{ dataset: { kind: "num" } }, { dataset: { kind: "text" } }];
          ths.forEach(function (th) { th.classList = classList(); th.addEventListener = function (_, f) { th.click = f; }; });
          var table = { tBodies: [body], querySelectorAll: function () { return ths; } };
          global.document = { querySelectorAll: function () { return [table]; },
                              querySelector: function () { return table; } };
          global.location = { hash: "" }; // a page opened without #sort=
          eval(require("fs").readFileSync(__dirname + "/sorter.js", "utf8"));
          var order = function () { return rows.map(function (r) { return r.cells[1].textContent; }).join(""); };
          ths[0].click(); console.log(order());
          ths[0].click(); console.log(order());
          ths[1].click(); console.log(order());
        JS
        r = capture({}, node, File.join(dir, "dom.js"))
        expect([r.stdout, r.stderr]).to eq(["abdc\ncdba\nabcd\n", ""])
      end
    end
  end

  it "names a bad input file (exit 1) and a usage error (exit 2)" do
    Dir.mktmpdir do |dir|
      missing = File.join(dir, "none.json")
      not_json = File.join(dir, "log.txt")
      File.write(not_json, "       102401648       100006 /app/examples/fiddle_leak.rb:15\n")
      empty = File.join(dir, "empty.json")
      File.write(empty, "")
      no_locations = File.join(dir, "other.json")
      File.write(no_locations, '{"mwrap":1,"memory":{}}')
      {
        %W[report #{missing}] => "mwrapctl: #{missing}: No such file or directory\n",
        %W[report #{not_json}] => "mwrapctl: #{not_json}: not JSON (unexpected token at \"100006 /app/examples/fiddle_leak.rb:15\")\n",
        %W[report #{empty}] => "mwrapctl: #{empty}: empty file, not an mwrap JSON dump\n",
        %W[report #{no_locations}] => "mwrapctl: #{no_locations}: not an mwrap JSON dump (no \"locations\")\n",
        %W[diff #{no_locations} #{missing}] => "mwrapctl: #{no_locations}: not an mwrap JSON dump (no \"locations\")\n"
      }.each do |args, message|
        r = ctl(*args)
        expect(r.exitstatus).to eq(1), args.inspect
        expect(r.stderr).to(message.is_a?(Regexp) ? match(message) : eq(message))
      end

      good = File.join(dir, "good.json")
      File.write(good, '{"mwrap":1,"locations":[]}')
      r = ctl("report", good, "-o", File.join(dir, "no", "r.html"))
      expect([r.exitstatus, r.stderr]).to eq([1, "mwrapctl: #{File.join(dir, 'no', 'r.html')}: No such file or directory\n"])

      {
        %W[report #{good} -o] => "mwrapctl: -o needs a file name",
        %w[report] => "mwrapctl: report needs a JSON dump (MWRAP=dump_format:json)",
        %W[report #{good} #{good}] => "mwrapctl: report takes a JSON dump (MWRAP=dump_format:json), not 2 files",
        %W[report #{good} -n 3] => 'mwrapctl: unknown report option "-n"',
        %W[diff #{good}] => "mwrapctl: diff needs 2 JSON dumps (MWRAP=dump_format:json)",
        %W[diff #{good} #{good} -n 0] => 'mwrapctl: -n takes a positive number, not "0"',
        %W[diff #{good} #{good} -o] => "mwrapctl: -o needs a file name"
      }.each do |args, line|
        r = ctl(*args)
        expect(r.exitstatus).to eq(2), args.inspect
        expect(r.stderr.lines.first).to eq("#{line}\n"), args.inspect
        expect(r.stderr).to include("Usage: mwrapctl")
      end

      # an empty dump is a page with nothing live, not an error
      r = ctl("report", good)
      expect([r.exitstatus, r.stderr]).to eq([0, ""])
      expect(r.stdout).to include("No stack holds live bytes.")
    end
  end
end
