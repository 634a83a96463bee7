# frozen_string_literal: true

require_relative "../spec_helper"
require_relative "../hardening/hardening_helper"
require "json"
require "socket"
require "timeout"

# MWRAP=socket_dir:DIR: every process under the preload serves its tables
# on DIR/PID.sock from a thread of the preload's own, Ruby or not. Real
# processes; a Ruby UNIXSocket client. Scripts print "ready" once the
# socket is there (start-up binds it before the program runs) and wait on
# stdin, so closing stdin ends them.
RSpec.describe "the endpoint on a unix socket (MWRAP=socket_dir)" do
  before(:all) { require_preload! }

  Answer = Struct.new(:status, :headers, :body, :peer_pid)

  # One request on `sock`; the whole answer (the server closes after it).
  def http(sock, method, path, raw: nil, timeout: 10)
    Timeout.timeout(timeout) do
      UNIXSocket.open(sock) do |s|
        peer_pid = s.getsockopt(Socket::SOL_SOCKET, Socket::SO_PEERCRED).data.unpack1("l")
        s.write(raw || "#{method} #{path} HTTP/1.1\r\nhost: x\r\n\r\n")
        data = s.read
        head, body = data.split("\r\n\r\n", 2)
        lines = head.split("\r\n")
        headers = lines.drop(1).to_h { |l| l.split(": ", 2) }
        Answer.new(lines.first[%r{\AHTTP/1\.1 (\d+) }, 1].to_i, headers, body, peer_pid)
      end
    end
  end

  def sock_of(dir, pid) = File.join(dir, "#{pid}.sock")

  def env_for(dir) = { "MWRAP" => "socket_dir:#{dir}" }

  # Runs `cmd` under the preload with socket_dir `dir`; yields the child
  # and its first line.
  def serving(dir, *cmd, env: {})
    SpecProcess.open({ "LD_PRELOAD" => built_preload }.merge(env_for(dir)).merge(env), *cmd, timeout: 30) do |child|
      yield child, child.gets(20)
    end
  end

  it "serves /json, /folded, 404, 405, HEAD and 400 for a Ruby script, and removes its socket at exit" do
    Dir.mktmpdir do |tmp|
      dir = File.join(tmp, "socks")
      script = File.join(tmp, "leak.rb")
      File.write(script, <<~RUBY)
        $kept = "x" * 300_000 # leak
        $stdout.puts "ready \#{$$}"
        $stdout.flush
        $stdin.gets
      RUBY
      sock = nil
      result = serving(dir, RbConfig.ruby, script) do |child, line|
        expect(line).to eq("ready #{child.pid}\n")
        sock = sock_of(dir, child.pid)
        expect(File.stat(dir).mode & 0o777).to eq(0o700)
        expect(File.socket?(sock)).to be(true)
        expect(File.stat(sock).mode & 0o777).to eq(0o600)

        json = http(sock, "GET", "/json")
        expect(json.status).to eq(200)
        expect(json.headers).to include("content-type" => "application/json", "connection" => "close",
                                        "cache-control" => "no-cache")
        expect(json.peer_pid).to eq(child.pid)
        doc = JSON.parse(json.body)
        leak = doc.fetch("locations").find { |l| l["location"] == "#{script}:1" }
        expect(leak).not_to be_nil
        expect(leak["live_bytes"]).to be >= 300_000

        folded = http(sock, "GET", "/folded?x=1")
        expect(folded.status).to eq(200)
        expect(folded.body.lines.grep(/\A#{Regexp.escape(script)}:1 \d+\n\z/)).not_to be_empty

        nope = http(sock, "GET", "/nope")
        expect(nope.status).to eq(404)
        expect(nope.body).to include("<h1>not found: /nope</h1>")
        post = http(sock, "POST", "/json")
        expect([post.status, post.headers["allow"]]).to eq([405, "GET, HEAD"])
        head = http(sock, "HEAD", "/json")
        expect([head.status, head.headers["content-type"], head.body]).to eq([200, "application/json", ""])
        bad = http(sock, nil, nil, raw: "GET /json HTTP/1.1\r\nno header line\r\n\r\n")
        expect(bad.status).to eq(400)
        expect(bad.body).to start_with("bad request: ")
        target = http(sock, nil, nil, raw: "GET json HTTP/1.1\r\n\r\n")
        expect([target.status, target.body]).to eq([400, "bad request: the request target \"json\" is not a path\n"])
        child.close_stdin
      end
      expect(result).to be_success, result.describe
      expect(result.stderr).to eq("")
      expect(File.exist?(sock)).to be(false)
      expect(Dir.children(dir)).to eq([])
    end
  end

  it "answers while the main thread spins holding the GVL" do
    Dir.mktmpdir do |dir|
      code = 'trap("TERM") { exit 0 }; $stdout.puts "ready"; $stdout.flush; loop { x = 1 + 1 }'
      result = serving(dir, RbConfig.ruby, "-e", code) do |child, line|
        expect(line).to eq("ready\n")
        json = http(sock_of(dir, child.pid), "GET", "/json", timeout: 10)
        expect(json.status).to eq(200)
        expect(JSON.parse(json.body).fetch("locations")).not_to be_empty
        Process.kill(:TERM, child.pid)
      end
      expect(result).to be_success, result.describe
      expect(Dir.children(dir)).to eq([])
    end
  end

  it "serves a program with no Ruby (perl), by native location" do
    perl = which("perl") or skip "no perl"
    Dir.mktmpdir do |dir|
      result = serving(dir, perl, "-e", '$| = 1; print "ready\n"; <STDIN>') do |child, line|
        expect(line).to eq("ready\n")
        json = http(sock_of(dir, child.pid), "GET", "/json")
        locations = JSON.parse(json.body).fetch("locations").map { |l| l["location"] }
        expect(locations).to include(a_string_matching(/perl.*\[0x\h+\]\z/))
        expect(locations.grep(/\.rb:\d+\z/)).to eq([])
        child.close_stdin
      end
      expect(result).to be_success, result.describe
      expect(Dir.children(dir)).to eq([])
    end
  end

  it "gives each fork child a socket of its own, served by the child, and removes all of them at exit" do
    Dir.mktmpdir do |dir|
      code = <<~RUBY
        $stdout.sync = true
        3.times { fork { puts "child \#{$$}"; $stdin.gets } }
        puts "parent \#{$$}"
        $stdin.gets
        Process.waitall
      RUBY
      result = serving(dir, RbConfig.ruby, "-e", code) do |child, first|
        lines = [first] + Array.new(3) { child.gets(20) }
        pids = lines.map { |l| l[/\A(?:child|parent) (\d+)\n\z/, 1].to_i }
        expect(lines.grep(/\Aparent /)).to eq(["parent #{child.pid}\n"])
        expect(pids.uniq.size).to eq(4)
        expect(Dir.children(dir).sort).to eq(pids.map { |p| "#{p}.sock" }.sort)
        pids.each do |pid|
          json = http(sock_of(dir, pid), "GET", "/json")
          expect([json.status, json.peer_pid]).to eq([200, pid])
          expect(JSON.parse(json.body).fetch("locations")).not_to be_empty
        end
        child.close_stdin
      end
      expect(result).to be_success, result.describe
      expect(result.stderr).to eq("")
      expect(Dir.children(dir)).to eq([])
    end
  end

  # spec/hardening/native/signal_handler.c: a SIGALRM handler that
  # interrupted malloc or free (often our hook, holding a table lock)
  # forks; the child returns from the handler, allocates and exits. Its
  # endpoint thread is started from the fork handler, in that context.
  it "starts a fork child's endpoint when the fork came from a signal handler inside malloc" do
    extend HardeningHelpers
    need_cc!
    prog = native("signal_handler", flags: ["-rdynamic"])
    10.times do
      Dir.mktmpdir do |dir|
        r = with_preload(prog, "child", "1000", env: env_for(dir))
        expect(r).to be_success, r.describe
        expect(r.stderr).to eq("")
        expect(r.stdout).to match(/\Achild pid \d+ iterations \d+\nparent pid \d+ iterations \d+\n\z/)
        expect(Dir.children(dir)).to eq([])
      end
    end
  end

  it "serves the new image after exec under the same pid, replacing the old socket" do
    perl = which("perl") or skip "no perl"
    Dir.mktmpdir do |dir|
      code = "$stdout.puts 'ruby'; $stdout.flush; exec #{perl.dump}, '-e', '$| = 1; print qq(perl\\n); <STDIN>'"
      result = serving(dir, RbConfig.ruby, "-e", code) do |child, line|
        expect(line).to eq("ruby\n")
        expect(child.gets(20)).to eq("perl\n")
        json = http(sock_of(dir, child.pid), "GET", "/json")
        expect(json.peer_pid).to eq(child.pid)
        expect(JSON.parse(json.body).fetch("locations").map { |l| l["location"] }.grep(/\.rb:\d+\z/)).to eq([])
        child.close_stdin
      end
      expect(result).to be_success, result.describe
      expect(Dir.children(dir)).to eq([])
    end
  end

  # glibc's setuid signals every thread (SIGSETXID) and waits for each:
  # the endpoint's thread must not block that signal.
  it "lets the program setuid (every thread takes glibc's signal)" do
    skip "needs root (setuid)" unless Process.euid.zero?
    Dir.mktmpdir do |dir|
      r = run_ruby("-e", "Process::Sys.setuid(65534); p Process.euid", env: env_for(dir), timeout: 20)
      expect([r.stdout, r.stderr, r.exitstatus]).to eq(["65534\n", "", 0])
    end
  end

  context "a client of another uid" do
    before do
      skip "needs root (setpriv --reuid)" unless Process.euid.zero?
      @setpriv = which("setpriv") or skip "no setpriv"
    end

    # What `nobody` gets when it connects to `sock` and asks for /json: the
    # answer's first line, or the error's class.
    def as_nobody(sock)
      client = <<~RUBY
        require "socket"
        begin
          UNIXSocket.open(ARGV[0]) do |s|
            s.write("GET /json HTTP/1.1\\r\\n\\r\\n")
            print s.read.lines.first.to_s.chomp
          end
        rescue SystemCallError => e
          print e.class
        end
      RUBY
      r = capture({}, @setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", RbConfig.ruby, "-e", client, sock,
                  chdir: "/")
      expect(r).to be_success, r.describe
      r.stdout
    end

    it "cannot reach the socket in a 0700 dir, nor a 0600 socket in a 0711 dir, and gets 403 through a 0666 one" do
      Dir.mktmpdir do |dir|
        File.chmod(0o711, File.dirname(dir)) if File.stat(File.dirname(dir)).mode & 0o001 == 0
        result = serving(dir, RbConfig.ruby, "-e", '$stdout.puts "ready"; $stdout.flush; $stdin.gets') do |child, _|
          sock = sock_of(dir, child.pid)
          expect(as_nobody(sock)).to eq("Errno::EACCES")
          File.chmod(0o711, dir)
          expect(as_nobody(sock)).to eq("Errno::EACCES")
          File.chmod(0o666, sock) # the test opens it: SO_PEERCRED is the second line
          expect(as_nobody(sock)).to eq("HTTP/1.1 403 Forbidden")
          expect(http(sock, "GET", "/json").status).to eq(200)
          child.close_stdin
        end
        expect(result).to be_success, result.describe
      end
    end
  end

  describe "a refused socket_dir: one stderr line, the program unchanged" do
    SCRIPT = '$stdout.puts "out"; warn "err"; exit 3'

    def check_refused(dir, line)
      plain = run_ruby("-e", SCRIPT, preload: nil)
      r = run_ruby("-e", SCRIPT, env: env_for(dir))
      expect([r.stdout, r.exitstatus]).to eq([plain.stdout, plain.exitstatus])
      expect([plain.stdout, plain.exitstatus]).to eq(["out\n", 3])
      expect(r.stderr.lines).to eq([line, "err\n"])
    end

    it "world-writable" do
      Dir.mktmpdir do |tmp|
        File.chmod(0o777, tmp)
        check_refused(tmp, "mwrap: socket_dir #{tmp.dump} is world-writable (mode 0777), so another user " \
                           "could replace the socket; no endpoint\n")
        File.chmod(0o720, tmp)
        check_refused(tmp, "mwrap: socket_dir #{tmp.dump} is group-writable (mode 0720), so another user " \
                           "could replace the socket; no endpoint\n")
        expect(Dir.children(tmp)).to eq([])
      end
    end

    it "another user's" do
      Dir.mktmpdir do |tmp|
        if Process.euid.zero?
          File.chown(65_534, nil, tmp)
          owner = 65_534
        else
          tmp = "/"
          owner = 0
        end
        check_refused(tmp, "mwrap: socket_dir #{tmp.dump} is owned by uid #{owner}, not by this process's uid " \
                           "#{Process.euid}; no endpoint\n")
      end
    end

    it "too long for a unix socket path" do
      long = "/tmp/#{'d' * 90}"
      check_refused(long, "mwrap: ignoring bad MWRAP entries: socket_dir #{long[0, 64].dump[0..-2]}\"... (95 bytes) " \
                          "is too long for a unix socket: 95 bytes, at most 94 (DIR/PID.sock must fit in 108 bytes)\n")
      expect(File.exist?(long)).to be(false)
    end
  end

  it "leaves the program's output and exit status as they are without socket_dir" do
    Dir.mktmpdir do |dir|
      code = '$stdout.puts Thread.list.size; $stdout.puts (1..3).map { fork { exit 7 }; Process.wait; $?.exitstatus }.inspect; warn "e"; exit 5'
      plain = run_ruby("-e", code)
      served = run_ruby("-e", code, env: env_for(dir))
      expect([served.stdout, served.stderr, served.exitstatus]).to eq([plain.stdout, plain.stderr, plain.exitstatus])
      expect([plain.stdout, plain.exitstatus]).to eq(["1\n[7, 7, 7]\n", 5])
      expect(Dir.children(dir)).to eq([])
    end
  end
end
