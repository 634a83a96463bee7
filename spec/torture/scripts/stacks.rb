# frozen_string_literal: true

# Every thread's backtrace in a live process, read with gdb, so that a hang
# reported from CI can be read. Used by the spec helpers (a timed-out run)
# and by torture scripts (a hung fork child).
module ThreadStacks
  module_function

  def gdb
    ENV["PATH"].to_s.split(File::PATH_SEPARATOR).map { |d| File.join(d, "gdb") }.find { |f| File.executable?(f) }
  end

  # One line per thread and per frame of `pid`; nil without gdb.
  def of(pid)
    path = gdb or return nil

    out = IO.popen([path, "-p", pid.to_s, "-batch", "-nx", "-ex", "thread apply all bt 30"],
                   err: %i[child out], &:read)
    out.lines.grep(/^(Thread |#\d)/).join
  end
end
