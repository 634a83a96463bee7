# frozen_string_literal: true

require_relative "build_env"

desc "Build the extension and the preload library with cargo; copy both into lib/mwrap/"
task :compile do
  MwrapBuild.cargo!("build", "--release", "-p", "mwrap")
  MwrapBuild.cargo!("build", "--profile", "preload", "-p", "mwrap-preload")
  mkdir_p MwrapBuild::LIB_DIR
  # Copy to a temporary name and rename: a process may have the old file mapped.
  { MwrapBuild.extension_so => "mwrap_ext.so", MwrapBuild.preload_so => "libmwrap_preload.so" }.each do |src, name|
    dest = File.join(MwrapBuild::LIB_DIR, name)
    cp src, "#{dest}.tmp"
    mv "#{dest}.tmp", dest
  end
end
