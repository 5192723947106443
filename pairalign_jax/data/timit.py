"""TIMIT source: `TRAIN|TEST/DR*/SPEAKER/SENTENCE.WAV` (NIST SPHERE) + `.PHN`, `.WRD`, `.TXT`.

Upper- and lower-case trees are both accepted (`train/dr1/fcjf0/sa1.wav`), as are copies whose
`.WAV` was converted to RIFF (soundfile detects the container from the header, not the name).
Splits: 'train' = the `TRAIN` folder; 'validation' and 'test' ('heldout' = 'test') = the two
speaker-disjoint halves of `TEST` by a hash of the speaker (`folder.split_entries` with the whole
folder held out). The folders are found directly under `root` or one level down (e.g.
`TIMIT/data/TRAIN`); when `root` itself holds the `DR*` folders (a split folder given directly,
e.g. `config.data.eval_path`) 'train' and 'all' use every sentence and 'validation' / 'test'
its halves.

Record: `id` = `'TRAIN/DR1/FCJF0/SX123'`, `speaker` = `'FCJF0'`, `content_id` = the sentence id
(`'SX123'`), so other speakers reading the same prompt are the retrieval queries; `text` from
`.TXT`; `phones` and `phone_times` (float32[P, 2], seconds = sample index / sample rate) from
`.PHN`; `words` and `word_times` from `.WRD`. The dialect-calibration sentences SA1/SA2 (read by
every speaker) are dropped when `exclude_sa` (config.data.timit_exclude_sa). Parallel readings
(`parallel_record`, for `config.data.cross_speaker_views`): other speakers' readings of the same
sentence id (SX prompts are read by about 7 speakers, SA by all).
"""

import os
import re
from typing import Any, Sequence

from absl import logging

from pairalign_jax.data import folder

SPLIT_DIRS = {'train': 'train', 'validation': 'test', 'test': 'test'}
_SENTENCE = re.compile(r'^s[aix]\d+$', re.IGNORECASE)
_DIALECT = re.compile(r'^dr\d+$', re.IGNORECASE)


def read_segments(path: str) -> tuple[list[str], list[tuple[int, int]]]:
  """`.PHN` / `.WRD` lines `start end label` -> (labels, [(start, end)] in samples)."""
  labels, spans = [], []
  with open(path, encoding='utf-8', errors='replace') as f:
    for line_no, line in enumerate(f, 1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) < 3:
        raise ValueError(f'{path}:{line_no}: expected "start end label", got {line.strip()!r}')
      spans.append((int(parts[0]), int(parts[1])))
      labels.append(' '.join(parts[2:]))
  return labels, spans


def read_text(path: str) -> str:
  """`.TXT` line `start end Sentence text.` -> `'Sentence text.'`."""
  with open(path, encoding='utf-8', errors='replace') as f:
    parts = f.read().split(maxsplit=2)
  return parts[2].strip() if len(parts) == 3 else ''


def find_split_root(root: str, split: str) -> tuple[str, str]:
  """(folder holding the `DR*` folders, effective split) for `split` under `root`."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f'TIMIT folder {root!r} does not exist')
  names = os.listdir(root)
  if any(_DIALECT.match(n) for n in names):
    return root, 'all'
  split = folder.canonical_split(split)
  if split not in SPLIT_DIRS:
    raise ValueError(
      f'TIMIT split must be one of {tuple(SPLIT_DIRS)} (or heldout = test), got {split!r}'
    )
  want = SPLIT_DIRS[split]
  for base in [root] + [
    os.path.join(root, n) for n in sorted(names) if os.path.isdir(os.path.join(root, n))
  ]:
    for n in sorted(os.listdir(base)):
      if n.lower() == want and os.path.isdir(os.path.join(base, n)):
        return os.path.join(base, n), split
  raise FileNotFoundError(
    f'no {want.upper()} folder (any case) under {root!r} or its '
    'sub-folders; expected TIMIT/TRAIN/DR*/SPEAKER/*.WAV'
  )


def _entries(root: str, relpaths: Sequence[str], split_name: str) -> list[dict[str, Any]]:
  by_lower = {p.lower(): p for p in relpaths}
  wavs = [
    p for p in relpaths if p.lower().endswith('.wav') and _SENTENCE.match(os.path.basename(p)[:-4])
  ]
  infos = folder.file_infos(root, wavs, desc='TIMIT headers')
  entries = []
  for rel, info in zip(wavs, infos):
    parts = rel.split(os.sep)
    if len(parts) < 3:
      logging.warning('TIMIT: %s is not under DR*/SPEAKER/; skipped', rel)
      continue
    dialect, speaker, sentence = parts[-3].upper(), parts[-2].upper(), parts[-1][:-4].upper()
    stem = rel[:-4].lower()
    sr = info['sample_rate'] if info else 16_000
    entry = {
      'path': rel,
      'id': f'{split_name}/{dialect}/{speaker}/{sentence}',
      'speaker': speaker,
      'dialect': dialect,
      'sentence': sentence,
      'content_id': sentence,
      'frames': info['frames'] if info else None,
      'sample_rate': info['sample_rate'] if info else None,
    }
    txt = by_lower.get(stem + '.txt')
    if txt:
      entry['text'] = read_text(os.path.join(root, txt))
    for ext, key in (('.phn', 'phone'), ('.wrd', 'word')):
      label_file = by_lower.get(stem + ext)
      if label_file:
        labels, spans = read_segments(os.path.join(root, label_file))
        entry[key + 's'] = labels
        entry[key + '_times'] = [[s / sr, e / sr] for s, e in spans]
    entries.append(entry)
  return entries


class TimitSource(folder.IndexedAudioSource):
  """TIMIT sentences of one split (see the module docstring)."""

  name = 'timit'

  def __init__(
    self,
    root: str,
    split: str = 'train',
    *,
    exclude_sa: bool = True,
    cache_dir: str = '',
    fallback_dir: str | None = None,
  ):
    split = folder.canonical_split(split)
    split_root, found = find_split_root(root, split)
    split_name = os.path.basename(os.path.normpath(split_root)).upper()
    if found == 'all' and split_name.startswith('DR'):
      split_name = 'ALL'
    relpaths = folder.list_files(split_root, ('.wav', '.phn', '.wrd', '.txt'))
    entries = folder.cached_index(
      split_root,
      'timit',
      relpaths,
      lambda r: _entries(split_root, r, split_name),
      key=split_name,
      cache_dir=cache_dir,
      fallback_dir=fallback_dir,
    )
    if exclude_sa:
      entries = [e for e in entries if not e['sentence'].startswith('SA')]
    if not entries:
      raise FileNotFoundError(
        f'no TIMIT sentences (DR*/SPEAKER/S[AIX]*.WAV) under {split_root!r}'
        + (' after excluding SA sentences' if exclude_sa else '')
      )
    if split in ('validation', 'test'):  # halves of the held-out folder, by speaker hash
      entries = folder.split_entries(entries, split, 1.0)
    super().__init__(split_root, entries)
