# frozen_string_literal: true

require "rbconfig"

module MwrapSpecTask
  module_function

  # rspec's command line; SPEC="spec/x_spec.rb ..." runs only those files.
  def command
    args = ["-I", "spec", "--require", "spec_helper", "--require", "support/spawn_options",
            "--format", ENV.fetch("SPEC_FORMAT", "progress")]
    args.concat(ENV["SPEC"].split) if ENV["SPEC"]
    [RbConfig.ruby, "-S", ENV.fetch("RSPEC", "rspec"), *args]
  end
end

desc "Run the RSpec suite (after compile)"
task spec: :compile do
  sh(*MwrapSpecTask.command)
end

namespace :spec do
  desc "Run the RSpec suite again with every Mwrap method under GC.stress (MWRAP_GC_STRESS=1; slow, not in CI)"
  task gc_stress: :compile do
    sh({ "MWRAP_GC_STRESS" => "1" }, *MwrapSpecTask.command)
  end
end
