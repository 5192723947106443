"""Edit-distance retrieval over token strings (docs/METHOD.md §10).

The archive holds one string per content item (it may also hold distractors that no query
targets); each query is another realization of an item and carries `target`, the archive index of
its true item. Archive entries are ranked per query by normalized edit distance
`Levenshtein(q, a) / max(|q|, |a|)`, computed in one call
`rapidfuzz.process.cdist(queries, archive, scorer=Levenshtein.normalized_distance, workers=-1)`
on the token lists themselves (rapidfuzz hashes the ints; measured on this machine this is about
2-4x faster than mapping tokens to `chr(0x100 + id)` strings, and gives identical distances).

Ties. With `n_less` archive entries strictly closer than the true item and `n_tie` other entries at
exactly its distance, the rank of the true item is not defined by the distances alone. Default
`ties='expected'`: the expectation over a uniformly random order of the tied entries, i.e. the true
item is equally likely at each rank `n_less + 1 .. n_less + n_tie + 1`:
    recall@k = clip((k - n_less) / (n_tie + 1), 0, 1),   rr = mean_{r in that range} 1 / r.
A tokenizer that maps everything to one string then scores chance level (recall@1 = 1/N), not 1.
`ties='pessimistic'` puts the true item after all tied entries (rank `n_less + n_tie + 1`),
`'optimistic'` before them (rank `n_less + 1`). No sort is needed: counting `n_less` and `n_tie`
is one vectorized comparison per query, so the whole evaluation is essentially the cdist call.

`recall_vs_archive_size` subsamples the archive: for each size `m` it draws `m` archive entries
(uniformly, seeded, `repeats` draws) and evaluates only the queries whose true item was drawn, so
the true item of every evaluated query is in the archive; the distance matrix is computed once.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

TIES = ('expected', 'pessimistic', 'optimistic')


@dataclasses.dataclass(frozen=True)
class RetrievalResult:
  recall_at_1: float
  recall_at_5: float
  mrr: float
  archive_tokens: int  # total tokens over the archive strings
  num_queries: int
  archive_size: int

  def as_dict(self) -> dict[str, float]:
    return dataclasses.asdict(self)


def _as_token_lists(seqs: Sequence[Sequence[int]]) -> list:
  """rapidfuzz takes lists (and 1-D int arrays) as hashable sequences; pass lists through."""
  return [s if isinstance(s, list) else np.asarray(s).tolist() for s in seqs]


def distance_matrix(
  queries: Sequence[Sequence[int]], archive: Sequence[Sequence[int]], *, workers: int = -1
) -> np.ndarray:
  """`[Q, N]` float32 normalized edit distances (rapidfuzz `process.cdist`, all cores)."""
  return process.cdist(
    _as_token_lists(queries),
    _as_token_lists(archive),
    scorer=Levenshtein.normalized_distance,
    workers=workers,
  )


def _check_targets(targets, num_queries: int, archive_size: int) -> np.ndarray:
  t = np.asarray(targets).reshape(-1)
  if t.shape[0] != num_queries:
    raise ValueError(f'{num_queries} queries but {t.shape[0]} targets')
  if t.size and (not np.issubdtype(t.dtype, np.integer) or t.min() < 0 or t.max() >= archive_size):
    raise ValueError(
      f'targets must be archive indices in [0, {archive_size}), got '
      f'{t.dtype} values in [{t.min()}, {t.max()}]'
    )
  return t.astype(np.int64)


def tie_counts(distances: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`(n_less [Q], n_tie [Q])`: entries strictly closer than the true item, and other entries at
  exactly its distance."""
  d = np.asarray(distances)
  q = np.arange(d.shape[0])
  d_true = d[q, targets][:, None]  # [Q, 1]
  n_less = (d < d_true).sum(axis=1)
  n_tie = (d == d_true).sum(axis=1) - 1  # minus the true item itself
  return n_less.astype(np.int64), n_tie.astype(np.int64)


def _harmonic(n: np.ndarray) -> np.ndarray:
  """H(n) = sum_{r=1}^n 1/r, for int arrays (exact partial sums up to max(n))."""
  n = np.asarray(n, np.int64)
  table = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, max(int(n.max(initial=0)), 0) + 1))])
  return table[n]


