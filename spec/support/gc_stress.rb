# frozen_string_literal: true

# With MWRAP_GC_STRESS=1 (`rake spec:gc_stress`), loaded with `ruby -r`
# into every process the specs spawn (see spawn_options.rb) and into the
# rspec process itself: every public method of Mwrap,
# Mwrap::SourceLocation and Mwrap::HeapPageBody then runs with
# GC.stress = true, so a Ruby object the extension forgot to keep
# reachable is collected under it. Blocks the methods yield to run with
# GC.stress off again (they are the spec's code, not the extension's).
# Without MWRAP_GC_STRESS=1 loading it does nothing.

module MwrapGcStress
  module_function

  def stressed
    saved = GC.stress
    GC.stress = true
    yield
  ensure
    GC.stress = saved
  end

  def relaxed
    saved = GC.stress
    GC.stress = false
    yield
  ensure
    GC.stress = saved
  end

  # Prepends to `target` a module redefining `names` around GC.stress.
  def wrap(target, names)
    wrapper = Module.new do
      names.each do |name|
        define_method(name) do |*args, &blk|
          MwrapGcStress.stressed do
            if blk
              super(*args) { |*yielded| MwrapGcStress.relaxed { blk.call(*yielded) } }
            else
              super(*args)
            end
          end
        end
      end
    end
    target.prepend(wrapper)
  end

  def install
    return if @installed

    @installed = true
    wrap(Mwrap.singleton_class, Mwrap.singleton_methods(false) - [:preload_path])
    wrap(Mwrap::SourceLocation, Mwrap::SourceLocation.public_instance_methods(false))
    wrap(Mwrap::HeapPageBody.singleton_class, Mwrap::HeapPageBody.singleton_methods(false))
  end
end

if ENV["MWRAP_GC_STRESS"] == "1"
  lib = File.expand_path("../../lib", __dir__)
  if File.file?(File.join(lib, "mwrap", "mwrap_ext.so"))
    $LOAD_PATH.unshift(lib) unless $LOAD_PATH.include?(lib)
    require "mwrap"
    MwrapGcStress.install
  end
end
