"""The Grain input pipeline: sources by config, 3 s segments, two augmented views, batches.

Training (`make_train_dataset`), per host:

  MapDataset.source(SkippingSource(source)).seed(config.seed)
    .shuffle()                          # global, index-based; reshuffled every epoch
    [:n_even][process_index::process_count]   # n_even = len // process_count * process_count:
                                        # every host gets the same number of items and batches
    .repeat(num_epochs)                 # None = forever
    .map_with_index(...)                # element index k -> step k // local_batch (stage-0 rule)
    .random_map(TwoViews)               # resample, random 3 s crop (shared), two augment chains
    .batch(batch_size // process_count, drop_remainder=True)
    .to_iter_dataset(ReadOptions(read_threads, prefetch_buffer_size))
    .mp_prefetch(worker_count)          # when config.data.worker_count > 0

Batch: `{'view1': f32[b, S], 'view2': f32[b, S], 'index': i64[b], 'bad_counts': i32[b, R],
'cross_speaker': i32[b]}` with `S = sample_rate * segment_seconds`, `index` the source index
actually read (after bad-item replacement), `bad_counts` the bad items skipped to produce each
example, by reason (`bad_input.REASONS`; a bad parallel reading counts too), and `cross_speaker`
what view 2 is (`VIEW2_SAME`, `VIEW2_OTHER_SPEAKER`, `VIEW2_FALLBACK`); numeric arrays only.
Every random choice is a function of `config.seed` and the element index (Grain's per-index
rngs and index shuffle; bad items are replaced by the next good index; a parallel reading is
drawn with the example's rng), so the batches do not depend on `worker_count` or threads, and
the iterator state (`get_state`/`set_state`, or `grain.checkpoint.CheckpointSave/Restore`
through Orbax) resumes exactly.

Stage 0 (views kept time-aligned, docs/METHOD.md §8): when `config.data.align_views_in_stage0`, the
elements of steps `< config.schedule.stage1_start` (step = per-host element index // local
batch) get neither speed perturbation nor time shift, so the two views share one time axis.

Cross-speaker views (`config.data.cross_speaker_views = p`): from stage 1, with probability p view 2
is another speaker reading the same content (`source.parallel_record(record, rng)`: the synthetic
corpus, and file sources whose items share a `content_id` across speakers: TIMIT prompts, manifest
rows with the same text). An example whose content has no other speaker (or whose parallel file is
bad) falls back to an augmentation of its own recording (`cross_speaker == VIEW2_FALLBACK`). A
source with no parallel readings at all (a folder) gets augmentation-only views and one warning.

Splits (`SPLITS`): 'train', 'validation', 'test' ('heldout' = 'test', `canonical_split`). For file
sources validation and test are the two speaker-disjoint halves (by a second speaker hash) of the
held-out part: the `heldout_fraction` speakers of `config.data.path`, or all of
`config.data.eval_path`, or TIMIT's TEST folder (`folder.split_entries`); 'train' is unchanged.

Evaluation: `make_source(config, 'test')` (or 'validation') and `load_segment(record, config,
crop='center')` (deterministic); `eval_records(source)` yields the good records and skips (and
counts) bad ones.
"""

from typing import Any, Iterator, Sequence

from absl import flags
from absl import logging
import grain
import numpy as np

from pairalign_jax import config_lib
from pairalign_jax.data import audio_io
from pairalign_jax.data import augment
from pairalign_jax.data import bad_input
from pairalign_jax.data.augment import augment_view  # noqa: F401  (re-exported, see ARCHITECTURE)
from pairalign_jax.data.bad_input import BadAudioError  # noqa: F401
from pairalign_jax.data.bad_input import BadInputError  # noqa: F401
from pairalign_jax.data.bad_input import BadInputStats  # noqa: F401
from pairalign_jax.data.splits import canonical_split  # noqa: F401  (re-exported)
from pairalign_jax.data.splits import SPLITS  # noqa: F401  (re-exported)

SOURCES = ('synthetic', 'librispeech', 'timit', 'folder', 'manifest')
# batch['cross_speaker']: what view 2 of an example is.
VIEW2_SAME = 0  # an augmentation of the same recording (no cross-speaker draw)
VIEW2_OTHER_SPEAKER = 1  # another speaker's reading of the same content
VIEW2_FALLBACK = 2  # drawn, but no other speaker's (good) reading: the same recording


