"""LibriSpeech source: `SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac` + `SPEAKER-CHAPTER.trans.txt`.

`root` may be one subset (`.../LibriSpeech/train-clean-100`) or any parent holding several
(`.../LibriSpeech`): every `*.trans.txt` below `root` is read and each listed utterance whose flac
exists becomes an item (utterances without a transcript line are skipped with a warning).

Record: `id` = utterance id (`'1089-134686-0000'`), `speaker` = speaker id, `text` = the
transcript, and `content_id` = the **normalized transcript** (`normalize_text`: upper case,
apostrophes kept, other punctuation dropped, whitespace collapsed): LibriSpeech has no repeated
prompts by design, so identical text is the only sound notion of "same content" (it matches the
rare exact repeats across readers; retrieval otherwise uses augmented views of one utterance).
Those repeats are also the only parallel readings (`parallel_record`) for
`config.data.cross_speaker_views`. Splits: `folder.split_entries`.
"""

import os
import re
from typing import Any, Sequence

from absl import logging

from pairalign_jax.data import folder


def normalize_text(text: str) -> str:
  """Upper case; keep letters, digits and apostrophes; collapse whitespace."""
  text = re.sub(r"[^\w' ]+", ' ', text.upper())
  return ' '.join(text.split())


def read_transcripts(path: str) -> dict[str, str]:
  """`{'1089-134686-0000': 'HE HOPED ...'}` from one `*.trans.txt`."""
  out = {}
  with open(path, encoding='utf-8') as f:
    for line_no, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      utt, _, text = line.partition(' ')
      if not text:
        logging.warning('%s:%d: transcript line without text: %r', path, line_no, line)
      out[utt] = text.strip()
  return out


def _entries(root: str, relpaths: Sequence[str]) -> list[dict[str, Any]]:
  flacs = {
    os.path.splitext(os.path.basename(p))[0]: p for p in relpaths if p.lower().endswith('.flac')
  }
  listed = []
  for trans in (p for p in relpaths if p.lower().endswith('.trans.txt')):
    for utt, text in read_transcripts(os.path.join(root, trans)).items():
      if utt in flacs:
        listed.append((utt, text))
      else:
        logging.warning('LibriSpeech: %s lists %s but its flac is missing', trans, utt)
  missing = set(flacs) - {u for u, _ in listed}
  if missing:
    logging.warning(
      'LibriSpeech: %d flac files under %s have no transcript (e.g. %s); skipped',
      len(missing),
      root,
      sorted(missing)[0],
    )
  listed.sort()
  paths = [flacs[u] for u, _ in listed]
  infos = folder.file_infos(root, paths, desc='LibriSpeech headers')
  entries = []
  for (utt, text), rel, info in zip(listed, paths, infos):
    speaker, chapter = utt.split('-')[:2]
    entries.append(
      {
        'path': rel,
        'id': utt,
        'speaker': speaker,
        'chapter': chapter,
        'text': text,
        'content_id': normalize_text(text),
        'frames': info['frames'] if info else None,
        'sample_rate': info['sample_rate'] if info else None,
      }
    )
  return entries


class LibriSpeechSource(folder.IndexedAudioSource):
  """LibriSpeech utterances under `root` (see the module docstring).

  `split`: 'all', or 'train' / 'validation' / 'test' ('heldout' = 'test') to split one tree by
  speaker (`folder.split_entries`; `heldout_fraction=1.0`: the whole tree is held out, e.g.
  `config.data.eval_path`, and halved into validation / test).
  """

  name = 'librispeech'

  def __init__(
    self,
    root: str,
    split: str = 'all',
    *,
    heldout_fraction: float = 0.1,
    cache_dir: str = '',
    fallback_dir: str | None = None,
  ):
    relpaths = folder.list_files(root, ('.flac', '.trans.txt'))
    entries = folder.cached_index(
      root,
      'librispeech',
      relpaths,
      lambda r: _entries(root, r),
      cache_dir=cache_dir,
      fallback_dir=fallback_dir,
    )
    if not entries:
      raise FileNotFoundError(
        f'no LibriSpeech utterances (SPEAKER/CHAPTER/*.flac with *.trans.txt) under {root!r}'
      )
    super().__init__(root, folder.split_entries(entries, split, heldout_fraction))
