"""Tests for pairalign_jax.evaluation.baselines (k-means on log-spectral or MFCC frames)."""

import librosa
import numpy as np
import pytest

from pairalign_jax import token_strings
from pairalign_jax.evaluation import baselines

SR = 16_000
HOP = 160  # 10 ms frames


def log_spec(waves):
  """A tiny numpy front end: [N, S] -> [N, F, 32] log band energies (400-sample Hann, 10 ms hop)."""
  frames = np.lib.stride_tricks.sliding_window_view(waves, 400, axis=1)[:, ::HOP]  # [N, F, 400]
  power = np.abs(np.fft.rfft(frames * np.hanning(400), n=512)) ** 2  # [N, F, 257]
  bands = power[..., :256].reshape(*power.shape[:2], 32, 8).sum(-1)
  return np.log(bands + 1e-6).astype(np.float32)


def tone(freq, seconds):
  t = np.arange(int(seconds * SR)) / SR
  return 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)


def two_tones(first, second):
  return np.concatenate([tone(first, 0.3), tone(second, 0.3)])


def _train_waves():
  return np.stack([two_tones(500, 2500), two_tones(2500, 500), two_tones(500, 500)])


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
  tok = baselines.fit_kmeans(
    log_spec,
    _train_waves(),
    n_clusters=2,
    subsample=2,
    seed=0,
    frame_seconds=HOP / SR,
    sample_rate=SR,
  )
  assert tok.centroids.shape == (2, 32)
  out = tok(np.stack([two_tones(500, 2500), two_tones(2500, 500)]), SR)
  assert out.terminated is None
  (a, b), (c, d) = out.tokens
  assert a != b and (c, d) == (b, a)  # two runs; the reversed order gives reversed ids
  # Run centres: ~0.15 s and ~0.45 s (the window spans 0 .. 0.595 s of frames).
  np.testing.assert_allclose(out.times[0], [0.15, 0.45], atol=0.03)
  assert out.times[0].dtype == np.float32

  # Same seed -> same centroids; save/load gives the same ids.
  again = baselines.fit_kmeans(
    log_spec,
    iter([_train_waves()[:2], _train_waves()[2:]]),
    n_clusters=2,
    subsample=2,
    seed=0,
    frame_seconds=HOP / SR,
  )
  np.testing.assert_allclose(again.centroids, tok.centroids, rtol=1e-5)
  path = str(tmp_path / 'km' / 'kmeans.npz')
  tok.save(path)
  loaded = baselines.KMeansTokenizer.load(path, log_spec)
  assert (loaded.subsample, loaded.pool, loaded.sample_rate) == (2, 'mean', SR)
  np.testing.assert_array_equal(loaded.centroids, tok.centroids)
  assert loaded(np.stack([two_tones(500, 2500)]), SR).tokens == [out.tokens[0]]


def test_stack_pooling_and_rate():
  tok = baselines.fit_kmeans(
    log_spec,
    _train_waves(),
    n_clusters=2,
    subsample=4,
    pool='stack',
    seed=1,
    frame_seconds=HOP / SR,
  )
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


# --- MFCC k-means ---------------------------------------------------------------------------------


def _tone_pair(first, second, seed):
  """1 s of `first` Hz then 1 s of `second` Hz (amplitude 0.5) plus noise of std 0.01."""
  noise = 0.01 * np.random.default_rng(seed).normal(size=2 * SR)
  return (np.concatenate([tone(first, 1.0), tone(second, 1.0)]) + noise).astype(np.float32)


def _chirp(seconds=1.5):
  t = np.arange(int(seconds * SR)) / SR
  return (0.3 * np.sin(2 * np.pi * (200 * t + 1500 * t**2))).astype(np.float32)  # 200 -> 4700 Hz


