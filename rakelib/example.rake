# frozen_string_literal: true

require "open3"
require "rbconfig"

desc "Run examples/fiddle_leak.rb under exe/mwrap and print the top locations (DUMP_MIN, TOP)"
task example: :compile do
  root = File.expand_path("..", __dir__)
  min = ENV.fetch("DUMP_MIN", "1048576")
  top = Integer(ENV.fetch("TOP", "10"))
  env = { "MWRAP" => "dump_fd:2,dump_min:#{min}" }
  cmd = [RbConfig.ruby, File.join(root, "exe", "mwrap"), RbConfig.ruby, File.join(root, "examples", "fiddle_leak.rb")]
  puts "MWRAP=#{env['MWRAP']} #{cmd.drop(1).join(' ')}"
  out, err, status = Open3.capture3(env, *cmd, chdir: root)
  print out
  abort "example failed (#{status.exitstatus}):\n#{err}" unless status.success?
  rows = err.each_line.filter_map do |line|
    m = /\A *(\d+) +(\d+) (.*)\n?\z/.match(line) or next $stderr.print(line)
    [Integer(m[1]), Integer(m[2]), m[3]]
  end
  puts "top #{top} locations above #{min} bytes (total bytes, allocations, location):"
  rows.sort_by { |total, _, _| -total }.first(top).each do |total, allocations, loc|
    puts format("%16d %12d %s", total, allocations, loc)
  end
end
