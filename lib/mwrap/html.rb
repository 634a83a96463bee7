# frozen_string_literal: true

require "cgi"

module Mwrap
  # What `mwrapctl report` and `diff` share to write one self-contained
  # HTML page: no fetch of any kind (inline CSS, JS and SVG only), so the
  # file can be mailed, attached to a ticket or opened offline.
  module Html
    module_function

    # Text for HTML (element content and quoted attributes). Names are
    # escaped by mwrap already (control bytes as \xNN); a control byte a
    # hand-made dump still holds is written the same way rather than sent
    # to the browser.
    def h(value)
      text = value.to_s.dup.force_encoding(Encoding::UTF_8).scrub
      text = text.gsub(/[\x00-\x1f\x7f]/) { |c| format("\\x%02X", c.ord) }
      CGI.escapeHTML(text)
    end

    # A byte count as "12.3 MiB" (for notes; tables keep the exact bytes).
    def bytes(n)
      return "-" if n.nil?

      units = %w[B KiB MiB GiB TiB]
      value = n.to_f
      unit = 0
      while value.abs >= 1024 && unit < units.size - 1
        value /= 1024
        unit += 1
      end
      unit.zero? ? "#{n} B" : format("%.1f %s", value, units[unit])
    end

    # A table the inline script can sort by any column. `columns` are
    # [heading, :num or :text]; cells are already HTML. Without JS it is a
    # plain table in the order given.
    def sortable_table(columns, rows, id:)
      head = columns.map do |(name, kind)|
        %(<th data-kind="#{kind}" title="click to sort">#{h(name)}</th>)
      end.join
      body = rows.map do |cells|
        tds = cells.each_with_index.map do |cell, i|
          columns[i][1] == :num ? %(<td class="n">#{cell}</td>) : "<td>#{cell}</td>"
        end
        "<tr>#{tds.join}</tr>\n"
      end.join
      %(<table class="sortable" id="#{h(id)}"><thead><tr>#{head}</tr></thead>\n<tbody>\n#{body}</tbody></table>\n)
    end

    # A two-column table of name => value (the memory breakdown, the leak scan).
    def key_value_table(pairs, id:)
      rows = pairs.map do |key, value|
        shown = value.is_a?(Integer) ? "#{value} <span class=\"u\">(#{h(bytes(value))})</span>" : h(value.nil? ? "null" : value)
        "<tr><th>#{h(key)}</th><td class=\"n\">#{shown}</td></tr>\n"
      end.join
      %(<table class="kv" id="#{h(id)}"><tbody>\n#{rows}</tbody></table>\n)
    end

    CSS = <<~CSS
      body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
      h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
      table { border-collapse: collapse; font-size: 13px; }
      th, td { border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: left; vertical-align: top; }
      td { font-family: ui-monospace, monospace; word-break: break-all; }
      td.n { text-align: right; white-space: nowrap; word-break: normal; }
      table.sortable th { cursor: pointer; background: #f3f3f3; position: sticky; top: 0; }
      table.sortable th.sorted::after { content: " \\25BE"; }
      table.sortable th.sorted.up::after { content: " \\25B4"; }
      .u { color: #777; } .note { color: #a33; } .grow { color: #a33; } .shrink { color: #272; }
      svg text { font: 11px ui-monospace, monospace; pointer-events: none; }
      svg rect { stroke: #fff; stroke-width: 0.5; }
      svg g:hover rect { stroke: #000; }
    CSS

    # Click a heading: numbers largest first, text A to Z; click again to
    # turn the order round. `#sort=COLUMN` in the URL clicks it on load.
    SORTER_JS = <<~JS
      document.querySelectorAll("table.sortable").forEach(function (table) {
        table.querySelectorAll("th").forEach(function (th, col) {
          th.addEventListener("click", function () {
            var num = th.dataset.kind === "num";
            var up = th.classList.contains("sorted") ? !th.classList.contains("up") : !num;
            table.querySelectorAll("th").forEach(function (o) { o.classList.remove("sorted", "up"); });
            th.classList.add("sorted");
            if (up) th.classList.add("up");
            var body = table.tBodies[0];
            var rows = Array.prototype.slice.call(body.rows);
            var key = function (row) {
              var t = row.cells[col].textContent;
              if (!num) return t;
              var v = parseFloat(t.replace(/[^0-9eE.+-]/g, ""));
              return isNaN(v) ? -Infinity : v;
            };
            rows.sort(function (a, b) {
              var x = key(a), y = key(b);
              var c = x < y ? -1 : x > y ? 1 : 0;
              return up ? c : -c;
            });
            rows.forEach(function (row) { body.appendChild(row); });
          });
        });
      });
      // A link to the page sorted: #sort=COLUMN clicks that heading (the
      // first table's) once the page is there.
      (function () {
        var m = /^#sort=([A-Za-z_]+)$/.exec(location.hash);
        if (!m) return;
        var table = document.querySelector("table.sortable");
        if (!table) return;
        table.querySelectorAll("th").forEach(function (th) {
          if (th.textContent.trim() === m[1]) th.click();
        });
      })();
    JS

    # The whole page around `body` (HTML already).
    def page(title, body)
      <<~HTML
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>#{h(title)}</title>
        <style>
        #{CSS}</style></head>
        <body>
        #{body}
        <script>
        #{SORTER_JS}</script>
        </body></html>
      HTML
    end
  end
end
