# frozen_string_literal: true

require_relative "stacks_helper"

# Native frames are named from .symtab (static functions too) and, with
# DWARF line information, end with " at file.c:LINE", the line of the call.
RSpec.describe "native frame names" do
  before(:all) { require_preload! }

  DWARF_SOURCE = <<~C
    #include <stdlib.h>
    static void *kept[64];
    static int n;

    __attribute__((noinline)) static void *static_grab(size_t size)
    {
    	void *p = malloc(size); /* the malloc */
    	kept[n++ & 63] = p;
    	return p;
    }

    void *helper_alloc(void) { return static_grab(54321); }
  C

  DWARF_SCRIPT = <<~RUBY
    require "fiddle"
    f = Fiddle::Function.new(Fiddle.dlopen(ARGV[0])["helper_alloc"], [], Fiddle::TYPE_VOIDP)
    f.call
    require "mwrap"
    show :native, Mwrap.each_stack(50_000).select { |row| row[3] == 54_321 }.map { |row| row[2] }
  RUBY

  def native_frames(name, cflags)
    lib = CBuildCache.build(DWARF_SOURCE, name: name, shared: true, cflags: cflags)
    Dir.mktmpdir { |dir| stack_values(DWARF_SCRIPT, dir: dir, mwrap: "bt:8", script_args: [lib]).last.fetch(:native) }
  end

  it "names a static function with -g -O0 and ends with the malloc call's file and line" do
    frames = native_frames("dwarfhelper", %w[-g -O0 -fno-builtin])
    expect(frames.size).to eq(1)
    line = line_of(DWARF_SOURCE, "/* the malloc */")
    expect(frames[0][0]).to match(%r{/libdwarfhelper\.so\(static_grab\+0x\h+\) \[0x\h+\] at (.*/)?dwarfhelper\.c:#{line}\z})
    expect(frames[0][1]).to match(/\(helper_alloc\+0x\h+\) \[0x\h+\] at (.*\/)?dwarfhelper\.c:#{line_of(DWARF_SOURCE, 'static_grab(54321)')}\z/)
  end

  it "names a static function from .symtab alone, without ` at`" do
    frames = native_frames("symtabhelper", %w[-O0 -fno-builtin])
    expect(frames.size).to eq(1)
    expect(frames[0][0]).to match(%r{/libsymtabhelper\.so\(static_grab\+0x\h+\) \[0x\h+\]\z})
    expect(frames[0].first(2).join).not_to include(" at ")
  end
end
