# frozen_string_literal: true

require "open3"
require "rbconfig"
require "tmpdir"
require "fileutils"

# Helpers to run real processes under the built preload library.
module MwrapSpecHelpers
  ROOT = File.expand_path("..", __dir__)
  LIB = File.join(ROOT, "lib")
  EXE = File.join(ROOT, "exe", "mwrap")
  EXAMPLES = File.join(ROOT, "examples")
  TARGET = ENV.fetch("CARGO_TARGET_DIR", File.join(ROOT, "target"))

  Result = Struct.new(:stdout, :stderr, :status) do
    def success?
      status.success?
    end

    def exitstatus
      status.exitstatus
    end
  end

  # One line of a dump: "%16zu %12zu %s\n".
  DumpRow = Struct.new(:total, :allocations, :location)
  DUMP_LINE = /\A *(\d+) +(\d+) (.*)\n?\z/.freeze

  module_function

  # The extension `-I lib` loads (built by `rake compile`).
  def built_extension
    File.join(LIB, "mwrap", "mwrap_ext.so")
  end

  # The preload library specs run under: $MWRAP_PRELOAD_SO, else the copy
  # `rake compile` puts in lib/mwrap, else cargo's output.
  def built_preload
    [ENV["MWRAP_PRELOAD_SO"], File.join(LIB, "mwrap", "libmwrap_preload.so"),
     File.join(TARGET, "preload", "libmwrap_preload.so")].compact.find { |f| File.file?(f) }
  end

  def require_extension!
    return if File.file?(built_extension)

    raise "#{built_extension} is missing: run `rake compile` first"
  end

  def require_preload!
    require_extension!
    return if built_preload

    raise "libmwrap_preload.so is not built (looked in lib/mwrap and #{TARGET}/preload): " \
          "run `rake compile` first"
  end

  # Environment for every child: nothing inherited that would change what
  # the preload sees or records.
  def clean_env(env = {})
    { "LD_PRELOAD" => nil, "MWRAP" => nil, "RUBYOPT" => nil, "RUBYLIB" => nil }.merge(env)
  end

  def capture(env, *cmd, stdin_data: "", chdir: ROOT)
    out, err, status = Open3.capture3(clean_env(env), *cmd, stdin_data: stdin_data, chdir: chdir)
    Result.new(out, err, status)
  end

  # Runs `ruby -I lib ARGS...` with LD_PRELOAD=`preload` (the built
  # preload unless given; nil runs without any preload).
  def run_ruby(*args, env: {}, preload: :built)
    preload = built_preload if preload == :built
    capture({ "LD_PRELOAD" => preload }.merge(env), RbConfig.ruby, "-I", LIB, *args)
  end

  # Writes `code` to `dir/name` and runs it like run_ruby; the script's
  # locations are then "#{path}:LINE".
  def run_script(code, dir:, name: "script.rb", **opts)
    path = File.join(dir, name)
    File.write(path, code)
    [path, run_ruby(path, **opts)]
  end

  # Runs exe/mwrap with `args` (the dev tree's lib is on its $LOAD_PATH).
  def run_mwrap(*args, env: {})
    capture(env, RbConfig.ruby, EXE, *args)
  end

  # Parses dump text (or the file at `path:`) into DumpRows; raises on a
  # line that does not have the dump format.
  def parse_dump(text = nil, path: nil)
    text = File.read(path) if path
    text.each_line.map do |line|
      m = DUMP_LINE.match(line) or raise "not a dump line: #{line.inspect}"
      DumpRow.new(m[1].to_i, m[2].to_i, m[3])
    end
  end

  # Builds the fake preload (ext/mwrap-abi/examples/fake_preload.rs,
  # written against the ABI crate's own types) once per run; nil without
  # cargo.
  def fake_preload
    return @fake_preload if defined?(@fake_preload)

    cargo = [ENV["CARGO"], "cargo", File.join(Dir.home, ".cargo", "bin", "cargo")].compact.find do |c|
      c.include?("/") ? File.executable?(c) : system("command -v #{c} >/dev/null 2>&1")
    end
    so = File.join(TARGET, "release", "examples", "libfake_preload.so")
    _, err, status = Open3.capture3({ "CARGO_TARGET_DIR" => TARGET }, cargo, "build", "--locked", "--release",
                                    "-p", "mwrap-abi", "--example", "fake_preload", chdir: ROOT)
    warn "cannot build the fake preload: #{err}" unless status.success?
    @fake_preload = status.success? ? so : nil
  rescue SystemCallError, TypeError => e
    warn "cannot build the fake preload: #{e.message}"
    @fake_preload = nil
  end
end

RSpec.configure do |config|
  config.include MwrapSpecHelpers
  config.expect_with(:rspec) { |c| c.syntax = :expect }
  config.disable_monkey_patching!
  config.order = :defined
end
Dir[File.join(__dir__, "support", "*.rb")].sort.each { |f| require f }
