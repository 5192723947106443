"""Writes the evaluation report: report.json, report.md and PNG plots.

`write_report(report, outdir, example=None)` takes the dict of `runner.evaluate_tokenizers` and
writes into `outdir`:

* `report.json` — the report with numpy values made plain and NaN written as null. Keys:
    eval_set: {split, num_items, num_rotations, num_queries (all rotations), num_segments,
               segment_seconds, sample_rate, sweep_items, sweep_shifts_ms, ties}
    tokenizers: {<name>: {    # 'pairalign', 'vq', 'mfcc_kmeans', 'mfcc_kmeans_matched', 'kmeans'
                              # (log-mel); 'vq_groups' (the stage-1 targets) when the model has
                              # targets.code_groups > 0
        tokens_per_second, vocab_usage, unigram_perplexity, unique_ratio,
        termination_rate (null: not a decoder),
        length_mean, length_std, length_min, length_median, length_max,
        cross_view_ned, unrelated_ned, ned_gap,
        recall_at_1, recall_at_1_ci95 ([low, high]), recall_at_5, mrr, archive_tokens (mean over
        rotations), num_queries, archive_size, num_rotations,
        rotations: {recall_at_1, archive_tokens} (one entry per rotation),
        per_item: {hits_at_1, queries, archive_tokens} (one entry per content item),
        recall_vs_archive_size: {sizes, recall_at_1, recall_at_5, mrr, num_queries},
        sweep: {shifts_ms, edit_distance, normalized_edit_distance, bigram_jaccard, mean_length,
                length_std, length_range, mean_edit_distance, mean_normalized_edit_distance,
                local_overlap, num_items},
        phone: null | {token_purity, phone_purity, nmi, unassigned_rate, num_tokens, num_phones},
        lengths: [int per segment], tokenize_seconds, segments_per_second}}
    headline: {primary, reference, archive_tokens_ratio (primary / reference archive tokens),
               recall_at_1_difference (primary - reference), archive_tokens_ratio_ci95,
               recall_at_1_difference_ci95 ([low, high], bootstrap over content items),
               comparisons: {<name>: the same four figures, primary against that tokenizer},
               ned_to_targets (when 'vq_groups' is evaluated): mean NED between the primary's
               string and the training targets' string of the same segment,
               edits_to_targets (the same pairs): {substitutions, deletions, insertions} per
               target token, reference_tokens, hypothesis_tokens (`metrics.edit_operations`)}
    example: (when given) {index, id, frame_seconds, phones, phone_times, tokens: {name: [...]},
              times: {name: [...]}} — the log-mel itself is not written to JSON.
  Metric definitions: `metrics.py`, `retrieval.py`, `sweep.py`; eval set: `runner.py`.
* `report.md` — the headline, then a table with one row per metric (`TABLE_ROWS`) and one column
  per tokenizer (PairAlign, VQ, the MFCC k-means baselines first, others after), then the plots.
* `sweep.png` (edit distance vs shift per tokenizer), `lengths.png` (length histograms),
  `recall_vs_archive_size.png`, and `example_tokens.png` (a log-mel spectrogram with each
  tokenizer's tokens at their times; only when an example with `log_mel` is given, as the
  `example` argument or `report['example']`).

Plots use matplotlib's object API with the Agg canvas (no pyplot state, no display needed).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Optional

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

DISPLAY_NAMES = {
  'pairalign': 'PairAlign',
  'vq': 'VQ',
  'kmeans': 'log-mel k-means',
  'vq_groups': 'VQ groups (stage-1 targets)',
  'mfcc_kmeans': 'MFCC k-means',
  'mfcc_kmeans_matched': 'MFCC k-means at PairAlign rate',
}
_ORDER = ('pairalign', 'vq', 'mfcc_kmeans', 'mfcc_kmeans_matched', 'kmeans', 'vq_groups')

# (key path in a tokenizer's block, row label, format)
TABLE_ROWS = (
  ('tokens_per_second', 'tokens / s', '{:.2f}'),
  ('length_mean', 'length mean (tokens)', '{:.2f}'),
  ('length_std', 'length std', '{:.2f}'),
  ('vocab_usage', 'vocabulary usage', '{:.3f}'),
  ('unigram_perplexity', 'unigram perplexity', '{:.1f}'),
  ('unique_ratio', 'unique ratio', '{:.3f}'),
  ('termination_rate', 'termination rate', '{:.3f}'),
  ('cross_view_ned', 'cross-view NED (same content)', '{:.3f}'),
  ('unrelated_ned', 'NED unrelated pairs', '{:.3f}'),
  ('ned_gap', 'NED gap (unrelated - same)', '{:.3f}'),
  ('recall_at_1', 'recall@1', '{:.3f}'),
  ('recall_at_1_ci95', 'recall@1 95% interval (items)', '{:.3f}'),
  ('recall_at_5', 'recall@5', '{:.3f}'),
  ('mrr', 'MRR', '{:.3f}'),
  ('archive_tokens', 'archive tokens (mean over rotations)', '{:.0f}'),
  ('num_queries', 'queries (all rotations)', '{:d}'),
  ('sweep.mean_normalized_edit_distance', 'sweep: mean NED to unshifted', '{:.3f}'),
  ('sweep.mean_edit_distance', 'sweep: mean edit distance', '{:.2f}'),
  ('sweep.local_overlap', 'sweep: bigram Jaccard', '{:.3f}'),
  ('sweep.length_std', 'sweep: length std', '{:.2f}'),
  ('sweep.length_range', 'sweep: length range', '{:.2f}'),
  ('phone.token_purity', 'token purity (phones)', '{:.3f}'),
  ('phone.phone_purity', 'phone purity', '{:.3f}'),
  ('phone.nmi', 'phone NMI', '{:.3f}'),
  ('segments_per_second', 'tokenizer segments / s', '{:.1f}'),
)

PLOTS = ('sweep.png', 'lengths.png', 'recall_vs_archive_size.png')
EXAMPLE_PLOT = 'example_tokens.png'


def display_name(name: str) -> str:
  return DISPLAY_NAMES.get(name, name)


def ordered_names(report: Mapping[str, Any]) -> list[str]:
  names = list(report['tokenizers'])
  return [n for n in _ORDER if n in names] + [n for n in names if n not in _ORDER]


def to_jsonable(x: Any) -> Any:
  """numpy -> python; NaN/inf -> None; tuples -> lists."""
  if isinstance(x, Mapping):
    return {str(k): to_jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return to_jsonable(x.tolist())
  if isinstance(x, (np.bool_, bool)):
    return bool(x)
  if isinstance(x, (np.integer, int)):
    return int(x)
  if isinstance(x, (np.floating, float)):
    x = float(x)
    return x if math.isfinite(x) else None
  return x


def _lookup(block: Mapping[str, Any], path: str) -> Any:
  v: Any = block
  for part in path.split('.'):
    if not isinstance(v, Mapping) or part not in v:
      return None
    v = v[part]
  return v


def _fmt(v: Any, fmt: str) -> str:
  if isinstance(v, (list, tuple)):  # an interval [low, high]
    return '[' + ', '.join(_fmt(x, fmt) for x in v) + ']'
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return '–'
  if fmt.endswith('d}'):
    return fmt.format(int(v))
  return fmt.format(float(v))


def _interval(ci: Any, fmt: str = '{:.3f}') -> str:
  return '' if not ci or any(v is None for v in ci) else f' (95% interval {_fmt(ci, fmt)})'


def markdown(report: Mapping[str, Any], plots: list[str]) -> str:
  """The report.md text."""
  names = ordered_names(report)
  es = report.get('eval_set', {})
  lines = ['# PairAlign evaluation', '']
  if es:
    split = f"split '{es['split']}': " if es.get('split') else ''
    lines.append(
      f'{split}{es.get("num_items")} archive items, {es.get("num_rotations", 1)} archive '
      f'rotations, {es.get("num_queries")} queries in all, '
      f'{es.get("segment_seconds")} s segments at {es.get("sample_rate")} Hz; sweep over '
      f'{es.get("sweep_items")} items, shifts {es.get("sweep_shifts_ms")} ms; '
      f"ties counted as '{es.get('ties')}'."
    )
    lines.append('')
  h = report.get('headline') or {}
  if h.get('archive_tokens_ratio') is not None:
    p, r = display_name(h['primary']), display_name(h['reference'])
    lines += [
      '## Headline',
      '',
      f'- archive tokens {p} / {r}: **{h["archive_tokens_ratio"]:.3f}** '
      f'({(1 - h["archive_tokens_ratio"]) * 100:.1f}% fewer tokens)'
      + _interval(h.get('archive_tokens_ratio_ci95')),
      f'- recall@1 {p} − {r}: **{h["recall_at_1_difference"]:+.3f}**'
      + _interval(h.get('recall_at_1_difference_ci95'), '{:+.3f}'),
    ]
    if h.get('ned_to_targets') is not None:
      lines.append(
        f'- {p} string vs its training targets (VQ groups) on the same audio: mean normalized '
        f'edit distance {h["ned_to_targets"]:.3f} (0 = the decoder writes its targets exactly)'
      )
    e = h.get('edits_to_targets')
    if e is not None:
      lines.append(
        f'  - per target token: {e["substitutions"]:.3f} substituted, {e["deletions"]:.3f} left '
        f'out, {e["insertions"]:.3f} added ({e["hypothesis_tokens"]:.0f} tokens written for '
        f'{e["reference_tokens"]:.0f} target tokens)'
      )
    lines.append('')
  comparisons = h.get('comparisons') or {}
  if comparisons:
    lines += [
      f'{display_name(h["primary"])} against each tokenizer (95% bootstrap intervals over '
      'content items):',
      '',
      '| against | archive tokens ratio | interval | recall@1 difference | interval |',
      '| --- | --- | --- | --- | --- |',
    ]
    for name in [n for n in names if n in comparisons]:
      c = comparisons[name]
      lines.append(
        f'| {display_name(name)} | {_fmt(c["archive_tokens_ratio"], "{:.3f}")} | '
        f'{_fmt(c.get("archive_tokens_ratio_ci95"), "{:.3f}")} | '
        f'{_fmt(c["recall_at_1_difference"], "{:+.3f}")} | '
        f'{_fmt(c.get("recall_at_1_difference_ci95"), "{:+.3f}")} |'
      )
    lines.append('')
  lines += [
    '## Metrics',
    '',
    '| metric | ' + ' | '.join(display_name(n) for n in names) + ' |',
    '| --- |' + ' --- |' * len(names),
  ]
  for path, label, fmt in TABLE_ROWS:
    vals = [_lookup(report['tokenizers'][n], path) for n in names]
    if all(v is None for v in vals):
      continue
    lines.append(f'| {label} | ' + ' | '.join(_fmt(v, fmt) for v in vals) + ' |')
  lines.append('')
  if plots:
    lines += ['## Plots', '']
    lines += [f'![{os.path.splitext(p)[0]}]({p})' for p in plots]
    lines.append('')
  return '\n'.join(lines)


def _new_figure(w: float, h: float) -> Figure:
  fig = Figure(figsize=(w, h), dpi=100)
  FigureCanvasAgg(fig)
  return fig


def plot_sweep(report: Mapping[str, Any], path: str) -> None:
  fig = _new_figure(10, 4)
  ax1, ax2 = fig.subplots(1, 2)
  for n in ordered_names(report):
    sw = report['tokenizers'][n].get('sweep')
    if not sw:
      continue
    ax1.plot(sw['shifts_ms'], sw['normalized_edit_distance'], marker='o', label=display_name(n))
    ax2.plot(sw['shifts_ms'], sw['bigram_jaccard'], marker='o', label=display_name(n))
  ax1.set(
    xlabel='window shift (ms)',
    ylabel='normalized edit distance to unshifted',
    title='Sweep trajectory',
  )
  ax2.set(xlabel='window shift (ms)', ylabel='token-bigram Jaccard', title='Local overlap')
  ax1.legend()
  fig.tight_layout()
  fig.savefig(path)


def plot_lengths(report: Mapping[str, Any], path: str) -> None:
  fig = _new_figure(7, 4)
  ax = fig.subplots()
  all_lens = [np.asarray(report['tokenizers'][n]['lengths']) for n in ordered_names(report)]
  hi = max([int(x.max()) for x in all_lens if x.size] + [1])
  bins = np.arange(0, hi + 2) - 0.5 if hi <= 60 else 40
  for n, lens in zip(ordered_names(report), all_lens):
    ax.hist(lens, bins=bins, alpha=0.5, label=f'{display_name(n)} (mean {lens.mean():.1f})')
  ax.set(xlabel='tokens per segment', ylabel='segments', title='String lengths')
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)


def plot_recall_curve(report: Mapping[str, Any], path: str) -> None:
  fig = _new_figure(7, 4)
  ax = fig.subplots()
  for n in ordered_names(report):
    c = report['tokenizers'][n].get('recall_vs_archive_size')
    if c:
      (line,) = ax.plot(c['sizes'], c['recall_at_1'], marker='o', label=f'{display_name(n)} R@1')
      ax.plot(
        c['sizes'],
        c['recall_at_5'],
        marker='x',
        ls='--',
        color=line.get_color(),
        label=f'{display_name(n)} R@5',
      )
  ax.set_xscale('log')
  ax.set(
    xlabel='archive size (items)',
    ylabel='recall',
    ylim=(0, 1.02),
    title='Retrieval vs archive size',
  )
  ax.legend(fontsize='small')
  fig.tight_layout()
  fig.savefig(path)


def plot_example(example: Mapping[str, Any], names: list[str], path: str) -> None:
  """Log-mel spectrogram with each tokenizer's tokens (ids) at their times."""
  mel = np.asarray(example['log_mel'], np.float32)  # [F, M]
  fs = float(example.get('frame_seconds', 0.01))
  rows = [n for n in names if example.get('times', {}).get(n) is not None]
  fig = _new_figure(14, 3 + 0.8 * len(rows))
  ratios = [3] + [0.8] * len(rows)
  axes = fig.subplots(1 + len(rows), 1, sharex=True, gridspec_kw={'height_ratios': ratios})
  axes = np.atleast_1d(axes)
  dur = mel.shape[0] * fs
  axes[0].imshow(
    mel.T, origin='lower', aspect='auto', extent=(0, dur, 0, mel.shape[1]), cmap='magma'
  )
  axes[0].set(ylabel='mel band', title=f'Example {example.get("id", "")}')
  if example.get('phones') and example.get('phone_times') is not None:
    for ph, (s, e) in zip(example['phones'], np.asarray(example['phone_times']).reshape(-1, 2)):
      axes[0].axvline(s, color='w', lw=0.4, alpha=0.5)
      axes[0].text((s + e) / 2, mel.shape[1] * 0.93, ph, color='w', ha='center', fontsize=7)
  for ax, n in zip(axes[1:], rows):
    toks, times = example['tokens'][n], example['times'][n]
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel(display_name(n), rotation=0, ha='right', va='center')
    for k, (tok, t) in enumerate(zip(toks, times)):
      ax.axvline(t, color='C0', lw=0.6)
      ax.text(t, 0.25 + 0.5 * (k % 2), str(tok), ha='center', va='center', fontsize=6)
  axes[-1].set_xlabel('time (s)')
  axes[-1].set_xlim(0, dur)
  fig.tight_layout()
  fig.savefig(path)


