# frozen_string_literal: true

module Mwrap
  VERSION = "0.1.0"
end
