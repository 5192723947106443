"""Tests for pairalign_jax/evaluation/ablation_table.py."""

import json

from pairalign_jax.evaluation import ablation_table


def _report(tps, ratio, r1, r1_vq):
  block = {
    'tokens_per_second': tps,
    'recall_at_1': r1,
    'mrr': 0.5,
    'cross_view_ned': 0.2,
    'unrelated_ned': 0.8,
    'termination_rate': 1.0,
    'vocab_usage': 0.3,
  }
  return {
    'tokenizers': {'pairalign': block, 'vq': dict(block, recall_at_1=r1_vq)},
    'headline': {
      'primary': 'pairalign',
      'reference': 'vq',
      'archive_tokens_ratio': ratio,
      'recall_at_1_difference': r1 - r1_vq,
    },
  }


def test_rows_values_and_missing_runs(tmp_path):
  for name, rep in {
    'full': _report(12.7, 0.45, 0.9, 0.85),
    'no_contrast': _report(9.0, 0.3, 0.4, 0.85),
  }.items():
    (tmp_path / name).mkdir()
    (tmp_path / name / 'report.json').write_text(json.dumps(rep))
  (tmp_path / 'no_timing').mkdir()  # unfinished run: listed, not dropped
  table = ablation_table.ablation_table(str(tmp_path))
  lines = table.splitlines()
  assert lines[0].startswith('| run | tokens/s | archive tokens / VQ | R@1 | R@1 VQ | R@1 - VQ')
  full = next(line for line in lines if line.startswith('| full |'))
  assert '| 12.70 | 0.450 | 0.900 | 0.850 | +0.050 |' in full
  assert '| -0.450 |' in next(line for line in lines if line.startswith('| no_contrast |'))
  assert 'no_timing' in lines[-1] and 'No report.json' in lines[-1]


def test_main_writes_the_table_and_rejects_bad_usage(tmp_path, capsys):
  (tmp_path / 'full').mkdir()
  (tmp_path / 'full' / 'report.json').write_text(json.dumps(_report(12.7, 0.45, 0.9, 0.85)))
  out = tmp_path / 'table.md'
  assert ablation_table.main([str(tmp_path), f'--out={out}']) == 0
  assert out.read_text() == capsys.readouterr().out
  assert ablation_table.main([]) == 2
