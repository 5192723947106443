"""Search speed on a synthetic archive of token strings: archive hours searched per second.

    figures = measure_search_speed(tokens_per_window=31.0, query_tokens=8, hours=10)

Builds an in-memory index of `hours` of windows (`window_seconds` long every `hop_seconds`, as
`tokenize_long` cuts them) whose strings are random ids over `vocab` with Poisson lengths of mean
`tokens_per_window` (search time depends on the lengths, not on what the strings say), and
queries that are random substrings of `query_tokens` ids with about 30% of them edited. Times,
medians over `reps` rounds of every query, interleaved: `Index.search_tokens(query, top_k)` (the
project's search: subsequence distance to every window, spans of the best candidates, merging);
and two direct rapidfuzz calls on the same strings: `process.cdist([query], windows,
scorer=Levenshtein.distance, workers=-1)` (whole-window edit distance, rapidfuzz's fastest
bit-parallel kernel, all cores) and `process.cdist(..., scorer=fuzz.partial_ratio, workers=-1)`
(rapidfuzz's own best-substring alignment). Ratios are direct time / project time (> 1: the
project's search is faster). The index's padded matrix is built before timing (that is done
once when an index is opened).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from pairalign_jax.archive import index_store


def _edited(rng, seq: list[int], vocab: int, p: float = 0.3) -> list[int]:
  out = []
  for tok in seq:
    r = rng.random()
    if r < p / 3:
      continue
    out.append(int(rng.integers(vocab)) if r < 2 * p / 3 else tok)
    if 2 * p / 3 <= r < p:
      out.append(int(rng.integers(vocab)))
  return out or seq[:1]


def synthetic_index(
  tokens_per_window: float,
  *,
  hours: float = 10.0,
  window_seconds: float = 3.0,
  hop_seconds: float = 1.0,
  vocab: int = 256,
  seed: int = 0,
) -> index_store.Index:
  """An in-memory index of `hours` of random windows (one file per hour)."""
  rng = np.random.default_rng(seed)
  index = index_store.Index.create(
    None,
    tokenizer_info={'kind': 'synthetic'},
    window_seconds=window_seconds,
    hop_seconds=hop_seconds,
  )
  per_hour = int(round(3600 / hop_seconds))
  for h in range(int(np.ceil(hours))):
    n = per_hour if h + 1 <= hours else int(round(per_hour * (hours - h)))
    lengths = rng.poisson(tokens_per_window, n).astype(np.int64)
    total = int(lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    local = np.arange(total) - np.repeat(offsets[:-1], lengths)
    times = ((local + 0.5) * window_seconds / np.repeat(np.maximum(lengths, 1), lengths)).astype(
      np.float32
    )
    starts = np.arange(n) * hop_seconds
    arrays = index_store._Arrays(
      tokens=rng.integers(0, vocab, total).astype(np.int32),
      times=times,
      offsets=offsets.astype(np.int64),
      window_file=np.zeros(n, np.int32),
      window_span=np.stack([starts, starts + window_seconds], axis=1),
    )
    index.add_arrays(f'hour{h:03d}', f'hour{h:03d}', arrays, duration=n * hop_seconds)
  index.arrays()
  return index


def measure_search_speed(
  tokens_per_window: float,
  query_tokens: int,
  *,
  hours: float = 10.0,
  window_seconds: float = 3.0,
  hop_seconds: float = 1.0,
  vocab: int = 256,
  num_queries: int = 5,
  reps: int = 3,
  top_k: int = 10,
  seed: int = 0,
  partial_ratio: bool = True,
) -> dict[str, Any]:
  """Search timing figures on a synthetic `hours` archive (module docstring)."""
  from rapidfuzz import fuzz
  from rapidfuzz import process
  from rapidfuzz.distance import Levenshtein

  if tokens_per_window <= 0 or query_tokens < 1:
    raise ValueError(
      f'tokens_per_window must be > 0 and query_tokens >= 1, got {tokens_per_window}, '
      f'{query_tokens}'
    )
  index = synthetic_index(
    tokens_per_window,
    hours=hours,
    window_seconds=window_seconds,
    hop_seconds=hop_seconds,
    vocab=vocab,
    seed=seed,
  )
  arrays = index.arrays()
  strings = [
    arrays.tokens[arrays.offsets[i] : arrays.offsets[i + 1]].tolist()
    for i in range(arrays.window_file.size)
  ]
  rng = np.random.default_rng(seed + 1)
  queries = []
  while len(queries) < num_queries:
    s = strings[int(rng.integers(len(strings)))]
    if len(s) >= query_tokens:
      i = int(rng.integers(len(s) - query_tokens + 1))
      queries.append(_edited(rng, s[i : i + query_tokens], vocab))
  calls = {
    'project': lambda q: index.search_tokens(q, top_k),
    'rapidfuzz_levenshtein': lambda q: process.cdist(
      [q], strings, scorer=Levenshtein.distance, workers=-1
    ),
  }
  if partial_ratio:
    calls['rapidfuzz_partial_ratio'] = lambda q: process.cdist(
      [q], strings, scorer=fuzz.partial_ratio, workers=-1
    )
  times: dict[str, list[float]] = {name: [] for name in calls}
  for r in range(reps):
    names = list(calls) if r % 2 == 0 else list(reversed(calls))
    for q in queries:
      for name in names:
        t0 = time.perf_counter()
        calls[name](q)
        times[name].append(time.perf_counter() - t0)
  med = {name: statistics.median(ts) for name, ts in times.items()}
  out = {
    'hours': float(hours),
    'windows': int(arrays.window_file.size),
    'tokens': int(arrays.tokens.size),
    'tokens_per_window': float(tokens_per_window),
    'query_tokens': int(query_tokens),
    'num_queries': num_queries,
    'reps': reps,
    'top_k': top_k,
    'seconds_per_query': med['project'],
    'search_seconds_per_query_hour': med['project'] / hours,
    'archive_hours_per_second': hours / med['project'],
  }
  for name in calls:
    if name != 'project':
      out[f'{name}_seconds_per_query'] = med[name]
      out[f'ratio_vs_{name}'] = med[name] / med['project']
  return out
