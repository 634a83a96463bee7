# frozen_string_literal: true

require "spec_helper"
require "support/growth_helpers"
require "json"

# The RSpec matcher and the minitest assertion, run on the examples in
# processes under the preload (exe/mwrap), as a user would.
RSpec.describe "memory-growth matchers" do
  before(:all) { require_preload! }

  def mwrap_ruby(*args, chdir: MwrapGrowthHelpers::ROOT)
    MwrapGrowthHelpers.run_child(MwrapGrowthHelpers.child_env, RbConfig.ruby, MwrapGrowthHelpers::EXE, RbConfig.ruby,
                                 "-I", MwrapGrowthHelpers::LIB, *args, chdir: chdir)
  end

  describe "leak_memory (RSpec)" do
    before(:all) do
      out, err, @status = mwrap_ruby("-S", "rspec", "--format", "json", "--no-color",
                                     File.join(MwrapGrowthHelpers::DIR, "growth_spec.rb"))
      @json = JSON.parse(out[out.index("{")..]) rescue raise("rspec printed no JSON:\n#{out}\n#{err}") # rubocop:disable Style/RescueModifier
      @examples = @json["examples"].to_h { |e| [e["description"], e] }
    end

    {
      "does not leak through Fiddle (fails on purpose)" => "fiddle_leak",
      "does not leak compiled methods (fails on purpose)" => "module_eval_leak",
      "does not leak on native threads (fails on purpose)" => "native_thread_leak"
    }.each do |description, name|
      it "fails `#{description}` with the table naming the leaking location" do
        example = @examples.fetch(description)
        expect(example["status"]).to eq("failed")
        message = example.dig("exception", "message")
        lines = message.lines.map(&:chomp)
        expect(lines[0]).to eq("expected the block not to leak memory, but it did.")
        expect(lines[1]).to start_with("mwrap: FAILED: 1 location grew in every one of 5 rounds after 2 warmup")
        expect(lines[2]).to match(/\A +growth +bytes +per round +allocs +frees +location\z/)
        expect(lines[3].split("  ").last.strip).to match(MwrapGrowthHelpers.expected_location(name))
      end
    end

    it "passes on the bounded cache and the leak-free workload" do
      expect(@examples.fetch("lets a bounded cache fill up")["status"]).to eq("passed")
      expect(@examples.fetch("does not keep what it allocates")["status"]).to eq("passed")
      expect(@json["summary"]).to include("example_count" => 5, "failure_count" => 3)
      expect(@status.exitstatus).to eq(1)
    end
  end

  it "supports `to leak_memory`, limits and a description, and rejects a value" do
    Dir.mktmpdir do |dir|
      spec = File.join(dir, "matcher_spec.rb")
      File.write(spec, <<~RUBY)
        require "mwrap/rspec"
        require "fiddle"
        RSpec.describe "leak_memory" do
          it "passes `to` on a leak" do
            expect { 8.times { Fiddle.malloc(1000) } }.to leak_memory(rounds: 3, warmup: 1)
          end

          it "passes `not_to` when the growth is within max_growth" do
            expect { 8.times { Fiddle.malloc(1000) } }.not_to leak_memory(rounds: 3, warmup: 1, max_growth: 24_000)
          end

          it "fails on max_growth_per_location" do
            expect { 8.times { Fiddle.malloc(1000) } }
              .not_to leak_memory(rounds: 3, warmup: 1, max_growth: 10**9, max_growth_per_location: 1000)
          end

          it "fails `to` on no leak" do
            expect { "x" * 100_000 }.to leak_memory(rounds: 2, warmup: 0)
          end

          it "describes itself" do
            expect(leak_memory(max_growth: 1_000_000).description)
              .to eq("leak memory (5 rounds after 2 warmup, limit 1.0 MB (1,000,000 bytes) in total)")
          end

          it "needs a block" do
            expect(42).not_to leak_memory
          end

          it "validates its options" do
            expect { leak_memory(rounds: 0) }.to raise_error(ArgumentError, /rounds/)
            expect { leak_memory(max_growth: -1) }.to raise_error(ArgumentError, /max_growth/)
            expect { leak_memory(max_growht: 1) }
              .to raise_error(ArgumentError, "leak_memory: unknown keyword :max_growht (known keywords: " \
                                             "rounds, warmup, min_growth, ignore, app_root, max_growth, max_growth_per_location)")
          end
        end
      RUBY
      out, err, = mwrap_ruby("-S", "rspec", "--format", "json", spec, chdir: dir)
      json = JSON.parse(out[out.index("{")..]) rescue raise("rspec printed no JSON:\n#{out}\n#{err}") # rubocop:disable Style/RescueModifier
      results = json["examples"].to_h { |e| [e["description"], [e["status"], e.dig("exception", "message")]] }
      expect(results.transform_values(&:first)).to eq(
        "passes `to` on a leak" => "passed",
        "passes `not_to` when the growth is within max_growth" => "passed",
        "fails on max_growth_per_location" => "failed",
        "fails `to` on no leak" => "failed",
        "describes itself" => "passed",
        "needs a block" => "failed",
        "validates its options" => "passed"
      )
      expect(results["fails on max_growth_per_location"].last).to match(/^! +24\.0 kB +24,000 .*matcher_spec\.rb:13$/)
      expect(results["fails `to` on no leak"].last)
        .to start_with("expected the block to leak memory, but it did not.\nmwrap: passed: no location grew")
      expect(results["needs a block"].last).to match(/block/)
    end
  end

  describe "assert_no_memory_growth (minitest)" do
    before(:all) do
      @out, @err, @status = mwrap_ruby(File.join(MwrapGrowthHelpers::DIR, "growth_test.rb"), "--verbose")
    end

    it "fails the three leaks with the table naming the leaking location, and passes the others" do
      expect(@out).to match(/^5 runs, 5 assertions, 3 failures, 0 errors, 0 skips$/), "#{@out}\n#{@err}"
      expect(@status.exitstatus).to eq(1)
      failures = @out.split(/^ +\d+\) Failure:\n/).drop(1)
      expect(failures.size).to eq(3)
      by_test = failures.to_h { |f| [f[/GrowthTest#(\w+)/, 1], f.lines.map(&:chomp)] }
      { "test_fiddle_leak_fails_on_purpose" => "fiddle_leak",
        "test_module_eval_leak_fails_on_purpose" => "module_eval_leak",
        "test_native_thread_leak_fails_on_purpose" => "native_thread_leak" }.each do |test, name|
        lines = by_test.fetch(test)
        expect(lines[1]).to eq("Memory grew.")
        expect(lines[2]).to start_with("mwrap: FAILED: 1 location grew in every one of 5 rounds")
        expect(lines[4].split("  ").last.strip).to match(MwrapGrowthHelpers.expected_location(name))
      end
      expect(@out).to match(/GrowthTest#test_bounded_cache = [\d.]+ s = \./)
      expect(@out).to match(/GrowthTest#test_leak_free = [\d.]+ s = \./)
    end

    it "is in Minitest::Assertions: Minitest::Spec and any class using the assertions have it" do
      Dir.mktmpdir do |dir|
        test = File.join(dir, "assertions_test.rb")
        File.write(test, <<~RUBY)
          require "minitest/autorun"
          require "fiddle"
          # Not a Minitest::Test, and it includes the assertions before mwrap/minitest is loaded.
          class Plain
            include Minitest::Assertions
            attr_accessor :assertions

            def initialize
              self.assertions = 0
            end
          end
          require "mwrap/minitest"

          describe "assert_no_memory_growth" do
            it "passes in a spec when nothing is kept" do
              assert_no_memory_growth(rounds: 2, warmup: 1) { "x" * 100_000 }
            end

            it "fails in a spec on a leak" do
              assert_no_memory_growth(rounds: 3, warmup: 1) { 8.times { Fiddle.malloc(1000) } }
            end

            it "works in a plain class" do
              plain = Plain.new
              assert_kind_of Mwrap::Growth::Report, plain.assert_no_memory_growth(rounds: 2, warmup: 1) { "x" * 100_000 }
              error = assert_raises(Minitest::Assertion) do
                plain.assert_no_memory_growth(rounds: 3, warmup: 1, message: "plain") { 8.times { Fiddle.malloc(1000) } }
              end
              assert_match(/\\Aplain\.\nMemory grew\.\nmwrap: FAILED: /, error.message)
              assert_equal 2, plain.assertions
            end

            it "rejects an unknown keyword" do
              error = assert_raises(ArgumentError) { assert_no_memory_growth(max_growht: 1) {} }
              assert_equal "assert_no_memory_growth: unknown keyword :max_growht (known keywords: rounds, warmup, " \\
                           "min_growth, ignore, app_root, max_growth, max_growth_per_location, message)", error.message
            end
          end
        RUBY
        out, err, status = mwrap_ruby(test, "--verbose", chdir: dir)
        expect(out).to match(/^4 runs, \d+ assertions, 1 failures, 0 errors, 0 skips$/), "#{out}\n#{err}"
        expect(status.exitstatus).to eq(1)
        failure = out[/^ +1\) Failure:\n.*?(?=\n\n)/m]
        expect(failure).to include("fails in a spec on a leak", "Memory grew.", "mwrap: FAILED: 1 location grew")
        %w[passes\ in\ a\ spec works\ in\ a\ plain\ class rejects\ an\ unknown\ keyword].each do |name|
          expect(out).to match(/#{name}.* = [\d.]+ s = \./)
        end
      end
    end
  end
end
