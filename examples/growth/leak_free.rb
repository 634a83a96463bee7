# frozen_string_literal: true

require "json"

module GrowthExamples
  # Allocates a lot every round (tens of megabytes of strings, arrays,
  # hashes and JSON) and keeps none of it: the growth check passes.
  module LeakFree
    ROWS = 5_000

    def self.round
      rows = Array.new(ROWS) do |i|
        { "id" => i, "name" => "user-#{i}" * 4, "tags" => %w[red green blue].map { |t| t * (1 + (i % 7)) } }
      end
      parsed = JSON.parse(JSON.generate(rows))
      names = parsed.map { |row| row["name"] }.join(",")
      blob = "x" * 4_000_000
      names.bytesize + blob.bytesize + parsed.sum { |row| row["tags"].size }
    end
  end
end
