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
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

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

# fold_in tags of the choice's random streams (the seed's key; distinct from training's).
_CANDIDATE_STREAM = 0x67726F
_VTLP_STREAM = 0x76746C


@dataclasses.dataclass(frozen=True)
class GroupChoice:
  """What the choice measured: one entry per candidate grouping."""

  index: int  # the kept candidate
  margins: np.ndarray  # [N] view margins
  rates: np.ndarray  # [N] tokens/s of the candidates' strings
  vq_rate: float  # tokens/s of the VQ codes' collapsed strings (same views)
  max_rate: float  # the budget: max_rate_ratio * vq_rate
  fits: np.ndarray  # [N] bool: rate <= max_rate

  def as_dict(self) -> dict[str, Any]:
    return {
      'chosen': self.index,
      'view_margin': [float(m) for m in self.margins],
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


def choose_grouping(
  candidates: np.ndarray,
  codes_a: np.ndarray,
  codes_b: np.ndarray,
  *,
  min_run_frames: int,
  segment_seconds: float,
  max_rate_ratio: float,
) -> GroupChoice:
  """Candidates [N, K] (group id per code), the two views' VQ frame codes [R, T] -> the choice
  (module docstring, steps 3-4). Ties go to the lower index."""
  candidates = np.asarray(candidates)
  codes_a, codes_b = np.asarray(codes_a), np.asarray(codes_b)
  if candidates.ndim != 2 or candidates.shape[0] < 1:
    raise ValueError(f'candidates must be [N >= 1, K], got shape {candidates.shape}')
  if codes_a.shape != codes_b.shape or codes_a.ndim != 2:
    raise ValueError(f'view codes must both be [R, T], got {codes_a.shape} and {codes_b.shape}')

  def rate(strings):
    return float(np.mean([len(s) for s in strings])) / float(segment_seconds)

  vq_rate = 0.5 * (rate(collapsed_strings(codes_a)) + rate(collapsed_strings(codes_b)))
  margins, rates = [], []
  for groups in candidates:
    strings = [
      collapsed_strings(
        np.asarray(_group_frames(jnp.asarray(groups), jnp.asarray(c), min_run_frames))
      )
      for c in (codes_a, codes_b)
    ]
    margins.append(view_margin(*strings))
    rates.append(0.5 * (rate(strings[0]) + rate(strings[1])))
  margins, rates = np.asarray(margins), np.asarray(rates)
  max_rate = float(max_rate_ratio) * vq_rate
  fits = rates <= max_rate
  if fits.any():
    index = int(np.argmax(np.where(fits, margins, -np.inf)))
  else:
    index = int(np.argmin(rates))
  return GroupChoice(index, margins, rates, vq_rate, max_rate, fits)


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


def _frame_codes_fn(model: models.PairAlign, fcfg: frontend.FrontendConfig):
  @jax.jit
  def codes(variables, waves, alpha):  # [B, S], [B] -> [B, T]
    mel = frontend.normalize(frontend.warped_log_mel(waves, fcfg, alpha if fcfg.vtlp else None))
    h = model.apply(variables, mel, train=False, method=models.PairAlign.encode)
    return model.apply(variables, h, train=False, method=models.PairAlign.quantize).codes

  return codes


def view_frame_codes(
  model: models.PairAlign,
  variables,
  waves: np.ndarray,
  config: ml_collections.ConfigDict,
  key: jax.Array,
  *,
  batch_size: int = 64,
) -> np.ndarray:
  """VQ frame codes [R, T] of waveforms [R, S] as a training view is encoded (each row its own
  VTLP warp where `config.frontend.vtlp` is on, drawn from `key`)."""
  fcfg = frontend.FrontendConfig.from_config(config)
  codes_fn = _frame_codes_fn(model, fcfg)
  alpha = np.asarray(frontend.sample_vtlp_alpha(key, waves.shape[0], fcfg))  # [R]
  rows = []
  for start in range(0, waves.shape[0], batch_size):
    batch = waves[start : start + batch_size]
    n = batch.shape[0]
    if n < batch_size:  # one compiled shape
      batch = np.concatenate([batch, np.zeros((batch_size - n, batch.shape[1]), batch.dtype)])
    a = np.concatenate([alpha[start : start + n], np.ones(batch_size - n, alpha.dtype)])
    out = codes_fn(variables, jnp.asarray(batch), jnp.asarray(a))
    rows.append(np.asarray(multihost_utils.process_allgather(out, tiled=True))[:n])
  return np.concatenate(rows)


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
  waves_a, waves_b, stats = training_view_waves(
    config, int(config.targets.group_choice_recordings), cache_dir=cache_dir
  )
  bad = sum(stats.bad.values())
  if bad:
    logging.warning(
      'code-group choice: %d bad training recordings skipped (%s)', bad, dict(stats.bad)
    )
  key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), _VTLP_STREAM)
  key_a, key_b, key_groups = jax.random.split(key, 3)
  codes_a = view_frame_codes(model, variables, waves_a, config, key_a)
  codes_b = view_frame_codes(model, variables, waves_b, config, key_b)
  vq_stats = variables['vq_stats']
  candidates = code_groups_lib.candidate_groupings(
    code_groups_lib.vq_stats_leaf(vq_stats, 'codebook'),
    code_groups_lib.vq_stats_leaf(vq_stats, 'cluster_size'),
    key_groups,
    num_groups=settings.code_groups,
    num_candidates=int(config.targets.group_candidates),
  )
  candidates = np.asarray(multihost_utils.process_allgather(candidates, tiled=True))
  choice = choose_grouping(
    candidates,
    codes_a,
    codes_b,
    min_run_frames=settings.min_run_frames,
    segment_seconds=float(config.audio.segment_seconds),
    max_rate_ratio=float(config.targets.group_choice_max_rate_ratio),
  )
  return candidates[choice.index].astype(np.int32), choice
