"""Bootstrap intervals over content items (the unit that varies between corpora).

Every figure of the report is a ratio of sums over content items: recall@1 is (hits of the
item's queries) / (the item's queries), summed over items; the archive-token ratio is (primary's
archive tokens of the item) / (reference's), summed over items. A bootstrap sample draws the `A`
items with replacement (`item_weights`: how often each item is drawn) and recomputes the ratio;
the interval is the 2.5th and 97.5th percentile of `num_samples` such ratios (percentile
bootstrap). A difference of two tokenizers' recall@1 is computed on the *same* draws, so what the
two share (which items are easy) cancels.

    w = item_weights(num_items=50, num_samples=2000, seed=0)                      # [n, A]
    lo, hi = ratio_interval(hits, queries, w)                                      # recall@1
    lo, hi = difference_interval((hits_p, queries), (hits_r, queries), w)          # recall@1 gap
    lo, hi = ratio_interval(tokens_p, tokens_r, w)                                 # archive ratio
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

LEVEL = 0.95
NUM_SAMPLES = 2000


def item_weights(num_items: int, num_samples: int = NUM_SAMPLES, seed: int = 0) -> np.ndarray:
  """`[num_samples, num_items]` float64: how often each item is drawn in each bootstrap sample."""
  if num_items < 1 or num_samples < 1:
    raise ValueError(f'need num_items >= 1 and num_samples >= 1, got {num_items}, {num_samples}')
  rng = np.random.default_rng(seed)
  draws = rng.integers(num_items, size=(num_samples, num_items))  # [n, A]
  offsets = (np.arange(num_samples) * num_items)[:, None]
  counts = np.bincount((draws + offsets).ravel(), minlength=num_samples * num_items)
  return counts.reshape(num_samples, num_items).astype(np.float64)


def _percentiles(values: np.ndarray, level: float) -> list[float]:
  if not 0.0 < level < 1.0:
    raise ValueError(f'level must be in (0, 1), got {level}')
  values = values[np.isfinite(values)]
  if values.size == 0:
    return [float('nan'), float('nan')]
  tail = (1.0 - level) / 2.0 * 100.0
  return [float(v) for v in np.percentile(values, [tail, 100.0 - tail])]


def _per_item(x: Sequence[float], weights: np.ndarray, name: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.shape != (weights.shape[1],):
    raise ValueError(f'{name} must have one value per item ({weights.shape[1]}), got {x.shape}')
  return x


def ratio_samples(
  numerator: Sequence[float], denominator: Sequence[float], weights: np.ndarray
) -> np.ndarray:
  """`[n]`: sum(w * numerator) / sum(w * denominator) for each bootstrap sample."""
  num = weights @ _per_item(numerator, weights, 'numerator')
  den = weights @ _per_item(denominator, weights, 'denominator')
  with np.errstate(divide='ignore', invalid='ignore'):
    return num / den


def ratio_interval(
  numerator: Sequence[float],
  denominator: Sequence[float],
  weights: np.ndarray,
  level: float = LEVEL,
) -> list[float]:
  """`[low, high]` of the ratio of item sums (recall@1 from per-item hits and query counts, or
  the archive-token ratio from per-item token counts)."""
  return _percentiles(ratio_samples(numerator, denominator, weights), level)


def difference_interval(
  first: tuple[Sequence[float], Sequence[float]],
  second: tuple[Sequence[float], Sequence[float]],
  weights: np.ndarray,
  level: float = LEVEL,
) -> list[float]:
  """`[low, high]` of ratio(first) - ratio(second), both on the same bootstrap draws."""
  return _percentiles(ratio_samples(*first, weights) - ratio_samples(*second, weights), level)
