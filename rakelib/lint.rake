# frozen_string_literal: true

require_relative "build_env"

desc "cargo clippy for every crate and target, warnings denied"
task :clippy do
  MwrapBuild.cargo_locked!("clippy", "--workspace", "--all-targets", "--", "-D", "warnings")
end

desc "cargo fmt --check (FIX=1 to rewrite)"
task :fmt do
  MwrapBuild.cargo!("fmt", "--all", *(ENV["FIX"] ? [] : ["--", "--check"]))
end

namespace :fmt do
  desc "cargo fmt --check, whatever FIX says (what rake test runs)"
  task :check do
    MwrapBuild.cargo!("fmt", "--all", "--", "--check")
  end
end

desc "What rake test checks first: cargo fmt --check, then clippy with warnings denied"
task lint: ["fmt:check", :clippy]
