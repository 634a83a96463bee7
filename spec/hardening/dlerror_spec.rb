# frozen_string_literal: true

require_relative "hardening_helper"

# Item 9: a dlerror() message leaking into programs. The preload looks up
# Ruby's functions with dlsym at start-up; in a program without Ruby they
# fail, and the baseline left the last failure ("…: undefined symbol:
# ruby_current_ec") for the program's own dlerror(), even after the
# program's dlopen succeeded.
RSpec.describe "hardening: no dlerror() message leaks into the program" do
  include HardeningHelpers

  before do
    require_preload!
    need_cc!
  end

  {
    "dlopen" => "after a dlopen(\"libm.so.6\", RTLD_NOW) that succeeds (the loader's malloc starts the preload)",
    "malloc" => "after the program's first malloc"
  }.each do |mode, label|
    it "has dlerror() return NULL #{label}" do
      prog = native("dlerror_clean", libs: ["-ldl"])
      plain = without_preload(prog, mode)
      expect([plain.stdout, plain.stderr, plain.exitstatus]).to eq(["dlerror: none\n", "", 0]), plain.describe
      r = with_preload(prog, mode)
      expect([r.stdout, r.stderr, r.exitstatus]).to eq(["dlerror: none\n", "", 0]), r.describe
    end
  end
end
