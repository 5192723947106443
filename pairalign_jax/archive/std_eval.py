"""Spoken term detection with several tokenizers through the same index and search code.

    result = evaluate_tokenizer(string_tokenizer, corpus)   # one tokenizer's figures
    report = {'tokenizers': {name: result, ...}}; compare(report, 'pairalign', 'vq')

For one `StringTokenizer` and an `std_corpus.StdCorpus`:
  * the archive recordings are indexed in memory (`build.index_waveforms`, timed after a short
    compiling call: `index_build_realtime_factor` = archive seconds / wall seconds;
    `tokenize_long_realtime_factor` = the same for the tokenizer's windows alone on the first
    recording, timed after the build: their ratio is the indexing overhead);
  * each term's query region is tokenized in its 3 s context (`tokenizers.region_tokens`;
    `query_context=False`: the cut clip alone, `StringTokenizer.clip`) and searched with
    `top_k=None` (every window's best match, merged); a query tokenized to an empty string has no
    hits (AP 0, every occurrence missed);
  * the hits are labelled against the term's occurrences and scored (`std_metrics.py`: MAP,
    P@10, MTWV, ATWV with T = archive seconds); `map_any_overlap` (a diagnostic: MAP when any
    overlap counts) separates ranking from timing;
  * search time per query is measured with `top_k=10` on this archive
    (`search_seconds_per_query_hour_eval`) and on a synthetic 10 h archive of strings at the
    tokenizer's measured window length (`speed.measure_search_speed`:
    `search_seconds_per_query_hour`, `archive_hours_per_second`, ratios to direct rapidfuzz
    calls);
  * `index_tokens_per_hour` counts every stored token (windows overlap: with a 1 s hop each
    second is in three windows).
MAP has a 95% bootstrap interval over terms (`evaluation.bootstrap.item_weights`); `compare`
gives paired intervals for MAP differences and the index-token ratio.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from absl import logging
import numpy as np

from pairalign_jax.archive import build
from pairalign_jax.archive import index_store
from pairalign_jax.archive import speed
from pairalign_jax.archive import std_metrics
from pairalign_jax.archive import tokenizers as tokenizers_lib
from pairalign_jax.archive.std_corpus import StdCorpus
from pairalign_jax.evaluation import bootstrap

SPEED_TOP_K = 10
CURVE_POINTS = 400  # points kept in memory of the curves (the plot; the JSON keeps fewer)


def thin(*arrays: np.ndarray, points: int = CURVE_POINTS) -> list[list[float]]:
  """At most `points` evenly spaced entries (the last one kept) of equally long arrays."""
  n = len(arrays[0])
  keep = np.unique(np.linspace(0, n - 1, min(n, points)).round().astype(int)) if n else []
  return [np.asarray(a)[keep].tolist() for a in arrays]


def evaluate_tokenizer(
  st: tokenizers_lib.StringTokenizer,
  corpus: StdCorpus,
  *,
  seed: int = 0,
  speed_hours: float = 10.0,
  speed_reps: int = 3,
  query_context: bool = True,
) -> dict[str, Any]:
  """Every figure of one tokenizer (module docstring), plus what the plots need."""
  index = index_store.Index.for_tokenizer(st)
  first = corpus.recordings[0]
  st.windows(first.wave[: 4 * first.sample_rate], first.sample_rate)  # compiles: not timed
  build_s = build.index_waveforms(
    index, st, [(r.name, r.wave, r.sample_rate) for r in corpus.recordings]
  )
  t0 = time.perf_counter()
  st.windows(first.wave, first.sample_rate)
  tokenize_long_rtf = first.seconds / (time.perf_counter() - t0)
  index.arrays()
  logging.info(
    '%s: indexed %.0f s of audio in %.1f s (%d windows, %d tokens)',
    st.name,
    corpus.archive_seconds,
    build_s,
    index.num_windows,
    index.num_tokens,
  )
  aps, aps_any, p10s, q_lens, search_s = [], [], [], [], []
  scores, correct, term_ids, num_true, per_term = [], [], [], [], []
  for t, term in enumerate(corpus.terms):
    if query_context:
      lo, hi = term.query_span
      tokens, _ = tokenizers_lib.region_tokens(st, term.context_wave, corpus.sample_rate, lo, hi)
    else:
      tokens, _ = st.clip(term.query_wave, corpus.sample_rate)
    q_lens.append(len(tokens))
    hits = index.search_tokens(tokens, None) if tokens else []
    if tokens:
      t1 = time.perf_counter()
      index.search_tokens(tokens, SPEED_TOP_K)
      search_s.append(time.perf_counter() - t1)
    labels = std_metrics.label_hits([(h.file, h.start, h.end) for h in hits], term.occurrences)
    n_true = len(term.occurrences)
    ap = std_metrics.average_precision(labels, n_true)
    loose = std_metrics.label_hits(
      [(h.file, h.start, h.end) for h in hits], term.occurrences, min_overlap=0.0
    )
    aps_any.append(std_metrics.average_precision(loose, n_true))
    p10 = std_metrics.precision_at(labels, 10)
    aps.append(ap)
    p10s.append(p10)
    scores += [h.score for h in hits]
    correct += labels.tolist()
    term_ids += [t] * len(hits)
    num_true.append(n_true)
    per_term.append(
      {
        'term': term.text,
        'query_tokens': len(tokens),
        'num_true': n_true,
        'found': int(labels.sum()),
        'ap': ap,
        'p_at_10': p10,
        'top_hits': [h.to_dict() | {'correct': bool(c)} for h, c in zip(hits[:5], labels[:5])],
      }
    )
  trials = corpus.archive_seconds
  curve = std_metrics.twv_curve(scores, correct, term_ids, num_true, trials)
  mtwv, threshold = curve.maximum()
  atwv = std_metrics.atwv_two_fold(scores, correct, term_ids, num_true, trials)
  precision, recall = std_metrics.precision_recall(scores, correct, int(np.sum(num_true)))
  weights = bootstrap.item_weights(len(aps), seed=seed)
  map_samples = weights @ np.asarray(aps) / weights.sum(1)
  arrays = index.arrays()
  tokens_per_window = float(arrays.tokens.size / max(arrays.window_file.size, 1))
  mean_q = float(np.mean([q for q in q_lens if q] or [1]))
  figures = speed.measure_search_speed(
    tokens_per_window,
    max(1, int(round(mean_q))),
    hours=speed_hours,
    window_seconds=st.window_seconds,
    hop_seconds=st.hop_seconds,
    vocab=int(arrays.tokens.max(initial=0)) + 1,
    reps=speed_reps,
    seed=seed,
  )
  archive_hours = corpus.archive_seconds / 3600
  return {
    'map': float(np.mean(aps)),
    'map_ci95': [float(x) for x in np.percentile(map_samples, [2.5, 97.5])],
    'p_at_10': float(np.mean(p10s)),
    'map_any_overlap': float(np.mean(aps_any)),
    'mtwv': mtwv,
    'mtwv_threshold': threshold,
    'atwv': atwv['atwv'],
    'atwv_thresholds': atwv['thresholds'],
    'index_tokens_per_hour': index.tokens_per_hour(),
    'index_tokens': index.num_tokens,
    'index_windows': index.num_windows,
    'tokens_per_window': tokens_per_window,
    'search_seconds_per_query_hour': figures['search_seconds_per_query_hour'],
    'archive_hours_per_second': figures['archive_hours_per_second'],
    'search_seconds_per_query_hour_eval': float(np.median(search_s)) / archive_hours
    if search_s
    else None,
    'search_speed': figures,
    'index_build_seconds': build_s,
    'index_build_realtime_factor': corpus.archive_seconds / build_s,
    'tokenize_long_realtime_factor': tokenize_long_rtf,
    'query_tokens_mean': float(np.mean(q_lens)),
    'empty_queries': int(sum(q == 0 for q in q_lens)),
    'num_terms': len(aps),
    'per_term': per_term,
    'ap': [float(x) for x in aps],
    'pr_curve': dict(zip(('precision', 'recall'), thin(precision, recall))),
    'twv_curve': dict(zip(('thresholds', 'twv'), thin(curve.thresholds, curve.twv))),
    '_index': index,  # for the plots; dropped from the JSON
  }


def compare(report: dict[str, Any], a: str, b: str, seed: int = 0) -> Optional[dict[str, Any]]:
  """`a` against `b`: index-token ratio, MAP difference with a paired bootstrap interval."""
  toks = report['tokenizers']
  if a not in toks or b not in toks:
    return None
  x, y = np.asarray(toks[a]['ap']), np.asarray(toks[b]['ap'])
  weights = bootstrap.item_weights(x.size, seed=seed)
  diff = (weights @ x - weights @ y) / weights.sum(1)
  return {
    'index_tokens_ratio': toks[a]['index_tokens'] / toks[b]['index_tokens'],
    'map_difference': float(x.mean() - y.mean()),
    'map_difference_ci95': [float(v) for v in np.percentile(diff, [2.5, 97.5])],
  }


def goals(report: dict[str, Any]) -> dict[str, Any]:
  """The issue's goals, judged on the report's figures."""
  toks = report['tokenizers']
  p = toks.get('pairalign')
  out: dict[str, Any] = {}
  if p is None:
    return out
  if 'vq' in toks:
    ratio = p['index_tokens'] / toks['vq']['index_tokens']
    out['index_tokens_vs_vq'] = {'value': ratio, 'goal': '<= 0.45', 'met': ratio <= 0.45}
    out['map_vs_vq'] = {
      'value': p['map'] - toks['vq']['map'],
      'goal': '>= 0',
      'met': p['map'] >= toks['vq']['map'],
    }
  if 'mfcc_kmeans' in toks:
    out['map_vs_mfcc_kmeans'] = {
      'value': p['map'] - toks['mfcc_kmeans']['map'],
      'goal': '>= 0',
      'met': p['map'] >= toks['mfcc_kmeans']['map'],
    }
  out['archive_hours_per_second'] = {
    'value': p['archive_hours_per_second'],
    'goal': '>= 100',
    'met': p['archive_hours_per_second'] >= 100,
  }
  ratio = p['index_build_realtime_factor'] / p['tokenize_long_realtime_factor']
  out['index_build_vs_tokenizer_rtf'] = {
    'value': ratio,
    'goal': '>= 1 (noise: ~0.9)',
    'met': ratio >= 0.9,
  }
  return out
