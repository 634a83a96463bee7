# frozen_string_literal: true

require_relative "gem_build"

desc "Build the source gem pkg/mwrap-VERSION.gem with its crates vendored (installs with no network)"
task gem: "gem:source"

namespace :gem do
  desc "cargo vendor --locked every crate of Cargo.lock into vendor/crates (gitignored; the source gem ships it)"
  task :vendor do
    MwrapGem.vendor!
  end

  desc "Vendor the crates, then gem build mwrap.gemspec into pkg/mwrap-VERSION.gem"
  task source: :vendor do
    MwrapGem.source_gem!
  end
end

namespace :native do
  desc "Build the platform gem pkg/mwrap-VERSION-x86_64-linux.gem (compiled libraries, no Rust needed " \
       "to install; for this Ruby's minor version)"
  task gem: :compile do
    MwrapGem.native_gem!
  end
end
