"""Evaluate a checkpoint: PairAlign vs its own VQ stage vs a k-means baseline, same segments.

    python -m pairalign_jax.evaluate --checkpoint=runs/demo \
        [--config=configs/demo.py --config.eval.num_items=50] [--tokenizers=pairalign,vq_groups]

Writes report.json, report.md and PNG plots into the workdir (or --outdir), and
calibration.json into the workdir (with the EMA teacher's parameters, the default; not with
`--params=student`: `Tokenizer.from_checkpoint` reads it there). With `config.eval.beam_size` > 1
the greedy-only decoding options (`eval.snap_times`, `eval.align_frames`, ...) are not used
(logged).
Model and front-end settings always come from the checkpoint; `--config` (optional) supplies the
evaluation and data settings (`config.eval.*`, `config.data.*`, `config.seed`), else the
checkpoint's own config is used. Training runs call `evaluate_workdir` at the end (and every
`eval_every_steps`).

The eval set (`evaluation/runner.py`): the split `config.eval.split` ('validation', where every
setting is chosen, or 'test', where claims are reported; synthetic corpus: that split's own
speakers reading its own sentences); the archive holds one realization per content item and the
queries are other speakers' realizations, with the archive rotated over the speakers
(`config.eval.archive_rotations`). The baselines are fitted on training-split segments only:
k-means on log-mel frames pooled to the encoder frame rate, and the MFCC k-means recipes of
`evaluation/baselines.py` (`mfcc_kmeans`: 64 clusters on 10 ms MFCC frames; `mfcc_kmeans_matched`:
16 clusters, 20 ms frames, runs under 2 frames merged, near PairAlign's token rate). PairAlign
decodes with the EOS bias the length controller reached in training plus `config.eval.eos_bias`,
greedily or with a beam of `config.eval.beam_size` (the length calibration and the report use the
same decoding). The length calibration (EOS bias -> tokens/s on held-out segments) is what
`Tokenizer(target_rate=...)` interpolates.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from pairalign_jax import checkpointing
from pairalign_jax import config_lib
from pairalign_jax import frontend
from pairalign_jax import tokenizer as tokenizer_lib
from pairalign_jax.data import augment
from pairalign_jax.data import pipeline
from pairalign_jax.evaluation import baselines
from pairalign_jax.evaluation import report as report_lib
from pairalign_jax.evaluation import runner

# Every tokenizer a report can hold (`evaluate_workdir(tokenizers=...)` picks some of them).
TOKENIZER_NAMES = ('pairalign', 'vq', 'vq_groups', 'kmeans', 'mfcc_kmeans', 'mfcc_kmeans_matched')

# EOS-bias offsets around the trained bias.
CALIBRATION_OFFSETS = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
CALIBRATION_SEGMENTS = 64


def features_fn(config: ml_collections.ConfigDict):
  """waves [N, S] -> normalized log-mel [N, F, M] (numpy), jitted once."""
  fcfg = frontend.FrontendConfig.from_config(config)
  fn = jax.jit(lambda w: frontend.normalize(frontend.log_mel(w, fcfg)))
  return lambda waves: np.asarray(fn(jnp.asarray(waves, jnp.float32)))


def query_augmentation(config: ml_collections.ConfigDict, source) -> Optional[runner.AugmentFn]:
  """None when `source` has parallel readings (queries are other speakers' readings); else the
  training augmentation (`config.data.augment`) applied to every query, so that a corpus without
  repeated content (a folder, most of LibriSpeech) is evaluated on augmented copies."""
  parallel = runner.parallel_item_count(source)
  if parallel >= 2:
    return None
  logging.warning(
    'the %s source has %d content items read more than once: the queries are '
    'augmented copies of the archive recordings (config.data.augment)',
    config.data.source,
    parallel,
  )
  aug_cfg, sr = config.data.augment, int(config.audio.sample_rate)
  return lambda wave, rng: augment.augment_view(wave, rng, aug_cfg, sr, time_warp=True)


def check_evaluation_source(config: ml_collections.ConfigDict, split: Optional[str] = None) -> None:
  """Raises ValueError, naming the settings, when the evaluation split (or `split`) cannot give
  an eval set (at least two records: with parallel readings two content items, else augmented
  queries). Training calls it before the first step."""
  split = pipeline.canonical_split(config.eval.split if split is None else split)
  source = pipeline.make_source(config, split)
  if len(source) < 2:
    raise ValueError(
      f'the {split!r} split of config.data.source={config.data.source!r} has '
      f'{len(source)} record(s); the evaluation needs at least 2 (set '
      'config.data.eval_path, or raise config.data.heldout_fraction)'
    )
  cids = runner.listed_content_ids(source)  # None: known only by reading every record
  if cids is not None and len(runner.eligible_items(cids, 2)) < 2 and len(set(cids)) < 2:
    raise ValueError(
      f'the {split!r} split of config.data.source={config.data.source!r} has {len(source)} '
      f'records of {len(set(cids))} content item (content_id, or text, shared by all): the '
      'evaluation needs two items (with augmented queries) or two items read twice; give the '
      'records their own content_id'
    )
  logging.info('evaluation split %r: %d records', split, len(source))


def build_split_eval_set(
  config: ml_collections.ConfigDict,
  *,
  split: Optional[str] = None,
  sweep_items: Optional[int] = None,
) -> runner.EvalSet:
  """The evaluation set of `split` (default `config.eval.split`) as every report builds it
  (`config.eval`: items, queries, rotations; augmented queries where the split has no parallel
  readings); `sweep_items` overrides `config.eval.sweep_items`."""
  split = pipeline.canonical_split(config.eval.split if split is None else split)
  source = pipeline.make_source(config, split)
  return runner.build_eval_set(
    source,
    num_items=config.eval.num_items,
    queries_per_item=config.eval.queries_per_item,
    seed=config.seed,
    sample_rate=config.audio.sample_rate,
    segment_seconds=config.audio.segment_seconds,
    sweep_items=config.eval.sweep_items if sweep_items is None else sweep_items,
    sweep_shifts_ms=config.eval.sweep_shifts_ms,
    archive_rotations=int(config.eval.get('archive_rotations', 1)),
    augment_fn=query_augmentation(config, source),
  )


def training_segments(config: ml_collections.ConfigDict) -> list[np.ndarray]:
  """Batches `[<= 64, S]` of the first `config.eval.kmeans_train_segments` training-split
  segments (centre crops): what the k-means baselines are fitted on (deterministic)."""
  source = pipeline.make_source(config, 'train')
  n = min(int(config.eval.kmeans_train_segments), len(source))
  waves = [
    pipeline.load_segment(record, config, crop='center')
    for _, record in pipeline.eval_records(source, range(n))
  ]
  if not waves:
    raise ValueError(
      'the k-means baselines need training segments; the training split is empty '
      '(config.eval.kmeans_train_segments, config.data.path)'
    )
  return [np.stack(waves[i : i + 64]) for i in range(0, len(waves), 64)]


def fit_kmeans_baseline(
  config: ml_collections.ConfigDict, feats, train_batches: Optional[list[np.ndarray]] = None
) -> baselines.KMeansTokenizer:
  """k-means on log-mel frames of training-split segments."""
  batches = training_segments(config) if train_batches is None else train_batches
  k, sub = config_lib.kmeans_baseline_size(config)
  logging.info(
    'fitting log-mel k-means (K=%d) on %d training segments', k, sum(len(b) for b in batches)
  )
  return baselines.fit_kmeans(
    feats,
    batches,
    n_clusters=k,
    subsample=sub,
    pool=config.eval.kmeans_pool,
    seed=config.seed,
    max_frames=int(config.eval.kmeans_max_frames),
    frame_seconds=config_lib.mel_frame_seconds(config),
    sample_rate=config.audio.sample_rate,
  )


def fit_mfcc_baselines(
  config: ml_collections.ConfigDict, train_batches: list[np.ndarray]
) -> dict[str, baselines.KMeansTokenizer]:
  """The MFCC k-means baselines (`baselines.MFCC_RECIPES`), fitted on training-split segments."""
  out = {}
  for name, recipe in baselines.MFCC_RECIPES.items():
    logging.info('fitting %s (%s)', name, recipe)
    out[name] = baselines.fit_mfcc_kmeans(
      train_batches,
      sample_rate=config.audio.sample_rate,
      seed=config.seed,
      max_frames=int(config.eval.kmeans_max_frames),
      **recipe,
    )
  return out


def calibrate_length(
  tok: tokenizer_lib.Tokenizer, waves: np.ndarray, base_bias: float
) -> list[tuple[float, float]]:
  """(eos_bias, tokens/s) pairs measured on `waves` around `base_bias`."""
  seconds = waves.shape[1] / tok.sample_rate
  table = []
  for off in CALIBRATION_OFFSETS:
    out = tok.tokenize(waves, tok.sample_rate, eos_bias=base_bias + off)
    table.append((base_bias + off, float(np.mean([len(t) for t in out.tokens]) / seconds)))
  return table


def evaluate_workdir(
  path: str,
  *,
  config: Optional[ml_collections.ConfigDict] = None,
  outdir: Optional[str] = None,
  params: str = 'teacher',
  tokenizers: Optional[Sequence[str]] = None,
) -> dict[str, Any]:
  """Evaluates the newest checkpoint under `path` (or the step folder `path`) and writes the
  report; returns the report. `params`: 'teacher' (the EMA teacher, what `Tokenizer` loads by
  default) or 'student' (the trained parameters; e.g. to follow the decoder during stage 1, when
  the teacher is the frozen end of stage 0). Only the teacher's length calibration is written
  next to the checkpoints (`calibration.json`, which `Tokenizer.from_checkpoint` reads).
  `tokenizers`: the names of `TOKENIZER_NAMES` to evaluate (default: all; 'vq_groups' only for a
  model trained on code groups); the baselines left out are not fitted, so a PairAlign-only
  reading (e.g. a decoding setting compared across checkpoints) takes seconds instead of
  minutes. The headline then compares what is there."""
  if params not in ('teacher', 'student'):
    raise ValueError(f"params must be 'teacher' or 'student', got {params!r}")
  wanted = set(TOKENIZER_NAMES if tokenizers is None else tokenizers)
  unknown = sorted(wanted - set(TOKENIZER_NAMES))
  if unknown or not wanted:
    raise ValueError(
      f'tokenizers must be a non-empty subset of {TOKENIZER_NAMES}, got {tokenizers}'
    )
  t0 = time.time()
  path = os.path.abspath(os.fspath(path))
  # Pinned once: a run still training may commit newer steps while this one is evaluated.
  step = int(checkpointing.step_dir(path).name)
  ckpt_config = checkpointing.read_config(path, step)
  config = ckpt_config if config is None else _eval_config(ckpt_config, config)
  tok = tokenizer_lib.Tokenizer.from_checkpoint(
    path,
    step=step,
    use_teacher=params == 'teacher',
    batch_size=int(config.eval.batch_size),
    beam_size=int(config.eval.beam_size),
    length_penalty=float(config.eval.beam_length_penalty),
    **tokenizer_lib.decoding_options(config.eval, int(config.eval.beam_size)),
  )
  workdir = checkpointing.workdir_of(path) or path
  outdir = outdir or workdir
  feats = features_fn(ckpt_config)

  split = pipeline.canonical_split(config.eval.split)
  logging.info('evaluating step %d on the %r split', step, split)
  eval_set = build_split_eval_set(config)

  eos_bias = tok.default_eos_bias + float(config.eval.eos_bias)
  k = config.model.codebook_size
  fns = {
    'pairalign': lambda w, sr: tok.tokenize(w, sr, eos_bias=eos_bias),
    'vq': tok.vq_tokenize,
  }
  codebook_sizes = {'pairalign': k, 'vq': k}
  if wanted & {'kmeans', 'mfcc_kmeans', 'mfcc_kmeans_matched'}:
    train_batches = training_segments(config)
    if 'kmeans' in wanted:
      fns['kmeans'] = fit_kmeans_baseline(config, feats, train_batches)
      codebook_sizes['kmeans'] = fns['kmeans'].codebook_size
    if wanted & {'mfcc_kmeans', 'mfcc_kmeans_matched'}:
      for name, baseline in fit_mfcc_baselines(config, train_batches).items():
        fns[name] = baseline
        codebook_sizes[name] = baseline.codebook_size
  if int(ckpt_config.targets.get('code_groups', 0)) > 0:  # the stage-1 targets, for comparison
    fns['vq_groups'] = tok.vq_group_tokenize
    codebook_sizes['vq_groups'] = int(ckpt_config.targets.code_groups)
  fns = {name: fn for name, fn in fns.items() if name in wanted}
  report = runner.evaluate_tokenizers(
    fns,
    eval_set,
    codebook_sizes=codebook_sizes,
    batch_size=config.eval.batch_size,
    ties=config.eval.retrieval_ties,
    seed=config.seed,
    example_features_fn=feats,
    example_frame_seconds=config_lib.mel_frame_seconds(config),
  )

  calibration = calibrate_length(tok, eval_set.waves[:CALIBRATION_SEGMENTS], tok.default_eos_bias)
  if params == 'teacher':
    with open(os.path.join(workdir, tokenizer_lib.CALIBRATION_FILE), 'w', encoding='utf-8') as f:
      json.dump(
        {
          'eos_bias_to_rate': calibration,
          'step': step,
          'segments': int(min(CALIBRATION_SEGMENTS, len(eval_set.waves))),
        },
        f,
        indent=1,
      )
  tok.calibration = sorted(calibration)
  report['length_control'] = {
    'trained_eos_bias': tok.default_eos_bias,
    'eval_eos_bias': eos_bias,
    'target_rate': float(ckpt_config.length.target_rate),
    'beam_size': tok.beam_size,
    'snap_times': tok.snap_times,
    'align_frames': tok.align_frames,
    'choose_from_runs': tok.choose_from_runs,
    'end_at_last_run': tok.end_at_last_run,
    'beam_length_penalty': tok.length_penalty,
    'eos_bias_to_rate': [list(x) for x in calibration],
  }
  report['checkpoint'] = {'path': os.path.abspath(path), 'step': step, 'params': params}
  report['eval_set']['split'] = split
  report['eval_seconds'] = time.time() - t0
  report_lib.write_report(report, outdir)
  h = report['headline']
  logging.info(
    'report written to %s (archive tokens ratio %s, recall@1 difference %s)',
    os.path.join(outdir, 'report.md'),
    h['archive_tokens_ratio'],
    h['recall_at_1_difference'],
  )
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
  flags.DEFINE_enum(
    'params',
    'teacher',
    ['teacher', 'student'],
    'Which parameters tokenize: the EMA teacher (the tokenizer a run ships) or the student.',
  )
  flags.DEFINE_list(
    'tokenizers',
    list(TOKENIZER_NAMES),
    f'Tokenizers to evaluate, of {TOKENIZER_NAMES}; the baselines left out are not fitted.',
  )
  flags.mark_flags_as_required(['checkpoint'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  report = evaluate_workdir(
    FLAGS.checkpoint,
    config=FLAGS.config,
    outdir=FLAGS.outdir,
    params=FLAGS.params,
    tokenizers=FLAGS.tokenizers,
  )
  print(json.dumps(report_lib.to_jsonable(report['headline'])))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
