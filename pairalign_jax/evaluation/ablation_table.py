"""The ablation table: one row per run directory under a root, read from each run's report.json.

    python -m pairalign_jax.evaluation.ablation_table runs/ablations [--out=ablations.md]

Each immediate subfolder of the root that holds a `report.json` (written by the training run's
final evaluation, `pairalign_jax.evaluate`) is one row, named by the folder (the ablation name of
`configs/ablations.py` when run by `launch/ablations.sh`). Folders without a report are listed as
missing, never silently dropped. Columns: PairAlign tokens/s, archive tokens relative to the run's
own VQ stage, recall@1 of PairAlign and of the VQ stage and their difference, MRR, cross-view NED
(same content / unrelated), termination rate and vocabulary usage.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional

COLUMNS = (
  ('tokens/s', lambda p, v, h: p['tokens_per_second'], '{:.2f}'),
  ('archive tokens / VQ', lambda p, v, h: h['archive_tokens_ratio'], '{:.3f}'),
  ('R@1', lambda p, v, h: p['recall_at_1'], '{:.3f}'),
  ('R@1 VQ', lambda p, v, h: v['recall_at_1'], '{:.3f}'),
  ('R@1 - VQ', lambda p, v, h: h['recall_at_1_difference'], '{:+.3f}'),
  ('MRR', lambda p, v, h: p['mrr'], '{:.3f}'),
  (
    'NED same / unrelated',
    lambda p, v, h: (p['cross_view_ned'], p['unrelated_ned']),
    '{:.3f} / {:.3f}',
  ),
  ('termination', lambda p, v, h: p['termination_rate'], '{:.3f}'),
  ('vocab usage', lambda p, v, h: p['vocab_usage'], '{:.3f}'),
)


def read_reports(root: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
  """({run name: report}, [run names without a report]) for the subfolders of `root`, sorted."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f'no such directory: {root}')
  reports, missing = {}, []
  for name in sorted(os.listdir(root)):
    folder = os.path.join(root, name)
    if not os.path.isdir(folder):
      continue
    path = os.path.join(folder, 'report.json')
    if os.path.isfile(path):
      with open(path, encoding='utf-8') as f:
        reports[name] = json.load(f)
    else:
      missing.append(name)
  return reports, missing


def _cell(fn, fmt, report) -> str:
  tok = report['tokenizers']
  primary, reference = report['headline']['primary'], report['headline']['reference']
  try:
    value = fn(tok[primary], tok[reference], report['headline'])
  except (KeyError, TypeError):
    return '–'
  if value is None or (isinstance(value, tuple) and None in value):
    return '–'
  return fmt.format(*value) if isinstance(value, tuple) else fmt.format(value)


def ablation_table(root: str) -> str:
  """Markdown table of every run under `root` (see the module docstring)."""
  reports, missing = read_reports(root)
  lines = [
    '| run | ' + ' | '.join(c[0] for c in COLUMNS) + ' |',
    '| --- |' + ' --- |' * len(COLUMNS),
  ]
  for name, report in reports.items():
    lines.append(
      f'| {name} | ' + ' | '.join(_cell(fn, fmt, report) for _, fn, fmt in COLUMNS) + ' |'
    )
  if missing:
    lines.append('')
    lines.append('No report.json (run unfinished or failed): ' + ', '.join(missing))
  return '\n'.join(lines) + '\n'


def main(argv: Optional[list[str]] = None) -> int:
  args = list(sys.argv[1:] if argv is None else argv)
  out = None
  for a in list(args):
    if a.startswith('--out='):
      out = a.split('=', 1)[1]
      args.remove(a)
  if len(args) != 1:
    print(
      'usage: python -m pairalign_jax.evaluation.ablation_table ROOT [--out=table.md]',
      file=sys.stderr,
    )
    return 2
  table = ablation_table(args[0])
  print(table, end='')
  if out:
    with open(out, 'w', encoding='utf-8') as f:
      f.write(table)
  return 0


if __name__ == '__main__':
  sys.exit(main())
