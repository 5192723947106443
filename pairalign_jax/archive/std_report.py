"""The spoken-term-detection report: search_report.json, search_report.md and two plots.

    write_report(report, outdir, corpus)                  # + search_per_term.json: per_term=True

`search_report.json` (small: `compact`) holds `tokenizers.{name}.{map, map_ci95, p_at_10, mtwv,
atwv, index_tokens_per_hour, search_seconds_per_query_hour, archive_hours_per_second, ...}` (keys
documented in `std_eval.evaluate_tokenizer`), `comparisons`, `goals`, `corpus`, `machine`. Per
tokenizer, `ap` keeps every term's AP (what `std_eval.compare` needs), `per_term` is stored as
columns of scalars (`term`, `query_tokens`, `num_true`, `found`, `p_at_10`, `top_hit_correct`:
whether the best hit is a true occurrence) and `pr_curve` / `twv_curve` are thinned to
`JSON_CURVE_POINTS` points; lists of numbers are written on one line. `search_per_term.json`
(only with `per_term=True`, `--per_term`) holds every term's record with its top 5 hits.
Plots (matplotlib object API, Agg canvas): `search_pr_curve.png` (pooled precision-recall of
every tokenizer's hits ranked by score) and `search_example.png` (one query's spectrogram and the
archive around PairAlign's top hits, the hit span shaded, true occurrences marked).
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import librosa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
from PIL import Image

from pairalign_jax.archive import std_eval

NAMES = {'pairalign': 'PairAlign', 'vq': 'VQ', 'mfcc_kmeans': 'MFCC k-means'}
JSON_CURVE_POINTS = 50  # points kept of each curve in search_report.json
PER_TERM_COLUMNS = ('term', 'query_tokens', 'num_true', 'found', 'p_at_10')
REPORT_JSON = 'search_report.json'
PER_TERM_JSON = 'search_per_term.json'
EXAMPLE_DPI = 72  # search_example.png: 576 px wide, about 100 KB


def _jsonable(x):
  if isinstance(x, dict):
    return {k: _jsonable(v) for k, v in x.items() if not str(k).startswith('_')}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, float) and not np.isfinite(x):
    return None
  return x


def _dumps(x, level: int = 0) -> str:
  """JSON with one-space indentation, except that lists of scalars stay on one line."""
  pad = ' ' * (level + 1)
  if isinstance(x, dict) and x:
    items = [f'{pad}{json.dumps(str(k))}: {_dumps(v, level + 1)}' for k, v in x.items()]
    return '{\n' + ',\n'.join(items) + '\n' + ' ' * level + '}'
  if isinstance(x, list) and any(isinstance(v, (dict, list)) for v in x):
    items = [pad + _dumps(v, level + 1) for v in x]
    return '[\n' + ',\n'.join(items) + '\n' + ' ' * level + ']'
  return json.dumps(x)


def top_hit_correct(r: dict[str, Any]) -> list[bool]:
  """Per term, whether the tokenizer's best hit is a true occurrence (either `per_term` form)."""
  per_term = r['per_term']
  if isinstance(per_term, dict):
    return [bool(c) for c in per_term['top_hit_correct']]
  return [bool(p['top_hits'] and p['top_hits'][0]['correct']) for p in per_term]


def _thin_curve(curve: dict[str, list[float]], points: int) -> dict[str, list[float]]:
  return dict(zip(curve, std_eval.thin(*curve.values(), points=points)))


def compact(report: dict[str, Any], points: int = JSON_CURVE_POINTS) -> dict[str, Any]:
  """The JSON-ready report of search_report.json (module docstring)."""
  out = dict(report, tokenizers={})
  for name, r in report['tokenizers'].items():
    r = dict(r)
    per_term = r.get('per_term')
    if isinstance(per_term, list):
      cols = {k: [p[k] for p in per_term] for k in PER_TERM_COLUMNS}
      r['per_term'] = dict(cols, top_hit_correct=top_hit_correct(r))
    for key in ('pr_curve', 'twv_curve'):
      if key in r:
        r[key] = _thin_curve(r[key], points)
    out['tokenizers'][name] = r
  return _jsonable(out)


def per_term_records(report: dict[str, Any]) -> dict[str, Any]:
  """search_per_term.json: each tokenizer's per-term records (with their top hits)."""
  toks = report['tokenizers']
  missing = [n for n, r in toks.items() if not isinstance(r.get('per_term'), list)]
  if missing:
    raise ValueError(
      f'per-term records with hits of {missing} are not in this report (a compact '
      f'{REPORT_JSON} keeps columns only): re-run the evaluation with --per_term'
    )
  return _jsonable(
    {'checkpoint': report['checkpoint'], 'tokenizers': {n: r['per_term'] for n, r in toks.items()}}
  )


