# frozen_string_literal: true

require "digest"
require "fileutils"
require "tmpdir"
require_relative "spec_process"

# Compiles the specs' C (and C++) helpers: the fake preload, the torture
# native helpers, the growth examples' native leak, snippets in specs. Each
# source and flag set is compiled once per process, into a directory of its
# own (so a library keeps its plain name, e.g. libfoo.so, which locations
# show) under one temporary directory removed at exit. Plain Ruby, no
# RSpec (rakelib/growth.rake and spec/torture/soak.rb use it too).
module CBuildCache
  # The compiler failed, or could not be run.
  class Error < StandardError; end

  # What the torture helpers are built with unless a call says otherwise.
  DEFAULT_CFLAGS = %w[-std=gnu11 -O1 -g -Wall -fno-builtin].freeze
  COMPILE_SECONDS = 300

  @lock = Mutex.new
  @built = {}

  module_function

  def cc
    ENV.fetch("CC", "gcc")
  end

  # Whether the C compiler is installed.
  def cc?
    !SpecProcess.which(cc).nil?
  end

  # The temporary directory every build goes under (one per process).
  def dir
    @lock.synchronize { @dir ||= make_dir }
  end

  # Compiles `source` (a path to an existing file, or the source text
  # itself) with `compiler` as
  #   compiler CFLAGS FLAGS [-shared -fPIC] -o OUT SOURCE LIBS
  # once per process, and returns OUT: "lib#{name}.so" when `shared`, else
  # `name` (default: the source file's name without its extension). Raises
  # Error with the compiler's message when it fails (every time it is
  # asked again, too).
  def build(source, name: nil, shared: false, compiler: cc, cflags: DEFAULT_CFLAGS, flags: [], libs: [], ext: "c")
    is_file = source.end_with?(".#{ext}") && File.file?(source)
    raise ArgumentError, "a source without a file needs name:" if name.nil? && !is_file

    name ||= File.basename(source, ".#{ext}")
    key = [is_file ? File.expand_path(source) : source, name, shared, compiler, cflags, flags, libs, ext]
    @lock.synchronize do
      @built[key] ||= compile(key, is_file, source, name, shared, compiler, [*cflags, *flags], libs, ext)
      raise @built[key] if @built[key].is_a?(Error)

      @built[key]
    end
  end

  # Like build, but nil (with a warning naming what failed) instead of an Error.
  def try_build(source, **opts)
    build(source, **opts)
  rescue Error => e
    warn "cannot build #{opts[:name] || source}: #{e.message}"
    nil
  end

  # Returns the output path, or the Error to raise (kept, so that a failed
  # build is not tried again).
  def compile(key, is_file, source, name, shared, compiler, flags, libs, ext)
    out_dir = File.join(dir_unlocked, Digest::SHA256.hexdigest(Marshal.dump(key))[0, 16])
    FileUtils.mkdir_p(out_dir)
    path = is_file ? source : File.join(out_dir, "#{name}.#{ext}").tap { |p| File.write(p, source) }
    out = File.join(out_dir, shared ? "lib#{name}.so" : name)
    cmd = [compiler, *flags, *(shared ? %w[-shared -fPIC] : []), "-o", out, path, *libs]
    r = SpecProcess.run({}, *cmd, timeout: COMPILE_SECONDS, on_timeout: :return)
    r.success? ? out : Error.new("#{cmd.join(' ')} failed:\n#{r.timed_out ? r.describe : r.stderr}")
  rescue SystemCallError => e
    Error.new("cannot run #{compiler}: #{e.message}")
  end

  def dir_unlocked
    @dir ||= make_dir
  end

  def make_dir
    path = Dir.mktmpdir("mwrap-spec-build")
    owner = Process.pid
    at_exit { FileUtils.rm_rf(path) if Process.pid == owner } # not in forked children
    path
  end
  private_class_method :compile, :dir_unlocked, :make_dir
end
