# frozen_string_literal: true

require_relative "stacks_helper"

# Allocations a Ruby thread makes with the GVL released (rb_nogvl, as
# Fiddle::Function#call does by default) are charged to the Ruby line that
# released it, with the Ruby frames noted then.
RSpec.describe "allocations without the GVL" do
  before(:all) { require_preload! }

  # helper_alloc keeps one 4,096-byte block per call and counts the calls
  # that held the GVL (with_gvl: 0 proves Fiddle released it).
  GVL_HELPER = <<~C
    #include <stdlib.h>
    #include <dlfcn.h>
    void *kept[2048]; /* not static: the mallocs stay */
    static int n, with_gvl;
    void *helper_alloc(void)
    {
    	int (*has_gvl)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "ruby_thread_has_gvl_p");
    	if (!has_gvl || has_gvl())
    		with_gvl++;
    	return kept[n++ % 2048] = malloc(4096);
    }
    void *helper_none(void) { static char none; return &none; }
    int helper_with_gvl(void) { return with_gvl; }
  C

  # Calls helper_alloc and helper_none (the same Fiddle work, no malloc)
  # three times to warm up, then 1,000 times each on lines of their own.
  GVL_SCRIPT = <<~RUBY
    require "fiddle"
    lib = Fiddle.dlopen(ARGV[0])
    alloc = Fiddle::Function.new(lib["helper_alloc"], [], Fiddle::TYPE_VOIDP)
    none = Fiddle::Function.new(lib["helper_none"], [], Fiddle::TYPE_VOIDP)
    def grab(f) = f.call # grab
    3.times { grab(alloc); grab(none) } # warm
    1000.times { alloc.call } # alloc
    1000.times { none.call } # none
    1000.times { grab(alloc) } # measured
    require "mwrap"
    GC.disable
    show :lines, %w[alloc none].to_h { |m| [m, Mwrap["\#{__FILE__}:\#{ARGV[1 + %w[alloc none].index(m)]}"]] }
      .transform_values { |l| [l.total, l.allocations, l.live_bytes, l.live_count] }
    show :with_gvl, Fiddle::Function.new(lib["helper_with_gvl"], [], Fiddle::TYPE_INT).call
    show :rows, Mwrap.each_stack.select { |row| row[2].first.to_s.include?("libgvlhelper.so(helper_alloc+") }
  RUBY

  def run_gvl(dir, mwrap)
    lib = CBuildCache.build(GVL_HELPER, name: "gvlhelper", shared: true, cflags: %w[-O1 -fno-builtin], libs: %w[-ldl])
    stack_values(GVL_SCRIPT, dir: dir, mwrap: mwrap,
                         script_args: [lib, line_of(GVL_SCRIPT, "# alloc").to_s, line_of(GVL_SCRIPT, "# none").to_s])
  end

  it "charges all 4,096,000 bytes of 1,000 calls to the Ruby line of the call" do
    Dir.mktmpdir do |dir|
      path, v = run_gvl(dir, "bt:1")
      expect(v.fetch(:with_gvl)).to eq(0) # every call ran with the GVL released
      # The helper's blocks, found by their native frame (bt:1), counted exactly: every one is
      # at the Ruby line that called it, and kept.
      by_line = v.fetch(:rows).group_by(&:first)
                 .transform_values { |rows| rows.map { |row| row.values_at(3, 4, 6, 7) }.transpose.map(&:sum) }
      expect(by_line).to eq("#{path}:#{line_of(GVL_SCRIPT, '# grab')}" => [4096 * 1003, 1003, 4096 * 1003, 1003],
                            "#{path}:#{line_of(GVL_SCRIPT, '# alloc')}" => [4_096_000, 1000, 4_096_000, 1000])
      # The line's own numbers hold them (besides what Fiddle allocates with the GVL).
      alloc, none = v.fetch(:lines).values_at("alloc", "none")
      expect(alloc[0] - none[0]).to be_between(4_096_000 - 16 * 1024, 4_096_000 + 16 * 1024)
      expect(alloc[0]).to be >= 4_096_000
    end
  end

  # File.exist? releases the GVL through rb_thread_call_without_gvl (libruby
  # calls it through its PLT) and, warmed on the line before, allocates
  # nothing: its line must not become a location of 0 bytes, which would
  # also take one of the table's slots.
  QUIET_RELEASE_SCRIPT = <<~RUBY
    path = "/" * 2
    File.exist?(path) # warm
    File.exist?(path) # quiet
    require "mwrap"
    show :quiet, Mwrap["\#{__FILE__}:\#{ARGV[0]}"]&.then { |l| [l.total, l.allocations] }
    show :listed, Mwrap.each.count { |loc, *| loc == "\#{__FILE__}:\#{ARGV[0]}" }
  RUBY

  it "makes no location of a line whose GVL release allocates nothing" do
    Dir.mktmpdir do |dir|
      ["", "ruby_bt:4", "app_root:#{dir}"].each do |mwrap|
        _, v = stack_values(QUIET_RELEASE_SCRIPT, dir: dir, mwrap: mwrap,
                                                  script_args: [line_of(QUIET_RELEASE_SCRIPT, "# quiet").to_s])
        expect(v.values_at(:quiet, :listed)).to eq([nil, 0]), "MWRAP=#{mwrap}"
      end
    end
  end

  it "gives those rows the Ruby frames noted when the GVL was released" do
    Dir.mktmpdir do |dir|
      path, v = run_gvl(dir, "bt:1,ruby_bt:4")
      at = ->(marker) { "#{path}:#{line_of(GVL_SCRIPT, marker)}" }
      rows = v.fetch(:rows).to_h { |row| [row[1], row.values_at(0, 3, 4, 6, 7)] }
      grab = at.call("# grab")
      expect(rows).to eq(
        [grab, at.call("# measured"), at.call("# measured")] => [grab, 4_096_000, 1000, 4_096_000, 1000],
        [grab, at.call("# warm"), at.call("# warm")] => [grab, 4096 * 3, 3, 4096 * 3, 3],
        [at.call("# alloc"), at.call("# alloc")] => [at.call("# alloc"), 4_096_000, 1000, 4_096_000, 1000]
      )
    end
  end
end
