# frozen_string_literal: true

require "spec_helper"
require "json"
require "tmpdir"

# What README's "Why is this line allocating?" promises, each in a real
# process under the built preload: native stacks (bt:N), Ruby frames
# (ruby_bt:N), app_root, the GVL-released location, frame names from
# .symtab and DWARF, unchanged per-location numbers, the folded and JSON
# dumps.
RSpec.describe "stacks: README's expectations" do
  before(:all) { require_preload! }

  let(:fixtures) { File.join(__dir__, "fixtures") }
  let(:nest_dir) { File.join(fixtures, "nest") }
  let(:nest_lib) { File.join(nest_dir, "lib", "nest.rb") }
  let(:nest_main) { File.join(nest_dir, "app", "main.rb") }

  # "path:N" for the line of `path` carrying the comment `# MARK`.
  def marked(path, mark)
    index = File.readlines(path).index { |l| l.match?(%r{(#|/\*) #{mark}\b}) } or raise "no # #{mark} in #{path}"
    "#{path}:#{index + 1}"
  end

  # Runs `args` under the preload with MWRAP=`mwrap`; fails on stderr output
  # or a non-zero exit.
  def run_ok(mwrap, *args, ruby_opts: [], chdir: MwrapSpecHelpers::ROOT)
    env, cmd = ruby_command(args, env: { "MWRAP" => mwrap }, ruby_opts: ruby_opts)
    r = capture(env, *cmd, chdir: chdir)
    expect([r.stderr, r.exitstatus]).to eq(["", 0]), r.describe
    r
  end

  # The JSON lines of stdout (each a stack row), ignoring other lines.
  def json_rows(stdout)
    stdout.lines.grep(/\A\[/).map { |l| JSON.parse(l) }
  end

  describe "bt:16 on the ISeq leak (examples/iseq_leak.rb)" do
    it "names the compiler in the largest live stack of the module_eval line, whose totals are its rows' sums" do
      example = File.join(MwrapSpecHelpers::EXAMPLES, "iseq_leak.rb")
      line = File.readlines(example).index { |l| l.include?(".module_eval(") } + 1
      r = run_ok("bt:16", "-r", "mwrap", "-rjson", "-e", <<~RUBY, example)
        load ARGV[0]
        loc = Mwrap["\#{ARGV[0]}:#{line}"]
        puts JSON.generate(totals: [loc.total, loc.allocations, loc.frees, loc.live_bytes, loc.live_count],
                           stacks: loc.stacks, each_stack: Mwrap.each_stack.select { |row| row[0] == loc.name })
      RUBY
      out = JSON.parse(r.stdout.lines.last)
      rows = out["stacks"]
      expect(rows.size).to be > 1
      sums = (3..7).map { |i| rows.sum { |row| row[i] } }
      expect(sums).to eq(out["totals"])
      # 2,000 methods compiled and kept: a few MB live at that line.
      expect(out["totals"][3]).to be > 2_000 * 1_000
      expect(rows.map(&:first).uniq).to eq(["#{example}:#{line}"])
      expect(out["each_stack"].sort_by(&:to_s)).to eq(rows.sort_by(&:to_s))
      top = rows.max_by { |row| row[6] }
      expect(top[7]).to be >= 2_000
      expect(top[2].size).to be_between(2, 16)
      expect(top[2]).to include(/\((rb_iseq_compile_node|rb_iseq_new_with_opt|rb_iseq_new_eval)\+0x\h+\) \[0x\h+\]\z/)
      expect(top[1]).to eq([])
    end
  end

  describe "ruby_bt:8 on a → b → c" do
    let(:c_line) { marked(nest_lib, "C_LINE") }
    let(:stack) do
      [c_line, marked(nest_lib, "B_LINE"), marked(nest_lib, "A_LINE"), marked(nest_main, "MEASURED_LINE")]
    end

    it "records c's line, b's and a's call lines and the caller's line, innermost first, with the 100,001 bytes" do
      r = run_ok("ruby_bt:8", nest_main, ruby_opts: ["--disable-gems"])
      rows = json_rows(r.stdout)
      row = rows.find { |l| l[1] == stack }
      expect(row).to eq([c_line, stack, [], 100_001, 1, 0, 100_001, 1]), r.stdout
      warm = [*stack[0, 3], marked(nest_main, "WARM_LINE")]
      expect(rows.find { |l| l[1] == warm }&.first).to eq(c_line)
      # Only the two calls' stacks end at c's line with c's frame innermost.
      expect(rows.count { |l| l[0] == c_line && l[1].size == 4 }).to eq(2)
    end

    it "charges it to the caller's line under app_root, ruby_frames[0] still c's line" do
      r = run_ok("ruby_bt:8,app_root:#{File.join(nest_dir, 'app')}", nest_main, ruby_opts: ["--disable-gems"])
      rows = json_rows(r.stdout)
      expect(rows.find { |l| l[1] == stack }).to eq([stack.last, stack, [], 100_001, 1, 0, 100_001, 1]), r.stdout
      expect(rows.map(&:first)).not_to include(c_line)
    end
  end
  describe "native allocations of a C helper" do
    let(:helper_source) { File.join(fixtures, "stacks_helper.c") }
    let(:malloc_line) { marked(helper_source, "MALLOC_LINE").split(":").last.to_i }

    def helper(cflags)
      CBuildCache.build(helper_source, shared: true, cflags: cflags, libs: %w[-ldl])
    end

    it "charges 1,000 blocks kept with the GVL released (Fiddle::Function) to the Ruby line of the call" do
      script = File.join(fixtures, "gvl.rb")
      r = run_ok("bt:8", script, helper(%w[-O1]), ruby_opts: ["--disable-gems"])
      # total, allocations, frees grown by the 1,000 calls; no call held the GVL.
      expect(r.stdout).to eq("[4096000, 1000, 0, 0]\n")
    end

    it "names a static function from DWARF with the malloc call's line (-g -O0)" do
      r = run_ok("bt:8", File.join(fixtures, "dwarf.rb"), helper(%w[-g -O0]), ruby_opts: ["--disable-gems"])
      rows = r.stdout.lines.map { |l| JSON.parse(l) }
      expect(rows.size).to eq(1), r.stdout
      location, native, total = rows.first
      expect([location, total]).to eq([marked(File.join(fixtures, "dwarf.rb"), "ENTRY_LINE"), 7777])
      expect(native.first).to match(%r{/libstacks_helper\.so\(stacks_leaf\+0x\h+\) \[0x\h+\] at (\S*/)?stacks_helper\.c:#{malloc_line}\z})
      expect(native[1]).to match(/\(stacks_entry\+0x\h+\) \[0x\h+\] at (\S*\/)?stacks_helper\.c:\d+\z/)
    end

    it "names it from .symtab alone (no -g, not stripped), without a source line" do
      r = run_ok("bt:8", File.join(fixtures, "dwarf.rb"), helper(%w[-O0]), ruby_opts: ["--disable-gems"])
      rows = r.stdout.lines.map { |l| JSON.parse(l) }
      expect(rows.size).to eq(1), r.stdout
      expect(rows.first[1].first).to match(%r{/libstacks_helper\.so\(stacks_leaf\+0x\h+\) \[0x\h+\]\z})
      expect(rows.first[1].take(2).join).not_to include(" at ")
    end
  end
  describe "per-location numbers with stacks on" do
    # MWRAP values of one length: Ruby allocates differently when its
    # environment is longer.
    it "are the same with bt:16,ruby_bt:16 as with bt:00,ruby_bt:00 (nothing recorded)" do
      script = File.join(fixtures, "steady.rb")
      on, off = %w[bt:16,ruby_bt:16 bt:00,ruby_bt:00].map do |mwrap|
        run_ok(mwrap, script, ruby_opts: ["--disable-gems"]).stdout.lines
      end
      expect(on.pop).to eq("recording 16 16 true\n")
      expect(off.pop).to eq("recording 0 0 false\n")
      rows = ->(lines) { lines.map { |l| l.split.map { |w| Integer(w) } }.sort }
      expect(rows.(on).size).to be >= 5
      # The 100,001-byte String is among them.
      expect(rows.(on).map { |r| r[1] }.max).to be >= 100_001
      expect(rows.(on)).to eq(rows.(off))
    end
  end
  describe "app_root on a library keeping 200 documents (spec/growth/fixtures/app_root)" do
    let(:growth_fixtures) { File.join(__dir__, "..", "growth", "fixtures", "app_root").then { |d| File.expand_path(d) } }
    let(:app) { File.join(growth_fixtures, "app") }
    let(:handler_line) { "#{File.join(app, 'handler.rb')}:8" }
    let(:library_line) { "#{File.join(growth_fixtures, 'vendor', 'doc_store', 'lib', 'doc_store.rb')}:9" }

    # The fixtures' locations, largest live first.
    def top_lines(mwrap)
      r = run_ok(mwrap, "-I", File.join(growth_fixtures, "vendor", "doc_store", "lib"), "-I", app, "-rhandler",
                 "-e", <<~RUBY, ruby_opts: ["--disable-gems"])
                   Handler.call(200)
                   require "mwrap"
                   rows = []
                   Mwrap.each { |loc, *| rows << [Mwrap[loc].live_bytes, loc] if loc.start_with?(#{growth_fixtures.dump}) }
                   rows.sort.reverse.each { |live, loc| puts "\#{live} \#{loc}" }
                 RUBY
      r.stdout.lines.map(&:split)
    end

    it "puts the library's line on top without it and the app's calling line with it" do
      without = top_lines("bt:0")
      expect(without.first[1]).to eq(library_line), without.inspect
      # 200 documents of 3 fields of 50 copies: over 200 * 3 * 50 bytes live.
      expect(without.first[0].to_i).to be > 200 * 150
      with = top_lines("app_root:#{app}")
      expect(with.first[1]).to eq(handler_line), with.inspect
      expect(with.first[0].to_i).to be >= without.first[0].to_i
      expect(with.map(&:last)).not_to include(library_line)
    end
  end

  describe "dump formats of the nest script" do
    let(:stack) do
      [marked(nest_lib, "C_LINE"), marked(nest_lib, "B_LINE"), marked(nest_lib, "A_LINE"),
       marked(nest_main, "MEASURED_LINE")]
    end

    def dump(format, extra = "")
      Dir.mktmpdir do |dir|
        path = File.join(dir, "dump")
        run_ok("ruby_bt:8,dump_format:#{format},dump_path:#{path}#{extra}", nest_main, ruby_opts: ["--disable-gems"])
        File.read(path)
      end
    end

    it "folded: outermost first, `;`-separated, live bytes last" do
      lines = dump("folded").lines
      expect(lines).to include("#{stack.reverse.join(';')} 100001\n")
      expect(lines).to all(match(/\A\S.* \d+\n\z/))
    end

    it "folded: writes a `;` in a file name as \\x3b" do
      Dir.mktmpdir do |dir|
        script = File.join(dir, "semi;colon.rb")
        File.write(script, "KEEP = \"x\" * 200_000\n")
        path = File.join(dir, "dump")
        run_ok("ruby_bt:8,dump_format:folded,dump_path:#{path}", script, ruby_opts: ["--disable-gems"])
        escaped = "#{File.join(dir, 'semi\\x3bcolon.rb')}:1"
        line = File.read(path).lines.find { |l| l.start_with?(escaped) }
        expect(line).to match(/\A#{Regexp.escape(escaped)} \d+\n\z/)
        expect(line.split.last.to_i).to be >= 200_001
      end
    end

    it "json: one document, mwrap 1, the nest row's exact numbers" do
      doc = JSON.parse(dump("json", ",dump_min:100000"))
      expect(doc["mwrap"]).to eq(1)
      loc = doc["locations"].find { |l| l["location"] == stack.first }
      expect(loc).not_to be_nil, doc["locations"].map { |l| l["location"] }.inspect
      row = loc["stacks"].find { |st| st["ruby"] == stack }
      expect(row).to eq("ruby" => stack, "native" => [], "total" => 100_001, "allocations" => 1, "frees" => 0,
                        "live_bytes" => 100_001, "live_count" => 1)
      %w[total allocations frees live_bytes live_count].each do |key|
        expect(loc["stacks"].sum { |st| st[key] }).to eq(loc[key]), key
      end
    end
  end
end