def _librosa_mfcc_reference(wave):
  """The baseline's features written out directly with librosa, one utterance: [F, 39]."""
  m = librosa.feature.mfcc(
    y=wave,
    sr=SR,
    n_mfcc=13,
    n_fft=512,
    hop_length=160,
    win_length=400,
    window='hann',
    center=True,
    pad_mode='constant',
    n_mels=40,
  )
  m = m[:, : len(wave) // 160]
  x = np.concatenate([m, librosa.feature.delta(m), librosa.feature.delta(m, order=2)])
  x = x.astype(np.float64)
  x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
  return x.T


def test_mfcc_framing():
  assert baselines.mfcc_framing(16_000) == (512, 400, 160)
  assert baselines.mfcc_framing(8_000) == (256, 200, 80)


def test_mfcc_features_shape_and_normalization():
  waves = np.stack([_chirp(), _tone_pair(300, 2000, 0)[: len(_chirp())]])
  x = baselines.mfcc_features(waves)
  assert x.shape == (2, waves.shape[1] // HOP, 39) and x.dtype == np.float32
  np.testing.assert_allclose(x.mean(axis=1), 0.0, atol=1e-5)
  np.testing.assert_allclose(x.std(axis=1), 1.0, atol=1e-4)
  assert baselines.mfcc_features(waves[:, :4000], sample_rate=8000).shape == (2, 4000 // 80, 39)
  with pytest.raises(ValueError, match='at least'):
    baselines.mfcc_features(waves[:, : 8 * HOP])
  with pytest.raises(ValueError, match=r'\[N, samples\]'):
    baselines.mfcc_features(waves[0])


def test_mfcc_features_match_librosa():
  waves = np.stack([_chirp(), _tone_pair(300, 2000, 1)[: len(_chirp())]])
  x = baselines.mfcc_features(waves)
  for i, wave in enumerate(waves):
    np.testing.assert_allclose(x[i], _librosa_mfcc_reference(wave), atol=2e-4)
  # Utterances are normalized independently of the batch they come in.
  np.testing.assert_allclose(baselines.mfcc_features(waves[1:]), x[1:], atol=1e-5)


def test_mfcc_kmeans_two_tones():
  first, second = _tone_pair(300, 2000, 2), _tone_pair(2000, 300, 3)
  tok = baselines.fit_mfcc_kmeans(np.stack([first, second]), n_clusters=2, seed=0)
  assert tok.centroids.shape == (2, 39)
  assert (tok.subsample, tok.min_run_frames, tok.frame_seconds) == (1, 1, 0.01)
  out = tok(np.stack([_tone_pair(300, 2000, 4), _tone_pair(2000, 300, 5)]), SR)
  (a, b), (c, d) = out.tokens  # exactly two tokens each
  assert a != b and (c, d) == (b, a)
  np.testing.assert_allclose(out.times[0], [0.5, 1.5], atol=0.03)
  np.testing.assert_allclose(out.times[1], [0.5, 1.5], atol=0.03)

  # The matched recipe's frame rate and merging, with 2 clusters: 20 ms frames, same two tokens.
  matched = dict(baselines.MFCC_RECIPES['mfcc_kmeans_matched'], n_clusters=2)
  tok2 = baselines.fit_mfcc_kmeans(np.stack([first, second]), seed=0, **matched)
  assert (tok2.subsample, tok2.min_run_frames) == (2, 2)
  assert tok2.codes(first[None]).shape == (1, 100)
  out2 = tok2(first[None], SR)
  assert len(out2.tokens[0]) == 2
  np.testing.assert_allclose(out2.times[0], [0.5, 1.5], atol=0.03)


def test_mfcc_recipes():
  assert baselines.MFCC_RECIPES == {
    'mfcc_kmeans': dict(n_clusters=64, subsample=1, min_run_frames=1),
    'mfcc_kmeans_matched': dict(n_clusters=16, subsample=2, min_run_frames=2),
  }
  waves = np.stack([_chirp(), _chirp()[::-1].copy()])
  for name, recipe in baselines.MFCC_RECIPES.items():
    tok = baselines.fit_mfcc_kmeans(waves, seed=0, **recipe)
    assert tok.codebook_size == recipe['n_clusters'], name
    assert (tok.subsample, tok.min_run_frames, tok.pool) == (
      recipe['subsample'],
      recipe['min_run_frames'],
      'mean',
    ), name
    out = tok(waves, SR)
    assert all(0 < len(t) <= waves.shape[1] // HOP // recipe['subsample'] for t in out.tokens)


@pytest.mark.parametrize(
  'codes, m, expected',
  [
    ([1, 2, 3], 1, [1, 2, 3]),  # off
    ([5, 5, 5, 7, 5, 5], 2, [5, 5, 5, 5, 5, 5]),  # neighbours fuse after the merge
    ([1, 1, 1, 2, 3, 3], 2, [1, 1, 1, 1, 3, 3]),  # the longer neighbour: previous
    ([1, 1, 2, 3, 3, 3], 2, [1, 1, 3, 3, 3, 3]),  # the longer neighbour: next
    ([1, 1, 2, 3, 3], 2, [1, 1, 1, 3, 3]),  # tie -> previous
    ([4, 1, 1, 1], 2, [1, 1, 1, 1]),  # leading run
    ([1, 1, 1, 4], 2, [1, 1, 1, 1]),  # trailing run
    ([1, 2, 3, 4, 5], 2, [2, 2, 2, 2, 2]),  # all short -> one run
    ([3, 3], 5, [3, 3]),  # one run shorter than m stays
    ([9], 3, [9]),
    ([], 2, []),
    # Shortest first: the 1-frame run of 3 joins the 4s, then the 2-frame run of 2 joins the (now
    # longer) 4s; merging left to right would give [1] * 5 + [4] * 5 instead.
    ([1, 1, 1, 2, 2, 3, 4, 4, 4, 4], 3, [1, 1, 1] + [4] * 7),
    ([0, 0, 0, 1, 0, 0, 1, 1], 3, [0] * 8),
  ],
)
def test_merge_short_runs(codes, m, expected):
  c = np.asarray(codes, np.int32)
  out = baselines.merge_short_runs(c, m)
  assert out.tolist() == expected and out.dtype == np.int32
  assert out is not c


def test_merge_short_runs_properties():
  rng = np.random.default_rng(0)
  for _ in range(200):
    c = rng.integers(0, 4, size=rng.integers(1, 40))
    m = int(rng.integers(2, 5))
    out = baselines.merge_short_runs(c, m)
    assert out.shape == c.shape
    _, centres = token_strings.collapse_repeats(out)
    starts = np.concatenate([[0], np.nonzero(out[1:] != out[:-1])[0] + 1])
    lengths = np.diff(np.concatenate([starts, [out.size]]))
    assert len(lengths) == 1 or lengths.min() >= m
    assert set(out.tolist()) <= set(c.tolist())
    np.testing.assert_array_equal(baselines.merge_short_runs(out, m), out)  # idempotent
  with pytest.raises(ValueError, match=r'codes \[T\]'):
    baselines.merge_short_runs(np.zeros([2, 3], np.int32), 2)


def _identity_tokenizer(min_run_frames):
  """Frames are the samples themselves (1-dim), codes are 0 or 1."""
  return baselines.KMeansTokenizer(
    np.array([[0.0], [1.0]], np.float32),
    lambda w: w[..., None],
    subsample=1,
    frame_seconds=0.01,
    sample_rate=SR,
    min_run_frames=min_run_frames,
  )


def test_tokenizer_merges_short_runs_before_collapsing():
  wave = np.array([[0, 0, 0, 1, 0, 0, 1, 1]], np.float32)
  out = _identity_tokenizer(1)(wave, SR)
  assert out.tokens == [[0, 1, 0, 1]]
  out = _identity_tokenizer(2)(wave, SR)
  assert out.tokens == [[0, 1]]
  np.testing.assert_allclose(out.times[0], [0.03, 0.07])  # centres of the merged runs
  np.testing.assert_array_equal(_identity_tokenizer(2).codes(wave), wave.astype(np.int64))  # raw


def test_mfcc_save_load_keeps_min_run_frames(tmp_path):
  waves = np.stack([_tone_pair(300, 2000, 6), _tone_pair(2000, 300, 7)])
  tok = baselines.fit_mfcc_kmeans(waves, n_clusters=4, subsample=2, min_run_frames=3, seed=0)
  path = str(tmp_path / 'mfcc.npz')
  tok.save(path)
  loaded = baselines.KMeansTokenizer.load(path, baselines.mfcc_features)
  assert (loaded.subsample, loaded.min_run_frames, loaded.frame_seconds) == (2, 3, 0.01)
  np.testing.assert_array_equal(loaded.centroids, tok.centroids)
  a, b = tok(waves, SR), loaded(waves, SR)
  assert a.tokens == b.tokens
  for x, y in zip(a.times, b.times):
    np.testing.assert_array_equal(x, y)


def test_load_file_without_min_run_frames(tmp_path):
  old = str(tmp_path / 'old.npz')
  np.savez(
    old,
    centroids=np.array([[0.0], [1.0]], np.float32),
    subsample=1,
    pool='mean',
    frame_seconds=0.01,
    sample_rate=SR,
  )
  loaded = baselines.KMeansTokenizer.load(old, lambda w: w[..., None])
  assert loaded.min_run_frames == 1
  assert loaded(np.array([[0, 1, 0]], np.float32), SR).tokens == [[0, 1, 0]]
  with pytest.raises(ValueError, match='min_run_frames'):
    baselines.fit_kmeans(log_spec, _train_waves(), n_clusters=2, min_run_frames=0)
