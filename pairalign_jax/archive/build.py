"""Stream audio files into an archive index, one file at a time (bounded memory).

    summary = index_items(index, string_tokenizer, tokenize.list_inputs('DIR_OR_MANIFEST'))

Each item (`tokenize.list_inputs`: a file, or a manifest line's file and region) is read, cut
into overlapping windows by the tokenizer (`StringTokenizer.windows`, i.e. `tokenize_long` for
PairAlign), and its windows are added to the index; the index writes a shard whenever its buffer
passes `shard_tokens` tokens and once at the end, so memory holds one file's audio and at most
one shard. Items already in the index (by key, `item_key`) are skipped, unreadable files and
malformed manifest lines are recorded in the manifest's `bad_files` with the reason, logged, and
the run goes on. The progress bar counts seconds of audio (from the file headers, so its ETA is
in audio time). The summary counts files (indexed now, already indexed, skipped by reason),
windows, tokens, audio seconds, wall seconds and the real-time factor of the run.
"""

from __future__ import annotations

import collections
import os
import sys
import time
from typing import Any, Callable, Iterable, Optional

from absl import logging
import tqdm

from pairalign_jax.archive import index_store
from pairalign_jax.archive import tokenizers as tokenizers_lib
from pairalign_jax.data import audio_io
from pairalign_jax.data.bad_input import BadAudioError

MAX_LISTED_SKIPS = 100


def item_key(item: dict[str, Any]) -> str:
  """The index key of an item: the absolute path, plus `#start-end` for a region."""
  key = os.path.abspath(item['path'])
  if item.get('start') is not None or item.get('end') is not None:
    key += (
      f'#{item.get("start") or 0:g}-{"" if item.get("end") is None else format(item["end"], "g")}'
    )
  return key


def expected_seconds(item: dict[str, Any]) -> float:
  """Audio seconds of an item from its header (0 when unreadable): for the progress bar."""
  if 'error' in item:
    return 0.0
  info = audio_io.audio_info(item['path'])
  if not info or not info['sample_rate']:
    return 0.0
  total = info['frames'] / info['sample_rate']
  lo = float(item.get('start') or 0.0)
  hi = total if item.get('end') is None else min(float(item['end']), total)
  return max(0.0, hi - lo)


def index_items(
  index: index_store.Index,
  tokenizer: tokenizers_lib.StringTokenizer,
  items: Iterable[dict[str, Any]],
  *,
  progress: bool = True,
  read: Callable = audio_io.read_audio,
) -> dict[str, Any]:
  """Adds every item not yet in `index` (module docstring); returns the summary."""
  items = list(items)
  summary: dict[str, Any] = {
    'files': len(items),
    'indexed': 0,
    'already_indexed': 0,
    'skipped': collections.Counter(),
    'skipped_files': [],
    'windows': 0,
    'tokens': 0,
    'audio_seconds': 0.0,
  }
  todo = []
  for item in items:
    if 'error' not in item and index.has(item_key(item)):
      summary['already_indexed'] += 1
    else:
      todo.append(item)
  if summary['already_indexed']:
    logging.info('%d file(s) are indexed already: skipped', summary['already_indexed'])
  total = sum(expected_seconds(item) for item in todo)
  t0 = time.perf_counter()
  bar = tqdm.tqdm(
    total=round(total, 1),
    desc='index',
    unit='s audio',
    disable=not progress,
    file=sys.stderr,
  )
  try:  # what is buffered holds whole files only: written even when a file fails hard
    for item in todo:
      key = item['path'] if 'error' in item else item_key(item)
      expected = expected_seconds(item)
      try:
        if 'error' in item:  # a malformed manifest line (tokenize.list_inputs)
          raise BadAudioError(item['path'], item['error'], item.get('detail', ''))
        wave, sr = read(item['path'], item.get('start'), item.get('end'))
      except BadAudioError as e:
        summary['skipped'][e.reason] += 1
        if len(summary['skipped_files']) < MAX_LISTED_SKIPS:
          summary['skipped_files'].append(
            {'path': item['path'], 'error': e.reason, 'detail': e.detail}
          )
        logging.warning('skipped %s: %s (%s)', item['path'], e.reason, e.detail)
        index.add_bad(key, item['path'], e.reason, e.detail)
        bar.update(round(expected, 1))
        continue
      windows = tokenizer.windows(wave, sr)
      duration = wave.shape[0] / sr
      index.add_file(
        key, item['path'], windows, duration=duration, offset=float(item.get('start') or 0.0)
      )
      summary['indexed'] += 1
      summary['windows'] += len(windows)
      summary['tokens'] += sum(len(w['tokens']) for w in windows)
      summary['audio_seconds'] += duration
      bar.update(round(expected, 1))
  finally:
    bar.close()
    index.flush()
  wall = time.perf_counter() - t0
  summary['skipped'] = dict(summary['skipped'])
  summary['wall_seconds'] = wall
  summary['realtime_factor'] = summary['audio_seconds'] / wall if wall > 0 else None
  summary['index'] = {
    'files': len(index.files),
    'windows': index.num_windows,
    'tokens': index.num_tokens,
    'audio_hours': index.audio_seconds / 3600,
    'tokens_per_hour': index.tokens_per_hour(),
    'bad_files': len(index.manifest['bad_files']),
  }
  logging.info(
    'indexed %d file(s) (%.1f s of audio, %d windows, %d tokens) in %.1f s (%.0fx real time); '
    '%d already indexed; skipped: %s',
    summary['indexed'],
    summary['audio_seconds'],
    summary['windows'],
    summary['tokens'],
    wall,
    summary['realtime_factor'] or 0.0,
    summary['already_indexed'],
    summary['skipped'] or 'none',
  )
  return summary


def index_waveforms(
  index: index_store.Index,
  tokenizer: tokenizers_lib.StringTokenizer,
  recordings: Iterable[tuple[str, Any, int]],
  *,
  progress: bool = False,
) -> Optional[float]:
  """Adds in-memory recordings `(name, wave float32 [n], sample_rate)` (the evaluation's); the
  name is both key and path. Returns the wall seconds taken."""
  t0 = time.perf_counter()
  for name, wave, sr in tqdm.tqdm(
    list(recordings), desc=f'index {tokenizer.name}', disable=not progress, file=sys.stderr
  ):
    index.add_file(name, name, tokenizer.windows(wave, sr), duration=len(wave) / sr)
  index.flush()
  return time.perf_counter() - t0
