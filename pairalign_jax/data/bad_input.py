"""Bad audio: reasons, counters, and a source wrapper that skips bad items deterministically.

Contract
--------
* Readers (`audio_io.read_audio`, `validate_audio`) raise `BadAudioError(path, reason,
  detail)` for audio that cannot be used; `reason` is one of `REASONS`. Audio that can be made
  sound (stereo, other sample rates, clips shorter than a segment) is fixed, not rejected.
* `SkippingSource(source)` wraps any random-access source. `skipping[i]` returns the record of the
  first *good* index among `i, i+1, i+2, ...` (modulo `len`), so a bad item never reaches a batch,
  the batch stays full, and the replacement depends only on `i` (deterministic, independent of
  the number of Grain workers). Every bad item met on the way is counted and logged (absl) with
  its path and reason; indices found bad are remembered (per process) so they are not decoded again,
  but they are counted again each time they are met, so the bad *fraction* stays a fraction of
  reads. The returned record carries `_source_index` (the index actually used) and `_bad_counts`
  (`int32[len(REASONS)]`, bad items skipped to produce it, by reason).
* `BadInputStats` counts reads and bad items by reason; it is thread-safe (a lock; Grain reads a
  source from several threads). Past `max_bad_fraction` of reads (once at least `min_reads` reads
  have been made) `check()` raises `BadInputError` naming the worst files and their reasons.

How counts aggregate with Grain workers
---------------------------------------
With `worker_count == 0` the `SkippingSource` lives in the main process and its `stats` are the
run's counts (`pipeline.data_stats(source)`). With workers, each worker process holds its own copy
of the source and its own counts (and enforces `max_bad_fraction` on its own reads, raising in
the worker, which Grain re-raises in the main process). The main process sees the skips through
the batch: every batch carries `bad_counts: int32[b, len(REASONS)]`, and a main-process
`BadInputStats.update_from_batch(batch)` aggregates them (reads = examples + skipped items). That
path is the same for any worker count, so training logs should use it.
"""

import collections
import threading
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np

# Why an item was skipped. The order is the column order of a batch's `bad_counts`.
REASONS = (
  'unreadable',  # the decoder failed: corrupt/truncated data, wrong or unsupported header
  'empty',  # zero-byte file or no samples
  'nonfinite',  # NaN or inf samples
  'silent',  # every sample is exactly zero
  'truncated',  # fewer samples than the header / requested region promises
)
NUM_REASONS = len(REASONS)
_REASON_INDEX = {r: i for i, r in enumerate(REASONS)}


class BadAudioError(Exception):
  """One unusable audio item: `path`, `reason` (one of `REASONS`) and a human `detail`."""

  def __init__(self, path: str, reason: str, detail: str = ''):
    if reason not in _REASON_INDEX:
      raise ValueError(f'unknown bad-audio reason {reason!r}; expected one of {REASONS}')
    self.path = str(path)
    self.reason = reason
    self.detail = detail
    super().__init__(f'{self.path}: {reason}' + (f' ({detail})' if detail else ''))


class BadInputError(RuntimeError):
  """Raised when too large a fraction of the input is bad; the message names the worst files."""


