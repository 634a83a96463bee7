# frozen_string_literal: true

require "spec_helper"
require "support/growth_helpers"
require "tmpdir"

# Ruby names the main script as it was typed (`ruby main.rb`), relative to
# the directory the program started in, whatever the program's working
# directory is later. app_root must take such a name against the start-up
# directory, also when it is set at run time after a chdir.
RSpec.describe "app_root and relative file names" do
  before(:all) { require_preload! }

  let(:vendor) { File.join(__dir__, "..", "growth", "fixtures", "app_root", "vendor", "doc_store", "lib") }
  let(:library_line) { "#{File.realpath(vendor)}/doc_store.rb:9" }

  # Runs DIR/main.rb as `ruby main.rb` from DIR, `setup` first; returns
  # [whichever of main.rb:4 and the library's line has the larger total, stderr].
  def top_location(env, setup)
    Dir.mktmpdir do |dir|
      File.write(File.join(dir, "main.rb"), <<~RUBY)
        require "doc_store"
        require "mwrap"
        #{setup}
        200.times { |i| DocStore.parse("a\#{i},b,c") }
        top = Mwrap.each(0).select { |loc, *| loc.end_with?("main.rb:4", "doc_store.rb:9") }.max_by { |_loc, total, *| total }
        $stdout.write(top[0])
      RUBY
      out, err, status = MwrapGrowthHelpers.run_child(
        MwrapGrowthHelpers.child_env(env), RbConfig.ruby, MwrapGrowthHelpers::EXE, RbConfig.ruby,
        "--disable-gems", "-I", MwrapGrowthHelpers::LIB, "-I", File.realpath(vendor), "main.rb", chdir: dir
      )
      expect(status.exitstatus).to eq(0), err
      [out, err]
    end
  end

  it "charges main.rb's line with MWRAP=app_root:. after the program chdirs away" do
    out, err = top_location({ "MWRAP" => "app_root:." }, 'Dir.chdir("/")')
    expect([out, err]).to eq(["main.rb:4", ""])
  end

  it "charges main.rb's line when app_root is set after a chdir" do
    out, err = top_location({}, 'dir = Dir.pwd; Dir.chdir("/"); Mwrap.app_root = dir')
    expect([out, err]).to eq(["main.rb:4", ""])
  end

  it "charges the library's line without app_root" do
    expect(top_location({}, 'Dir.chdir("/")')).to eq([library_line, ""])
  end
end
