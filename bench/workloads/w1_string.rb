# frozen_string_literal: true

# w1: string churn, one malloc (a 201-byte heap string) and one free per
# iteration. Usage: ruby w1_string.rb [N]
n = Integer(ARGV.fetch(0, "2000000"))
n.times { "x" * 200 }
