"""The dense geometric baseline tokenizer: k-means on log-mel frames, collapsed (DESIGN §5).

    tok = fit_kmeans(features_fn, train_waves, n_clusters=512, subsample=2, seed=0)
    out = tok(waves, sample_rate)          # runner.TokenizerOutput(tokens, times, terminated=None)
    tok.save('kmeans.npz'); tok = KMeansTokenizer.load('kmeans.npz', features_fn)

* Features: any `features_fn(waves float32 [N, S]) -> [N, F, M]` (the project passes
  `frontend.features`, i.e. normalized log-mel at a 10 ms hop; tests use librosa log-mel).
* Frame rate: `subsample` pools every `s` consecutive frames before clustering (`pool='mean'`
  averages them, `pool='stack'` concatenates them into one `s*M` vector; a trailing partial group is
  dropped, as the encoder's conv subsampling does). `subsample=2` puts the k-means frames at the
  VQ tokenizer's 20 ms encoder rate, so both baselines collapse runs of frames at the same rate;
  `subsample=1` clusters raw 10 ms frames. Default 2 (`config.model.subsample`).
* Clustering: `sklearn.cluster.MiniBatchKMeans` (fixed `random_state`) on frames pooled from the
  training-split waveforms (at most `max_frames`, drawn uniformly with the same seed); frames are
  then assigned to the nearest centroid (squared l2, ties to the lower index) by `assign_codes`, a
  numpy function of the saved centroids only, so a loaded tokenizer gives the same ids.
* Strings: consecutive repeats of a code collapse into one token (`collapse_frames`); each token's
  time is its run's centre, `(centre_frame + 0.5) * frame_seconds * subsample` seconds (the frame
  time convention of docs/ARCHITECTURE.md). `terminated` is None (nothing is decoded).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterable, Optional, Union

from absl import logging
import numpy as np
from sklearn import cluster

from pairalign_jax.evaluation import runner

FeaturesFn = Callable[[np.ndarray], np.ndarray]
POOLS = ('mean', 'stack')


def collapse_frames(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Merges runs of a repeated code: `codes [T]` -> `(tokens [n] int64, centres [n] float64)`.

  `centres[i]` is the centre frame index of token `i`'s run, `(first + last) / 2` (a half-integer
  for runs of even length).
  """
  c = np.asarray(codes)
  if c.ndim != 1:
    raise ValueError(f'collapse_frames expects codes [T], got shape {c.shape}')
  if c.size == 0:
    return np.zeros([0], np.int64), np.zeros([0], np.float64)
  starts = np.concatenate([[0], np.nonzero(c[1:] != c[:-1])[0] + 1])
  ends = np.concatenate([starts[1:], [c.size]])                # exclusive
  return c[starts].astype(np.int64), (starts + ends - 1) / 2.0


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
  g = feats[:, :t * subsample].reshape(n, t, subsample, m)      # [N, T, s, M]
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
  centroids: np.ndarray          # [K, D] float32
  features_fn: FeaturesFn
  subsample: int = 2
  pool: str = 'mean'
  frame_seconds: float = 0.01    # hop of features_fn frames, seconds
  sample_rate: int = 16_000

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
    """Frame codes `[N, T]` int64."""
    return assign_codes(self.frames(waves), self.centroids)

  def __call__(self, waves: np.ndarray, sample_rate: Optional[int] = None) -> runner.TokenizerOutput:
    if sample_rate is not None and int(sample_rate) != self.sample_rate:
      raise ValueError(f'KMeansTokenizer works at {self.sample_rate} Hz, got sample_rate={sample_rate}')
    tokens, times = [], []
    step = self.frame_seconds * self.subsample
    for row in self.codes(waves):
      tok, centre = collapse_frames(row)
      tokens.append(tok.tolist())
      times.append(((centre + 0.5) * step).astype(np.float32))
    return runner.TokenizerOutput(tokens=tokens, times=times, terminated=None)

  def save(self, path: str) -> None:
    """Writes the centroids and settings to an `.npz` file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, centroids=np.asarray(self.centroids, np.float32), subsample=self.subsample,
             pool=self.pool, frame_seconds=self.frame_seconds, sample_rate=self.sample_rate)

  @classmethod
  def load(cls, path: str, features_fn: FeaturesFn) -> 'KMeansTokenizer':
    with np.load(path) as z:
      missing = {'centroids', 'subsample', 'pool', 'frame_seconds', 'sample_rate'} - set(z.files)
      if missing:
        raise ValueError(f'{path}: not a KMeansTokenizer file (missing {sorted(missing)})')
      return cls(centroids=z['centroids'].astype(np.float32), features_fn=features_fn,
                 subsample=int(z['subsample']), pool=str(z['pool']),
                 frame_seconds=float(z['frame_seconds']), sample_rate=int(z['sample_rate']))


def fit_kmeans(features_fn: FeaturesFn, waves: Union[np.ndarray, Iterable[np.ndarray]], *,
               n_clusters: int, subsample: int = 2, pool: str = 'mean', seed: int = 0,
               max_frames: int = 200_000, frame_seconds: float = 0.01, sample_rate: int = 16_000,
               batch_size: int = 4096, n_init: int = 3) -> KMeansTokenizer:
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
  """
  batches = [waves] if isinstance(waves, np.ndarray) else waves
  probe = KMeansTokenizer(np.zeros([1, 1], np.float32), features_fn, subsample, pool,
                          frame_seconds, sample_rate)
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
  km = cluster.MiniBatchKMeans(n_clusters=n_clusters, random_state=seed,
                               batch_size=min(batch_size, x.shape[0]), n_init=n_init)
  km.fit(x)
  logging.info('k-means baseline: %d clusters on %d frames of dim %d (inertia %.3g)', n_clusters,
               x.shape[0], x.shape[1], km.inertia_)
  return KMeansTokenizer(centroids=km.cluster_centers_.astype(np.float32), features_fn=features_fn,
                         subsample=subsample, pool=pool, frame_seconds=frame_seconds,
                         sample_rate=sample_rate)
