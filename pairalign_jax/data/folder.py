"""Audio-folder source, plus the file-index cache and split rules shared by the file sources.

`FolderSource(root)`: every file under `root` (recursively, following symlinks) whose extension is
one soundfile decodes (`AUDIO_EXTENSIONS`, case-insensitive). Record: `id` = path relative to
`root` without extension, `speaker` = name of the containing folder (`'unknown'` at top level),
`content_id` = `id` (each file is its own content item), `path`.

File index cache (`cached_index`). A scan lists the files once; the entries built from them
(labels, and per-file `frames`/`sample_rate` from `soundfile.info`, a header read) are cached as
JSON keyed by the absolute root, the source kind and options, and a fingerprint of the listed
files (relative path, size, mtime). A changed, added or removed file changes the fingerprint and
rebuilds the index. The cache lives in `config.data.index_cache_dir` if set, else next to the
data (in `root`, as `.pairalign_index_*.json`) if writable, else in `fallback_dir` (e.g.
`<workdir>/cache`), else in `~/.cache/pairalign_jax`. Writes are atomic (`os.replace`), so hosts
building the same index at once do not corrupt it. A bar (tqdm) shows progress on large trees.

Splits (`split_entries`): 'train', 'validation', 'test' ('heldout' = 'test', for old configs)
or 'all' (everything). Two steps, both deterministic and speaker-disjoint where the speakers allow:

1. Held-out part. A hash of the speaker (crc32) puts about `heldout_fraction` of the speakers in
   the held-out part and the rest in 'train'. With `heldout_fraction=1.0` the whole tree is held
   out (`config.data.eval_path`, TIMIT's TEST folder) and 'train' is refused.
2. 'validation' / 'test'. A second, independent hash of the speaker (sha1) halves the held-out
   part: about half its speakers are 'test', the others 'validation'.

In either step, if the speaker hash leaves a side empty (too few speakers) the same hash of the
item id is used instead (then the sides may share a speaker), and for tiny sets the
`ceil(fraction * n)` items of smallest id hash. A side is never empty when there are >= 2 items
to divide; otherwise asking for it raises a ValueError naming `config.data.heldout_fraction` /
`config.data.eval_path`. 'train' is exactly what the earlier train/heldout rule gave.

Parallel readings (`IndexedAudioSource.parallel_record`): entries with the same `content_id` read
by another speaker, from a map built once from the entries (no audio reads); used for
`config.data.cross_speaker_views` (`pipeline.TwoViews`). Folder items are their own content, so a
folder has none.
"""

import hashlib
import json
import os
import tempfile
from typing import Any, Callable, Sequence
import zlib

from absl import logging
import numpy as np
import tqdm

from pairalign_jax.data import audio_io
from pairalign_jax.data import splits

AUDIO_EXTENSIONS = (
  '.wav',
  '.flac',
  '.ogg',
  '.oga',
  '.opus',
  '.mp3',
  '.aiff',
  '.aif',
  '.aifc',
  '.au',
  '.snd',
  '.sph',
  '.nist',
  '.caf',
  '.w64',
  '.rf64',
)
SPLITS = splits.SPLITS + ('all',)  # and 'heldout', an alias of 'test'
INDEX_VERSION = 1
PROGRESS_MIN_FILES = 500  # show a progress bar from this many files on


