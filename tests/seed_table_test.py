"""Tests for pairalign_jax.evaluation.seed_table on hand-made report.json files."""

import json
import os

import pytest

from pairalign_jax.evaluation import seed_table


def _block(recall, tokens, rate=10.0):
  return {
    'recall_at_1': recall,
    'recall_at_1_ci95': [recall - 0.05, recall + 0.05],
    'archive_tokens': tokens,
    'tokens_per_second': rate,
    'mrr': recall + 0.01,
  }


def _write(root, run, split, pa, vq, mfcc):
  toks = {'pairalign': _block(*pa), 'vq': _block(*vq, rate=28.0), 'mfcc_kmeans': _block(*mfcc)}
  comparisons = {
    n: {
      'archive_tokens_ratio': toks['pairalign']['archive_tokens'] / b['archive_tokens'],
      'recall_at_1_difference': pa[0] - b['recall_at_1'],
      'archive_tokens_ratio_ci95': None,
      'recall_at_1_difference_ci95': [
        pa[0] - b['recall_at_1'] - 0.03,
        pa[0] - b['recall_at_1'] + 0.03,
      ],
    }
    for n, b in toks.items()
    if n != 'pairalign'
  }
  report = {
    'eval_set': {'split': split},
    'tokenizers': toks,
    'headline': {'primary': 'pairalign', 'reference': 'vq', 'comparisons': comparisons},
  }
  folder = os.path.join(root, run, 'test') if split == 'test' else os.path.join(root, run)
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'report.json'), 'w') as f:
    json.dump(report, f)


def test_goals_per_seed_and_means(tmp_path):
  root = str(tmp_path)
  _write(root, 'small_s0', 'test', (0.90, 40), (0.91, 100), (0.85, 150))  # every goal met
  _write(root, 'small_s1', 'test', (0.80, 50), (0.90, 100), (0.85, 150))  # misses two
  _write(root, 'small_s2', 'validation', (0.5, 40), (0.9, 100), (0.9, 150))  # no test report
  text = seed_table.markdown(root, 'test')
  assert '### small (test split, seeds 0, 1)' in text
  assert (
    '| PairAlign | 10.00 | 0.450 | 0.900 [0.850, 0.950] | 0.800 [0.750, 0.850] | 0.850 | 0.860 |'
    in text
  )
  assert '| archive <= 0.45 x VQ | 0.400 ✓ | 0.500 ✗ | no |' in text
  assert (
    '| recall@1 >= VQ - 0.02 | -0.010 [-0.040, +0.020] ✓ | -0.100 [-0.130, -0.070] ✗ | no |' in text
  )
  assert (
    '| recall@1 >= MFCC k-means | +0.050 [+0.020, +0.080] ✓ | -0.050 [-0.080, -0.020] ✗ | no |'
    in text
  )
  assert 'No test report (yet): small_s2.' in text


def test_a_report_of_another_split_is_an_error(tmp_path):
  root = str(tmp_path)
  _write(root, 'x_s0', 'validation', (0.9, 40), (0.9, 100), (0.8, 150))
  os.makedirs(os.path.join(root, 'x_s0', 'test'))
  os.rename(
    os.path.join(root, 'x_s0', 'report.json'), os.path.join(root, 'x_s0', 'test', 'report.json')
  )
  with pytest.raises(ValueError, match="split 'validation', not 'test'"):
    seed_table.read_runs(root, 'test')
