# frozen_string_literal: true

require_relative "hardening_helper"

# Item 15: glibc's __libc_malloc family mixed with malloc/free. The
# baseline interposed only the standard names, so a block from
# __libc_malloc (no header) reached our free, or one of ours reached
# __libc_free: "free(): invalid pointer", SIGABRT.
RSpec.describe "hardening: __libc_malloc and friends mixed with malloc and free" do
  include HardeningHelpers

  before do
    require_preload!
    need_cc!
  end

  let(:prog) { native("libc_aliases", flags: ["-rdynamic"]) }
  let(:tmp) { Dir.mktmpdir("mwrap-hardening-libc") }
  after { FileUtils.rm_rf(tmp) }

  it "mixes __libc_malloc/calloc/realloc/memalign/free with the standard functions, as without the preload" do
    plain = without_preload(prog)
    expect([plain.stdout, plain.stderr, plain.exitstatus]).to eq(["mixed: 10 ok\n", "", 0]), plain.describe
    path = File.join(tmp, "dump.txt")
    r = with_preload(prog, env: { "MWRAP" => "dump_path:#{path}" })
    expect([r.stdout, r.stderr, r.exitstatus]).to eq(["mixed: 10 ok\n", "", 0]), r.describe
    # main's 14 allocating calls, both families (a realloc counts as an
    # allocation of its new size): 4 × 100 + 50 + 5000 + 50 + 5000 + 200 +
    # 10 + 20,000 + 512 + 8 + 30 bytes.
    mine = dump_rows(File.read(path)).select { |row| row.location.include?("(main+0x") }
    expect([mine.sum(&:total), mine.sum(&:allocations)]).to eq([31_260, 14])
  end
end
