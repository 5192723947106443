"""Spoken term detection: PairAlign, its VQ stage and MFCC k-means through the same index.

    python -m pairalign_jax.evaluate_search --checkpoint=runs/demo [--outdir=DIR] \
        [--split=test] [--archive_speakers=4] [--num_words=60] [--num_phrases=40] [--per_term]
    python -m pairalign_jax.evaluate_search --from_report=DIR/search_report.json [--outdir=DIR]

On the synthetic corpus' held-out split (`--split`: 'test' by default, or 'validation'; the
checkpoint's config, or `--config`'s data settings) long recordings are built from held-out
utterances and single words and two-word phrases spoken by other held-out speakers are the
queries (`archive/std_corpus.py`), each tokenized in its 3 s context (`--noquery_context`:
the cut clip alone). Each tokenizer's strings are indexed and searched by the same
code (`archive/std_eval.py`): PairAlign (the trained EOS bias), its VQ stage, and the MFCC k-means
baseline (`evaluation.baselines.MFCC_RECIPES['mfcc_kmeans']`, fitted on training-split segments
as `python -m pairalign_jax.evaluate` fits it). Writes `search_report.json` (compact:
`archive/std_report.py`), `search_report.md`, `search_pr_curve.png` and `search_example.png`
into the workdir (or `--outdir`; `--per_term`: also `search_per_term.json`, every term's figures
and top hits), and prints the headline as one JSON line. The corpus size flags
(`--archive_speakers`, `--num_sentences`, `--num_words`, `--num_phrases`) and `--speed_hours`
(the synthetic archive timed for search speed) shrink the run.

`--from_report` re-writes the report files from an earlier `search_report.json` without
re-evaluating (the figures are copied; `--checkpoint` overrides the checkpoint it names): the
example plot rebuilds the corpus from the report's settings and indexes it with PairAlign again.
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any, Optional

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from pairalign_jax import tokenize as tokenize_cli
from pairalign_jax.archive import build
from pairalign_jax.archive import index_store
from pairalign_jax.archive import std_corpus
from pairalign_jax.archive import std_eval
from pairalign_jax.archive import std_report
from pairalign_jax.archive import tokenizers as tokenizers_lib

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string('checkpoint', None, 'Workdir or checkpoint step directory.')
  flags.DEFINE_string(
    'outdir',
    None,
    "Where to write the report (default: the workdir; with --from_report: that report's folder).",
  )
  flags.DEFINE_string(
    'from_report',
    None,
    'Re-write the report files from this search_report.json (no re-evaluation).',
  )
  flags.DEFINE_bool(
    'per_term', False, "Also write search_per_term.json (every term's figures and top hits)."
  )
  config_flags.DEFINE_config_file('config', None, 'Optional config for the data settings.')
  flags.DEFINE_enum('split', 'test', ['test', 'validation'], 'Held-out split of the corpus.')
  flags.DEFINE_integer('archive_speakers', 4, 'Speakers in the archive; the rest read queries.')
  flags.DEFINE_integer('num_sentences', -1, 'Sentences per archive speaker (-1 = all).')
  flags.DEFINE_integer('num_words', 60, 'Single-word terms.')
  flags.DEFINE_integer('num_phrases', 40, 'Two-word phrase terms.')
  flags.DEFINE_float('hop_seconds', 1.0, 'Hop between consecutive windows.')
  flags.DEFINE_float('speed_hours', 10.0, 'Hours of the synthetic archive timed for speed.')
  flags.DEFINE_list('tokenizers', ['pairalign', 'vq', 'mfcc_kmeans'], 'Which tokenizers.')
  flags.DEFINE_integer('seed', 0, 'Seed of the terms, queries and bootstrap.')
  flags.DEFINE_bool(
    'query_context', True, 'Tokenize each query region in its 3 s context (else the clip alone).'
  )
  flags.register_multi_flags_validator(
    ['checkpoint', 'from_report'],
    lambda d: d['checkpoint'] is not None or d['from_report'] is not None,
    message='--checkpoint is required (unless --from_report)',
  )


TOKENIZERS = ('pairalign', 'vq', 'mfcc_kmeans')


def machine() -> str:
  model = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      model = next(
        (line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), model
      )
  except OSError:
    pass
  return f'{model}, {len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f}'


def evaluate_search(
  checkpoint: str,
  *,
  outdir: Optional[str] = None,
  config: Optional[ml_collections.ConfigDict] = None,
  split: str = 'test',
  archive_speakers: int = 4,
  num_sentences: int = -1,
  num_words: int = 60,
  num_phrases: int = 40,
  hop_seconds: float = 1.0,
  speed_hours: float = 10.0,
  tokenizers: tuple[str, ...] = TOKENIZERS,
  seed: int = 0,
  query_context: bool = True,
  speed_reps: int = 3,
  per_term: bool = False,
) -> dict[str, Any]:
  """Runs the evaluation (module docstring); writes and returns the report."""
  from pairalign_jax import checkpointing
  from pairalign_jax import evaluate as evaluate_lib
  from pairalign_jax.evaluation import baselines

  unknown = set(tokenizers) - set(TOKENIZERS)
  if unknown:
    raise ValueError(f'--tokenizers: unknown {sorted(unknown)}; choose from {TOKENIZERS}')
  t_start = time.time()
  path, step, cfg = _checkpoint_config(checkpoint, config)
  outdir = outdir or checkpointing.workdir_of(path) or path
  tokenize_cli.check_output_folder(outdir)  # the report is written last: checked first
  corpus = _corpus(
    cfg,
    split,
    archive_speakers=archive_speakers,
    num_sentences=None if num_sentences < 0 else num_sentences,
    num_words=num_words,
    num_phrases=num_phrases,
    seed=seed,
  )
  tok = _tokenizer(path, step, cfg)
  info = {'checkpoint': path, 'step': step, 'sample_rate': tok.sample_rate}
  makers = {
    'pairalign': lambda: tokenizers_lib.from_tokenizer(
      tok, kind='pairalign', hop_seconds=hop_seconds, info=info
    ),
    'vq': lambda: tokenizers_lib.from_tokenizer(tok, kind='vq', hop_seconds=hop_seconds, info=info),
  }

  def mfcc():
    batches = evaluate_lib.training_segments(cfg)
    kmeans = baselines.fit_mfcc_kmeans(
      batches,
      sample_rate=tok.sample_rate,
      seed=int(cfg.seed),
      max_frames=int(cfg.eval.kmeans_max_frames),
      **baselines.MFCC_RECIPES['mfcc_kmeans'],
    )
    return tokenizers_lib.from_segment_fn(
      'mfcc_kmeans',
      kmeans,
      sample_rate=tok.sample_rate,
      window_seconds=tok.segment_samples / tok.sample_rate,
      hop_seconds=hop_seconds,
      info={'recipe': baselines.MFCC_RECIPES['mfcc_kmeans']},
    )

  makers['mfcc_kmeans'] = mfcc
  report: dict[str, Any] = {
    'checkpoint': {'path': path, 'step': step},
    'corpus': dict(
      corpus.settings,
      archive_seconds=corpus.archive_seconds,
      recordings=len(corpus.recordings),
      num_terms=len(corpus.terms),
      occurrences=sum(len(t.occurrences) for t in corpus.terms),
      window_seconds=tok.segment_samples / tok.sample_rate,
      hop_seconds=hop_seconds,
      query_context=query_context,
    ),
    'machine': machine(),
    'tokenizers': {},
  }
  for name in [n for n in TOKENIZERS if n in tokenizers]:
    logging.info('spoken term detection with %s', name)
    report['tokenizers'][name] = std_eval.evaluate_tokenizer(
      makers[name](),
      corpus,
      seed=seed,
      speed_hours=speed_hours,
      speed_reps=speed_reps,
      query_context=query_context,
    )
    r = report['tokenizers'][name]
    logging.info(
      '%s: MAP %.3f, P@10 %.3f, MTWV %.3f, %.0f index tokens / h, %.0f archive h / s',
      name,
      r['map'],
      r['p_at_10'],
      r['mtwv'],
      r['index_tokens_per_hour'],
      r['archive_hours_per_second'],
    )
  report['comparisons'] = {
    other: std_eval.compare(report, 'pairalign', other, seed)
    for other in report['tokenizers']
    if other != 'pairalign' and 'pairalign' in report['tokenizers']
  }
  report['goals'] = std_eval.goals(report)
  report['eval_seconds'] = time.time() - t_start
  std_report.write_report(report, outdir, corpus, per_term=per_term)
  logging.info('search report written to %s', os.path.join(outdir, 'search_report.md'))
  return report


def _checkpoint_config(checkpoint: str, config: Optional[ml_collections.ConfigDict]):
  """(absolute path, step, config with `config`'s data settings) of a checkpoint."""
  from pairalign_jax import checkpointing

  path = os.path.abspath(checkpoint)
  step = int(checkpointing.step_dir(path).name)
  cfg = ml_collections.ConfigDict(checkpointing.read_config(path, step).to_dict())
  if config is not None:
    cfg.data = ml_collections.ConfigDict(config.data.to_dict())
  if cfg.data.source != 'synthetic':
    raise ValueError(
      f'evaluate_search needs the synthetic corpus (word times), got config.data.source='
      f'{cfg.data.source!r}'
    )
  return path, step, cfg


def _corpus(cfg: ml_collections.ConfigDict, split: str, **settings) -> std_corpus.StdCorpus:
  from pairalign_jax.data import pipeline

  corpus = std_corpus.build_std_corpus(pipeline.make_source(cfg, split), **settings)
  logging.info(
    'STD corpus: %.0f s archive in %d recordings, %d terms',
    corpus.archive_seconds,
    len(corpus.recordings),
    len(corpus.terms),
  )
  return corpus


def _tokenizer(path: str, step: int, cfg: ml_collections.ConfigDict):
  from pairalign_jax.tokenizer import Tokenizer

  return Tokenizer.from_checkpoint(path, step=step, batch_size=int(cfg.eval.batch_size))


def rewrite_report(
  report_path: str,
  *,
  outdir: Optional[str] = None,
  checkpoint: Optional[str] = None,
  config: Optional[ml_collections.ConfigDict] = None,
  per_term: bool = False,
) -> dict[str, Any]:
  """Re-writes the report files of an earlier run from its `search_report.json` (module
  docstring); returns the report. `per_term` needs a report that still has the per-term records
  with their hits (an older, full search_report.json)."""
  with open(report_path, encoding='utf-8') as f:
    report = json.load(f)
  if per_term:
    std_report.per_term_records(report)  # fails early when the report has no per-term hits
  outdir = outdir or os.path.dirname(os.path.abspath(report_path))
  corpus = None
  if 'pairalign' in report['tokenizers']:  # the example plot: corpus and PairAlign index again
    c = report['corpus']
    path, step, cfg = _checkpoint_config(checkpoint or report['checkpoint']['path'], config)
    if step != report['checkpoint']['step']:
      raise ValueError(
        f'{path} is step {step}, the report was written by step {report["checkpoint"]["step"]}'
      )
    keys = ('archive_speakers', 'num_sentences', 'num_words', 'num_phrases', 'seed', 'margin')
    corpus = _corpus(
      cfg, c['split'], min_query_seconds=c['min_query_seconds'], **{k: c[k] for k in keys}
    )
    if len(corpus.terms) != c['num_terms'] or corpus.archive_seconds != c['archive_seconds']:
      raise ValueError(f'the corpus rebuilt from {report_path} differs from the one it reports')
    st = tokenizers_lib.from_tokenizer(
      _tokenizer(path, step, cfg), kind='pairalign', hop_seconds=c['hop_seconds']
    )
    index = index_store.Index.for_tokenizer(st)
    build.index_waveforms(index, st, [(r.name, r.wave, r.sample_rate) for r in corpus.recordings])
    report['tokenizers']['pairalign']['_index'] = index
  std_report.write_report(report, outdir, corpus, per_term=per_term)
  logging.info('search report re-written to %s', os.path.join(outdir, 'search_report.md'))
  return report


def headline(report: dict[str, Any]) -> dict[str, Any]:
  keys = ('map', 'p_at_10', 'mtwv', 'index_tokens_per_hour', 'search_seconds_per_query_hour')
  return {n: {k: r[k] for k in keys} for n, r in report['tokenizers'].items()}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  if FLAGS.from_report:
    report = rewrite_report(
      FLAGS.from_report,
      outdir=FLAGS.outdir,
      checkpoint=FLAGS.checkpoint,
      config=FLAGS.config,
      per_term=FLAGS.per_term,
    )
    print(json.dumps(headline(report)))
    return
  report = evaluate_search(
    FLAGS.checkpoint,
    outdir=FLAGS.outdir,
    config=FLAGS.config,
    split=FLAGS.split,
    archive_speakers=FLAGS.archive_speakers,
    num_sentences=FLAGS.num_sentences,
    num_words=FLAGS.num_words,
    num_phrases=FLAGS.num_phrases,
    hop_seconds=FLAGS.hop_seconds,
    speed_hours=FLAGS.speed_hours,
    tokenizers=tuple(FLAGS.tokenizers),
    seed=FLAGS.seed,
    query_context=FLAGS.query_context,
    per_term=FLAGS.per_term,
  )
  print(json.dumps(headline(report)))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
