# frozen_string_literal: true

require_relative "lib/mwrap/version"

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
  files = if File.exist?(File.join(root, ".git"))
            # Tracked files plus new ones not ignored, so a fresh checkout
            # with uncommitted files still builds a complete gem.
            IO.popen(%w[git ls-files -z --cached --others --exclude-standard], chdir: root, &:read)
              .split("\0")
          else
            Dir.glob("**/*", File::FNM_DOTMATCH, base: root)
          end
  s.files = files.uniq.select do |f|
    f.match?(wanted) && !f.match?(%r{(?:\A|/)target/|\Aext/mwrap/(?:Makefile|mkmf\.log|\.gem\.)}) &&
      File.file?(File.join(root, f))
  end.sort

  s.bindir = "exe"
  s.executables = ["mwrap"]
  s.require_paths = ["lib"]
  s.extensions = ["ext/mwrap/extconf.rb"]
end
