# frozen_string_literal: true

# Writes a Makefile that builds mwrap with cargo; no mkmf, no rb_sys gem.
# It is mwrap's one build path: `gem install` runs it, and so does
# `rake compile` (in tmp/ext, then `make all install sitearchdir=lib`).
#
# RubyGems runs `ruby extconf.rb` here, then `make clean`, `make` and
# `make install` (newer RubyGems pass sitearchdir=DIR sitelibdir=DIR
# DESTDIR= on the command line; older ones only set RbConfig's sitearchdir
# through a siteconf file, which is why its value is baked in below).
#
# `make` runs, from the cargo workspace root (../.. from here; the gem holds
# the whole workspace):
#   cargo build --locked --release -p mwrap                  -> libmwrap_ext.so
#   cargo build --locked --profile preload -p mwrap-preload  -> libmwrap_preload.so
# `make install` copies them to $(sitearchdir)/mwrap/mwrap_ext.so and
# $(sitearchdir)/mwrap/libmwrap_preload.so (each to a temporary name, then
# renamed: a running process may have the old file mapped).
#
# Crates: cargo always runs with --locked (Cargo.lock is never rewritten).
# A gem built with `rake gem` carries every crate in vendor/crates (made by
# `rake gem:vendor`); then cargo builds from there with --offline and needs
# neither the network nor anything in CARGO_HOME. In a git checkout the
# vendored crates are used only when asked to build offline; otherwise
# cargo fetches from crates.io as usual.
#
# Environment: CARGO (cargo to use), CARGO_TARGET_DIR (where cargo builds;
# when unset and this is not a git checkout, a target dir next to this file
# is used and removed after `make install`; MWRAP_KEEP_TARGET=1 keeps it),
# MWRAP_CARGO_FLAGS (extra flags), MWRAP_OFFLINE=1 or CARGO_NET_OFFLINE=true
# (build offline: needs vendor/crates).

require "rbconfig"
require "json"
require "shellwords"

ext_dir = __dir__
workspace = File.expand_path("../..", ext_dir)

def executable_file?(path)
  File.file?(path) && File.executable?(path)
end

def find_cargo
  if (env = ENV["CARGO"].to_s) != ""
    return File.expand_path(env) if env.include?("/") && executable_file?(env)

    found = ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).map { |d| File.join(d, env) }
               .find { |p| executable_file?(p) }
    return found if found

    abort "mwrap: CARGO=#{env} is not an executable file"
  end
  ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).each do |dir|
    path = File.join(dir, "cargo")
    return path if executable_file?(path)
  end
  home = begin
    Dir.home
  rescue ArgumentError
    nil
  end
  home_cargo = home && File.join(home, ".cargo", "bin", "cargo")
  home_cargo if home_cargo && executable_file?(home_cargo)
end

cargo = find_cargo
unless cargo
  abort <<~MSG
    mwrap: cargo was not found (looked at $CARGO, every PATH directory and ~/.cargo/bin/cargo).
    mwrap's extension is written in Rust: install a Rust toolchain (https://rustup.rs, or
    your distribution's cargo package) and try again, or set CARGO=/path/to/cargo.
  MSG
end

%w[Cargo.toml Cargo.lock].each do |name|
  next if File.file?(File.join(workspace, name))

  abort "mwrap: #{workspace}/#{name} is missing: the gem must contain the whole cargo workspace " \
        "and its Cargo.lock (cargo runs with --locked)"
end

git_checkout = File.exist?(File.join(workspace, ".git"))
vendor_crates = File.join(workspace, "vendor", "crates")
vendor_lock = File.join(workspace, "vendor", "Cargo.lock")
offline = %w[1 true yes].include?(ENV["MWRAP_OFFLINE"].to_s.downcase) || ENV["CARGO_NET_OFFLINE"] == "true"
vendored = File.directory?(vendor_crates) && (offline || !git_checkout)

if offline && !vendored
  abort <<~MSG
    mwrap: building offline (MWRAP_OFFLINE=1 or CARGO_NET_OFFLINE=true) needs the vendored crates
    in #{vendor_crates}, which is missing.
    In a checkout of mwrap, `rake gem:vendor` makes it (cargo vendor --locked; needs crates.io once),
    and `rake gem` builds a source gem that carries it. A gem made by plain `gem build mwrap.gemspec`
    without it downloads its crates from crates.io when installed; the platform gem
    (`rake native:gem`) needs no Rust at all.
  MSG
end

if vendored && (!File.file?(vendor_lock) || File.read(vendor_lock) != File.read(File.join(workspace, "Cargo.lock")))
  abort "mwrap: #{vendor_crates} was not made from this Cargo.lock (#{vendor_lock} differs or is missing): " \
        "run `rake gem:vendor` again in the checkout, or delete #{File.dirname(vendor_crates)}"
end