def _fmt(x, spec='.3f'):
  return '–' if x is None else format(x, spec)


def markdown(report: dict[str, Any]) -> str:
  c = report['corpus']
  toks = report['tokenizers']
  lines = [
    '# Spoken term detection',
    '',
    f'Checkpoint `{report["checkpoint"]["path"]}` (step {report["checkpoint"]["step"]}); '
    f'synthetic {c["split"]!r} split: archive of {c["archive_speakers"]} speakers x '
    f'{c["num_sentences"]} sentences ({c["archive_seconds"] / 60:.1f} min in '
    f'{c["recordings"]} recordings), {c["num_terms"]} terms ({c["num_words"]} words, '
    f'{c["num_phrases"]} two-word phrases, {c["occurrences"]} occurrences), each spoken by one '
    f'of {c["query_speakers"]} other speakers. Windows of {c["window_seconds"]:g} s every '
    f'{c["hop_seconds"]:g} s; queries tokenized '
    + ('in their 3 s context' if c.get('query_context', True) else 'as clips alone')
    + '; a hit counts when it covers >= 50% of an occurrence; TWV with '
    f'beta = 999.9 and one trial per archive second. Machine: {report["machine"]}.',
    '',
    '| tokenizer | MAP | MAP 95% interval | P@10 | MTWV | ATWV | index tokens / h | '
    'query tokens | search s / query / archive h | archive h / s | MAP, any overlap |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ]
  for name, r in toks.items():
    lo, hi = r['map_ci95']
    lines.append(
      f'| {NAMES.get(name, name)} | {r["map"]:.3f} | [{lo:.3f}, {hi:.3f}] | '
      f'{r["p_at_10"]:.3f} | {r["mtwv"]:.3f} | {_fmt(r["atwv"])} | '
      f'{r["index_tokens_per_hour"]:,.0f} | {r["query_tokens_mean"]:.1f} | '
      f'{r["search_seconds_per_query_hour"]:.4f} | {r["archive_hours_per_second"]:.0f} | '
      f'{r["map_any_overlap"]:.3f} |'
    )
  lines += [
    '',
    "Search speed: a synthetic 10 h archive of random strings at each tokenizer's measured "
    'window length, queries of its mean query length (`archive/speed.py`); ratios to direct '
    "rapidfuzz calls on the same strings (> 1: the project's search is faster):",
    '',
    '| tokenizer | tokens / window | s / query (10 h) | vs cdist Levenshtein | '
    'vs cdist partial_ratio | s / query / h (this archive) | index build x real time | '
    'tokenize_long x real time |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ]
  for name, r in toks.items():
    s = r['search_speed']
    lines.append(
      f'| {NAMES.get(name, name)} | {r["tokens_per_window"]:.1f} | '
      f'{s["seconds_per_query"]:.3f} | {s["ratio_vs_rapidfuzz_levenshtein"]:.2f} | '
      f'{_fmt(s.get("ratio_vs_rapidfuzz_partial_ratio"), ".2f")} | '
      f'{_fmt(r["search_seconds_per_query_hour_eval"], ".4f")} | '
      f'{r["index_build_realtime_factor"]:.1f} | {r["tokenize_long_realtime_factor"]:.1f} |'
    )
  if report.get('comparisons'):
    lines += [
      '',
      'PairAlign against each (95% paired bootstrap intervals over terms):',
      '',
      '| against | index tokens ratio | MAP difference | interval |',
      '| --- | --- | --- | --- |',
    ]
    for name, cmp in report['comparisons'].items():
      lo, hi = cmp['map_difference_ci95']
      lines.append(
        f'| {NAMES.get(name, name)} | {cmp["index_tokens_ratio"]:.3f} | '
        f'{cmp["map_difference"]:+.3f} | [{lo:+.3f}, {hi:+.3f}] |'
      )
  if report.get('goals'):
    lines += ['', '| goal | value | target | met |', '| --- | --- | --- | --- |']
    for name, g in report['goals'].items():
      lines.append(f'| {name} | {g["value"]:.3f} | {g["goal"]} | {"yes" if g["met"] else "no"} |')
  lines += ['', '![precision-recall](search_pr_curve.png)', '', '![example](search_example.png)']
  return '\n'.join(lines) + '\n'


def plot_pr(report: dict[str, Any], path: str) -> None:
  fig = Figure(figsize=(5.5, 4.5))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  for name, r in report['tokenizers'].items():
    pr = r['pr_curve']
    ax.plot(pr['recall'], pr['precision'], label=f'{NAMES.get(name, name)} (MAP {r["map"]:.2f})')
  ax.set_xlabel('recall (all terms pooled)')
  ax.set_ylabel('precision')
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.02)
  ax.grid(alpha=0.3)
  ax.legend()
  ax.set_title('hits ranked by score, all terms')
  fig.tight_layout()
  fig.savefig(path)


def _spec(ax, wave, sr, t0=0.0):
  mel = librosa.power_to_db(
    librosa.feature.melspectrogram(y=wave, sr=sr, n_fft=400, hop_length=160, n_mels=64),
    ref=np.max,
  )
  ax.imshow(
    mel,
    origin='lower',
    aspect='auto',
    cmap='magma',
    extent=(t0, t0 + wave.shape[0] / sr, 0, mel.shape[0]),
    interpolation='nearest',  # flat mel cells: a small PNG
  )
  ax.set_yticks([])


def plot_example(report: dict[str, Any], corpus, path: str, tokenizer: str = 'pairalign') -> None:
  """One term's query and the archive around the tokenizer's top 3 hits."""
  r = report['tokenizers'][tokenizer]
  index = r['_index']
  terms = corpus.terms
  # The example: the longest term whose best hit is a true occurrence (the first such), else 0.
  found = [i for i, c in enumerate(top_hit_correct(r)) if c]
  t = max(found, key=lambda i: (len(terms[i].text), -i)) if found else 0
  term = terms[t]
  lo, hi = term.query_span
  hits = index.search(term.context_wave, 3, sample_rate=corpus.sample_rate, start=lo, end=hi)
  recs = {rec.name: rec for rec in corpus.recordings}
  fig = Figure(figsize=(8, 1.75 * (1 + len(hits))))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1 + len(hits), 1, 1)
  _spec(ax, term.query_wave, corpus.sample_rate)
  ax.set_title(f'query "{term.text}" ({term.query_speaker}); {len(term.occurrences)} occurrences')
  for k, h in enumerate(hits, 2):
    rec = recs[h.file]
    lo, hi = max(0.0, h.start - 1.0), min(rec.seconds, h.end + 1.0)
    sr = rec.sample_rate
    ax = fig.add_subplot(1 + len(hits), 1, k)
    _spec(ax, rec.wave[int(lo * sr) : int(hi * sr)], sr, lo)
    ax.axvspan(h.start, h.end, color='cyan', alpha=0.3, label='hit')
    for f, s, e in term.occurrences:
      if f == h.file and e > lo and s < hi:
        ax.axvline(s, color='lime', lw=1.5)
        ax.axvline(e, color='lime', lw=1.5)
    ax.set_title(
      f'hit {k - 1}: {h.file} {h.start:.2f}-{h.end:.2f} s, score {h.score:.2f} '
      '(shaded: hit; green: true occurrence)',
      fontsize=9,
    )
  ax.set_xlabel('seconds')
  fig.tight_layout()
  _save_paletted(fig, path, dpi=EXAMPLE_DPI)


