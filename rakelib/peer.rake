# frozen_string_literal: true

require "rbconfig"

# The peer suite: mwrap 2.1's own test/test_mwrap.rb run against this gem
# (spec/peer/run.rb; spec/peer/README.md). The file is not in this
# repository: name it with PEER_TEST=file or PEER_MWRAP_DIR=checkout.
desc "Run mwrap 2.1's test/test_mwrap.rb against this gem (PEER_TEST=file or PEER_MWRAP_DIR=checkout; " \
     "PEER_TIMEOUT, PEER_MIN_PASS, PEER_ARGS, PEER_KEEP, PEER_WARM)"
task :peer do
  # Without a file the script only says where to get one: no build for that.
  given = %w[PEER_TEST PEER_MWRAP_DIR].any? { |k| !ENV.fetch(k, "").strip.empty? }
  Rake::Task[:compile].invoke if given
  system(RbConfig.ruby, File.expand_path("../spec/peer/run.rb", __dir__)) or exit($?.exitstatus || 1)
end
