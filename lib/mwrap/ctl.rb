# frozen_string_literal: true

require "socket"
require "optparse"
require_relative "json_dump"

module Mwrap
  # mwrapctl: talks to the per-process endpoints of processes running under
  # the preload with MWRAP=socket_dir:DIR (DIR/PID.sock, HTTP/1.1 over a
  # unix socket), and reads JSON dumps (`report`, `diff`). A second
  # executable beside `mwrap`, because `mwrap CMD` must keep running any
  # command, `ls` and `top` included.
  #
  # Exit status: 0 done, 1 a process or socket that cannot answer or a
  # file that cannot be read or written (named in one stderr line), 2 a
  # usage error (named, with the usage).
  class Ctl
    USAGE = <<~USAGE
      Usage: mwrapctl [--dir DIR] COMMAND [ARGS...]

        ls                 the live processes in DIR: pid, RSS, command (stale sockets are removed)
        get PID PATH       one page of PID's endpoint to stdout (e.g. /json, /folded, /each?sort=total)
        pprof PID          PID's heap profile (gzip'd profile.proto) to stdout: mwrapctl pprof PID > heap.pb.gz
        top PID [-n N] [--sort live|total|growth] [--watch SECONDS]
                           PID's top locations as a table, refreshed every SECONDS with --watch
        report DUMP.json [-o FILE.html]
                           a dump_format:json dump as one self-contained HTML page (to stdout without -o)
        diff A.json B.json [-n N] [-o FILE.html]
                           what changed from dump A to dump B, largest growth of live bytes first:
                           the top N (30) locations and stacks as text, or all of them as HTML with -o
        proxy [DIR] --listen HOST:PORT
                           one read-only HTTP server on a loopback address browsing every process in DIR

      DIR is --dir DIR, else socket_dir in MWRAP, else #{"/tmp/mwrap-UID"}: start programs with
      MWRAP=socket_dir:DIR to give them an endpoint there.
    USAGE

    # A usage error: exit 2.
    class UsageError < StandardError; end
    # A process that cannot answer: exit 1.
    class Unreachable < StandardError; end
    # An output file that cannot be written: exit 1.
    class CannotWrite < StandardError; end

    SORTS = { "live" => "live_bytes", "total" => "total", "growth" => "growth" }.freeze

    def self.default_dir
      "/tmp/mwrap-#{Process.uid}"
    end

    # The socket directory: --dir, else MWRAP's socket_dir, else the default.
    def self.socket_dir(given, env = ENV)
      return given if given

      env.fetch("MWRAP", "").split(",").each do |entry|
        key, value = entry.split(":", 2)
        return value if key == "socket_dir" && value && !value.empty?
      end
      default_dir
    end

    def initialize(argv, out: $stdout, err: $stderr, env: ENV)
      @argv = argv.dup
      @out = out
      @err = err
      @env = env
    end

    # Runs the command line; returns the exit status.
    def run
      dir = nil
      while (arg = @argv.first)&.start_with?("-")
        case @argv.shift
        when "-h", "--help"
          @out.print(USAGE)
          return 0
        when "--dir"
          dir = @argv.shift or raise UsageError, "--dir needs a directory"
        when "--"
          break
        else
          raise UsageError, "unknown option #{arg}"
        end
      end
      @dir = Ctl.socket_dir(dir, @env)
      command = @argv.shift or raise UsageError, "no command"
      case command
      when "ls" then ls
      when "get" then get
      when "pprof" then pprof
      when "top" then top
      when "report" then report
      when "diff" then diff
      when "proxy" then proxy
      else raise UsageError, "unknown command #{command.inspect}"
      end
      0
    rescue UsageError => e
      @err.print("mwrapctl: #{e.message}\n#{USAGE}")
      2
    rescue Unreachable, CannotWrite, JsonDump::Invalid => e
      @err.puts("mwrapctl: #{e.message}")
      1
    end

    private

    # `proxy [DIR] --listen HOST:PORT`: serves until interrupted.
    def proxy
      listen = nil
      until @argv.empty?
        arg = @argv.shift
        if arg == "--listen"
          listen = @argv.shift or raise UsageError, "--listen needs HOST:PORT"
        elsif arg.start_with?("-")
          raise UsageError, "unknown proxy option #{arg.inspect}"
        else
          @dir = arg
        end
      end
      raise UsageError, "proxy needs --listen HOST:PORT (a loopback address, e.g. 127.0.0.1:8080)" unless listen
      raise Unreachable, "#{@dir}: no such directory" unless File.directory?(@dir)

      require "mwrap/proxy"
      server = begin
        Proxy.new(@dir, listen)
      rescue Proxy::BadListen => e
        raise UsageError, e.message
      rescue SystemCallError => e
        raise Unreachable, "cannot listen on #{listen}: #{e.message}"
      end
      @err.puts(server.banner)
      @out.puts("listening on http://#{listen.sub(/:\d+\z/, '')}:#{server.port}/")
      @out.flush
      %w[INT TERM].each { |sig| trap(sig) { server.shutdown } }
      server.start
    end

    # `ls [DIR]`.
    def ls
      @dir = @argv.shift if @argv.first
      raise UsageError, "ls takes at most a directory" unless @argv.empty?
      raise Unreachable, "#{@dir}: no such directory" unless File.directory?(@dir)

      rows = []
      Dir.children(@dir).grep(/\A\d+\.sock\z/).sort_by(&:to_i).each do |name|
        pid = name.to_i
        path = File.join(@dir, name)
        if alive?(path)
          rows << [pid, rss_of(pid), command_of(pid)]
        else
          File.unlink(path)
          @err.puts("mwrapctl: removed stale socket #{path} (no process answers on it)")
        end
      rescue Errno::ENOENT
        next # gone meanwhile
      end
      @out.puts(format("%-8s %10s  %s", "PID", "RSS", "COMMAND"))
      rows.each { |pid, rss, cmd| @out.puts(format("%-8d %10s  %s", pid, rss, cmd)) }
    end

    # `get PID PATH`.
    def get
      pid = pid_arg
      path = @argv.shift or raise UsageError, "get needs a PATH (e.g. /json)"
      raise UsageError, "PATH must start with /: #{path.inspect}" unless path.start_with?("/")
      raise UsageError, "get takes a PID and a PATH" unless @argv.empty?

      status, _headers, body = request(pid, "GET", path)
      @out.write(body)
      raise Unreachable, "#{path} of #{pid}: HTTP #{status}" unless status == 200
    end

    # `pprof PID`.
    def pprof
      pid = pid_arg
      raise UsageError, "pprof takes a PID" unless @argv.empty?

      status, _headers, body = request(pid, "GET", "/heap.pb.gz")
      raise Unreachable, "/heap.pb.gz of #{pid}: HTTP #{status}" unless status == 200

      @out.binmode
      @out.write(body)
    end

    # `top PID [-n N] [--sort live|total|growth] [--watch SECONDS]`.
    def top
      pid = pid_arg
      n = 20
      sort = "live"
      watch = nil
      until @argv.empty?
        case (opt = @argv.shift)
        when "-n" then n = positive(opt, @argv.shift)
        when "--sort"
          sort = @argv.shift
          raise UsageError, "--sort takes live, total or growth, not #{sort.inspect}" unless SORTS.key?(sort)
        when "--watch" then watch = positive(opt, @argv.shift, float: true)
        else raise UsageError, "unknown top option #{opt.inspect}"
        end
      end
      loop do
        status, _headers, body = request(pid, "GET", "/each?format=tsv&limit=#{n}&sort=#{SORTS.fetch(sort)}")
        raise Unreachable, "/each of #{pid}: HTTP #{status}" unless status == 200

        @out.print("\e[H\e[2J") if watch && @out.tty?
        print_top(pid, body)
        break unless watch

        sleep watch # the refresh period asked for
      end
    end

    # `report DUMP.json [-o FILE]`.
    def report
      require_relative "report"
      files, opts = dump_args("report", 1, "-o" => :file)
      dump = JsonDump.load(files[0])
      write_output(opts["-o"], Report.new(dump).html)
    end

    # `diff A.json B.json [-n N] [-o FILE]`.
    def diff
      require_relative "diff"
      files, opts = dump_args("diff", 2, "-o" => :file, "-n" => :count)
      result = Diff.new(JsonDump.load(files[0]), JsonDump.load(files[1]))
      if opts["-o"]
        write_output(opts["-o"], result.html)
      else
        @out.print(result.text(opts.fetch("-n", 30)))
      end
    end

    # [files, options] of `command`'s arguments: exactly `count` files and
    # the options `allowed` takes (:file, :count), in any order.
    def dump_args(command, count, allowed)
      files = []
      opts = {}
      until @argv.empty?
        arg = @argv.shift
        if arg == "--"
          files.concat(@argv.shift(@argv.size))
        elsif arg.start_with?("-") && arg != "-"
          kind = allowed[arg] or raise UsageError, "unknown #{command} option #{arg.inspect}"
          value = @argv.shift
          opts[arg] = if kind == :count
                        positive(arg, value)
                      else
                        raise UsageError, "#{arg} needs a file name" if value.nil? || value.empty?

                        value
                      end
        else
          files << arg
        end
      end
      what = count == 1 ? "a JSON dump (MWRAP=dump_format:json)" : "#{count} JSON dumps (MWRAP=dump_format:json)"
      raise UsageError, "#{command} needs #{what}" if files.size < count
      raise UsageError, "#{command} takes #{what}, not #{files.size} files" if files.size > count

      [files, opts]
    end

    # Writes `text` to `path` (stdout when nil).
    def write_output(path, text)
      return @out.write(text) unless path

      File.write(path, text)
    rescue SystemCallError => e
      raise CannotWrite, "#{path}: #{e.message.sub(/ @ \w+ - .*\z/, '')}"
    end

    def print_top(pid, tsv)
      lines = tsv.force_encoding(Encoding::UTF_8).lines(chomp: true)
      count = lines.shift.to_s[/\d+/]
      header = lines.shift.to_s.split("\t")
      @out.puts("pid #{pid}: #{count} locations")
      keep = %w[live_bytes live_count total allocations growth location]
      idx = keep.map { |k| header.index(k) }
      @out.puts(format("%14s %10s %14s %12s %12s  %s", *keep))
      lines.each do |line|
        cells = line.split("\t", header.size)
        @out.puts(format("%14s %10s %14s %12s %12s  %s", *idx.map { |i| cells[i] }))
      end
    end

    def positive(opt, value, float: false)
      n = begin
        float ? Float(value.to_s) : Integer(value.to_s, 10)
      rescue ArgumentError
        nil
      end
      raise UsageError, "#{opt} takes a positive number, not #{value.inspect}" unless n&.positive?

      n
    end

    def pid_arg
      text = @argv.shift or raise UsageError, "no PID"
      raise UsageError, "PID must be a number, not #{text.inspect}" unless text.match?(/\A\d+\z/)

      Integer(text, 10)
    end

    def socket_path(pid)
      File.join(@dir, "#{pid}.sock")
    end

    def alive?(path)
      UNIXSocket.open(path, &:close)
      true
    rescue Errno::ECONNREFUSED, Errno::ENOENT
      false
    end

    # One HTTP/1.1 request; [status, headers, body].
    def request(pid, method, path)
      sock_path = socket_path(pid)
      raise Unreachable, "no endpoint for pid #{pid}: #{sock_path} does not exist" unless File.exist?(sock_path)

      reply = UNIXSocket.open(sock_path) do |s|
        s.write("#{method} #{path} HTTP/1.1\r\nHost: mwrap\r\nConnection: close\r\n\r\n")
        s.read
      end
      head, body = reply.b.split("\r\n\r\n", 2)
      status_line, *header_lines = head.to_s.split("\r\n")
      status = status_line.to_s[/\AHTTP\/1\.[01] (\d{3})/, 1]
      raise Unreachable, "pid #{pid} answered #{status_line.inspect}, not HTTP" unless status

      headers = header_lines.to_h { |l| k, v = l.split(":", 2); [k.downcase, v.to_s.strip] }
      [Integer(status, 10), headers, body.to_s]
    rescue Errno::ECONNREFUSED
      raise Unreachable, "pid #{pid} does not answer on #{sock_path} (a stale socket: `mwrapctl ls` removes it)"
    rescue Errno::EACCES
      raise Unreachable, "#{sock_path}: permission denied (the endpoint answers its own user and root only)"
    rescue Errno::ECONNRESET, Errno::EPIPE
      raise Unreachable, "pid #{pid} closed the connection (refused: another user?)"
    end

    def rss_of(pid)
      kb = File.read("/proc/#{pid}/status")[/^VmRSS:\s+(\d+)/, 1]
      kb ? "#{(kb.to_i / 1024.0).round(1)} MiB" : "?"
    rescue SystemCallError
      "?"
    end

    def command_of(pid)
      File.binread("/proc/#{pid}/cmdline").split("\0").join(" ")
    rescue SystemCallError
      "?"
    end
  end
end