def _save_paletted(fig: Figure, path: str, dpi: int) -> None:
  """A PNG of 256 colours (a spectrogram's noise makes a full-colour PNG 2x larger)."""
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=dpi)
  buf.seek(0)
  with Image.open(buf) as image:
    image.convert('RGB').quantize(256).save(path, optimize=True)


def write_report(
  report: dict[str, Any], outdir: str, corpus=None, *, per_term: bool = False
) -> dict[str, Any]:
  """Writes the JSON (and with `per_term` search_per_term.json), the Markdown and the plots (the
  example needs `corpus` and PairAlign's in-memory `_index`); returns the JSON-ready report."""
  os.makedirs(outdir, exist_ok=True)
  clean = compact(report)
  if per_term:
    records = per_term_records(report)
    with open(os.path.join(outdir, PER_TERM_JSON), 'w', encoding='utf-8') as f:
      f.write(_dumps(records) + '\n')
  with open(os.path.join(outdir, REPORT_JSON), 'w', encoding='utf-8') as f:
    f.write(_dumps(clean) + '\n')
  with open(os.path.join(outdir, 'search_report.md'), 'w', encoding='utf-8') as f:
    f.write(markdown(report))
  plot_pr(report, os.path.join(outdir, 'search_pr_curve.png'))
  if corpus is not None and '_index' in report['tokenizers'].get('pairalign', {}):
    plot_example(report, corpus, os.path.join(outdir, 'search_example.png'))
  return clean
