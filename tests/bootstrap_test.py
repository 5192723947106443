"""Tests for pairalign_jax.evaluation.bootstrap: item resampling and percentile intervals."""

import numpy as np
import pytest

from pairalign_jax.evaluation import bootstrap


def test_item_weights_are_resamples_of_the_items():
  w = bootstrap.item_weights(7, num_samples=500, seed=3)
  assert w.shape == (500, 7)
  np.testing.assert_array_equal(w.sum(1), np.full(500, 7.0))  # A draws per sample
  assert (w >= 0).all() and w.max() > 1  # with replacement
  np.testing.assert_array_equal(w, bootstrap.item_weights(7, num_samples=500, seed=3))
  assert not np.array_equal(w, bootstrap.item_weights(7, num_samples=500, seed=4))
  # Each item is drawn once per sample on average.
  np.testing.assert_allclose(w.mean(0), np.ones(7), atol=0.15)
  with pytest.raises(ValueError):
    bootstrap.item_weights(0)


def test_ratio_interval_hand_made():
  # One item: every resample is that item, the interval is the point.
  w = bootstrap.item_weights(1, num_samples=50)
  assert bootstrap.ratio_interval([3.0], [4.0], w) == [0.75, 0.75]
  # Two items, recall 1 and 0 with equal query counts: resamples give 0, 0.5 or 1 with
  # probabilities 1/4, 1/2, 1/4; the 95% interval is [0, 1], and with 2000 samples the mean
  # of the samples is near 0.5.
  w = bootstrap.item_weights(2, num_samples=2000, seed=0)
  samples = bootstrap.ratio_samples([2.0, 0.0], [2.0, 2.0], w)
  assert set(np.unique(samples)) == {0.0, 0.5, 1.0}
  assert samples.mean() == pytest.approx(0.5, abs=0.03)
  assert bootstrap.ratio_interval([2.0, 0.0], [2.0, 2.0], w) == [0.0, 1.0]
  with pytest.raises(ValueError, match='one value per item'):
    bootstrap.ratio_interval([1.0], [1.0, 1.0], w)


def test_difference_interval_uses_the_same_draws():
  # Tokenizer B is A with one extra hit on every item: the difference is exactly the same on
  # every draw (1 / queries per item), which only shared draws give.
  w = bootstrap.item_weights(20, num_samples=300, seed=1)
  rng = np.random.default_rng(0)
  queries = np.full(20, 4.0)
  hits_a = rng.integers(0, 4, size=20).astype(float)
  lo, hi = bootstrap.difference_interval((hits_a + 1, queries), (hits_a, queries), w)
  assert lo == pytest.approx(0.25) and hi == pytest.approx(0.25)
  # Independent noise: a nonzero-width interval around the observed difference.
  hits_b = rng.integers(0, 5, size=20).astype(float)
  lo, hi = bootstrap.difference_interval((hits_b, queries), (hits_a, queries), w)
  observed = hits_b.sum() / 80 - hits_a.sum() / 80
  assert lo < observed < hi