# ---------------------------------------------------------------------------- scanning
def list_files(root: str, suffixes: Sequence[str]) -> list[str]:
  """Sorted paths relative to `root` of files ending (case-insensitively) in one of `suffixes`."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f'data folder {root!r} does not exist or is not a directory')
  suffixes = tuple(s.lower() for s in suffixes)
  out = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames.sort()
    for name in filenames:
      if name.lower().endswith(suffixes) and not name.startswith('.'):
        out.append(os.path.relpath(os.path.join(dirpath, name), root))
  return sorted(out)


def tree_fingerprint(root: str, relpaths: Sequence[str]) -> str:
  """sha1 over (relative path, size, mtime_ns) of every listed file."""
  h = hashlib.sha1()
  for rel in relpaths:
    st = os.stat(os.path.join(root, rel))
    h.update(f'{rel}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode('utf-8', 'surrogateescape'))
  return h.hexdigest()


def file_infos(
  root: str, relpaths: Sequence[str], desc: str = 'audio headers'
) -> list[dict[str, Any] | None]:
  """`audio_io.audio_info` of each file (None where the header is unreadable)."""
  it = tqdm.tqdm(relpaths, desc=desc, unit='file', disable=len(relpaths) < PROGRESS_MIN_FILES)
  return [audio_io.audio_info(os.path.join(root, rel)) for rel in it]


# ---------------------------------------------------------------------------- cache
def _writable_dir(d: str) -> bool:
  return bool(d) and os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK)


def index_cache_path(
  root: str, kind: str, key: str, cache_dir: str = '', fallback_dir: str | None = None
) -> str:
  """Where the index of (`root`, `kind`, `key`) is cached (see the module docstring)."""
  digest = hashlib.sha1(f'{os.path.abspath(root)}\0{kind}\0{key}'.encode()).hexdigest()[:16]
  name = f'.pairalign_index_{kind}_{digest}.json'
  if cache_dir:
    os.makedirs(cache_dir, exist_ok=True)
    return os.path.join(cache_dir, name)
  if _writable_dir(root):
    return os.path.join(root, name)
  for d in (fallback_dir, os.path.join(os.path.expanduser('~'), '.cache', 'pairalign_jax')):
    if d:
      try:
        os.makedirs(d, exist_ok=True)
      except OSError:
        continue
      if _writable_dir(d):
        return os.path.join(d, name)
  raise OSError(
    f'no writable place for the {kind} index of {root!r}; set config.data.index_cache_dir'
  )


def cached_index(
  root: str,
  kind: str,
  relpaths: Sequence[str],
  build: Callable[[Sequence[str]], list[dict[str, Any]]],
  *,
  key: str = '',
  cache_dir: str = '',
  fallback_dir: str | None = None,
) -> list[dict[str, Any]]:
  """`build(relpaths)` once; later calls with the same files load the JSON cache instead."""
  root = os.path.abspath(root)
  fingerprint = tree_fingerprint(root, relpaths)
  path = index_cache_path(root, kind, key, cache_dir, fallback_dir)
  try:
    with open(path, encoding='utf-8') as f:
      cached = json.load(f)
    if (
      cached.get('version') == INDEX_VERSION
      and cached.get('root') == root
      and cached.get('fingerprint') == fingerprint
    ):
      logging.info(
        'Loaded %s index of %s (%d entries) from %s', kind, root, len(cached['entries']), path
      )
      return cached['entries']
    logging.info('Index cache %s is stale; rebuilding', path)
  except (OSError, ValueError, KeyError):
    pass
  logging.info('Building %s index of %s (%d files)', kind, root, len(relpaths))
  entries = build(relpaths)
  payload = {
    'version': INDEX_VERSION,
    'kind': kind,
    'root': root,
    'key': key,
    'fingerprint': fingerprint,
    'num_files': len(relpaths),
    'entries': entries,
  }
  try:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.tmp_index_', suffix='.json')
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      json.dump(payload, f)
    os.replace(tmp, path)
    logging.info('Wrote %s index (%d entries) to %s', kind, len(entries), path)
  except OSError as e:
    logging.warning('Could not write the index cache %s: %s', path, e)
  return entries


# ---------------------------------------------------------------------------- splits
def _hash_fraction(s: str) -> float:
  """Step-1 hash in [0, 1): crc32 (kept as it was, so 'train' does not move)."""
  return (zlib.crc32(s.encode('utf-8')) % 10_000) / 10_000.0


def _half_hash_fraction(s: str) -> float:
  """Step-2 hash in [0, 1), independent of `_hash_fraction`."""
  return int(hashlib.sha1(f'validation-test\0{s}'.encode('utf-8')).hexdigest()[:8], 16) / 2**32


def heldout_half(speaker: str) -> str:
  """'test' or 'validation': the half of the held-out part a speaker goes to by step 2 of the split
  rule (the speaker hash; it decides whenever the held-out part has speakers on both sides)."""
  return 'test' if _half_hash_fraction(speaker) < 0.5 else 'validation'


def _pick(
  entries: Sequence[dict[str, Any]], fraction: float, hash_fraction: Callable[[str], float]
) -> list[bool] | None:
  """True for the entries on the `fraction` side: by speaker hash; if that leaves a side empty, by
  item-id hash; else the `ceil(fraction * n)` items of smallest id hash. None with < 2 entries."""

  def by(key):
    chosen = [hash_fraction(e[key]) < fraction for e in entries]
    return chosen if 0 < sum(chosen) < len(entries) else None

  chosen = by('speaker') or by('id')
  if chosen is None:  # tiny sets
    if len(entries) < 2:
      return None
    k = int(np.ceil(fraction * len(entries)))
    order = sorted(range(len(entries)), key=lambda i: (hash_fraction(entries[i]['id']), i))
    first = set(order[:k])
    chosen = [i in first for i in range(len(entries))]
  return chosen


def canonical_split(split: str) -> str:
  """`splits.canonical_split`, also accepting 'all' (every entry)."""
  return splits.canonical_split(split, also=('all',))


def split_entries(
  entries: Sequence[dict[str, Any]],
  split: str,
  heldout_fraction: float,
) -> list[dict[str, Any]]:
  """The `split` part of `entries` (see the module docstring); `heldout_fraction=1.0`: all of
  `entries` is held out (a separate evaluation tree), to be halved into validation / test."""
  split = canonical_split(split)
  entries = list(entries)
  if split == 'all':
    return entries
  if heldout_fraction == 1.0:
    held = [True] * len(entries)
    if split == 'train':
      raise ValueError(
        'no train split: all of the tree is held out (config.data.eval_path, '
        'TIMIT TEST, or config.data.heldout_fraction=1.0)'
      )
  else:
    if not 0.0 < heldout_fraction < 1.0:
      raise ValueError(
        'config.data.heldout_fraction must be in (0, 1) to split one tree into '
        f'train/validation/test, got {heldout_fraction}'
      )
    held = _pick(entries, heldout_fraction, _hash_fraction)
    if held is None:
      raise ValueError(
        f'cannot split {len(entries)} item(s) into train and held-out parts; '
        'set config.data.eval_path'
      )
  if split == 'train':
    return [e for e, h in zip(entries, held) if not h]
  held_out = [e for e, h in zip(entries, held) if h]
  is_test = _pick(held_out, 0.5, _half_hash_fraction)
  if is_test is None:
    fix = (
      'put more speakers in config.data.eval_path (or the TIMIT TEST folder)'
      if heldout_fraction == 1.0
      else f'raise config.data.heldout_fraction (now {heldout_fraction}) or set '
      'config.data.eval_path'
    )
    raise ValueError(
      f'the held-out part has {len(held_out)} item(s), too few for both a '
      f'validation and a test split (each needs >= 1); {fix}'
    )
  want = split == 'test'
  return [e for e, t in zip(held_out, is_test) if t == want]


# ---------------------------------------------------------------------------- sources
class IndexedAudioSource:
  """Random-access source over index entries `{'path', 'id', 'speaker', 'content_id', ...}`.

  `__getitem__` decodes the file (optionally the region `start`/`end` seconds) with
  `audio_io.read_audio` at its own sample rate and returns the record of docs/ARCHITECTURE.md:
  `audio` float32 mono, `sample_rate`, `id`, `speaker`, `content_id`, `path` and the entry's
  optional labels (`text`, `phones`, `phone_times` float32[P, 2] seconds, `words`,
  `word_times`). Bad files raise `bad_input.BadAudioError` (wrap with `SkippingSource`).

  `parallel_record(record, rng)`: another speaker's reading of the record's content (see the
  module docstring); `num_parallel_items`: entries that have one.
  """

  name = 'files'

  def __init__(self, root: str, entries: Sequence[dict[str, Any]]):
    self.root = os.path.abspath(root)
    self.entries = list(entries)
    # content_id -> indices of its entries; built once from the entries (no audio reads).
    self._by_content: dict[str, list[int]] = {}
    for i, e in enumerate(self.entries):
      self._by_content.setdefault(e['content_id'], []).append(i)
    speakers = {c: {self.entries[i]['speaker'] for i in idx} for c, idx in self._by_content.items()}
    self.num_parallel_items = sum(len(speakers[e['content_id']]) > 1 for e in self.entries)

  def __len__(self) -> int:
    return len(self.entries)

  def __repr__(self) -> str:
    return f'{type(self).__name__}({self.root!r}, {len(self)} items)'

  def path(self, index: int) -> str:
    p = self.entries[index]['path']
    return p if os.path.isabs(p) else os.path.join(self.root, p)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f'index {index} out of range for {self!r}')
    e = self.entries[index]
    audio, sr = audio_io.read_audio(self.path(index), e.get('start'), e.get('end'))
    record = {
      'audio': audio,
      'sample_rate': sr,
      'id': e['id'],
      'speaker': e['speaker'],
      'content_id': e['content_id'],
      'path': self.path(index),
    }
    for k in ('text', 'phones', 'words'):
      if k in e:
        record[k] = e[k]
    for k in ('phone_times', 'word_times'):
      if k in e:
        record[k] = np.asarray(e[k], np.float32).reshape(-1, 2)
    return record

  def parallel_record(
    self, record: dict[str, Any], rng: np.random.Generator
  ) -> dict[str, Any] | None:
    """The record of another speaker reading `record`'s `content_id`, drawn uniformly with `rng`
    (deterministic given it); None when no other speaker reads it. May raise `BadAudioError`."""
    others = [
      i
      for i in self._by_content.get(record['content_id'], ())
      if self.entries[i]['speaker'] != record['speaker']
    ]
    if not others:
      return None
    return self[others[int(rng.integers(len(others)))]]


class FolderSource(IndexedAudioSource):
  """Every decodable audio file under `root` (see the module docstring)."""

  name = 'folder'

  def __init__(
    self,
    root: str,
    split: str = 'all',
    *,
    heldout_fraction: float = 0.1,
    cache_dir: str = '',
    fallback_dir: str | None = None,
  ):
    relpaths = list_files(root, AUDIO_EXTENSIONS)
    if not relpaths:
      raise FileNotFoundError(f'no audio files ({", ".join(AUDIO_EXTENSIONS)}) under {root!r}')
    entries = cached_index(
      root,
      'folder',
      relpaths,
      lambda r: _folder_entries(root, r),
      cache_dir=cache_dir,
      fallback_dir=fallback_dir,
    )
    super().__init__(root, split_entries(entries, split, heldout_fraction))


def _folder_entries(root: str, relpaths: Sequence[str]) -> list[dict[str, Any]]:
  entries = []
  for rel, info in zip(relpaths, file_infos(root, relpaths)):
    item_id = os.path.splitext(rel)[0]
    parent = os.path.basename(os.path.dirname(rel))
    entries.append(
      {
        'path': rel,
        'id': item_id,
        'speaker': parent or 'unknown',
        'content_id': item_id,
        'frames': info['frames'] if info else None,
        'sample_rate': info['sample_rate'] if info else None,
      }
    )
  return entries
