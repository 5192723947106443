"""Tests for pairalign_jax.frontend."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import scipy.fft

from configs import default as default_config
from pairalign_jax import config_validation
from pairalign_jax import frontend


def _cfg(**kw):
  return dataclasses.replace(frontend.FrontendConfig.from_config(default_config.get_config()), **kw)


def _speechlike(n, sr, seed):
  """A harmonic signal with a moving f0, noise bursts and a silent gap (realistic dynamic range)."""
  rng = np.random.default_rng(seed)
  t = np.arange(n) / sr
  f0 = 120 + 40 * np.sin(2 * np.pi * 1.3 * t)
  phase = 2 * np.pi * np.cumsum(f0) / sr
  y = sum(np.sin(k * phase) / k for k in range(1, 20))
  y *= 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
  y += 0.05 * rng.standard_normal(n) * (np.sin(2 * np.pi * 0.7 * t) > 0.5)
  y[n // 3 : n // 3 + sr // 10] = 0.0
  return (0.3 * y / np.max(np.abs(y))).astype(np.float32)


def test_from_config_reads_default():
  cfg = frontend.FrontendConfig.from_config(default_config.get_config())
  assert (cfg.sample_rate, cfg.n_fft, cfg.win_length, cfg.hop_length, cfg.n_mels) == (
    16000,
    512,
    400,
    160,
    80,
  )
  assert cfg.num_frames(48_000) == 300
  hash(cfg)  # hashable (used as an lru_cache / jit static key)


def test_bad_config_raises():
  with pytest.raises(ValueError, match='win_length'):
    _cfg(win_length=1024)
  with pytest.raises(ValueError, match='log_floor'):
    _cfg(log_floor=0.0)


def test_mel_filterbank_shape_and_cache():
  cfg = _cfg()
  fb = frontend.mel_filterbank(cfg)
  assert fb.shape == (257, 80) and fb.dtype == np.float32
  assert frontend.mel_filterbank(cfg) is fb


@pytest.mark.parametrize('num_samples', [8000, 8080])
def test_log_mel_matches_librosa(num_samples):
  cfg = _cfg()
  waves = np.stack([_speechlike(num_samples, cfg.sample_rate, s) for s in range(3)])  # [3, S]
  ours = np.asarray(jax.jit(frontend.log_mel, static_argnums=1)(waves, cfg))
  num_frames = num_samples // cfg.hop_length
  assert ours.shape == (3, num_frames, cfg.n_mels)
  for i in range(3):
    ref = librosa.feature.melspectrogram(
      y=waves[i],
      sr=cfg.sample_rate,
      n_fft=cfg.n_fft,
      hop_length=cfg.hop_length,
      win_length=cfg.win_length,
      n_mels=cfg.n_mels,
      fmin=cfg.fmin,
      fmax=cfg.fmax,
      power=2.0,
      center=True,
      pad_mode='constant',
    )  # [n_mels, 1 + S // hop]
    ref = np.log(np.maximum(ref, cfg.log_floor)).T[:num_frames]
    np.testing.assert_allclose(ours[i], ref, atol=1e-3, rtol=0)
    assert ref.max() - ref.min() > 5.0  # the signal spans a realistic range (not all floor)


def test_log_mel_rejects_bad_shape():
  with pytest.raises(ValueError, match='batch, samples'):
    frontend.log_mel(jnp.zeros((16000,)), _cfg())


def test_normalize_per_utterance_per_band():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 50, 4)) * jnp.array([1.0, 2.0, 3.0, 4.0]) + 7.0
  y = frontend.normalize(x)
  np.testing.assert_allclose(np.mean(y, axis=1), 0.0, atol=1e-5)
  np.testing.assert_allclose(np.std(y, axis=1), 1.0, atol=1e-3)
  # Per utterance: changing utterance 1 leaves utterance 0 unchanged.
  y2 = frontend.normalize(x.at[1].mul(5.0))
  np.testing.assert_array_equal(np.asarray(y[0]), np.asarray(y2[0]))


def test_spec_augment_masks_bands_and_frames():
  cfg = _cfg(freq_masks=2, freq_width=8, time_masks=2, time_width=10)
  mel = jnp.ones((16, 60, 20))
  out = np.asarray(
    jax.jit(frontend.spec_augment, static_argnums=2)(jax.random.PRNGKey(1), mel, cfg)
  )
  assert out.shape == mel.shape
  masked = out == 0.0
  assert set(np.unique(out)) <= {0.0, 1.0}
  # Masked cells form whole bands or whole frames: each masked cell's band or frame is all masked.
  full_band = masked.all(axis=1)  # [B, M]
  full_frame = masked.all(axis=2)  # [B, F]
  assert np.all(masked == (full_band[:, None, :] | full_frame[:, :, None]))
  assert np.all(full_band.sum(axis=1) <= 2 * 8) and np.all(full_frame.sum(axis=1) <= 2 * 10)
  assert masked.any()  # 16 utterances, 4 masks each: some mask is non-empty
  # Different utterances get different masks; the same key gives the same masks.
  assert not np.all(masked == masked[:1])
  again = np.asarray(frontend.spec_augment(jax.random.PRNGKey(1), mel, cfg))
  np.testing.assert_array_equal(out, again)


def test_features_train_and_eval():
  cfg = _cfg()
  waves = jnp.asarray(np.stack([_speechlike(8000, 16000, s) for s in range(2)]))
  ev = frontend.features(waves, cfg)
  chex.assert_shape(ev, (2, 50, 80))
  np.testing.assert_allclose(np.mean(ev, axis=1), 0.0, atol=1e-4)
  tr = frontend.features(waves, cfg, rng=jax.random.PRNGKey(0), train=True)
  assert np.any(np.asarray(tr) != np.asarray(ev))
  with pytest.raises(ValueError, match='rng'):
    frontend.features(waves, cfg, train=True)
  np.testing.assert_allclose(
    frontend.features(waves, _cfg(normalize=False)), frontend.log_mel(waves, cfg), atol=0
  )


def test_vtlp_warp_moves_a_tone_by_alpha_and_is_identity_at_one():
  cfg = frontend.FrontendConfig.from_config(default_config.get_config())
  sr, n = cfg.sample_rate, cfg.sample_rate // 2
  t = np.arange(n) / sr
  wave = np.sin(2 * np.pi * 1000.0 * t)[None].astype(np.float32)  # a 1 kHz tone
  power = frontend.power_spectrogram(jnp.asarray(np.repeat(wave, 3, 0)), cfg)  # [3, F, 257]
  alpha = jnp.asarray([1.0, 1.1, 0.9])
  warped = np.asarray(frontend.vtlp_warp(power, alpha))
  np.testing.assert_allclose(warped[0], np.asarray(power[0]), rtol=1e-6, atol=1e-6)
  bin_hz = sr / cfg.n_fft
  peaks = warped[:, 20].argmax(-1) * bin_hz  # a middle frame
  assert abs(peaks[0] - 1000.0) <= bin_hz
  assert abs(peaks[1] - 1100.0) <= bin_hz and abs(peaks[2] - 900.0) <= bin_hz
  # The band edges stay put and the warp is monotone for every factor in range.
  src = np.asarray(frontend.vtlp_source_bins(jnp.asarray([0.8, 1.0, 1.25]), 257))
  np.testing.assert_allclose(src[:, 0], 0.0)
  np.testing.assert_allclose(src[:, -1], 256.0, atol=1e-4)
  assert (np.diff(src, axis=1) >= 0).all()


def test_warped_log_mel_is_log_mel_of_the_warped_power():
  cfg = _cfg()
  waves = jnp.asarray(np.random.default_rng(0).normal(0, 0.1, (2, 8000)), jnp.float32)
  np.testing.assert_array_equal(frontend.warped_log_mel(waves, cfg), frontend.log_mel(waves, cfg))
  alpha = jnp.asarray([0.9, 1.1])
  want = frontend.log_mel_from_power(
    frontend.vtlp_warp(frontend.power_spectrogram(waves, cfg), alpha), cfg
  )
  got = frontend.warped_log_mel(waves, cfg, alpha)
  np.testing.assert_array_equal(got, want)
  assert not np.allclose(got, frontend.log_mel(waves, cfg))


def test_vtlp_config_off_by_default_and_validated():
  config = default_config.get_config()
  assert not frontend.FrontendConfig.from_config(config).vtlp
  config.frontend.vtlp.enabled = True
  cfg = frontend.FrontendConfig.from_config(config)
  assert cfg.vtlp and cfg.vtlp_alpha == tuple(config.frontend.vtlp.alpha)
  alpha = np.asarray(frontend.sample_vtlp_alpha(jax.random.PRNGKey(0), 1000, cfg))
  assert alpha.min() >= cfg.vtlp_alpha[0] - 1e-6 and alpha.max() <= cfg.vtlp_alpha[1] + 1e-6
  with pytest.raises(ValueError, match='vtlp_alpha'):
    dataclasses.replace(cfg, vtlp_alpha=(1.2, 1.1))


def test_cepstral_smoothing_keeps_the_first_coefficients_of_each_frame():
  waves = jnp.asarray(np.stack([_speechlike(8000, 16_000, seed) for seed in (0, 1)]))
  raw = np.asarray(frontend.log_mel(waves, _cfg()))  # [2, F, 80]
  got = np.asarray(frontend.log_mel(waves, _cfg(cepstral_coeffs=13)))
  coeffs = scipy.fft.dct(raw, type=2, norm='ortho', axis=-1)
  coeffs[..., 13:] = 0.0
  want = scipy.fft.idct(coeffs, type=2, norm='ortho', axis=-1)
  np.testing.assert_allclose(got, want, atol=2e-4)
  np.testing.assert_allclose(got.mean(-1), raw.mean(-1), atol=2e-4)  # the frame's mean is kept
  assert np.abs(got - raw).max() > 0.5
  np.testing.assert_allclose(frontend.log_mel(waves, _cfg(cepstral_coeffs=80)), raw, atol=2e-4)


def _vowel(f0, seconds=0.5, sr=16_000):
  """Harmonics of f0 under one fixed formant envelope (peaks at 700 and 1 200 Hz)."""
  t = np.arange(int(seconds * sr)) / sr

  def envelope(f):
    return np.exp(-(((f - 700) / 150) ** 2)) + 0.7 * np.exp(-(((f - 1200) / 200) ** 2)) + 0.02

  y = sum(envelope(k * f0) * np.sin(2 * np.pi * k * f0 * t) for k in range(1, int(7000 / f0)))
  return (0.3 * y / np.max(np.abs(y))).astype(np.float32)


def test_cepstral_smoothing_brings_two_pitches_of_one_vowel_together():
  waves = jnp.asarray(np.stack([_vowel(110.0), _vowel(220.0)]))

  def distance(cfg):  # between the two spectra's shapes (each frame's mean level taken out)
    mel = np.asarray(frontend.log_mel(waves, cfg))[:, 10:-10].mean(1)  # [2, 80]
    shape = mel - mel.mean(-1, keepdims=True)
    return float(np.mean(np.abs(shape[0] - shape[1])))

  assert distance(_cfg(cepstral_coeffs=13)) < 0.5 * distance(_cfg())


def test_cepstral_coeffs_off_by_default_and_validated():
  config = default_config.get_config()
  assert frontend.FrontendConfig.from_config(config).cepstral_coeffs == 0
  del config.frontend.cepstral_coeffs  # a config saved before the key: off
  assert frontend.FrontendConfig.from_config(config).cepstral_coeffs == 0
  with pytest.raises(ValueError, match='cepstral_coeffs'):
    _cfg(cepstral_coeffs=81)
  config = default_config.get_config()
  config.frontend.cepstral_coeffs = -1
  with pytest.raises(config_validation.ConfigError, match='cepstral_coeffs'):
    config_validation.validate_config(config)
