# frozen_string_literal: true

require "spec_helper"
require "support/mwrap_api"

# A short run of every public method under GC.stress (the whole suite runs
# that way with `rake spec:gc_stress`): Ruby objects the extension makes
# must stay reachable while it makes more.
RSpec.describe "the Ruby API under GC.stress" do
  before { require_preload! }

  it "wraps every public method of Mwrap, SourceLocation and HeapPageBody" do
    r = run_ruby("-r", MwrapSpawnOptions::GC_STRESS_HELPER, "-e", <<~'RUBY', preload: nil, env: { "MWRAP_GC_STRESS" => "1" })
      p GC.stress
      p Mwrap.singleton_class.ancestors.first.instance_methods(false).sort.include?(:each)
      p Mwrap::SourceLocation.ancestors.first.instance_methods(false).sort
      p Mwrap::HeapPageBody.singleton_class.ancestors.first.instance_methods(false).sort
      p Mwrap.quiet { GC.stress }
    RUBY
    expect(r.stderr).to eq("")
    expect(r.stdout.lines).to eq([
      "false\n", "true\n",
      "#{%i[== allocations each eql? frees hash inspect leaked live_bytes live_count max_lifespan
             mean_lifespan name stacks temporary total].inspect}\n",
      "#{%i[each page_size stat].inspect}\n",
      "false\n"
    ])
  end

  it "gives the same exact numbers with every method stressed" do
    Dir.mktmpdir do |dir|
      code = MwrapApiHelpers::SHOW + <<~'RUBY'
        require "mwrap"
        keep = []
        keep << ("helloworld" * 1000) # cold
        keep << ("helloworld" * 1000) # warm
        name = "#{__FILE__}:#{__LINE__ - 1}"
        loc = Mwrap[name]
        show :loc, [loc.total, loc.allocations, loc.frees, loc.live_bytes, loc.live_count,
                    loc.mean_lifespan, loc.max_lifespan, loc.name, loc.each.to_a.map(&:first)]
        show :inspect, loc.inspect.start_with?("#<Mwrap::SourceLocation")
        show :each, Mwrap.each(5000).count { |name, *rest| name.frozen? && rest.size == 5 } > 0
        show :stacks, loc.stacks
        show :each_stack, Mwrap.each_stack(5000).count { |n, r, f, *rest| n.frozen? && r.frozen? && f.frozen? && rest.size == 5 } > 0
        show :recording, Mwrap.recording
        show :snapshot, Mwrap.live_snapshot(5000)[name]
        show :quiet, Mwrap.quiet { |d| Mwrap.quiet { |e| [d, e] } }
        r, w = IO.pipe
        Mwrap.dump(w, 5000)
        w.close
        show :dump, r.read.lines.size > 0
        show :heap, [Mwrap::HeapPageBody.each { |a, g| }.positive?, Mwrap::HeapPageBody.stat.size]
        show :totals, [Mwrap.total_bytes_allocated.positive?, Mwrap.total_bytes_freed.positive?]
      RUBY
      path = File.join(dir, "script.rb")
      File.write(path, code)
      r = run_ruby("-r", MwrapSpawnOptions::GC_STRESS_HELPER, path, env: { "MWRAP_GC_STRESS" => "1" })
      expect(r.stderr).to eq("")
      expect(r).to be_success
      v = values(r.stdout)
      expect(v[:loc]).to eq([10_001, 1, 0, 10_001, 1, Float::INFINITY, 0, "#{dir}/script.rb:5", [10_001]])
      expect(v.values_at(:inspect, :each, :each_stack, :dump)).to all(be(true))
      expect(v[:stacks]).to eq([["#{dir}/script.rb:5", [], [], 10_001, 1, 0, 10_001, 1]])
      expect(v[:recording]).to eq({ bt: 0, ruby_bt: 0, app_root: nil })
      expect(v[:snapshot]).to eq([10_001, 1, 1, 0, 10_001])
      expect(v[:quiet]).to eq([1, 2])
      expect(v[:heap]).to eq([true, 9])
      expect(v[:totals]).to eq([true, true])
    end
  end
end
