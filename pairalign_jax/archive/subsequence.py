"""Subsequence (semi-global) edit distance: a query aligned to the best substring of each string.

    ends = best_ends(query, texts, lengths)           # distance and end token of every window
    starts = best_starts(query, texts[rows], ends.end[rows], ends.distance[rows])

Definition. For a query `q` (m >= 1 tokens) and a text `t` (n >= 1 tokens), the subsequence
distance is `d = min over non-empty substrings t[s : e + 1] of Levenshtein(q, t[s : e + 1])` (unit
costs for substitution, insertion and deletion), so `0 <= d <= m`. The **match** is the leftmost
end `e` reaching `d` and, for that end, the largest start `s` (the shortest substring ending at
`e` with distance `d`). `reference_alignment` is this definition written as a plain dynamic
program (what the tests compare against); `best_ends` / `best_starts` compute the same numbers
for many texts at once.

Algorithm. Myers' bit-parallel edit distance (J. ACM 1999) in Hyyro's block form (one 64-bit
word per 64 query tokens, any query length), vectorized with numpy over the texts: one pass over
the text columns, about 20 uint64 array operations per column and query block, whatever the
number of texts. Search mode (the top row of the table is 0: the match may start anywhere) gives
`D[m][j]`, the distance of the best substring ending at column `j`, for every column; the
leftmost minimum is the end. The start comes from a second pass over the reversed prefix
`t[e], t[e - 1], ...` with the reversed query, anchored at `e` (top row `D[0][k] = k`): the
first column reaching `d` is the shortest match. Texts are rows of a padded int matrix; the
padding id (any id the query does not use, e.g. the vocabulary size) matches nothing and columns
at or past a row's length are ignored. A row of length 0 gets distance `m` and end -1.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

WORD_BITS = 64
_ONE = np.uint64(1)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclasses.dataclass
class Ends:
  distance: np.ndarray  # [W] int32: subsequence edit distance (m for an empty row)
  end: np.ndarray  # [W] int64: leftmost end column reaching it (inclusive; -1 for an empty row)


def check_query(query) -> np.ndarray:
  """`query` as int64 [m], m >= 1; ValueError naming `query` otherwise."""
  q = np.asarray(query)
  if q.ndim != 1 or q.size == 0:
    raise ValueError(f'query must be a non-empty 1-D sequence of token ids, got shape {q.shape}')
  if not np.issubdtype(q.dtype, np.integer):
    raise ValueError(f'query must hold integer token ids, got dtype {q.dtype}')
  if q.min() < 0:
    raise ValueError(f'query token ids must be >= 0, got {int(q.min())}')
  return q.astype(np.int64)


def pad_strings(strings: Sequence[Sequence[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
  """Strings -> (int32 [W, L] padded with `pad`, lengths int64 [W]); L = the longest (>= 1)."""
  lengths = np.array([len(s) for s in strings], np.int64)
  width = max(1, int(lengths.max()) if lengths.size else 1)
  out = np.full((len(strings), width), pad, np.int32)
  for i, s in enumerate(strings):
    out[i, : len(s)] = s
  return out, lengths


def peq_table(query: np.ndarray, vocab: int) -> np.ndarray:
  """Match masks uint64 [B, vocab + 1]: bit i of block b set where `query[64 b + i]` is the id.
  Ids >= `vocab` in the query match nothing (they do not occur in texts over `vocab`); row
  `vocab` (the padding id) is all zeros."""
  m = query.shape[0]
  blocks = -(-m // WORD_BITS)
  peq = np.zeros((blocks, vocab + 1), np.uint64)
  for i, c in enumerate(query.tolist()):
    if c < vocab:
      peq[i // WORD_BITS, c] |= _ONE << np.uint64(i % WORD_BITS)
  return peq


def _scan(peq: np.ndarray, texts: np.ndarray, lengths: np.ndarray, m: int, *, anchored: bool):
  """Yields (column j, D[m][j] int32 [W]) for j < texts.shape[1] (module docstring)."""
  blocks = peq.shape[0]
  w = texts.shape[0]
  high = [np.uint64(1 << (WORD_BITS - 1))] * (blocks - 1)
  high.append(np.uint64(1 << ((m - 1) % WORD_BITS)))
  pv = [np.full(w, _ALL) for _ in range(blocks)]
  mv = [np.zeros(w, np.uint64) for _ in range(blocks)]
  score = np.full(w, m, np.int32)
  top_pos = np.ones(w, np.uint64) if anchored else np.zeros(w, np.uint64)
  zero = np.zeros(w, np.uint64)
  for j in range(texts.shape[1]):
    col = texts[:, j]
    h_pos, h_neg = top_pos, zero  # the horizontal delta entering block 0 from the top row
    for b in range(blocks):
      eq = peq[b][col]  # [W]
      p, n = pv[b], mv[b]
      xv = eq | n
      eq = eq | h_neg
      xh = (((eq & p) + p) ^ p) | eq
      ph = n | ~(xh | p)
      mh = p & xh
      out_pos = (ph & high[b]) != 0
      out_neg = (mh & high[b]) != 0
      ph = (ph << _ONE) | h_pos
      mh = (mh << _ONE) | h_neg
      pv[b] = mh | ~(xv | ph)
      mv[b] = ph & xv
      h_pos, h_neg = out_pos.astype(np.uint64), out_neg.astype(np.uint64)
    score += h_pos.astype(np.int32) - h_neg.astype(np.int32)
    yield j, score


def best_ends(query, texts: np.ndarray, lengths: np.ndarray) -> Ends:
  """Subsequence distance and leftmost end of the best match in every row of `texts`.

  `texts` int [W, L] (padding: any id >= the largest id in use, not in the query), `lengths`
  [W]. Rows of length 0 get distance m and end -1.
  """
  q = check_query(query)
  texts = np.asarray(texts)
  lengths = np.asarray(lengths, np.int64)
  if texts.ndim != 2 or lengths.shape != (texts.shape[0],):
    raise ValueError(f'texts must be [W, L] with lengths [W], got {texts.shape}, {lengths.shape}')
  m = q.shape[0]
  # The match table spans the ids of `texts` only: a query id outside them matches nothing
  # (whatever its size: an id of 10^9 must not size the table).
  vocab = int(texts.max(initial=0)) + 1
  best = np.full(texts.shape[0], m, np.int32)
  end = np.full(texts.shape[0], -1, np.int64)
  for j, score in _scan(peq_table(q, vocab), texts, lengths, m, anchored=False):
    better = (score < best) | (end < 0)
    better &= j < lengths
    best = np.where(better, score, best)
    end = np.where(better, j, end)
  return Ends(distance=best, end=end)


def best_starts(query, texts: np.ndarray, ends: np.ndarray, distances: np.ndarray) -> np.ndarray:
  """Start columns [W] int64 of the shortest match ending at `ends` with `distances` (from
  `best_ends` on the same rows); -1 where the end is -1."""
  q = check_query(query)
  texts = np.asarray(texts)
  ends = np.asarray(ends, np.int64)
  distances = np.asarray(distances, np.int32)
  w = texts.shape[0]
  starts = np.full(w, -1, np.int64)
  rows = np.flatnonzero(ends >= 0)
  if rows.size == 0:
    return starts
  width = int(ends[rows].max()) + 1
  pad = int(texts.max(initial=0)) + 1  # query ids >= pad match nothing (`peq_table`)
  k = np.arange(width)
  src = ends[rows, None] - k[None, :]  # [R, width]: column e - k of the row
  rev = np.where(src >= 0, texts[rows[:, None], np.maximum(src, 0)], pad).astype(np.int32)
  rev_len = ends[rows] + 1
  target = distances[rows]
  first = np.full(rows.size, -1, np.int64)
  for j, score in _scan(peq_table(q[::-1].copy(), pad), rev, rev_len, q.shape[0], anchored=True):
    hit = (first < 0) & (j < rev_len) & (score <= target)
    first = np.where(hit, j, first)
  if (first < 0).any():  # cannot happen for ends/distances from best_ends
    raise ValueError('best_starts: ends/distances do not come from best_ends on these rows')
  starts[rows] = ends[rows] - first
  return starts


def align(query, text: Sequence[int]) -> tuple[int, int, int]:
  """One text: `(distance, start, end)` of the match (end inclusive; `(m, -1, -1)` if empty)."""
  q = check_query(query)
  texts, lengths = pad_strings([list(text)], pad=int(max(max(text, default=0), q.max())) + 1)
  e = best_ends(q, texts, lengths)
  s = best_starts(q, texts, e.end, e.distance)
  return int(e.distance[0]), int(s[0]), int(e.end[0])


def reference_alignment(query: Sequence[int], text: Sequence[int]) -> tuple[int, int, int]:
  """The definition as a plain O(m n^2) dynamic program: `(distance, start, end)` (end
  inclusive; `(m, -1, -1)` for an empty text). For tests."""
  q, t = list(query), list(text)
  m = len(q)
  if not t:
    return m, -1, -1
  best = (m + 1, 0, 0)
  for e in range(len(t)):
    for s in range(e, -1, -1):  # largest start first: the shortest substring wins ties
      d = _levenshtein(q, t[s : e + 1])
      if d < best[0]:
        best = (d, s, e)
  return best


def _levenshtein(a: Sequence[int], b: Sequence[int]) -> int:
  prev = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    cur = [i]
    for j, y in enumerate(b, 1):
      cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
    prev = cur
  return prev[-1]
