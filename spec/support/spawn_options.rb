# frozen_string_literal: true

# MWRAP_GC_STRESS=1 (`rake spec:gc_stress`): every Ruby process the specs
# start with run_ruby/run_script also loads gc_stress.rb, which runs every
# Mwrap method under GC.stress; so does the rspec process itself. Needs
# MwrapSpecHelpers (spec_helper.rb) loaded first.
module MwrapSpawnOptions
  GC_STRESS_HELPER = File.expand_path("gc_stress.rb", __dir__)

  def self.gc_stress?
    ENV["MWRAP_GC_STRESS"] == "1"
  end

  def run_ruby(*args, **opts)
    args = ["-r", GC_STRESS_HELPER, *args] if MwrapSpawnOptions.gc_stress?
    super(*args, **opts)
  end
end

MwrapSpecHelpers.prepend(MwrapSpawnOptions)
# module_function copies: MwrapSpecHelpers.run_ruby called on the module.
MwrapSpecHelpers.singleton_class.prepend(MwrapSpawnOptions)
require MwrapSpawnOptions::GC_STRESS_HELPER
