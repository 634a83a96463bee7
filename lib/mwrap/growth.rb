# frozen_string_literal: true

# Mwrap::Growth and Mwrap.measure_growth, in four files:
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
