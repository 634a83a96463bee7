# frozen_string_literal: true

# Prints the module graph of a crate (which `mod` uses which, from its
# `use crate::…` lines and `crate::x::` paths) and exits 1 when the graph
# has a cycle. `rake modules` runs it on the preload and the core.
#
#   ruby tools/module_graph.rb ext/mwrap-preload/src
module ModuleGraph
  module_function

  # { module => [modules it uses] } for the top-level modules of `src`.
  def edges(src)
    files = Dir[File.join(src, "*.rs")].reject { |f| %w[lib.rs main.rs].include?(File.basename(f)) }
    names = files.map { |f| File.basename(f, ".rs") }
    files.to_h do |f|
      name = File.basename(f, ".rs")
      # Code only: not the unit tests, not comments (doc links name modules too).
      text = File.read(f).sub(/^#\[cfg\(test\)\]\s*(?:pub(?:\(crate\))?\s+)?mod tests.*/m, "").gsub(%r{//.*$}, "")
      used = text.scan(/\bcrate::(\w+)/).flatten
      text.scan(/^\s*use crate::\{([^}]*)\}/m).flatten.each do |group|
        used.concat(group.scan(/(?:\A|[,{]\s*)(\w+)/).flatten)
      end
      [name, (used.uniq & names) - [name]]
    end
  end

  # One cycle as a list of modules (first repeated last), or nil.
  def cycle(graph)
    state = Hash.new(:new)
    stack = []
    visit = lambda do |node|
      state[node] = :open
      stack.push(node)
      graph.fetch(node, []).each do |succ|
        return stack[stack.index(succ)..] + [succ] if state[succ] == :open
        if state[succ] == :new
          found = visit.call(succ)
          return found if found
        end
      end
      stack.pop
      state[node] = :done
      nil
    end
    graph.keys.sort.each do |node|
      next unless state[node] == :new

      found = visit.call(node)
      return found if found
    end
    nil
  end

  def report(src, out: $stdout)
    graph = edges(src)
    out.puts "#{src}:"
    graph.sort.each { |m, uses| out.puts format("  %-12s -> %s", m, uses.empty? ? "(nothing)" : uses.sort.join(", ")) }
    if (c = cycle(graph))
      out.puts "  CYCLE: #{c.join(' -> ')}"
      false
    else
      out.puts "  no cycle"
      true
    end
  end
end

if $PROGRAM_NAME == __FILE__
  dirs = ARGV.empty? ? %w[ext/mwrap-preload/src ext/mwrap-core/src] : ARGV
  ok = dirs.map { |d| ModuleGraph.report(d) }.all?
  exit(ok ? 0 : 1)
end
