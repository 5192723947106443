"""Log-mel front end and SpecAugment in pure JAX (runs on the accelerator).

`log_mel` reproduces ``librosa.feature.melspectrogram(y, sr=..., n_fft=..., hop_length=...,
win_length=..., window='hann', center=True, pad_mode='constant', power=2.0, n_mels=..., fmin=...,
fmax=...)`` followed by ``log(max(mel, log_floor))``, keeping the first ``S // hop_length`` frames
(librosa gives ``1 + S // hop_length``; the last, mostly padding, frame is dropped so 3 s at a 10 ms
hop is exactly 300 frames). The mel matrix and the window come from librosa itself, built once per
`FrontendConfig` (the config is a frozen, hashable dataclass).

Framing avoids a gather: the zero-padded signal is cut into hop-sized chunks and every frame is the
concatenation of ``ceil(n_fft / hop)`` consecutive chunks, cropped to ``n_fft`` samples.
"""

import dataclasses
import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
import librosa
import ml_collections
import numpy as np
import scipy.fft


@dataclasses.dataclass(frozen=True)
class FrontendConfig:
  """Front-end settings (hashable; travels with the checkpoint's config)."""

  sample_rate: int
  n_fft: int
  win_length: int
  hop_length: int
  n_mels: int
  fmin: float
  fmax: float
  log_floor: float
  normalize: bool
  specaugment: bool
  freq_masks: int
  freq_width: int
  time_masks: int
  time_width: int
  # Vocal-tract-length perturbation (training only): range of the warp factor alpha; (1, 1) = off.
  vtlp_alpha: tuple[float, float]
  # Cepstral smoothing of every log-mel frame: 0 = off; K > 0 keeps the frame's first K DCT-II
  # coefficients over the mel bands (`cepstral_projection`): its spectral envelope, as MFCCs keep
  # it, without the pitch harmonics that the mel bands resolve at low frequencies.
  cepstral_coeffs: int

  def __post_init__(self):
    if self.win_length > self.n_fft:
      raise ValueError(f'win_length ({self.win_length}) must be <= n_fft ({self.n_fft})')
    if self.hop_length <= 0:
      raise ValueError(f'hop_length must be positive, got {self.hop_length}')
    if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
      raise ValueError(
        f'need 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, '
        f'fmax={self.fmax}, sample_rate={self.sample_rate}'
      )
    if self.log_floor <= 0:
      raise ValueError(f'log_floor must be positive, got {self.log_floor}')
    if not 0 <= self.cepstral_coeffs <= self.n_mels:
      raise ValueError(
        f'cepstral_coeffs must be in [0, n_mels={self.n_mels}] (0 = off), got '
        f'{self.cepstral_coeffs}'
      )
    lo, hi = self.vtlp_alpha
    if not 0.5 <= lo <= hi <= 2.0:
      raise ValueError(
        f'vtlp_alpha must be (low, high) with 0.5 <= low <= high <= 2, got {self.vtlp_alpha}'
      )

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'FrontendConfig':
    """Reads ``config.audio`` and ``config.frontend`` (keys: `default_config.py`)."""
    fe = config.frontend
    sa = fe.specaugment
    vtlp = fe.vtlp
    vtlp_alpha = (1.0, 1.0)
    if vtlp.enabled:
      vtlp_alpha = (float(vtlp.alpha[0]), float(vtlp.alpha[1]))
    return cls(
      sample_rate=int(config.audio.sample_rate),
      n_fft=int(fe.n_fft),
      win_length=int(fe.win_length),
      hop_length=int(fe.hop_length),
      n_mels=int(fe.n_mels),
      fmin=float(fe.fmin),
      fmax=float(fe.fmax),
      log_floor=float(fe.log_floor),
      normalize=bool(fe.normalize),
      specaugment=bool(sa.enabled),
      freq_masks=int(sa.freq_masks),
      freq_width=int(sa.freq_width),
      time_masks=int(sa.time_masks),
      time_width=int(sa.time_width),
      vtlp_alpha=vtlp_alpha,
      cepstral_coeffs=int(fe.get('cepstral_coeffs', 0)),  # configs saved before it: off
    )

  @property
  def vtlp(self) -> bool:
    return self.vtlp_alpha != (1.0, 1.0)

  def num_frames(self, num_samples: int) -> int:
    """Frames `log_mel` returns for ``num_samples`` samples: ``num_samples // hop_length``."""
    return num_samples // self.hop_length


@functools.lru_cache(maxsize=16)
def mel_filterbank(cfg: FrontendConfig) -> np.ndarray:
  """librosa's (Slaney) mel matrix, transposed: float32 [n_fft // 2 + 1, n_mels]."""
  mel = librosa.filters.mel(
    sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax
  )  # [n_mels, n_fft // 2 + 1]
  return np.ascontiguousarray(mel.T.astype(np.float32))


