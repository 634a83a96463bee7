# frozen_string_literal: true

require "fileutils"
require "rbconfig"

# Shared by the rake tasks: where cargo is, where things are built, and the
# one build path (ext/mwrap/extconf.rb's Makefile) that `rake compile` and
# `gem install` both drive.
module MwrapBuild
  ROOT = File.expand_path("..", __dir__)
  LIB_DIR = File.join(ROOT, "lib", "mwrap")
  EXTCONF = File.join(ROOT, "ext", "mwrap", "extconf.rb")
  # `rake compile` runs extconf.rb and make here (tmp/ is gitignored).
  BUILD_DIR = File.join(ROOT, "tmp", "ext")
  # `rake gem:vendor` puts every crate from Cargo.lock here (gitignored);
  # mwrap.gemspec ships it, extconf.rb builds from it offline.
  VENDOR_DIR = File.join(ROOT, "vendor")
  VENDOR_CRATES = File.join(VENDOR_DIR, "crates")
  # The Cargo.lock the vendored crates were made from: the gemspec refuses
  # a vendor dir whose copy differs from ./Cargo.lock.
  VENDOR_LOCK = File.join(VENDOR_DIR, "Cargo.lock")
  PKG_DIR = File.join(ROOT, "pkg")
  LIBRARIES = %w[mwrap_ext.so libmwrap_preload.so].freeze

  module_function

  def cargo
    @cargo ||= begin
      candidates = [ENV["CARGO"], "cargo", File.join(Dir.home, ".cargo", "bin", "cargo")].compact
      found = candidates.lazy.map { |c| c.include?("/") ? (File.expand_path(c) if File.executable?(c)) : which(c) }
                        .find(&:itself)
      found or abort "cargo not found (looked at $CARGO, PATH and ~/.cargo/bin): install Rust from https://rustup.rs"
    end
  end

  # The full path of cmd on PATH, or nil.
  def which(cmd)
    ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).map { |d| File.join(d, cmd) }
       .find { |path| File.file?(path) && File.executable?(path) }
  end

  def make
    ENV["MAKE"] || "make"
  end

  # rb-sys's build script finds Ruby through $RUBY.
  def cargo_env
    { "RUBY" => RbConfig.ruby }
  end

  def cargo!(*args)
    sh_env(cargo_env, cargo, *args, chdir: ROOT)
  end

  # `cargo SUBCOMMAND --locked ARGS…`: every cargo command that resolves
  # dependencies runs with --locked, so Cargo.lock is never rewritten.
  def cargo_locked!(subcommand, *args)
    cargo!(subcommand, "--locked", *args)
  end

  # Both libraries into lib/mwrap/, through the Makefile extconf.rb writes:
  # the same `ruby extconf.rb`, `make`, `make install` as `gem install`,
  # with sitearchdir pointed at lib/. The Makefile's install copies each
  # library to a temporary name and renames it (a process may have the old
  # file mapped).
  def compile!
    FileUtils.mkdir_p(BUILD_DIR)
    sh_env({ "CARGO" => cargo }, RbConfig.ruby, EXTCONF, chdir: BUILD_DIR)
    lib = File.join(ROOT, "lib")
    sh_env({}, make, "all", "install", "sitearchdir=#{lib}", "sitelibdir=#{lib}", "DESTDIR=", chdir: BUILD_DIR)
    LIBRARIES.each do |name|
      path = File.join(LIB_DIR, name)
      abort "compile: make install did not produce #{path}" unless File.file?(path)
    end
  end

  def sh_env(env, *cmd, chdir: nil)
    shown = env.filter_map { |k, v| "#{k}=#{v}" unless v.nil? }
    puts [(chdir && "(cd #{chdir})"), *shown, *cmd].compact.join(" ")
    opts = chdir ? { chdir: chdir } : {}
    system(env, *cmd, **opts) or abort "command failed (#{$?.exitstatus}): #{cmd.join(' ')}"
  end
end
