"""Continuous-sweep probe (docs/METHOD.md §10): how a tokenizer's string moves as the window slides.

Given waveforms `[N, S_long]` with `S_long >= segment + max shift`, the window starting at sample
`round(shift_ms * sample_rate / 1000)` is tokenized for each shift (default 0, 10, ..., 100 ms),
and each shifted string `y_s` is compared with the unshifted `y_0` of the same item:

* `edit_distance[s]` = mean over items of `Levenshtein(y_s, y_0)` (raw),
* `normalized_edit_distance[s]` = mean of `Levenshtein(y_s, y_0) / max(|y_s|, |y_0|)` (the
  trajectory: a stable tokenizer rises slowly with the shift, a fragile one jumps at 10 ms),
* `bigram_jaccard[s]` = mean token-bigram Jaccard `|B(y_s) ∩ B(y_0)| / |B(y_s) ∪ B(y_0)|` where
  `B(y)` is the set of adjacent pairs `(y_t, y_{t+1})`; when neither string has a bigram (both
  shorter than 2 tokens) it is 1.0 if the strings are equal, else 0.0 — the local overlap,
* `mean_length[s]` = mean `|y_s|`,
* `length_std` / `length_range` = per item, std and (max - min) of `|y_s|` over all shifts,
  averaged over items (length spread),
* summaries over the shifts > 0: `mean_edit_distance`, `mean_normalized_edit_distance`,
  `local_overlap` (mean bigram Jaccard).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from pairalign_jax.evaluation import metrics

DEFAULT_SHIFTS_MS = tuple(range(0, 101, 10))


def bigrams(seq: Sequence[int]) -> set[tuple[int, int]]:
  """Set of adjacent token pairs."""
  s = [int(t) for t in seq]
  return set(zip(s[:-1], s[1:]))


def bigram_jaccard(a: Sequence[int], b: Sequence[int]) -> float:
  """Jaccard similarity of the token-bigram sets of `a` and `b`; without any bigram (both strings
  shorter than 2 tokens): 1.0 if `a == b`, else 0.0."""
  ba, bb = bigrams(a), bigrams(b)
  union = ba | bb
  if not union:
    return float([int(t) for t in a] == [int(t) for t in b])
  return len(ba & bb) / len(union)


def _token_lists(out: Any, n: int, shift_ms: float) -> list[list[int]]:
  tokens = out.tokens if hasattr(out, 'tokens') else out
  tokens = metrics.as_strings(tokens, f'tokenize output at shift {shift_ms} ms')
  if len(tokens) != n:
    raise ValueError(
      f'tokenize_fn returned {len(tokens)} strings for {n} waveforms (shift {shift_ms} ms)'
    )
  return tokens


def shift_samples(shifts_ms: Sequence[float], sample_rate: int) -> list[int]:
  return [int(round(s * sample_rate / 1000.0)) for s in shifts_ms]


def sweep_probe(
  tokenize_fn: Callable[[np.ndarray], Any],
  waves: np.ndarray,
  *,
  segment_samples: int,
  sample_rate: int,
  shifts_ms: Sequence[float] = DEFAULT_SHIFTS_MS,
) -> dict[str, Any]:
  """Runs the sweep (module docstring) and returns its figures.

  Args:
    tokenize_fn: `f(waves float32 [N, segment_samples]) -> list[list[int]]` (or an object with a
      `.tokens` attribute holding that list, e.g. a `TokenizerOutput`).
    waves: float32 `[N, S_long]`, `S_long >= segment_samples + max shift`.
    segment_samples: window length.
    sample_rate: to convert the shifts to samples.
    shifts_ms: shifts in milliseconds; the first must be 0 (the reference).

  Returns: `{'shifts_ms', 'edit_distance', 'normalized_edit_distance', 'bigram_jaccard',
  'mean_length'}` (lists, one entry per shift), `'length_std'`, `'length_range'`,
  `'mean_edit_distance'`, `'mean_normalized_edit_distance'`, `'local_overlap'`, `'num_items'`,
  and `'tokens'` (`[shift][item]` token lists).
  """
  waves = np.asarray(waves, np.float32)
  if waves.ndim != 2 or waves.shape[0] == 0:
    raise ValueError(f'sweep_probe: waves must be [N>0, samples], got shape {waves.shape}')
  shifts_ms = [float(s) for s in shifts_ms]
  if not shifts_ms or shifts_ms[0] != 0.0:
    raise ValueError(f'sweep_probe: shifts_ms must start with 0 (the reference), got {shifts_ms}')
  offsets = shift_samples(shifts_ms, sample_rate)
  if min(offsets) < 0:
    raise ValueError(f'sweep_probe: negative shift in {shifts_ms}')
  need = segment_samples + max(offsets)
  if waves.shape[1] < need:
    raise ValueError(
      f'sweep_probe: waves have {waves.shape[1]} samples; segment_samples '
      f'({segment_samples}) + max shift ({max(offsets)}) needs {need}'
    )
  n = waves.shape[0]
  per_shift = []
  for s_ms, off in zip(shifts_ms, offsets):
    window = np.ascontiguousarray(waves[:, off : off + segment_samples])
    per_shift.append(_token_lists(tokenize_fn(window), n, s_ms))
  ref = per_shift[0]
  ed, ned, jac, mean_len = [], [], [], []
  for toks in per_shift:
    ed.append(float(metrics.pairwise_edit_distance(toks, ref).mean()))
    ned.append(float(metrics.pairwise_ned(toks, ref).mean()))
    jac.append(float(np.mean([bigram_jaccard(a, b) for a, b in zip(toks, ref)])))
    mean_len.append(float(metrics.lengths(toks).mean()))
  lens = np.stack([metrics.lengths(toks) for toks in per_shift])  # [shifts, N]
  later = slice(1, None)
  nonzero = len(shifts_ms) > 1
  return {
    'shifts_ms': shifts_ms,
    'edit_distance': ed,
    'normalized_edit_distance': ned,
    'bigram_jaccard': jac,
    'mean_length': mean_len,
    'length_std': float(lens.std(axis=0).mean()),
    'length_range': float((lens.max(axis=0) - lens.min(axis=0)).mean()),
    'mean_edit_distance': float(np.mean(ed[later])) if nonzero else 0.0,
    'mean_normalized_edit_distance': float(np.mean(ned[later])) if nonzero else 0.0,
    'local_overlap': float(np.mean(jac[later])) if nonzero else 1.0,
    'num_items': n,
    'tokens': per_shift,
  }
