# frozen_string_literal: true

# One round of the module_eval_leak example (see ../module_eval_leak.rb).
GrowthExamples::ModuleEvalLeak.round
