# frozen_string_literal: true

require "fileutils"

# A script that keeps 3 MB at its line 2 and serves its endpoint until its
# stdin closes, and `mwrapctl proxy` in front of such endpoints: what the
# mwrapctl and browser specs start. Needs spec_helper.rb.
module EndpointHelpers
  CTL = File.expand_path("../../exe/mwrapctl", __dir__)

  # Yields [child, pid, socket directory, script path] while the script
  # serves; `mwrap` is added to MWRAP after socket_dir.
  def serving_leak(dir, mwrap: nil)
    script = File.join(dir, "leak.rb")
    File.write(script, "keep = []\n300.times { keep << 'x' * 10_000 } # leak\n" \
                       "$stdout.puts 'ready'\n$stdout.flush\n$stdin.read\n")
    sockets = File.join(dir, "sockets")
    env = { "LD_PRELOAD" => built_preload, "MWRAP" => ["socket_dir:#{sockets}", mwrap].compact.join(",") }
    SpecProcess.open(env, RbConfig.ruby, script, timeout: 120) do |child|
      expect(child.gets(20)).to eq("ready\n")
      pid = Integer(Dir.children(sockets).first[/\A\d+/])
      yield child, pid, sockets, script
      child.close_stdin
    end
  end

  # Yields the port of `mwrapctl proxy sockets --listen 127.0.0.1:0`.
  def proxying(sockets)
    SpecProcess.open({}, RbConfig.ruby, CTL, "proxy", sockets, "--listen", "127.0.0.1:0", timeout: 120) do |proxy|
      port = Integer(proxy.gets(20)[%r{\Alistening on http://127\.0\.0\.1:(\d+)/\n\z}, 1])
      yield port
      proxy.kill_unless_done
    end
  end
end

RSpec.configure do |config|
  config.include EndpointHelpers
end
