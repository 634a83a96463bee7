# frozen_string_literal: true

require_relative "spawn_options"

# Helpers for the specs of the Ruby API (Mwrap[], SourceLocation, quiet,
# HeapPageBody, live_snapshot, dump, the Rack app). Needs spec_helper.rb
# loaded first.
module MwrapApiHelpers
  # The keys of Mwrap::HeapPageBody.stat, in order.
  HEAP_STAT_KEYS = %i[lifespan_max lifespan_min lifespan_mean lifespan_stddev
                      deathspan_max deathspan_min deathspan_mean deathspan_stddev resurrects].freeze

  # Runs `code` as a script under the real preload (or `preload:`) and
  # returns [path, stdout]; fails the example, showing stderr, unless the
  # script exits 0 with nothing on stderr (`stderr: :ignore` to allow it).
  def run_api(code, dir:, name: "script.rb", stderr: :empty, **opts)
    path, r = run_script(code, dir: dir, name: name, **opts)
    raise "#{name} failed (#{r.status.inspect}):\n#{r.stderr}\n--- stdout:\n#{r.stdout}" unless r.success?
    if stderr == :empty && r.stderr != ""
      raise "#{name} wrote to stderr:\n#{r.stderr}\n--- stdout:\n#{r.stdout}"
    end

    [path, r.stdout]
  end

  # True in `rake spec:gc_stress` (MWRAP_GC_STRESS=1). GC.stress itself
  # changes some numbers: the GC it forces at every allocation frees empty
  # heap pages and allocates its own memory (charged to native locations),
  # and a Ruby line may then have to allocate a new heap page header.
  def gc_stress?
    MwrapSpawnOptions.gc_stress?
  end

  # [total, allocations] of a line that made one 10001-byte String: exact,
  # or under GC.stress at most one heap page header (< 4 KiB) more.
  def one_string_line
    return eq([10_001, 1]) unless gc_stress?

    satisfy("be one 10001-byte String, plus at most a heap page header") do |(total, allocations)|
      total.between?(10_001, 10_001 + 4096) && allocations.between?(1, 2)
    end
  end

  # The 1-based number of the only line of `code` holding `marker`
  # (a comment such as "# warm").
  def line_of(code, marker)
    lines = code.lines.each_index.select { |i| code.lines[i].include?(marker) }
    raise "#{marker.inspect} is on #{lines.size} lines" unless lines.size == 1

    lines.first + 1
  end

  # The values a script printed with `show` (see SHOW), by key; other
  # output lines are ignored.
  def values(stdout)
    stdout.lines.filter_map do |line|
      m = /\A=(\w+) (\h*)\n?\z/.match(line) or next
      [m[1].to_sym, Marshal.load([m[2]].pack("H*"))] # our own script's output
    end.to_h
  end

  # Ruby source defining `show(key, value)`: prints "=KEY HEX" with the
  # value marshaled, for `values` (keeps Infinity, frozen-ness aside).
  SHOW = <<~'RUBY'
    def show(key, value) = puts("=#{key} #{Marshal.dump(value).unpack1('H*')}")
  RUBY
end

RSpec.configure do |config|
  config.include MwrapApiHelpers
end
