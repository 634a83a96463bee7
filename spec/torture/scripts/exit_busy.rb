# frozen_string_literal: true

# Part of scenario 1 (spec/torture/threads_spec.rb), run under the preload:
# the process exits with status ARGV[1] while 8 native threads and a Ruby
# thread are still allocating; its dump must still land whole (the spec
# looks for /exit-busy.rb:1). ARGV = helper.so, exit status.
require "mwrap"
require_relative "torture_native"
abort "not running under a compatible preload" unless Mwrap.preloaded?
native = TortureNative.new(ARGV[0])
native.start(8, Process.pid)
ruby_allocating = Queue.new
Thread.new do
  ruby_allocating << ("x" * 1000).size # after its first allocation
  loop { "x" * 1000 }
end
# Handshakes: exit only once every native thread and the Ruby thread allocate.
native.wait_busy(30)
ruby_allocating.pop
eval("$unique = 'u' * 77_777", TOPLEVEL_BINDING, "/exit-busy.rb", 1)
exit Integer(ARGV[1])
