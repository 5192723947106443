"""Tests for pairalign_jax.evaluation.baselines (k-means on log-spectral frames, collapsed)."""

import numpy as np
import pytest

from pairalign_jax.evaluation import baselines

SR = 16_000
HOP = 160       # 10 ms frames


def log_spec(waves):
  """A tiny numpy front end: [N, S] -> [N, F, 32] log band energies (400-sample Hann, 10 ms hop)."""
  frames = np.lib.stride_tricks.sliding_window_view(waves, 400, axis=1)[:, ::HOP]   # [N, F, 400]
  power = np.abs(np.fft.rfft(frames * np.hanning(400), n=512)) ** 2                # [N, F, 257]
  bands = power[..., :256].reshape(*power.shape[:2], 32, 8).sum(-1)
  return np.log(bands + 1e-6).astype(np.float32)


def tone(freq, seconds):
  t = np.arange(int(seconds * SR)) / SR
  return 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)


def two_tones(first, second):
  return np.concatenate([tone(first, 0.3), tone(second, 0.3)])


def _train_waves():
  return np.stack([two_tones(500, 2500), two_tones(2500, 500), two_tones(500, 500)])


def test_collapse_frames():
  tokens, centres = baselines.collapse_frames(np.array([3, 3, 5, 5, 5, 3, 7]))
  assert tokens.tolist() == [3, 5, 3, 7]
  assert centres.tolist() == [0.5, 3.0, 5.0, 6.0]
  tokens, centres = baselines.collapse_frames(np.zeros([0], np.int32))
  assert tokens.size == 0 and centres.size == 0
  with pytest.raises(ValueError, match=r'codes \[T\]'):
    baselines.collapse_frames(np.zeros([2, 3], np.int32))


def test_pool_frames():
  x = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
  m = baselines.pool_frames(x, 2, 'mean')
  assert m.shape == (2, 2, 3)
  np.testing.assert_allclose(m[0, 1], (x[0, 2] + x[0, 3]) / 2)
  s = baselines.pool_frames(x, 2, 'stack')
  assert s.shape == (2, 2, 6)
  np.testing.assert_array_equal(s[1, 0], np.concatenate([x[1, 0], x[1, 1]]))
  np.testing.assert_array_equal(baselines.pool_frames(x, 1), x)
  with pytest.raises(ValueError, match='pool'):
    baselines.pool_frames(x, 2, 'max')


def test_assign_codes_is_nearest_centroid():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 7, 5)).astype(np.float32)
  c = rng.normal(size=(6, 5)).astype(np.float32)
  brute = np.linalg.norm(x[..., None, :] - c, axis=-1).argmin(-1)
  np.testing.assert_array_equal(baselines.assign_codes(x, c), brute)


def test_fit_and_tokenize_two_tones(tmp_path):
  tok = baselines.fit_kmeans(log_spec, _train_waves(), n_clusters=2, subsample=2, seed=0,
                             frame_seconds=HOP / SR, sample_rate=SR)
  assert tok.centroids.shape == (2, 32)
  out = tok(np.stack([two_tones(500, 2500), two_tones(2500, 500)]), SR)
  assert out.terminated is None
  (a, b), (c, d) = out.tokens
  assert a != b and (c, d) == (b, a)           # two runs; the reversed order gives reversed ids
  # Run centres: ~0.15 s and ~0.45 s (the window spans 0 .. 0.595 s of frames).
  np.testing.assert_allclose(out.times[0], [0.15, 0.45], atol=0.03)
  assert out.times[0].dtype == np.float32

  # Same seed -> same centroids; save/load gives the same ids.
  again = baselines.fit_kmeans(log_spec, iter([_train_waves()[:2], _train_waves()[2:]]),
                               n_clusters=2, subsample=2, seed=0, frame_seconds=HOP / SR)
  np.testing.assert_allclose(again.centroids, tok.centroids, rtol=1e-5)
  path = str(tmp_path / 'km' / 'kmeans.npz')
  tok.save(path)
  loaded = baselines.KMeansTokenizer.load(path, log_spec)
  assert (loaded.subsample, loaded.pool, loaded.sample_rate) == (2, 'mean', SR)
  np.testing.assert_array_equal(loaded.centroids, tok.centroids)
  assert loaded(np.stack([two_tones(500, 2500)]), SR).tokens == [out.tokens[0]]


def test_stack_pooling_and_rate():
  tok = baselines.fit_kmeans(log_spec, _train_waves(), n_clusters=2, subsample=4, pool='stack',
                             seed=1, frame_seconds=HOP / SR)
  assert tok.centroids.shape == (2, 4 * 32)
  codes = tok.codes(_train_waves()[:1])
  assert codes.shape == (1, log_spec(_train_waves()[:1]).shape[1] // 4)


def test_errors(tmp_path):
  with pytest.raises(ValueError, match='n_clusters'):
    baselines.fit_kmeans(log_spec, _train_waves()[:1, :800], n_clusters=50, subsample=1)
  tok = baselines.fit_kmeans(log_spec, _train_waves(), n_clusters=2, seed=0)
  with pytest.raises(ValueError, match='8000'):
    tok(_train_waves()[:1], 8000)
  bad = str(tmp_path / 'bad.npz')
  np.savez(bad, centroids=np.zeros([2, 3]))
  with pytest.raises(ValueError, match='missing'):
    baselines.KMeansTokenizer.load(bad, log_spec)
