"""The on-disk archive index: token strings of overlapping windows, their times, and search.

    index = Index.open('runs/archive_index')                  # numpy arrays + manifest.json
    hits = index.search(wave, top_k=10, sample_rate=16000)    # or index.search([3, 17, 9])
    [(h.file, h.start, h.end, h.score) for h in hits]

**Layout** (one choice: numpy `.npy` arrays, no other dependency). `DIR/manifest.json` holds the
format and version, the tokenizer that wrote the strings (`tokenizer`: kind, checkpoint, step,
EOS bias, the model's fingerprint (`Tokenizer.fingerprint`), ...; a re-run and a search must use
the same model), `window_seconds`, `hop_seconds`, the indexed files
(`files`: id, key, path, region offset, duration, windows, tokens, shard) and the files that
could not be read (`bad_files`, with the reason). Each run that adds files writes one or more
**shards** `DIR/shards/NNNNN/` of five arrays over its windows:
  * `tokens.npy`  uint16 (int32 for ids >= 65 536) [T]: every window's string, concatenated;
  * `times.npy`   float32 [T]: each token's time in seconds from its window's start;
  * `offsets.npy` int64 [w + 1]: window i's tokens are `tokens[offsets[i] : offsets[i + 1]]`;
  * `window_file.npy` int32 [w]: the file id of each window;
  * `window_span.npy` float64 [w, 2]: each window's start and end, seconds from the file start.
Shards are written to a temporary folder and renamed, then the manifest is replaced atomically
(`os.replace`): an interrupted run loses at most the files of its unwritten shard, and a file is
listed only once its windows are on disk. Re-running skips files already listed (by key: the
absolute path, plus the region for a manifest line with start/end).

**Search** (`search`, `search_tokens`): the query string is matched against every window by
subsequence edit distance (`subsequence.py`: the query aligned to the best substring of the
window, Myers' bit-parallel algorithm vectorized over windows), windows are ranked by distance
(then window order), the best-first candidates get their match's start and time span
(`hits.span_times`) and are merged (`hits.merge_hits`: overlapping hits of a file keep the best);
candidates are taken in growing batches until `top_k` merged hits are found (`top_k=None`: every
window). `score = 1 - distance / len(query)` (higher is better). Windows without tokens give no
hit. A waveform query (float samples; integer sequences are token ids) is tokenized by the
index's tokenizer (`tokenizer=` of `open`, else loaded from the checkpoint recorded in the
manifest for PairAlign and VQ indexes): the whole clip (at most one window), or the region
`start`..`end` of a longer recording tokenized in its context window
(`tokenizers.region_tokens`). A clip much shorter than a window (< `SHORT_CLIP_FRACTION` of it)
without start/end is tokenized zero-padded and matches poorly (the front end normalizes over the
padded segment): a warning, logged once per process, says so and asks for start/end on a longer
recording. Loading and searching never import training code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Optional, Sequence

from absl import logging
import numpy as np

from pairalign_jax.archive import hits as hits_lib
from pairalign_jax.archive import subsequence
from pairalign_jax.archive import tokenizers as tokenizers_lib

FORMAT = 'pairalign-archive-index'
VERSION = 1
MANIFEST = 'manifest.json'
SHARDS = 'shards'
ARRAYS = ('tokens', 'times', 'offsets', 'window_file', 'window_span')
DEFAULT_SHARD_TOKENS = 2_000_000  # buffered tokens that trigger a shard write (bounded memory)
# A clip query shorter than this fraction of a window, without context, gets a warning (once).
SHORT_CLIP_FRACTION = 0.5
_warned_short_clip = False
# Settings that must match between runs adding to one index (tokenizer info keys).
COMPATIBLE_KEYS = ('kind', 'checkpoint', 'step', 'eos_bias', 'sample_rate')


def _warn_short_clip(seconds: float, window_seconds: float) -> None:
  """Warns once per process that a short clip query, tokenized alone, matches poorly."""
  global _warned_short_clip
  if _warned_short_clip:
    return
  _warned_short_clip = True
  logging.warning(
    'query: a %.2f s clip without context is tokenized zero-padded to the %g s window, and the '
    'front end normalizes over that padded segment, so it matches the archive poorly. Give it '
    'context: search a longer recording (of at least %g s) with start/end (search CLI: '
    '--start/--end) around the query, so that it is tokenized in its %g s window as the archive '
    'was. (Warned once.)',
    seconds,
    window_seconds,
    window_seconds,
    window_seconds,
  )


@dataclasses.dataclass
class _Arrays:
  tokens: np.ndarray  # [T]
  times: np.ndarray  # [T] float32, seconds from the window start
  offsets: np.ndarray  # [w + 1] int64
  window_file: np.ndarray  # [w] int32
  window_span: np.ndarray  # [w, 2] float64

  @classmethod
  def empty(cls) -> '_Arrays':
    return cls(
      np.zeros(0, np.int32),
      np.zeros(0, np.float32),
      np.zeros(1, np.int64),
      np.zeros(0, np.int32),
      np.zeros((0, 2), np.float64),
    )

  @classmethod
  def concat(cls, parts: Sequence['_Arrays']) -> '_Arrays':
    parts = [p for p in parts if p.window_file.size]
    if not parts:
      return cls.empty()
    shifts = np.cumsum([0] + [p.tokens.size for p in parts[:-1]])
    return cls(
      np.concatenate([p.tokens.astype(np.int32) for p in parts]),
      np.concatenate([p.times for p in parts]).astype(np.float32),
      np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, shifts)]).astype(np.int64),
      np.concatenate([p.window_file for p in parts]).astype(np.int32),
      np.concatenate([p.window_span for p in parts]).astype(np.float64),
    )


def windows_to_arrays(windows: Sequence[dict[str, Any]], file_id: int, offset: float) -> _Arrays:
  """`tokenize_long`-style windows (absolute times) of one file -> arrays; `offset` (the
  region's start in the file) is added to every time."""
  tokens, times, lengths, spans = [], [], [], []
  for w in windows:
    t0 = float(w['start'])
    tok = np.asarray(w['tokens'], np.int64).reshape(-1)
    tim = np.asarray(w['times'], np.float64).reshape(-1)
    if tok.shape != tim.shape:
      raise ValueError(f'a window has {tok.size} tokens and {tim.size} times')
    tokens.append(tok)
    times.append((tim - t0).astype(np.float32))
    lengths.append(tok.size)
    spans.append((t0 + offset, float(w['end']) + offset))
  return _Arrays(
    np.concatenate(tokens or [np.zeros(0, np.int64)]).astype(np.int32),
    np.concatenate(times or [np.zeros(0, np.float32)]).astype(np.float32),
    np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64),
    np.full(len(windows), file_id, np.int32),
    np.asarray(spans, np.float64).reshape(-1, 2),
  )