# ---------------------------------------------------------------------------- sources
def make_source(config, split: str = 'train', *, cache_dir: str | None = None):
  """The random-access source named by `config.data.source` for `split` (`SPLITS` or 'heldout').

  Paths: with `config.data.eval_path` set, 'train' reads all of `config.data.path` and
  'validation' / 'test' the two speaker-disjoint halves of `eval_path`; else all are parts of
  `config.data.path`: TIMIT's TRAIN folder and the halves of TEST, the synthetic corpus' splits,
  or for librispeech/folder/manifest a speaker-disjoint hash split (`folder.split_entries`:
  `config.data.heldout_fraction` of the speakers held out, then halved). `cache_dir` is where
  file indexes go when `config.data.index_cache_dir` is empty and the data folder is read-only
  (e.g. `<workdir>/cache`).
  """
  kind = config.data.source
  if kind not in SOURCES:
    raise ValueError(f'config.data.source must be one of {SOURCES}, got {kind!r}')
  split = canonical_split(split)
  if kind == 'synthetic':
    from pairalign_jax.data import synthetic

    return synthetic.SyntheticSpeechSource(
      config.data.synthetic,
      split,
      sample_rate=config.audio.sample_rate,
      segment_seconds=config.audio.segment_seconds,
    )
  frac = config.data.heldout_fraction
  if split != 'train' and config.data.eval_path:
    root, sub, key = config.data.eval_path, split, 'config.data.eval_path'
    frac = 1.0  # every speaker of eval_path is held out
  else:
    root, key = config.data.path, 'config.data.path'
    sub = 'all' if config.data.eval_path else split
  if not root:
    raise ValueError(f'{key} must be set for config.data.source={kind!r}')
  kwargs = dict(cache_dir=config.data.index_cache_dir, fallback_dir=cache_dir)
  if kind == 'librispeech':
    from pairalign_jax.data import librispeech

    return librispeech.LibriSpeechSource(root, sub, heldout_fraction=frac, **kwargs)
  if kind == 'timit':
    from pairalign_jax.data import timit

    return timit.TimitSource(root, split, exclude_sa=config.data.timit_exclude_sa, **kwargs)
  if kind == 'folder':
    from pairalign_jax.data import folder

    return folder.FolderSource(root, sub, heldout_fraction=frac, **kwargs)
  from pairalign_jax.data import manifest

  return manifest.ManifestSource(root, sub, heldout_fraction=frac)


def make_bad_input_stats(config) -> BadInputStats:
  """Counters with the config's `max_bad_fraction` and `bad_min_reads`."""
  return BadInputStats(config.data.max_bad_fraction, config.data.bad_min_reads)


def data_stats(obj) -> dict[str, float]:
  """Counts for logs from a `BadInputStats`, a `SkippingSource`, or anything with `.stats`.

  With `worker_count > 0` a source's own counts stay in the worker processes; aggregate from
  the batches instead (`BadInputStats.update_from_batch`), see `bad_input`.
  """
  stats = obj if isinstance(obj, BadInputStats) else getattr(obj, 'stats', None)
  if not isinstance(stats, BadInputStats):
    raise TypeError(f'no bad-input stats on {obj!r}; pass a BadInputStats or SkippingSource')
  return stats.as_dict()


# ---------------------------------------------------------------------------- segments
def fit_audio(
  audio: np.ndarray,
  sample_rate: int,
  target_rate: int,
  length: int,
  *,
  crop: str = 'center',
  rng: np.random.Generator | None = None,
) -> np.ndarray:
  """Mono float32 `[n]` at `sample_rate` -> float32 `[length]` at `target_rate`.

  The crop window is chosen on the source-rate signal (its length is the source-rate equivalent
  of `length`), then resampled with soxr, so long recordings are never resampled whole; short
  clips are zero-padded at the end (`audio_io.fit_segment`).
  """
  audio = audio_io.to_mono(audio)
  if sample_rate != target_rate:
    native_len = int(np.ceil(length * sample_rate / target_rate))
    start = audio_io.crop_start(audio.shape[0], native_len, crop, rng)
    audio = audio_io.resample(audio[start : start + native_len], sample_rate, target_rate)
    crop = 'start'
  return audio_io.fit_segment(audio, length, crop=crop, rng=rng)


