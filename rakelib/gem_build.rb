# frozen_string_literal: true

require "fileutils"
require "rbconfig"
require "rubygems/package"
require_relative "build_env"
require_relative "../lib/mwrap/version"

# Builds mwrap's two gems (rakelib/gem.rake) and checks them once installed
# (rakelib/test.rake):
# - the source gem, pkg/mwrap-VERSION.gem: the cargo workspace plus every
#   crate of Cargo.lock vendored, so `gem install` builds offline;
# - the platform gem, pkg/mwrap-VERSION-x86_64-linux.gem: both compiled
#   libraries in lib/mwrap/, no extension to build, for this Ruby's ABI.
module MwrapGem
  GEMSPEC = File.join(MwrapBuild::ROOT, "mwrap.gemspec")
  PLATFORM = "x86_64-linux"
  # The source gem must stay below this (it is about 4 MB: cargo vendor's
  # output compresses well, libc's many platforms included).
  MAX_GEM_BYTES = 15 * 1024 * 1024

  module_function

  def source_gem_path
    File.join(MwrapBuild::PKG_DIR, "mwrap-#{Mwrap::VERSION}.gem")
  end

  def native_gem_path
    File.join(MwrapBuild::PKG_DIR, "mwrap-#{Mwrap::VERSION}-#{PLATFORM}.gem")
  end

  # Every crate Cargo.lock names, for whatever members the workspace has
  # (cargo vendor reads the workspace manifest), into vendor/crates; then
  # Cargo.lock's copy in vendor/, written last, so an interrupted run leaves
  # a vendor dir that the gemspec and extconf.rb refuse as stale.
  def vendor!
    FileUtils.rm_f(MwrapBuild::VENDOR_LOCK)
    cmd = [MwrapBuild.cargo, "vendor", "--locked", "--quiet", MwrapBuild::VENDOR_CRATES]
    puts cmd.join(" ")
    # cargo vendor prints a .cargo/config.toml snippet on stdout: extconf.rb
    # passes the same source replacement with --config instead.
    system(MwrapBuild.cargo_env, *cmd, chdir: MwrapBuild::ROOT, out: File::NULL) or
      abort "gem:vendor: cargo vendor --locked failed (#{$?.exitstatus}): see cargo's message above (a " \
            "Cargo.lock that no longer matches the manifests, or a crate that is neither in ~/.cargo/registry " \
            "nor reachable on crates.io)"
    FileUtils.cp(File.join(MwrapBuild::ROOT, "Cargo.lock"), MwrapBuild::VENDOR_LOCK)
    crates = Dir.children(MwrapBuild::VENDOR_CRATES).size
    puts "gem:vendor: #{crates} crates in #{MwrapBuild::VENDOR_CRATES} (#{mib(dir_bytes(MwrapBuild::VENDOR_CRATES))})"
  end

  def source_gem!
    FileUtils.mkdir_p(MwrapBuild::PKG_DIR)
    path = source_gem_path
    MwrapBuild.sh_env({}, Gem.ruby, "-S", "gem", "build", GEMSPEC, "--output", path, chdir: MwrapBuild::ROOT)
    check_size!(path)
    path
  end

  # The platform gem, from mwrap.gemspec: the compiled libraries in
  # lib/mwrap/ instead of ext/ and the crates, no extensions, and
  # required_ruby_version pinned to the Ruby whose ABI they were built for.
  def native_gem!
    check_platform!
    libs = MwrapBuild::LIBRARIES.map { |name| File.join("lib", "mwrap", name) }
    libs.each { |lib| check_library!(File.join(MwrapBuild::ROOT, lib)) }

    spec = load_spec("MWRAP_GEMSPEC_NO_VENDOR" => "1")
    spec.platform = Gem::Platform.new(PLATFORM)
    spec.extensions = []
    spec.required_ruby_version = ruby_abi_requirement
    # No Rust sources, and not mwrap.gemspec: it describes the source gem.
    spec.files = spec.files.reject do |f|
      f.start_with?("ext/", "vendor/") || f.match?(/\A(?:Cargo\.(?:toml|lock)|mwrap\.gemspec)\z/)
    end
    spec.files = (spec.files + libs).sort

    FileUtils.mkdir_p(MwrapBuild::PKG_DIR)
    path = native_gem_path
    Dir.chdir(MwrapBuild::ROOT) { Gem::Package.build(spec, false, false, path) }
    check_size!(path)
    path
  end

  # ">= 3.1", "< 3.2.dev" for a Ruby 3.1 build: the extension is built
  # against this Ruby's headers and only loads into its minor series.
  def ruby_abi_requirement
    major = Integer(RbConfig::CONFIG["MAJOR"])
    minor = Integer(RbConfig::CONFIG["MINOR"])
    [">= #{major}.#{minor}", "< #{major}.#{minor + 1}.dev"]
  end

  def check_platform!
    cpu = RbConfig::CONFIG["host_cpu"]
    os = RbConfig::CONFIG["host_os"]
    return if cpu == "x86_64" && os.start_with?("linux")

    abort "native:gem: the platform gem is built for #{PLATFORM} only, and this Ruby runs on #{cpu}-#{os} " \
          "(#{Gem::Platform.local}). Build it on an x86_64 Linux machine, or use the source gem " \
          "(`rake gem`), which compiles with cargo when installed."
  end

  # An ELF shared object for x86-64 (e_machine 62), i.e. a real compiled build.
  def check_library!(path)
    unless File.file?(path)
      abort "native:gem: #{path} is missing: the platform gem packs the compiled libraries; " \
            "run `rake compile` (native:gem normally does it first)"
    end
    header = File.binread(path, 20)
    elf = header.bytesize == 20 && header.start_with?("\x7FELF".b)
    return if elf && header.getbyte(4) == 2 && header.getbyte(16) == 3 && header.byteslice(18, 2).unpack1("v") == 62

    abort "native:gem: #{path} is not an x86-64 ELF shared library: run `rake compile` on an x86_64 Linux machine"
  end

  def check_size!(path)
    size = File.size(path)
    puts "#{File.basename(path)}: #{mib(size)}"
    return if size <= MAX_GEM_BYTES

    abort "#{path} is #{mib(size)}, above the #{mib(MAX_GEM_BYTES)} limit"
  end

  # mwrap.gemspec, evaluated afresh with ENV changed for the evaluation only
  # (Gem::Specification.load would cache it).
  def load_spec(env = {})
    saved = env.to_h { |k, _| [k, ENV[k]] }
    env.each { |k, v| ENV[k] = v }
    Dir.chdir(MwrapBuild::ROOT) do
      spec = eval(File.read(GEMSPEC), TOPLEVEL_BINDING, GEMSPEC) # rubocop:disable Security/Eval
      spec.is_a?(Gem::Specification) or abort "#{GEMSPEC} did not return a Gem::Specification"
      spec
    end
  ensure
    saved&.each { |k, v| ENV[k] = v }
  end

  def dir_bytes(dir)
    Dir.glob("**/*", File::FNM_DOTMATCH, base: dir).sum do |f|
      path = File.join(dir, f)
      File.file?(path) ? File.size(path) : 0
    end
  end

  def mib(bytes)
    format("%.1f MiB", bytes / 1024.0 / 1024.0)
  end
end
