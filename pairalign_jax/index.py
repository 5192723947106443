"""Index a spoken archive: every file's overlapping windows as token strings with times, on disk.

    python -m pairalign_jax.index --checkpoint=runs/demo --input=DIR_OR_MANIFEST --index=DIR \
        [--hop_seconds=1.0] [--tokenizer=pairalign|vq] [--eos_bias=...]

`--input` is a folder (searched recursively for audio files), one file, or a manifest (`.tsv`
with a `path` column, or `.jsonl`; optional `start`/`end` select a region), as for
`python -m pairalign_jax.tokenize`. Each recording is tokenized in 3 s windows every
`--hop_seconds` (`Tokenizer.tokenize_long`, one file at a time: memory holds one file and one
shard) and stored in `--index` (`archive/index_store.py`: numpy arrays per shard and a
manifest.json). Re-running adds new files and skips indexed ones; unreadable files and bad
manifest lines are reported (and recorded in the manifest) and the run continues. A re-run must
use the same checkpoint, step, tokenizer, EOS bias and hop (else a ValueError names the
setting). The progress bar counts seconds of audio with an ETA; the summary is printed as one
JSON line. Search it with `python -m pairalign_jax.search`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from absl import app
from absl import flags
from absl import logging

from pairalign_jax import tokenize as tokenize_cli
from pairalign_jax.archive import build
from pairalign_jax.archive import index_store
from pairalign_jax.archive import tokenizers as tokenizers_lib

FLAGS = flags.FLAGS


def _define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  fv = dict(flag_values=flag_values)
  flags.DEFINE_string('checkpoint', None, 'Workdir or checkpoint step directory.', **fv)
  flags.DEFINE_string('input', None, 'Audio file, folder, or manifest (.tsv/.jsonl).', **fv)
  flags.DEFINE_string('index', None, 'Index folder (created, or added to).', **fv)
  flags.DEFINE_float('hop_seconds', 1.0, 'Hop between consecutive 3 s windows.', **fv)
  flags.DEFINE_enum(
    'tokenizer', 'pairalign', list(tokenizers_lib.KINDS), 'PairAlign strings or its VQ stage.', **fv
  )
  flags.DEFINE_float(
    'eos_bias', None, 'EOS-logit bias (larger = shorter strings). Default: the trained bias.', **fv
  )
  flags.DEFINE_integer('batch_size', 64, 'Windows per compiled batch.', **fv)
  flags.DEFINE_integer(
    'shard_tokens', index_store.DEFAULT_SHARD_TOKENS, 'Tokens buffered per shard.', **fv
  )
  flags.mark_flags_as_required(['checkpoint', 'input', 'index'], **fv)


def run(
  checkpoint: str,
  input_path: str,
  index_dir: str,
  *,
  hop_seconds: float = 1.0,
  kind: str = 'pairalign',
  eos_bias: Optional[float] = None,
  batch_size: int = 64,
  shard_tokens: int = index_store.DEFAULT_SHARD_TOKENS,
  progress: bool = True,
) -> dict[str, Any]:
  """Adds everything under `input_path` to the index in `index_dir`; returns the summary."""
  from pairalign_jax import checkpointing
  from pairalign_jax.tokenizer import Tokenizer

  if os.path.exists(index_dir) and not os.path.isdir(index_dir):
    raise ValueError(f'--index {index_dir!r} is a file; give a folder')
  items = tokenize_cli.list_inputs(input_path)
  checkpoint = os.path.abspath(checkpoint)
  step = int(checkpointing.step_dir(checkpoint).name)
  tok = Tokenizer.from_checkpoint(checkpoint, step=step, batch_size=batch_size)
  try:
    st = tokenizers_lib.from_tokenizer(
      tok,
      kind=kind,
      hop_seconds=hop_seconds,
      eos_bias=eos_bias,
      info={'checkpoint': checkpoint, 'step': step, 'sample_rate': tok.sample_rate},
    )
  except ValueError as e:
    raise ValueError(f'--{e}') from None
  index = index_store.Index.open_or_create(index_dir, st, shard_tokens=shard_tokens)
  logging.info(
    'indexing %d item(s) from %s into %s (%s strings)', len(items), input_path, index_dir, kind
  )
  summary = build.index_items(index, st, items, progress=progress)
  summary['index_dir'] = os.path.abspath(index_dir)
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  summary = run(
    FLAGS.checkpoint,
    FLAGS.input,
    FLAGS.index,
    hop_seconds=FLAGS.hop_seconds,
    kind=FLAGS.tokenizer,
    eos_bias=FLAGS.eos_bias,
    batch_size=FLAGS.batch_size,
    shard_tokens=FLAGS.shard_tokens,
  )
  print(json.dumps(summary))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
