"""Search an archive index for a spoken query (query by example).

    python -m pairalign_jax.search --index=DIR --query=AUDIO [--start=1.2 --end=1.9] \
        [--top_k=10] [--output=hits.json]

The query (0.3-3 s of speech: the file, or its region `--start`..`--end` in seconds, which is
tokenized in the 3 s window around it, as the archive was) is tokenized by the tokenizer that
wrote the index (its checkpoint is recorded in the index; `--checkpoint`
overrides the path, e.g. after moving the run) and matched against every window by subsequence
edit distance (`archive/index_store.py`). Hits, best first, are printed as a table and written
to `--output` as JSON: `{"query": {...}, "hits": [{"file", "start", "end", "score",
"distance"}, ...]}` with times in seconds from the start of the file and `score = 1 - distance
/ query tokens` (higher is better).

Give the query context: a clip much shorter than the 3 s window (under 1.5 s) passed alone,
without `--start/--end`, is tokenized zero-padded to 3 s, and the front end normalizes over
that padded segment, so it matches poorly (a warning says so, once). Pass the longer recording
it was cut from (at least 3 s) with `--start/--end` around the query instead.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from absl import app
from absl import flags
from absl import logging

from pairalign_jax import tokenize as tokenize_cli
from pairalign_jax.archive import index_store
from pairalign_jax.archive import tokenizers as tokenizers_lib
from pairalign_jax.data import audio_io

FLAGS = flags.FLAGS


def _define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  fv = dict(flag_values=flag_values)
  flags.DEFINE_string('index', None, 'Index folder (python -m pairalign_jax.index).', **fv)
  flags.DEFINE_string(
    'query',
    None,
    'Query audio file. A clip much shorter than the 3 s window, without --start/--end, is '
    'tokenized zero-padded and matches poorly: give a longer recording (>= 3 s) and mark the '
    'query with --start/--end so that it is tokenized in its context.',
    **fv,
  )
  flags.DEFINE_float('start', None, 'Query region start, seconds (default: the file start).', **fv)
  flags.DEFINE_float('end', None, 'Query region end, seconds (default: the file end).', **fv)
  flags.DEFINE_integer('top_k', 10, 'Hits to return.', **fv)
  flags.DEFINE_string('output', None, 'Write the hits to this JSON file.', **fv)
  flags.DEFINE_string('checkpoint', None, 'Override the checkpoint recorded in the index.', **fv)
  flags.mark_flags_as_required(['index', 'query'], **fv)


def run(
  index_dir: str,
  query: str,
  *,
  start: Optional[float] = None,
  end: Optional[float] = None,
  top_k: int = 10,
  output: Optional[str] = None,
  checkpoint: Optional[str] = None,
) -> dict[str, Any]:
  """Searches the index for the query file (region); returns `{'query', 'hits'}`."""
  if top_k < 1:
    raise ValueError(f'--top_k must be >= 1, got {top_k}')
  if start is not None and end is not None and not end > start:
    raise ValueError(f'--end ({end}) must be after --start ({start})')
  if output:
    tokenize_cli.check_output(output)  # before the model is loaded, not after the search
  index = index_store.Index.open(index_dir)
  if checkpoint:
    index.manifest['tokenizer']['checkpoint'] = os.path.abspath(checkpoint)
  if start is None and end is None:
    wave, sr = audio_io.read_audio(query)  # BadAudioError names the file and reason
    tokens = index.query_tokens(wave, sr)
    seconds = len(wave) / sr
  else:  # the region in its context window: read only that window
    info = audio_io.audio_info(query)
    duration = info['frames'] / info['sample_rate'] if info else float('inf')
    lo, hi = float(start or 0.0), duration if end is None else float(end)
    if not 0 <= lo < hi <= duration:
      raise ValueError(f'--start={start}, --end={end}: not a region of {query} ({duration:.2f} s)')
    window = index.manifest['window_seconds']
    c0, c1 = tokenizers_lib.context_span(lo, hi, duration, window)
    wave, sr = audio_io.read_audio(query, c0, c1)
    tokens = index.query_tokens(wave, sr, start=lo - c0, end=min(hi - c0, len(wave) / sr))
    seconds = hi - lo
  hits = index.search_tokens(tokens, top_k) if tokens else []
  if not tokens:
    logging.warning('the query was tokenized to an empty string: no hits')
  result = {
    'query': {
      'path': os.path.abspath(query),
      'start': start,
      'end': end,
      'seconds': seconds,
      'tokens': tokens,
    },
    'hits': [h.to_dict() for h in hits],
  }
  if output:
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=1)
    logging.info('wrote %d hits to %s', len(hits), output)
  return result


def format_hits(result: dict[str, Any]) -> str:
  """The hits as a plain-text table."""
  q = result['query']
  lines = [
    f'query {q["path"]} ({q["seconds"]:.2f} s, {len(q["tokens"])} tokens): '
    f'{len(result["hits"])} hits',
    f'{"rank":>4}  {"score":>6}  {"start":>9}  {"end":>9}  file',
  ]
  for i, h in enumerate(result['hits'], 1):
    lines.append(f'{i:>4}  {h["score"]:>6.3f}  {h["start"]:>9.2f}  {h["end"]:>9.2f}  {h["file"]}')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  result = run(
    FLAGS.index,
    FLAGS.query,
    start=FLAGS.start,
    end=FLAGS.end,
    top_k=FLAGS.top_k,
    output=FLAGS.output,
    checkpoint=FLAGS.checkpoint,
  )
  print(format_hits(result))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
