# frozen_string_literal: true

# A Ruby smoke run touching many standard libraries (C extensions most of
# them), printing only deterministic output. spec/torture/ruby_stress_spec.rb
# runs it with and without the preload (and with GC tuning) and compares.
require "json"
require "zlib"
require "openssl"
require "socket"
require "fiddle"
require "ripper"
require "erb"
require "digest"
require "stringio"
require "set"
require "date"
require "time"
require "psych"
require "objspace"
require "monitor"
require "etc"
require "io/wait"
begin
  require "bigdecimal"
  require "bigdecimal/util"
rescue LoadError
  nil
end

out = []
say = ->(*a) { out << a.join(" ") }

# json
data = { "ints" => (1..200).to_a, "nested" => { "s" => "héllo" * 20, "f" => 1.5, "n" => nil }, "list" => %w[a b c] * 50 }
text = JSON.generate(data)
say.call("json", text.size, JSON.parse(text) == data, JSON.pretty_generate(data["nested"]).lines.size)

# zlib
raw = (1..5000).map { |i| "line #{i} #{i * i}\n" }.join
deflated = Zlib::Deflate.deflate(raw, 9)
say.call("zlib", raw.size, Zlib.crc32(raw), Zlib::Inflate.inflate(deflated) == raw, Zlib.adler32(deflated))
gz = StringIO.new
Zlib::GzipWriter.wrap(gz) { |w| w.mtime = 0; w.write(raw) }
say.call("gzip", Zlib::GzipReader.new(StringIO.new(gz.string)).read == raw)

# openssl
say.call("sha256", OpenSSL::Digest::SHA256.hexdigest(raw))
say.call("hmac", OpenSSL::HMAC.hexdigest("SHA256", "key", raw))
cipher = OpenSSL::Cipher.new("aes-256-cbc").encrypt
cipher.key = "k" * 32
cipher.iv = "i" * 16
enc = cipher.update(raw) + cipher.final
dec = OpenSSL::Cipher.new("aes-256-cbc").decrypt.tap { |c| c.key = "k" * 32; c.iv = "i" * 16 }
say.call("aes", enc.size, Digest::MD5.hexdigest(enc), dec.update(enc) + dec.final == raw)
say.call("bn", (OpenSSL::BN.new(2)**200 + 1).to_s[0, 30], OpenSSL::BN.new(97).prime?)
pkey = OpenSSL::PKey::EC.generate("prime256v1")
sig = pkey.sign("SHA256", raw)
say.call("ec", pkey.verify("SHA256", sig, raw))

# socket
a, b = UNIXSocket.pair
a.write("ping" * 1000)
a.close_write
say.call("unix", b.read.size)
a.close
b.close
server = TCPServer.new("127.0.0.1", 0)
port = server.addr[1]
t = Thread.new do
  c = server.accept
  c.write(c.readline.upcase)
  c.close
end
s = TCPSocket.new("127.0.0.1", port)
s.write("hello tcp\n")
say.call("tcp", s.read)
s.close
t.join
server.close
say.call("addrinfo", Addrinfo.tcp("127.0.0.1", 80).inspect_sockaddr)

# fiddle
libc = Fiddle.dlopen(nil)
strlen = Fiddle::Function.new(libc["strlen"], [Fiddle::TYPE_VOIDP], Fiddle::TYPE_SIZE_T)
say.call("fiddle", strlen.call("x" * 12_345))
ptr = Fiddle::Pointer.malloc(1000, Fiddle::RUBY_FREE)
ptr[0, 5] = "abcde"
say.call("fiddle ptr", ptr[0, 5])

# ripper
code = "def f(a, b = 2) = a + b\nputs f(1)\n[1, 2].map { |x| x * 2 }"
say.call("ripper", Ripper.sexp(code).flatten.size, Ripper.lex(code).size)

# erb
tpl = ERB.new("<% items.each do |i| %><%= i %>,<% end %>", trim_mode: "-")
items = (1..50).to_a
say.call("erb", tpl.result(binding).size)

# digest, stringio, set, date, time, psych
say.call("digest", Digest::SHA1.hexdigest(raw), Digest::SHA512.hexdigest("x")[0, 16])
io = StringIO.new
1000.times { |i| io.puts("row #{i}") }
say.call("stringio", io.string.lines.size, io.string.bytesize)
set = Set.new(1..1000) & Set.new((500..1500).step(3))
say.call("set", set.size, set.min, set.max)
d = Date.new(2024, 2, 28)
say.call("date", (d + 2).to_s, (d >> 12).to_s, Date.parse("2023-12-31").yday, d.cwday)
say.call("time", Time.at(0).utc.iso8601, Time.parse("2020-01-02 03:04:05 UTC").to_i)
yaml = Psych.dump({ "a" => [1, 2, { "b" => "c" }] })
say.call("yaml", yaml.size, Psych.safe_load(yaml) == { "a" => [1, 2, { "b" => "c" }] })

# bigdecimal
if defined?(BigDecimal)
  x = BigDecimal("1") / BigDecimal("3")
  say.call("bigdecimal", x.round(30).to_s, BigDecimal("2").sqrt(50).to_s[0, 40], "0.1".to_d + "0.2".to_d == "0.3".to_d)
else
  say.call("bigdecimal", "absent")
end

# core: threads, fibers, enumerators, marshal, regexp, GC
q = Queue.new
workers = 4.times.map { |i| Thread.new { 1000.times { |k| q << (i * k) } } }
workers.each(&:join)
sum = 0
sum += q.pop until q.empty?
say.call("threads", sum)
fib = Fiber.new do
  a, b = 0, 1
  loop do
    Fiber.yield a
    a, b = b, a + b
  end
end
say.call("fiber", Array.new(90) { fib.resume }.last)
say.call("lazy", (1..Float::INFINITY).lazy.select(&:even?).map { _1 * 3 }.first(5).inspect)
obj = { a: [1, 2.5, "s", :sym, nil, true, 2**100], b: Struct.new(:x).new(1).to_a }
say.call("marshal", Marshal.load(Marshal.dump(obj)) == obj, Marshal.dump(obj).size)
say.call("regexp", raw.scan(/line (\d+)7 /).size, raw.gsub(/\d/) { |m| (m.to_i + 1).to_s }.size)
big = Array.new(10_000) { |i| "string #{i}" * (i % 7) }
GC.start
say.call("gc", big.sum(&:size), GC.count.positive?, ObjectSpace.count_objects[:TOTAL].positive?)
say.call("hash", (1..20_000).to_h { |i| [i.to_s, i] }.sum { |k, v| k.size + v })
say.call("etc", Etc.nprocessors.positive?)
mon = Monitor.new
mon.synchronize { mon.synchronize { say.call("monitor", true) } }
say.call("string", ("abc" * 10_000).encode("UTF-16LE").bytesize, "ÄÖÜ".downcase, "x".unpack1("H*"))
say.call("integer", (1..100).reduce(:*).to_s.size, 2**64 % 1_000_007, Integer.sqrt(10**40))
say.call("float", format("%.6f", Math.sin(1) + Math.log(10)), 0.1 + 0.2)

puts out
puts "smoke: #{out.size} lines, sha256 #{Digest::SHA256.hexdigest(out.join("\n"))}"
