# frozen_string_literal: true

require "cgi"
require "json"
require "net/http"
require "socket"
require "spec_helper"
require "support/endpoint_helpers"

# exe/mwrapctl without a live endpoint: usage errors, stale sockets,
# processes that cannot answer.
RSpec.describe "mwrapctl" do
  EXE_CTL = File.expand_path("../../exe/mwrapctl", __dir__)

  def ctl(*args, env: {})
    capture(env, RbConfig.ruby, EXE_CTL, *args)
  end

  it "names a usage error and exits 2" do
    {
      [] => "mwrapctl: no command",
      %w[frob] => 'mwrapctl: unknown command "frob"',
      %w[--bogus ls] => "mwrapctl: unknown option --bogus",
      %w[get 12x /json] => 'mwrapctl: PID must be a number, not "12x"',
      %w[get 12] => "mwrapctl: get needs a PATH (e.g. /json)",
      %w[get 12 json] => 'mwrapctl: PATH must start with /: "json"',
      %w[top 12 -n 0] => 'mwrapctl: -n takes a positive number, not "0"',
      %w[top 12 --sort size] => 'mwrapctl: --sort takes live, total or growth, not "size"',
      %w[--dir] => "mwrapctl: --dir needs a directory"
    }.each do |args, line|
      r = ctl(*args)
      expect(r.exitstatus).to eq(2), args.inspect
      expect(r.stderr.lines.first).to eq("#{line}\n"), args.inspect
      expect(r.stderr).to include("Usage: mwrapctl")
    end
    expect(ctl("--help").then { |r| [r.exitstatus, r.stdout.start_with?("Usage: mwrapctl")] }).to eq([0, true])
  end

  it "removes stale sockets in ls, and says a dead or missing endpoint cannot answer (exit 1)" do
    Dir.mktmpdir do |dir|
      stale = File.join(dir, "999999.sock")
      UNIXServer.new(stale).close # bound, then nobody listens: connect is refused
      File.write(File.join(dir, "notes.txt"), "")
      r = ctl("ls", dir)
      expect(r.exitstatus).to eq(0)
      expect(r.stdout).to eq("PID             RSS  COMMAND\n")
      expect(r.stderr).to eq("mwrapctl: removed stale socket #{stale} (no process answers on it)\n")
      expect(Dir.children(dir)).to eq(["notes.txt"])

      r = ctl("--dir", dir, "get", "999999", "/json")
      expect([r.exitstatus, r.stderr]).to eq([1, "mwrapctl: no endpoint for pid 999999: #{stale} does not exist\n"])
      UNIXServer.new(stale).close
      r = ctl("get", "999999", "/json", env: { "MWRAP" => "dump_fd:2,socket_dir:#{dir}" })
      expect(r.exitstatus).to eq(1)
      expect(r.stderr).to eq("mwrapctl: pid 999999 does not answer on #{stale} (a stale socket: `mwrapctl ls` removes it)\n")
      r = ctl("ls", File.join(dir, "none"))
      expect([r.exitstatus, r.stderr]).to eq([1, "mwrapctl: #{File.join(dir, 'none')}: no such directory\n"])
    end
  end

  context "with a live endpoint" do
    before { require_preload! }

    it "lists the process, shows its top locations, gets a page and its pprof profile" do
      Dir.mktmpdir do |dir|
        serving_leak(dir) do |_child, pid, sock_dir, script|
          ls = ctl("ls", sock_dir)
          expect(ls.exitstatus).to eq(0)
          row = ls.stdout.lines.find { |l| l.start_with?(pid.to_s) }
          expect(row).to match(/\A#{pid} +[\d.]+ MiB  .*ruby.* #{Regexp.escape(script)}\n\z/)

          top = ctl("--dir", sock_dir, "top", pid.to_s, "-n", "3", "--sort", "live")
          expect(top.exitstatus).to eq(0), top.stderr
          lines = top.stdout.lines
          expect(lines[0]).to match(/\Apid #{pid}: \d+ locations\n\z/)
          expect(lines[1].split).to eq(%w[live_bytes live_count total allocations growth location])
          expect(lines[2].split.last).to eq("#{script}:2")
          expect(Integer(lines[2].split.first)).to be >= 3_000_000
          expect(lines.size).to eq(5)

          json = ctl("get", pid.to_s, "/json", env: { "MWRAP" => "socket_dir:#{sock_dir}" })
          expect(json.exitstatus).to eq(0)
          doc = JSON.parse(json.stdout)
          expect(doc["locations"].map { |l| l["location"] }).to include("#{script}:2")

          pprof = ctl("--dir", sock_dir, "pprof", pid.to_s)
          expect(pprof.exitstatus).to eq(0)
          expect(pprof.stdout.b[0, 2]).to eq("\x1f\x8b".b) # gzip

          missing = ctl("--dir", sock_dir, "get", pid.to_s, "/nope")
          expect(missing.exitstatus).to eq(1)
          expect(missing.stderr).to eq("mwrapctl: /nope of #{pid}: HTTP 404\n")
        end
      end
    end

    it "proxies every process of the directory on loopback: read-only, links under /PID, Host checked" do
      Dir.mktmpdir do |dir|
        serving_leak(dir) do |_child, pid, sock_dir, script|
          proxying(sock_dir) do |port|
            http = Net::HTTP.new("127.0.0.1", port)
            index = http.get("/")
            expect(index.code).to eq("200")
            expect(index.body).to include(%(<a href="/#{pid}/">#{pid}</a>))
            each = http.get("/#{pid}/each?limit=5")
            expect(each.code).to eq("200")
            expect(each.body).to include(CGI.escapeHTML("#{script}:2"))
            expect(each.body).to include(%(href="/#{pid}/at/))
            expect(each.body).not_to match(%r{href="/(?!#{pid}/)})
            expect(http.get("/#{pid}/json").then { |r| JSON.parse(r.body)["pid"] }).to eq(pid)
            post = http.post("/#{pid}/reset", "")
            expect([post.code, post["allow"]]).to eq(["405", "GET, HEAD"])
            rebound = http.get("/", { "Host" => "attacker.example:#{port}" })
            expect(rebound.code).to eq("403")
            expect(rebound.body).to include("guard against DNS rebinding")
            expect(http.get("/999999/each").code).to eq("404")
          end
        end
      end
      r = ctl("proxy", Dir.tmpdir, "--listen", "0.0.0.0:8080")
      expect(r.exitstatus).to eq(2)
      expect(r.stderr.lines.first).to eq("mwrapctl: --listen 0.0.0.0:8080: 0.0.0.0 is not a loopback address; " \
                                         "the proxy binds loopback only\n")
      expect(ctl("proxy", Dir.tmpdir).stderr.lines.first)
        .to eq("mwrapctl: proxy needs --listen HOST:PORT (a loopback address, e.g. 127.0.0.1:8080)\n")
    end
  end
end
