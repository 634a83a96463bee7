# frozen_string_literal: true

# w2: small hashes of small arrays, many short-lived objects and mallocs of
# mixed sizes. Usage: ruby w2_hash.rb [N]
n = Integer(ARGV.fetch(0, "300000"))
n.times do
  h = {}
  20.times { |i| h[i] = [i] * 10 }
end
