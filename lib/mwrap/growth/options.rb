# frozen_string_literal: true

module Mwrap
  module Growth
    # The keywords of a measurement (Mwrap.measure_growth) and of a verdict
    # (Report#passed? and the other Report methods, the matchers).
    MEASURE_KEYWORDS = %i[rounds warmup min_growth ignore app_root].freeze
    LIMIT_KEYWORDS = %i[max_growth max_growth_per_location].freeze

    # The checks of those keywords and their values. Pure Ruby, with no
    # extension to load: Mwrap::RakeTask checks its attributes with them in
    # the rake process.
    module_function

    # Raises an ArgumentError naming the keywords in `unknown` (what a
    # method's **unknown caught) and listing the `known` ones of `method`.
    def check_keywords!(unknown, known, method)
      return if unknown.empty?

      raise ArgumentError, "#{method}: unknown keyword#{'s' unless unknown.size == 1} " \
                           "#{unknown.keys.map(&:inspect).join(', ')} (known keywords: #{known.join(', ')})"
    end

    # Validates measure_growth's options; returns `ignore` as an Array.
    def check_options!(rounds:, warmup:, min_growth:, ignore:)
      unless rounds.is_a?(Integer) && rounds >= 2
        raise ArgumentError, "rounds must be an Integer >= 2 (growth is decided over several rounds), " \
                             "got #{rounds.inspect}"
      end
      unless warmup.is_a?(Integer) && warmup >= 0
        raise ArgumentError, "warmup must be an Integer >= 0, got #{warmup.inspect}"
      end
      unless min_growth.is_a?(Integer) && min_growth >= 0
        raise ArgumentError, "min_growth must be an Integer >= 0 (bytes), got #{min_growth.inspect}"
      end
      patterns = ignore.is_a?(Array) ? ignore : [ignore]
      patterns.each do |p|
        next if p.is_a?(Regexp) || p.is_a?(String) || p.is_a?(Proc)

        raise ArgumentError, "ignore takes Regexps, Strings (substrings) or Procs, got #{p.inspect}"
      end
      patterns
    end

    # Validates measure_growth's app_root: nil, or an existing directory
    # (String or Pathname); returns it as an absolute String or nil.
    def check_app_root!(app_root)
      return nil if app_root.nil?

      path = app_root.respond_to?(:to_path) ? app_root.to_path : app_root
      unless path.is_a?(String)
        raise ArgumentError, "app_root must be a directory (String or Pathname) or nil, got #{app_root.inspect}"
      end
      raise ArgumentError, "app_root must be an existing directory, got #{path.inspect}" unless File.directory?(path)

      File.expand_path(path)
    end

    def check_limits!(max_growth, max_growth_per_location)
      unless max_growth.is_a?(Integer) && max_growth >= 0
        raise ArgumentError, "max_growth must be an Integer >= 0 (bytes), got #{max_growth.inspect}"
      end
      return if max_growth_per_location.nil? || (max_growth_per_location.is_a?(Integer) && max_growth_per_location >= 0)

      raise ArgumentError, "max_growth_per_location must be nil or an Integer >= 0 (bytes), " \
                           "got #{max_growth_per_location.inspect}"
    end
  end
end
