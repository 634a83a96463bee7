# frozen_string_literal: true

require_relative "../spec_helper"
require "json"
require "socket"
require "timeout"

# MWRAP=interval_ms (the endpoint's thread samples RSS and live bytes:
# /timeline, /peak) and MWRAP=snapshot_interval (the JSON dump renamed
# over dump_path every SEC seconds, so a killed process leaves its last
# state). Real processes; scripts print a line once they are where the
# test wants them and wait on stdin. Samples arrive with time, so the
# tests poll for them, each with a deadline.
RSpec.describe "timeline, peak and snapshots (MWRAP=interval_ms, snapshot_interval)" do
  before(:all) { require_preload! }

  DEADLINE_SECONDS = 10

  # GET `path` on `sock`: [status, body].
  def get(sock, path)
    Timeout.timeout(10) do
      UNIXSocket.open(sock) do |s|
        s.write("GET #{path} HTTP/1.1\r\nhost: x\r\n\r\n")
        head, body = s.read.split("\r\n\r\n", 2)
        [head[%r{\AHTTP/1\.1 (\d+) }, 1].to_i, body]
      end
    end
  end

  # The block's value once it is truthy; fails after DEADLINE_SECONDS.
  def eventually(what)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + DEADLINE_SECONDS
    loop do
      value = yield
      return value if value

      raise "#{what}: not within #{DEADLINE_SECONDS} s" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.05 # polling for samples, which come with time
    end
  end

  def serving(dir, script, mwrap)
    env = { "LD_PRELOAD" => built_preload, "MWRAP" => "socket_dir:#{dir},#{mwrap}" }
    SpecProcess.open(env, RbConfig.ruby, script, timeout: 40) { |child| yield child }
  end

  def circles(html, series) = html.scan(/<circle class="#{series}" /).size

  # /peak's live bytes and its locations ([bytes, name], in order).
  def peak_of(html)
    live = html[%r{<tr><th>live bytes</th><td>(\d+) }, 1]&.to_i
    rows = html.split("<th>location</th></tr>", 2)[1].to_s
               .scan(%r{<tr><td>(\d+)</td><td>([^<]*)</td></tr>}).map { |b, n| [b.to_i, n] }
    [live, rows]
  end

  it "samples RSS and live bytes into /timeline: an SVG chart of both, and a table; linked from /" do
    Dir.mktmpdir do |tmp|
      script = File.join(tmp, "wait.rb")
      File.write(script, "$kept = 'k' * 100_000\n$stdout.puts 'ready'\n$stdout.flush\n$stdin.gets\n")
      result = serving(tmp, script, "interval_ms:50") do |child|
        expect(child.gets(20)).to eq("ready\n")
        sock = File.join(tmp, "#{child.pid}.sock")
        html = eventually("3 samples of each series") do
          status, body = get(sock, "/timeline")
          expect(status).to eq(200)
          body if circles(body, "rss") >= 3 && circles(body, "live") >= 3
        end
        expect(html).to include("<svg", '<polyline class="rss"', '<polyline class="live"', "MiB",
                                "seconds since start", "sampled every 50 ms", "<th>live bytes</th>")
        expect(html.scan(/<circle class="rss" /).size).to eq(html.scan(/<circle class="live" /).size)
        expect(html).not_to match(/<script|src=|href="https?:/) # nothing fetched, no JS
        live = html.scan(%r{<tr><td>[\d.]+</td><td>[\d.]+</td><td>[\d.]+</td><td>(\d+)</td><td>(\d+)</td></tr>})
        expect(live).not_to be_empty
        expect(live.first.map(&:to_i)).to all(be > 100_000)
        _, index = get(sock, "/")
        expect(index).to include('href="/timeline"', 'href="/peak"')
        child.close_stdin
      end
      expect(result).to be_success, result.describe
      expect(result.stderr).to eq("")
    end
  end

  it "keeps the peak of live bytes as sampled, with the allocating line first, after it is freed" do
    Dir.mktmpdir do |tmp|
      script = File.join(tmp, "peak.rb")
      File.write(script, <<~RUBY)
        $stdout.sync = true
        puts "ready"
        $stdin.gets
        $big = "x" * 20_000_000 # line 4
        puts "allocated"
        $stdin.gets
        $big = nil
        GC.start
        puts "freed"
        $stdin.gets
      RUBY
      result = serving(tmp, script, "interval_ms:50") do |child|
        expect(child.gets(20)).to eq("ready\n")
        sock = File.join(tmp, "#{child.pid}.sock")
        child.puts("go")
        expect(child.gets(20)).to eq("allocated\n")
        eventually("a sample with the 20 MB live") { peak_of(get(sock, "/peak")[1])[0].to_i >= 20_000_000 }
        child.puts("free")
        expect(child.gets(20)).to eq("freed\n")
        eventually("a sample after the free") do
          latest = get(sock, "/timeline")[1][%r{<tr><td>[\d.]+</td><td>[\d.]+</td><td>[\d.]+</td><td>\d+</td><td>(\d+)</td></tr>}, 1]
          latest && latest.to_i < 15_000_000
        end
        status, html = get(sock, "/peak")
        expect(status).to eq(200)
        live, rows = peak_of(html)
        expect(live).to be >= 20_000_000
        expect(html).to include("as sampled", "seconds since start", "UTC")
        expect(rows.first).to match([be >= 20_000_000, "#{script}:4"])
        expect(rows.size).to be_between(2, 10)
        child.close_stdin
      end
      expect(result).to be_success, result.describe
      expect(result.stderr).to eq("")
    end
  end

  it "replaces dump_path with a whole JSON snapshot every second; a SIGTERM'd process leaves its last one" do
    Dir.mktmpdir do |tmp|
      dump = File.join(tmp, "snap.json")
      script = File.join(tmp, "snap.rb")
      File.write(script, "$kept = 'y' * 1_000_000\n$stdout.puts 'ready'\n$stdout.flush\n$stdin.gets\n")
      env = { "LD_PRELOAD" => built_preload, "MWRAP" => "snapshot_interval:1,dump_path:#{dump}" }
      kept = ->(doc) { doc.fetch("locations").find { |l| l["location"] == "#{script}:1" } }
      result = SpecProcess.open(env, RbConfig.ruby, script, timeout: 40) do |child|
        expect(child.gets(20)).to eq("ready\n")
        doc = eventually("a snapshot holding the script's line") do
          d = begin
            JSON.parse(File.read(dump))
          rescue JSON::ParserError
            nil # the empty file of start-up, until the first snapshot
          end
          d if d && kept.call(d)
        end
        expect(doc.keys).to include("mwrap", "locations", "memory")
        expect(kept.call(doc)["live_bytes"]).to be >= 1_000_000
        expect(Dir.children(tmp).sort - ["snap.json", "snap.rb"]).to all(eq("snap.json.tmp.#{child.pid}"))
        Process.kill(:TERM, child.pid) # the script traps nothing: it dies by the signal
      end
      expect(result.termsig).to eq(Signal.list.fetch("TERM")), result.describe
      expect([result.stdout, result.stderr]).to eq(["ready\n", ""])
      expect(kept.call(JSON.parse(File.read(dump)))["live_bytes"]).to be >= 1_000_000
      expect(Dir.children(tmp).sort).to eq(["snap.json", "snap.rb"])
    end
  end

  it "at exit replaces the dump_path with a last snapshot instead of appending" do
    Dir.mktmpdir do |tmp|
      dump = File.join(tmp, "last.json")
      File.write(dump, "stale\n")
      r = run_ruby("-e", '$kept = "z" * 500_000; print "out"',
                   env: { "MWRAP" => "snapshot_interval:3600,dump_path:#{dump}" })
      expect([r.stdout, r.stderr, r.exitstatus]).to eq(["out", "", 0])
      doc = JSON.parse(File.read(dump))
      expect(doc.fetch("locations").map { |l| l["location"] }).to include("-e:1")
      expect(Dir.children(tmp)).to eq(["last.json"])
    end
  end

  prefix = "mwrap: ignoring bad MWRAP entries: "
  {
    "interval_ms:5" => 'interval_ms "5" is not a number of milliseconds from 10 to 3600000',
    "interval_ms:3600001" => 'interval_ms "3600001" is not a number of milliseconds from 10 to 3600000',
    "snapshot_interval:0" => 'snapshot_interval "0" is not a number of seconds from 1 to 86400',
    "snapshot_interval:1" => "snapshot_interval 1 needs dump_path (the file each snapshot replaces); no snapshots"
  }.each do |mwrap, problem|
    it "MWRAP=#{mwrap}: one stderr line (#{problem}), output and exit status unchanged" do
      program = ["-e", '$stdout.print "out\n"; $stderr.print "err\n"; x = "z" * 100_000; exit 7']
      Dir.mktmpdir do |tmp|
        plain = run_ruby(*program, preload: nil)
        r = SpecProcess.run({ "LD_PRELOAD" => built_preload, "MWRAP" => mwrap },
                            RbConfig.ruby, *program, chdir: tmp)
        expect([r.stdout, r.stderr, r.exitstatus]).to eq([plain.stdout, "#{prefix}#{problem}\n#{plain.stderr}", 7])
        expect(Dir.children(tmp)).to eq([])
      end
    end
  end
end
