# frozen_string_literal: true

# Scenario 5 of the torture suite (spec/torture/bad_input_spec.rb): calls
# every Mwrap method with bad arguments, with or without the preload.
# Methods this file knows get exact expectations; methods added later are
# at least called with arguments of every wrong type and count, and must
# either return or raise a StandardError with a message. Prints one JSON
# object; "failures" lists every broken expectation.
require "mwrap"
require "json"
require "stringio"

failures = []
checked = 0
skipped = []
generic = []
devnull = File.open(File::NULL, "w")

describe_call = ->(desc) { desc.length > 120 ? "#{desc[0, 117]}..." : desc }
# A message that says something: not empty, not just the class name.
message_ok = ->(e) { !e.message.to_s.strip.empty? && e.message != e.class.name }

raises = lambda do |desc, klass, &call|
  checked += 1
  begin
    value = call.call
    failures << "#{describe_call[desc]}: returned #{value.inspect[0, 80]}, expected #{klass}"
  rescue klass => e
    failures << "#{describe_call[desc]}: #{e.class} without a message" unless message_ok[e]
  rescue Exception => e # rubocop:disable Lint/RescueException
    failures << "#{describe_call[desc]}: raised #{e.class} (#{e.message[0, 200]}), expected #{klass}"
  end
end

returns = lambda do |desc, &call|
  checked += 1
  begin
    call.call
  rescue Exception => e # rubocop:disable Lint/RescueException
    failures << "#{describe_call[desc]}: raised #{e.class}: #{e.message[0, 200]}"
  end
end

# Returns normally or raises a StandardError with a message.
tolerates = lambda do |desc, &call|
  checked += 1
  begin
    call.call
    :returned
  rescue StandardError => e
    failures << "#{describe_call[desc]}: #{e.class} without a message" unless message_ok[e]
    e.class.name
  rescue Exception => e # rubocop:disable Lint/RescueException
    failures << "#{describe_call[desc]}: raised #{e.class} (not a StandardError): #{e.message[0, 200]}"
    e.class.name
  end
end

closed = File.open(File::NULL, "w").tap(&:close)
bad_values = [Object.new, "x", :sym, 1.5, -1, [], {}, true, 2**70, -(2**70), "\xff".b, Class, 1r]

zero_arity = %i[clear reset total_bytes_allocated total_bytes_freed current_generation preloaded? abi_version
                preload_path memory_breakdown memory_report trim pprof]
zero_arity.each do |name|
  next skipped << name unless Mwrap.respond_to?(name)

  raises.call("Mwrap.#{name}(1)", ArgumentError) { Mwrap.public_send(name, 1) }
  raises.call("Mwrap.#{name}(nil, nil)", ArgumentError) { Mwrap.public_send(name, nil, nil) }
end

# each(min = 0)
raises.call("Mwrap.each('x')", TypeError) { Mwrap.each("x") {} }
raises.call("Mwrap.each(1.5)", TypeError) { Mwrap.each(1.5) {} }
raises.call("Mwrap.each(:sym)", TypeError) { Mwrap.each(:sym) {} }
raises.call("Mwrap.each([])", TypeError) { Mwrap.each([]) {} }
raises.call("Mwrap.each(-1)", ArgumentError) { Mwrap.each(-1) {} }
raises.call("Mwrap.each(-(2**70))", ArgumentError) { Mwrap.each(-(2**70)) {} }
raises.call("Mwrap.each(1, 2)", ArgumentError) { Mwrap.each(1, 2) {} }
raises.call("Mwrap.each(-1) without a block", ArgumentError) { Mwrap.each(-1).to_a }
returns.call("Mwrap.each(nil)") { Mwrap.each(nil) {} }
returns.call("Mwrap.each(2**70)") { Mwrap.each(2**70) {} }
if Mwrap.preloaded? # without the preload each yields nothing
  raises.call("Mwrap.each { raise }", RuntimeError) { Mwrap.each { raise "from the block" } }
end

# dump(io = $stderr, min = 0)
raises.call("Mwrap.dump(1)", TypeError) { Mwrap.dump(1) }
raises.call("Mwrap.dump('path')", TypeError) { Mwrap.dump("/tmp/x") }
raises.call("Mwrap.dump(StringIO.new)", TypeError) { Mwrap.dump(StringIO.new) }
raises.call("Mwrap.dump(io, -1)", ArgumentError) { Mwrap.dump(devnull, -1) }
raises.call("Mwrap.dump(io, 'x')", TypeError) { Mwrap.dump(devnull, "x") }
raises.call("Mwrap.dump(io, 1.5)", TypeError) { Mwrap.dump(devnull, 1.5) }
raises.call("Mwrap.dump(io, 0, 1)", ArgumentError) { Mwrap.dump(devnull, 0, 1) }
tolerates.call("Mwrap.dump(closed_io)") { Mwrap.dump(closed, 0) }
returns.call("Mwrap.dump(io, 2**70)") { Mwrap.dump(devnull, 2**70) }

