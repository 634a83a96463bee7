# frozen_string_literal: true

require_relative "lib/mwrap/version"

# The source gem: `gem install` builds both native libraries with cargo
# (ext/mwrap/extconf.rb). Build it with `rake gem` (alias of `rake
# gem:source`): that first vendors every crate of Cargo.lock into vendor/
# (`rake gem:vendor`), so the gem installs with no network. A plain
# `gem build mwrap.gemspec` ships vendor/ when it is there and matches
# Cargo.lock; without it the gem fetches its crates from crates.io when
# installed (and this file says so). The platform gem (`rake native:gem`)
# is made from this spec too: see rakelib/gem.rake.
Gem::Specification.new do |s|
  s.name = "mwrap"
  s.version = Mwrap::VERSION
  s.summary = "LD_PRELOAD malloc wrapper attributing memory to Ruby source lines"
  s.description = <<~DESC
    mwrap is a memory profiler for Ruby: an LD_PRELOAD library (written in
    Rust) counts every malloc, calloc, realloc and free and charges it to the
    Ruby source line -- or native caller -- that made it. Run a program under
    the `mwrap` command, then read the numbers from Ruby with `require "mwrap"`.
  DESC
  s.authors = ["mwrap contributors"]
  s.license = "MIT"
  s.required_ruby_version = ">= 3.1"

  root = __dir__
  wanted = %r{\A(?:Cargo\.(?:toml|lock)|README\.md|LICENSE[^/]*|mwrap\.gemspec|\.cargo/config\.toml|
               ext/.+|lib/.+\.rb|exe/.+|examples/.+)\z}x
  unwanted = %r{(?:\A|/)target/|\Aext/mwrap/(?:Makefile|mkmf\.log|cargo-failed\.txt|\.gem\.)}
  git_checkout = File.exist?(File.join(root, ".git"))
  files = if git_checkout
            # Tracked files plus new ones not ignored, so a fresh checkout
            # with uncommitted files still builds a complete gem.
            IO.popen(%w[git ls-files -z --cached --others --exclude-standard], chdir: root, &:read)
              .split("\0")
          else
            Dir.glob("**/*", File::FNM_DOTMATCH, base: root)
          end
  files = files.uniq.select do |f|
    f.match?(wanted) && !f.match?(unwanted) && File.file?(File.join(root, f))
  end

  # The vendored crates (gitignored; `rake gem:vendor` makes them), every
  # file, dot files too: cargo checks each against .cargo-checksum.json.
  vendor_crates = File.join(root, "vendor", "crates")
  vendor_lock = File.join(root, "vendor", "Cargo.lock")
  if ENV["MWRAP_GEMSPEC_NO_VENDOR"]
    # rake native:gem: the platform gem carries no Rust sources.
  elsif File.directory?(vendor_crates)
    unless File.file?(vendor_lock) && File.read(vendor_lock) == File.read(File.join(root, "Cargo.lock"))
      raise "mwrap.gemspec: vendor/crates was not made from this Cargo.lock (vendor/Cargo.lock differs or " \
            "is missing): run `rake gem:vendor` (or `rake gem`), or delete vendor/ for a gem that fetches " \
            "its crates from crates.io when installed"
    end
    files |= Dir.glob("vendor/crates/**/*", File::FNM_DOTMATCH, base: root)
                .select { |f| File.file?(File.join(root, f)) } + ["vendor/Cargo.lock"]
  else
    warn "mwrap.gemspec: no vendored crates (vendor/crates): a gem built from this spec fetches its crates " \
         "from crates.io when installed. `rake gem` builds one that installs offline."
  end
  s.files = files.sort

  s.bindir = "exe"
  s.executables = ["mwrap", "mwrapctl"]
  s.require_paths = ["lib"]
  s.extensions = ["ext/mwrap/extconf.rb"]
end
