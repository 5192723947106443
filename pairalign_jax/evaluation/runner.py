"""Evaluate several tokenizers on the same segments: build the eval set, compute every metric.

Tokenizers are plain callables, so this module never imports the model or training code:

    tokenizers = {'pairalign': tok.tokenize, 'vq': tok.vq_tokenize, 'kmeans': kmeans_tok}
    eval_set = build_eval_set(source, num_items=100, queries_per_item=3, seed=0)
    report = evaluate_tokenizers(tokenizers, eval_set, codebook_sizes=512)
    report_lib.write_report(report, workdir)

A tokenizer is `f(waves float32 [N, S], sample_rate) -> TokenizerOutput` (or any object with
`.tokens`, `.times`, `.terminated` attributes, e.g. `token_strings.TokenizerOutput`).

**Eval set** (`build_eval_set`). Records of a random-access source (`{'audio', 'sample_rate', 'id',
'speaker', 'content_id', 'phones'?, 'phone_times'?}`) are grouped by `content_id`; groups are
ordered by their lowest source index. `num_items` groups are drawn (seeded; -1 = all) among those
with at least two realizations. Per item and **rotation** r (`archive_rotations`, -1 = as many as
the most realized item has realizations):
  * archive: the realization number `r mod n` of the item by source index (rotation 0: the lowest
    index; on a speaker x sentence grid such as the synthetic evaluation splits, index = speaker
    * num_sentences + sentence, rotation r is speaker r reading every sentence),
  * queries: up to `queries_per_item` of the other realizations (seeded draw); with `augment_fn`
    every query is additionally passed through `augment_fn(wave, rng)` (`rng` seeded per query),
    and items with a single realization become eligible: their queries are augmented copies of the
    archive realization (this is how corpora without repeated content are evaluated; one
    rotation).
Each distinct segment is tokenized once, whatever the number of rotations. Segments are the first
`segment_seconds` of each record (resampled with soxr, zero-padded at the end), so `phone_times`
need no offset; augmented queries carry no phone labels (augmentation may move them). The sweep
waveforms are the first `sweep_items` archive records of rotation 0, `segment + max shift`
samples long. Content ids come from `content_ids=` (a sequence or a callable of the index), else
from the grid layout of a synthetic grid split (`SyntheticSpeechSource.is_grid`, no synthesis
needed), else from `source.entries` (file sources), else by reading each record. A record that
cannot be read or whose audio is unusable (`bad_input.validate_audio`) is logged with its path and
reason and left out; the set is then drawn from the good records only.

**Metrics** (`evaluate_tokenizers`, definitions in `metrics.py`, `retrieval.py`, `sweep.py`), for
each tokenizer on the same segments:
  * over all segments (archive + queries): `tokens_per_second`, `vocab_usage`,
    `unigram_perplexity`, `termination_rate` (None when the tokenizer returns no `terminated`),
    `length_mean/std/min/median/max`, `lengths`;
  * `unique_ratio` over the archive (one segment per content item);
  * `cross_view_ned`: mean NED(query, archive string of its item); `unrelated_ned`: mean
    NED(query, archive string of the next item `(target + 1) mod A`); `ned_gap` = the difference;
  * retrieval of queries in the archive, pooled over rotations: `recall_at_1` (with
    `recall_at_1_ci95`, a bootstrap interval over content items), `recall_at_5`, `mrr`,
    `archive_tokens` (mean over rotations), `num_queries`, `archive_size`, `num_rotations`,
    `rotations` (recall@1 and archive tokens of each), `per_item`, and `recall_vs_archive_size`
    (rotation 0);
  * the headline (`headline`): primary vs reference archive-token ratio and recall@1 difference,
    each with a bootstrap 95% interval over content items, and the same against every tokenizer;
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
from pairalign_jax.data import bad_input
from pairalign_jax.evaluation import bootstrap
from pairalign_jax.evaluation import metrics
from pairalign_jax.evaluation import retrieval
from pairalign_jax.evaluation import sweep as sweep_lib
from pairalign_jax.token_strings import TokenizerOutput

TokenizerFn = Callable[[np.ndarray, int], Any]
TARGETS_NAME = 'vq_groups'  # the tokenizer that writes the decoder's training targets
AugmentFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclasses.dataclass
class Rotation:
  """One choice of archive: a realization per content item, the other realizations as queries."""

  archive_rows: np.ndarray  # [A] int64: row of `EvalSet.waves` holding item a's archive segment
  query_rows: np.ndarray  # [Q] int64: rows of the queries
  query_targets: np.ndarray  # [Q] int64: item (archive position) of each query


@dataclasses.dataclass
class EvalSet:
  """Segments shared by every tokenizer.

  Rows `[0, A)` are rotation 0's archive, rows `[A, A + Q)` its queries; rows needed only by
  later rotations follow. `rotations[r]` says which rows are archive and queries in rotation r.
  """

  waves: np.ndarray  # [N, S] float32, every distinct segment once
  num_archive: int  # A (one per content item)
  query_targets: np.ndarray  # [Q] int64: archive row of each rotation-0 query's item
  content_ids: list[Hashable]  # [N]
  speakers: list[str]  # [N]
  ids: list[str]  # [N]
  source_indices: np.ndarray  # [N] int64 source index of each row
  phones: list[Optional[list[str]]]  # [N] phone labels or None
  phone_times: list[Optional[np.ndarray]]  # [N] float32 [P, 2] or None
  sweep_waves: np.ndarray  # [n_sweep, S + max_shift] float32 (first archive items)
  sweep_shifts_ms: tuple[float, ...]
  sample_rate: int
  segment_samples: int
  rotations: list[Rotation] = dataclasses.field(default_factory=list)

  def __post_init__(self):
    if not self.rotations:  # a single archive: rows [0, A), queries after
      a, q = self.num_archive, self.query_targets.shape[0]
      self.rotations = [Rotation(np.arange(a), np.arange(a, a + q), np.asarray(self.query_targets))]

  @property
  def num_queries(self) -> int:
    """Queries of rotation 0."""
    return int(self.query_targets.shape[0])

  @property
  def total_queries(self) -> int:
    """Queries over every rotation."""
    return int(sum(r.query_rows.shape[0] for r in self.rotations))

  @property
  def segment_seconds(self) -> float:
    return self.segment_samples / self.sample_rate


def listed_content_ids(source) -> Optional[list[Hashable]]:
  """The content id of every record of `source` where it is known without reading audio (the
  grid layout of a synthetic grid split, or `source.entries` of a file source), else None."""
  n = len(source)
  if getattr(source, 'is_grid', False) and hasattr(source, 'sentences'):
    # data.synthetic.SyntheticSpeechSource grid splits: index = speaker * num_sentences + sentence.
    return [source.sentences[i % source.num_sentences].content_id for i in range(n)]
  entries = getattr(source, 'entries', None)
  if entries is not None and len(entries) == n and all('content_id' in e for e in entries):
    return [e['content_id'] for e in entries]
  return None


def _content_ids(source, content_ids, on_bad=None) -> list[Hashable]:
  """The content id of every record of `source` (module docstring). Where the records must be
  read for it, an unreadable one gets an id of its own and is passed to `on_bad(index, error)`."""
  n = len(source)
  if content_ids is not None:
    ids = [content_ids(i) for i in range(n)] if callable(content_ids) else list(content_ids)
    if len(ids) != n:
      raise ValueError(f'content_ids has {len(ids)} entries for a source of {n} records')
    return ids
  listed = listed_content_ids(source)
  if listed is not None:
    return listed
  logging.info('build_eval_set: reading %d records to find their content ids', n)
  ids = []
  for i in range(n):
    try:
      ids.append(source[i]['content_id'])
    except bad_input.BadAudioError as e:
      if on_bad is None:
        raise
      on_bad(i, e)
      ids.append(('unreadable record', i))
  return ids


def _segment(record: Mapping[str, Any], sample_rate: int, length: int) -> np.ndarray:
  """The first `length` samples at `sample_rate` (mono, resampled, zero-padded at the end)."""
  wave = audio_io.to_mono(record['audio'])
  sr = int(record['sample_rate'])
  if sr != sample_rate:
    native = int(np.ceil(length * sr / sample_rate))
    wave = audio_io.resample(wave[:native], sr, sample_rate)
  return audio_io.fit_segment(wave, length, crop='start')


def eligible_items(cids: Sequence[Hashable], min_size: int) -> list[list[int]]:
  """Source indices of each content item with at least `min_size` realizations, ordered by their
  lowest index."""
  groups: dict[Hashable, list[int]] = {}
  for i, c in enumerate(cids):
    groups.setdefault(c, []).append(i)
  return [g for g in groups.values() if len(g) >= min_size]


def parallel_item_count(source, content_ids=None) -> int:
  """How many content items of `source` have at least two realizations (parallel readings)."""
  return len(eligible_items(_content_ids(source, content_ids), 2))


class _BadRecord(Exception):
  """A record of the eval set turned out unreadable or unusable (`bad_input.BadAudioError`)."""

  def __init__(self, index: int, error: bad_input.BadAudioError):
    super().__init__(index, error)
    self.index, self.error = index, error


class _RecordReader:
  """Reads each record of `source` the eval set uses once, and checks it
  (`bad_input.validate_audio`): its `segment_samples` segment and metadata are kept, a bad record
  raises `_BadRecord` naming its index. The shift probe's longer segment of an archive record is
  cut from the record just read for its row (the archive rows are read right before it)."""

  def __init__(self, source, sample_rate: int, segment_samples: int, sweep_samples: int):
    self.source = source
    self.sample_rate, self.segment_samples = sample_rate, segment_samples
    self.sweep_samples = sweep_samples
    self._kept: dict[int, tuple[np.ndarray, dict[str, Any]]] = {}
    self._last: tuple[int, Mapping[str, Any]] = (-1, {})  # the record read last, for `sweep`

  def _record(self, index: int) -> Mapping[str, Any]:
    if self._last[0] == index:
      return self._last[1]
    try:
      record = self.source[index]
      bad_input.validate_audio(
        audio_io.to_mono(record['audio']), str(record.get('id', f'index {index}'))
      )
    except bad_input.BadAudioError as e:
      raise _BadRecord(index, e) from e
    self._last = (index, record)
    return record

  def read(self, index: int) -> tuple[np.ndarray, dict[str, Any]]:
    """(segment float32 [segment_samples], the metadata the eval set keeps) of record `index`."""
    if index not in self._kept:
      record = self._record(index)
      meta = {k: record[k] for k in ('speaker', 'id', 'phones', 'phone_times') if k in record}
      self._kept[index] = (_segment(record, self.sample_rate, self.segment_samples), meta)
    return self._kept[index]

  def sweep(self, index: int) -> np.ndarray:
    return _segment(self._record(index), self.sample_rate, self.sweep_samples)


def build_eval_set(
  source,
  *,
  num_items: int,
  queries_per_item: int,
  seed: int = 0,
  sample_rate: int = 16_000,
  segment_seconds: float = 3.0,
  augment_fn: Optional[AugmentFn] = None,
  content_ids: Union[Sequence[Hashable], Callable[[int], Hashable], None] = None,
  sweep_items: int = 32,
  sweep_shifts_ms: Sequence[float] = sweep_lib.DEFAULT_SHIFTS_MS,
  archive_rotations: int = 1,
) -> EvalSet:
  """Archive / query segments from a random-access source of records (module docstring).

  `num_items = -1` takes every eligible item. `archive_rotations = R` evaluates R archives: in
  rotation r each item's archive is its realization number `r mod n_item` (by source index; on a
  speaker x sentence grid that is speaker r) and the queries are up to `queries_per_item` of its
  other realizations; -1 = as many rotations as the most realized item has realizations. With
  `augment_fn` (queries are augmented copies) there is one rotation.

  A record that cannot be read or has unusable audio (empty, non-finite, silent:
  `bad_input.validate_audio`) is logged with its path and reason and left out, and the set is
  drawn again without it (the same seed: the result depends only on which records are bad).
  """
  if num_items < 2 and num_items != -1:
    raise ValueError(
      f'num_items must be >= 2 (unrelated pairs need two items) or -1 (all), got {num_items}'
    )
  if queries_per_item < 1:
    raise ValueError(f'queries_per_item must be >= 1, got {queries_per_item}')
  if sweep_items < 1:
    raise ValueError(f'sweep_items must be >= 1 (the shift probe), got {sweep_items}')
  if archive_rotations < 1 and archive_rotations != -1:
    raise ValueError(f'archive_rotations must be >= 1 or -1 (all), got {archive_rotations}')
  shifts = tuple(float(s) for s in sweep_shifts_ms)
  if not shifts:
    raise ValueError('sweep_shifts_ms must name at least one shift (0 first)')
  bad_records = bad_input.BadInputStats()
  left_out: set[int] = set()

  def leave_out(index, error):
    bad_records.record_bad(error)  # logged with its path and reason
    left_out.add(index)

  cids = _content_ids(source, content_ids, on_bad=leave_out)
  segment_samples = int(round(segment_seconds * sample_rate))
  sweep_samples = segment_samples + max(sweep_lib.shift_samples(shifts, sample_rate))
  reader = _RecordReader(source, sample_rate, segment_samples, sweep_samples)
  while True:
    try:
      eval_set = _draw_eval_set(
        reader,
        cids,
        left_out,
        num_items=num_items,
        queries_per_item=queries_per_item,
        seed=seed,
        augment_fn=augment_fn,
        sweep_items=sweep_items,
        shifts=shifts,
        archive_rotations=archive_rotations,
      )
      break
    except _BadRecord as e:
      leave_out(e.index, e.error)
  if left_out:
    logging.warning(
      'build_eval_set: %d bad record(s) left out of the eval set (%s)',
      len(left_out),
      dict(bad_records.bad),
    )
  return eval_set


def _draw_eval_set(
  reader: _RecordReader,
  cids: Sequence[Hashable],
  left_out: set[int],
  *,
  num_items: int,
  queries_per_item: int,
  seed: int,
  augment_fn: Optional[AugmentFn],
  sweep_items: int,
  shifts: tuple[float, ...],
  archive_rotations: int,
) -> EvalSet:
  """`build_eval_set` over the records not in `left_out`; raises `_BadRecord` at the first bad
  record it reads."""
  min_size = 1 if augment_fn is not None else 2
  kept = ([i for i in group if i not in left_out] for group in eligible_items(cids, 1))
  eligible = [group for group in kept if len(group) >= min_size]
  if len(eligible) < 2:
    raise ValueError(
      f'build_eval_set: {len(eligible)} content items with >= {min_size} '
      f'realizations in a source of {len(cids)} records'
      + (f' ({len(left_out)} bad records left out)' if left_out else '')
      + '; need at least 2'
    )
  rng = np.random.default_rng(seed)
  if num_items == -1:
    items = eligible
  else:
    if len(eligible) < num_items:
      logging.warning(
        'build_eval_set: only %d eligible content items (asked for %d)', len(eligible), num_items
      )
    chosen = sorted(rng.choice(len(eligible), size=min(num_items, len(eligible)), replace=False))
    items = [eligible[k] for k in chosen]
  most = max(len(g) for g in items)
  num_rotations = (
    1
    if augment_fn is not None
    else (most if archive_rotations == -1 else min(archive_rotations, most))
  )
  segment_samples = reader.segment_samples
  n_sweep = min(sweep_items, len(items))

  rows: list[dict[str, Any]] = []
  row_of_index: dict[int, int] = {}

  def add_row(index, wave=None, labelled=True):
    if wave is None and index in row_of_index:
      return row_of_index[index]
    segment, meta = reader.read(index)
    wave = segment if wave is None else wave
    rows.append(dict(wave=wave, record=meta, index=index, labelled=labelled))
    if labelled:
      row_of_index[index] = len(rows) - 1
    return len(rows) - 1

  sweep_waves = []
  archive0 = []
  for a, group in enumerate(items):  # rotation 0's archive first: rows [0, A)
    archive0.append(add_row(group[0]))
    if a < n_sweep:
      sweep_waves.append(reader.sweep(group[0]))
  rotations = []
  for r in range(num_rotations):
    archive_rows, query_rows, targets = [], [], []
    for a, group in enumerate(items):
      own = group[r % len(group)]
      archive_rows.append(archive0[a] if r == 0 else add_row(own))
      others = [i for i in group if i != own]
      if others:
        picks = sorted(
          rng.choice(len(others), size=min(queries_per_item, len(others)), replace=False)
        )
        sources = [others[p] for p in picks]
      else:  # only with augment_fn: augmented copies of the archive realization
        sources = [own] * queries_per_item
      for idx in sources:
        if augment_fn is None:
          query_rows.append(add_row(idx))
        else:  # every query augmented; seeded per query
          q_rng = np.random.default_rng([seed, len(query_rows)])
          wave = augment_fn(reader.read(idx)[0], q_rng)
          wave = audio_io.fit_segment(np.asarray(wave, np.float32), segment_samples, crop='start')
          query_rows.append(add_row(idx, wave=wave, labelled=False))
        targets.append(a)
    rotations.append(
      Rotation(
        np.array(archive_rows, np.int64),
        np.array(query_rows, np.int64),
        np.array(targets, np.int64),
      )
    )

  def label(r, key):
    if not r['labelled'] or key not in r['record']:
      return None
    return (
      list(r['record'][key])
      if key == 'phones'
      else np.asarray(r['record'][key], np.float32).reshape(-1, 2)
    )

  eval_set = EvalSet(
    waves=np.stack([r['wave'] for r in rows]).astype(np.float32),
    num_archive=len(items),
    query_targets=rotations[0].query_targets,
    content_ids=[cids[r['index']] for r in rows],
    speakers=[str(r['record'].get('speaker', '')) for r in rows],
    ids=[str(r['record'].get('id', r['index'])) for r in rows],
    source_indices=np.array([r['index'] for r in rows], np.int64),
    phones=[label(r, 'phones') for r in rows],
    phone_times=[label(r, 'phone_times') for r in rows],
    sweep_waves=np.stack(sweep_waves).astype(np.float32),
    sweep_shifts_ms=shifts,
    sample_rate=reader.sample_rate,
    segment_samples=segment_samples,
    rotations=rotations,
  )
  logging.info(
    'eval set: %d archive items, %d rotations, %d queries in all (%d segments), %d sweep items',
    eval_set.num_archive,
    len(rotations),
    eval_set.total_queries,
    eval_set.waves.shape[0],
    n_sweep,
  )
  return eval_set


def _tokenize(
  fn: TokenizerFn, waves: np.ndarray, sample_rate: int, batch_size: int
) -> TokenizerOutput:
  """Runs `fn` over `waves` in batches and concatenates the outputs."""
  tokens: list[list[int]] = []
  times: Optional[list[np.ndarray]] = []
  terminated: Optional[list[np.ndarray]] = []
  for s in range(0, waves.shape[0], batch_size):
    batch = waves[s : s + batch_size]
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
          raise ValueError(
            f'tokenizer returned {x.shape[0]} times for {len(y)} tokens (row {s + i})'
          )
      times += t
    term = getattr(out, 'terminated', None)
    if term is None or terminated is None:
      terminated = None
    else:
      terminated.append(np.asarray(term, bool).reshape(-1))
  return TokenizerOutput(
    tokens=tokens,
    times=times,
    terminated=None if terminated is None else np.concatenate(terminated),
  )


def default_archive_sizes(n: int) -> list[int]:
  """2, 5, 10, 20, 50, ... below `n`, then `n`."""
  sizes, base = [], 1
  while True:
    for m in (2, 5, 10):
      if m * base >= n:
        return sizes + [n]
      sizes.append(m * base)
    base *= 10


def _rotation_scores(seqs: list[list[int]], rot: Rotation, ties: str) -> dict[str, np.ndarray]:
  """Per-query retrieval scores and NEDs of one rotation, and the distance matrix."""
  archive = [seqs[i] for i in rot.archive_rows]
  queries = [seqs[i] for i in rot.query_rows]
  t, a = rot.query_targets, len(archive)
  d = retrieval.distance_matrix(queries, archive)  # [Q, A]
  n_less, n_tie = retrieval.tie_counts(d, t)
  hits, rr = retrieval.per_query_scores(n_less, n_tie, (1, 5), ties)
  return {
    'hit1': hits[1],
    'hit5': hits[5],
    'rr': rr,
    'distances': d,
    'same_ned': metrics.pairwise_ned(queries, [archive[k] for k in t]),
    'other_ned': metrics.pairwise_ned(queries, [archive[(k + 1) % a] for k in t]),
    'archive_tokens': np.array([len(x) for x in archive], np.float64),
  }


def pooled_recall_at_1(
  seqs: Sequence[Sequence[int]], rotations: Sequence[Rotation], ties: str = 'expected'
) -> float:
  """recall@1 of strings `seqs` (one per eval-set row) pooled over `rotations`: the share of all
  rotations' queries whose own item's archive string is nearest (normalized edit distance, ties
  as in `evaluate_tokenizer`). The same figure as its `recall_at_1`, without the rest."""
  seqs = [list(s) for s in seqs]
  hits = [_rotation_scores(seqs, rot, ties)['hit1'] for rot in rotations]
  if not hits or not sum(len(h) for h in hits):
    raise ValueError('pooled_recall_at_1 needs at least one rotation with queries')
  return float(np.concatenate(hits).mean())


def evaluate_tokenizer(
  fn: TokenizerFn,
  eval_set: EvalSet,
  *,
  codebook_size: int,
  batch_size: int = 64,
  ties: str = 'expected',
  archive_sizes: Optional[Sequence[int]] = None,
  seed: int = 0,
) -> tuple[dict[str, Any], TokenizerOutput]:
  """All metrics of one tokenizer (module docstring) and its output on `eval_set.waves`.

  Retrieval figures pool the queries of every rotation (`recall_at_1` = the share of all
  rotations' queries whose item ranks first); `archive_tokens` is the mean over rotations of the
  archive's total length. `per_item` keeps, per content item, the hits@1 and queries summed over
  rotations and the mean archive tokens: what the bootstrap intervals resample
  (`bootstrap.py`). `recall_vs_archive_size` and the sweep use rotation 0.
  """
  sr, a = eval_set.sample_rate, eval_set.num_archive
  t0 = time.perf_counter()
  out = _tokenize(fn, eval_set.waves, sr, batch_size)
  tokenize_seconds = time.perf_counter() - t0
  seqs = out.tokens

  r: dict[str, Any] = {
    'tokens_per_second': metrics.tokens_per_second(seqs, eval_set.segment_seconds),
    'vocab_usage': metrics.vocab_usage(seqs, codebook_size),
    'unigram_perplexity': metrics.unigram_perplexity(seqs),
    'unique_ratio': metrics.unique_ratio(seqs[:a], eval_set.content_ids[:a]),
    'termination_rate': metrics.termination_rate(out.terminated),
  }
  r.update({f'length_{k}': v for k, v in metrics.length_stats(seqs).items()})

  rots = [_rotation_scores(seqs, rot, ties) for rot in eval_set.rotations]
  pooled = {
    k: np.concatenate([x[k] for x in rots]) for k in ('hit1', 'hit5', 'rr', 'same_ned', 'other_ned')
  }
  items = np.concatenate([rot.query_targets for rot in eval_set.rotations])
  r['cross_view_ned'] = float(pooled['same_ned'].mean())
  r['unrelated_ned'] = float(pooled['other_ned'].mean())
  r['ned_gap'] = r['unrelated_ned'] - r['cross_view_ned']
  r['recall_at_1'] = float(pooled['hit1'].mean())
  r['recall_at_5'] = float(pooled['hit5'].mean())
  r['mrr'] = float(pooled['rr'].mean())
  archive_tokens = np.stack([x['archive_tokens'] for x in rots])  # [R, A]
  r['archive_tokens'] = float(archive_tokens.sum(1).mean())
  r['num_queries'] = int(items.shape[0])
  r['archive_size'] = a
  r['num_rotations'] = len(rots)
  r['rotations'] = {
    'recall_at_1': [float(x['hit1'].mean()) for x in rots],
    'archive_tokens': [float(x['archive_tokens'].sum()) for x in rots],
  }
  r['per_item'] = {
    'hits_at_1': np.bincount(items, pooled['hit1'], minlength=a).tolist(),
    'queries': np.bincount(items, minlength=a).astype(float).tolist(),
    'archive_tokens': archive_tokens.mean(0).tolist(),
  }
  weights = bootstrap.item_weights(a, seed=seed)
  r['recall_at_1_ci95'] = bootstrap.ratio_interval(
    r['per_item']['hits_at_1'], r['per_item']['queries'], weights
  )
  sizes = (
    default_archive_sizes(a) if archive_sizes is None else [m for m in archive_sizes if m <= a]
  )
  r['recall_vs_archive_size'] = retrieval.recall_vs_archive_size(
    rots[0]['distances'], eval_set.rotations[0].query_targets, sizes, seed=seed, ties=ties
  )

  sw = sweep_lib.sweep_probe(
    lambda w: _tokenize(fn, w, sr, batch_size),
    eval_set.sweep_waves,
    segment_samples=eval_set.segment_samples,
    sample_rate=sr,
    shifts_ms=eval_set.sweep_shifts_ms,
  )
  sw.pop('tokens')
  r['sweep'] = sw

  r['phone'] = None
  if out.times is not None:
    rows = [i for i, p in enumerate(eval_set.phones) if p is not None]
    if rows:
      r['phone'] = metrics.phone_purity(
        [seqs[i] for i in rows],
        [out.times[i] for i in rows],
        [eval_set.phones[i] for i in rows],
        [eval_set.phone_times[i] for i in rows],
      )
  r['lengths'] = metrics.lengths(seqs).tolist()
  r['tokenize_seconds'] = tokenize_seconds
  r['segments_per_second'] = len(seqs) / max(tokenize_seconds, 1e-9)
  return r, out


def evaluate_tokenizers(
  tokenizers: Mapping[str, TokenizerFn],
  eval_set: EvalSet,
  *,
  codebook_sizes: Union[int, Mapping[str, int]],
  batch_size: int = 64,
  ties: str = 'expected',
  archive_sizes: Optional[Sequence[int]] = None,
  seed: int = 0,
  primary: str = 'pairalign',
  reference: str = 'vq',
  example_features_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None,
  example_frame_seconds: float = 0.01,
  example_index: int = 0,
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
    'eval_set': {
      'num_items': eval_set.num_archive,
      'num_queries': eval_set.total_queries,
      'num_rotations': len(eval_set.rotations),
      'num_segments': int(eval_set.waves.shape[0]),
      'segment_seconds': eval_set.segment_seconds,
      'sample_rate': eval_set.sample_rate,
      'sweep_items': int(eval_set.sweep_waves.shape[0]),
      'sweep_shifts_ms': list(eval_set.sweep_shifts_ms),
      'ties': ties,
    },
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
      fn,
      eval_set,
      codebook_size=int(k),
      batch_size=batch_size,
      ties=ties,
      archive_sizes=archive_sizes,
      seed=seed,
    )
  report['headline'] = headline(report, primary=primary, reference=reference, seed=seed)
  if primary in outputs and TARGETS_NAME in outputs:
    # How faithfully the decoder writes the strings it is trained on: mean NED between the
    # primary's string and the targets' string of the same segment, over every segment.
    ned = metrics.pairwise_ned(outputs[primary].tokens, outputs[TARGETS_NAME].tokens)
    report['headline']['ned_to_targets'] = float(ned.mean())
    # And how they differ: substitutions, dropped and added tokens per target token.
    report['headline']['edits_to_targets'] = metrics.edit_operations(
      outputs[primary].tokens, outputs[TARGETS_NAME].tokens
    )
  if example_features_fn is not None:
    i = example_index
    mel = np.asarray(example_features_fn(eval_set.waves[i : i + 1]))[0]
    report['example'] = {
      'index': i,
      'id': eval_set.ids[i],
      'log_mel': mel,
      'frame_seconds': example_frame_seconds,
      'phones': eval_set.phones[i],
      'phone_times': None if eval_set.phone_times[i] is None else eval_set.phone_times[i].tolist(),
      'tokens': {n: o.tokens[i] for n, o in outputs.items()},
      'times': {n: None if o.times is None else o.times[i].tolist() for n, o in outputs.items()},
    }
  return report


def _compare(
  p: Mapping[str, Any], r: Mapping[str, Any], weights: Optional[np.ndarray]
) -> dict[str, Any]:
  """Archive-token ratio and recall@1 difference of block `p` against block `r`, with intervals
  when both carry `per_item` figures on the same items."""
  out = {
    'archive_tokens_ratio': (
      p['archive_tokens'] / r['archive_tokens'] if r['archive_tokens'] else None
    ),
    'recall_at_1_difference': p['recall_at_1'] - r['recall_at_1'],
    'archive_tokens_ratio_ci95': None,
    'recall_at_1_difference_ci95': None,
  }
  pi, ri = p.get('per_item'), r.get('per_item')
  if (
    weights is not None
    and pi
    and ri
    and len(pi['queries']) == len(ri['queries']) == weights.shape[1]
  ):
    out['archive_tokens_ratio_ci95'] = bootstrap.ratio_interval(
      pi['archive_tokens'], ri['archive_tokens'], weights
    )
    out['recall_at_1_difference_ci95'] = bootstrap.difference_interval(
      (pi['hits_at_1'], pi['queries']), (ri['hits_at_1'], ri['queries']), weights
    )
  return out


def headline(
  report: Mapping[str, Any], *, primary: str = 'pairalign', reference: str = 'vq', seed: int = 0
) -> dict[str, Any]:
  """`archive_tokens_ratio` = primary / reference archive tokens; `recall_at_1_difference` =
  primary - reference recall@1, each with a bootstrap 95% interval over content items
  (`*_ci95`, `[low, high]`; `bootstrap.py`); `comparisons[name]` gives the same four figures
  against every other tokenizer. None where a tokenizer is missing."""
  toks = report['tokenizers']
  out: dict[str, Any] = {
    'primary': primary,
    'reference': reference,
    'archive_tokens_ratio': None,
    'recall_at_1_difference': None,
    'archive_tokens_ratio_ci95': None,
    'recall_at_1_difference_ci95': None,
    'comparisons': {},
  }
  if primary not in toks:
    return out
  p = toks[primary]
  weights = (
    bootstrap.item_weights(len(p['per_item']['queries']), seed=seed) if p.get('per_item') else None
  )
  for name, block in toks.items():
    if name != primary:
      out['comparisons'][name] = _compare(p, block, weights)
  if reference in out['comparisons']:
    out.update(out['comparisons'][reference])
  return out
