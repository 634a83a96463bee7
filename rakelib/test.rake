# frozen_string_literal: true

require "open3"
require "rbconfig"
require "tmpdir"
require_relative "build_env"
require_relative "gem_build"

# Installs a built gem into a temporary GEM_HOME and profiles the gem's own
# copy of examples/fiddle_leak.rb with the installed `mwrap`.
module MwrapGemTest
  module_function

  # `unshare -n` (a new network namespace: no interface but a down
  # loopback) needs root or CAP_SYS_ADMIN. Without it the offline claim
  # cannot be checked, so this fails rather than skips.
  def require_unshare!(task)
    out, status = Open3.capture2e("unshare", "-n", "true")
    return if status.success?

    abort "#{task}: `unshare -n true` failed (#{out.strip}). This test installs the source gem inside a " \
          "network namespace with no network, to prove it builds offline; that needs util-linux's unshare " \
          "and root (or CAP_SYS_ADMIN). CI runs as root."
  rescue Errno::ENOENT
    abort "#{task}: the `unshare` command (util-linux) is not installed; it is needed to install the " \
          "source gem with no network"
  end

  # PATH without any directory holding cargo, rustc or rustup.
  def path_without_rust
    dirs = ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).reject do |dir|
      %w[cargo rustc rustup].any? { |cmd| File.executable?(File.join(dir, cmd)) }
    end
    %w[ruby gem].each do |cmd|
      next if dirs.any? { |d| File.executable?(File.join(d, cmd)) }

      abort "test:native_gem: cannot hide cargo from PATH: #{cmd} is only in a directory that also holds cargo or rustc"
    end
    dirs.join(File::PATH_SEPARATOR)
  end

  # Runs gem install, streaming its output; returns that output.
  def install!(env, gem, via: [])
    cmd = [*via, Gem.ruby, "-S", "gem", "install", "--local", "--no-document", gem]
    puts cmd.join(" ")
    out = +""
    status = Open3.popen2e(env, *cmd) do |stdin, output, wait|
      stdin.close
      output.each_line { |line| print line; out << line }
      wait.value
    end
    abort "gem install of #{gem} failed (#{status.exitstatus})" unless status.success?
    out
  end

  # The installed gem's spec, read by a Ruby that sees only that GEM_HOME.
  def installed_spec(env)
    script = 'spec = Gem::Specification.find_by_name("mwrap"); ' \
             "print Marshal.dump([spec.full_name, spec.platform.to_s, spec.extensions, " \
             "spec.required_ruby_version.to_s, spec.gem_dir])"
    out, err, status = Open3.capture3(env, RbConfig.ruby, "-e", script)
    abort "cannot read the installed mwrap spec: #{err}" unless status.success?
    Marshal.load(out) # rubocop:disable Security/MarshalLoad
  end

  # Profiles the installed example with the installed `mwrap` and checks
  # the leak's line is charged its 100 MB; checks the installed extension
  # loads under the preload, and that Mwrap.preload_path is `preload`
  # (or, when nil, some file inside gem_home).
  def smoke!(env, gem_home, gem_dir, preload: nil)
    mwrap = File.join(gem_home, "bin", "mwrap")
    example = File.join(gem_dir, "examples", "fiddle_leak.rb")
    Dir.mktmpdir("mwrap-smoke") do |tmp|
      dump = File.join(tmp, "dump.txt")
      run_env = env.merge("MWRAP" => "dump_path:#{dump},dump_min:1048576", "LD_PRELOAD" => nil,
                          "RUBYLIB" => nil, "RUBYOPT" => nil)
      MwrapBuild.sh_env(run_env, mwrap, RbConfig.ruby, example, chdir: tmp)

      probe = 'require "mwrap"; print Mwrap.preloaded?, " ", Mwrap.preload_path'
      out, err, status = Open3.capture3(run_env.merge("MWRAP" => nil), mwrap, RbConfig.ruby, "-e", probe, chdir: tmp)
      abort "installed gem: the Mwrap.preloaded? probe failed (#{status.exitstatus}): #{err}" unless status.success?
      preloaded, preload_path = out.split(" ", 2)
      abort "installed gem: Mwrap.preloaded? printed #{preloaded.inspect}, expected true" unless preloaded == "true"
      unless preload ? preload_path == preload : preload_path.start_with?(File.join(gem_home, ""))
        abort "installed gem: Mwrap.preload_path is #{preload_path}, expected #{preload || "a file in #{gem_home}"}"
      end
      puts "Mwrap.preload_path: #{preload_path}"

      malloc_line = File.readlines(example).index { |l| l =~ /\.times.*Fiddle\.malloc/ } + 1
      text = File.read(dump)
      puts text
      line = text.lines.find { |l| l.end_with?("#{example}:#{malloc_line}\n") }
      abort "installed gem: the dump does not name #{example}:#{malloc_line}" unless line
      total = Integer(line.split.first)
      abort "installed gem: #{example}:#{malloc_line} has #{total} bytes" unless total >= 102_400_000
      puts "gem smoke test: OK (#{line.strip})"
    end
  end
