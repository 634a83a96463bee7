# frozen_string_literal: true

# Each eval'd line's allocation is charged to that line. Forks CHILDREN
# children one after another (default 80); child I first makes
# 7,400 + 10·I short Strings (so that each child's GCs fall at other
# moments), then evaluates LINES (default 2,500) lines, each in a file of
# its own ("cI-J.rb", line 1), each making one 1001-byte String, and exits
# normally. With MWRAP=dump_path:… every child's dump must hold every one
# of its lines.
children = Integer(ARGV[0] || 80)
lines = Integer(ARGV[1] || 2500)
children.times do |i|
  pid = fork do
    junk = Array.new(7400 + (10 * i)) { "y".dup * 100 } # two objects each: garbage for the GC
    keep = Array.new(lines) { |j| eval("'x' * 1000", nil, "c#{i}-#{j}.rb", 1) } # rubocop:disable Security/Eval
    exit!(3) unless keep.size == lines && junk.size.positive?
  end
  _, status = Process.wait2(pid)
  abort "child #{i}: #{status.inspect}" unless status.success?
end
puts "#{children} children"
