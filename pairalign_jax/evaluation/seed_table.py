"""Tables over seeds: every setting's runs (`<setting>_s<seed>` folders under a root), one split.

    python -m pairalign_jax.evaluation.seed_table runs/heldout --split=test [--out=table.md]

Reports are read from `<root>/<setting>_s<seed>/report.json` (split 'validation': the training
run's own final evaluation) or `<root>/<setting>_s<seed>/test/report.json` (split 'test',
`launch/heldout_speech.sh`); a report whose `eval_set.split` says otherwise is an error, never
silently used. For each setting the table gives, per tokenizer, tokens/s, archive tokens relative
to the VQ stage, recall@1 of every seed with its 95% interval (bootstrap over content items) and
the mean over seeds, and MRR; then the goals, per seed: PairAlign's archive at most 0.45x the VQ
stage's, its recall@1 at least the VQ stage's - 0.02, and at least the MFCC k-means baseline's
(`GOALS`), with the intervals of the differences. Missing reports are listed, not dropped.
"""

from __future__ import annotations

import collections
import json
import os
import re
from typing import Any, Optional, Sequence

from absl import app
from absl import flags

from pairalign_jax.evaluation import report as report_lib

RUN_NAME = re.compile(r'^(?P<setting>.+)_s(?P<seed>\d+)$')
TOKENIZERS = ('pairalign', 'vq', 'vq_groups', 'mfcc_kmeans', 'mfcc_kmeans_matched', 'kmeans')
# (name, tokenizer compared against, bound on the figure, figure): PairAlign's goals.
GOALS = (
  ('archive <= 0.45 x VQ', 'vq', 0.45, 'archive_tokens_ratio'),
  ('recall@1 >= VQ - 0.02', 'vq', -0.02, 'recall_at_1_difference'),
  ('recall@1 >= MFCC k-means', 'mfcc_kmeans', 0.0, 'recall_at_1_difference'),
)


def report_path(root: str, run: str, split: str) -> str:
  if split == 'validation':
    return os.path.join(root, run, 'report.json')
  if split == 'test':
    return os.path.join(root, run, 'test', 'report.json')
  raise ValueError(f"split must be 'validation' or 'test', got {split!r}")


def read_runs(root: str, split: str) -> tuple[dict[str, dict[int, dict[str, Any]]], list[str]]:
  """({setting: {seed: report}}, [runs without a report of `split`])."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f'no such directory: {root}')
  runs: dict[str, dict[int, dict[str, Any]]] = collections.defaultdict(dict)
  missing = []
  for name in sorted(os.listdir(root)):
    match = RUN_NAME.match(name)
    if not match or not os.path.isdir(os.path.join(root, name)):
      continue
    path = report_path(root, name, split)
    if not os.path.isfile(path):
      missing.append(name)
      continue
    with open(path, encoding='utf-8') as f:
      report = json.load(f)
    found = report.get('eval_set', {}).get('split')
    if found != split:
      raise ValueError(f'{path} is a report of split {found!r}, not {split!r}')
    runs[match['setting']][int(match['seed'])] = report
  return dict(runs), missing


def _f(v: Optional[float], fmt: str = '{:.3f}') -> str:
  return '–' if v is None else fmt.format(v)


def _ci(ci: Optional[Sequence[float]], fmt: str = '{:.3f}') -> str:
  return '' if not ci or None in ci else f' [{fmt.format(ci[0])}, {fmt.format(ci[1])}]'


def _mean(values: list[Optional[float]]) -> Optional[float]:
  values = [v for v in values if v is not None]
  return sum(values) / len(values) if values else None


def setting_table(setting: str, reports: dict[int, dict[str, Any]], split: str) -> list[str]:
  """Markdown lines for one setting (module docstring)."""
  seeds = sorted(reports)
  lines = [
    f'### {setting} ({split} split, seeds {", ".join(map(str, seeds))})',
    '',
    '| tokenizer | tokens/s | archive / VQ | '
    + ' | '.join(f'recall@1 seed {s}' for s in seeds)
    + ' | recall@1 mean | MRR mean |',
    '| --- | --- | --- |' + ' --- |' * len(seeds) + ' --- | --- |',
  ]
  for name in TOKENIZERS:
    blocks = [reports[s]['tokenizers'].get(name) for s in seeds]
    if all(b is None for b in blocks):
      continue
    ratios = []
    for s, b in zip(seeds, blocks):
      vq = reports[s]['tokenizers'].get('vq')
      ratios.append(b['archive_tokens'] / vq['archive_tokens'] if b and vq else None)
    cells = [_f(b['recall_at_1']) + _ci(b.get('recall_at_1_ci95')) if b else '–' for b in blocks]
    lines.append(
      f'| {report_lib.display_name(name)} | '
      f'{_f(_mean([b and b["tokens_per_second"] for b in blocks]), "{:.2f}")} | '
      f'{_f(_mean(ratios))} | ' + ' | '.join(cells) + ' | '
      f'{_f(_mean([b and b["recall_at_1"] for b in blocks]))} | '
      f'{_f(_mean([b and b["mrr"] for b in blocks]))} |'
    )
  lines += [
    '',
    '| goal | ' + ' | '.join(f'seed {s}' for s in seeds) + ' | met on every seed |',
    '| --- |' + ' --- |' * len(seeds) + ' --- |',
  ]
  for goal, against, bound, key in GOALS:
    cells, met = [], []
    for s in seeds:
      comparison = reports[s]['headline'].get('comparisons', {}).get(against)
      if not comparison or comparison.get(key) is None:
        cells.append('–')
        met.append(False)
        continue
      value = comparison[key]
      ok = value <= bound if key == 'archive_tokens_ratio' else value >= bound
      fmt = '{:.3f}' if key == 'archive_tokens_ratio' else '{:+.3f}'
      cells.append(
        _f(value, fmt) + _ci(comparison.get(f'{key}_ci95'), fmt) + (' ✓' if ok else ' ✗')
      )
      met.append(ok)
    lines.append(f'| {goal} | ' + ' | '.join(cells) + f' | {"yes" if all(met) else "no"} |')
  return lines + ['']


def markdown(root: str, split: str) -> str:
  runs, missing = read_runs(root, split)
  lines = []
  for setting in sorted(runs):
    lines += setting_table(setting, runs[setting], split)
  if missing:
    lines.append(f'No {split} report (yet): {", ".join(missing)}.')
  return '\n'.join(lines) + '\n'


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_enum('split', 'validation', ['validation', 'test'], 'Which reports to read.')
  flags.DEFINE_string('out', None, 'Also write the table to this file.')


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('usage: python -m pairalign_jax.evaluation.seed_table ROOT [--split=test]')
  text = markdown(argv[1], FLAGS.split)
  print(text)
  if FLAGS.out:
    with open(FLAGS.out, 'w', encoding='utf-8') as f:
      f.write(text)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