end

namespace :test do
  desc "cargo test for mwrap-abi, mwrap-core, mwrap-preload, mwrap-unwind, mwrap-symbols, mwrap-memory, mwrap-pprof and the extension (mwrap)"
  task :cargo do
    MwrapBuild.cargo_locked!("test", "-p", "mwrap-abi", "-p", "mwrap-core", "-p", "mwrap-preload", "-p", "mwrap-unwind",
                             "-p", "mwrap-symbols", "-p", "mwrap-memory", "-p", "mwrap-pprof", "-p", "mwrap")
  end

  desc "Build the source gem (rake gem), install it with no network (unshare -n) and an empty CARGO_HOME " \
       "into a temporary GEM_HOME, and profile examples/fiddle_leak.rb with it"
  task gem: "gem:source" do
    MwrapGemTest.require_unshare!("test:gem")
    Dir.mktmpdir("mwrap-gem") do |tmp|
      gem_home = File.join(tmp, "gem_home")
      cargo_home = File.join(tmp, "cargo_home")
      mkdir_p cargo_home
      # The gem's cargo build keeps its target dir between runs (tmp/ is
      # gitignored); a fresh clone builds it from scratch.
      env = { "GEM_HOME" => gem_home, "GEM_PATH" => gem_home, "CARGO_HOME" => cargo_home,
              "CARGO_TARGET_DIR" => File.join(MwrapBuild::ROOT, "tmp", "gem-target"),
              "CARGO" => MwrapBuild.cargo, "CARGO_NET_OFFLINE" => nil, "MWRAP_OFFLINE" => nil }
      out = MwrapGemTest.install!(env, MwrapGem.source_gem_path, via: %w[unshare -n --])
      abort "test:gem: the source gem built no extension" unless out.include?("Building native extensions")
      # Nothing fetched: cargo keeps only its lock and cache-tracking files there.
      fetched = Dir.children(cargo_home) - %w[.global-cache .package-cache .package-cache-mutate]
      abort "test:gem: cargo wrote #{fetched.join(', ')} into the empty CARGO_HOME" unless fetched.empty?

      full_name, _platform, extensions, = MwrapGemTest.installed_spec(env)
      abort "test:gem: installed #{full_name}, expected mwrap-#{Mwrap::VERSION}" unless full_name == "mwrap-#{Mwrap::VERSION}"
      abort "test:gem: the source gem has no extension to build" if extensions.empty?
      MwrapGemTest.smoke!(env, gem_home, File.join(gem_home, "gems", full_name))
    end
  end

  desc "Build the platform gem (rake native:gem), install it with no cargo on PATH, no CARGO, and an empty " \
       "HOME into a temporary GEM_HOME, and profile examples/fiddle_leak.rb with it"
  task native_gem: "native:gem" do
    Dir.mktmpdir("mwrap-native-gem") do |tmp|
      gem_home = File.join(tmp, "gem_home")
      home = File.join(tmp, "home")
      mkdir_p home
      env = { "GEM_HOME" => gem_home, "GEM_PATH" => gem_home, "HOME" => home,
              "PATH" => MwrapGemTest.path_without_rust, "CARGO" => nil, "CARGO_HOME" => nil,
              "RUSTUP_HOME" => nil, "RUSTUP_TOOLCHAIN" => nil, "CARGO_TARGET_DIR" => nil }
      found, = Open3.capture2(env, "sh", "-c", "command -v cargo rustc; true")
      abort "test:native_gem: cargo is still reachable: #{found}" unless found.strip.empty?

      out = MwrapGemTest.install!(env, MwrapGem.native_gem_path)
      abort "test:native_gem: the platform gem built an extension" if out.include?("Building native extensions")
      full_name, platform, extensions, requirement, gem_dir = MwrapGemTest.installed_spec(env)
      expected = Gem::Requirement.new(MwrapGem.ruby_abi_requirement).to_s
      unless platform == MwrapGem::PLATFORM && extensions.empty? && requirement == expected
        abort "test:native_gem: installed #{full_name}: platform #{platform.inspect}, extensions " \
              "#{extensions.inspect}, required_ruby_version #{requirement.inspect}; expected " \
              "#{MwrapGem::PLATFORM}, none, #{expected.inspect}"
      end
      puts "installed #{full_name}: no extensions, required_ruby_version #{requirement}"
      # The platform gem's lib/ is on $LOAD_PATH: Mwrap.preload_path finds the library there.
      MwrapGemTest.smoke!(env, gem_home, gem_dir, preload: File.join(gem_dir, "lib", "mwrap", "libmwrap_preload.so"))
    end
  end
end

desc "Everything CI runs: rustfmt and clippy, cargo tests, compile, specs, source gem installed offline, " \
     "platform gem installed without Rust, quick bench"
task test: [:lint, :modules, "test:cargo", :spec, "test:gem", "test:native_gem", "bench:quick"]
