# frozen_string_literal: true

# Measuring how much memory a workload keeps each time it runs, per Ruby
# line (or native caller), to fail a build when it keeps growing. See
# Mwrap.measure_growth and the README's "Memory checks in CI".
#
# - growth/measure.rb: running the workload and taking the snapshots
#   (needs the extension, and the preload to record anything);
# - growth/analysis.rb: deciding which locations grew, on plain data;
# - growth/report.rb: the Report, its verdict, table and JSON;
# - growth/options.rb: the checks of keywords and values they all take.
require "mwrap/growth/options"
require "mwrap/growth/report"
require "mwrap/growth/analysis"
require "mwrap/growth/measure"
