# frozen_string_literal: true

# w5: JSON.generate + JSON.parse of a 50-record document.
# Usage: ruby w5_json.rb [N]
require "json"

n = Integer(ARGV.fetch(0, "16000"))
doc = {
  "page" => 1,
  "records" => Array.new(50) do |i|
    { "id" => i, "name" => "user#{i}", "email" => "user#{i}@example.com",
      "score" => i * 1.5, "active" => i.even?, "tags" => %w[a bb ccc].first(1 + (i % 3)) }
  end
}
n.times { JSON.parse(JSON.generate(doc)) }