def load_segment(
  record: dict[str, Any], config, *, crop: str = 'center', rng: np.random.Generator | None = None
) -> np.ndarray:
  """The record's segment: float32 `[S]` mono at `config.audio.sample_rate`, end zero-padded.

  `crop='center'` is the deterministic evaluation crop, `'random'` the training crop (needs
  `rng`), `'start'` the first `S` samples (then label times need no offset).
  """
  return fit_audio(
    record['audio'],
    int(record['sample_rate']),
    config.audio.sample_rate,
    config_lib.segment_samples(config),
    crop=crop,
    rng=rng,
  )


def eval_records(
  source, indices: Sequence[int] | None = None, stats: BadInputStats | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
  """`(index, record)` for the good items of `source` (all, or `indices`); bad ones are counted
  in `stats` (logged with path and reason) and left out, never replaced (no duplicates)."""
  stats = stats if stats is not None else BadInputStats()
  for i in range(len(source)) if indices is None else indices:
    try:
      record = source[int(i)]
      bad_input.validate_audio(record['audio'], record.get('id', f'index {i}'))
    except BadAudioError as e:
      stats.record_bad(e)
      continue
    stats.record_good()
    yield int(i), record


# ---------------------------------------------------------------------------- training views
def _with_index(index: int, record):
  return index, record


class TwoViews:
  """Grain random map: `(element_index, record), rng -> example` (see the module docstring).

  A plain picklable class (Grain sends it to worker processes). Both views come from one crop,
  except cross-speaker ones: `parallel_record(record, rng) -> record | None` (None: the content
  has no other speaker; a `BadAudioError` is counted in `bad_counts`), both from their starts.
  """

  def __init__(
    self,
    sample_rate: int,
    length: int,
    aug_cfg: dict[str, Any],
    aligned_until_element: int = 0,
    cross_speaker_prob: float = 0.0,
    parallel_record=None,
  ):
    self.sample_rate = int(sample_rate)
    self.length = int(length)
    self.aug_cfg = dict(aug_cfg)
    self.aligned_until_element = int(aligned_until_element)
    self.cross_speaker_prob = float(cross_speaker_prob)
    self.parallel_record = parallel_record  # record, rng -> same content, another speaker

  def _other_reading(self, record, rng) -> tuple[dict[str, Any] | None, list[BadAudioError]]:
    """(another speaker's validated record or None, bad parallel files met)."""
    try:
      other = self.parallel_record(record, rng)
      if other is not None:
        bad_input.validate_audio(other['audio'], other.get('id', 'parallel reading'))
      return other, []
    except BadAudioError as e:
      return None, [e]

  def __call__(self, item, rng: np.random.Generator) -> dict[str, np.ndarray]:
    element_index, record = item
    wave = fit_audio(
      record['audio'],
      int(record['sample_rate']),
      self.sample_rate,
      self.length,
      crop='random',
      rng=rng,
    )  # [S]
    time_warp = element_index >= self.aligned_until_element
    wave2, kind, bad = wave, VIEW2_SAME, []
    # Cross-speaker views only after the aligned (stage-0) elements: another speaker's reading of
    # the same sentence, from its start (the other speaker's rate moves everything after it).
    if time_warp and self.cross_speaker_prob > 0 and rng.random() < self.cross_speaker_prob:
      other, bad = self._other_reading(record, rng)
      if other is None:
        kind = VIEW2_FALLBACK  # same recording, augmented twice
      else:
        kind = VIEW2_OTHER_SPEAKER
        wave2 = fit_audio(
          other['audio'], int(other['sample_rate']), self.sample_rate, self.length, crop='start'
        )
        wave = fit_audio(
          record['audio'], int(record['sample_rate']), self.sample_rate, self.length, crop='start'
        )
    view1 = augment.augment_view(wave, rng, self.aug_cfg, self.sample_rate, time_warp=time_warp)
    view2 = augment.augment_view(wave2, rng, self.aug_cfg, self.sample_rate, time_warp=time_warp)
    bad_counts = np.asarray(record.get('_bad_counts', np.zeros(bad_input.NUM_REASONS)), np.int32)
    return {
      'view1': view1,
      'view2': view2,
      'index': np.int64(record.get('_source_index', -1)),
      'bad_counts': bad_counts + bad_input.reason_counts(bad),  # [R]
      'cross_speaker': np.int32(kind),
    }


def _plain_dict(cfg) -> dict[str, Any]:
  return cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)