@functools.lru_cache(maxsize=16)
def analysis_window(cfg: FrontendConfig) -> np.ndarray:
  """Periodic Hann window of ``win_length`` zero-padded (centred) to ``n_fft``, as librosa.stft."""
  win = librosa.filters.get_window('hann', cfg.win_length, fftbins=True)
  return librosa.util.pad_center(win, size=cfg.n_fft).astype(np.float32)  # [n_fft]


def _frames(waveform: jax.Array, cfg: FrontendConfig) -> jax.Array:
  """[B, S] -> [B, S // hop, n_fft] frames of the centre-padded (zeros) signal."""
  b, s = waveform.shape
  hop, n_fft = cfg.hop_length, cfg.n_fft
  num_frames = s // hop
  if num_frames < 1:
    raise ValueError(f'waveform of {s} samples is shorter than one hop ({hop} samples)')
  chunks_per_frame = math.ceil(n_fft / hop)
  total_chunks = num_frames + chunks_per_frame - 1
  pad = n_fft // 2
  right = total_chunks * hop - s - pad  # may be negative: crop instead
  padded = jnp.pad(waveform, ((0, 0), (pad, max(right, 0))))
  padded = padded[:, : total_chunks * hop]
  chunks = padded.reshape(b, total_chunks, hop)  # [B, C, hop]
  frames = jnp.concatenate(
    [chunks[:, k : k + num_frames] for k in range(chunks_per_frame)], axis=-1
  )  # [B, F, k * hop]
  return frames[..., :n_fft]  # [B, F, n_fft]


def power_spectrogram(waveform: jax.Array, cfg: FrontendConfig) -> jax.Array:
  """|STFT|^2 of float [B, S] -> float32 [B, S // hop, n_fft // 2 + 1]."""
  waveform = jnp.asarray(waveform, jnp.float32)
  if waveform.ndim != 2:
    raise ValueError(f'waveform must be [batch, samples], got shape {waveform.shape}')
  frames = _frames(waveform, cfg) * jnp.asarray(analysis_window(cfg))  # [B, F, n_fft]
  spec = jnp.fft.rfft(frames, n=cfg.n_fft, axis=-1)  # [B, F, n_fft//2+1]
  return jnp.real(spec) ** 2 + jnp.imag(spec) ** 2


def log_mel(waveform: jax.Array, cfg: FrontendConfig) -> jax.Array:
  """Waveforms [B, S] -> log-mel float32 [B, F, n_mels] with F = S // hop_length."""
  return log_mel_from_power(power_spectrogram(waveform, cfg), cfg)


def vtlp_source_bins(alpha: jax.Array, n_freq: int, boundary: float = 0.8) -> jax.Array:
  """Source frequency (bins, float) of every output bin under a warp by `alpha` [B] -> [B, n_freq].

  The piecewise-linear vocal-tract-length warp of Jaitly & Hinton (2013), inverted: output
  frequency f reads the input at f / alpha below the boundary `f_b = boundary * nyquist *
  min(1, alpha)`, and above it the map is the straight line from (f_b, f_b / alpha) to
  (nyquist, nyquist), so the band edges stay put. alpha > 1 moves formants (and harmonics) up, as
  a shorter vocal tract does.
  """
  top = float(n_freq - 1)
  f = jnp.arange(n_freq, dtype=jnp.float32)[None, :]  # [1, n_freq]
  a = jnp.asarray(alpha, jnp.float32)[:, None]  # [B, 1]
  f_b = boundary * top * jnp.minimum(1.0, a)  # [B, 1]
  below = f / a
  above = f_b / a + (f - f_b) * (top - f_b / a) / (top - f_b)
  return jnp.clip(jnp.where(f <= f_b, below, above), 0.0, top)  # [B, n_freq]


def vtlp_warp(power: jax.Array, alpha: jax.Array) -> jax.Array:
  """Warps power spectra [B, F, n_freq] along frequency by `alpha` [B] (linear interpolation)."""
  src = vtlp_source_bins(alpha, power.shape[-1])  # [B, n_freq]
  lo = jnp.floor(src).astype(jnp.int32)
  hi = jnp.minimum(lo + 1, power.shape[-1] - 1)
  frac = (src - lo)[:, None, :]  # [B, 1, n_freq]

  def take(idx):
    return jnp.take_along_axis(power, jnp.broadcast_to(idx[:, None, :], power.shape), axis=-1)

  return take(lo) * (1.0 - frac) + take(hi) * frac


def sample_vtlp_alpha(rng: jax.Array, batch: int, cfg: FrontendConfig) -> jax.Array:
  """[batch] warp factors, log-uniform in `cfg.vtlp_alpha`."""
  lo, hi = (math.log(a) for a in cfg.vtlp_alpha)
  return jnp.exp(jax.random.uniform(rng, (batch,), minval=lo, maxval=hi))


