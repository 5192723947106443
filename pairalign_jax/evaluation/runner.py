"""Evaluate several tokenizers on the same segments: build the eval set, compute every metric.

Tokenizers are plain callables, so this module never imports the model or training code:

    tokenizers = {'pairalign': tok.tokenize, 'vq': tok.vq_tokenize, 'kmeans': kmeans_tok}
    eval_set = build_eval_set(source, num_items=100, queries_per_item=3, seed=0)
    report = evaluate_tokenizers(tokenizers, eval_set, codebook_sizes=512)
    report_lib.write_report(report, workdir)

A tokenizer is `f(waves float32 [N, S], sample_rate) -> TokenizerOutput` (or any object with
`.tokens`, `.times`, `.terminated` attributes, e.g. `tokenizer.TokenizerOutput`).

**Eval set** (`build_eval_set`). Records of a random-access source (`{'audio', 'sample_rate', 'id',
'speaker', 'content_id', 'phones'?, 'phone_times'?}`) are grouped by `content_id`; groups are
ordered by their lowest source index. `num_items` groups are drawn (seeded) among those with at
least two realizations. Per item:
  * archive: the realization with the lowest source index (the synthetic held-out split,
    index = speaker * num_sentences + sentence, gives the first held-out speaker),
  * queries: up to `queries_per_item` of the other realizations (seeded draw); with `augment_fn`
    every query is additionally passed through `augment_fn(wave, rng)` (`rng` seeded per query),
    and items with a single realization become eligible: their queries are augmented copies of the
    archive realization (this is how corpora without repeated content are evaluated).
Segments are the first `segment_seconds` of each record (resampled with soxr, zero-padded at the
end), so `phone_times` need no offset; augmented queries carry no phone labels (augmentation may
move them). The sweep waveforms are the first `sweep_items` archive records, `segment + max shift`
samples long. Content ids come from `content_ids=` (a sequence or a callable of the index), else
from the grid layout of the synthetic held-out split (`SyntheticSpeechSource`, no synthesis
needed), else from `source.entries` (file sources), else by reading each record.

**Metrics** (`evaluate_tokenizers`, definitions in `metrics.py`, `retrieval.py`, `sweep.py`), for
each tokenizer on the same segments:
  * over all segments (archive + queries): `tokens_per_second`, `vocab_usage`,
    `unigram_perplexity`, `termination_rate` (None when the tokenizer returns no `terminated`),
    `length_mean/std/min/median/max`, `lengths`;
  * `unique_ratio` over the archive (one segment per content item);
  * `cross_view_ned`: mean NED(query, archive string of its item); `unrelated_ned`: mean
    NED(query, archive string of the next item `(target + 1) mod A`); `ned_gap` = the difference;
  * retrieval of queries in the archive: `recall_at_1`, `recall_at_5`, `mrr`, `archive_tokens`,
    `num_queries`, `archive_size`, and `recall_vs_archive_size`;
  * `sweep` (continuous-sweep probe on the sweep waveforms), `phone` (phone purity; when the
    records have phone labels and the tokenizer returns times).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Hashable, Mapping, Optional, Sequence, Union

from absl import logging
import numpy as np

from pairalign_jax.data import audio_io
from pairalign_jax.evaluation import metrics
from pairalign_jax.evaluation import retrieval
from pairalign_jax.evaluation import sweep as sweep_lib


@dataclasses.dataclass
class TokenizerOutput:
  """What a tokenizer callable returns for `N` waveforms."""
  tokens: list[list[int]]                          # codes only (no BOS/EOS)
  times: Optional[list[np.ndarray]] = None         # seconds from the segment start, one per token
  terminated: Optional[np.ndarray] = None          # [N] bool: EOS before the length limit


TokenizerFn = Callable[[np.ndarray, int], Any]
AugmentFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclasses.dataclass
class EvalSet:
  """Segments shared by every tokenizer: archive rows `[0, A)`, then query rows `[A, A + Q)`."""
  waves: np.ndarray                     # [A + Q, S] float32
  num_archive: int                      # A (one per content item)
  query_targets: np.ndarray             # [Q] int64: archive row of each query's item
  content_ids: list[Hashable]           # [A + Q]
  speakers: list[str]                   # [A + Q]
  ids: list[str]                        # [A + Q]
  source_indices: np.ndarray            # [A + Q] int64 source index of each row
  phones: list[Optional[list[str]]]     # [A + Q] phone labels or None
  phone_times: list[Optional[np.ndarray]]  # [A + Q] float32 [P, 2] or None
  sweep_waves: np.ndarray               # [n_sweep, S + max_shift] float32 (first archive items)
  sweep_shifts_ms: tuple[float, ...]
  sample_rate: int
  segment_samples: int

  @property
  def num_queries(self) -> int:
    return int(self.query_targets.shape[0])

  @property
  def segment_seconds(self) -> float:
    return self.segment_samples / self.sample_rate


def _content_ids(source, content_ids) -> list[Hashable]:
  n = len(source)
  if content_ids is not None:
    ids = [content_ids(i) for i in range(n)] if callable(content_ids) else list(content_ids)
    if len(ids) != n:
      raise ValueError(f'content_ids has {len(ids)} entries for a source of {n} records')
    return ids
  if getattr(source, 'split', None) == 'heldout' and hasattr(source, 'sentences'):
    # data.synthetic.SyntheticSpeechSource: index = speaker * num_sentences + sentence.
    return [source.sentences[i % source.num_sentences].content_id for i in range(n)]
  entries = getattr(source, 'entries', None)
  if entries is not None and len(entries) == n and all('content_id' in e for e in entries):
    return [e['content_id'] for e in entries]
  logging.info('build_eval_set: reading %d records to find their content ids', n)
  return [source[i]['content_id'] for i in range(n)]


def _segment(record: Mapping[str, Any], sample_rate: int, length: int) -> np.ndarray:
  """The first `length` samples at `sample_rate` (mono, resampled, zero-padded at the end)."""
  wave = audio_io.to_mono(record['audio'])
  sr = int(record['sample_rate'])
  if sr != sample_rate:
    native = int(np.ceil(length * sr / sample_rate))
    wave = audio_io.resample(wave[:native], sr, sample_rate)
  return audio_io.fit_segment(wave, length, crop='start')


def build_eval_set(source, *, num_items: int, queries_per_item: int, seed: int = 0,
                   sample_rate: int = 16_000, segment_seconds: float = 3.0,
                   augment_fn: Optional[AugmentFn] = None,
                   content_ids: Union[Sequence[Hashable], Callable[[int], Hashable], None] = None,
                   sweep_items: int = 32,
                   sweep_shifts_ms: Sequence[float] = sweep_lib.DEFAULT_SHIFTS_MS) -> EvalSet:
  """Archive / query segments from a random-access source of records (module docstring)."""
  if num_items < 2:
    raise ValueError(f'num_items must be >= 2 (unrelated pairs need two items), got {num_items}')
  if queries_per_item < 1:
    raise ValueError(f'queries_per_item must be >= 1, got {queries_per_item}')
  cids = _content_ids(source, content_ids)
  groups: dict[Hashable, list[int]] = {}
  for i, c in enumerate(cids):
    groups.setdefault(c, []).append(i)
  min_size = 1 if augment_fn is not None else 2
  eligible = [g for g in groups.values() if len(g) >= min_size]   # ordered by lowest index
  if len(eligible) < 2:
    raise ValueError(f'build_eval_set: {len(eligible)} content items with >= {min_size} '
                     f'realizations in a source of {len(cids)} records; need at least 2')
  rng = np.random.default_rng(seed)
  if len(eligible) < num_items:
    logging.warning('build_eval_set: only %d eligible content items (asked for %d)', len(eligible),
                    num_items)
  chosen = sorted(rng.choice(len(eligible), size=min(num_items, len(eligible)), replace=False))
  items = [eligible[k] for k in chosen]

  segment_samples = int(round(segment_seconds * sample_rate))
  shifts = tuple(float(s) for s in sweep_shifts_ms)
  sweep_len = segment_samples + max(sweep_lib.shift_samples(shifts, sample_rate))
  n_sweep = min(sweep_items, len(items))

  def meta(rec):   # what the eval set keeps of a record (not its audio)
    return {k: rec[k] for k in ('speaker', 'id', 'phones', 'phone_times') if k in rec}

  rows: list[dict[str, Any]] = []
  query_rows: list[dict[str, Any]] = []
  sweep_waves = []
  for a, group in enumerate(items):
    rec = source[group[0]]
    rows.append(dict(wave=_segment(rec, sample_rate, segment_samples), record=meta(rec),
                     index=group[0], labelled=True))
    if a < n_sweep:
      sweep_waves.append(_segment(rec, sample_rate, sweep_len))
    others = group[1:]
    if others:
      picks = sorted(rng.choice(len(others), size=min(queries_per_item, len(others)), replace=False))
      sources = [(others[p], None) for p in picks]
    else:  # only with augment_fn: augmented copies of the archive realization
      sources = [(group[0], rec)] * queries_per_item
    for idx, cached in sources:
      q_rec = cached if cached is not None else source[idx]
      wave = _segment(q_rec, sample_rate, segment_samples)
      if augment_fn is not None:
        q_rng = np.random.default_rng([seed, len(query_rows)])
        wave = audio_io.fit_segment(np.asarray(augment_fn(wave, q_rng), np.float32),
                                    segment_samples, crop='start')
      query_rows.append(dict(wave=wave, record=meta(q_rec), index=idx, target=a,
                             labelled=augment_fn is None))
  all_rows = rows + query_rows

  def label(r, key):
    if not r['labelled'] or key not in r['record']:
      return None
    return (list(r['record'][key]) if key == 'phones'
            else np.asarray(r['record'][key], np.float32).reshape(-1, 2))

  eval_set = EvalSet(
      waves=np.stack([r['wave'] for r in all_rows]).astype(np.float32),
      num_archive=len(rows),
      query_targets=np.array([r['target'] for r in query_rows], np.int64),
      content_ids=[cids[r['index']] for r in all_rows],
      speakers=[str(r['record'].get('speaker', '')) for r in all_rows],
      ids=[str(r['record'].get('id', r['index'])) for r in all_rows],
      source_indices=np.array([r['index'] for r in all_rows], np.int64),
      phones=[label(r, 'phones') for r in all_rows],
      phone_times=[label(r, 'phone_times') for r in all_rows],
      sweep_waves=np.stack(sweep_waves).astype(np.float32),
      sweep_shifts_ms=shifts,
      sample_rate=sample_rate,
      segment_samples=segment_samples)
  logging.info('eval set: %d archive items, %d queries, %d sweep items', eval_set.num_archive,
               eval_set.num_queries, n_sweep)
  return eval_set


def _tokenize(fn: TokenizerFn, waves: np.ndarray, sample_rate: int, batch_size: int
              ) -> TokenizerOutput:
  """Runs `fn` over `waves` in batches and concatenates the outputs."""
  tokens: list[list[int]] = []
  times: Optional[list[np.ndarray]] = []
  terminated: Optional[list[np.ndarray]] = []
  for s in range(0, waves.shape[0], batch_size):
    batch = waves[s:s + batch_size]
    out = fn(batch, sample_rate)
    toks = metrics.as_strings(out.tokens, 'tokens')
    if len(toks) != batch.shape[0]:
      raise ValueError(f'tokenizer returned {len(toks)} strings for {batch.shape[0]} waveforms')
    tokens += toks
    t = getattr(out, 'times', None)
    if t is None or times is None:
      times = None
    else:
      t = [np.asarray(x, np.float32).reshape(-1) for x in t]
      for i, (y, x) in enumerate(zip(toks, t)):
        if len(y) != x.shape[0]:
          raise ValueError(f'tokenizer returned {x.shape[0]} times for {len(y)} tokens (row {s + i})')
      times += t
    term = getattr(out, 'terminated', None)
    if term is None or terminated is None:
      terminated = None
    else:
      terminated.append(np.asarray(term, bool).reshape(-1))
  return TokenizerOutput(tokens=tokens, times=times,
                         terminated=None if terminated is None else np.concatenate(terminated))


def default_archive_sizes(n: int) -> list[int]:
  """2, 5, 10, 20, 50, ... below `n`, then `n`."""
  sizes, base = [], 1
  while True:
    for m in (2, 5, 10):
      if m * base >= n:
        return sizes + [n]
      sizes.append(m * base)
    base *= 10


def evaluate_tokenizer(fn: TokenizerFn, eval_set: EvalSet, *, codebook_size: int,
                       batch_size: int = 64, ties: str = 'expected',
                       archive_sizes: Optional[Sequence[int]] = None, seed: int = 0
                       ) -> tuple[dict[str, Any], TokenizerOutput]:
  """All metrics of one tokenizer (module docstring) and its output on `eval_set.waves`."""
  sr, a = eval_set.sample_rate, eval_set.num_archive
  t0 = time.perf_counter()
  out = _tokenize(fn, eval_set.waves, sr, batch_size)
  tokenize_seconds = time.perf_counter() - t0
  seqs = out.tokens
  archive, queries = seqs[:a], seqs[a:]
  targets = eval_set.query_targets

  r: dict[str, Any] = {
      'tokens_per_second': metrics.tokens_per_second(seqs, eval_set.segment_seconds),
      'vocab_usage': metrics.vocab_usage(seqs, codebook_size),
      'unigram_perplexity': metrics.unigram_perplexity(seqs),
      'unique_ratio': metrics.unique_ratio(archive, eval_set.content_ids[:a]),
      'termination_rate': metrics.termination_rate(out.terminated),
  }
  r.update({f'length_{k}': v for k, v in metrics.length_stats(seqs).items()})
  same = metrics.pairwise_ned(queries, [archive[t] for t in targets])
  other = metrics.pairwise_ned(queries, [archive[(t + 1) % a] for t in targets])
  r['cross_view_ned'] = float(same.mean())
  r['unrelated_ned'] = float(other.mean())
  r['ned_gap'] = r['unrelated_ned'] - r['cross_view_ned']

  d = retrieval.distance_matrix(queries, archive)
  r.update(retrieval.evaluate_retrieval(queries, archive, targets, ties=ties, distances=d).as_dict())
  sizes = default_archive_sizes(a) if archive_sizes is None else [m for m in archive_sizes if m <= a]
  r['recall_vs_archive_size'] = retrieval.recall_vs_archive_size(d, targets, sizes, seed=seed,
                                                                 ties=ties)

  sw = sweep_lib.sweep_probe(lambda w: _tokenize(fn, w, sr, batch_size), eval_set.sweep_waves,
                             segment_samples=eval_set.segment_samples, sample_rate=sr,
                             shifts_ms=eval_set.sweep_shifts_ms)
  sw.pop('tokens')
  r['sweep'] = sw

  r['phone'] = None
  if out.times is not None:
    rows = [i for i, p in enumerate(eval_set.phones) if p is not None]
    if rows:
      r['phone'] = metrics.phone_purity([seqs[i] for i in rows], [out.times[i] for i in rows],
                                        [eval_set.phones[i] for i in rows],
                                        [eval_set.phone_times[i] for i in rows])
  r['lengths'] = metrics.lengths(seqs).tolist()
  r['tokenize_seconds'] = tokenize_seconds
  r['segments_per_second'] = len(seqs) / max(tokenize_seconds, 1e-9)
  return r, out


def evaluate_tokenizers(tokenizers: Mapping[str, TokenizerFn], eval_set: EvalSet, *,
                        codebook_sizes: Union[int, Mapping[str, int]], batch_size: int = 64,
                        ties: str = 'expected', archive_sizes: Optional[Sequence[int]] = None,
                        seed: int = 0, primary: str = 'pairalign', reference: str = 'vq',
                        example_features_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                        example_frame_seconds: float = 0.01, example_index: int = 0
                        ) -> dict[str, Any]:
  """Evaluates every tokenizer on `eval_set`; returns the report dict of `report.py`.

  Args:
    tokenizers: name -> `f(waves [N, S], sample_rate) -> TokenizerOutput`.
    eval_set: from `build_eval_set`.
    codebook_sizes: K for every tokenizer, or name -> K.
    batch_size: waveforms per tokenizer call.
    ties, archive_sizes, seed: retrieval settings (`retrieval.py`).
    primary, reference: the names compared in the headline (PairAlign vs VQ).
    example_features_fn: `waves [1, S] -> [1, F, M]` log-mel; when given, `report['example']`
      holds the log-mel of segment `example_index` and every tokenizer's tokens/times on it.
  """
  if not tokenizers:
    raise ValueError('evaluate_tokenizers: no tokenizers given')
  report: dict[str, Any] = {
      'eval_set': {'num_items': eval_set.num_archive, 'num_queries': eval_set.num_queries,
                   'num_segments': int(eval_set.waves.shape[0]),
                   'segment_seconds': eval_set.segment_seconds, 'sample_rate': eval_set.sample_rate,
                   'sweep_items': int(eval_set.sweep_waves.shape[0]),
                   'sweep_shifts_ms': list(eval_set.sweep_shifts_ms), 'ties': ties},
      'tokenizers': {},
  }
  if not isinstance(codebook_sizes, int):
    missing = [n for n in tokenizers if n not in codebook_sizes]
    if missing:
      raise ValueError(f'codebook_sizes has no entry for tokenizers {missing}')
  outputs = {}
  for name, fn in tokenizers.items():
    k = codebook_sizes if isinstance(codebook_sizes, int) else codebook_sizes[name]
    logging.info('evaluating tokenizer %r on %d segments', name, eval_set.waves.shape[0])
    report['tokenizers'][name], outputs[name] = evaluate_tokenizer(
        fn, eval_set, codebook_size=int(k), batch_size=batch_size, ties=ties,
        archive_sizes=archive_sizes, seed=seed)
  report['headline'] = headline(report, primary=primary, reference=reference)
  if example_features_fn is not None:
    i = example_index
    mel = np.asarray(example_features_fn(eval_set.waves[i:i + 1]))[0]
    report['example'] = {
        'index': i, 'id': eval_set.ids[i], 'log_mel': mel, 'frame_seconds': example_frame_seconds,
        'phones': eval_set.phones[i],
        'phone_times': None if eval_set.phone_times[i] is None else eval_set.phone_times[i].tolist(),
        'tokens': {n: o.tokens[i] for n, o in outputs.items()},
        'times': {n: None if o.times is None else o.times[i].tolist() for n, o in outputs.items()},
    }
  return report


def headline(report: Mapping[str, Any], *, primary: str = 'pairalign', reference: str = 'vq'
             ) -> dict[str, Any]:
  """`archive_tokens_ratio` = primary / reference archive tokens; `recall_at_1_difference` =
  primary - reference recall@1; None where either tokenizer is missing."""
  toks = report['tokenizers']
  out: dict[str, Any] = {'primary': primary, 'reference': reference,
                         'archive_tokens_ratio': None, 'recall_at_1_difference': None}
  if primary in toks and reference in toks:
    p, r = toks[primary], toks[reference]
    out['archive_tokens_ratio'] = (p['archive_tokens'] / r['archive_tokens']
                                   if r['archive_tokens'] else None)
    out['recall_at_1_difference'] = p['recall_at_1'] - r['recall_at_1']
  return out
