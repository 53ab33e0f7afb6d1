"""Jobs: what one run computes, as typed data, and how a request becomes jobs.

- `harness.jobs.spec`: `JobSpec` / `ListSpec` (typed: the method's built configuration, the
  `Schedule`, the `DataOptions`), the job's identity record and id;
- `harness.jobs.identity`: the hashing rules (`short_hash`), the execution-only keys and
  `RESULTS_FORMAT` (standard library only: the store and the report tables read them);
- `harness.jobs.expand`: `RunRequest` -> jobs (`expand_jobs`): splits, shots, recipes, each
  method's configuration built once, the protocol's files and hash, zero-shot targets, sampled
  k-shot lists;
- `harness.jobs.descriptions`: where a job's class descriptions are (the training classes', and
  every scored list's for methods with "scored_descriptions"), and their fingerprints.

The files themselves are found by `harness.data.resolver.FileResolver` (below this layer).
"""
