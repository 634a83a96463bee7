# frozen_string_literal: true

# Reads a callgrind output file written with --compress-strings=no (the
# only event being Ir): the total, each function's own (exclusive) cost,
# and every caller → callee arc with its call count and inclusive cost,
# keyed by object file. Used by bench/run.rb; no dependency on
# callgrind_annotate.
module Bench
  class Callgrind
    Arc = Struct.new(:calls, :inclusive)

    attr_reader :total, :self_cost, :arcs

    def initialize(path)
      @total = nil
      @self_cost = Hash.new(0)                       # [object, fn] => Ir
      @arcs = Hash.new { |h, k| h[k] = Arc.new(0, 0) } # [caller object, caller fn, callee object, callee fn] => Arc
      parse(path)
    end

    # Calls from outside `object` into the functions `names` of the object
    # matched by `callee_object` (a Regexp or a String).
    def calls_into(callee_object, names, from_outside: nil)
      arcs.sum do |(cob, _cfn, tob, tfn), arc|
        next 0 unless match?(tob, callee_object) && names.include?(tfn)
        next 0 if from_outside && match?(cob, from_outside)

        arc.calls
      end
    end

    # Calls to the functions `names` (wherever they are) from callers not
    # in `exclude` (nil: from anywhere): {calls:, inclusive:}. With the
    # malloc family and the preload's object as `exclude`, this is what the
    # program's malloc calls cost, preload and real allocator included.
    def cost_of_calls_to(names, exclude: nil)
      arcs.each_with_object(Arc.new(0, 0)) do |((cob, _cfn, _tob, tfn), arc), sum|
        next unless names.include?(tfn)
        next if exclude && match?(cob, exclude)

        sum.calls += arc.calls
        sum.inclusive += arc.inclusive
      end
    end

    # Arcs whose caller is in `object`, grouped by callee [object, fn]:
    # {[callee object, callee fn] => Arc}.
    def calls_out_of(object)
      out = Hash.new { |h, k| h[k] = Arc.new(0, 0) }
      arcs.each do |(cob, _cfn, tob, tfn), arc|
        next unless match?(cob, object) && !match?(tob, object)

        out[[tob, tfn]].calls += arc.calls
        out[[tob, tfn]].inclusive += arc.inclusive
      end
      out
    end

    # Arcs from outside `object` into it, grouped by callee fn.
    def entries_into(object)
      out = Hash.new { |h, k| h[k] = Arc.new(0, 0) }
      arcs.each do |(cob, _cfn, tob, tfn), arc|
        next unless match?(tob, object) && !match?(cob, object)

        out[tfn].calls += arc.calls
        out[tfn].inclusive += arc.inclusive
      end
      out
    end

    # Exclusive cost of the functions of `object`: {fn => Ir}.
    def self_costs(object)
      self_cost.each_with_object(Hash.new(0)) do |((ob, fn), ir), h|
        h[fn] += ir if match?(ob, object)
      end
    end

    private

    def match?(value, pattern)
      pattern.is_a?(Regexp) ? pattern.match?(value.to_s) : value == pattern
    end

    # Callgrind names a recursion level "fn'2"; fold it into "fn".
    def fn_name(raw)
      raw.sub(/'\d+\z/, "")
    end

    def parse(path)
      ob = fn = nil
      cob = cfn = nil
      pending_calls = nil
      File.foreach(path) do |line|
        case line
        when /\Aob=(.*)/ then ob = Regexp.last_match(1)
        when /\Afn=(.*)/ then fn = fn_name(Regexp.last_match(1))
        when /\Acob=(.*)/ then cob = Regexp.last_match(1)
        when /\Acfn=(.*)/ then cfn = fn_name(Regexp.last_match(1))
        when /\Acalls=(\d+)/ then pending_calls = Integer(Regexp.last_match(1))
        when /\A(?:summary|totals):\s*(\d+)/ then @total ||= Integer(Regexp.last_match(1))
        when /\A[0-9+\-*]/
          ir = line.split[1].to_i
          if pending_calls
            # The cost line after calls= is the call's inclusive cost. The
            # callee is in the caller's object unless cob= said otherwise
            # (callgrind writes cob= only when they differ).
            arc = @arcs[[ob, fn, cob || ob, cfn]]
            arc.calls += pending_calls
            arc.inclusive += ir
            pending_calls = nil
            cob = nil
          else
            @self_cost[[ob, fn]] += ir
          end
        end
      end
      raise "#{path}: no totals line (not a callgrind output file?)" unless @total
    end
  end
end
