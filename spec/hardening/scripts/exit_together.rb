# frozen_string_literal: true

# Item 8: processes that exit together. Forks CHILDREN children (default
# 8); child I allocates from LINES (default 2,000) eval'd lines of its own
# ("childI-J.rb:1", one 1001-byte String each), then every child waits on a
# barrier (a pipe whose write end the parent closes once all are ready)
# and exits normally at once. Prints {"children": {"PID": I, ...}} as JSON.
# Under the preload (with MWRAP=dump_path:…) each child then dumps at the
# same moment. Mwrap.clear (when the extension and a compatible preload
# are there) keeps the parent's rows out of the children's dumps.
require "json"
begin
  require "mwrap"
rescue LoadError
  nil
end

children = Integer(ARGV[0] || 8)
lines = Integer(ARGV[1] || 2000)
ready_r, ready_w = IO.pipe
barrier_r, barrier_w = IO.pipe
pids = {}
children.times do |i|
  pid = fork do
    ready_r.close
    barrier_w.close
    Mwrap.clear if defined?(Mwrap) && Mwrap.preloaded?
    keep = Array.new(lines) { |j| eval("'x' * 1000", nil, "child#{i}-#{j}.rb", 1) } # rubocop:disable Security/Eval
    ready_w.write("#{i}\n")
    ready_w.close
    barrier_r.read # EOF when the parent closes the write end
    exit!(3) unless keep.size == lines
  end
  pids[pid] = i
end
ready_w.close
barrier_r.close
got = ready_r.read.split.size
barrier_w.close # all go
statuses = pids.keys.map { |pid| Process.wait2(pid).last }
bad = statuses.reject(&:success?)
abort "#{got} of #{children} children got ready; failed: #{bad.map(&:inspect)}" unless got == children && bad.empty?
puts JSON.generate("children" => pids.transform_keys(&:to_s))
