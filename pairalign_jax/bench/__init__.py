"""Speed benchmark: train step, decoding, input pipeline and retrieval (README "Performance").

    python -m pairalign_jax.bench [--config=configs/demo.py] [--out=bench.json] [--tiny]

Writes one JSON file and prints a table. Every speed figure that has a goal is a *ratio of two
timings taken in the same run*, interleaved where possible, because the machines this runs on are
shared and noisy (absolute seconds are reported too, for reference). Sections, each with its
`device` (CPU model or GPU name, core count, jax version):

* `train_step`: the compiled train step of `--config` (label from the file name, e.g. 'demo') and
  of `--base_config` ('default', the base model) at stage 0 and stage 2 (`--train_entries`; the
  base config's stage 2 runs at batch 8, 'base:2@8': at its batch 32 the step needs 16 GB of
  temporary buffers).
  Model FLOPs per step come from XLA `cost_analysis()` of an *unrolled* lowering of the same step
  (`model.scan_layers=False`, `model.remat=False`, `loss.score_chunk_rows=0`: `cost_analysis`
  counts the body of a scan or `lax.map` once, and recomputation by remat or by the scoring
  chunks' `jax.checkpoint` is not model work); in stage 2 the teacher's greedy decode is a
  `lax.scan` over `max_len` steps, whose body is counted once, so `(max_len - 1)` times the cost of
  one decoder step is added. The step time is the median of `reps` calls; after each call a large
  float32 `jnp.matmul` is timed (median of 3 calls), and `train_flops_ratio` = (FLOPs / median
  step time) / (matmul FLOPs / median matmul time). `--levers=base:2@8` also times variants of an
  entry (remat off, remat keeping the matmul outputs (`model.remat_policy`), unrolled layers,
  batch size x2 / x1/2; `--lever_names` picks some) with the entry as configured timed
  after every variant step (`flops_rate_vs_baseline_interleaved`: same load), and oneDNN dot
  fusion via XLA_FLAGS in a subprocess (compared through each process's matmul peak).
* `decode`: greedy decoding of 64 rows at L = 128 (the `--config` model with `max_len` = 128, random
  initialization) with the KV cache (`decode.greedy_decode`) vs re-scoring the prefix every step
  (`decode.greedy_decode_recompute`): `decode_cache_speedup`. Then `Tokenizer.tokenize` end to end
  (log-mel, encoder, cached greedy decode, host post-processing) on 64 three-second waveforms with
  the `--config` model as configured: `tokenize_realtime_factor` = seconds of audio per second of
  wall time. A randomly initialized model never emits EOS, so every row decodes `max_len` tokens:
  the worst case (the decode loop always runs `max_len` steps; only host work depends on length).
  `tokenize_flops` (here and for `--checkpoint`'s trained tokenizer): the call's model FLOPs, XLA
  `cost_analysis()` of the front end + encoder + decoder condition (layers unrolled) plus one
  cached decoder step per decode step run (until every row has written EOS, else `max_len`); per
  second of audio, the share of the same run's matmul peak reached, and the real-time factor
  that peak would give at a share of 1 (the physical limit).
* `input`: examples/s of the two-view Grain pipeline (`data.pipeline.make_train_dataset`, all
  augmentations on, `align_views_in_stage0=False`) on the synthetic source and on a folder of FLAC
  files written to a temp dir, with `worker_count` 0 and 2 (steady state: the batches the
  prefetch buffers can hold are skipped); `input_headroom` = pipeline ex/s (best worker count,
  synthetic source) / train ex/s of the `--config` step at its fastest stage (the one the
  pipeline must keep up with), that step re-timed before and after the pipeline runs.
* `search`: 1 000 queries against an archive of 10 000 random token strings: the project's
  `evaluation.retrieval.evaluate_retrieval` vs one direct `rapidfuzz.process.cdist` call:
  `search_ratio` = direct time / project time.

`--tiny` shrinks every size (a few seconds of compute; for tests/bench_test.py, which checks the
schema, not the speeds). `--sections=...` runs a subset; with `--update` the sections run replace
those in an existing `--out` file (a lever run adds its levers beside the entries). Compiled
programs go to JAX's persistent compilation cache in `--compile_cache` (default
~/.cache/pairalign_jax/bench_xla_cache; '' = off): compile times are reported but are in no ratio.

Modules (each section takes its sizes as arguments; only `__main__.py` reads flags):
`common.py` (timing, device record, config overrides, tiny config, matmul peak), `train_step.py`,
`levers.py` (the lever variants, the subprocess that runs the XLA-flag ones), `decode.py` (decode
and the trained tokenizer), `input_pipeline.py`, `search.py`, `report.py` (goals, `--update`
merge, printed table), `runner.py` (one run: sections, sizes, results file), `__main__.py` (flags).
Importing the package defines no absl flags and imports no jax.
"""
