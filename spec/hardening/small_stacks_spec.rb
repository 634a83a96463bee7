# frozen_string_literal: true

require_relative "hardening_helper"

# Item 4: threads with small stacks. glibc takes every loaded library's
# static TLS out of each thread's stack; the baseline's 9,304 bytes of it
# left a 32 KiB-stack thread too little room for a 20 KB local array, and
# the program died of SIGSEGV.
RSpec.describe "hardening: threads with small stacks" do
  include HardeningHelpers

  before { require_preload! }

  [
    ["32k", "a 32 KiB-stack thread that uses ~20 KB of its stack, then mallocs"],
    ["min", "a PTHREAD_STACK_MIN-stack thread that mallocs"]
  ].each do |which, label|
    it "runs #{label}, as without the preload" do
      need_cc!
      prog = native("small_stacks")
      plain = without_preload(prog, which)
      expect([plain.stdout, plain.stderr, plain.exitstatus]).to eq(["#{which}: ok\n", "", 0]), plain.describe
      r = with_preload(prog, which)
      expect([r.stdout, r.stderr, r.exitstatus]).to eq(["#{which}: ok\n", "", 0]), r.describe
    end
  end

  it "has a PT_TLS segment of at most 1 KiB (readelf -lW)" do
    r = capture({}, "readelf", "-lW", preload, timeout: HardeningHelpers::TIMEOUT)
    out, err, st = r.stdout, r.stderr, r.status
    skip "readelf not available: #{err}" unless st.success?
    tls = out.lines.grep(/\A\s*TLS\s/)
    expect(tls.size).to be <= 1
    # Type Offset VirtAddr PhysAddr FileSiz MemSiz Flg Align
    memsz = tls.empty? ? 0 : Integer(tls.first.split[5])
    expect(memsz).to be <= 1024
  end
end
