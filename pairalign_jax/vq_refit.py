"""Refitting the VQ stage to the encoder at the end of stage 0 (`config.vq.refit = 'pca_kmeans'`).

Why (measured, docs/results.md "Refitting the VQ stage to the encoder"): with acoustic-unit targets
for the code prediction (`loss.code_pred_targets = 'units'`) the encoder's frames H become far more
speaker-invariant than MFCC frames on voices never heard in training (a k-means of H: recall@1
0.97-0.98 on the eSpeak NG validation split, an MFCC k-means 0.83), but the VQ stage trained beside
them reads 0.53: its projection is trained by the mel reconstruction, which keeps what differs
between voices, and its 512-code EMA codebook splits one sound into many codes.

The refit keeps the encoder and replaces the quantizer by what a k-means of H would give, in the
VQ's own form (a projection to `model.code_dim`, l2-normalized, nearest code by cosine):

1. `vq.refit_recordings` training recordings (drawn with the run's seed, one augmented view each,
   `code_group_choice.training_view_waves`), encoded as the tokenizer encodes audio: frames
   H [R, T, d].
2. The projection: the top `code_dim` principal directions of those frames (kernel [d, c] = the
   principal axes, bias = -mean @ kernel), so z = l2norm(PCA(H)).
3. The codebook: a k-means (`units.fit_centroids`, the run's seed) of the z frames into
   `codebook_size` clusters, l2-normalized; `cluster_size` = the frames each code takes by cosine
   (what weights the code grouping), `embed_sum` = codebook x count (the EMA statistics that give
   that codebook back).

Run once, at the start of stage 1, before the code grouping is chosen; the encoder, the VQ and
the stage-0 heads are then frozen (`schedule.freeze_encoder = 'stage1'`, checked by
config_validation), so the decoder's targets and the tokenizer's VQ codes are those of the
refitted quantizer. Student and teacher get the same values (they are equal at the end of stage 0).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pairalign_jax import code_group_choice
from pairalign_jax import frontend
from pairalign_jax import models
from pairalign_jax import units as units_lib

REFITS = ('none', 'pca_kmeans')


@dataclasses.dataclass(frozen=True)
class VQRefit:
  """The refitted quantizer and what the fit measured."""

  kernel: np.ndarray  # [d, c] projection (principal axes)
  bias: np.ndarray  # [c]
  codebook: np.ndarray  # [K, c] l2-normalized
  cluster_size: np.ndarray  # [K] frames assigned to each code (cosine)
  embed_sum: np.ndarray  # [K, c] codebook * cluster_size
  explained_variance: float  # share of H's variance the projection keeps
  num_frames: int

  def as_dict(self) -> dict:
    used = int(np.sum(self.cluster_size > 0))
    return {
      'explained_variance': round(float(self.explained_variance), 4),
      'num_frames': int(self.num_frames),
      'codes_used': used,
      'codebook_size': int(self.codebook.shape[0]),
      'code_dim': int(self.codebook.shape[1]),
    }


def _l2_normalize(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def fit_quantizer(frames: np.ndarray, code_dim: int, codebook_size: int, seed: int) -> VQRefit:
  """PCA to `code_dim` + l2 normalization + k-means of encoder frames [N, d] (module docstring)."""
  from sklearn import decomposition  # imported here: the model code never needs scikit-learn

  frames = np.asarray(frames, np.float64)
  if frames.ndim != 2:
    raise ValueError(f'frames must be [N, d], got shape {frames.shape}')
  n, d = frames.shape
  if code_dim > d:
    raise ValueError(f'a {d}-dim encoder cannot be projected to code_dim={code_dim}')
  if n < codebook_size:
    raise ValueError(f'{n} frames cannot make a {codebook_size}-code codebook')
  pca = decomposition.PCA(code_dim, svd_solver='full').fit(frames)
  kernel = pca.components_.T  # [d, c]
  bias = -pca.mean_ @ kernel  # [c]
  z = _l2_normalize(frames @ kernel + bias)  # [N, c]
  codebook = _l2_normalize(units_lib.fit_centroids(z[None], codebook_size, seed).astype(np.float64))
  codes = np.argmax(z @ codebook.T, axis=-1)  # [N] cosine, as the VQ assigns
  counts = np.bincount(codes, minlength=codebook_size).astype(np.float64)
  return VQRefit(
    kernel=kernel.astype(np.float32),
    bias=bias.astype(np.float32),
    codebook=codebook.astype(np.float32),
    cluster_size=counts.astype(np.float32),
    embed_sum=(codebook * counts[:, None]).astype(np.float32),
    explained_variance=float(np.sum(pca.explained_variance_ratio_)),
    num_frames=int(n),
  )


def encoder_frames(
  model: models.PairAlign,
  variables,
  waves: np.ndarray,
  config: ml_collections.ConfigDict,
  *,
  batch_size: int = 64,
) -> np.ndarray:
  """Encoder frames H [R, T, d] (float32) of waveforms [R, S], read as the tokenizer reads audio
  (log-mel, normalized, no VTLP warp)."""
  fcfg = frontend.FrontendConfig.from_config(config)

  @jax.jit
  def encode(variables, waves):  # [B, S] -> [B, T, d]
    mel = frontend.normalize(frontend.log_mel(waves, fcfg))
    h = model.apply(variables, mel, train=False, method=models.PairAlign.encode)
    return h.astype(jnp.float32)

  return code_group_choice.map_row_batches(
    lambda w: encode(variables, w), waves, batch_size=batch_size
  )


def refit_from_training_audio(
  model: models.PairAlign,
  variables,
  config: ml_collections.ConfigDict,
  *,
  cache_dir: Optional[str] = None,
) -> tuple[VQRefit, dict]:
  """The refitted quantizer of a run's stage-0 model `variables` ({'params', 'vq_stats'}) and the
  bad-input counts of the recordings read; a pure function of the config, the variables and the
  training data."""
  waves, _, stats = code_group_choice.training_view_waves(
    config, int(config.vq.refit_recordings), cache_dir=cache_dir
  )
  frames = encoder_frames(model, variables, waves, config)  # [R, T, d]
  refit = fit_quantizer(
    frames.reshape(-1, frames.shape[-1]),
    int(config.model.code_dim),
    int(config.model.codebook_size),
    int(config.seed),
  )
  return refit, dict(stats.bad)
