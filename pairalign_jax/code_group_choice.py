"""Choosing the code grouping once, at the start of stage 1, by how well it tells training
recordings apart (`config.targets.group_candidates > 1`).

Why (measured, docs/METHOD.md §11): k-means of one frozen codebook into 16 groups has many
solutions, and which one a run gets moves its targets' validation recall@1 by up to 0.07 at about
the same length (small-corpus seeds 0-2: 0.94-0.98, 0.81-0.97, 0.75-0.97 over 21 initial-centre
draws; the farthest-point grouping every run used before: 0.95, 0.89, 0.94). What separates the
good groupings can be read from training audio alone: two augmentations of one recording should
give near strings, two recordings far ones.

The choice (pure functions of the run's config, its stage-0 parameters and its training data; the
same on every process and on a resume):

1. `group_choice_recordings` training recordings (drawn with the run's seed; bad files counted and
   skipped), each augmented twice on one time axis (`augment.augment_view(time_warp=False)`, plus
   each view's own VTLP warp where the front end has one), encoded by the EMA teacher: VQ frame
   codes `[R, T]` for each view (what the stage-1 targets are made of).
2. `group_candidates` groupings of the frozen codebook (`code_groups.candidate_groupings`).
3. For each: the views' frame codes mapped to groups, short runs merged, repeats collapsed; its
   rate (tokens/s) and its **view margin** (:func:`view_margin`): the mean, over recordings, of
   the normalized edit distance from view A's string to the other recordings' view-B strings minus
   the distance to its own view B.
4. Kept: the largest margin among the candidates no longer than `group_choice_max_rate_ratio` x
   the VQ stage's collapsed strings of the same views (the archive budget); the shortest one when
   none fits (logged).

With `config.targets.group_choice = 'validation_recall'` steps 1 and 3 read the validation split
instead: its evaluation set (`evaluate.build_split_eval_set`, as every report builds it) encoded
as the tokenizer encodes audio, each candidate's strings retrieved as the evaluation retrieves them
(recall@1 pooled over the archive rotations), the largest recall@1 kept within the same budget.
Where the view margin ranks a run's candidates poorly (docs/results.md: a seed whose candidates
span 0.76-0.94 on validation, the margin keeping a 0.79 one), this is the choice a researcher
would make by hand on validation; its cost is that the run's validation figures are no longer
unbiased, so its claims are read on the test split.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from pairalign_jax import code_groups as code_groups_lib
from pairalign_jax import frontend
from pairalign_jax import models
from pairalign_jax import sequences
from pairalign_jax import targets as targets_lib
from pairalign_jax import token_strings
from pairalign_jax.data import augment
from pairalign_jax.data import pipeline
from pairalign_jax.evaluation import retrieval
from pairalign_jax.evaluation import runner

# fold_in tags of the choice's random streams (the seed's key; distinct from training's).
_CANDIDATE_STREAM = 0x67726F
_VTLP_STREAM = 0x76746C


MEASURES = ('view_margin', 'validation_recall')


@dataclasses.dataclass(frozen=True)
class GroupChoice:
  """What the choice measured: one entry per candidate grouping."""

  index: int  # the kept candidate
  scores: np.ndarray  # [N] the measure of each candidate (larger is better)
  rates: np.ndarray  # [N] tokens/s of the candidates' strings
  vq_rate: float  # tokens/s of the VQ codes' collapsed strings (same audio)
  max_rate: float  # the budget: max_rate_ratio * vq_rate
  fits: np.ndarray  # [N] bool: rate <= max_rate
  measure: str = 'view_margin'  # one of MEASURES

  def as_dict(self) -> dict[str, Any]:
    return {
      'chosen': self.index,
      'measure': self.measure,
      self.measure: [float(m) for m in self.scores],
      'tokens_per_second': [float(r) for r in self.rates],
      'vq_tokens_per_second': float(self.vq_rate),
      'max_tokens_per_second': float(self.max_rate),
      'within_budget': [bool(f) for f in self.fits],
    }


def collapsed_strings(frame_codes: np.ndarray) -> list[list[int]]:
  """Frame codes [R, T] -> one string per row, consecutive repeats collapsed."""
  codes = np.asarray(frame_codes)
  if codes.ndim != 2:
    raise ValueError(f'frame codes must be [R, T], got shape {codes.shape}')
  return [token_strings.collapse_repeats(row)[0].tolist() for row in codes]


def view_margin(strings_a: Sequence[Sequence[int]], strings_b: Sequence[Sequence[int]]) -> float:
  """mean_i [ mean_{j != i} d(a_i, b_j) - d(a_i, b_i) ], d the normalized edit distance: how much
  nearer each recording's view A is to its own view B than to the other recordings' (larger is
  better). Needs at least two recordings."""
  if len(strings_a) != len(strings_b):
    raise ValueError(f'view strings differ in number: {len(strings_a)} vs {len(strings_b)}')
  n = len(strings_a)
  if n < 2:
    raise ValueError(f'view_margin needs at least 2 recordings, got {n}')
  dist = retrieval.distance_matrix(strings_a, strings_b).astype(np.float64)  # [n, n]
  own = np.diag(dist)
  others = (dist.sum(axis=1) - own) / (n - 1)
  return float(np.mean(others - own))


@functools.partial(jax.jit, static_argnames=('min_run_frames',))
def _group_frames(groups, codes, min_run_frames: int):
  """[K] groups, [R, T] codes -> [R, T] group frames with short runs merged (as the targets)."""
  return sequences.prune_short_runs(jnp.take(groups, codes, axis=0), min_run_frames)


def _rate(strings: Sequence[Sequence[int]], segment_seconds: float) -> float:
  return float(np.mean([len(s) for s in strings])) / float(segment_seconds)


def _keep(measure: str, scores, rates, vq_rate: float, max_rate_ratio: float) -> GroupChoice:
  """The largest score among the candidates within `max_rate_ratio` x `vq_rate` (ties: the lower
  index); the shortest candidate when none fits."""
  scores, rates = np.asarray(scores, np.float64), np.asarray(rates, np.float64)
  max_rate = float(max_rate_ratio) * float(vq_rate)
  fits = rates <= max_rate
  if fits.any():
    index = int(np.argmax(np.where(fits, scores, -np.inf)))
  else:
    index = int(np.argmin(rates))
  return GroupChoice(index, scores, rates, float(vq_rate), max_rate, fits, measure)


def _check_candidates(candidates: np.ndarray) -> np.ndarray:
  candidates = np.asarray(candidates)
  if candidates.ndim != 2 or candidates.shape[0] < 1:
    raise ValueError(f'candidates must be [N >= 1, K], got shape {candidates.shape}')
  return candidates


def grouped_strings(groups: np.ndarray, codes: np.ndarray, min_run_frames: int) -> list[list[int]]:
  """One grouping [K] applied to VQ frame codes [R, T] as the targets are made: codes mapped to
  their group, runs shorter than `min_run_frames` merged, repeats collapsed."""
  frames = _group_frames(jnp.asarray(groups), jnp.asarray(codes), min_run_frames)  # [R, T]
  return collapsed_strings(np.asarray(frames))


def choose_grouping(
  candidates: np.ndarray,
  codes_a: np.ndarray,
  codes_b: np.ndarray,
  *,
  min_run_frames: int,
  segment_seconds: float,
  max_rate_ratio: float,
) -> GroupChoice:
  """Candidates [N, K] (group id per code), the two views' VQ frame codes [R, T] -> the choice by
  view margin (module docstring, steps 3-4). Ties go to the lower index."""
  candidates = _check_candidates(candidates)
  codes_a, codes_b = np.asarray(codes_a), np.asarray(codes_b)
  if codes_a.shape != codes_b.shape or codes_a.ndim != 2:
    raise ValueError(f'view codes must both be [R, T], got {codes_a.shape} and {codes_b.shape}')
  vq_rate = 0.5 * sum(_rate(collapsed_strings(c), segment_seconds) for c in (codes_a, codes_b))
  margins, rates = [], []
  for groups in candidates:
    strings = [grouped_strings(groups, c, min_run_frames) for c in (codes_a, codes_b)]
    margins.append(view_margin(*strings))
    rates.append(0.5 * sum(_rate(s, segment_seconds) for s in strings))
  return _keep('view_margin', margins, rates, vq_rate, max_rate_ratio)


def choose_grouping_by_recall(
  candidates: np.ndarray,
  codes: np.ndarray,
  rotations: Sequence[runner.Rotation],
  *,
  min_run_frames: int,
  segment_seconds: float,
  max_rate_ratio: float,
  ties: str = 'expected',
) -> GroupChoice:
  """Candidates [N, K], the VQ frame codes [S, T] of an evaluation set's segments and its
  rotations -> the choice by validation recall: each candidate's strings of the segments,
  retrieved as the evaluation does (`runner.pooled_recall_at_1`: queries in every rotation's
  archive, normalized edit distance, `ties`); the largest recall@1 within the rate budget (the
  VQ codes' collapsed strings of the same segments). Ties go to the lower index."""
  candidates = _check_candidates(candidates)
  codes = np.asarray(codes)
  if codes.ndim != 2:
    raise ValueError(f'segment codes must be [S, T], got shape {codes.shape}')
  vq_rate = _rate(collapsed_strings(codes), segment_seconds)
  recalls, rates = [], []
  for groups in candidates:
    strings = grouped_strings(groups, codes, min_run_frames)
    recalls.append(runner.pooled_recall_at_1(strings, rotations, ties))
    rates.append(_rate(strings, segment_seconds))
  return _keep('validation_recall', recalls, rates, vq_rate, max_rate_ratio)


def training_view_waves(
  config: ml_collections.ConfigDict, num_recordings: int, *, cache_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray, pipeline.BadInputStats]:
  """Two augmentations on one time axis of up to `num_recordings` training recordings (drawn
  with `config.seed`; every one when the split has fewer): (views A [R, S], views B [R, S], the
  bad-input counts of the files read)."""
  source = pipeline.make_source(config, 'train', cache_dir=cache_dir)
  rng = np.random.default_rng([int(config.seed), _CANDIDATE_STREAM])
  count = min(int(num_recordings), len(source))
  indices = np.sort(rng.choice(len(source), size=count, replace=False))
  stats = pipeline.BadInputStats()
  aug_cfg, sample_rate = dict(config.data.augment), int(config.audio.sample_rate)
  views_a, views_b = [], []
  for _, record in pipeline.eval_records(source, indices, stats):
    wave = pipeline.load_segment(record, config, crop='center')  # [S]
    views_a.append(augment.augment_view(wave, rng, aug_cfg, sample_rate, time_warp=False))
    views_b.append(augment.augment_view(wave, rng, aug_cfg, sample_rate, time_warp=False))
  if len(views_a) < 2:
    raise ValueError(
      f'choosing the code grouping needs at least 2 good training recordings, found '
      f'{len(views_a)} of {count} read'
    )
  return np.stack(views_a), np.stack(views_b), stats


def _frame_codes_fn(model: models.PairAlign, fcfg: frontend.FrontendConfig, warp: bool):
  @jax.jit
  def codes(variables, waves, alpha):  # [B, S], [B] -> [B, T]
    if warp:
      mel = frontend.warped_log_mel(waves, fcfg, alpha if fcfg.vtlp else None)
    else:  # as the tokenizer reads audio (`Tokenizer.vq_tokenize`)
      mel = frontend.log_mel(waves, fcfg)
    h = model.apply(variables, frontend.normalize(mel), train=False, method=models.PairAlign.encode)
    return model.apply(variables, h, train=False, method=models.PairAlign.quantize).codes

  return codes


def view_frame_codes(
  model: models.PairAlign,
  variables,
  waves: np.ndarray,
  config: ml_collections.ConfigDict,
  key: Optional[jax.Array],
  *,
  batch_size: int = 64,
) -> np.ndarray:
  """VQ frame codes [R, T] of waveforms [R, S] as a training view is encoded (each row its own
  VTLP warp where `config.frontend.vtlp` is on, drawn from `key`); with `key=None` as the
  tokenizer encodes audio (no warp)."""
  fcfg = frontend.FrontendConfig.from_config(config)
  codes_fn = _frame_codes_fn(model, fcfg, warp=key is not None)
  if key is None:
    alpha = np.ones(waves.shape[0], np.float32)
  else:
    alpha = np.asarray(frontend.sample_vtlp_alpha(key, waves.shape[0], fcfg))  # [R]
  return map_row_batches(
    lambda w, a: codes_fn(variables, w, a), waves, alpha, batch_size=batch_size
  )


def map_row_batches(fn, *rows: np.ndarray, batch_size: int = 64) -> np.ndarray:
  """`fn` applied to `rows` (arrays [R, ...] of one leading size) in batches of `batch_size`
  rows, the last padded (zeros; ones where a row array is 1-D, e.g. a warp factor) so that one
  shape is compiled; the outputs gathered across processes and concatenated, [R, ...]."""
  outs = []
  for start in range(0, rows[0].shape[0], batch_size):
    chunk = [r[start : start + batch_size] for r in rows]
    n = chunk[0].shape[0]
    if n < batch_size:
      fill = [np.ones if r.ndim == 1 else np.zeros for r in chunk]
      chunk = [
        np.concatenate([r, f((batch_size - n,) + r.shape[1:], r.dtype)])
        for r, f in zip(chunk, fill)
      ]
    out = fn(*[jnp.asarray(r) for r in chunk])
    outs.append(np.asarray(multihost_utils.process_allgather(out, tiled=True))[:n])
  return np.concatenate(outs)


def choose_code_groups(
  model: models.PairAlign,
  variables,
  config: ml_collections.ConfigDict,
  *,
  cache_dir: str | None = None,
) -> tuple[np.ndarray, GroupChoice]:
  """The grouping a run keeps (int32 [K]) and what the choice measured, for the model's
  `variables` ({'params': the EMA teacher, 'vq_stats'}) at the end of stage 0."""
  settings = targets_lib.TargetSettings.from_config(config)
  measure = str(config.targets.get('group_choice', 'view_margin'))
  key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), _VTLP_STREAM)
  key_a, key_b, key_groups = jax.random.split(key, 3)
  vq_stats = variables['vq_stats']
  candidates = code_groups_lib.candidate_groupings(
    code_groups_lib.vq_stats_leaf(vq_stats, 'codebook'),
    code_groups_lib.vq_stats_leaf(vq_stats, 'cluster_size'),
    key_groups,
    num_groups=settings.code_groups,
    num_candidates=int(config.targets.group_candidates),
  )
  candidates = np.asarray(multihost_utils.process_allgather(candidates, tiled=True))
  budget = dict(
    min_run_frames=settings.min_run_frames,
    segment_seconds=float(config.audio.segment_seconds),
    max_rate_ratio=float(config.targets.group_choice_max_rate_ratio),
  )
  if measure == 'validation_recall':
    # Imported here: the evaluation side (tokenizer, baselines) is not needed otherwise.
    from pairalign_jax import evaluate

    eval_set = evaluate.build_split_eval_set(config, split='validation', sweep_items=1)
    codes = view_frame_codes(model, variables, eval_set.waves, config, None)
    choice = choose_grouping_by_recall(
      candidates, codes, eval_set.rotations, ties=str(config.eval.retrieval_ties), **budget
    )
  elif measure == 'view_margin':
    waves_a, waves_b, stats = training_view_waves(
      config, int(config.targets.group_choice_recordings), cache_dir=cache_dir
    )
    bad = sum(stats.bad.values())
    if bad:
      logging.warning(
        'code-group choice: %d bad training recordings skipped (%s)', bad, dict(stats.bad)
      )
    codes_a = view_frame_codes(model, variables, waves_a, config, key_a)
    codes_b = view_frame_codes(model, variables, waves_b, config, key_b)
    choice = choose_grouping(candidates, codes_a, codes_b, **budget)
  else:
    raise ValueError(f'config.targets.group_choice must be one of {MEASURES}, got {measure!r}')
  return candidates[choice.index].astype(np.int32), choice
