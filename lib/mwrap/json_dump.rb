# frozen_string_literal: true

require "json"

module Mwrap
  # A `dump_format:json` dump read back (`mwrapctl report` and `diff`):
  # {"mwrap":1,"locations":[…],["leak_scan":{…},]"memory":{…}}.
  class JsonDump
    # The file cannot be read or is not such a dump; the message names the
    # file and the problem in one line.
    class Invalid < StandardError; end

    NUMBERS = %w[total allocations frees live_bytes live_count].freeze
    LEAK_NUMBERS = %w[leaked_bytes leaked_count].freeze

    # One (location, stack) row; `ruby` and `native` innermost first, as
    # the dump writes them.
    Stack = Struct.new(:location, :ruby, :native, :total, :allocations, :frees, :live_bytes, :live_count,
                       keyword_init: true)

    attr_reader :path, :locations, :memory, :leak_scan

    def self.load(path)
      text = begin
        File.binread(path)
      rescue SystemCallError => e
        raise Invalid, "#{path}: #{e.message.sub(/ @ \w+ - .*\z/, '')}"
      end
      new(path, text)
    end

    def initialize(path, text)
      @path = path
      # An exit dump that was never written leaves an empty file.
      invalid("empty file, not an mwrap JSON dump") if text.strip.empty?
      doc = begin
        JSON.parse(text.force_encoding(Encoding::UTF_8).scrub)
      rescue JSON::ParserError => e
        raise Invalid, "#{path}: not JSON (#{parse_problem(e.message)})"
      end
      invalid("not an mwrap JSON dump (not an object)") unless doc.is_a?(Hash)
      invalid('not an mwrap JSON dump (no "locations")') unless doc.key?("locations")
      invalid('not an mwrap JSON dump ("locations" is not a list)') unless doc["locations"].is_a?(Array)
      @locations = doc["locations"].each_with_index.map { |loc, i| location(loc, i) }
      @memory = doc["memory"].is_a?(Hash) ? doc["memory"] : nil
      @leak_scan = doc["leak_scan"].is_a?(Hash) ? doc["leak_scan"] : nil
    end

    # Whether the dump was written with dump_leaks:1.
    def leaks?
      @locations.any? { |l| l.key?("leaked_bytes") }
    end

    # Sum of `key` over the locations.
    def sum(key)
      @locations.sum { |l| l[key].to_i }
    end

    # Every (location, stack) row. A location with no "stacks" (not
    # written by mwrap, but readable) is one row with no frames.
    def stacks
      @stacks ||= @locations.flat_map do |loc|
        rows = loc["stacks"] || [loc.merge("ruby" => [], "native" => [])]
        rows.map do |st|
          Stack.new(location: loc["location"], ruby: st["ruby"], native: st["native"],
                    **NUMBERS.to_h { |k| [k.to_sym, st[k]] })
        end
      end
    end

    private

    # Ruby's message is "859: unexpected token at '<all the rest of the
    # file>'": one line of it, the rest cut to 40 characters.
    def parse_problem(message)
      detail = message.sub(/\A\d+: /, "")
      rest = detail[/\Aunexpected token at '(.*)'\z/m, 1]
      return detail.lines.first.to_s.strip[0, 80] unless rest

      line = rest.lines.first.to_s.chomp
      "unexpected token at #{(line.size > 40 ? "#{line[0, 40]}…" : line).inspect}"
    end

    def invalid(problem)
      raise Invalid, "#{path}: #{problem}"
    end

    # A location checked: a name, whole numbers, stacks of names.
    def location(loc, index)
      invalid("not an mwrap JSON dump (location #{index} is not an object)") unless loc.is_a?(Hash)
      invalid("not an mwrap JSON dump (location #{index} has no name)") unless loc["location"].is_a?(String)
      (NUMBERS + LEAK_NUMBERS).each do |key|
        next if !loc.key?(key) && LEAK_NUMBERS.include?(key)

        invalid("location #{loc['location'].inspect}: #{key} is not a whole number") unless loc[key].is_a?(Integer)
      end
      stacks = loc["stacks"]
      unless stacks.nil? || (stacks.is_a?(Array) && stacks.all? { |st| stack_ok?(st) })
        invalid("location #{loc['location'].inspect}: malformed \"stacks\"")
      end
      loc
    end

    def stack_ok?(stack)
      stack.is_a?(Hash) &&
        %w[ruby native].all? { |k| stack[k].is_a?(Array) && stack[k].all?(String) } &&
        NUMBERS.all? { |k| stack[k].is_a?(Integer) }
    end
  end
end
