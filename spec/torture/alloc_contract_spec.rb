# frozen_string_literal: true

require_relative "torture_helper"

# Scenario 6: glibc's documented results and errno for the whole malloc
# family, checked by spec/torture/native/alloc_contract.c without the
# preload, under it, and under it with jemalloc underneath.
RSpec.describe "torture: allocator contract" do
  before do
    require_preload!
    skip "no C compiler (#{TortureHelpers.cc}) to build alloc_contract.c" unless TortureHelpers.cc?
  end

  let(:program) do
    TortureHelpers.compile_c(File.join(TortureHelpers::NATIVE, "alloc_contract.c"), libs: ["-ldl"])
  end

  def contract(preload)
    r = TortureHelpers.run_timed({ "LD_PRELOAD" => preload }, program, timeout: 120)
    lines = r.stdout.lines.map(&:chomp)
    failed = lines.grep(/\Anot ok/)
    checks = lines.grep(/\A(not )?ok - /)
    [r, checks, failed]
  end

  def expect_all_ok(preload, label)
    r, checks, failed = contract(preload)
    expect(failed).to eq([]), "#{label}:\n#{r.describe}"
    expect(r.success?).to be(true), "#{label}:\n#{r.describe}"
    expect(r.stdout.lines.reject { |l| l.start_with?("ok - ", "# ") }).to eq([])
    expect(checks.size).to be > 100
    TortureHelpers.note("alloc_contract", "run" => label, "checks" => checks.size, "failed" => failed.size)
    checks
  end

  it "holds without the preload (glibc itself)" do
    checks = expect_all_ok(nil, "glibc")
    expect(checks).to include(a_string_matching(/aligned_alloc\(3, 256\) with glibc/))
  end

  it "holds under the preload, with our documented aligned_alloc EINVAL" do
    checks = expect_all_ok(built_preload, "mwrap")
    expect(checks).to include(a_string_starting_with("ok - aligned_alloc(3, 256) under mwrap: NULL, EINVAL"))
  end

  it "gives the same results as glibc for every check but aligned_alloc's odd alignments" do
    _, plain, = contract(nil)
    _, ours, = contract(built_preload)
    differ = ->(l) { l.include?("aligned_alloc(") && l =~ /\((0|3|24|100|4097), 256\)/ }
    strip = ->(l) { l.sub(/ \(got .*\)\z/, "").sub(/ \(in use: .*\)\z/, "") }
    expect(ours.reject(&differ).map(&strip)).to eq(plain.reject(&differ).map(&strip))
  end

  it "holds under the preload with jemalloc underneath" do
    jemalloc = TortureHelpers.jemalloc
    skip "libjemalloc.so.2 not installed" unless jemalloc
    expect_all_ok("#{built_preload}:#{jemalloc}", "mwrap+jemalloc")
  end
end
