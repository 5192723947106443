"""Acoustic units: the stage-0 code-prediction targets when `loss.code_pred_targets = 'units'`.

By default each view's encoder frames predict the other view's VQ codes (stage 0's cross-view code
prediction). Those codes are the run's own, trained by the mel reconstruction to keep every detail
of the spectrum, the speaker's included; on a small corpus of voices unlike the test voices the
encoder then ends no more speaker-invariant than an MFCC k-means (docs/results.md, "What keeps the
VQ stage below the MFCC k-means"). With 'units' the frames predict fixed acoustic units instead,
as HuBERT's first iteration does: k-means clusters of cepstral frames (the first `num_coeffs`
DCT-II coefficients of the normalized log-mel frame and their deltas, standardized per utterance,
averaged to the encoder's frame rate), fitted once at the start of training on training audio.

Pure functions here except `fit_from_training_audio`, which reads training recordings; the
centroids live in the model's 'vq_stats' (`UNIT_CENTROIDS`), so a resumed run reads the same
units.
"""

from __future__ import annotations

from typing import Optional

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pairalign_jax import frontend

# The 'vq_stats' entry of the VQ module holding the unit centroids [C, 2 * num_coeffs]
# (all zeros: not fitted yet).
UNIT_CENTROIDS = 'unit_centroids'
TARGETS = ('vq', 'units')


def unit_features(mel: jax.Array, subsample: int, num_coeffs: int) -> jax.Array:
  """Normalized log-mel [N, F, M] -> unit features [N, F // subsample, 2 * num_coeffs].

  The first `num_coeffs` DCT-II coefficients of each frame and their deltas ((x[t+1] - x[t-1])
  / 2, edges repeated), each standardized over the utterance's frames, then averaged over each
  run of `subsample` frames (the encoder's frame rate; trailing frames dropped as the encoder
  drops them)."""
  if mel.ndim != 3:
    raise ValueError(f'mel must be [batch, frames, bands], got shape {mel.shape}')
  basis = jnp.asarray(frontend.dct_basis(mel.shape[-1], num_coeffs), jnp.float32)  # [K, M]
  ceps = jnp.einsum('nfm,km->nfk', mel.astype(jnp.float32), basis)  # [N, F, K]
  padded = jnp.pad(ceps, ((0, 0), (1, 1), (0, 0)), mode='edge')
  deltas = 0.5 * (padded[:, 2:] - padded[:, :-2])  # [N, F, K]
  x = jnp.concatenate([ceps, deltas], axis=-1)  # [N, F, 2K]
  x = (x - jnp.mean(x, axis=1, keepdims=True)) * jax.lax.rsqrt(
    jnp.var(x, axis=1, keepdims=True) + 1e-5
  )
  t = x.shape[1] // subsample
  return jnp.mean(x[:, : t * subsample].reshape(x.shape[0], t, subsample, -1), axis=2)


def assign_units(features: jax.Array, centroids: jax.Array) -> jax.Array:
  """Features [N, T, D], centroids [C, D] -> nearest centroid per frame [N, T] int32."""
  d2 = (
    jnp.sum(jnp.square(features), axis=-1, keepdims=True)
    - 2.0 * jnp.einsum('ntd,cd->ntc', features, centroids, precision=jax.lax.Precision.HIGHEST)
    + jnp.sum(jnp.square(centroids), axis=-1)
  )  # [N, T, C]
  return jnp.argmin(d2, axis=-1).astype(jnp.int32)


def fit_centroids(features: np.ndarray, num_units: int, seed: int) -> np.ndarray:
  """k-means (scikit-learn, fixed `seed`, one initialization) of frames [R, T, D] -> [C, D]."""
  from sklearn import cluster  # imported here: the model code reads only UNIT_CENTROIDS

  frames = np.asarray(features, np.float64).reshape(-1, features.shape[-1])
  if frames.shape[0] < num_units:
    raise ValueError(f'{frames.shape[0]} frames cannot make {num_units} units')
  km = cluster.KMeans(num_units, n_init=1, max_iter=100, random_state=int(seed)).fit(frames)
  return km.cluster_centers_.astype(np.float32)


def fit_from_training_audio(
  config: ml_collections.ConfigDict, *, cache_dir: Optional[str] = None
) -> np.ndarray:
  """The unit centroids [C, 2 * num_coeffs] of a run: `loss.unit_fit_recordings` training
  recordings (drawn with the run's seed), each augmented once as a training view is
  (`code_group_choice.training_view_waves`), through the run's front end; a pure function of
  the config and the training data."""
  from pairalign_jax import code_group_choice  # the training-audio reader the group choice uses

  waves, _, stats = code_group_choice.training_view_waves(
    config, int(config.loss.unit_fit_recordings), cache_dir=cache_dir
  )
  bad = sum(stats.bad.values())
  if bad:
    logging.warning('unit fit: %d bad training recordings skipped (%s)', bad, dict(stats.bad))
  fcfg = frontend.FrontendConfig.from_config(config)
  subsample, coeffs = int(config.model.subsample), int(config.loss.unit_coeffs)
  features_fn = jax.jit(
    lambda w: unit_features(frontend.normalize(frontend.log_mel(w, fcfg)), subsample, coeffs)
  )
  features = np.concatenate(
    [np.asarray(features_fn(jnp.asarray(waves[i : i + 64]))) for i in range(0, len(waves), 64)]
  )  # [R, T, D]
  return fit_centroids(features, int(config.loss.unit_clusters), int(config.seed))
