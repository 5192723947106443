"""Spoken term detection metrics: hit labelling, MAP, P@10, ATWV / MTWV (NIST STD 2006).

    correct = label_hits(hits, occurrences)            # per hit: does it find an occurrence?
    ap = average_precision(correct, num_true)          # one term
    curve = twv_curve(scores, correct, term_ids, num_true, trial_seconds)
    mtwv, threshold = curve.maximum()

**Hit labelling** (`label_hits`): a term's hits `(file, start, end, score)`, best first, and its
true occurrences `(file, start, end)`. A hit is correct when it overlaps an occurrence of the
same file not yet taken by a better hit by at least `min_overlap` (50%) of that occurrence's
duration; it takes the occurrence it overlaps most (the earliest on ties). Every occurrence is
found at most once: a second hit on it is a false alarm.

**Ranking** (per term, over its hits best first): `AP = sum over correct hits of precision at
their rank / number of true occurrences` (occurrences never found count as zero precision);
`P@10 = correct hits among the first 10 / 10`. MAP and mean P@10 average over terms with at
least one occurrence.

**Term-weighted value** (NIST 2006 STD evaluation plan): with the hits of score >= theta taken
as detections, for each term t with N_true(t) > 0 occurrences,
  P_miss(t) = 1 - N_correct(t) / N_true(t),
  P_FA(t) = N_FA(t) / (T - N_true(t)),  T = seconds of archive audio (one trial per second),
  TWV(theta) = 1 - mean over terms of [P_miss(t) + beta * P_FA(t)],  beta = 999.9.
TWV = 0 with no detections. `MTWV` = the maximum of TWV over all thresholds (one shared threshold,
including "no detection"). `ATWV` is the TWV at a threshold chosen in advance: here by two-fold
cross-validation over terms (terms split by parity of their index; each half is scored at the
threshold that maximizes TWV on the other half; the value pools both halves), so no term
chooses its own threshold.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

BETA = 999.9
MIN_OVERLAP = 0.5


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
  """Length of the intersection of `[a0, a1]` and `[b0, b1]` (0 if disjoint)."""
  return max(0.0, min(a1, b1) - max(a0, b0))


def label_hits(
  hits: Sequence[tuple[str, float, float]],
  occurrences: Sequence[tuple[str, float, float]],
  min_overlap: float = MIN_OVERLAP,
) -> np.ndarray:
  """bool [len(hits)]: hits `(file, start, end, ...)` best first (module docstring)."""
  taken = np.zeros(len(occurrences), bool)
  out = np.zeros(len(hits), bool)
  for i, h in enumerate(hits):
    f, s, e = h[0], float(h[1]), float(h[2])
    best, best_j = 0.0, -1
    for j, (of, os_, oe) in enumerate(occurrences):
      if taken[j] or of != f:
        continue
      ov = overlap(s, e, os_, oe)
      if ov >= min_overlap * (oe - os_) and ov > best:
        best, best_j = ov, j
    if best_j >= 0:
      taken[best_j] = True
      out[i] = True
  return out


def average_precision(correct: Sequence[bool], num_true: int) -> float:
  """AP of one ranked hit list (best first) against `num_true` occurrences (> 0)."""
  if num_true <= 0:
    raise ValueError(f'num_true must be > 0, got {num_true}')
  c = np.asarray(correct, bool)
  if not c.any():
    return 0.0
  ranks = np.flatnonzero(c) + 1
  return float(np.sum(np.arange(1, ranks.size + 1) / ranks) / num_true)


def precision_at(correct: Sequence[bool], k: int = 10) -> float:
  """Correct hits among the first `k` / k."""
  return float(np.sum(np.asarray(correct, bool)[:k]) / k)


@dataclasses.dataclass
class TwvCurve:
  thresholds: np.ndarray  # [n] descending: detections are hits with score >= threshold
  twv: np.ndarray  # [n] TWV at each threshold

  def maximum(self) -> tuple[float, float]:
    """(MTWV, its threshold); (0, inf) when no threshold beats detecting nothing."""
    if self.twv.size == 0 or self.twv.max() <= 0:
      return 0.0, float('inf')
    i = int(np.argmax(self.twv))
    return float(self.twv[i]), float(self.thresholds[i])

  def at(self, threshold: float) -> float:
    """TWV with detections at score >= `threshold` (0 above the best score)."""
    keep = self.thresholds >= threshold
    return float(self.twv[keep][-1]) if keep.any() else 0.0


def twv_curve(
  scores: Sequence[float],
  correct: Sequence[bool],
  term_ids: Sequence[int],
  num_true: Sequence[int],
  trial_seconds: float,
  beta: float = BETA,
  terms: Sequence[int] | None = None,
) -> TwvCurve:
  """TWV at every distinct score as threshold, over `terms` (default: every term with
  occurrences). `scores`, `correct`, `term_ids` are per hit (all terms pooled; `correct` from
  `label_hits`); `num_true[t]` = term t's occurrences; `trial_seconds` = T."""
  num_true = np.asarray(num_true, np.float64)
  chosen = np.flatnonzero(num_true > 0) if terms is None else np.asarray(terms, np.int64)
  chosen = chosen[num_true[chosen] > 0]
  if chosen.size == 0:
    raise ValueError('twv_curve: no term with a true occurrence')
  if np.any(num_true[chosen] >= trial_seconds):
    raise ValueError("trial_seconds must exceed every term's number of occurrences")
  s = np.asarray(scores, np.float64)
  c = np.asarray(correct, bool)
  t = np.asarray(term_ids, np.int64)
  keep = np.isin(t, chosen)
  s, c, t = s[keep], c[keep], t[keep]
  order = np.argsort(-s, kind='stable')
  s, c, t = s[order], c[order], t[order]
  gain = np.where(c, 1.0 / num_true[t], 0.0)  # reduction of the summed P_miss
  cost = np.where(c, 0.0, beta / (trial_seconds - num_true[t]))  # increase of summed beta P_FA
  value = np.cumsum(gain - cost) / chosen.size  # TWV after each hit
  last = np.r_[s[1:] != s[:-1], True]  # a threshold takes every hit of its score
  return TwvCurve(thresholds=s[last], twv=value[last])