def per_query_scores(
  n_less: np.ndarray, n_tie: np.ndarray, ks: Sequence[int] = (1, 5), ties: str = 'expected'
) -> tuple[dict[int, np.ndarray], np.ndarray]:
  """Per-query `({k: hit@k [Q]}, reciprocal rank [Q])` under the tie convention `ties`."""
  if ties not in TIES:
    raise ValueError(f'ties must be one of {TIES}, got {ties!r}')
  n_less = np.asarray(n_less, np.int64)
  n_tie = np.asarray(n_tie, np.int64)
  if ties == 'pessimistic':
    n_less, n_tie = n_less + n_tie, np.zeros_like(n_tie)
  elif ties == 'optimistic':
    n_tie = np.zeros_like(n_tie)
  hits = {k: np.clip((k - n_less) / (n_tie + 1.0), 0.0, 1.0) for k in ks}
  # Expected reciprocal rank over ranks n_less+1 .. n_less+n_tie+1.
  rr = (_harmonic(n_less + n_tie + 1) - _harmonic(n_less)) / (n_tie + 1.0)
  return hits, rr


def scores_from_distances(
  distances: np.ndarray, targets, *, ties: str = 'expected'
) -> dict[str, float]:
  """`{'recall_at_1', 'recall_at_5', 'mrr', 'num_queries'}` from a `[Q, N]` distance matrix."""
  d = np.asarray(distances)
  if d.ndim != 2:
    raise ValueError(f'distances must be [queries, archive], got shape {d.shape}')
  t = _check_targets(targets, d.shape[0], d.shape[1])
  if d.shape[0] == 0:
    raise ValueError('no queries to evaluate')
  n_less, n_tie = tie_counts(d, t)
  hits, rr = per_query_scores(n_less, n_tie, (1, 5), ties)
  return {
    'recall_at_1': float(hits[1].mean()),
    'recall_at_5': float(hits[5].mean()),
    'mrr': float(rr.mean()),
    'num_queries': int(d.shape[0]),
  }


def evaluate_retrieval(
  queries: Sequence[Sequence[int]],
  archive: Sequence[Sequence[int]],
  targets,
  *,
  ties: str = 'expected',
  workers: int = -1,
  distances: Optional[np.ndarray] = None,
) -> RetrievalResult:
  """Ranks `archive` for every query by normalized edit distance; recall@1/@5, MRR, archive size.

  Args:
    queries: `Q` token strings.
    archive: `N` token strings (one per content item, plus optional distractors).
    targets: `[Q]` archive index of each query's true item.
    ties: tie convention (module docstring).
    workers: rapidfuzz threads (-1 = all cores).
    distances: a precomputed `distance_matrix(queries, archive)` to reuse.
  """
  if not len(archive):
    raise ValueError('empty archive')
  t = _check_targets(targets, len(queries), len(archive))
  d = distance_matrix(queries, archive, workers=workers) if distances is None else distances
  if d.shape != (len(queries), len(archive)):
    raise ValueError(
      f'distances shape {d.shape} != (queries, archive) = {(len(queries), len(archive))}'
    )
  s = scores_from_distances(d, t, ties=ties)
  return RetrievalResult(
    recall_at_1=s['recall_at_1'],
    recall_at_5=s['recall_at_5'],
    mrr=s['mrr'],
    archive_tokens=int(sum(len(a) for a in archive)),
    num_queries=s['num_queries'],
    archive_size=len(archive),
  )


def recall_vs_archive_size(
  distances: np.ndarray,
  targets,
  sizes: Sequence[int],
  *,
  repeats: int = 5,
  seed: int = 0,
  ties: str = 'expected',
) -> dict[str, list[float]]:
  """Retrieval scores on random sub-archives of each size (module docstring).

  Returns `{'sizes', 'recall_at_1', 'recall_at_5', 'mrr', 'num_queries'}` (lists, one entry per
  size; scores are averaged over the `repeats` draws weighted by their query counts). A size equal
  to the archive size uses the whole archive once.
  """
  d = np.asarray(distances)
  n = d.shape[1]
  t = _check_targets(targets, d.shape[0], n)
  rng = np.random.default_rng(seed)
  out = {'sizes': [], 'recall_at_1': [], 'recall_at_5': [], 'mrr': [], 'num_queries': []}
  for m in sizes:
    m = int(m)
    if not 1 <= m <= n:
      raise ValueError(f'archive size {m} outside [1, {n}]')
    acc = np.zeros(3)
    count = 0
    for _ in range(1 if m == n else repeats):
      cols = np.sort(rng.choice(n, size=m, replace=False))
      pos = np.full(n, -1, np.int64)
      pos[cols] = np.arange(m)
      rows = np.nonzero(pos[t] >= 0)[0]
      if rows.size == 0:
        continue
      s = scores_from_distances(d[np.ix_(rows, cols)], pos[t[rows]], ties=ties)
      acc += rows.size * np.array([s['recall_at_1'], s['recall_at_5'], s['mrr']])
      count += rows.size
    out['sizes'].append(m)
    out['num_queries'].append(count)
    for key, v in zip(('recall_at_1', 'recall_at_5', 'mrr'), acc / max(count, 1)):
      out[key].append(float(v) if count else float('nan'))
  return out
