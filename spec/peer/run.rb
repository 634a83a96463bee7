# frozen_string_literal: true

# The peer suite: mwrap 2.1's own test file (test/test_mwrap.rb of the
# original C gem) run against this gem. `rake peer` runs this script; see
# spec/peer/README.md.
#
# The test file is not in this repository and is never copied into it: the
# user names it (PEER_TEST=file or PEER_MWRAP_DIR=checkout, or the first
# argument). It is copied into a temporary directory, where exactly two of
# its lines are rewritten to find this gem instead of mwrap 2.1's mwrap.so,
# and run there with test-unit under this Ruby, with a time limit. Then a
# per-test table and every failure's message are printed.
#
# Exit status: 0 when at least PEER_MIN_PASS tests passed (default 8, what
# mwrap 2.1 itself passes on Ruby 3.1), 1 when fewer did (or the run
# crashed or timed out), 2 when the suite could not be set up.

require "digest"
require "fileutils"
require "json"
require "rbconfig"
require "tmpdir"
require_relative "../support/spec_process"

module MwrapPeer
  ROOT = File.expand_path("../..", __dir__)
  LIB = File.join(ROOT, "lib")
  PRELOAD = File.join(LIB, "mwrap", "libmwrap_preload.so")
  RECORDER = File.join(__dir__, "recorder.rb")
  WARM = File.join(__dir__, "warm_caches.rb")
  MARK = "@@mwrap-peer@@"
  # At PEER_TIMEOUT the runner gets TERM (the recorder then notes the test
  # it was in as interrupted, with its time); what is left of its process
  # group gets KILL this many seconds later.
  TERM_GRACE = 5
  # The quick look-ups (does test-unit load, its version, cmake's).
  PROBE_TIMEOUT = 60

  # mwrap 2.1.0's test/test_mwrap.rb, to say whether we run that file.
  SHA256_2_1 = "82fc5461d648e7037aeaacde1d278d2f7872adbf5ba9021c550ca211d7cf76bc"
  # What mwrap 2.1 itself passes of its 14 tests on Ruby 3.1 (see README).
  ORIGINAL_PASSES = 8

  # The two lines we rewrite, as they read in mwrap 2.x (compared without
  # surrounding blanks), and what each becomes. Nothing else is changed, and
  # line numbers stay those of the original file.
  REWRITES = [
    { what: "the preload library (mwrap.so)", at: 12,
      line: 'mwrap_so = $".grep(%r{/mwrap\.so\z})[0]',
      with: ->(_) { "mwrap_so = Mwrap.preload_path # rewritten by rake peer" } },
    { what: "the load path of the Ruby processes the tests start", at: 17,
      line: "inc = File.dirname(mwrap_so)",
      with: ->(lib) { "inc = #{lib.inspect} # rewritten by rake peer" } },
  ].freeze

  WHERE_TO_GET_IT = <<~TEXT
    The peer suite is mwrap 2.1's own test file, test/test_mwrap.rb of the
    original C gem. It is not part of this repository (it is another
    project's GPL-2.0+ code); fetch it yourself and name it:

      PEER_TEST=/path/to/test_mwrap.rb rake peer
      PEER_MWRAP_DIR=/path/to/mwrap-2.1-checkout rake peer   # uses its test/test_mwrap.rb

    Where to get it: a checkout of mwrap at the commit "mwrap 2.1.0 -
    heap_page_body struct tracking" (upstream https://80x24.org/mwrap.git,
    or the public GitHub mirror ivan-leschinsky/mwrap, commit 5120b83), e.g.

      git clone https://github.com/ivan-leschinsky/mwrap /tmp/mwrap-2.1
      git -C /tmp/mwrap-2.1 checkout 5120b83
      PEER_MWRAP_DIR=/tmp/mwrap-2.1 rake peer

    or the mwrap 2.1.0 gem (`gem fetch mwrap -v 2.1.0 && gem unpack mwrap-2.1.0.gem`),
    which ships test/test_mwrap.rb.
  TEXT

  RESULT_WORDS = { "pass" => "pass", "failure" => "FAIL", "error" => "ERROR",
                   "pending" => "PENDING", "omission" => "OMITTED" }.freeze

  class SetupError < StandardError; end

  module_function

  def main(argv)
    source = locate(argv.first)
    text = read_source(source)
    rewritten, changed = rewrite(text, source)
    check_environment
    warm = env_flag("PEER_WARM")
    timeout = number("PEER_TIMEOUT", "300") { |v| Float(v).tap { |f| raise ArgumentError unless f.positive? } }
    min_pass = number("PEER_MIN_PASS", ORIGINAL_PASSES.to_s) { |v| Integer(v, 10) }

    dir = Dir.mktmpdir("mwrap-peer")
    begin
      copy = File.join(dir, "test_mwrap.rb")
      File.write(copy, rewritten)
      cmake = tool_version("cmake", "--version")
      header(source, text, copy, changed, warm, timeout, cmake)
      run = run_suite(dir, copy, warm, timeout).merge(cmake: cmake)
      code = report(run, min_pass, warm)
      puts "peer: raw test-unit output: #{run[:console]}" if env_flag("PEER_KEEP")
      code
    ensure
      if env_flag("PEER_KEEP")
        puts "peer: kept #{dir} (the rewritten copy and the logs; it holds mwrap 2.1's code: never commit it)"
      else
        FileUtils.remove_entry(dir)
      end
    end
  rescue SetupError => e
    warn "rake peer: #{e.message}"
    2
  end

  def number(name, default)
    value = ENV.fetch(name, "").strip
    value = default if value.empty?
    yield value
  rescue ArgumentError, TypeError
    raise SetupError, "#{name}=#{ENV[name]} is not a valid number (#{name == 'PEER_TIMEOUT' ? 'seconds, > 0' : 'a count of tests'})"
  end

  def env_flag(name)
    !ENV.fetch(name, "").strip.empty? && ENV[name] != "0"
  end

  def locate(arg)
    test = arg || ENV["PEER_TEST"]
    test = nil if test&.strip&.empty?
    dir = ENV["PEER_MWRAP_DIR"]
    dir = nil if dir&.strip&.empty?
    raise SetupError, "no test file given.\n\n#{WHERE_TO_GET_IT}" unless test || dir

    if test
      path = File.expand_path(test)
      raise SetupError, "PEER_TEST=#{test}: no such file (#{path}).\n\n#{WHERE_TO_GET_IT}" unless File.exist?(path)
      raise SetupError, "PEER_TEST=#{test} is not a regular file" unless File.file?(path)
    else
      root = File.expand_path(dir)
      raise SetupError, "PEER_MWRAP_DIR=#{dir}: no such directory (#{root}).\n\n#{WHERE_TO_GET_IT}" \
        unless File.directory?(root)

      path = File.join(root, "test", "test_mwrap.rb")
      raise SetupError, "PEER_MWRAP_DIR=#{dir} has no test/test_mwrap.rb (looked for #{path}).\n\n" \
                        "#{WHERE_TO_GET_IT}" unless File.file?(path)
    end
    path
  end

  def read_source(path)
    File.binread(path)
  rescue SystemCallError => e
    raise SetupError, "cannot read #{path}: #{e.message}"
  end

  # Returns the rewritten text and the line numbers changed.
  def rewrite(text, source)
    lines = text.lines
    changed = REWRITES.map do |r|
      hits = lines.each_index.select { |i| lines[i].strip == r[:line] }
      if hits.empty?
        raise SetupError, "#{source}: cannot find the line that locates #{r[:what]}.\n" \
                          "  looked for a line reading: #{r[:line]}\n" \
                          "  (line #{r[:at]} of mwrap 2.1's test/test_mwrap.rb); is this mwrap 2.x's test file?"
      end
      if hits.size > 1
        raise SetupError, "#{source}: the line #{r[:line]} appears #{hits.size} times " \
                          "(lines #{hits.map { |i| i + 1 }.join(', ')}); expected once"
      end
      i = hits.first
      indent = lines[i][/\A\s*/]
      eol = lines[i][/\r?\n\z/] || ""
      lines[i] = "#{indent}#{r[:with].call(LIB)}#{eol}".b
      i + 1
    end
    [lines.join, changed]
  end

  def check_environment
    unless File.file?(PRELOAD)
      raise SetupError, "#{PRELOAD} is missing: build it with `rake compile` (`rake peer` does)"
    end
    r = SpecProcess.run({}, RbConfig.ruby, "-e", 'require "test/unit"; Test::Unit::AutoRunner.need_auto_run = false',
                        timeout: PROBE_TIMEOUT, on_timeout: :return)
    return if r.success?
    raise SetupError, "loading test-unit did not finish:\n#{r.describe}" if r.timed_out

    raise SetupError, "test-unit cannot be loaded by #{RbConfig.ruby}: install it (Debian: apt-get install ruby-test-unit)"
  end

  def tool_version(*cmd)
    r = SpecProcess.run({}, *cmd, timeout: PROBE_TIMEOUT, on_timeout: :return)
    r.success? ? r.stdout.lines.first.to_s.strip : nil
  rescue SystemCallError
    nil
  end

  def header(source, text, copy, changed, warm, timeout, cmake)
    sha = Digest::SHA256.hexdigest(text)
    which = if sha == SHA256_2_1 then "mwrap 2.1.0's test/test_mwrap.rb"
            else "NOT mwrap 2.1.0's file (that one has sha256 #{SHA256_2_1[0, 12]}…): results may differ"
            end
    test_unit = SpecProcess.run({}, RbConfig.ruby, "-rtest/unit/version", "-e", "print Test::Unit::VERSION",
                                timeout: PROBE_TIMEOUT, on_timeout: :return).stdout
    puts "peer suite: #{source}"
    puts "  file:     sha256 #{sha[0, 12]}…, #{which}"
    puts "  copy:     #{copy} (rewritten lines #{changed.join(' and ')}; nothing else changed)"
    puts "  preload:  #{PRELOAD}"
    puts "  load path of the tests' Ruby processes: #{LIB}"
    puts "  ruby:     #{RUBY_DESCRIPTION}"
    puts "  test-unit #{test_unit}, time limit #{timeout.round}s (PEER_TIMEOUT)"
    if cmake
      puts "  cmake:    #{cmake}"
    else
      puts "  cmake:    NOT FOUND: test_cmake will pass without testing anything (apt-get install cmake)"
    end
    return unless warm

    puts "  PEER_WARM: RUBYOPT=-r#{WARM}: a diagnosis run, NOT the peer result (see spec/peer/warm_caches.rb)"
  end

  def child_env(dir, warm)
    env = {}
    # The test builds LD_PRELOAD from ours plus the caller's; start clean.
    %w[LD_PRELOAD MWRAP RUBYOPT RUBYLIB BENCHMARK].each { |k| env[k] = nil }
    env["RUBYOPT"] = "-r#{WARM}" if warm
    env["PEER_RESULTS"] = File.join(dir, "results.jsonl")
    env
  end

  def run_suite(dir, copy, warm, timeout)
    console = File.join(dir, "console.log")
    stderr = File.join(dir, "stderr.log")
    extra = ENV.fetch("PEER_ARGS", "").split
    cmd = [RbConfig.ruby, "-I", LIB, "-r", RECORDER, copy, "--verbose=verbose", "--use-color=no", *extra]
    timed_out = false
    pid = nil
    # SpecProcess's own limit is the KILL at the end of the grace; no
    # stacks at it (nothing here prints them).
    r = SpecProcess.open(child_env(dir, warm), *cmd, chdir: dir, timeout: timeout + TERM_GRACE,
                                                     on_timeout: :return, stacks: false) do |child|
      child.close_stdin
      pid = child.pid
      next if child.exited_within?(timeout)

      timed_out = true
      # The runner and the processes its tests started share its process group.
      signal_group(pid, :TERM)
    end
    signal_group(pid, :KILL) if timed_out # what outlived the TERM without holding the output open
    File.binwrite(console, r.stdout)
    File.binwrite(stderr, r.stderr)
    records = File.exist?(File.join(dir, "results.jsonl")) ? parse_jsonl(File.join(dir, "results.jsonl")) : []
    { status: r.status, timed_out: timed_out, timeout: timeout, seconds: r.seconds, records: records,
      console: console, stderr: stderr, stderr_by_test: split_stderr(File.read(stderr)) }
  end

  def signal_group(pgid, sig)
    Process.kill(sig, -pgid)
  rescue Errno::ESRCH
    nil
  end

  def parse_jsonl(path)
    File.readlines(path).filter_map do |l|
      JSON.parse(l)
    rescue JSON::ParserError
      nil
    end
  end

  # What was printed on stderr between a test's start and end markers.
  def split_stderr(text)
    out = Hash.new { |h, k| h[k] = +"" }
    current = nil
    text.each_line do |line|
      if (m = /\A#{MARK} (start|end) (\S+)\n?\z/o.match(line))
        current = m[1] == "start" ? m[2] : nil
      elsif current && line != "\n"
        out[current] << line
      end
    end
    out
  end

  def clip(text, max_lines)
    lines = text.to_s.lines
    return text.to_s.chomp if lines.size <= max_lines

    (lines.first(max_lines) + ["… (#{lines.size - max_lines} more lines; PEER_KEEP=1 keeps the logs)\n"]).join.chomp
  end

  def indent(text, pad)
    text.to_s.lines.map { |l| "#{pad}#{l}" }.join.chomp
  end

  # For a long "</re/> was expected to be =~ <text>" whose pattern names a
  # location (-e:1, file.rb:12), the lines of the text that name it.
  def lines_naming_expected_location(summary)
    return nil unless summary.lines.size > 12

    m = %r{\A</(.*?)/> was expected to be =~}.match(summary) or return nil
    loc = m[1][/(?:-e|[\w.]+\.rb):\d+/] or return nil
    hits = summary.lines.drop(1).select { |l| l.include?(" #{loc}\\n") }
    [loc, hits.empty? ? "(none)" : hits.join.chomp]
  end

  def report(run, min_pass, warm)
    records = run[:records]
    listed = records.find { |r| r["event"] == "suite" }&.fetch("tests") || []
    finished = records.select { |r| r["event"] == "finish" }.to_h { |r| [r["test"], r] }
    started = records.select { |r| r["event"] == "start" }.map { |r| r["test"] }
    names = (listed + started + finished.keys).uniq
    hung = (started - finished.keys).last

    puts
    if names.empty?
      puts "peer: the suite ran no test (#{run_end(run)}); its output:"
      puts "  (PEER_ARGS=#{ENV['PEER_ARGS']}: test-unit 3.5 runs nothing for repeated -n; use -n /regexp/)" \
        unless ENV.fetch("PEER_ARGS", "").strip.empty?
      puts indent(clip(File.read(run[:console]) + File.read(run[:stderr]), 40), "  ")
      puts "peer suite: passed 0 of ? (it did not run)"
      return 1
    end

    width = [names.map(&:size).max, 4].max
    puts format("  %-#{width}s  %-8s %8s", "test", "result", "seconds")
    names.each do |n|
      r = finished[n]
      result = if r.nil? || r["status"] == "interrupted"
                 if n == hung || r then run[:timed_out] ? "TIMEOUT" : "CRASHED"
                 else "not run"
                 end
               else RESULT_WORDS.fetch(r["status"], r["status"])
               end
      note = n == "test_cmake" && result == "pass" && !run[:cmake] ? "  (no cmake: it tested nothing)" : ""
      puts format("  %-#{width}s  %-8s %8s%s", n, result, r ? format("%.2f", r["seconds"]) : "-", note)
    end

    bad = names.reject { |n| finished[n]&.fetch("status") == "pass" }
    not_run = bad.select { |n| finished[n].nil? && n != hung }
    unless bad.empty?
      puts "\nwhat failed:"
      (bad - not_run).each do |n|
        r = finished[n]
        puts "- #{n}:"
        if r.nil? || r["status"] == "interrupted"
          why = run[:timed_out] ? "still running at the time limit (#{run[:timeout]}s, PEER_TIMEOUT): killed" : "the runner died in it"
          puts "    #{why}"
        else
          r["faults"].each do |f|
            puts "    #{f['kind']}: #{indent(clip(f['summary'], 12), '      ').lstrip}"
            named = lines_naming_expected_location(f["summary"])
            puts "      the lines of that value naming #{named[0]}:\n#{indent(named[1], '        ')}" if named
            loc = f["location"].find { |l| l.include?("test_mwrap.rb") } || f["location"].first
            puts "      at #{loc.sub(%r{\A.*/}, '')}" if loc
          end
        end
        err = run[:stderr_by_test][n]
        puts "    printed on stderr during the test:\n#{indent(clip(err, 8), '      ')}" unless err.to_s.strip.empty?
      end
      puts "- not run (the run ended before them): #{not_run.join(', ')}" unless not_run.empty?
    end

    passed = names.count { |n| finished[n]&.fetch("status") == "pass" }
    puts
    puts "peer: the run #{run_end(run)} after #{run[:seconds].round(1)}s"
    puts "peer suite: passed #{passed} of #{names.size}" \
         "#{bad.empty? ? '' : " (not passed: #{bad.join(', ')})"}"
    if warm
      puts "peer: PEER_WARM diagnosis run: the tests that pass only with it fail on Ruby's method-cache " \
           "allocations; not the peer result"
      return 0
    end
    puts "peer: mwrap 2.1 itself passes #{ORIGINAL_PASSES} of 14 on Ruby 3.1; required here: " \
         "at least #{min_pass} (PEER_MIN_PASS)"
    passed >= min_pass ? 0 : 1
  end

  def run_end(run)
    st = run[:status]
    return "was stopped by the time limit" if run[:timed_out]
    return "ended by signal #{st.termsig}" if st&.signaled?

    "exited #{st&.exitstatus}"
  end
end

exit(MwrapPeer.main(ARGV)) if $PROGRAM_NAME == __FILE__
