# frozen_string_literal: true

require_relative "stacks_helper"

# MWRAP=app_root:DIR and Mwrap.app_root=: what a library outside DIR
# allocates is charged to the innermost frame under DIR. The app is a
# script in DIR that parses and keeps 200 documents with DocStore
# (spec/growth/fixtures/app_root/vendor/doc_store, outside DIR).
RSpec.describe "app_root" do
  before(:all) { require_preload! }

  # ARGV: "chdir" to chdir to / before allocating. mwrap is loaded with
  # -r, before any frame of the app (loading it later would charge what it
  # allocates to the app's `require` line).
  APP_ROOT_SCRIPT = <<~RUBY
    require "doc_store"
    Dir.chdir("/") if ARGV.include?("chdir")
    200.times { |i| DocStore.parse("a\#{i},b,c") } # keep
    GC.disable
    lines = []
    Mwrap.each { |location, total, *| lines << [location, total] if location.match?(/\\.rb:[1-9]/) }
    show :top, lines.max_by { |_, total| total }[0]
    show :root, Mwrap.app_root
    show :recording, Mwrap.recording
  RUBY

  def keep_line(name)
    "#{name}:#{line_of(APP_ROOT_SCRIPT, '# keep')}"
  end

  # [tmpdir, its app/ directory] (tmpdir realpath'd: locations show it so).
  def with_app
    Dir.mktmpdir do |tmp|
      tmp = File.realpath(tmp)
      app = File.join(tmp, "app")
      Dir.mkdir(app)
      yield tmp, app
    end
  end

  def top(app, mwrap, **opts)
    stack_values(APP_ROOT_SCRIPT, dir: app, name: "main.rb", mwrap: mwrap, ruby_args: ["-rmwrap"], **opts).last
  end

  it "charges the library's line without app_root and the app's calling line with it" do
    with_app do |_, app|
      main = File.join(app, "main.rb")
      without = top(app, "")
      expect(without.fetch(:top)).to eq(StacksSpecHelpers::DOC_STORE_LINE)
      expect(without.fetch(:root)).to be_nil
      with = top(app, "app_root:#{app}")
      expect(with.fetch(:top)).to eq(keep_line(main))
      expect(with.fetch(:root)).to eq(app)
      expect(with.fetch(:recording)).to eq(bt: 0, ruby_bt: 0, app_root: app)
    end
  end

  it "takes DIR relative to the start directory, and a symlink to DIR" do
    with_app do |tmp, app|
      main = File.join(app, "main.rb")
      File.symlink(app, File.join(tmp, "link"))
      relative = top(app, "app_root:app", chdir: tmp)
      expect([relative.fetch(:top), relative.fetch(:root)]).to eq([keep_line(main), app])
      # The link resolves to DIR: files named through the real path are under it.
      linked = top(app, "app_root:link", chdir: tmp)
      expect([linked.fetch(:top), linked.fetch(:root)]).to eq([keep_line(main), File.join(tmp, "link")])
      # And files named through the link are under DIR as given.
      through = top(app, "app_root:#{File.join(tmp, 'link')}", script: File.join(tmp, "link", "main.rb"))
      expect(through.fetch(:top)).to eq(keep_line(File.join(tmp, "link", "main.rb")))
      # A directory beside DIR whose name only starts like it is not under it.
      Dir.mkdir(File.join(tmp, "ap"))
      beside = top(app, "app_root:#{File.join(tmp, 'ap')}")
      expect(beside.fetch(:top)).to eq(StacksSpecHelpers::DOC_STORE_LINE)
    end
  end

  it "takes a main script named relatively against the start directory, after the program chdirs" do
    with_app do |tmp, app|
      v = top(app, "app_root:app", chdir: tmp, script: "app/main.rb", script_args: ["chdir"])
      expect(v.fetch(:top)).to eq(keep_line("app/main.rb"))
      v = top(app, "app_root:#{app}", chdir: app, script: "main.rb", script_args: ["chdir"])
      expect(v.fetch(:top)).to eq(keep_line("main.rb"))
      # The file names are what is compared, not where the program is now.
      v = top(app, "", chdir: app, script: "main.rb", script_args: ["chdir"])
      expect(v.fetch(:top)).to eq(StacksSpecHelpers::DOC_STORE_LINE)
    end
  end

  APP_ROOT_RUNTIME = <<~RUBY
    require "doc_store"
    require "mwrap"
    DocStore.parse("warm,up") # the library's call sites allocate their caches once
    GC.disable
    lib = -> { Mwrap[#{StacksSpecHelpers::DOC_STORE_LINE.dump}]&.total.to_i }
    before = lib.call
    Dir.chdir(ARGV[1]) if ARGV[1]
    Mwrap.app_root = ARGV[0]
    show :root, Mwrap.app_root
    200.times { |i| DocStore.parse("a\#{i},b,c") }; with_root = __LINE__
    show :lib_with_root, lib.call - before
    show :with_root, Mwrap["\#{__FILE__}:\#{with_root}"].total
    Mwrap.app_root = nil
    show :off, Mwrap.app_root
    200.times { |i| DocStore.parse("a\#{i},b,c") }; without_root = __LINE__
    show :lib_without_root, lib.call - before
    # The line's own allocations, if any: whether Ruby adds a heap page
    # (or a cache) while it runs depends on what ran before, and with
    # none the line was never a location (nil: 0).
    show :without_root, Mwrap["\#{__FILE__}:\#{without_root}"]&.total.to_i
    ["/nonexistent/app_root_dir", __FILE__].each do |bad|
      Mwrap.app_root = bad
    rescue ArgumentError => e
      show bad == "/nonexistent/app_root_dir" ? :missing : :file, [e.message, Mwrap.app_root]
    end
  RUBY

  def runtime(dir, name: "runtime.rb", **opts)
    stack_values(APP_ROOT_RUNTIME, dir: dir, name: name, **opts).last
  end

  it "is set at run time with Mwrap.app_root = dir, turned off with nil, and refuses a missing dir naming it" do
    with_app do |_, app|
      v = runtime(app, mwrap: "", script_args: [app])
      expect(v.fetch(:root)).to eq(app)
      expect(v.fetch(:lib_with_root)).to eq(0)
      expect(v.fetch(:with_root)).to be > 200 * 3 * 50
      expect(v.fetch(:off)).to be_nil
      expect(v.fetch(:lib_without_root)).to be > 200 * 3 * 50
      expect(v.fetch(:without_root)).to be < 200 * 3 * 50 / 4
      message, root = v.fetch(:missing)
      expect(message).to include("/nonexistent/app_root_dir")
      expect(root).to be_nil # the refused one does not replace it
      expect(v.fetch(:file)[0]).to include("Not a directory")
    end
  end

  it "takes files named relatively against the start directory when set at run time after a chdir" do
    with_app do |_, app|
      v = runtime(app, name: "runtime.rb", mwrap: "", chdir: app, script: "runtime.rb", script_args: [app, "/"])
      expect(v.fetch(:lib_with_root)).to eq(0)
      expect(v.fetch(:with_root)).to be > 200 * 3 * 50
    end
  end

  it "says in one stderr line that MWRAP=app_root names no directory, and runs without it" do
    Dir.mktmpdir do |dir|
      _, r = run_stacks("require 'mwrap'\np Mwrap.recording\n", dir: dir, mwrap: "app_root:/nonexistent/mwrap_root",
                                                                stderr: :any)
      expect(r.stderr.lines.size).to eq(1), r.stderr
      expect(r.stderr).to match(%r{\Amwrap: .*app_root "/nonexistent/mwrap_root": No such file or directory\n\z})
      expect(r.stdout).to eq("{:bt=>0, :ruby_bt=>0, :app_root=>nil}\n")
    end
  end
end
