# frozen_string_literal: true

require "spec_helper"
require "support/mwrap_api"
require "socket"
require "tempfile"

MwrapSpecHelpers.require_extension!
$LOAD_PATH.unshift(MwrapSpecHelpers::LIB) unless $LOAD_PATH.include?(MwrapSpecHelpers::LIB)
require "mwrap"

# Mwrap.each and Mwrap.dump beyond mwrap_spec.rb: real locations, every
# kind of IO.
RSpec.describe "Mwrap.each and Mwrap.dump" do
  it "refuses a non-IO in dump with a TypeError naming its class and value" do
    expect { Mwrap.dump(Object.new) }.to raise_error(TypeError, /expected IO.*#<Object/)
    expect { Mwrap.dump(:stderr) }.to raise_error(TypeError, /Symbol.*:stderr/)
  end

  it "accepts pipes, sockets, files and StringIO-free IO subclasses (this process)" do
    r, w = IO.pipe
    a, b = UNIXSocket.pair
    expect(Mwrap.dump(w)).to be_nil
    expect(Mwrap.dump(a, 0)).to be_nil
    Tempfile.create("mwrap") { |f| expect(Mwrap.dump(f)).to be_nil }
  ensure
    [r, w, a, b].compact.each(&:close)
  end

  context "under the real preload" do
    before { require_preload! }

    it "yields frozen, interned location strings: the same object each time" do
      Dir.mktmpdir do |dir|
        _, out = run_api(MwrapApiHelpers::SHOW + <<~'RUBY', dir: dir)
          require "mwrap"
          a = Mwrap.each(1000).map { |loc, *| loc }
          b = Mwrap.each(1000).map { |loc, *| loc }
          show :frozen, a.all?(&:frozen?)
          by_name = a.to_h { |x| [x, x] } # the order may change between the calls
          show :same, b.count { |y| by_name[y]&.equal?(y) } >= a.size / 2 && b.all? { |y| !by_name.key?(y) || by_name[y].equal?(y) }
          show :interned, a.all? { |x| x.equal?(-x.dup) }
          show :unique, a.uniq.size == a.size
        RUBY
        expect(values(out)).to eq(frozen: true, same: true, interned: true, unique: true)
      end
    end

    it "dumps the same lines to a pipe, a UNIX socket, a TCP socket and a file" do
      Dir.mktmpdir do |dir|
        _, out = run_api(MwrapApiHelpers::SHOW + <<~'RUBY', dir: dir)
          require "mwrap"
          require "socket"
          big = "x" * 100_000
          show :big, "#{__FILE__}:#{__LINE__ - 1}"
          # Readers run in threads: a dump can be larger than a pipe's buffer.
          def through(reader, writer)
            t = Thread.new { reader.read }
            Mwrap.quiet { Mwrap.dump(writer, 4096) }
            writer.close
            t.value
          end
          r, w = IO.pipe
          pipe = through(r, w)
          a, b = UNIXSocket.pair
          unix = through(b, a)
          server = TCPServer.new("127.0.0.1", 0)
          client = TCPSocket.new("127.0.0.1", server.addr[1])
          peer = server.accept
          tcp = through(peer, client)
          File.open(File.join(__dir__, "dump.txt"), "w") { |f| Mwrap.quiet { Mwrap.dump(f, 4096) } }
          file = File.read(File.join(__dir__, "dump.txt"))
          show :outputs, [pipe, unix, tcp, file]
        RUBY
        v = values(out)
        outputs = v[:outputs]
        outputs.each_with_index do |text, i|
          rows = parse_dump(text)
          expect(rows).not_to be_empty, "output #{i} is empty"
          expect(rows.map(&:total)).to all(be > 4096)
          expect(rows.map(&:total)).to eq(rows.map(&:total).sort.reverse)
          big = rows.find { |row| row.location == v[:big] }
          expect(big&.total).to be >= 100_001, "output #{i} lacks #{v[:big]}"
        end
      end
    end
  end
end
