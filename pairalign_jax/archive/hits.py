"""Hits: the time span of matched tokens, and merging overlapping hits of one file.

A hit is `(file, start s, end s, score)`; `score = 1 - distance / len(query)` in [0, 1] (higher
is better, 1 = the query's exact token string occurs), `distance` the subsequence edit distance
(`subsequence.py`).

Times. A token's time (what the tokenizers return) is a point: the decoder's attention time for
PairAlign, the run centre for VQ and k-means strings. A token is taken to cover the span from
the midpoint to the previous token's time to the midpoint to the next one's (its Voronoi cell),
so a match of tokens `s .. e` of a window spans `[(t[s-1] + t[s]) / 2, (t[e] + t[e+1]) / 2]`. At
a window's first (last) token the missing neighbour is replaced by mirroring the other gap (half
the gap to the next (previous) token), and a window of one token spans one token's half gap of
`fallback_half` on each side; the span is clipped to the window.

Merging (`merge_hits`): hits sorted best first (score descending, then file, then start); a hit
is kept unless its span overlaps (positive length in common) a kept hit of the same file. The
kept hits are the best ones (greedy non-maximum suppression), so the first k hits merged from a
best-first prefix of the candidates are the first k of all candidates merged.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Hit:
  file: str
  start: float  # seconds from the start of the file
  end: float
  score: float  # 1 - distance / query length (higher is better)
  distance: int = 0  # subsequence edit distance, in tokens
  window: int = -1  # index of the window it was found in

  def to_dict(self) -> dict:
    return {
      'file': self.file,
      'start': round(self.start, 4),
      'end': round(self.end, 4),
      'score': round(self.score, 6),
      'distance': int(self.distance),
    }


def span_times(
  times: np.ndarray,
  start: int,
  end: int,
  window: tuple[float, float],
  fallback_half: float = 0.05,
) -> tuple[float, float]:
  """Seconds `[t0, t1]` covered by tokens `start .. end` (inclusive) of a window whose token
  times are `times [n]` (non-decreasing) and whose span is `window` (module docstring)."""
  t = np.asarray(times, np.float64)
  n = t.shape[0]
  if not 0 <= start <= end < n:
    raise ValueError(f'token span [{start}, {end}] outside a window of {n} tokens')

  def half_gap(i: int, j: int) -> float:  # half the gap between tokens i and j, both valid
    return abs(t[j] - t[i]) / 2

  if start > 0:
    left = half_gap(start - 1, start)
  elif n > 1:
    left = half_gap(0, 1)
  else:
    left = fallback_half
  if end < n - 1:
    right = half_gap(end, end + 1)
  elif n > 1:
    right = half_gap(n - 2, n - 1)
  else:
    right = fallback_half
  lo, hi = window
  t0 = min(max(t[start] - left, lo), hi)
  t1 = min(max(t[end] + right, lo), hi)
  return float(t0), float(max(t1, t0))


def sort_hits(hits: Iterable[Hit]) -> list[Hit]:
  """Best first: score descending, then file, start, window (deterministic ties)."""
  return sorted(hits, key=lambda h: (-h.score, h.file, h.start, h.window))


def overlaps(a: Hit, b: Hit) -> bool:
  """Same file and a common span of positive length."""
  return a.file == b.file and min(a.end, b.end) > max(a.start, b.start)


def merge_hits(hits: Iterable[Hit], limit: int | None = None) -> list[Hit]:
  """Greedy non-maximum suppression (module docstring); at most `limit` hits (None = all)."""
  kept: list[Hit] = []
  by_file: dict[str, list[Hit]] = {}
  for h in sort_hits(hits):
    same = by_file.setdefault(h.file, [])
    if any(overlaps(h, k) for k in same):
      continue
    kept.append(h)
    same.append(h)
    if limit is not None and len(kept) >= limit:
      break
  return kept
