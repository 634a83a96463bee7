# frozen_string_literal: true

# Loaded with -r into the test-unit process that runs the peer suite (see
# spec/peer/run.rb). It records, as JSON lines in $PEER_RESULTS, the list of
# tests, each test's start and each test's result with its faults; and it
# writes a marker line on stderr when each test starts and ends, so that
# what the test's child processes print on stderr (their `abort` messages)
# can be charged to the test that ran them.
require "json"
require "test/unit"

module MwrapPeerRecorder
  MARK = "@@mwrap-peer@@"

  @out = File.open(ENV.fetch("PEER_RESULTS"), "a")
  @out.sync = true
  @listed = false

  class << self
    attr_accessor :listed

    def emit(record)
      @out.puts(JSON.generate(record))
    end

    def marker(kind, test)
      $stderr.flush
      $stderr.syswrite("\n#{MARK} #{kind} #{test}\n")
    end

    def test_names(suite)
      suite.tests.flat_map do |t|
        t.respond_to?(:tests) ? test_names(t) : [t.method_name]
      end
    end

    def fault_record(fault)
      kind = fault.class.name.split("::").last
      summary = if fault.respond_to?(:exception)
                  "#{fault.exception.class}: #{fault.exception.message}"
                else
                  fault.message.to_s
                end
      { kind: kind, summary: summary, location: Array(fault.location).first(3), long: fault.long_display }
    end

    def status(faults)
      kinds = faults.map { |f| f[:kind] }
      %w[Error Failure Pending Omission].find { |k| kinds.include?(k) }&.downcase || "pass"
    end
  end

  # The outermost suite lists every test before any runs.
  module Suite
    def run(result, &block)
      unless MwrapPeerRecorder.listed
        MwrapPeerRecorder.listed = true
        MwrapPeerRecorder.emit(event: "suite", tests: MwrapPeerRecorder.test_names(self))
      end
      super
    end
  end

  module Case
    def run(result, &block)
      before = result.faults.size
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      MwrapPeerRecorder.emit(event: "start", test: method_name)
      MwrapPeerRecorder.marker("start", method_name)
      begin
        super
      rescue Exception => e
        # What test-unit lets through (a signal, exit): the test did not finish.
        interrupted = e
        raise
      ensure
        MwrapPeerRecorder.marker("end", method_name)
        faults = (result.faults[before..] || []).map { |f| MwrapPeerRecorder.fault_record(f) }
        status = interrupted ? "interrupted" : MwrapPeerRecorder.status(faults)
        MwrapPeerRecorder.emit(event: "finish", test: method_name, status: status,
                               seconds: (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).round(3),
                               faults: faults, interrupted_by: interrupted&.inspect)
      end
    end
  end
end

Test::Unit::TestSuite.prepend(MwrapPeerRecorder::Suite)
Test::Unit::TestCase.prepend(MwrapPeerRecorder::Case)