target_dir = ENV["CARGO_TARGET_DIR"].to_s
clean_target = false
if target_dir.empty?
  if git_checkout
    target_dir = File.join(workspace, "target")
  else
    # Installing from a .gem: build next to this file, delete it afterwards.
    target_dir = File.join(ext_dir, "target")
    clean_target = ENV["MWRAP_KEEP_TARGET"].to_s.empty?
  end
end
target_dir = File.expand_path(target_dir)

sitearchdir = RbConfig::CONFIG["sitearchdir"]
sitelibdir = RbConfig::CONFIG["sitelibdir"]

# Make variables may not hold spaces reliably; quote for the shell.
q = ->(s) { Shellwords.escape(s) }
mk = ->(s) { s.gsub("$", "$$") }

cargo_flags = ["--locked"]
if vendored
  # Source replacement given on the command line: nothing is written to
  # CARGO_HOME or to a .cargo/config.toml of the workspace.
  cargo_flags += ["--offline",
                  "--config", 'source.crates-io.replace-with="mwrap-vendored"',
                  "--config", "source.mwrap-vendored.directory=#{JSON.generate(File.expand_path(vendor_crates))}"]
  failure_hint = "mwrap: cargo failed building offline from the vendored crates in #{vendor_crates}"
else
  failure_hint = "mwrap: cargo failed. This build fetches its crates from crates.io (no vendored crates in " \
                 "#{vendor_crates}): without network, install a gem built with `rake gem` (it carries them) " \
                 "or the platform gem built with `rake native:gem` (needs no Rust)"
end

# What to say when cargo fails, printed by the Makefile (a file, so make does
# not echo it with every cargo command).
hint_file = File.expand_path("cargo-failed.txt")
File.write(hint_file, "#{failure_hint}\n")

File.write("Makefile", <<~MAKEFILE)
  # Generated by #{File.basename(__FILE__)}: builds mwrap with cargo.
  SHELL = /bin/sh
  RUBY = #{mk.(q.(RbConfig.ruby))}
  CARGO = #{mk.(q.(cargo))}
  WORKSPACE = #{mk.(q.(workspace))}
  CARGO_TARGET_DIR = #{mk.(q.(target_dir))}
  CARGO_FLAGS = #{mk.(cargo_flags.map(&q).join(" "))} #{mk.(ENV.fetch("MWRAP_CARGO_FLAGS", ""))}
  FAILURE_HINT_FILE = #{mk.(q.(hint_file))}
  CLEAN_TARGET = #{clean_target ? 1 : 0}
  sitearchdir = #{mk.(sitearchdir)}
  sitelibdir = #{mk.(sitelibdir)}
  DESTDIR =
  INSTALL_DIR = $(DESTDIR)$(sitearchdir)/mwrap
  EXT_SO = $(CARGO_TARGET_DIR)/release/libmwrap_ext.so
  PRELOAD_SO = $(CARGO_TARGET_DIR)/preload/libmwrap_preload.so
  CARGO_ENV = RUBY=$(RUBY) CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)

  all:
  \tcd $(WORKSPACE) && $(CARGO_ENV) $(CARGO) build --release -p mwrap $(CARGO_FLAGS) || \\
  \t  { cat $(FAILURE_HINT_FILE) >&2; exit 1; }
  \tcd $(WORKSPACE) && $(CARGO_ENV) $(CARGO) build --profile preload -p mwrap-preload $(CARGO_FLAGS) || \\
  \t  { cat $(FAILURE_HINT_FILE) >&2; exit 1; }

  # Copy to a temporary name, then rename: a process may have the old file mapped.
  install: all
  \tmkdir -p "$(INSTALL_DIR)"
  \tcp $(EXT_SO) "$(INSTALL_DIR)/mwrap_ext.so.tmp$$$$" && mv -f "$(INSTALL_DIR)/mwrap_ext.so.tmp$$$$" "$(INSTALL_DIR)/mwrap_ext.so"
  \tcp $(PRELOAD_SO) "$(INSTALL_DIR)/libmwrap_preload.so.tmp$$$$" && \\
  \t  mv -f "$(INSTALL_DIR)/libmwrap_preload.so.tmp$$$$" "$(INSTALL_DIR)/libmwrap_preload.so"
  \tif [ "$(CLEAN_TARGET)" = 1 ]; then rm -rf $(CARGO_TARGET_DIR); fi

  # Never `cargo clean`: in a checkout that would throw away the dev build.
  clean:
  \t@:

  distclean: clean
  \trm -f Makefile $(FAILURE_HINT_FILE)

  .PHONY: all install clean distclean
MAKEFILE

puts "mwrap: wrote Makefile (cargo: #{cargo}, target dir: #{target_dir}, " \
     "crates: #{vendored ? "vendored in #{vendor_crates}, offline" : 'from crates.io'})"
