"""Tests for pairalign_jax.evaluation.report on a small hand-made report."""

import json
import os

import numpy as np
import pytest

from pairalign_jax.evaluation import report as report_lib


def _block(rate, r1, archive_tokens, *, terminated=True, phone=True):
  shifts = [0.0, 10.0, 20.0]
  return {
    'tokens_per_second': rate,
    'vocab_usage': 0.5,
    'unigram_perplexity': 100.0,
    'unique_ratio': 0.98,
    'termination_rate': 0.99 if terminated else None,
    'length_mean': rate * 3,
    'length_std': 2.0,
    'length_min': 10.0,
    'length_median': 36.0,
    'length_max': 50.0,
    'cross_view_ned': 0.3,
    'unrelated_ned': 0.9,
    'ned_gap': 0.6,
    'recall_at_1': r1,
    'recall_at_5': min(1.0, r1 + 0.1),
    'mrr': r1 + 0.02,
    'archive_tokens': archive_tokens,
    'num_queries': 300,
    'archive_size': 100,
    'recall_vs_archive_size': {
      'sizes': [2, 10, 100],
      'recall_at_1': [1.0, 0.9, r1],
      'recall_at_5': [1.0, 1.0, r1 + 0.1],
      'mrr': [1.0, 0.95, r1],
      'num_queries': [6, 30, 300],
    },
    'sweep': {
      'shifts_ms': shifts,
      'edit_distance': [0.0, 2.0, 3.0],
      'normalized_edit_distance': [0.0, 0.1, np.float32(0.2)],
      'bigram_jaccard': [1.0, 0.8, 0.7],
      'mean_length': [38.0, 38.0, 37.5],
      'length_std': 0.5,
      'length_range': 1.0,
      'mean_edit_distance': 2.5,
      'mean_normalized_edit_distance': 0.15,
      'local_overlap': 0.75,
      'num_items': 4,
    },
    'phone': (
      {
        'token_purity': 0.6,
        'phone_purity': 0.5,
        'nmi': 0.55,
        'unassigned_rate': 0.1,
        'num_tokens': 1000,
        'num_phones': 35,
      }
      if phone
      else None
    ),
    'lengths': list(np.random.default_rng(0).integers(10, 50, size=40)),
    'tokenize_seconds': 1.5,
    'segments_per_second': 200.0,
  }


def _fake_report():
  return {
    'eval_set': {
      'num_items': 100,
      'num_queries': 300,
      'num_segments': 400,
      'segment_seconds': 3.0,
      'sample_rate': 16000,
      'sweep_items': 4,
      'sweep_shifts_ms': [0.0, 10.0, 20.0],
      'ties': 'expected',
    },
    'tokenizers': {
      'kmeans': _block(40.0, 0.5, 12000, terminated=False),
      'vq': _block(28.0, 0.8, 8400, terminated=False),
      'pairalign': _block(12.7, 0.82, 3810),
    },
    'headline': {
      'primary': 'pairalign',
      'reference': 'vq',
      'archive_tokens_ratio': 3810 / 8400,
      'recall_at_1_difference': 0.02,
    },
  }


def _example():
  return {
    'index': 0,
    'id': 'spk0-s1',
    'frame_seconds': 0.01,
    'log_mel': np.random.default_rng(1).normal(size=(300, 80)).astype(np.float32),
    'phones': ['a', 'b'],
    'phone_times': [[0.1, 0.2], [0.2, 0.35]],
    'tokens': {'pairalign': [5, 9, 2], 'vq': [1, 1, 4, 5], 'kmeans': [3]},
    'times': {'pairalign': [0.15, 0.3, 1.0], 'vq': [0.1, 0.2, 0.3, 0.4], 'kmeans': None},
  }


def test_write_report_files_json_and_markdown(tmp_path):
  outdir = str(tmp_path / 'out')
  paths = report_lib.write_report(_fake_report(), outdir, example=_example())
  for name in ('report.json', 'report.md') + report_lib.PLOTS + (report_lib.EXAMPLE_PLOT,):
    assert os.path.getsize(os.path.join(outdir, name)) > 0, name
    assert paths[name] == os.path.join(outdir, name)
  for name in report_lib.PLOTS + (report_lib.EXAMPLE_PLOT,):
    with open(os.path.join(outdir, name), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'

  with open(paths['report.json']) as f:
    data = json.load(f)
  assert set(data) == {'eval_set', 'tokenizers', 'headline', 'example'}
  pa = data['tokenizers']['pairalign']
  for key in (
    'tokens_per_second',
    'vocab_usage',
    'unigram_perplexity',
    'unique_ratio',
    'termination_rate',
    'cross_view_ned',
    'unrelated_ned',
    'ned_gap',
    'recall_at_1',
    'recall_at_5',
    'mrr',
    'archive_tokens',
    'num_queries',
    'sweep',
    'recall_vs_archive_size',
    'phone',
    'lengths',
  ):
    assert key in pa, key
  assert data['tokenizers']['vq']['termination_rate'] is None
  assert pa['sweep']['normalized_edit_distance'][2] == pytest.approx(0.2)
  assert data['headline']['archive_tokens_ratio'] == pytest.approx(3810 / 8400)
  assert 'log_mel' not in data['example'] and data['example']['tokens']['vq'] == [1, 1, 4, 5]

  with open(paths['report.md']) as f:
    md = f.read()
  assert '| metric | PairAlign | VQ | log-mel k-means |' in md  # fixed column order
  assert '| recall@1 | 0.820 | 0.800 | 0.500 |' in md
  assert '| archive tokens (mean over rotations) | 3810 | 8400 | 12000 |' in md
  assert '| termination rate | 0.990 | – | – |' in md
  assert '| tokens / s | 12.70 | 28.00 | 40.00 |' in md
  assert '**0.454**' in md and '**+0.020**' in md
  assert '![sweep](sweep.png)' in md and '![example_tokens](example_tokens.png)' in md


def test_nan_becomes_null_and_missing_rows_are_skipped(tmp_path):
  rep = _fake_report()
  for block in rep['tokenizers'].values():
    block['unigram_perplexity'] = float('nan')
    block['phone'] = None
  rep['headline'] = {
    'primary': 'pairalign',
    'reference': 'vq',
    'archive_tokens_ratio': None,
    'recall_at_1_difference': None,
  }
  paths = report_lib.write_report(rep, str(tmp_path))
  with open(paths['report.json']) as f:
    data = json.load(f)
  assert data['tokenizers']['vq']['unigram_perplexity'] is None
  assert 'example' not in data
  assert not os.path.exists(os.path.join(str(tmp_path), report_lib.EXAMPLE_PLOT))
  with open(paths['report.md']) as f:
    md = f.read()
  assert 'token purity' not in md and 'Headline' not in md
  assert '| unigram perplexity | – | – | – |' in md


def test_other_tokenizer_names_and_errors(tmp_path):
  rep = {'tokenizers': {'mine': _block(10.0, 0.7, 3000)}, 'headline': {}}
  paths = report_lib.write_report(rep, str(tmp_path))
  with open(paths['report.md']) as f:
    assert '| metric | mine |' in f.read()
  with pytest.raises(ValueError, match='no tokenizers'):
    report_lib.write_report({'tokenizers': {}}, str(tmp_path))
  assert report_lib.to_jsonable({'a': (np.int64(3), np.float32(np.inf), np.bool_(True))}) == {
    'a': [3, None, True]
  }