class BadInputStats:
  """Thread-safe counts of reads and of bad items by reason (see the module docstring)."""

  def __init__(self, max_bad_fraction: float = 1.0, min_reads: int = 0, max_listed: int = 10):
    if not 0.0 <= max_bad_fraction <= 1.0:
      raise ValueError(f'max_bad_fraction must be in [0, 1], got {max_bad_fraction}')
    self.max_bad_fraction = float(max_bad_fraction)
    self.min_reads = int(min_reads)
    self.max_listed = int(max_listed)
    self._lock = threading.Lock()
    self.reads = 0  # items read (good + bad)
    self.bad = collections.Counter()  # reason -> count
    self._by_file = collections.Counter()  # (path, reason) -> count
    self._details = {}  # (path, reason) -> detail of the first failure

  # Locks cannot be pickled; Grain pickles the dataset (and this object) into worker processes.
  def __getstate__(self):
    state = self.__dict__.copy()
    del state['_lock']
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  @property
  def num_bad(self) -> int:
    return sum(self.bad.values())

  @property
  def bad_fraction(self) -> float:
    return self.num_bad / self.reads if self.reads else 0.0

  def record_good(self) -> None:
    with self._lock:
      self.reads += 1

  def record_bad(self, error: BadAudioError) -> None:
    """Counts and logs one bad item (path and reason)."""
    with self._lock:
      self.reads += 1
      self.bad[error.reason] += 1
      key = (error.path, error.reason)
      first = key not in self._by_file
      self._by_file[key] += 1
      if first:
        self._details[key] = error.detail
    if first:
      logging.warning(
        'Skipping bad audio %s: %s%s',
        error.path,
        error.reason,
        f' ({error.detail})' if error.detail else '',
      )

  def update_from_batch(self, batch: Mapping[str, Any]) -> None:
    """Main-process aggregation from a batch's `bad_counts: int32[b, NUM_REASONS]` (no paths)."""
    counts = np.asarray(batch['bad_counts'])
    if counts.ndim != 2 or counts.shape[1] != NUM_REASONS:
      raise ValueError(f"batch['bad_counts'] must be [b, {NUM_REASONS}], got {counts.shape}")
    per_reason = counts.sum(axis=0)
    with self._lock:
      self.reads += int(counts.shape[0] + per_reason.sum())
      for reason, n in zip(REASONS, per_reason):
        if n:
          self.bad[reason] += int(n)
    self.check()

  def worst_files(self, n: int | None = None) -> list[tuple[str, str, int, str]]:
    """`(path, reason, times_met, detail)`, most often met first (ties by path)."""
    with self._lock:
      items = sorted(self._by_file.items(), key=lambda kv: (-kv[1], kv[0]))
      details = dict(self._details)
    n = self.max_listed if n is None else n
    return [(p, r, c, details.get((p, r), '')) for (p, r), c in items[:n]]

  def check(self) -> None:
    """Raises `BadInputError` past `max_bad_fraction` (after `min_reads` reads)."""
    if self.reads < max(self.min_reads, 1) or self.bad_fraction <= self.max_bad_fraction:
      return
    by_reason = ', '.join(f'{r}={self.bad[r]}' for r in REASONS if self.bad[r])
    worst = self.worst_files()
    listed = '\n'.join(
      f'  {p}: {r}' + (f' ({d})' if d else '') + (f' x{c}' if c > 1 else '') for p, r, c, d in worst
    )
    if not worst:
      listed = '  (paths are logged by the worker processes that read them)'
    raise BadInputError(
      f'{self.num_bad} of {self.reads} audio reads were bad ({self.bad_fraction:.1%} > '
      f'config.data.max_bad_fraction={self.max_bad_fraction:.1%}); by reason: {by_reason}.\n'
      f'Worst files:\n{listed}'
    )

  def as_dict(self) -> dict[str, float]:
    """Flat counts for logging: `reads`, `bad`, `bad_fraction`, `bad/<reason>`."""
    with self._lock:
      out = {'reads': self.reads, 'bad': sum(self.bad.values())}
      out.update({f'bad/{r}': self.bad[r] for r in REASONS})
    out['bad_fraction'] = out['bad'] / out['reads'] if out['reads'] else 0.0
    return out


def validate_audio(wave: np.ndarray, path: str) -> None:
  """Raises `BadAudioError` for empty, non-finite or all-zero audio."""
  wave = np.asarray(wave)
  if wave.size == 0:
    raise BadAudioError(path, 'empty', 'no samples')
  finite = np.isfinite(wave)
  if not finite.all():
    raise BadAudioError(path, 'nonfinite', f'{int(wave.size - finite.sum())} NaN/inf samples')
  if not np.any(wave):
    raise BadAudioError(path, 'silent', f'all {wave.size} samples are zero')


def reason_counts(errors: Sequence[BadAudioError]) -> np.ndarray:
  """`int32[NUM_REASONS]` counts of `errors` by reason."""
  counts = np.zeros((NUM_REASONS,), np.int32)
  for e in errors:
    counts[_REASON_INDEX[e.reason]] += 1
  return counts


class SkippingSource:
  """Random-access wrapper that replaces bad items by the next good index (see module docstring).

  Records coming out of the wrapped source are also checked with `validate_audio`, so a
  source that does not validate (e.g. an in-memory one) cannot leak NaN or silent audio either.
  """

  def __init__(self, source, stats: BadInputStats | None = None):
    if len(source) == 0:
      raise ValueError(f'cannot wrap an empty source: {source!r}')
    self.source = source
    self.stats = stats if stats is not None else BadInputStats()
    self._known_bad: dict[int, BadAudioError] = {}

  def __len__(self) -> int:
    return len(self.source)

  def __repr__(self) -> str:
    return f'SkippingSource({self.source!r})'

  def _read(self, index: int) -> dict[str, Any]:
    known = self._known_bad.get(index)
    if known is not None:
      raise known
    try:
      record = self.source[index]
      validate_audio(record['audio'], record.get('id', f'index {index}'))
    except BadAudioError as e:
      self._known_bad[index] = e
      raise
    return record

  def __getitem__(self, index: int) -> dict[str, Any]:
    n = len(self.source)
    index = int(index) % n
    skipped = []
    for attempt in range(n):
      i = (index + attempt) % n
      try:
        record = self._read(i)
      except BadAudioError as e:
        skipped.append(e)
        self.stats.record_bad(e)
        self.stats.check()
        continue
      self.stats.record_good()
      self.stats.check()
      record = dict(record)
      record['_source_index'] = i
      record['_bad_counts'] = reason_counts(skipped)
      return record
    raise BadInputError(
      f'every one of the {n} items of {self.source!r} is bad; first: {skipped[0]}'
    )
