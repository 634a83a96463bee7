# frozen_string_literal: true

module Mwrap
  # Base class of every error mwrap raises itself.
  class Error < StandardError; end

  # libmwrap_preload.so is not installed where Mwrap.preload_path looks.
  class PreloadNotFound < Error; end
end
