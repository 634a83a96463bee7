# frozen_string_literal: true

# Memory profiler for Ruby. Start a program under the preload library with
# the `mwrap` command; `require "mwrap"` then exposes what it recorded.
# Without the preload every query reports nothing and nothing raises, so
# `require "mwrap"` may stay in production code.
require "mwrap/version"
require "mwrap/error"
require "mwrap/preload_path"
require "mwrap/mwrap_ext"

# Ruby mallocs a method's call cache for a class the first time the method
# is called on it, at the calling line. Fill Mwrap.quiet's cache here, so
# that a program's own `Mwrap.quiet do` line records nothing.
Mwrap.quiet {}