def atwv_two_fold(
  scores, correct, term_ids, num_true, trial_seconds: float, beta: float = BETA
) -> dict[str, float]:
  """ATWV by two-fold cross-validation of the threshold over terms (module docstring)."""
  num_true = np.asarray(num_true, np.float64)
  with_true = np.flatnonzero(num_true > 0)
  folds = [with_true[with_true % 2 == 0], with_true[with_true % 2 == 1]]
  if any(f.size == 0 for f in folds):
    return {'atwv': float('nan'), 'thresholds': [float('nan'), float('nan')]}
  total, thresholds = 0.0, []
  for k in (0, 1):
    tune, test = folds[1 - k], folds[k]
    _, threshold = twv_curve(
      scores, correct, term_ids, num_true, trial_seconds, beta, tune
    ).maximum()
    value = twv_curve(scores, correct, term_ids, num_true, trial_seconds, beta, test).at(threshold)
    total += value * test.size
    thresholds.append(threshold)
  return {'atwv': total / with_true.size, 'thresholds': thresholds}


def precision_recall(
  scores: Sequence[float], correct: Sequence[bool], total_true: int
) -> tuple[np.ndarray, np.ndarray]:
  """Pooled precision and recall [n] at every hit, all terms' hits ranked by score."""
  s = np.asarray(scores, np.float64)
  c = np.asarray(correct, bool)[np.argsort(-s, kind='stable')]
  tp = np.cumsum(c)
  return tp / np.arange(1, c.size + 1), tp / max(total_true, 1)
