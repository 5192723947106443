"""Tests for pairalign_jax.evaluation.sweep with a fake tokenizer of known output."""

import numpy as np
import pytest

from pairalign_jax import token_strings
from pairalign_jax.evaluation import sweep

SR = 1000  # 1 sample per ms: a 10 ms shift is 10 samples
BLOCK = 10  # the fake tokenizer reads one level per 10 ms block
SEGMENT = 100  # 10 blocks


def _signal(levels):
  return np.repeat(np.asarray(levels, np.float32), BLOCK)


def fake_tokenize(waves):
  """One token per 10 ms block: its (rounded) level; level 0 (silence) emits nothing."""
  blocks = np.round(waves.reshape(waves.shape[0], -1, BLOCK).mean(-1)).astype(int)
  return [[int(v) for v in row if v != 0] for row in blocks]


def _waves():
  ramp = _signal(np.arange(1, 14))  # levels 1..13
  sparse = _signal([1] + [0] * 9 + [2, 3, 0])  # one token, then 2, then 2 3
  return np.stack([ramp, sparse])  # [2, 130]


def test_bigram_jaccard():
  assert sweep.bigram_jaccard([1, 2, 3], [1, 2, 3]) == 1.0
  assert sweep.bigram_jaccard([1, 2, 3], [2, 3, 4]) == pytest.approx(1 / 3)
  assert sweep.bigram_jaccard([1], [1]) == 1.0
  assert sweep.bigram_jaccard([1], [2]) == 0.0
  assert sweep.bigram_jaccard([], [1, 2]) == 0.0


def test_sweep_known_trajectory():
  r = sweep.sweep_probe(
    fake_tokenize, _waves(), segment_samples=SEGMENT, sample_rate=SR, shifts_ms=(0, 10, 20)
  )
  # Ramp, shift k blocks: [1+k .. 10+k] vs [1 .. 10] -> distance 2k, NED 2k/10, Jaccard (9-k)/(9+k).
  # Sparse: [1], [2], [2, 3] -> distances 0, 1, 2; NED 0, 1, 1; Jaccard 1, 0, 0; lengths 1, 1, 2.
  assert r['shifts_ms'] == [0.0, 10.0, 20.0]
  np.testing.assert_allclose(r['edit_distance'], [0, 1.5, 3.0])
  np.testing.assert_allclose(r['normalized_edit_distance'], [0, 0.6, 0.7], atol=1e-6)
  np.testing.assert_allclose(r['bigram_jaccard'], [1.0, 0.4, 7 / 11 / 2], atol=1e-6)
  np.testing.assert_allclose(r['mean_length'], [5.5, 5.5, 6.0])
  assert r['length_std'] == pytest.approx(np.std([1, 1, 2]) / 2)
  assert r['length_range'] == pytest.approx(0.5)
  assert r['mean_edit_distance'] == pytest.approx(2.25)
  assert r['mean_normalized_edit_distance'] == pytest.approx(0.65, abs=1e-6)
  assert r['local_overlap'] == pytest.approx((0.4 + 7 / 22) / 2)
  assert r['num_items'] == 2
  assert r['tokens'][2][1] == [2, 3]


def test_shift_invariant_tokenizer_is_flat():
  def const(w):
    return [[7, 8, 9]] * w.shape[0]

  r = sweep.sweep_probe(
    const, _waves(), segment_samples=SEGMENT, sample_rate=SR, shifts_ms=(0, 10, 20, 30)
  )
  assert len(r['normalized_edit_distance']) == 4
  assert max(r['normalized_edit_distance']) == 0.0
  assert r['local_overlap'] == 1.0 and r['length_std'] == 0.0


def test_accepts_tokenizer_output_objects():
  def fn(w):
    return token_strings.TokenizerOutput(tokens=fake_tokenize(w))

  r = sweep.sweep_probe(fn, _waves(), segment_samples=SEGMENT, sample_rate=SR, shifts_ms=(0, 10))
  np.testing.assert_allclose(r['edit_distance'], [0, 1.5])


def test_errors():
  w = _waves()
  with pytest.raises(ValueError, match='needs 131'):
    sweep.sweep_probe(
      fake_tokenize, w, segment_samples=SEGMENT, sample_rate=SR, shifts_ms=(0, 10, 31)
    )
  with pytest.raises(ValueError, match='start with 0'):
    sweep.sweep_probe(fake_tokenize, w, segment_samples=SEGMENT, sample_rate=SR, shifts_ms=(10,))
  with pytest.raises(ValueError, match='returned 1 strings for 2'):
    sweep.sweep_probe(
      lambda x: [[1]], w, segment_samples=SEGMENT, sample_rate=SR, shifts_ms=(0, 10)
    )