def local_batch_size(config, process_count: int = 1) -> int:
  """Per-host batch `config.batch_size // process_count` (must divide evenly)."""
  if config.batch_size % process_count:
    raise ValueError(
      f'config.batch_size={config.batch_size} must be divisible by the '
      f'process count {process_count}'
    )
  return config.batch_size // process_count


def _parallel_readings(source, cross: float):
  """(source.parallel_record, cross), or (None, 0.0) with one warning when it has no readings."""
  parallel = getattr(source, 'parallel_record', None)
  num = getattr(source, 'num_parallel_items', None)  # None: unknown (e.g. synthetic: all)
  if parallel is None or num == 0:
    logging.warning(
      'config.data.cross_speaker_views=%g: %r has no parallel readings (no content '
      'read by two speakers); view 2 is an augmentation of the same recording',
      cross,
      source,
    )
    return None, 0.0
  if num is not None:
    logging.info(
      'Cross-speaker views: %d of %d training items have another speaker reading '
      'the same content; the others fall back to the same recording',
      num,
      len(source),
    )
  return parallel, cross


def make_train_dataset(
  config,
  *,
  process_index: int = 0,
  process_count: int = 1,
  source=None,
  cache_dir: str | None = None,
  num_epochs: int | None = None,
) -> grain.IterDataset:
  """Per-host training `IterDataset` of two-view batches (see the module docstring).

  `source`: a ready source (default `make_source(config, 'train')`); it is wrapped in a
  `bad_input.SkippingSource` with `config.data.max_bad_fraction` / `bad_min_reads`.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  batch = local_batch_size(config, process_count)
  src = source if source is not None else make_source(config, 'train', cache_dir=cache_dir)
  if not isinstance(src, bad_input.SkippingSource):
    src = bad_input.SkippingSource(src, make_bad_input_stats(config))
  per_host = len(src) // process_count
  if per_host < batch:
    raise ValueError(
      f'{len(src)} training items give {per_host} per host, fewer than the per-host batch {batch}'
    )
  ds = grain.MapDataset.source(src).seed(config.seed)
  if config.data.shuffle:
    ds = ds.shuffle()
  ds = ds[: per_host * process_count][process_index::process_count]
  ds = ds.repeat(num_epochs)
  aligned = (config.schedule.stage1_start * batch) if config.data.align_views_in_stage0 else 0
  ds = ds.map_with_index(_with_index)
  cross = float(config.data.get('cross_speaker_views', 0.0))
  parallel = None
  if cross > 0:
    base = src.source if isinstance(src, bad_input.SkippingSource) else src
    parallel, cross = _parallel_readings(base, cross)
  ds = ds.random_map(
    TwoViews(
      config.audio.sample_rate,
      config_lib.segment_samples(config),
      _plain_dict(config.data.augment),
      aligned,
      cross,
      parallel,
    )
  )
  ds = ds.batch(batch, drop_remainder=True)
  it_ds = ds.to_iter_dataset(
    grain.ReadOptions(
      num_threads=config.data.read_threads, prefetch_buffer_size=config.data.prefetch_buffer_size
    )
  )
  if config.data.worker_count > 0:
    if not flags.FLAGS.is_parsed():
      # Grain's worker start-up reads its absl flags; outside absl.app (tests, notebooks) nobody
      # parsed them, so use their defaults.
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.worker_count))
  logging.info(
    'Train data: %r, %d items per host (%d of %d hosts), batch %d, %d workers',
    src,
    per_host,
    process_index,
    process_count,
    batch,
    config.data.worker_count,
  )
  return it_ds


def make_train_iterator(
  config,
  *,
  process_index: int = 0,
  process_count: int = 1,
  source=None,
  cache_dir: str | None = None,
  num_epochs: int | None = None,
) -> grain.DatasetIterator:
  """`iter(make_train_dataset(...))`: a `grain.DatasetIterator` with `get_state`/`set_state`."""
  return iter(
    make_train_dataset(
      config,
      process_index=process_index,
      process_count=process_count,
      source=source,
      cache_dir=cache_dir,
      num_epochs=num_epochs,
    )
  )
