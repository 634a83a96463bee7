# frozen_string_literal: true

# One round of the native_thread_leak example (see ../native_thread_leak.rb).
GrowthExamples::NativeThreadLeak.round
