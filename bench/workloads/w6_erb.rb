# frozen_string_literal: true

# w6: something like a web request: render an HTML page with a 100-row
# table from an ERB template (compiled once), escaping every cell.
# Usage: ruby w6_erb.rb [N]
require "erb"

n = Integer(ARGV.fetch(0, "5000"))
Row = Struct.new(:id, :name, :email, :balance)
rows = Array.new(100) { |i| Row.new(i, "Customer <#{i}>", "c#{i}@example.com", i * 12.5) }
template = ERB.new(<<~HTML, trim_mode: "-")
  <!DOCTYPE html>
  <html><head><title><%= title %></title></head>
  <body>
  <h1><%= ERB::Util.h(title) %></h1>
  <table>
    <tr><th>id</th><th>name</th><th>email</th><th>balance</th></tr>
  <%- rows.each do |r| -%>
    <tr class="<%= r.id.even? ? "even" : "odd" %>"><td><%= r.id %></td><td><%= ERB::Util.h(r.name) %></td><td><%= ERB::Util.h(r.email) %></td><td><%= format("%.2f", r.balance) %></td></tr>
  <%- end -%>
  </table>
  </body></html>
HTML
title = "Customers & balances"
bytes = 0
n.times { bytes += template.result(binding).bytesize }