def write_report(
  report: Mapping[str, Any], outdir: str, example: Optional[Mapping[str, Any]] = None
) -> dict[str, str]:
  """Writes report.json, report.md and the plots into `outdir`; returns {name: path}."""
  if not report.get('tokenizers'):
    raise ValueError('write_report: the report has no tokenizers')
  os.makedirs(outdir, exist_ok=True)
  example = example if example is not None else report.get('example')
  paths: dict[str, str] = {}

  plots = []
  for name, fn in zip(PLOTS, (plot_sweep, plot_lengths, plot_recall_curve)):
    fn(report, os.path.join(outdir, name))
    plots.append(name)
  if example is not None and example.get('log_mel') is not None:
    plot_example(example, ordered_names(report), os.path.join(outdir, EXAMPLE_PLOT))
    plots.append(EXAMPLE_PLOT)
  for p in plots:
    paths[p] = os.path.join(outdir, p)

  data = {k: v for k, v in report.items() if k != 'example'}
  if example is not None:
    data['example'] = {k: v for k, v in example.items() if k != 'log_mel'}
  paths['report.json'] = os.path.join(outdir, 'report.json')
  with open(paths['report.json'], 'w') as f:
    json.dump(to_jsonable(data), f, indent=1, sort_keys=True, allow_nan=False)
  paths['report.md'] = os.path.join(outdir, 'report.md')
  with open(paths['report.md'], 'w') as f:
    f.write(markdown(report, plots))
  return paths
