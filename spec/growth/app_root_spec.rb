# frozen_string_literal: true

require "spec_helper"
require "support/growth_helpers"
require "json"

# `app_root:` on Mwrap.measure_growth, the matchers and the rake task: what
# a library keeps is charged to the app's line that called it.
# spec/growth/fixtures/app_root: app/handler.rb (the app) calls
# vendor/doc_store (a library outside the app) that keeps every document.
RSpec.describe "memory growth with app_root" do
  before(:all) { require_preload! }

  let(:fixtures) { File.join(__dir__, "fixtures", "app_root") }
  let(:app) { File.join(fixtures, "app") }
  let(:handler_line) { "#{File.join(app, 'handler.rb')}:8" }
  let(:library_line) { "#{File.join(fixtures, 'vendor', 'doc_store', 'lib', 'doc_store.rb')}:9" }

  def mwrap_ruby(*args)
    MwrapGrowthHelpers.run_child(MwrapGrowthHelpers.child_env, RbConfig.ruby, MwrapGrowthHelpers::EXE, RbConfig.ruby,
                                 "-I", MwrapGrowthHelpers::LIB, "-I", File.join(fixtures, "vendor", "doc_store", "lib"),
                                 "-I", app, *args)
  end

  # The growing locations of measure_growth on Handler.call(20), with the
  # keywords given, and what Mwrap.app_root is before and after.
  def growing(keywords)
    out, err, status = mwrap_ruby("-rmwrap/growth", "-rjson", "-rpathname", "-rhandler", "-e", <<~RUBY)
      before = Mwrap.app_root
      report = Mwrap.measure_growth(rounds: 3, warmup: 1#{keywords}) { Handler.call(20) }
      puts JSON.generate(growing: report.growing.map(&:location), before: before, after: Mwrap.app_root)
    RUBY
    expect([err, status.exitstatus]).to eq(["", 0]), out
    JSON.parse(out)
  end

  it "names the library's line without app_root and the app's calling line with it" do
    without = growing("")
    expect(without["growing"].first).to eq(library_line)
    expect(without["growing"]).not_to include(handler_line)
    with = growing(", app_root: #{app.dump}")
    expect(with["growing"].first).to eq(handler_line)
    expect(with["growing"]).not_to include(library_line)
    # The setting holds only while the block runs.
    expect([with["before"], with["after"]]).to eq([nil, nil])
  end

  it "takes a Pathname and refuses what is no directory, naming it" do
    expect(growing(", app_root: Pathname(#{app.dump})")["growing"].first).to eq(handler_line)
    out, _err, status = mwrap_ruby("-rmwrap/growth", "-e", <<~RUBY)
      %w[/nonexistent #{__FILE__}].each do |bad|
        Mwrap.measure_growth(app_root: bad) { }
      rescue ArgumentError => e
        puts e.message
      end
      begin
        Mwrap.measure_growth(app_root: 42) { }
      rescue ArgumentError => e
        puts e.message
      end
    RUBY
    expect(status.exitstatus).to eq(0)
    expect(out.lines).to eq([
      "app_root must be an existing directory, got \"/nonexistent\"\n",
      "app_root must be an existing directory, got #{__FILE__.dump}\n",
      "app_root must be a directory (String or Pathname) or nil, got 42\n"
    ])
  end

  it "reaches measure_growth from leak_memory and assert_no_memory_growth" do
    Dir.mktmpdir do |dir|
      spec = File.join(dir, "app_spec.rb")
      File.write(spec, <<~RUBY)
        require "mwrap/rspec"
        require "handler"
        RSpec.describe("app") do
          it("keeps documents") { expect { Handler.call(20) }.not_to leak_memory(rounds: 3, warmup: 1, app_root: #{app.dump}) }
        end
      RUBY
      out, = mwrap_ruby("-S", "rspec", "--no-color", spec)
      expect(out).to include("expected the block not to leak memory, but it did.")
      expect(out).to include(handler_line)
      expect(out).not_to include(library_line)
      test = File.join(dir, "app_test.rb")
      File.write(test, <<~RUBY)
        require "minitest/autorun"
        require "mwrap/minitest"
        require "handler"
        class AppTest < Minitest::Test
          def test_documents
            assert_no_memory_growth(rounds: 3, warmup: 1, app_root: #{app.dump}) { Handler.call(20) }
          end
        end
      RUBY
      out, = mwrap_ruby(test)
      expect(out).to include("Memory grew.")
      expect(out).to include(handler_line)
      expect(out).not_to include(library_line)
    end
  end

  it "passes app_root from Mwrap::RakeTask to the child, absolute" do
    Dir.mktmpdir do |dir|
      File.write(File.join(dir, "round.rb"), "Handler.call(20)\n")
      File.write(File.join(dir, "Rakefile"), <<~RUBY)
        require "mwrap/rake_task"
        Mwrap::RakeTask.new(:memcheck) do |t|
          t.workload = "round.rb"
          t.libs = [#{File.join(fixtures, 'vendor', 'doc_store', 'lib').dump}, #{app.dump}]
          t.requires = ["handler"]
          t.rounds = 3
          t.warmup = 1
          t.app_root = #{app.dump}
          t.report = "report.json"
        end
      RUBY
      out, err, status = MwrapGrowthHelpers.run_child(MwrapGrowthHelpers.child_env, RbConfig.ruby, "-I",
                                                      MwrapGrowthHelpers::LIB, "-S", "rake", "-f",
                                                      File.join(dir, "Rakefile"), "memcheck", chdir: dir)
      expect(status.exitstatus).to eq(1), out + err
      report = JSON.parse(File.read(File.join(dir, "report.json")))
      expect(report["growing"].first["location"]).to eq(handler_line)
    end
  end
end
