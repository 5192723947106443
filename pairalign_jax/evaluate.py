"""Evaluate a checkpoint: PairAlign vs its own VQ stage vs a k-means baseline, same segments.

    python -m pairalign_jax.evaluate --checkpoint=runs/demo [--config=configs/demo.py --config.eval.num_items=50]

Writes report.json, report.md and PNG plots into the workdir (or --outdir), and
calibration.json into the workdir (always: `Tokenizer.from_checkpoint` reads it there).
Model and front-end settings always come from the checkpoint; `--config` (optional) supplies the
evaluation and data settings (`config.eval.*`, `config.data.*`, `config.seed`), else the
checkpoint's own config is used. Training runs call `evaluate_workdir` at the end (and every
`eval_every_steps`).

The eval set (`evaluation/runner.py`): the config's held-out split (synthetic corpus: held-out
speakers reading held-out sentences); the archive holds one realization per content item and
the queries are other speakers' realizations. The k-means baseline is fitted on log-mel frames of
training-split segments, pooled to the encoder frame rate. PairAlign decodes with the EOS bias the
length controller reached in training plus `config.eval.eos_bias`, greedily or with a beam of
`config.eval.beam_size` (the length calibration and the report use the same decoding). The length calibration
(EOS bias -> tokens/s on held-out segments) is what `Tokenizer(target_rate=...)` interpolates.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Optional

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from pairalign_jax import checkpointing
from pairalign_jax import frontend
from pairalign_jax import tokenizer as tokenizer_lib
from pairalign_jax.data import pipeline
from pairalign_jax.evaluation import baselines
from pairalign_jax.evaluation import report as report_lib
from pairalign_jax.evaluation import runner

CALIBRATION_OFFSETS = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)   # EOS-bias offsets around the trained bias
CALIBRATION_SEGMENTS = 64


def features_fn(config: ml_collections.ConfigDict):
  """waves [N, S] -> normalized log-mel [N, F, M] (numpy), jitted once."""
  fcfg = frontend.FrontendConfig.from_config(config)
  fn = jax.jit(lambda w: frontend.normalize(frontend.log_mel(w, fcfg)))
  return lambda waves: np.asarray(fn(jnp.asarray(waves, jnp.float32)))


def fit_kmeans_baseline(config: ml_collections.ConfigDict, feats) -> baselines.KMeansTokenizer:
  """k-means on training-split frames (deterministic: the first N training records)."""
  source = pipeline.make_source(config, 'train')
  n = min(int(config.eval.kmeans_train_segments), len(source))
  waves = []
  for _, record in pipeline.eval_records(source, range(n)):
    waves.append(pipeline.load_segment(record, config, crop='center'))
  batches = [np.stack(waves[i:i + 64]) for i in range(0, len(waves), 64)]
  k = config.eval.kmeans_clusters if config.eval.kmeans_clusters > 0 else config.model.codebook_size
  sub = config.eval.kmeans_subsample if config.eval.kmeans_subsample > 0 else config.model.subsample
  logging.info('fitting k-means (K=%d) on %d training segments', k, len(waves))
  return baselines.fit_kmeans(feats, batches, n_clusters=int(k), subsample=int(sub),
                              pool=config.eval.kmeans_pool, seed=config.seed,
                              max_frames=int(config.eval.kmeans_max_frames),
                              frame_seconds=config.frontend.hop_length / config.audio.sample_rate,
                              sample_rate=config.audio.sample_rate)


def calibrate_length(tok: tokenizer_lib.Tokenizer, waves: np.ndarray, base_bias: float
                     ) -> list[tuple[float, float]]:
  """(eos_bias, tokens/s) pairs measured on `waves` around `base_bias`."""
  seconds = waves.shape[1] / tok.sample_rate
  table = []
  for off in CALIBRATION_OFFSETS:
    out = tok.tokenize(waves, tok.sample_rate, eos_bias=base_bias + off)
    table.append((base_bias + off, float(np.mean([len(t) for t in out.tokens]) / seconds)))
  return table


def evaluate_workdir(path: str, *, config: Optional[ml_collections.ConfigDict] = None,
                     outdir: Optional[str] = None) -> dict[str, Any]:
  """Evaluates the newest checkpoint under `path` (or the step folder `path`) and writes the
  report; returns the report."""
  t0 = time.time()
  path = os.path.abspath(os.fspath(path))
  # Pinned once: a run still training may commit newer steps while this one is evaluated.
  step = int(checkpointing.step_dir(path).name)
  ckpt_config = checkpointing.read_config(path, step)
  config = ckpt_config if config is None else _eval_config(ckpt_config, config)
  tok = tokenizer_lib.Tokenizer.from_checkpoint(path, step=step, batch_size=int(config.eval.batch_size),
                                                # configs saved before beam search: greedy
                                                beam_size=int(config.eval.get('beam_size', 1)),
                                                length_penalty=float(config.eval.get('beam_length_penalty', 0.0)))
  workdir = checkpointing.workdir_of(path) or path
  outdir = outdir or workdir
  feats = features_fn(ckpt_config)

  source = pipeline.make_source(config, config.eval.split)
  eval_set = runner.build_eval_set(
      source, num_items=config.eval.num_items, queries_per_item=config.eval.queries_per_item,
      seed=config.seed, sample_rate=config.audio.sample_rate,
      segment_seconds=config.audio.segment_seconds, sweep_items=config.eval.sweep_items,
      sweep_shifts_ms=config.eval.sweep_shifts_ms)

  eos_bias = tok.default_eos_bias + float(config.eval.eos_bias)
  kmeans = fit_kmeans_baseline(config, feats)
  tokenizers = {
      'pairalign': lambda w, sr: tok.tokenize(w, sr, eos_bias=eos_bias),
      'vq': tok.vq_tokenize,
      'kmeans': kmeans,
  }
  k = config.model.codebook_size
  codebook_sizes = {'pairalign': k, 'vq': k, 'kmeans': kmeans.codebook_size}
  if int(ckpt_config.targets.get('code_groups', 0)) > 0:   # the stage-1 targets, for comparison
    tokenizers['vq_groups'] = tok.vq_group_tokenize
    codebook_sizes['vq_groups'] = int(ckpt_config.targets.code_groups)
  report = runner.evaluate_tokenizers(
      tokenizers, eval_set, codebook_sizes=codebook_sizes,
      batch_size=config.eval.batch_size, ties=config.eval.retrieval_ties, seed=config.seed,
      example_features_fn=feats, example_frame_seconds=config.frontend.hop_length / config.audio.sample_rate)

  calibration = calibrate_length(tok, eval_set.waves[:CALIBRATION_SEGMENTS], tok.default_eos_bias)
  with open(os.path.join(workdir, tokenizer_lib.CALIBRATION_FILE), 'w', encoding='utf-8') as f:
    json.dump({'eos_bias_to_rate': calibration, 'step': step,
               'segments': int(min(CALIBRATION_SEGMENTS, len(eval_set.waves)))}, f, indent=1)
  tok.calibration = sorted(calibration)
  report['length_control'] = {
      'trained_eos_bias': tok.default_eos_bias, 'eval_eos_bias': eos_bias,
      'target_rate': float(ckpt_config.length.target_rate),
      'beam_size': tok.beam_size, 'beam_length_penalty': tok.length_penalty,
      'eos_bias_to_rate': [list(x) for x in calibration]}
  report['checkpoint'] = {'path': os.path.abspath(path), 'step': step}
  report['eval_seconds'] = time.time() - t0
  report_lib.write_report(report, outdir)
  h = report['headline']
  logging.info('report written to %s (archive tokens ratio %s, recall@1 difference %s)',
               os.path.join(outdir, 'report.md'), h['archive_tokens_ratio'], h['recall_at_1_difference'])
  return report


def _eval_config(ckpt_config, user_config):
  """The checkpoint's config with the user's eval/data/seed entries."""
  config = ml_collections.ConfigDict(ckpt_config.to_dict())
  config.eval = ml_collections.ConfigDict(user_config.eval.to_dict())
  config.data = ml_collections.ConfigDict(user_config.data.to_dict())
  config.seed = user_config.seed
  return config


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string('checkpoint', None, 'Workdir or checkpoint step directory.')
  flags.DEFINE_string('outdir', None, 'Where to write the report (default: the workdir).')
  config_flags.DEFINE_config_file('config', None, 'Optional config for eval/data settings.')
  flags.mark_flags_as_required(['checkpoint'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  report = evaluate_workdir(FLAGS.checkpoint, config=FLAGS.config, outdir=FLAGS.outdir)
  print(json.dumps(report_lib.to_jsonable(report['headline'])))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
