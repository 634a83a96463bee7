# frozen_string_literal: true

# Compiles 10,000 methods from a template, as a template engine does, and
# asks where their instruction sequences' memory is: Mwrap.iseq_memory
# groups live iseqs by the path they were compiled under and their first
# line. It needs no preload; under one, the module_eval line's live bytes
# are shown next to it.
#
#   ruby -I lib examples/iseq_memory.rb
#   mwrap ruby examples/iseq_memory.rb
require "mwrap"

module Views; end
10_000.times { |i| Views.module_eval("def row#{i}; [#{i}].sum; end", "tmpl.erb", 1) }
compile_line = "#{__FILE__}:#{__LINE__ - 1}"
eval("def helper; end")
GC.start

memory = Mwrap.iseq_memory # { "path:first_lineno" => [bytes, count] }
puts "     bytes  iseqs path:first_lineno"
memory.max_by(3) { |_, (bytes, _)| bytes }.each do |where, (bytes, count)|
  puts format("%10d %6d %s", bytes, count, where)
end
puts format("%10d %6d %s", *memory["(eval):1"], "(eval):1")
puts "#{Mwrap[compile_line].live_bytes} bytes live from #{compile_line}" if Mwrap.preloaded?
