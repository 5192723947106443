"""Dense geometric baseline tokenizers: k-means on spectral frames, collapsed.

    tok = fit_kmeans(features_fn, train_waves, n_clusters=512, subsample=2, seed=0)
    out = tok(waves, sample_rate)          # token_strings.TokenizerOutput (terminated=None)
    tok.save('kmeans.npz'); tok = KMeansTokenizer.load('kmeans.npz', features_fn)

    # The MFCC k-means baselines (what a user would pick instead of a learned tokenizer):
    for name, recipe in MFCC_RECIPES.items():
      tok = fit_mfcc_kmeans(train_waves, sample_rate=16_000, seed=0, **recipe)
    tok = KMeansTokenizer.load('mfcc.npz', mfcc_features)    # 16 kHz; else functools.partial

* Features: any `features_fn(waves float32 [N, S]) -> [N, F, M]` (the project passes
  `frontend.features`, i.e. normalized log-mel at a 10 ms hop; tests use librosa log-mel), or
  `mfcc_features` (below).
* Frame rate: `subsample` pools every `s` consecutive frames before clustering (`pool='mean'`
  averages them, `pool='stack'` concatenates them into one `s*M` vector; a trailing partial group is
  dropped, as the encoder's conv subsampling does). `subsample=2` puts the k-means frames at the
  VQ tokenizer's 20 ms encoder rate, so both baselines collapse runs of frames at the same rate;
  `subsample=1` clusters raw 10 ms frames. Default 2 (`config.model.subsample`).
* Clustering: `sklearn.cluster.MiniBatchKMeans` (fixed `random_state`) on frames pooled from the
  training-split waveforms (at most `max_frames`, drawn uniformly with the same seed); frames are
  then assigned to the nearest centroid (squared l2, ties to the lower index) by `assign_codes`, a
  numpy function of the saved centroids only, so a loaded tokenizer gives the same ids.
* Short runs (`min_run_frames`, default 1 = off): before collapsing, runs of a repeated code
  shorter than `min_run_frames` pooled frames are relabelled into a neighbouring run by
  `merge_short_runs` (rule in its docstring); no frame is dropped, so a string never becomes empty.
  `KMeansTokenizer.codes` returns the raw (unmerged) frame codes.
* Strings: consecutive repeats of a code collapse into one token
  (`token_strings.strings_from_frame_codes`); each token's time is its (merged) run's centre,
  `(centre_frame + 0.5) * frame_seconds * subsample` seconds (the frame time convention of
  docs/ARCHITECTURE.md). `terminated` is None (nothing is decoded).

**MFCC k-means** (`mfcc_features`, `fit_mfcc_kmeans`, `MFCC_RECIPES`). Features are librosa MFCCs:
13 coefficients (c0 included, DCT-II ortho, no liftering) of the 40-band mel power spectrum
(0 .. sample_rate / 2) in dB (`librosa.power_to_db` defaults: ref 1, floor 80 dB below each
utterance's maximum), a 25 ms Hann window in an FFT of the next power of two, a 10 ms hop
(16 kHz: win_length 400, n_fft 512, hop 160), `center=True` with zero padding, and the last frame
dropped so F = S // hop as in the project's log-mel; plus deltas and delta-deltas
(`librosa.feature.delta`, width 9, computed on the kept frames) -> 39 dims; then each utterance is
normalized per dimension over its frames (mean 0, variance 1). Two recipes:
  * `'mfcc_kmeans'`: 64 clusters on 10 ms frames, repeats collapsed;
  * `'mfcc_kmeans_matched'`: brought to a lower token rate: 16 clusters on 20 ms frames (pairs
    mean-pooled), runs shorter than 2 pooled frames merged before collapsing.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Callable, Iterable, Optional, Union

from absl import logging
import librosa
import numpy as np
from sklearn import cluster

from pairalign_jax import token_strings

FeaturesFn = Callable[[np.ndarray], np.ndarray]
POOLS = ('mean', 'stack')

# Settings of the two MFCC k-means baselines (keyword arguments of `fit_mfcc_kmeans`).
MFCC_RECIPES = {
  'mfcc_kmeans': dict(n_clusters=64, subsample=1, min_run_frames=1),
  'mfcc_kmeans_matched': dict(n_clusters=16, subsample=2, min_run_frames=2),
}
MFCC_COEFFS = 13
MFCC_MELS = 40
MFCC_WINDOW_SECONDS = 0.025
MFCC_HOP_SECONDS = 0.010
DELTA_WIDTH = 9  # librosa.feature.delta's default


def mfcc_framing(sample_rate: int = 16_000) -> tuple[int, int, int]:
  """`(n_fft, win_length, hop_length)` of `mfcc_features`: 25 ms window, next power of 2, 10 ms."""
  win = int(round(MFCC_WINDOW_SECONDS * sample_rate))
  hop = int(round(MFCC_HOP_SECONDS * sample_rate))
  if hop < 1:
    raise ValueError(f'sample_rate={sample_rate} is too low for a 10 ms hop')
  return 2 ** math.ceil(math.log2(win)), win, hop


def mfcc_features(waves: np.ndarray, sample_rate: int = 16_000) -> np.ndarray:
  """MFCCs + deltas + delta-deltas, normalized per utterance: `[N, S]` -> float32 `[N, F, 39]`.

  `F = S // hop` (see `mfcc_framing`); the module docstring gives the settings. Every dimension of
  every utterance has mean 0 and variance 1 over its frames (one constant over it becomes 0).
  """
  waves = np.asarray(waves, np.float32)
  if waves.ndim != 2:
    raise ValueError(f'waves must be [N, samples], got shape {waves.shape}')
  n_fft, win, hop = mfcc_framing(sample_rate)
  num_frames = waves.shape[1] // hop
  if num_frames < DELTA_WIDTH:
    raise ValueError(
      f'mfcc_features needs at least {DELTA_WIDTH * hop} samples '
      f'({DELTA_WIDTH} frames for the deltas), got {waves.shape[1]}'
    )
  mel = librosa.feature.melspectrogram(
    y=waves,
    sr=sample_rate,
    n_fft=n_fft,
    hop_length=hop,
    win_length=win,
    window='hann',
    center=True,
    pad_mode='constant',
    power=2.0,
    n_mels=MFCC_MELS,
  )
  # power_to_db's top_db floor is relative to the array's maximum: per utterance, as
  # librosa.feature.mfcc(y=wave) does, so an utterance's features do not depend on its batch.
  db = np.stack([librosa.power_to_db(row) for row in mel])  # [N, 40, F + 1]
  m = librosa.feature.mfcc(S=db, n_mfcc=MFCC_COEFFS)[..., :num_frames]  # [N, 13, F]
  x = np.concatenate(
    [
      m,
      librosa.feature.delta(m, width=DELTA_WIDTH, axis=-1),
      librosa.feature.delta(m, width=DELTA_WIDTH, order=2, axis=-1),
    ],
    axis=1,
  ).astype(np.float64)  # [N, 39, F]
  x = x - x.mean(axis=-1, keepdims=True)
  std = x.std(axis=-1, keepdims=True)
  x = x / np.where(std > 1e-8, std, 1.0)
  return np.ascontiguousarray(np.swapaxes(x, 1, 2), dtype=np.float32)


def merge_short_runs(codes: np.ndarray, min_run_frames: int) -> np.ndarray:
  """Relabels runs of a repeated code shorter than `min_run_frames` frames: `[T]` -> `[T]`.

  Rule (deterministic; applied until every run is at least `min_run_frames` long or one run is
  left): take the shortest run (the leftmost among equally short ones) and give it the code of its
  longer neighbouring run (the previous one when both are equally long; a leading or trailing run
  takes its only neighbour's); neighbours that now share a code form one run, with the summed
  length. Frames are only relabelled, never dropped, so a non-empty input stays non-empty (a string
  of only short runs ends as one run). `min_run_frames <= 1` returns the codes unchanged (a copy).
  """
  c = np.asarray(codes)
  if c.ndim != 1:
    raise ValueError(f'merge_short_runs expects codes [T], got shape {c.shape}')
  if min_run_frames <= 1 or c.size == 0:
    return c.copy()
  starts = np.concatenate([[0], np.nonzero(c[1:] != c[:-1])[0] + 1])
  run_codes = c[starts].tolist()
  lengths = np.diff(np.concatenate([starts, [c.size]])).tolist()
  while len(lengths) > 1:
    i = min(range(len(lengths)), key=lengths.__getitem__)  # shortest, leftmost on ties
    if lengths[i] >= min_run_frames:
      break
    if i == 0:
      j = 1
    elif i == len(lengths) - 1:
      j = i - 1
    else:
      j = i + 1 if lengths[i + 1] > lengths[i - 1] else i - 1
    lengths[j] += lengths[i]
    del lengths[i], run_codes[i]
    # Its two former neighbours (now at i - 1 and i) may share a code: fuse them.
    if 0 < i < len(lengths) and run_codes[i - 1] == run_codes[i]:
      lengths[i - 1] += lengths[i]
      del lengths[i], run_codes[i]
  return np.repeat(np.asarray(run_codes, dtype=c.dtype), lengths)


def pool_frames(feats: np.ndarray, subsample: int, pool: str = 'mean') -> np.ndarray:
  """`[N, F, M]` -> `[N, F // s, M]` (`'mean'`) or `[N, F // s, s * M]` (`'stack'`)."""
  feats = np.asarray(feats, np.float32)
  if feats.ndim != 3:
    raise ValueError(f'features must be [N, frames, dims], got shape {feats.shape}')
  if subsample < 1:
    raise ValueError(f'subsample must be >= 1, got {subsample}')
  if pool not in POOLS:
    raise ValueError(f'pool must be one of {POOLS}, got {pool!r}')
  if subsample == 1:
    return feats
  n, f, m = feats.shape
  t = f // subsample
  if t == 0:
    raise ValueError(f'{f} frames is fewer than subsample={subsample}')
  g = feats[:, : t * subsample].reshape(n, t, subsample, m)  # [N, T, s, M]
  return g.mean(axis=2) if pool == 'mean' else g.reshape(n, t, subsample * m)


def assign_codes(frames: np.ndarray, centroids: np.ndarray) -> np.ndarray:
  """Nearest centroid by squared l2: `frames [..., D]`, `centroids [K, D]` -> `[...]` int64."""
  x = np.asarray(frames, np.float32)
  c = np.asarray(centroids, np.float32)
  if x.shape[-1] != c.shape[-1]:
    raise ValueError(f'frame dim {x.shape[-1]} != centroid dim {c.shape[-1]}')
  flat = x.reshape(-1, x.shape[-1])
  d = (flat * flat).sum(1, keepdims=True) - 2.0 * flat @ c.T + (c * c).sum(1)[None]  # [n, K]
  return d.argmin(axis=1).reshape(x.shape[:-1]).astype(np.int64)


@dataclasses.dataclass
class KMeansTokenizer:
  """A fitted k-means frame tokenizer (see the module docstring)."""

  centroids: np.ndarray  # [K, D] float32
  features_fn: FeaturesFn
  subsample: int = 2
  pool: str = 'mean'
  frame_seconds: float = 0.01  # hop of features_fn frames, seconds
  sample_rate: int = 16_000
  min_run_frames: int = 1  # runs shorter than this (pooled frames) merge before collapsing

  @property
  def codebook_size(self) -> int:
    return int(self.centroids.shape[0])

  def frames(self, waves: np.ndarray) -> np.ndarray:
    """Pooled feature frames `[N, T, D]`."""
    waves = np.asarray(waves, np.float32)
    if waves.ndim != 2:
      raise ValueError(f'waves must be [N, samples], got shape {waves.shape}')
    return pool_frames(np.asarray(self.features_fn(waves)), self.subsample, self.pool)

  def codes(self, waves: np.ndarray) -> np.ndarray:
    """Frame codes `[N, T]` int64, before `merge_short_runs`."""
    return assign_codes(self.frames(waves), self.centroids)

  def __call__(
    self, waves: np.ndarray, sample_rate: Optional[int] = None
  ) -> token_strings.TokenizerOutput:
    if sample_rate is not None and int(sample_rate) != self.sample_rate:
      raise ValueError(
        f'KMeansTokenizer works at {self.sample_rate} Hz, got sample_rate={sample_rate}'
      )
    codes = self.codes(waves)  # [N, T]
    merged = (
      np.stack([merge_short_runs(row, self.min_run_frames) for row in codes])
      if len(codes)
      else codes
    )
    out = token_strings.strings_from_frame_codes(merged, self.frame_seconds * self.subsample)
    return dataclasses.replace(out, terminated=None)  # nothing is decoded

  def save(self, path: str) -> None:
    """Writes the centroids and settings to an `.npz` file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(
      path,
      centroids=np.asarray(self.centroids, np.float32),
      subsample=self.subsample,
      pool=self.pool,
      frame_seconds=self.frame_seconds,
      sample_rate=self.sample_rate,
      min_run_frames=self.min_run_frames,
    )

  @classmethod
  def load(cls, path: str, features_fn: FeaturesFn) -> 'KMeansTokenizer':
    """Reads `save`'s file (files written before `min_run_frames` existed load with 1)."""
    with np.load(path) as z:
      missing = {'centroids', 'subsample', 'pool', 'frame_seconds', 'sample_rate'} - set(z.files)
      if missing:
        raise ValueError(f'{path}: not a KMeansTokenizer file (missing {sorted(missing)})')
      return cls(
        centroids=z['centroids'].astype(np.float32),
        features_fn=features_fn,
        subsample=int(z['subsample']),
        pool=str(z['pool']),
        frame_seconds=float(z['frame_seconds']),
        sample_rate=int(z['sample_rate']),
        min_run_frames=int(z['min_run_frames']) if 'min_run_frames' in z.files else 1,
      )


def fit_kmeans(
  features_fn: FeaturesFn,
  waves: Union[np.ndarray, Iterable[np.ndarray]],
  *,
  n_clusters: int,
  subsample: int = 2,
  pool: str = 'mean',
  seed: int = 0,
  max_frames: int = 200_000,
  frame_seconds: float = 0.01,
  sample_rate: int = 16_000,
  batch_size: int = 4096,
  n_init: int = 3,
  min_run_frames: int = 1,
) -> KMeansTokenizer:
  """Fits k-means on pooled feature frames of training waveforms.

  Args:
    features_fn: `waves [N, S] -> [N, F, M]`.
    waves: float32 `[N, S]`, or an iterable of such batches (training-split segments).
    n_clusters: K.
    subsample, pool: frame pooling (`pool_frames`).
    seed: `random_state` of MiniBatchKMeans and of the frame subsampling.
    max_frames: at most this many frames are clustered (uniform draw without replacement).
    frame_seconds, sample_rate: stored with the tokenizer (times, input check).
    batch_size, n_init: MiniBatchKMeans settings.
    min_run_frames: stored with the tokenizer (`merge_short_runs` before collapsing; 1 = off).
  """
  if min_run_frames < 1:
    raise ValueError(f'min_run_frames must be >= 1, got {min_run_frames}')
  batches = [waves] if isinstance(waves, np.ndarray) else waves
  probe = KMeansTokenizer(
    np.zeros([1, 1], np.float32), features_fn, subsample, pool, frame_seconds, sample_rate
  )
  chunks = []
  for b in batches:
    f = probe.frames(b)
    chunks.append(f.reshape(-1, f.shape[-1]))
  if not chunks:
    raise ValueError('fit_kmeans: no training waveforms')
  x = np.concatenate(chunks)
  if x.shape[0] < n_clusters:
    raise ValueError(f'fit_kmeans: {x.shape[0]} frames is fewer than n_clusters={n_clusters}')
  rng = np.random.default_rng(seed)
  if x.shape[0] > max_frames:
    x = x[np.sort(rng.choice(x.shape[0], size=max_frames, replace=False))]
  km = cluster.MiniBatchKMeans(
    n_clusters=n_clusters, random_state=seed, batch_size=min(batch_size, x.shape[0]), n_init=n_init
  )
  km.fit(x)
  logging.info(
    'k-means baseline: %d clusters on %d frames of dim %d (inertia %.3g)',
    n_clusters,
    x.shape[0],
    x.shape[1],
    km.inertia_,
  )
  return KMeansTokenizer(
    centroids=km.cluster_centers_.astype(np.float32),
    features_fn=features_fn,
    subsample=subsample,
    pool=pool,
    frame_seconds=frame_seconds,
    sample_rate=sample_rate,
    min_run_frames=min_run_frames,
  )


def fit_mfcc_kmeans(
  train_waves: Union[np.ndarray, Iterable[np.ndarray]],
  *,
  sample_rate: int = 16_000,
  n_clusters: int = 64,
  subsample: int = 1,
  min_run_frames: int = 1,
  seed: int = 0,
  max_frames: int = 200_000,
) -> KMeansTokenizer:
  """The MFCC k-means baseline: `fit_kmeans` on `mfcc_features` (mean pooling).

  Defaults are the `'mfcc_kmeans'` recipe; `**MFCC_RECIPES['mfcc_kmeans_matched']` gives the
  lower-rate variant. `train_waves`: float32 `[N, S]` at `sample_rate`, or an iterable of batches.
  """
  _, _, hop = mfcc_framing(sample_rate)
  features_fn = (
    mfcc_features
    if sample_rate == 16_000
    else functools.partial(mfcc_features, sample_rate=sample_rate)
  )
  return fit_kmeans(
    features_fn,
    train_waves,
    n_clusters=n_clusters,
    subsample=subsample,
    pool='mean',
    seed=seed,
    max_frames=max_frames,
    frame_seconds=hop / sample_rate,
    sample_rate=sample_rate,
    min_run_frames=min_run_frames,
  )