def warped_log_mel(waveform: jax.Array, cfg: FrontendConfig, alpha=None) -> jax.Array:
  """Waveforms [B, S] -> log-mel [B, F, n_mels], each row's spectrum first warped by its own
  vocal-tract-length factor `alpha` [B] (`vtlp_warp`) unless `alpha` is None: how a training
  view is seen."""
  power = power_spectrogram(waveform, cfg)  # [B, F, n_freq]
  if alpha is not None:
    power = vtlp_warp(power, alpha)
  return log_mel_from_power(power, cfg)


@functools.lru_cache(maxsize=16)
def dct_basis(n_mels: int, coeffs: int) -> np.ndarray:
  """float64 [coeffs, n_mels]: the first `coeffs` orthonormal DCT-II rows (a log-mel frame x
  [n_mels] -> its cepstral coefficients basis @ x)."""
  return scipy.fft.dct(np.eye(n_mels), type=2, norm='ortho', axis=0)[:coeffs]


def cepstral_projection(n_mels: int, coeffs: int) -> np.ndarray:
  """float32 [n_mels, n_mels] P: a log-mel frame x [n_mels] times P is x with only its first
  `coeffs` orthonormal DCT-II coefficients kept (x -> idct(dct(x)[:coeffs], zero-padded)).
  Symmetric; coefficient 0 is the frame's mean, so the mean over the bands is kept."""
  basis = dct_basis(n_mels, coeffs)  # [K, M]
  return (basis.T @ basis).astype(np.float32)  # [M, M]


def log_mel_from_power(power: jax.Array, cfg: FrontendConfig) -> jax.Array:
  """Power spectra [B, F, n_freq] -> log-mel float32 [B, F, n_mels] (cepstrally smoothed when
  `cfg.cepstral_coeffs` > 0)."""
  mel = jnp.matmul(
    power, jnp.asarray(mel_filterbank(cfg)), precision=jax.lax.Precision.HIGHEST
  )  # [B, F, n_mels]
  out = jnp.log(jnp.maximum(mel, cfg.log_floor))  # [B, F, n_mels]
  if cfg.cepstral_coeffs:
    projection = cepstral_projection(cfg.n_mels, cfg.cepstral_coeffs)  # [n_mels, n_mels]
    out = jnp.matmul(out, jnp.asarray(projection), precision=jax.lax.Precision.HIGHEST)
  return out


def normalize(mel: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Per utterance, per band: zero mean and unit variance over time. [B, F, M] -> [B, F, M]."""
  if mel.ndim != 3:
    raise ValueError(f'mel must be [batch, frames, bands], got shape {mel.shape}')
  mean = jnp.mean(mel, axis=1, keepdims=True)  # [B, 1, M]
  var = jnp.var(mel, axis=1, keepdims=True)  # [B, 1, M]
  return (mel - mean) * jax.lax.rsqrt(var + eps)


def _band_mask(rng: jax.Array, batch: int, size: int, count: int, max_width: int) -> jax.Array:
  """[batch, size] bool: union of `count` intervals per row, widths uniform in [0, max_width]."""
  if count <= 0 or max_width <= 0:
    return jnp.zeros((batch, size), bool)
  max_width = min(max_width, size)
  w_rng, s_rng = jax.random.split(rng)
  width = jax.random.randint(w_rng, (batch, count), 0, max_width + 1)  # [B, n]
  start = jnp.floor(
    jax.random.uniform(s_rng, (batch, count)) * (size - width + 1).astype(jnp.float32)
  ).astype(jnp.int32)  # [B, n]
  idx = jnp.arange(size)[None, None, :]  # [1, 1, size]
  inside = (idx >= start[..., None]) & (idx < (start + width)[..., None])  # [B, n, size]
  return jnp.any(inside, axis=1)


def spec_augment(rng: jax.Array, mel: jax.Array, cfg: FrontendConfig) -> jax.Array:
  """SpecAugment: `freq_masks` band masks and `time_masks` time masks per utterance, set to 0.

  Each mask has a width drawn uniformly from [0, width] and a uniform start; masked values become 0
  (the mean after `normalize`). Mask counts are fixed, so this is jittable. [B, F, M] -> [B, F, M].
  """
  b, f, m = mel.shape
  f_rng, t_rng = jax.random.split(rng)
  freq = _band_mask(f_rng, b, m, cfg.freq_masks, cfg.freq_width)  # [B, M]
  time = _band_mask(t_rng, b, f, cfg.time_masks, cfg.time_width)  # [B, F]
  masked = freq[:, None, :] | time[:, :, None]  # [B, F, M]
  return jnp.where(masked, jnp.zeros((), mel.dtype), mel)


def features(
  waveform: jax.Array, cfg: FrontendConfig, *, rng: Optional[jax.Array] = None, train: bool = False
) -> jax.Array:
  """log_mel -> normalize (if cfg.normalize) -> spec_augment (train and cfg.specaugment)."""
  mel = log_mel(waveform, cfg)
  if cfg.normalize:
    mel = normalize(mel)
  if train and cfg.specaugment:
    if rng is None:
      raise ValueError('features(train=True) with SpecAugment enabled needs an rng')
    mel = spec_augment(rng, mel, cfg)
  return mel
