# frozen_string_literal: true

require "spec_helper"
require "support/mwrap_api"

# Helpers for spec/stacks (MWRAP=bt, ruby_bt, app_root, dump_format): a
# script run with `ruby --disable-gems` under the built preload, its
# values read back with MwrapApiHelpers#values.
module StacksSpecHelpers
  # The test-only library outside any app directory: DocStore.parse keeps
  # every document it parses (line 9 allocates).
  DOC_STORE_LIB = File.expand_path("../growth/fixtures/app_root/vendor/doc_store/lib", __dir__)
  DOC_STORE_LINE = "#{File.join(DOC_STORE_LIB, 'doc_store.rb')}:9".freeze

  # Writes `code` to `dir/name` and runs `ruby --disable-gems -I lib
  # [-I DOC_STORE_LIB] ARGS... PATH SCRIPT_ARGS` in `chdir` with
  # MWRAP=`mwrap`; `script:` is how the script is named on the command
  # line (default: its absolute path). Returns [path, Result]; fails the
  # example unless it exits 0 with nothing on stderr (`stderr: :any`
  # allows output there).
  def run_stacks(code, dir:, mwrap:, name: "script.rb", script: nil, chdir: MwrapSpecHelpers::ROOT,
                 ruby_args: [], script_args: [], stderr: :empty)
    path = File.join(dir, name)
    File.write(path, code)
    env, cmd = ruby_command(["-I", DOC_STORE_LIB, *ruby_args, script || path, *script_args],
                            env: { "MWRAP" => mwrap }, ruby_opts: ["--disable-gems"])
    r = capture(env, *cmd, chdir: chdir)
    raise "#{name} failed:\n#{r.describe}" unless r.success?
    raise "#{name} wrote to stderr:\n#{r.describe}" if stderr == :empty && r.stderr != ""

    [path, r]
  end

  # Like run_stacks, but returns [path, values] of what the script showed
  # with `show` (MwrapApiHelpers::SHOW, loaded with -r: the script's line
  # numbers are its own).
  def stack_values(code, dir:, ruby_args: [], **opts)
    show = File.join(dir, "show.rb")
    File.write(show, MwrapApiHelpers::SHOW)
    path, r = run_stacks(code, dir: dir, ruby_args: ["-r", show, *ruby_args], **opts)
    [path, values(r.stdout)]
  end
end

RSpec.configure do |config|
  config.include StacksSpecHelpers, file_path: %r{spec/stacks/}
end
