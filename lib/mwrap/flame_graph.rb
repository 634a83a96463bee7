# frozen_string_literal: true

require "zlib"
require_relative "html"

module Mwrap
  # An icicle graph (a flame graph upside down: outermost frame at the top)
  # of live bytes by stack, as inline SVG. Frames are ordered as
  # `dump_format:folded` writes them: Ruby frames outermost first, then
  # native ones; without Ruby frames the location stands for them, unless
  # it is a native address with native frames (then it is the first native
  # frame already).
  class FlameGraph
    WIDTH = 1200
    ROW = 17
    # Frames narrower than this share of the width are merged per parent
    # (or dropped when even merged they are too narrow to see): bounded
    # output, at most about 1/MIN_SHARE boxes per row.
    MIN_SHARE = 0.001

    Node = Struct.new(:name, :live, :children, :merged) do
      def child(name)
        children[name] ||= Node.new(name, 0, {}, 0)
      end
    end

    # A native name as mwrap prints it: `obj(func+0x1c) [0x7f…]`,
    # `obj(+0x1234) [0x…]` or `[0x…]` (README, "Locations").
    NATIVE = /(?:\A|\) )\[0x\h+\]/.freeze

    def self.native?(name)
      NATIVE.match?(name)
    end

    # The frames of one stack row, outermost first.
    def self.frames(stack)
      frames = stack.ruby.reverse
      frames << stack.location if frames.empty? && !(native?(stack.location) && !stack.native.empty?)
      frames.concat(stack.native.reverse)
    end

    attr_reader :root, :merged_frames, :dropped_frames, :dropped_bytes

    def initialize(stacks)
      @root = Node.new("all", 0, {}, 0)
      stacks.each do |st|
        next unless st.live_bytes.positive?

        @root.live += st.live_bytes
        node = @root
        FlameGraph.frames(st).each do |frame|
          node = node.child(frame)
          node.live += st.live_bytes
        end
      end
      @merged_frames = 0
      @dropped_frames = 0
      @dropped_bytes = 0
    end

    def total
      @root.live
    end

    # The SVG element (HTML); empty graph text when nothing is live.
    def svg
      return %(<p class="u">No stack holds live bytes.</p>\n) if total.zero?

      @boxes = []
      @depth = 0
      layout(@root, 0.0, 0)
      height = (@depth + 1) * ROW
      <<~SVG
        <svg id="flame" viewBox="0 0 #{WIDTH} #{height}" width="100%" preserveAspectRatio="xMinYMin meet" role="img" aria-label="live bytes by stack">
        #{@boxes.join("\n")}
        </svg>
      SVG
    end

    # What the graph left out, for a note under it (nil when nothing was).
    def note
      parts = []
      parts << "#{@merged_frames} frames (in subtrees narrower than 0.1 % of the width) were merged into \"[N narrower frames]\" boxes" if @merged_frames.positive?
      parts << "#{@dropped_frames} frames (#{Html.bytes(@dropped_bytes)}) too narrow even merged were dropped" if @dropped_frames.positive?
      parts.empty? ? nil : "#{parts.join('; ')}."
    end

    private

    def layout(node, x, depth)
      @depth = depth if depth > @depth
      @boxes << box(node, x, depth)
      min = total * MIN_SHARE
      wide, narrow = node.children.values.sort_by { |c| [-c.live, c.name] }.partition { |c| c.live >= min }
      wide.each do |child|
        layout(child, x, depth + 1)
        x += width_of(child)
      end
      return if narrow.empty?

      rest = narrow.sum(&:live)
      count = narrow.sum { |c| frames_in(c) }
      if rest >= min
        @merged_frames += count
        layout(Node.new("[#{narrow.size} narrower frames]", rest, {}, count), x, depth + 1)
      else
        @dropped_frames += count
        @dropped_bytes += rest
      end
    end

    def frames_in(node)
      1 + node.children.values.sum { |c| frames_in(c) }
    end

    def width_of(node)
      node.live * WIDTH.to_f / total
    end

    def box(node, x, depth)
      w = width_of(node)
      share = node.live * 100.0 / total
      title = "#{node.name} — #{node.live} bytes live (#{format('%.2f', share)} %)"
      title += ", #{node.merged} frames merged" if node.merged.positive?
      chars = ((w - 6) / 6.7).floor
      label = if chars < 3 then ""
              elsif node.name.size <= chars then node.name
              else "#{node.name[0, chars - 1]}…"
              end
      y = depth * ROW
      text = label.empty? ? "" : %(<text x="#{fmt(x + 3)}" y="#{y + 12}">#{Html.h(label)}</text>)
      %(<g><title>#{Html.h(title)}</title><rect x="#{fmt(x)}" y="#{y}" width="#{fmt(w)}" height="#{ROW - 1}" fill="#{colour(node, depth)}"/>#{text}</g>)
    end

    def fmt(value)
      format("%.2f", value)
    end

    # Ruby frames warm, native frames blue, the root and merged boxes grey;
    # the shade from the name, so one frame keeps its colour everywhere.
    def colour(node, depth)
      return "#ccc" if depth.zero? || node.merged.positive?

      seed = Zlib.crc32(node.name)
      light = 55 + (seed % 20)
      if FlameGraph.native?(node.name)
        "hsl(#{200 + (seed >> 8) % 40},55%,#{light}%)"
      else
        "hsl(#{(seed >> 8) % 45},75%,#{light}%)"
      end
    end
  end
end
