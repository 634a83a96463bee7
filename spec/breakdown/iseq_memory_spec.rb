# frozen_string_literal: true

require "spec_helper"
require "support/mwrap_api"

MwrapSpecHelpers.require_extension!
$LOAD_PATH.unshift(MwrapSpecHelpers::LIB) unless $LOAD_PATH.include?(MwrapSpecHelpers::LIB)
require "mwrap"

# Mwrap.iseq_memory walks the heap's internal iseqs; every example but the
# argument checks runs in its own process, which compiles methods from
# strings as a template engine does.
RSpec.describe "Mwrap.iseq_memory" do
  # What every script starts with: `compile(mod, count, path)` defines
  # m0, m1, ... in `mod` with module_eval(src, path, 1); EVAL_LINE is the
  # module_eval line's location.
  def compile_helpers
    MwrapApiHelpers::SHOW + <<~'RUBY'
      require "mwrap"
      module Templates; end
      def compile(mod, count, path)
        count.times { |i| mod.module_eval("def m#{i}; [#{i}].sum; end", path, 1) }
      end
      EVAL_LINE = "#{__FILE__}:#{__LINE__ - 2}"
    RUBY
  end

  # Runs compile_helpers + `code` as a script and returns what it showed.
  def run_iseq(code, preload: :built)
    Dir.mktmpdir { |dir| values(run_api(compile_helpers + code, dir: dir, preload: preload).last) }
  end

  describe "arguments (this process)" do
    it "checks min like each checks it, naming the value" do
      expect { Mwrap.iseq_memory(-1) }.to raise_error(ArgumentError, "min must not be negative: -1")
      expect { Mwrap.iseq_memory("1") }.to raise_error(TypeError, 'min must be an Integer, not "1" (String)')
      expect { Mwrap.iseq_memory(1.5) }.to raise_error(TypeError, "min must be an Integer, not 1.5 (Float)")
      expect { Mwrap.iseq_memory(1, 2) }.to raise_error(ArgumentError)
      expect(Mwrap.iseq_memory(nil)).to be_a(Hash)
      expect(Mwrap.iseq_memory(2**70)).to eq({})
    end

    it "keys frozen path:first_lineno Strings to [bytes, count]" do
      block_line = __LINE__ - 1 # this block's iseq starts here
      all = Mwrap.iseq_memory
      expect(all.keys).to all(be_frozen.and(match(/\A.+:-?\d+\z/m)))
      expect(all.values).to all(match([be >= 40, be >= 1])) # an iseq holds at least its slot
      expect(all.keys).to include("#{__FILE__}:#{block_line}")
    end
  end

  context "under the preload" do
    before(:all) { require_preload! }

    it "charges 10,000 module_eval'd methods to tmpl.erb:1, within 30 % of the live bytes of the module_eval line" do
      v = run_iseq(<<~'RUBY')
        compile(Module.new, 100, "warm.erb") # the line's call sites, warmed
        GC.start
        Mwrap.clear # what the line holds from here on is the 10,000 methods'
        compile(Templates, 10_000, "tmpl.erb")
        GC.start
        show :live, Mwrap[EVAL_LINE].live_bytes
        show :tmpl, Mwrap.iseq_memory["tmpl.erb:1"]
      RUBY
      bytes, count = v.fetch(:tmpl)
      live = v.fetch(:live)
      # Each module_eval's own top-level iseq is garbage once it ran; one
      # may survive GC.start through a stale pointer on the machine stack.
      expect(count).to be_between(10_000, 10_010)
      expect(bytes).to be_within(0.3 * live).of(live)
    end

    it "makes no RubyVM::InstructionSequence, and sees the iseqs of those that exist" do
      v = run_iseq(<<~'RUBY')
        compile(Templates, 1_000, "tmpl.erb")
        wrappers = -> { ObjectSpace.each_object(RubyVM::InstructionSequence).count }
        GC.start
        counts = [wrappers.call]
        Mwrap.iseq_memory
        counts << wrappers.call
        3.times { Mwrap.iseq_memory }
        counts << wrappers.call
        kept = [RubyVM::InstructionSequence.compile("1"),
                RubyVM::InstructionSequence.of(Templates.instance_method(:m1))]
        GC.start
        counts << wrappers.call
        result = Mwrap.iseq_memory
        counts << wrappers.call
        show :counts, counts
        show :compiled, result["<compiled>:1"]&.last
        show :kept, [kept[0].eval, kept[1].label]
      RUBY
      before, once, thrice, with_two, after = v.fetch(:counts)
      expect([once, thrice]).to eq([before, before])
      expect(with_two).to eq(before + 2)
      expect(after).to eq(with_two)
      expect(v.fetch(:compiled)).to be >= 1
      expect(v.fetch(:kept)).to eq([1, "m1"])
    end

    it "counts what ObjectSpace.count_imemo_objects counts as imemo_iseq" do
      v = run_iseq(<<~'RUBY')
        require "objspace"
        compile(Templates, 1_000, "tmpl.erb")
        GC.start
        GC.disable # nothing freed between the two counts
        show :ours, Mwrap.iseq_memory.values.sum { |_, count| count }
        show :ruby, ObjectSpace.count_imemo_objects[:imemo_iseq]
      RUBY
      expect(v.fetch(:ours)).to eq(v.fetch(:ruby))
    end

    it "shows an anonymous eval under (eval):1 and a named one under its file and line" do
      v = run_iseq(<<~'RUBY')
        eval("def anonymous; end")
        eval("def named; end", binding, "named.rb", 7)
        show :all, Mwrap.iseq_memory.slice("(eval):1", "named.rb:7")
      RUBY
      expect(v.fetch(:all).keys).to contain_exactly("(eval):1", "named.rb:7")
      expect(v.fetch(:all).values).to all(match([be >= 40, be >= 1]))
    end

    it "keeps only groups holding more than min bytes" do
      v = run_iseq(<<~'RUBY')
        compile(Templates, 1_000, "tmpl.erb")
        GC.start
        bytes = Mwrap.iseq_memory["tmpl.erb:1"].first
        show :edge, [Mwrap.iseq_memory(bytes - 1).key?("tmpl.erb:1"), Mwrap.iseq_memory(bytes).key?("tmpl.erb:1")]
        show :above, Mwrap.iseq_memory(10_000).values.all? { |b, _| b > 10_000 }
        show :fewer, Mwrap.iseq_memory(10_000).size < Mwrap.iseq_memory.size
        show :same, Mwrap.iseq_memory(0) == Mwrap.iseq_memory
      RUBY
      expect(v.fetch(:edge)).to eq([true, false])
      expect(v.values_at(:above, :fewer, :same)).to all(be(true))
    end

    it "gives the same result under GC.stress and around GC.compact" do
      v = run_iseq(<<~'RUBY')
        compile(Templates, 2_000, "tmpl.erb")
        GC.start
        min = 20_000 # few groups: GC.stress runs a GC at each of the Hash's allocations
        results = [Mwrap.iseq_memory(min)]
        GC.compact
        results << Mwrap.iseq_memory(min)
        GC.stress = true
        results << Mwrap.iseq_memory(min)
        GC.stress = false
        GC.verify_compaction_references(toward: :empty, double_heap: true) # every movable object moves
        results << Mwrap.iseq_memory(min)
        GC.stress = true
        GC.compact
        results << Mwrap.iseq_memory(min)
        GC.stress = false
        show :results, results
        show :alive, Object.new.extend(Templates).m1999
      RUBY
      results = v.fetch(:results)
      expect(results.first.fetch("tmpl.erb:1").last).to be >= 2_000
      expect(results.uniq.size).to eq(1), results.map { |r| r["tmpl.erb:1"] }.inspect
      expect(v.fetch(:alive)).to eq(1999)
    end
  end

  it "works without the preload, and reports the same bytes as under it" do
    script = <<~'RUBY'
      compile(Templates, 10_000, "tmpl.erb")
      GC.start
      show :preloaded, Mwrap.preloaded?
      show :tmpl, Mwrap.iseq_memory["tmpl.erb:1"]
    RUBY
    plain = run_iseq(script, preload: nil)
    expect(plain.fetch(:preloaded)).to be(false)
    expect(plain.fetch(:tmpl).last).to be >= 10_000
    require_preload!
    preloaded = run_iseq(script)
    expect(preloaded.fetch(:preloaded)).to be(true)
    # rb_obj_memsize_of does not depend on the allocator that served it.
    expect(preloaded.fetch(:tmpl)).to eq(plain.fetch(:tmpl))
  end
end
