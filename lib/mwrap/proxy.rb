# frozen_string_literal: true

require "cgi"
require "ipaddr"
require "socket"
require "webrick"

module Mwrap
  # `mwrapctl proxy DIR --listen 127.0.0.1:PORT`: one HTTP server (WEBrick)
  # that browses every process of a socket directory, like mwrap-rproxy:
  # `/` lists them, `/PID/…` is that process's endpoint, its links put
  # under `/PID` (the endpoint takes the prefix from `x-mwrap-base`).
  #
  # Guards: it binds a loopback address only; it answers only requests
  # whose `Host` names its own listen address (a page of another site that
  # resolves a name of its own to 127.0.0.1, DNS rebinding, cannot read
  # it); and it is read-only (GET and HEAD; no POST such as /reset passes).
  class Proxy
    # The listen address is not a loopback one, or not HOST:PORT.
    class BadListen < ArgumentError; end

    attr_reader :port

    def initialize(dir, listen)
      @dir = dir
      host, port = parse_listen(listen)
      @host = host
      @server = WEBrick::HTTPServer.new(BindAddress: host, Port: port, Logger: WEBrick::Log.new(IO::NULL),
                                        AccessLog: [], DoNotReverseLookup: true)
      @port = @server.config[:Port]
      @server.mount_proc("/") { |req, res| answer(req, res) }
    end

    # Who may connect, for the banner.
    def banner
      "mwrapctl proxy: serving the endpoints in #{@dir} on http://#{host_for_url}:#{@port}/ (read-only). " \
        "Every local user can connect to this address and read these processes' tables."
    end

    def start
      @server.start
    end

    def shutdown
      @server.shutdown
    end

    private

    def host_for_url
      @host.include?(":") ? "[#{@host}]" : @host
    end

    def parse_listen(listen)
      m = /\A(?:\[(?<h6>[^\]]+)\]|(?<h>[^:]+)):(?<p>\d+)\z/.match(listen.to_s) or
        raise BadListen, "--listen takes HOST:PORT (e.g. 127.0.0.1:8080), not #{listen.inspect}"
      host = m[:h6] || m[:h]
      host = "127.0.0.1" if host == "localhost"
      ip = begin
        IPAddr.new(host)
      rescue IPAddr::Error
        raise BadListen, "--listen #{listen}: #{host.inspect} is no IP address (loopback only: 127.0.0.1 or ::1)"
      end
      raise BadListen, "--listen #{listen}: #{host} is not a loopback address; the proxy binds loopback only" unless
        ip.loopback?

      [host, Integer(m[:p], 10)]
    end

    def answer(req, res)
      res["cache-control"] = "no-cache"
      unless host_allowed?(req)
        return plain(res, 403, "Host #{req['host'].inspect} does not name this proxy (#{host_for_url}:#{@port}); " \
                               "refused, as a guard against DNS rebinding\n")
      end
      unless %w[GET HEAD].include?(req.request_method)
        res["allow"] = "GET, HEAD"
        return plain(res, 405, "the proxy is read-only: #{req.request_method} does not pass\n")
      end
      case req.path
      when "/" then index(res)
      when %r{\A/(\d+)(/.*)?\z} then forward(req, res, Integer(Regexp.last_match(1), 10), Regexp.last_match(2) || "/")
      else plain(res, 404, "not found: #{req.path.inspect}\n")
      end
    end

    def host_allowed?(req)
      given = req["host"].to_s.downcase
      names = ["#{host_for_url}:#{@port}".downcase]
      names << "localhost:#{@port}" if @host == "127.0.0.1"
      names.include?(given)
    end

    def plain(res, status, text)
      res.status = status
      res["content-type"] = "text/plain; charset=utf-8"
      res.body = text
    end

    def sockets
      Dir.children(@dir).grep(/\A\d+\.sock\z/).map(&:to_i).sort
    rescue SystemCallError
      []
    end

    def index(res)
      rows = sockets.map do |pid|
        cmd = begin
          File.binread("/proc/#{pid}/cmdline").split("\0").join(" ")
        rescue SystemCallError
          "(gone)"
        end
        %(<tr><td><a href="/#{pid}/">#{pid}</a></td><td>#{CGI.escapeHTML(cmd.scrub)}</td></tr>\n)
      end
      res.status = 200
      res["content-type"] = "text/html; charset=utf-8"
      res.body = <<~HTML
        <!DOCTYPE html>
        <html><head><meta charset="utf-8"><title>mwrap: #{CGI.escapeHTML(@dir)}</title></head>
        <body><h1>processes in #{CGI.escapeHTML(@dir)}</h1>
        <p>Read-only; every local user can reach this proxy.</p>
        <table>
        <tr><th>pid</th><th>command</th></tr>
        #{rows.join}</table>
        </body></html>
      HTML
    end

    def forward(req, res, pid, path)
      sock = File.join(@dir, "#{pid}.sock")
      target = req.query_string ? "#{path}?#{req.query_string}" : path
      reply = UNIXSocket.open(sock) do |s|
        s.write("#{req.request_method} #{target} HTTP/1.1\r\nhost: mwrap\r\nx-mwrap-base: /#{pid}\r\n" \
                "connection: close\r\n\r\n")
        s.read
      end
      head, body = reply.b.split("\r\n\r\n", 2)
      status_line, *lines = head.to_s.split("\r\n")
      status = status_line.to_s[%r{\AHTTP/1\.[01] (\d{3})}, 1]
      return plain(res, 502, "pid #{pid} answered no HTTP\n") unless status

      res.status = Integer(status, 10)
      lines.each do |l|
        k, v = l.split(":", 2)
        next unless %w[content-type content-disposition allow].include?(k.to_s.downcase)

        res[k.downcase] = v.to_s.strip
      end
      res.body = body.to_s
    rescue Errno::ENOENT
      plain(res, 404, "no endpoint for pid #{pid} in #{@dir}\n")
    rescue Errno::ECONNREFUSED
      plain(res, 502, "pid #{pid} does not answer (a stale socket: `mwrapctl ls` removes it)\n")
    rescue Errno::EACCES
      plain(res, 502, "#{sock}: permission denied\n")
    end
  end
end
