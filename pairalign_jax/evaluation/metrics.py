"""String metrics over token sequences (docs/METHOD.md §10), host-side numpy / rapidfuzz.

A *string* is a sequence of code ids (no BOS/EOS/PAD); a batch of strings is `list[list[int]]`
(numpy int arrays are accepted wherever a list is). Definitions, as used by the reports:

* `tokens_per_second(seqs, seconds)` = `sum_i |y_i| / sum_i seconds_i` (equal-length segments:
  the mean per-segment rate).
* `vocab_usage(seqs, K)` = `|{distinct codes used}| / K`.
* `unigram_perplexity(seqs)` = `exp(H)`, `H = -sum_k p_k log p_k` (nats) over the pooled unigram
  distribution of all tokens; `nan` when there are no tokens.
* `unique_ratio(seqs, content_ids)` = distinct strings among one representative segment per
  distinct content item (the first segment of each content id) / number of distinct content items.
  Without `content_ids` every segment counts as its own item: `distinct strings / segments`.
  In `[1/n, 1]`; 1 = every content item has its own string, low = many-to-one collapse.
* `termination_rate(terminated)` = share of decodes that emitted EOS before the length limit.
* `normalized_edit_distance(a, b)` = `Levenshtein(a, b) / max(|a|, |b|)` (0 for two empty strings),
  rapidfuzz `Levenshtein.normalized_distance`.
* `cross_view_ned(seqs_a, seqs_b)` = mean NED over the pairs `(a_i, b_i)` (two views of the same
  content). `paired_ned_stats` adds the unrelated pairing `(a_i, b_{(i+shift) mod n})` (pairs that
  share a content id are left out) and the gap `unrelated - same` (the signal: large is good).
* `edit_operations(hyps, refs)` = substitutions, deletions and insertions of a minimal
  alignment of each pair, pooled, per reference token.
* `length_stats(seqs)` = mean / std / min / median / max of `|y_i|`.
* `phone_purity(...)` (labelled data: synthetic, TIMIT): each token gets the phone whose interval
  `[start, end)` contains the token's time; tokens inside no interval are *unassigned* (counted in
  `unassigned_rate`, left out of the rest). Over the `n` assigned tokens, with `c(k, p)` the
  number of tokens of id `k` labelled phone `p`:
    - `token_purity = sum_k max_p c(k, p) / n`  (each token id's share of its most frequent phone,
      averaged with token-count weights: cluster purity),
    - `phone_purity = sum_p max_k c(k, p) / n`  (each phone's share of its most frequent token id,
      phone-count weighted: inverse purity),
    - `nmi` = mutual information of (token id, phone) / arithmetic mean of their entropies
      (`sklearn.metrics.normalized_mutual_info_score`).
"""

from __future__ import annotations

from typing import Any, Hashable, Optional, Sequence

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein
from sklearn import metrics as sk_metrics

Strings = Sequence[Sequence[int]]


def as_strings(seqs: Strings, name: str = 'seqs') -> list[list[int]]:
  """Validates a batch of strings and returns it as `list[list[int]]` (python ints)."""
  if isinstance(seqs, np.ndarray) and seqs.ndim != 2:
    raise ValueError(
      f'{name}: expected a list of token sequences, got an array of shape {seqs.shape}'
    )
  out = []
  for i, s in enumerate(seqs):
    arr = np.asarray(s)
    if arr.ndim != 1:
      raise ValueError(f'{name}[{i}]: expected a 1-D token sequence, got shape {arr.shape}')
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
      raise ValueError(f'{name}[{i}]: tokens must be integers, got dtype {arr.dtype}')
    out.append(arr.astype(np.int64).tolist())
  return out


def lengths(seqs: Strings) -> np.ndarray:
  """`[n]` int64: number of tokens of each string."""
  return np.array([len(s) for s in seqs], np.int64)


def tokens_per_second(seqs: Strings, seconds: float | Sequence[float]) -> float:
  """Total tokens / total seconds of audio; `seconds` is one duration for all or one per string."""
  n = lengths(seqs)
  sec = np.broadcast_to(np.asarray(seconds, np.float64), n.shape)
  if n.size == 0:
    raise ValueError('tokens_per_second: no strings given')
  if np.any(sec <= 0):
    raise ValueError(f'tokens_per_second: durations must be positive, got {seconds!r}')
  return float(n.sum() / sec.sum())


def vocab_usage(seqs: Strings, codebook_size: int) -> float:
  """Distinct codes used / `codebook_size`."""
  if codebook_size <= 0:
    raise ValueError(f'codebook_size must be positive, got {codebook_size}')
  used = set()
  for s in seqs:
    used.update(int(t) for t in s)
  bad = [t for t in used if not 0 <= t < codebook_size]
  if bad:
    raise ValueError(f'vocab_usage: token ids {sorted(bad)[:5]} outside [0, {codebook_size})')
  return len(used) / codebook_size


def unigram_counts(seqs: Strings) -> dict[int, int]:
  counts: dict[int, int] = {}
  for s in seqs:
    for t in s:
      counts[int(t)] = counts.get(int(t), 0) + 1
  return counts


