"""`harness reproduce <suite>`: a published table as one command (docs/reproduce.md).

`suite` reads a suite (protocols/suites/<name>.yaml: source, methods, protocol, datasets, splits
/ shots, recipe, frames, views, which quoted rows of harness/reports/published.csv it compares
with, tolerance); `plan` turns it into the jobs of ordinary runs, with what is missing (videos,
weights, split files) and their estimated cost (harness/measure/cost.py); `table` builds the
paper-layout table of measured vs published values with a verdict per cell.
"""