class Index:
  """An archive index (module docstring). `directory=None` keeps it in memory only."""

  def __init__(
    self,
    directory: Optional[str],
    manifest: dict[str, Any],
    arrays: _Arrays,
    *,
    tokenizer: Optional[tokenizers_lib.StringTokenizer] = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
  ):
    self.directory = directory
    self.manifest = manifest
    self._stored = arrays  # written shards
    self._pending: list[_Arrays] = []  # buffered, not yet written
    self._pending_files: list[dict[str, Any]] = []
    self._pending_tokens = 0
    self.tokenizer = tokenizer
    self.shard_tokens = int(shard_tokens)
    self._keys = {f['key'] for f in manifest['files']}
    self._cache = None  # (arrays, padded [W, L], lengths [W]) for search

  # ---------------------------------------------------------------- create / open
  @classmethod
  def create(
    cls,
    directory: Optional[str],
    *,
    tokenizer_info: dict[str, Any],
    window_seconds: float,
    hop_seconds: float,
    tokenizer: Optional[tokenizers_lib.StringTokenizer] = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
  ) -> 'Index':
    """A new empty index (in `directory`, which must not hold one already; None = memory)."""
    if directory is not None and os.path.exists(os.path.join(directory, MANIFEST)):
      raise ValueError(f'index {directory!r} exists already; open it with Index.open')
    manifest = {
      'format': FORMAT,
      'version': VERSION,
      'tokenizer': dict(tokenizer_info),
      'window_seconds': float(window_seconds),
      'hop_seconds': float(hop_seconds),
      'files': [],
      'bad_files': {},
      'shards': [],
    }
    index = cls(
      directory, manifest, _Arrays.empty(), tokenizer=tokenizer, shard_tokens=shard_tokens
    )
    if directory is not None:
      os.makedirs(os.path.join(directory, SHARDS), exist_ok=True)
      index._write_manifest()
    return index

  @classmethod
  def for_tokenizer(
    cls,
    tokenizer: tokenizers_lib.StringTokenizer,
    directory: Optional[str] = None,
    *,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
  ) -> 'Index':
    """A new empty index of `tokenizer`'s windows (its info, window and hop; `create`), in
    `directory` or (None) in memory."""
    return cls.create(
      directory,
      tokenizer_info=tokenizer.info,
      window_seconds=tokenizer.window_seconds,
      hop_seconds=tokenizer.hop_seconds,
      tokenizer=tokenizer,
      shard_tokens=shard_tokens,
    )

  @classmethod
  def open(
    cls,
    directory: str,
    *,
    tokenizer: Optional[tokenizers_lib.StringTokenizer] = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
  ) -> 'Index':
    """Reads the manifest and every shard; ValueError naming the folder if it is no index."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
      raise ValueError(f'--index {directory!r} holds no archive index ({MANIFEST} missing)')
    with open(path, encoding='utf-8') as f:
      manifest = json.load(f)
    if manifest.get('format') != FORMAT or manifest.get('version') != VERSION:
      raise ValueError(
        f'{path}: not a version-{VERSION} {FORMAT} manifest '
        f'(format {manifest.get("format")!r}, version {manifest.get("version")!r})'
      )
    parts = []
    for shard in manifest['shards']:
      folder = os.path.join(directory, SHARDS, shard)
      arrays = {name: np.load(os.path.join(folder, f'{name}.npy')) for name in ARRAYS}
      parts.append(_Arrays(**arrays))
    index = cls(
      directory, manifest, _Arrays.concat(parts), tokenizer=tokenizer, shard_tokens=shard_tokens
    )
    if tokenizer is not None:
      index.check_same_model(tokenizer)
    logging.info(
      'opened index %s: %d files, %d windows, %d tokens, %.2f h of audio',
      directory,
      len(manifest['files']),
      index.num_windows,
      index.num_tokens,
      index.audio_seconds / 3600,
    )
    return index

  @classmethod
  def open_or_create(
    cls,
    directory: str,
    tokenizer: tokenizers_lib.StringTokenizer,
    *,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
  ) -> 'Index':
    """The index in `directory` (checked to have been written by the same tokenizer and hop), or
    a new one."""
    if not os.path.exists(os.path.join(directory, MANIFEST)):
      return cls.for_tokenizer(tokenizer, directory, shard_tokens=shard_tokens)
    index = cls.open(directory, tokenizer=tokenizer, shard_tokens=shard_tokens)
    index.check_compatible(tokenizer)
    return index

  def check_same_model(self, tokenizer: tokenizers_lib.StringTokenizer) -> None:
    """ValueError when `tokenizer`'s model is not the one that wrote the index (both record a
    `model_fingerprint`; an index written before fingerprints were recorded is not checked)."""
    written = self.manifest['tokenizer'].get('model_fingerprint')
    given = tokenizer.info.get('model_fingerprint')
    if written and given and written != given:
      raise ValueError(
        f'index {self.directory!r} was written by another model (fingerprint {written}) than '
        f'the one given for searching it ({given}, checkpoint '
        f'{tokenizer.info.get("checkpoint")!r}); its strings would be compared with another '
        'vocabulary'
      )

  def check_compatible(self, tokenizer: tokenizers_lib.StringTokenizer) -> None:
    """ValueError naming the setting when `tokenizer` differs from the one that wrote the index."""
    old = self.manifest['tokenizer']
    for key in COMPATIBLE_KEYS:
      if old.get(key) != tokenizer.info.get(key):
        raise ValueError(
          f'index {self.directory!r} was written with tokenizer {key}={old.get(key)!r}, this run '
          f'has {key}={tokenizer.info.get(key)!r}; use the same settings or a new --index folder'
        )
    if abs(self.manifest['hop_seconds'] - tokenizer.hop_seconds) > 1e-9:
      raise ValueError(
        f'index {self.directory!r} was written with --hop_seconds={self.manifest["hop_seconds"]}'
        f', this run has {tokenizer.hop_seconds}'
      )

  # ---------------------------------------------------------------- contents
  @property
  def files(self) -> list[dict[str, Any]]:
    return self.manifest['files'] + self._pending_files

  def arrays(self) -> _Arrays:
    """Every window (written and buffered)."""
    if self._cache is None:
      arrays = _Arrays.concat([self._stored] + self._pending)
      pad = int(arrays.tokens.max(initial=0)) + 1
      lengths = np.diff(arrays.offsets)
      width = max(1, int(lengths.max(initial=0)))
      padded = np.full((lengths.size, width), pad, np.int32)  # [W, L]
      rows = np.repeat(np.arange(lengths.size), lengths)
      cols = np.arange(arrays.tokens.size) - np.repeat(arrays.offsets[:-1], lengths)
      padded[rows, cols] = arrays.tokens
      self._cache = (arrays, padded, lengths)
    return self._cache[0]

  @property
  def num_windows(self) -> int:
    return int(sum(f['windows'] for f in self.files))

  @property
  def num_tokens(self) -> int:
    return int(sum(f['tokens'] for f in self.files))

  @property
  def audio_seconds(self) -> float:
    return float(sum(f['duration'] for f in self.files))

  def tokens_per_hour(self) -> Optional[float]:
    """Stored tokens (every window, overlaps included) per hour of indexed audio."""
    return self.num_tokens / (self.audio_seconds / 3600) if self.audio_seconds else None

  def has(self, key: str) -> bool:
    return key in self._keys

  # ---------------------------------------------------------------- adding
  def add_file(
    self,
    key: str,
    path: str,
    windows: Sequence[dict[str, Any]],
    *,
    duration: float,
    offset: float = 0.0,
  ) -> None:
    """Buffers one file's windows (`tokenize_long`'s dicts, absolute times); `offset` = the
    region's start in the file. Writes a shard when the buffer passes `shard_tokens`."""
    self.add_arrays(
      key, path, windows_to_arrays(windows, -1, offset), duration=duration, offset=offset
    )

  def add_arrays(
    self, key: str, path: str, arrays: _Arrays, *, duration: float, offset: float = 0.0
  ) -> None:
    """`add_file` for windows already in array form (`window_file` is overwritten)."""
    if key in self._keys:
      raise ValueError(f'{key!r} is indexed already')
    file_id = len(self.manifest['files']) + len(self._pending_files)
    arrays.window_file = np.full(arrays.window_file.shape, file_id, np.int32)
    self._pending.append(arrays)
    self._pending_files.append(
      {
        'id': file_id,
        'key': key,
        'path': path,
        'offset': float(offset),
        'duration': float(duration),
        'windows': int(arrays.window_file.size),
        'tokens': int(arrays.tokens.size),
      }
    )
    self._keys.add(key)
    self.manifest['bad_files'].pop(key, None)
    self._pending_tokens += int(arrays.tokens.size)
    self._cache = None
    if self._pending_tokens >= self.shard_tokens:
      self.flush()

  def add_bad(self, key: str, path: str, reason: str, detail: str) -> None:
    """Records a file that could not be indexed (written with the next manifest)."""
    self.manifest['bad_files'][key] = {'path': path, 'reason': reason, 'detail': detail}

  def flush(self) -> None:
    """Writes the buffered files as one shard and the manifest (no-op for an in-memory index,
    which keeps the buffer)."""
    if self.directory is None:
      return
    if self._pending:
      shard = f'{len(self.manifest["shards"]):05d}'
      arrays = _Arrays.concat(self._pending)
      final = os.path.join(self.directory, SHARDS, shard)
      tmp = final + '.tmp'
      shutil.rmtree(tmp, ignore_errors=True)
      if os.path.exists(final):  # left by a run that died before its manifest was written
        shutil.rmtree(final)
      os.makedirs(tmp)
      big = arrays.tokens.size and int(arrays.tokens.max()) >= 2**16
      values = {
        'tokens': arrays.tokens.astype(np.int32 if big else np.uint16),
        'times': arrays.times,
        'offsets': arrays.offsets,
        'window_file': arrays.window_file,
        'window_span': arrays.window_span,
      }
      for name, value in values.items():
        np.save(os.path.join(tmp, f'{name}.npy'), value)
      os.replace(tmp, final)
      for f in self._pending_files:
        f['shard'] = shard
      self.manifest['shards'].append(shard)
      self.manifest['files'].extend(self._pending_files)
      self._stored = _Arrays.concat([self._stored, arrays])
      logging.info(
        'wrote shard %s: %d files, %d windows, %d tokens',
        shard,
        len(self._pending_files),
        arrays.window_file.size,
        arrays.tokens.size,
      )
      self._pending, self._pending_files, self._pending_tokens = [], [], 0
    self._write_manifest()

  def _write_manifest(self) -> None:
    path = os.path.join(self.directory, MANIFEST)
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
      json.dump(self.manifest, f, indent=1)
    os.replace(path + '.tmp', path)

  # ---------------------------------------------------------------- search
  def query_tokens(
    self,
    waveform: np.ndarray,
    sample_rate: Optional[int] = None,
    *,
    start: Optional[float] = None,
    end: Optional[float] = None,
  ) -> list[int]:
    """A waveform query -> token ids: the whole clip (at most one window), or with `start` /
    `end` (seconds) that region tokenized in its context (`tokenizers.region_tokens`)."""
    st = self._string_tokenizer()
    sr = st.sample_rate if sample_rate is None else int(sample_rate)
    wave = np.asarray(waveform, np.float32)
    if wave.ndim != 1 or wave.size == 0:
      raise ValueError(f'query waveform must be 1-D mono and non-empty, got shape {wave.shape}')
    if start is not None or end is not None:
      lo = 0.0 if start is None else float(start)
      hi = wave.shape[0] / sr if end is None else float(end)
      seconds = hi - lo
      tokens, _ = tokenizers_lib.region_tokens(st, wave, sr, lo, hi)
    else:
      seconds = wave.shape[0] / sr
      if seconds > st.window_seconds + 1e-9:
        raise ValueError(
          f'query: {seconds:.2f} s is longer than one {st.window_seconds:g} s window; pass '
          'start/end (--start/--end) to select 0.3-3 s of speech'
        )
      if seconds < SHORT_CLIP_FRACTION * st.window_seconds:
        _warn_short_clip(seconds, st.window_seconds)
      tokens, _ = st.clip(wave, sr)
    if seconds < 0.3:
      logging.warning('query: %.2f s is shorter than 0.3 s; matches will be unreliable', seconds)
    return tokens

  def _string_tokenizer(self) -> tokenizers_lib.StringTokenizer:
    if self.tokenizer is None:
      info = self.manifest['tokenizer']
      if info.get('kind') not in tokenizers_lib.KINDS or not info.get('checkpoint'):
        raise ValueError(
          f'this index was written by tokenizer {info.get("kind")!r}: pass tokenizer= to '
          'Index.open to search it with audio, or search with token ids'
        )
      from pairalign_jax.tokenizer import Tokenizer

      tok = Tokenizer.from_checkpoint(info['checkpoint'], step=info.get('step'))
      tokenizer = tokenizers_lib.from_tokenizer(
        tok,
        kind=info['kind'],
        hop_seconds=self.manifest['hop_seconds'],
        eos_bias=info.get('eos_bias'),
        info=info,  # its model_fingerprint replaced by the loaded model's
      )
      self.check_same_model(tokenizer)  # e.g. `search --checkpoint=` naming another run
      self.tokenizer = tokenizer
    return self.tokenizer

  def search(
    self,
    query,
    top_k: Optional[int] = 10,
    *,
    sample_rate: Optional[int] = None,
    start: Optional[float] = None,
    end: Optional[float] = None,
  ) -> list[hits_lib.Hit]:
    """Best hits first. `query`: token ids (an integer sequence) or a float waveform
    (tokenized, module docstring; `sample_rate` default: the tokenizer's)."""
    q = np.asarray(query)
    if q.size and np.issubdtype(q.dtype, np.integer):
      if start is not None or end is not None:
        raise ValueError('start/end select a region of a waveform query, not of token ids')
      return self.search_tokens(q, top_k)
    if not np.issubdtype(q.dtype, np.floating):
      raise ValueError(
        f'query must be token ids (integers) or a float waveform, got dtype {q.dtype}'
      )
    tokens = self.query_tokens(q, sample_rate, start=start, end=end)
    if not tokens:
      logging.warning('the query was tokenized to an empty string: no hits')
      return []
    return self.search_tokens(tokens, top_k)

  def search_tokens(self, tokens, top_k: Optional[int] = 10) -> list[hits_lib.Hit]:
    """Hits of the token string `tokens` (module docstring), best first; `top_k=None`: all."""
    q = subsequence.check_query(tokens)
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
      raise ValueError(f'top_k must be a positive integer or None, got {top_k!r}')
    self.arrays()  # builds the padded matrix once per change
    _, padded, lengths = self._cache
    files = self.files
    if not lengths.size:
      return []
    found = subsequence.best_ends(q, padded, lengths)
    m = q.shape[0]
    dist = np.where(lengths > 0, found.distance, m + 1)
    order = np.lexsort((np.arange(dist.size), dist))  # by distance, then window
    order = order[dist[order] <= m]  # windows with tokens
    n = order.size if top_k is None else min(order.size, 4 * top_k)
    while True:
      rows = order[:n]
      starts = subsequence.best_starts(q, padded[rows], found.end[rows], found.distance[rows])
      candidates = [
        self._hit(files, int(w), int(s), int(found.end[w]), int(found.distance[w]), m)
        for w, s in zip(rows, starts)
      ]
      merged = hits_lib.merge_hits(candidates, limit=top_k)
      if top_k is None or len(merged) >= top_k or n >= order.size:
        return merged
      n = min(order.size, 4 * n)

  def _hit(self, files, window: int, start: int, end: int, distance: int, m: int) -> hits_lib.Hit:
    arrays = self._cache[0]
    lo = arrays.offsets[window]
    times = arrays.times[lo : arrays.offsets[window + 1]]
    w0, w1 = arrays.window_span[window]
    t0, t1 = hits_lib.span_times(times, start, end, (0.0, w1 - w0))
    f = files[int(arrays.window_file[window])]
    return hits_lib.Hit(
      file=f['path'],
      start=float(w0 + t0),
      end=float(w0 + t1),
      score=1.0 - distance / m,
      distance=distance,
      window=window,
    )