def unigram_perplexity(seqs: Strings) -> float:
  """`exp` of the entropy (nats) of the pooled unigram distribution; nan without tokens."""
  c = np.array(list(unigram_counts(seqs).values()), np.float64)
  if c.size == 0:
    return float('nan')
  p = c / c.sum()
  return float(np.exp(-(p * np.log(p)).sum()))


def unique_ratio(seqs: Strings, content_ids: Optional[Sequence[Hashable]] = None) -> float:
  """Distinct strings over distinct content items, one representative per item (module
  docstring)."""
  if content_ids is None:
    reps = [tuple(int(t) for t in s) for s in seqs]
  else:
    if len(content_ids) != len(seqs):
      raise ValueError(f'unique_ratio: {len(seqs)} strings but {len(content_ids)} content_ids')
    first: dict[Hashable, tuple[int, ...]] = {}
    for s, c in zip(seqs, content_ids):
      if c not in first:
        first[c] = tuple(int(t) for t in s)
    reps = list(first.values())
  if not reps:
    raise ValueError('unique_ratio: no strings given')
  return len(set(reps)) / len(reps)


def termination_rate(terminated: Optional[Sequence[bool]]) -> Optional[float]:
  """Share of decodes that emitted EOS before the length limit; None when not applicable."""
  if terminated is None:
    return None
  t = np.asarray(terminated, bool).reshape(-1)
  if t.size == 0:
    raise ValueError('termination_rate: no decodes given')
  return float(t.mean())


def normalized_edit_distance(a: Sequence[int], b: Sequence[int]) -> float:
  """`Levenshtein(a, b) / max(|a|, |b|)`; 0 for two empty strings."""
  return float(Levenshtein.normalized_distance(list(a), list(b)))


def pairwise_ned(seqs_a: Strings, seqs_b: Strings) -> np.ndarray:
  """`[n]` float32: NED of each pair `(a_i, b_i)` (rapidfuzz `process.cpdist`)."""
  if len(seqs_a) != len(seqs_b):
    raise ValueError(f'paired strings differ in number: {len(seqs_a)} vs {len(seqs_b)}')
  if not seqs_a:
    return np.zeros([0], np.float32)
  return np.asarray(
    process.cpdist(list(seqs_a), list(seqs_b), scorer=Levenshtein.normalized_distance, workers=-1),
    np.float32,
  )


def edit_operations(hyps: Strings, refs: Strings) -> dict[str, float]:
  """How the strings `hyps` differ from the paired `refs`, pooled over all pairs: the edit
  operations of one minimal Levenshtein alignment per pair (rapidfuzz `Levenshtein.editops`), per
  reference token. Keys: 'substitutions', 'deletions' (reference tokens the hypothesis leaves
  out), 'insertions' (hypothesis tokens the reference does not have), each a count divided by
  'reference_tokens' (their sum is the pooled edit distance / reference tokens); and
  'reference_tokens', 'hypothesis_tokens' (totals). A pair's split between the three can depend
  on which minimal alignment rapidfuzz returns; the total cannot."""
  if len(hyps) != len(refs):
    raise ValueError(f'paired strings differ in number: {len(hyps)} vs {len(refs)}')
  counts = {'replace': 0, 'delete': 0, 'insert': 0}
  ref_tokens = hyp_tokens = 0
  for hyp, ref in zip(hyps, refs):
    hyp, ref = list(hyp), list(ref)
    ref_tokens += len(ref)
    hyp_tokens += len(hyp)
    # editops(s1, s2) turns s1 into s2: with s1 = ref, 'delete' drops a reference token and
    # 'insert' adds a hypothesis token.
    for op in Levenshtein.editops(ref, hyp):
      counts[op.tag] += 1
  per_ref = 1.0 / max(ref_tokens, 1)
  return {
    'substitutions': counts['replace'] * per_ref,
    'deletions': counts['delete'] * per_ref,
    'insertions': counts['insert'] * per_ref,
    'reference_tokens': float(ref_tokens),
    'hypothesis_tokens': float(hyp_tokens),
  }


def pairwise_edit_distance(seqs_a: Strings, seqs_b: Strings) -> np.ndarray:
  """`[n]` int64: raw Levenshtein distance of each pair `(a_i, b_i)`."""
  if len(seqs_a) != len(seqs_b):
    raise ValueError(f'paired strings differ in number: {len(seqs_a)} vs {len(seqs_b)}')
  if not seqs_a:
    return np.zeros([0], np.int64)
  return np.asarray(
    process.cpdist(list(seqs_a), list(seqs_b), scorer=Levenshtein.distance, workers=-1), np.int64
  )


def cross_view_ned(seqs_a: Strings, seqs_b: Strings) -> float:
  """Mean NED between paired strings `(a_i, b_i)` (views of the same content)."""
  d = pairwise_ned(seqs_a, seqs_b)
  if d.size == 0:
    raise ValueError('cross_view_ned: no pairs given')
  return float(d.mean())


