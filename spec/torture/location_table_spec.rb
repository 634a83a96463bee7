# frozen_string_literal: true

require_relative "torture_helper"
require "json"

# Scenario 8 (the bounded part): native locations with unique return
# addresses. Each distinct call site is one location, calling it again adds
# none, and past the table's capacity (~1M locations) new ones are charged
# to one overflow bucket, "[mwrap: location table full]", so the table
# stops growing. The soak (spec/torture/soak.rb) runs this too.
RSpec.describe "torture: location table" do
  before do
    require_preload!
    skip "no C compiler (#{TortureHelpers.cc})" unless TortureHelpers.cc?
  end

  # The locations Mwrap.each can list when the table is full: its hard
  # ceiling of ids (ext/mwrap-core/src/sites.rs MAX_SITES), less id 1, the
  # no-memory bucket, which is listed only once something is charged to it.
  let(:max_sites) { 1024 * 1024 - 1 - 1 }

  def generated_helper(n)
    src = +"#include <stdlib.h>\n"
    n.times { |i| src << "void *site_#{i}(size_t n) { return malloc(n); }\n" }
    src << "void *(*const many_sites[])(size_t) = {\n"
    n.times { |i| src << "site_#{i},\n" }
    src << "};\n"
    src << "long many_sites_call(int rounds, size_t size) {\n  long c = 0;\n" \
           "  for (int r = 0; r < rounds; r++)\n    for (int i = 0; i < #{n}; i++) { free(many_sites[i](size)); c++; }\n" \
           "  return c;\n}\n"
    # On a thread of its own (no Ruby frames), each function's malloc is a
    # native location; a Ruby thread would charge them to its Ruby line.
    src.prepend("#include <pthread.h>\n")
    src << "struct args { int rounds; size_t size; long result; };\n" \
           "static void *run(void *p) { struct args *a = p; a->result = many_sites_call(a->rounds, a->size); return 0; }\n" \
           "long many_sites_call_in_thread(int rounds, size_t size) {\n" \
           "  struct args a = { rounds, size, -3 }; pthread_t t;\n" \
           "  if (pthread_create(&t, 0, run, &a)) return -3;\n  pthread_join(t, 0);\n  return a.result;\n}\n"
    # -O0: no tail call, so each function's malloc has a return address of its own.
    TortureHelpers.compile_c(src, name: "many_sites_#{n}", shared: true, flags: ["-O0"])
  end

  def run(kind, helper, n, rounds, timeout: 300)
    r = TortureHelpers.ruby_timed(TortureHelpers.script("many_sites"), kind, helper, n.to_s, rounds.to_s,
                                  timeout: timeout)
    expect(r.success?).to be(true), r.describe
    report = JSON.parse(r.stdout.lines.last)
    skip "run-time generated code is not supported here (#{report['unsupported']})" if report["unsupported"]
    report
  end

  it "gives each of 2,000 generated C functions one location, and calling them again adds none" do
    n = 2000
    report = run("generated", generated_helper(n), n, 3)
    report["steps"].each_with_index do |step, i|
      expect(step["own_sites"]).to eq(n)
      expect(step["own_allocations"]).to eq(n * (i + 1))
      expect(step["own_frees"]).to eq(n * (i + 1))
    end
    expect(report["steps"].map { |s| s["all_sites"] }.uniq.size).to be <= 2 # round 1 may add a Ruby line or two
    TortureHelpers.note("location_table", report)
  end

  it "gives each of 20,000 run-time generated call sites one location (x86_64)" do
    n = 20_000
    helper = TortureHelpers.compile_c(File.join(TortureHelpers::NATIVE, "jit_sites.c"), shared: true)
    report = run("jit", helper, n, 2)
    report["steps"].each_with_index do |step, i|
      expect(step["own_sites"]).to eq(n)
      expect(step["own_allocations"]).to eq(n * (i + 1))
      expect(step["overflow"]).to be_nil
    end
    TortureHelpers.note("location_table", report)
  end

  it "stops at ~1M locations and charges the rest to the overflow bucket", torture: :long do
    n = TortureHelpers.count("TORTURE_SITES", ci: 1_100_000, long: 1_100_000)
    helper = TortureHelpers.compile_c(File.join(TortureHelpers::NATIVE, "jit_sites.c"), shared: true)
    report = run("jit", helper, n, 2, timeout: 900)
    first, second = report["steps"]
    expect(first["all_sites"]).to eq(max_sites)
    expect(second["all_sites"]).to eq(max_sites)
    overflowed = n - first["own_sites"]
    expect(overflowed).to be > 0
    expect(first["overflow"][0]).to be >= overflowed
    expect(second["overflow"][0]).to be >= 2 * overflowed
    expect(second["own_sites"]).to eq(first["own_sites"])
    # Past the cap the profiler's memory stops growing: calling 1.1M sites
    # again costs (almost) nothing.
    expect(second["call_rss_growth_kb"]).to be < 8 * 1024
    TortureHelpers.note("location_table", report)
  end
end
