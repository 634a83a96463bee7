# frozen_string_literal: true

require "mwrap/error"

module Mwrap
  # File name of the LD_PRELOAD library, installed next to the extension.
  PRELOAD_BASENAME = "libmwrap_preload.so"

  # Absolute path of the first mwrap/libmwrap_preload.so on $LOAD_PATH.
  # Loading this file does not load the extension (bin/mwrap relies on it).
  def self.preload_path
    $LOAD_PATH.each do |dir|
      dir = dir.to_path if dir.respond_to?(:to_path)
      next unless dir.is_a?(String)

      path = File.expand_path(File.join("mwrap", PRELOAD_BASENAME), dir)
      return path if File.file?(path)
    end
    raise PreloadNotFound,
          "mwrap/#{PRELOAD_BASENAME} was not found in any $LOAD_PATH directory; " \
          "build it with `rake compile` in a checkout, or reinstall the mwrap gem"
  end
end
