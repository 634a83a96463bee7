# frozen_string_literal: true

require "open3"
require "rbconfig"
require "shellwords"

# Every child process the specs start goes through SpecProcess.run (or
# SpecProcess.open, to talk to the child while it runs). The child gets a
# clean environment, a process group of its own and a time limit. Past the
# limit, every thread's backtrace in every process of the group is read
# with gdb (when installed), the whole group is killed, and the run raises
# TimedOut (the default, so the example fails saying what hung) or, with
# `on_timeout: :return`, returns a Result whose #timed_out is true.
#
# Plain Ruby, no RSpec: rakelib/growth.rake and spec/torture/soak.rb load
# it, and so do torture scripts running under the preload (wait_child,
# ThreadStacks).
module SpecProcess
  ROOT = File.expand_path("../..", __dir__)
  # The limit when a call names none; MWRAP_SPEC_TIMEOUT overrides it. Under
  # `rake spec:gc_stress` every Mwrap call in a child runs with GC.stress:
  # source_location_spec's live iteration alone then takes about 10 minutes.
  DEFAULT_TIMEOUT = Float(ENV["MWRAP_SPEC_TIMEOUT"] || (ENV["MWRAP_GC_STRESS"] == "1" ? 1800 : 120))
  # What a child never inherits: it would change what the preload sees or records.
  CLEAN_ENV = { "LD_PRELOAD" => nil, "MWRAP" => nil, "RUBYOPT" => nil, "RUBYLIB" => nil }.freeze
  # How much of the end of stdout and stderr a failure message shows.
  SHOWN_BYTES = 4000
  # At most this many processes of a hung group get their stacks read.
  STACKS_OF_AT_MOST = 8

  # What a child did. `stacks`: after a timeout, every thread's backtrace in
  # every process of its group (nil without gdb). `command`: the command
  # line as a failure message shows it.
  Result = Struct.new(:stdout, :stderr, :status, :timed_out, :seconds, :stacks, :command) do
    def success?
      !timed_out && status&.success?
    end

    def exitstatus
      status&.exitstatus
    end

    def termsig
      status&.termsig
    end

    # The command, how it ended, the end of its output and, after a
    # timeout, the stacks: for failure messages.
    def describe
      how = if timed_out && status&.exited?
              "exit #{status.exitstatus}, but its output stayed open (another process holds it) " \
                "until the limit, #{seconds.round(1)} s"
            elsif timed_out then "timed out after #{seconds.round(1)} s (killed)"
            elsif status.nil? then "did not exit"
            elsif status.signaled? then "killed by signal #{status.termsig} (SIG#{Signal.signame(status.termsig)})"
            else "exit #{status.exitstatus}"
            end
      so_far = timed_out ? " so far" : ""
      text = "#{command}\n#{how}\n--- stdout#{so_far} ---\n#{SpecProcess.tail(stdout)}\n" \
             "--- stderr#{so_far} ---\n#{SpecProcess.tail(stderr)}"
      return text unless timed_out

      "#{text}\n--- stacks at the timeout ---\n#{stacks || "(none: #{ThreadStacks.gdb ? 'not read' : 'no gdb'})"}"
    end
  end

  # Raised when a child outlives its limit (or gives no line in time, see
  # Child#gets); the message is Result#describe.
  class TimedOut < StandardError
    attr_reader :result

    def initialize(result, reason = nil)
      @result = result
      super([reason, result.describe].compact.join("\n"))
    end
  end

  module_function

  # The environment a child gets: CLEAN_ENV, then `env`.
  def clean_env(env = {})
    CLEAN_ENV.merge(env)
  end

  # The path of program `name` on PATH (or `name` itself when it holds a
  # "/" and is executable); nil when there is none.
  def which(name)
    return (File.file?(name) && File.executable?(name) ? name : nil) if name.include?("/")

    ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).map { |dir| File.join(dir, name) }
       .find { |path| File.file?(path) && File.executable?(path) }
  end

  # Runs `cmd` with `env` (over clean_env) in `chdir`, feeding it
  # `stdin_data`, and returns its Result once it has exited and closed its
  # output; see the module comment for what happens after `timeout`
  # seconds. `echo: true` also copies its output to ours as it comes (for
  # long runs); `stacks: false` reads no stacks at a timeout (for gdb's own
  # run). Other options go to Process.spawn.
  def run(env, *cmd, timeout: DEFAULT_TIMEOUT, stdin_data: "", chdir: ROOT, on_timeout: :raise, echo: false,
          stacks: true, **spawn_opts)
    child = Child.new(env, cmd, timeout: timeout, chdir: chdir, echo: echo, stacks: stacks, spawn_opts: spawn_opts)
    child.feed(stdin_data)
    finished(child.wait, on_timeout)
  ensure
    child&.kill_unless_done
  end

  # Like run, but yields the running Child (pid, gets, puts, close_stdin,
  # exited_within?) to the block first; the time limit covers the block too.
  def open(env, *cmd, timeout: DEFAULT_TIMEOUT, chdir: ROOT, on_timeout: :raise, stacks: true, **spawn_opts)
    child = Child.new(env, cmd, timeout: timeout, chdir: chdir, echo: false, stacks: stacks, spawn_opts: spawn_opts)
    yield child
    finished(child.wait, on_timeout)
  ensure
    child&.kill_unless_done
  end

  def finished(result, on_timeout)
    raise TimedOut, result if result.timed_out && on_timeout == :raise

    result
  end

  # Waits at most `timeout` seconds for child process `pid` of this process
  # (a thread blocked in waitpid, not a polling loop) and returns its
  # Process::Status. When it does not exit in time: reads its stacks, kills
  # and reaps it, yields "(pid N) did not exit within T s: killed" with the
  # stacks (for a failure message), and returns nil.
  def wait_child(pid, timeout:)
    waiter = Process.detach(pid)
    return waiter.value if waiter.join(timeout)

    stacks = ThreadStacks.of(pid)
    begin
      Process.kill(:KILL, pid)
    rescue Errno::ESRCH
      nil
    end
    waiter.join
    yield "(pid #{pid}) did not exit within #{timeout} s: killed#{"; its threads:\n#{stacks}" if stacks}"
    nil
  end

  # Every thread's backtrace in every process of process group `pgid`
  # (ThreadStacks.of each); nil without gdb.
  def group_stacks(pgid)
    return nil unless ThreadStacks.gdb

    pids = Dir.glob("/proc/[0-9]*/stat").filter_map do |f|
      fields = File.read(f).split(") ").last.split # after "pid (comm) ": state ppid pgrp
      File.basename(File.dirname(f)).to_i if fields[2].to_i == pgid
    rescue SystemCallError
      nil
    end
    pids.sort.first(STACKS_OF_AT_MOST).map do |pid|
      command = begin
        File.read("/proc/#{pid}/cmdline").tr("\0", " ").strip[0, 200]
      rescue SystemCallError
        "?"
      end
      "process #{pid} (#{command}):\n#{ThreadStacks.of(pid)}"
    end.join("\n")
  end

  # The last SHOWN_BYTES of `text`, as valid UTF-8.
  def tail(text)
    text = text.to_s
    text.bytesize > SHOWN_BYTES ? "…#{utf8(text.byteslice(-SHOWN_BYTES..))}" : utf8(text)
  end

  # `bytes` as UTF-8, invalid sequences replaced: safe to put in a message.
  def utf8(bytes)
    bytes.dup.force_encoding(Encoding::UTF_8).scrub
  end

  # "VAR=value ... cmd args (in dir)", each word cut to 200 bytes.
  def command_line(env, cmd, chdir)
    words = env.reject { |_, v| v.nil? }.map { |k, v| "#{k}=#{shown_word(v)}" } + cmd.map { |w| shown_word(w) }
    "#{words.join(' ')} (in #{chdir})"
  end

  def shown_word(word)
    word = word.to_s.b
    return Shellwords.escape(utf8(word)) if word.bytesize <= 200

    "#{Shellwords.escape(utf8(word.byteslice(0, 200)))}…(#{word.bytesize} bytes)"
  end

  def now
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # A running child: its output is read as it comes by two threads; the
  # time limit counts from its start.
  class Child
    attr_reader :pid, :command

    def initialize(env, cmd, timeout:, chdir:, echo:, stacks:, spawn_opts:)
      @read_stacks = stacks
      @command = SpecProcess.command_line(env, cmd, chdir)
      @started = SpecProcess.now
      @deadline = @started + timeout
      @stdin, out, err, @waiter = Open3.popen3(SpecProcess.clean_env(env), *cmd, chdir: chdir, pgroup: true,
                                                                                 **spawn_opts)
      @pid = @waiter.pid
      @pipes = [@stdin, out, err]
      @lock = Mutex.new
      @arrived = ConditionVariable.new
      @out = String.new(encoding: Encoding::BINARY)
      @err = String.new(encoding: Encoding::BINARY)
      @out_closed = false
      @read_to = 0 # bytes of @out that gets returned
      @readers = [reader(out, @out, echo ? $stdout : nil, stdout: true),
                  reader(err, @err, echo ? $stderr : nil, stdout: false)]
      @writer = nil
      @result = nil
    end

    # Writes `data` to the child's stdin from a thread (a child that does
    # not read it cannot block us), then closes it.
    def feed(data)
      @writer = Thread.new do
        @stdin.write(data) unless data.empty?
      rescue Errno::EPIPE, IOError
        nil
      ensure
        close_stdin
      end
    end

    # Writes a line to the child's stdin; a child that died meanwhile is
    # not an error here (its Result tells).
    def puts(text)
      @stdin.puts(text)
    rescue Errno::EPIPE, IOError
      nil
    end

    def close_stdin
      @stdin.close unless @stdin.closed?
    rescue IOError
      nil
    end

    # The next line of the child's stdout; at its end, what is left (nil
    # if nothing). Waits at most `timeout` seconds (and not past the run's
    # limit); raises TimedOut, having killed the group, if no line came.
    def gets(timeout = nil)
      per_line = timeout && SpecProcess.now + timeout < @deadline
      limit = per_line ? SpecProcess.now + timeout : @deadline
      @lock.synchronize do
        loop do
          if (newline = @out.index("\n", @read_to))
            return take_output(newline + 1)
          elsif @out_closed
            return @read_to == @out.bytesize ? nil : take_output(@out.bytesize)
          end
          left = limit - SpecProcess.now
          break if left <= 0

          @arrived.wait(@lock, left)
        end
      end
      raise TimedOut.new(finish(timed_out: true), "no line on stdout within #{per_line ? "#{timeout} s" : "the limit"}")
    end

    # Waits at most `seconds` (and not past the limit) for the child itself
    # to exit, its output perhaps still open; true when it has. Kills
    # nothing: for a caller with a gentler stop of its own before the limit.
    def exited_within?(seconds)
      !@waiter.join([seconds, left].min).nil?
    end

    # Waits for the child to exit and close its output, at most until the
    # limit; returns its Result.
    def wait
      return @result if @result

      exited = @waiter.join(left)
      drained = exited && @readers.all? { |t| t.join(left) }
      finish(timed_out: !drained)
    end

    # Leaves nothing behind when the caller did not get to #wait (an
    # exception, an interrupt): kills the group and reaps the child.
    def kill_unless_done
      finish(timed_out: false, stacks: false) unless @result
    end

    private

    def left
      [@deadline - SpecProcess.now, 0].max
    end

    def take_output(to)
      line = @out.byteslice(@read_to...to)
      @read_to = to
      line.force_encoding(Encoding.default_external)
    end

    def reader(io, buffer, echo, stdout:)
      Thread.new do
        loop do
          chunk = io.readpartial(65_536)
          @lock.synchronize do
            buffer << chunk
            @arrived.broadcast
          end
          echo&.write(chunk)
        end
      rescue EOFError, IOError, SystemCallError
        nil
      ensure
        @lock.synchronize do
          @out_closed = true if stdout
          @arrived.broadcast
        end
      end
    end

    def kill_group
      Process.kill(:KILL, -@pid)
    rescue Errno::ESRCH, Errno::EPERM
      nil
    end

    # Ends the run: after a timeout, reads the group's stacks (unless
    # `stacks` is false); kills the group if anything of it may be left
    # (a timeout, or kill_unless_done before the child or its output
    # ended); reaps the child, closes the pipes, builds the Result.
    def finish(timed_out:, stacks: @read_stacks)
      return @result if @result

      killed = timed_out || @waiter.alive? || @readers.any?(&:alive?)
      group_stacks = SpecProcess.group_stacks(@pid) if timed_out && stacks
      kill_group if killed
      @waiter.join(killed ? 10 : nil)
      # After the kill the pipes reach EOF at once, unless a process outside
      # the group holds them: then stop reading.
      grace = SpecProcess.now + 2
      @readers.each { |t| t.join([grace - SpecProcess.now, 0].max) }
      @pipes.each { |io| io.close unless io.closed? }
      @readers.each(&:join)
      @writer&.join
      status = @waiter.alive? ? nil : @waiter.value
      @result = Result.new(@out.dup.force_encoding(Encoding.default_external),
                           @err.dup.force_encoding(Encoding.default_external),
                           status, timed_out, SpecProcess.now - @started, group_stacks, @command)
    end
  end
end

# Every thread's backtrace in a live process, read with gdb, so that a hang
# reported from CI can be read. Used for a timed-out run (SpecProcess) and
# by torture scripts (a hung fork child).
module ThreadStacks
  # gdb itself gets this long to attach and print.
  GDB_SECONDS = 60
  # Innermost frames shown per thread. A thread hung in Ruby's crash report
  # ([BUG] ..., itself allocating) needs over 30 before its crash shows.
  FRAMES = 80

  module_function

  def gdb
    SpecProcess.which("gdb")
  end

  # One line per thread and per frame of `pid`; nil without gdb.
  def of(pid)
    path = gdb or return nil

    r = SpecProcess.run({}, path, "-p", pid.to_s, "-batch", "-nx", "-ex", "thread apply all bt #{FRAMES}",
                        timeout: GDB_SECONDS, on_timeout: :return, stacks: false)
    lines = r.stdout.lines.grep(/^(Thread |#\d)/).join
    r.timed_out ? "#{lines}(gdb did not finish within #{GDB_SECONDS} s)\n" : lines
  end
end
