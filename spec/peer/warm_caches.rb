# frozen_string_literal: true

# Diagnosis only (PEER_WARM=1 rake peer), never the peer result: loaded
# through RUBYOPT into every Ruby process of the peer suite, it calls once
# the methods that the suite's tests call first on the lines they measure
# (String#*, String#clear, Mwrap.quiet). Ruby >= 3.0 mallocs a class's
# method-call cache entries the first time a method is called on it, and
# the preload charges them to the calling line; calling the methods here
# charges those allocations to this file instead. A test that fails
# without this and passes with it failed by those allocations alone.
lib = File.expand_path("../../lib", __dir__)
$LOAD_PATH.unshift(lib) unless $LOAD_PATH.include?(lib)
require "mwrap"

("0" * 2).clear
Mwrap.quiet {}
