"""Jobs: what one run computes, as typed data, and how a request becomes jobs.

- `harness.jobs.spec`: `JobSpec` / `ListSpec` (typed: the method's built configuration, the
  `Schedule`, the `DataOptions`), the job's identity and id, `RESULTS_FORMAT`, the execution-only
  keys, `short_hash`;
- `harness.jobs.expand`: `RunRequest` -> jobs (`expand_jobs`): splits, shots, recipes, each
  method's configuration built once, the protocol's files and hash, zero-shot targets, sampled
  k-shot lists;
- `harness.jobs.descriptions`: where a job's class descriptions are, and their fingerprints.

The files themselves are found by `harness.data.resolver.FileResolver` (below this layer).
"""
