# frozen_string_literal: true

require "rbconfig"
require "tmpdir"
require "fileutils"
require_relative "support/spec_process"
require_relative "support/c_build_cache"

# Helpers to run real processes under the built preload library. Every
# process goes through SpecProcess.run: with a clean environment and a time
# limit (SpecProcess::DEFAULT_TIMEOUT unless `timeout:` says otherwise).
module MwrapSpecHelpers
  ROOT = SpecProcess::ROOT
  LIB = File.join(ROOT, "lib")
  EXE = File.join(ROOT, "exe", "mwrap")
  EXAMPLES = File.join(ROOT, "examples")
  TARGET = ENV.fetch("CARGO_TARGET_DIR", File.join(ROOT, "target"))

  # What a child did (stdout, stderr, status, timed_out, seconds, ...).
  Result = SpecProcess::Result

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
    SpecProcess.clean_env(env)
  end

  # The path of a program on PATH, or nil.
  def which(name)
    SpecProcess.which(name)
  end

  # Runs `cmd` with `env` (over clean_env) and returns its Result; raises
  # SpecProcess::TimedOut, naming the command and showing its output and
  # stacks, when it outlives `timeout` seconds. Other options go to
  # Process.spawn: `7 => 7` or `3 => file` passes a descriptor to the child
  # (stdin, stdout and stderr are SpecProcess's pipes).
  def capture(env, *cmd, stdin_data: "", chdir: ROOT, timeout: SpecProcess::DEFAULT_TIMEOUT, **spawn_opts)
    SpecProcess.run(env, *cmd, stdin_data: stdin_data, chdir: chdir, timeout: timeout, **spawn_opts)
  end

  # The LD_PRELOAD value for `preload`: :built (the built preload), nil
  # (none), a path, or a list of those (joined with ":").
  def preload_value(preload)
    return preload.map { |p| preload_value(p) }.join(":") if preload.is_a?(Array)

    preload == :built ? built_preload : preload
  end

  # [env, command] running `ruby RUBY_OPTS -I lib ARGS...` under `preload`
  # (see preload_value), `env` on top.
  def ruby_command(args, preload: :built, env: {}, ruby_opts: [])
    [{ "LD_PRELOAD" => preload_value(preload) }.merge(env), [RbConfig.ruby, *ruby_opts, "-I", LIB, *args]]
  end

  # Runs `ruby -I lib ARGS...` with LD_PRELOAD=`preload` (the built
  # preload unless given; nil runs without any preload).
  def run_ruby(*args, env: {}, preload: :built, timeout: SpecProcess::DEFAULT_TIMEOUT)
    child_env, cmd = ruby_command(args, preload: preload, env: env)
    capture(child_env, *cmd, timeout: timeout)
  end

  # Writes `code` to `dir/name` and runs it like run_ruby; the script's
  # locations are then "#{path}:LINE".
  def run_script(code, dir:, name: "script.rb", **opts)
    path = File.join(dir, name)
    File.write(path, code)
    [path, run_ruby(path, **opts)]
  end

  # Runs exe/mwrap with `args` (the dev tree's lib is on its $LOAD_PATH).
  def run_mwrap(*args, env: {}, timeout: SpecProcess::DEFAULT_TIMEOUT)
    capture(env, RbConfig.ruby, EXE, *args, timeout: timeout)
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
  # written against the ABI crate's own types) once per run; nil (with a
  # warning) without cargo.
  # The path of the fake preload; raises (failing the example, never
  # skipping it) when cargo cannot build it: cargo built the extension too.
  def fake_preload
    built = MwrapSpecHelpers.fake_preload_once
    raise built if built.is_a?(RuntimeError)

    built
  end

  # The module keeps it: examples call fake_preload on an instance each.
  def self.fake_preload_once
    return @fake_preload if defined?(@fake_preload)

    @fake_preload = build_fake_preload
  end

  def self.build_fake_preload
    candidates = [ENV["CARGO"], "cargo", File.join(Dir.home, ".cargo", "bin", "cargo")].compact
    cargo = candidates.filter_map { |c| which(c) }.first
    r = cargo && capture({ "CARGO_TARGET_DIR" => TARGET }, cargo, "build", "--locked", "--release",
                         "-p", "mwrap-abi", "--example", "fake_preload", timeout: 600)
    return File.join(TARGET, "release", "examples", "libfake_preload.so") if r&.success?

    RuntimeError.new("cannot build the fake preload (ext/mwrap-abi/examples/fake_preload.rs): " \
                     "#{r ? r.describe : "no cargo among #{candidates.join(', ')}"}")
  end
end

RSpec.configure do |config|
  config.include MwrapSpecHelpers
  config.expect_with(:rspec) { |c| c.syntax = :expect }
  config.disable_monkey_patching!
  config.order = :defined
end
Dir[File.join(__dir__, "support", "*.rb")].sort.each { |f| require f }
