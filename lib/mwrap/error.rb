# frozen_string_literal: true

module Mwrap
  # Base class of the errors mwrap raises about its own state (a missing
  # preload library). Bad arguments raise Ruby's own TypeError or an
  # ArgumentError subclass below, so `rescue ArgumentError` keeps working.
  class Error < StandardError; end

  # libmwrap_preload.so is not installed where Mwrap.preload_path looks.
  class PreloadNotFound < Error; end

  # Mwrap[location] was given a String that cannot name any location: an
  # empty String, or one holding a NUL byte. An ArgumentError, not an
  # Mwrap::Error: the caller passed a bad argument.
  class InvalidLocation < ArgumentError; end
end