def paired_ned_stats(
  seqs_a: Strings,
  seqs_b: Strings,
  content_ids: Optional[Sequence[Hashable]] = None,
  *,
  shift: int = 1,
) -> dict[str, float]:
  """`{'same', 'unrelated', 'gap'}`: mean NED of the pairs `(a_i, b_i)`, of the rolled pairs
  `(a_i, b_{(i+shift) mod n})` (skipping pairs whose `content_ids` agree), and
  `unrelated - same`."""
  n = len(seqs_a)
  if n < 2:
    raise ValueError(f'paired_ned_stats needs at least 2 pairs, got {n}')
  if shift % n == 0:
    raise ValueError(f'shift={shift} pairs every string with itself (n={n})')
  same = cross_view_ned(seqs_a, seqs_b)
  j = (np.arange(n) + shift) % n
  keep = np.ones(n, bool)
  if content_ids is not None:
    if len(content_ids) != n:
      raise ValueError(f'paired_ned_stats: {n} pairs but {len(content_ids)} content_ids')
    keep = np.array([content_ids[i] != content_ids[int(j[i])] for i in range(n)])
  if not keep.any():
    raise ValueError('paired_ned_stats: every rolled pair shares its content id')
  b_rolled = [seqs_b[int(j[i])] for i in range(n) if keep[i]]
  a_kept = [seqs_a[i] for i in range(n) if keep[i]]
  unrelated = float(pairwise_ned(a_kept, b_rolled).mean())
  return {'same': same, 'unrelated': unrelated, 'gap': unrelated - same}


def length_stats(seqs: Strings) -> dict[str, float]:
  """`{'mean', 'std', 'min', 'median', 'max'}` of the string lengths."""
  n = lengths(seqs)
  if n.size == 0:
    raise ValueError('length_stats: no strings given')
  return {
    'mean': float(n.mean()),
    'std': float(n.std()),
    'min': float(n.min()),
    'median': float(np.median(n)),
    'max': float(n.max()),
  }


def assign_phones(
  times: np.ndarray, phone_labels: Sequence[str], phone_times: np.ndarray
) -> list[Optional[str]]:
  """The phone whose `[start, end)` interval contains each time (None if none does).

  `times`: `[n]` seconds; `phone_times`: `[P, 2]` (start, end) seconds, sorted, non-overlapping.
  """
  times = np.asarray(times, np.float64).reshape(-1)
  pt = np.asarray(phone_times, np.float64).reshape(-1, 2)
  if len(phone_labels) != pt.shape[0]:
    raise ValueError(f'{len(phone_labels)} phone labels but {pt.shape[0]} phone intervals')
  if pt.shape[0] == 0:
    return [None] * times.shape[0]
  # Index of the last interval starting at or before t.
  k = np.searchsorted(pt[:, 0], times, side='right') - 1
  out: list[Optional[str]] = []
  for t, i in zip(times, k):
    out.append(phone_labels[i] if i >= 0 and t < pt[i, 1] else None)
  return out


def phone_purity(
  tokens: Strings,
  times: Sequence[np.ndarray],
  phone_labels: Sequence[Sequence[str]],
  phone_times: Sequence[np.ndarray],
) -> dict[str, Any]:
  """Token purity, phone purity and NMI of tokens against time-aligned phones (module docstring).

  Per utterance `i`: `tokens[i]` `[n_i]`, `times[i]` `[n_i]` seconds, `phone_labels[i]` `[P_i]`,
  `phone_times[i]` `[P_i, 2]` seconds. Returns `{'token_purity', 'phone_purity', 'nmi',
  'unassigned_rate', 'num_tokens' (assigned), 'num_phones' (distinct phones seen)}`; the first three
  are nan when no token is assigned.
  """
  if not len(tokens) == len(times) == len(phone_labels) == len(phone_times):
    raise ValueError(
      f'phone_purity: tokens ({len(tokens)}), times ({len(times)}), phone_labels '
      f'({len(phone_labels)}) and phone_times ({len(phone_times)}) differ in number'
    )
  tok_ids, phones = [], []
  total = 0
  for i, (y, t, pl, pt) in enumerate(zip(tokens, times, phone_labels, phone_times)):
    t = np.asarray(t).reshape(-1)
    if len(y) != t.shape[0]:
      raise ValueError(f'phone_purity: utterance {i} has {len(y)} tokens but {t.shape[0]} times')
    total += len(y)
    for tok, ph in zip(y, assign_phones(t, pl, pt)):
      if ph is not None:
        tok_ids.append(int(tok))
        phones.append(ph)
  n = len(tok_ids)
  out: dict[str, Any] = {
    'num_tokens': n,
    'num_phones': len(set(phones)),
    'unassigned_rate': float((total - n) / total) if total else float('nan'),
  }
  if n == 0:
    out.update(token_purity=float('nan'), phone_purity=float('nan'), nmi=float('nan'))
    return out
  cont = sk_metrics.cluster.contingency_matrix(phones, tok_ids)  # [phones, token ids]
  cont = np.asarray(cont.toarray() if hasattr(cont, 'toarray') else cont)
  out['token_purity'] = float(cont.max(axis=0).sum() / n)
  out['phone_purity'] = float(cont.max(axis=1).sum() / n)
  out['nmi'] = float(sk_metrics.normalized_mutual_info_score(phones, tok_ids))
  return out
