# frozen_string_literal: true

require_relative "hardening_helper"

# Item 1: fork() or exit() inside a signal handler. A single-threaded C
# program (spec/hardening/native/signal_handler.c) allocates in a loop from
# one call site; a setitimer signal's handler, when it interrupted that
# malloc or free (under the preload: most often our hook, holding a table
# lock), forks or exits. Without the preload glibc's single-threaded malloc
# takes no lock, so every run completes; the baseline preload hung in the
# fork handler or in the exit dump, waiting for the lock the interrupted
# frame held.
RSpec.describe "hardening: fork and exit from a signal handler" do
  include HardeningHelpers

  before do
    require_preload!
    need_cc!
  end

  # At least 40 runs of each, in CI too: each takes milliseconds.
  def self.runs = 40
  def runs = self.class.runs

  let(:prog) { native("signal_handler", flags: ["-rdynamic"]) }
  let(:tmp) { Dir.mktmpdir("mwrap-hardening-signal") }
  after { FileUtils.rm_rf(tmp) }

  # The dump row of the loop's call site.
  def loop_row(rows)
    mine = rows.select { |r| r.location.include?("(loop_alloc+0x") }
    raise "#{mine.size} rows for loop_alloc in the dump (#{rows.size} rows)" unless mine.size == 1

    mine.first
  end

  it "forks 20 times from the handler in each of #{runs} runs, as without the preload" do
    plain = without_preload(prog, "fork", "20")
    expect([plain.stdout, plain.exitstatus]).to eq(["forks 20\n", 0]), plain.describe
    done, failure = repeat(runs) do |_i|
      r = with_preload(prog, "fork", "20")
      r.describe unless r.success? && r.stdout == "forks 20\n" && r.stderr == ""
    end
    expect(failure).to be_nil
    expect(done).to eq(runs)
  end

  it "exits 7 from the handler in each of #{runs} runs, with the whole dump in dump_path" do
    plain = without_preload(prog, "exit")
    expect(plain.exitstatus).to eq(7), plain.describe
    expect(plain.stdout).to match(/\Aiterations \d+\n\z/)
    done, failure = repeat(runs) do |i|
      path = File.join(tmp, "exit-#{i}.txt")
      r = with_preload(prog, "exit", env: { "MWRAP" => "dump_path:#{path}" })
      next r.describe unless r.exitstatus == 7 && r.stderr == "" && (m = /\Aiterations (\d+)\n\z/.match(r.stdout))
      next "no dump at #{path}" unless File.file?(path)

      text = File.read(path)
      begin
        row = loop_row(dump_rows(text))
      rescue RuntimeError => e
        next "#{e.message}\n#{text}"
      end
      k = Integer(m[1])
      # Interrupted inside malloc after the hook charged it: one more.
      next "loop row #{row.to_a.inspect} for #{k} iterations" unless
        [k, k + 1].include?(row.allocations) && row.total == 100 * row.allocations

      nil
    end
    expect(failure).to be_nil
    expect(done).to eq(runs)
  end

  it "lets a child forked in the handler return from it, allocate and exit with its own dump (dump_path %p)" do
    plain = without_preload(prog, "child", "1000")
    expect(plain.exitstatus).to eq(0), plain.describe
    expect(plain.stdout).to match(/\Achild pid \d+ iterations \d+\nparent pid \d+ iterations \d+\n\z/)
    done, failure = repeat(runs) do |i|
      dir = File.join(tmp, "child-#{i}")
      Dir.mkdir(dir)
      r = with_preload(prog, "child", "1000", env: { "MWRAP" => "dump_path:#{dir}/dump.%p.txt" })
      lines = r.stdout.scan(/^(child|parent) pid (\d+) iterations (\d+)$/)
      next r.describe unless r.success? && r.stderr == "" && lines.map(&:first) == %w[child parent]

      files = Dir.children(dir).sort
      wanted = lines.map { |_, pid, _| "dump.#{pid}.txt" }.sort
      next "dump files #{files} (wanted #{wanted})" unless files == wanted

      # A normal exit: the site holds exactly the loop's iterations.
      lines.filter_map do |who, pid, k|
        text = File.read(File.join(dir, "dump.#{pid}.txt"))
        begin
          row = loop_row(dump_rows(text))
          "#{who}: loop row #{row.to_a.inspect} for #{k} iterations" unless
            row.to_a.first(2) == [100 * Integer(k), Integer(k)]
        rescue RuntimeError => e
          "#{who}: #{e.message}\n#{text}"
        end
      end.first
    end
    expect(failure).to be_nil
    expect(done).to eq(runs)
  end
end
