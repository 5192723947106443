"""Tokenize audio files with a trained checkpoint, to JSONL.

    python -m pairalign_jax.tokenize --checkpoint=runs/demo --input=DIR_OR_FILE_OR_MANIFEST \
        --output=tokens.jsonl [--hop_seconds=1.0] [--eos_bias=0.5 | --target_rate=10] [--vq]

`--input` is one audio file, a folder (searched recursively for audio files), or a manifest
(`.tsv` with a `path` column, or `.jsonl`; optional `start`/`end` seconds select a region).
Each recording is cut into 3 s windows every `--hop_seconds` (`Tokenizer.tokenize_long`: the last
window is aligned to the end; a recording shorter than 3 s is one zero-padded window), and each
window becomes one JSON line: `{"path", "start", "end", "tokens", "times", "terminated"}` (times
in seconds from the start of the recording, non-decreasing; `terminated` is false for a string
cut at the model's length limit `max_len` instead of ending with EOS). Files that cannot be read
(unreadable, truncated, empty, NaN, silent) and malformed manifest lines (reason
'bad_manifest_line', path `<manifest>:<line>`) are reported with the reason and skipped; the run
never stops for one bad file or line. The summary at the end (printed as one JSON line, and
logged as one sentence) counts windows, the share of them terminated by EOS, files and skips by
reason, and names the skipped files (the first 100; every one is logged). `--vq` windows the
same way (with `--eos_bias`, `--target_rate` or `--beam_size`, which it has no use for: an
error). `--output` must be a file path whose folder exists or can be created.
"""

from __future__ import annotations

import collections
import json
import math
import os
import sys
from typing import Any, Iterator, Optional

from absl import app
from absl import flags
from absl import logging
import tqdm

from pairalign_jax.data import audio_io
from pairalign_jax.data import folder
from pairalign_jax.data import manifest
from pairalign_jax.data.bad_input import BadAudioError

FLAGS = flags.FLAGS


def _define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """The CLI's flags (defined only when run as a program, so importing this module is free)."""
  fv = dict(flag_values=flag_values)
  flags.DEFINE_string('checkpoint', None, 'Workdir or checkpoint step directory.', **fv)
  flags.DEFINE_string('input', None, 'Audio file, folder, or manifest (.tsv/.jsonl).', **fv)
  flags.DEFINE_string('output', None, 'Output JSONL path.', **fv)
  flags.DEFINE_float('hop_seconds', 1.0, 'Hop between consecutive 3 s windows.', **fv)
  flags.DEFINE_float(
    'eos_bias', None, 'EOS-logit bias (larger = shorter strings). Default: the trained bias.', **fv
  )
  flags.DEFINE_float(
    'target_rate', None, 'Tokens per second, through the stored calibration.', **fv
  )
  flags.DEFINE_bool(
    'vq', False, 'Emit the collapsed stage-0 VQ tokens instead of PairAlign strings.', **fv
  )
  flags.DEFINE_integer('batch_size', 64, 'Windows per compiled batch.', **fv)
  flags.DEFINE_integer('beam_size', 1, 'Beam search width (1 = greedy decoding).', **fv)
  flags.mark_flags_as_required(['checkpoint', 'input', 'output'], **fv)


MANIFEST_SUFFIXES = ('.tsv', '.jsonl')
MAX_LISTED_SKIPS = 100  # skipped files named in the summary (all of them are logged)


BAD_MANIFEST_LINE = 'bad_manifest_line'


def list_inputs(path: str) -> list[dict[str, Any]]:
  """Items {'path', 'start', 'end'} named by `path` (file, folder or manifest). A malformed
  manifest line becomes the item {'path': '<manifest>:<line>', 'error': 'bad_manifest_line',
  'detail'} (skipped and reported by `tokenize_items`, in the manifest's order)."""
  if os.path.isdir(path):
    files = folder.list_files(path, folder.AUDIO_EXTENSIONS)
    return [{'path': os.path.join(path, f), 'start': None, 'end': None} for f in files]
  if not os.path.exists(path):
    raise FileNotFoundError(f'--input {path!r} does not exist')
  if path.lower().endswith(MANIFEST_SUFFIXES):
    bad_lines = []
    entries = manifest.read_manifest(path, bad_lines=bad_lines)
    items = [
      (e['line'], {'path': e['path'], 'start': e['start'], 'end': e['end']}) for e in entries
    ]
    items += [
      (line_no, {'path': f'{path}:{line_no}', 'error': BAD_MANIFEST_LINE, 'detail': detail})
      for line_no, detail in bad_lines
    ]
    return [item for _, item in sorted(items, key=lambda x: x[0])]
  return [{'path': path, 'start': None, 'end': None}]


def tokenize_items(
  tokenizer,
  items,
  *,
  hop_seconds: float,
  eos_bias: Optional[float] = None,
  use_vq: bool = False,
  progress: bool = True,
) -> Iterator[dict[str, Any]]:
  """Yields one record per window, or {'error': reason, 'path', 'detail'} for a skipped file.

  Every item gives either one error record or at least one window record.
  """
  for item in tqdm.tqdm(items, desc='tokenize', unit='file', disable=not progress, file=sys.stderr):
    if 'error' in item:  # a malformed manifest line (`list_inputs`)
      yield dict(item)
      continue
    try:
      wave, sr = audio_io.read_audio(item['path'], item['start'], item['end'])
    except BadAudioError as e:
      yield {'error': e.reason, 'path': item['path'], 'detail': e.detail}
      continue
    offset = float(item['start'] or 0.0)
    windows = tokenizer.tokenize_long(
      wave, sr, hop_seconds=hop_seconds, eos_bias=eos_bias, vq=use_vq
    )
    for w in windows:
      yield {
        'path': item['path'],
        'start': round(w['start'] + offset, 4),
        'end': round(w['end'] + offset, 4),
        'tokens': w['tokens'],
        'times': [round(t + offset, 4) for t in w['times']],
        'terminated': w['terminated'],
      }