if Mwrap.respond_to?(:live_snapshot)
  raises.call("Mwrap.live_snapshot('x')", TypeError) { Mwrap.live_snapshot("x") }
  raises.call("Mwrap.live_snapshot(1.5)", TypeError) { Mwrap.live_snapshot(1.5) }
  raises.call("Mwrap.live_snapshot(-1)", ArgumentError) { Mwrap.live_snapshot(-1) }
  raises.call("Mwrap.live_snapshot(1, 2)", ArgumentError) { Mwrap.live_snapshot(1, 2) }
  returns.call("Mwrap.live_snapshot(nil)") { Mwrap.live_snapshot(nil) }
else
  skipped << :live_snapshot
end

if Mwrap.respond_to?(:[])
  raises.call("Mwrap[nil]", TypeError) { Mwrap[nil] }
  raises.call("Mwrap[123]", TypeError) { Mwrap[123] }
  raises.call("Mwrap[1.5]", TypeError) { Mwrap[1.5] }
  raises.call("Mwrap[[]]", TypeError) { Mwrap[[]] }
  raises.call("Mwrap[Object.new]", TypeError) { Mwrap[Object.new] }
  raises.call("Mwrap['']", ArgumentError) { Mwrap[""] }
  raises.call("Mwrap[\"a\\0b\"]", ArgumentError) { Mwrap["a\0b.rb:1"] }
  raises.call("Mwrap[]", ArgumentError) { Mwrap.[] }
  raises.call("Mwrap['a', 'b']", ArgumentError) { Mwrap["a", "b"] }
  returns.call("Mwrap['nonexistent.rb:1'] is nil") do
    v = Mwrap["/nonexistent-torture.rb:1"]
    raise "returned #{v.inspect}" unless v.nil?
  end
  tolerates.call("Mwrap['x' * 100_000]") { Mwrap["x" * 100_000] }
  tolerates.call("Mwrap[\"\\xff\"]") { Mwrap["\xff\xfe:1".b] }
  tolerates.call("Mwrap['[0xzz]']") { Mwrap["[0xzz]"] }
  tolerates.call("Mwrap['[0x']") { Mwrap["[0x"] }
  tolerates.call("Mwrap[':']") { Mwrap[":"] }
  tolerates.call("Mwrap['a.rb:-1']") { Mwrap["a.rb:-1"] }
  tolerates.call("Mwrap['a.rb:99999999999999999999999']") { Mwrap["a.rb:99999999999999999999999"] }
  tolerates.call("Mwrap[:sym]") { Mwrap[:sym] }
else
  skipped << :[]
end

if defined?(Mwrap::SourceLocation)
  raises.call("Mwrap::SourceLocation.new", NoMethodError) { Mwrap::SourceLocation.new }
  tolerates.call("Mwrap::SourceLocation.allocate") { Mwrap::SourceLocation.allocate }
  loc = Mwrap.respond_to?(:[]) && Mwrap.each.first&.then { |name, *| Mwrap[name] }
  if loc
    (Mwrap::SourceLocation.public_instance_methods(false) - %i[== eql? equal?]).each do |m|
      raises.call("SourceLocation##{m}(1, 2, 3)", ArgumentError) { loc.public_send(m, 1, 2, 3) }
    end
    returns.call("SourceLocation#==(nil)") { raise "== nil is true" if loc == nil } # rubocop:disable Style/NilComparison
    returns.call("SourceLocation#==(1)") { raise "== 1 is true" if loc == 1 }
    raises.call("SourceLocation#==()", ArgumentError) { loc.public_send(:==) }
  else
    skipped << :source_location_instance
  end
else
  skipped << :SourceLocation
end

if Mwrap.respond_to?(:quiet)
  raises.call("Mwrap.quiet(1) {}", ArgumentError) { Mwrap.quiet(1) {} }
  tolerates.call("Mwrap.quiet without a block") { Mwrap.quiet }
  raises.call("Mwrap.quiet { raise }", RuntimeError) { Mwrap.quiet { raise "inside quiet" } }
else
  skipped << :quiet
end

# Everything else (added after this file): wrong counts and types.
known = zero_arity + %i[each dump live_snapshot [] quiet]
(Mwrap.singleton_methods(false) - known).sort.each do |name|
  outcomes = []
  outcomes << tolerates.call("Mwrap.#{name}(9 args)") { Mwrap.public_send(name, *Array.new(9) { Object.new }) {} }
  bad_values.each do |v|
    outcomes << tolerates.call("Mwrap.#{name}(#{v.inspect[0, 20]})") { Mwrap.public_send(name, v) {} }
    outcomes << tolerates.call("Mwrap.#{name}(nil, #{v.inspect[0, 20]})") { Mwrap.public_send(name, nil, v) {} }
  end
  generic << [name, outcomes.tally]
end

# Still working afterwards.
returns.call("Mwrap.each after all that") do
  rows = Mwrap.each.to_a
  raise "no rows under the preload" if Mwrap.preloaded? && rows.empty?
end

puts JSON.generate(preloaded: Mwrap.preloaded?, checked: checked, failures: failures, skipped: skipped,
                   methods: Mwrap.singleton_methods(false).sort, generic: generic)
