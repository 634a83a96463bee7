# frozen_string_literal: true

require "json"
require "spec_helper"
require "support/mwrap_api"

# Temporary allocations (memray, heaptrack): per location, the allocations
# freed before their thread's next allocation.
RSpec.describe "temporary allocations" do
  before { require_preload! }

  it "counts blocks freed before their thread allocates again, per location, in the API, /each and /json" do
    Dir.mktmpdir do |dir|
      code = MwrapApiHelpers::SHOW + <<~'RUBY'
        require "mwrap"
        require "fiddle"
        Fiddle.free(Fiddle.malloc(100))
        1000.times { Fiddle.free(Fiddle.malloc(100)) }
        temporary_line = "#{__FILE__}:#{__LINE__ - 1}"
        kept = Array.new(1000) { Fiddle.malloc(100) }
        kept_line = "#{__FILE__}:#{__LINE__ - 1}"
        kept.each { |p| Fiddle.free(p) }
        show :line, temporary_line
        show :temporary, Mwrap[temporary_line].temporary
        show :kept, Mwrap[kept_line].temporary
        show :tsv, Mwrap.render_page("GET", "/each", "format=tsv&sort=temporary&limit=3", "")[2]
        show :json, Mwrap.render_page("GET", "/json", "", "")[2]
        Mwrap.reset
        show :after_reset, Mwrap[temporary_line]&.temporary.to_i
      RUBY
      _, out = run_api(code, dir: dir)
      v = values(out)
      # the first round allocates Fiddle.free's call cache between the two
      expect(v[:temporary]).to be_between(998, 1000)
      expect(v[:kept]).to be <= 1 # only the newest of them, if nothing came after it
      header, first = v[:tsv].lines.drop(1).first(2).map { |l| l.chomp.split("\t") }
      expect(first[header.index("location")]).to eq(v[:line])
      expect(Integer(first[header.index("temporary")])).to eq(v[:temporary])
      row = JSON.parse(v[:json])["locations"].find { |l| l["location"] == v[:line] }
      expect(row["temporary"]).to eq(v[:temporary])
      expect(v[:after_reset]).to eq(0)
    end
  end
end
