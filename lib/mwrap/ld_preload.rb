# frozen_string_literal: true

require "mwrap/preload_path"

module Mwrap
  # The LD_PRELOAD value that runs a child under mwrap's preload, for
  # exe/mwrap and Mwrap::RakeTask. Pure Ruby: exe/mwrap must not load the
  # extension.
  module LdPreload
    # What separates LD_PRELOAD entries: ld.so takes colons and spaces.
    SEPARATORS = /[: \t]+/.freeze

    module_function

    # `preload` first, then the entries of `inherited` in order, without
    # empty entries and stale copies of mwrap's preload (any path named
    # PRELOAD_BASENAME). Works on bytes: an entry that is not valid in the
    # locale's encoding is kept as it is. Returns a binary String.
    def value(preload, inherited = ENV.fetch("LD_PRELOAD", nil))
      entries = inherited.to_s.b.split(SEPARATORS).reject(&:empty?)
      entries.reject! { |path| File.basename(path) == PRELOAD_BASENAME }
      [preload.b, *entries].join(":")
    end
  end
end
