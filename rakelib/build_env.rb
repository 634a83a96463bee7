# frozen_string_literal: true

require "rbconfig"

# Shared by the rake tasks: where cargo is and where it puts things.
module MwrapBuild
  ROOT = File.expand_path("..", __dir__)
  LIB_DIR = File.join(ROOT, "lib", "mwrap")

  module_function

  def cargo
    @cargo ||= begin
      candidates = [ENV["CARGO"], "cargo", File.join(Dir.home, ".cargo", "bin", "cargo")].compact
      candidates.find { |c| c.include?("/") ? File.executable?(c) : which(c) } or
        abort "cargo not found (looked at $CARGO, PATH and ~/.cargo/bin): install Rust from https://rustup.rs"
    end
  end

  def which(cmd)
    ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).any? { |d| File.executable?(File.join(d, cmd)) }
  end

  def target_dir
    ENV.fetch("CARGO_TARGET_DIR", File.join(ROOT, "target"))
  end

  def extension_so
    File.join(target_dir, "release", "libmwrap_ext.so")
  end

  def preload_so
    File.join(target_dir, "preload", "libmwrap_preload.so")
  end

  # rb-sys's build script finds Ruby through $RUBY.
  def cargo_env
    { "RUBY" => RbConfig.ruby }
  end

  def cargo!(*args)
    Dir.chdir(ROOT) { sh_env(cargo_env, cargo, *args) }
  end

  def sh_env(env, *cmd)
    puts cmd.join(" ")
    system(env, *cmd) or abort "command failed (#{$?.exitstatus}): #{cmd.join(' ')}"
  end
end
