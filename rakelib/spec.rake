# frozen_string_literal: true

require "rbconfig"

desc "Run the RSpec suite (after compile)"
task spec: :compile do
  rspec = ENV.fetch("RSPEC", "rspec")
  args = ["-I", "spec", "--format", ENV.fetch("SPEC_FORMAT", "progress")]
  args.concat(ENV["SPEC"].split) if ENV["SPEC"]
  sh(RbConfig.ruby, "-S", rspec, *args)
end