def run(
  checkpoint: str,
  input_path: str,
  output: str,
  *,
  hop_seconds: float = 1.0,
  eos_bias: Optional[float] = None,
  target_rate: Optional[float] = None,
  use_vq: bool = False,
  batch_size: int = 64,
  progress: bool = True,
  beam_size: int = 1,
) -> dict[str, Any]:
  """Tokenizes everything under `input_path` into `output`; returns the summary."""
  from pairalign_jax.tokenizer import check_hop_seconds
  from pairalign_jax.tokenizer import Tokenizer

  if not (math.isfinite(hop_seconds) and hop_seconds > 0):
    raise ValueError(f'--hop_seconds must be a finite number of seconds > 0, got {hop_seconds}')
  if use_vq and (eos_bias is not None or target_rate is not None or beam_size != 1):
    raise ValueError(
      '--vq writes the collapsed VQ codes: --eos_bias, --target_rate and --beam_size set how the '
      'decoder writes its strings and do not apply to it'
    )
  check_output(output)
  items = list_inputs(input_path)
  tokenizer = Tokenizer.from_checkpoint(checkpoint, batch_size=batch_size, beam_size=beam_size)
  try:
    check_hop_seconds(hop_seconds, tokenizer.segment_samples / tokenizer.sample_rate)
  except ValueError as e:
    raise ValueError(f'--{e}') from None
  if target_rate is not None:
    if eos_bias is not None:
      raise ValueError('pass --eos_bias or --target_rate, not both')
    eos_bias = tokenizer.eos_bias_for_rate(target_rate)
  logging.info('Tokenizing %d recording(s) from %s', len(items), input_path)
  summary = {
    'files': len(items),
    'files_ok': 0,
    'windows': 0,
    'terminated': 0,
    'terminated_share': None,
    'skipped': collections.Counter(),
    'skipped_files': [],
  }
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output, 'w', encoding='utf-8') as f:
    for rec in tokenize_items(
      tokenizer, items, hop_seconds=hop_seconds, eos_bias=eos_bias, use_vq=use_vq, progress=progress
    ):
      if 'error' in rec:
        summary['skipped'][rec['error']] += 1
        if len(summary['skipped_files']) < MAX_LISTED_SKIPS:
          summary['skipped_files'].append({k: rec[k] for k in ('path', 'error', 'detail')})
        logging.warning('skipped %s: %s (%s)', rec['path'], rec['error'], rec['detail'])
        continue
      summary['windows'] += 1
      summary['terminated'] += bool(rec['terminated'])
      f.write(json.dumps(rec) + '\n')
  summary['skipped'] = dict(summary['skipped'])
  # Every item yields one error or at least one window (a manifest may name a file twice).
  summary['files_ok'] = summary['files'] - sum(summary['skipped'].values())
  if summary['windows']:
    summary['terminated_share'] = round(summary['terminated'] / summary['windows'], 4)
  logging.info(
    'Wrote %d windows (terminated by EOS: %s; the others were cut at max_len) from %d of '
    '%d files to %s; skipped: %s',
    summary['windows'],
    'n/a' if summary['terminated_share'] is None else f'{summary["terminated_share"]:.1%}',
    summary['files_ok'],
    summary['files'],
    output,
    summary['skipped'] or 'none',
  )
  return summary


def _nearest_existing(path: str) -> str:
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return path


def check_output(output: str, flag: str = '--output') -> None:
  """ValueError naming `flag` when the file `output` is a folder, lies under an existing file or
  in a folder that cannot be written: checked before any work, not after it."""
  path = os.path.abspath(output)
  if os.path.isdir(path):
    raise ValueError(f'{flag} {output!r} is a folder; give the path of the file to write')
  check_output_folder(os.path.dirname(path), flag, shown=output)


def check_output_folder(folder: str, flag: str = '--outdir', shown: Optional[str] = None) -> None:
  """ValueError naming `flag` when `folder` is a file, lies under one, or cannot be written."""
  shown = folder if shown is None else shown
  existing = _nearest_existing(os.path.abspath(folder))
  if not os.path.isdir(existing):
    raise ValueError(f'{flag} {shown!r} cannot be created: {existing!r} is a file, not a folder')
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ValueError(f'{flag} {shown!r} cannot be written: no write permission in {existing!r}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  summary = run(
    FLAGS.checkpoint,
    FLAGS.input,
    FLAGS.output,
    hop_seconds=FLAGS.hop_seconds,
    eos_bias=FLAGS.eos_bias,
    target_rate=FLAGS.target_rate,
    use_vq=FLAGS.vq,
    batch_size=FLAGS.batch_size,
    beam_size=FLAGS.beam_size,
  )
  print(json.dumps(summary))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
