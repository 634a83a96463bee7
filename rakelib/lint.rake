# frozen_string_literal: true

require_relative "build_env"

desc "cargo clippy for every crate, warnings denied"
task :clippy do
  MwrapBuild.cargo!("clippy", "--workspace", "--all-targets", "--", "-D", "warnings")
end

desc "cargo fmt --check (FIX=1 to rewrite)"
task :fmt do
  MwrapBuild.cargo!("fmt", "--all", *(ENV["FIX"] ? [] : ["--", "--check"]))
end
