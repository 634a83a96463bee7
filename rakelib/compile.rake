# frozen_string_literal: true

require_relative "build_env"

desc "Build both libraries into lib/mwrap/ as `gem install` does: ext/mwrap/extconf.rb and make, in tmp/ext"
task :compile do
  MwrapBuild.compile!
end
