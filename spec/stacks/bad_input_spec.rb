# frozen_string_literal: true

require "spec_helper"

# Bad stack-related MWRAP entries (README: the MWRAP table and the messages
# below it): each is reported in one stderr line naming the problem and is
# otherwise ignored, so the program's output and exit status are what they
# are without it. The preload also loads into programs that are not Ruby.
RSpec.describe "stacks: bad MWRAP entries" do
  before { require_preload! }

  prefix = "mwrap: ignoring bad MWRAP entries: "
  let(:prefix) { prefix }

  # The program: output on both streams and a distinctive exit status.
  let(:program) { ["-e", '$stdout.print "out\n"; $stderr.print "err\n"; x = "z" * 100_000; exit 7'] }

  def ruby_with(mwrap)
    env = mwrap.nil? ? {} : { "MWRAP" => mwrap }
    r = run_ruby(*program, env: env)
    [r.stdout, r.stderr, r.exitstatus]
  end

  {
    "bt:65" => 'bt "65" is not a frame count (0 to 64)',
    "bt:-1" => 'bt "-1" is not a frame count (0 to 64)',
    "bt:x" => 'bt "x" is not a frame count (0 to 64)',
    "ruby_bt:65" => 'ruby_bt "65" is not a frame count (0 to 64)',
    "dump_format:xml" => 'dump_format "xml" is not text, folded or json',
    "dump_format:json,dump_heap:1" =>
      "dump_heap goes with dump_format:text only (the heap part is text); dump_heap 1 ignored",
    "app_root:/nonexistent" => 'app_root "/nonexistent": No such file or directory',
    "app_root:" => "app_root is empty",
    "app_root:#{File.expand_path(__FILE__)}" => "app_root #{File.expand_path(__FILE__).dump}: Not a directory",
    "bt:" => 'bt "" is not a frame count (0 to 64)',
    "ruby_bt:1.5" => 'ruby_bt "1.5" is not a frame count (0 to 64)',
    "stacks:16" => 'unknown key "stacks"; known keys: dump_path, dump_fd, dump_min, dump_heap, dump_format, ' \
                   "dump_leaks, bt, ruby_bt, app_root, socket_dir, interval_ms, snapshot_interval"
  }.each do |mwrap, problem|
    it "MWRAP=#{mwrap}: one stderr line (#{problem}), output and exit status unchanged" do
      plain = ruby_with(nil)
      expect(plain).to eq(["out\n", "err\n", 7])
      expect(ruby_with(mwrap)).to eq(["out\n", "#{prefix}#{problem}\nerr\n", 7])
    end
  end

  it "reports several bad stack entries in one line, in order" do
    expect(ruby_with("bt:65,ruby_bt:x,dump_format:xml")).to eq(
      ["out\n", "#{prefix}bt \"65\" is not a frame count (0 to 64); ruby_bt \"x\" is not a frame count (0 to 64); " \
                "dump_format \"xml\" is not text, folded or json\nerr\n", 7]
    )
  end

  it "takes bt:64 and ruby_bt:64 without a word, and Mwrap.recording shows them" do
    r = run_ruby("-r", "mwrap", "-e", "p Mwrap.recording", env: { "MWRAP" => "bt:64,ruby_bt:64" })
    expect([r.stdout, r.stderr, r.exitstatus]).to eq(["{:bt=>64, :ruby_bt=>64, :app_root=>nil}\n", "", 0])
  end

  it "keeps the defaults (no stacks) when bt and ruby_bt are bad" do
    r = run_ruby("-r", "mwrap", "-e", "p Mwrap.recording", env: { "MWRAP" => "bt:65,ruby_bt:x" })
    expect(r.stdout).to eq("{:bt=>0, :ruby_bt=>0, :app_root=>nil}\n")
    expect(r.exitstatus).to eq(0)
  end

  context "a program that is not Ruby, under bt:16,ruby_bt:16" do
    [
      [["sh", "-c", "echo hi; echo oops >&2; exit 3"], ["hi\n", "oops\n", 3]],
      [["perl", "-e", 'my @a = map { "x" x 1000 } 1..1000; print scalar(@a), "\n"; print STDERR "e\n"; exit 4'],
       ["1000\n", "e\n", 4]]
    ].each do |cmd, outcome|
      it "runs #{cmd.first} as without the preload" do
        skip "#{cmd.first} is not installed" unless which(cmd.first)
        plain = capture({}, *cmd)
        preloaded = capture({ "LD_PRELOAD" => built_preload, "MWRAP" => "bt:16,ruby_bt:16" }, *cmd)
        expect([plain.stdout, plain.stderr, plain.exitstatus]).to eq(outcome)
        expect([preloaded.stdout, preloaded.stderr, preloaded.exitstatus]).to eq(outcome)
      end
    end

    it "dumps the stacks of a non-Ruby program in JSON at exit" do
      skip "perl is not installed" unless which("perl")
      Dir.mktmpdir("mwrap-stacks-bad") do |dir|
        dump = File.join(dir, "dump.json")
        r = capture({ "LD_PRELOAD" => built_preload, "MWRAP" => "bt:16,ruby_bt:16,dump_format:json,dump_path:#{dump}" },
                    "perl", "-e", 'print "ok\n"')
        expect([r.stdout, r.stderr, r.exitstatus]).to eq(["ok\n", "", 0])
        require "json"
        doc = JSON.parse(File.read(dump))
        expect(doc["mwrap"]).to eq(1)
        stacks = doc["locations"].flat_map { |l| l["stacks"] }
        expect(stacks).not_to be_empty
        expect(stacks.map { |s| s["ruby"] }.uniq).to eq([[]])
        expect(stacks.count { |s| !s["native"].empty? }).to be_positive
      end
    end
  end
end
