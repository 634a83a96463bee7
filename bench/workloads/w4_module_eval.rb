# frozen_string_literal: true

# w4: the module_eval leak: N methods of 100 `sleep` calls each, compiled
# from strings onto one module (defined, never called): instruction
# sequences that stay live. Usage: ruby w4_module_eval.rb [N]
n = Integer(ARGV.fetch(0, "10000"))
body = "sleep\n" * 100
mod = Module.new
n.times { |i| mod.module_eval("def m#{i}\n#{body}end\n", __FILE__, __LINE__) }
