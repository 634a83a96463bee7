# frozen_string_literal: true

# Items 11 and 12: locations in files with awkward names. Evaluates one
# line ('x' * 10_000, a 10,001-byte String) in a file of each name below.
# With "api" as ARGV[0] it also prints one JSON line: every location of
# Mwrap.each, Mwrap.dump's text, the names for which Mwrap[name] does not
# give back a location of that name, and Mwrap[s] for each further
# argument s (a name as the spec expects it printed).
NAMES = [
  "0x1f.rb",
  "x[0x2].rb",
  "evil\n   999999999            1 forged.rb",
  "tab\there.rb",
  "ctl\x01.rb",
  "del\x7f.rb",
  "back\\slash.rb",
  "lit\\n.rb" # a backslash and an n: must stay apart from "lit\n.rb"
].freeze

keep = NAMES.map { |name| eval("'x' * 10_000", nil, name, 1) } # rubocop:disable Security/Eval

if ARGV[0] == "api"
  require "json"
  require "mwrap"
  report = Mwrap.quiet do
    each = Mwrap.each.map { |name, total, allocations, *| [name, total, allocations] }
    not_found = each.map(&:first).reject { |name| (loc = Mwrap[name]) && loc.name == name && Mwrap[loc.name] == loc }
    dump = IO.pipe.then do |r, w|
      reader = Thread.new { r.read }
      Mwrap.dump(w)
      w.close
      reader.value
    end
    lookups = ARGV.drop(1).to_h do |s|
      loc = Mwrap[s]
      [s, loc && [loc.name, loc.total, loc.allocations, Mwrap[loc.name] == loc]]
    end
    { "preloaded" => Mwrap.preloaded?, "each" => each, "not_found" => not_found, "dump" => dump,
      "lookups" => lookups }
  end
  puts JSON.generate(report)
end
exit!(3) unless keep.size == NAMES.size
