"""Cross-run reports: the papers' table layouts (Markdown, CSV, LaTeX), quoted published rows,
plots and `harness status`, built from any set of results folders.

`aggregate` collects job records (one per job id across folders), `tables` lays them out as the
papers do, `render` / `latex` write them, `published` holds the quoted numbers, `plots` draws,
`status` reports job states. The per-run summary written after every `harness run` stays in
`harness.report`.
"""
