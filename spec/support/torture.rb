# frozen_string_literal: true

# The torture suite (spec/torture) runs CI-sized by default. Examples tagged
# `torture: :long` (the soak-sized runs) only run with TORTURE=1, which
# `rake torture` sets; TORTURE_SECONDS / TORTURE_FORKS resize the others.
RSpec.configure do |config|
  config.filter_run_excluding(torture: :long) if ENV.fetch("TORTURE", "").empty?
end
