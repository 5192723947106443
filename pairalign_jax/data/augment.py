"""Content-preserving waveform augmentations (numpy/scipy/soxr/librosa; no jax).

Each augmentation has a deterministic core `apply_*(wave, ...)` and a random wrapper
`random_*(wave, rng, prob, range, ...)` that applies it with probability `prob` and a parameter
drawn uniformly from `range` with the given `np.random.Generator`. Every function takes and
returns float32 `[n]` and **keeps the length**. Output is not clipped (gain can exceed 1; the
front end is a log-mel, so there is nothing to protect).

`augment_view(wave, rng, aug_cfg, sample_rate)` applies the chain with independently drawn
choices, in this order (each step optional): speed -> pitch -> band-limit/EQ -> reverb ->
additive noise -> gain -> time shift. Call it twice with one rng for two independent views.

Time mapping. Pitch shift (phase vocoder), EQ (zero-phase), reverb (causal, onset kept), noise
and gain leave times unchanged. Speed perturbation maps input time `t` to `t / speed`; the time
shift adds `shift` seconds. `augment_view(..., time_warp=False)` skips both, so two views share
one time axis (used for the stage-0 cross-view code prediction).

Costs measured on the 2-core CPU, 3 s at 16 kHz: pitch shift (librosa phase vocoder + soxr)
about 12 ms (the first call in a process about 1.5 s: librosa's lazy imports); speed (soxr) 0.4 ms;
EQ (sosfiltfilt) 1.1 ms; reverb (fftconvolve) 1.3 ms.
"""

from typing import Any, Mapping

import librosa
import numpy as np
import scipy.signal
import soxr

NOISE_COLOURS = ('white', 'pink', 'brown')
_DB_60 = 3.0 * np.log(10.0)   # amplitude decays by 60 dB when exp(-_DB_60) = 1e-3


def _as_wave(wave: np.ndarray) -> np.ndarray:
  wave = np.asarray(wave, np.float32)
  if wave.ndim != 1:
    raise ValueError(f'augmentations expect mono [n] audio, got shape {wave.shape}')
  return wave


def _power(x: np.ndarray) -> float:
  return float(np.mean(np.square(x, dtype=np.float64)))


def _uniform(rng: np.random.Generator, bounds) -> float:
  lo, hi = (float(b) for b in bounds)
  if hi < lo:
    raise ValueError(f'range must be (low, high) with low <= high, got {bounds}')
  return float(rng.uniform(lo, hi)) if hi > lo else lo


def _fix_length(x: np.ndarray, n: int) -> np.ndarray:
  """Crops the end or zero-pads the end to `n` samples."""
  x = x[:n]
  if x.shape[0] < n:
    x = np.pad(x, (0, n - x.shape[0]))
  return np.ascontiguousarray(x, np.float32)


# ---------------------------------------------------------------------------- gain
def apply_gain(wave: np.ndarray, gain_db: float) -> np.ndarray:
  """Scales by `10 ** (gain_db / 20)`."""
  return (_as_wave(wave) * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)


def random_gain(wave, rng, prob, gain_db_range):
  if rng.random() >= prob:
    return _as_wave(wave)
  return apply_gain(wave, _uniform(rng, gain_db_range))


# ---------------------------------------------------------------------------- noise
def coloured_noise(rng: np.random.Generator, n: int, colour: str = 'white') -> np.ndarray:
  """Unit-RMS float32 `[n]` noise; pink has power ~ 1/f, brown ~ 1/f^2 (shaped in the FFT)."""
  if colour not in NOISE_COLOURS:
    raise ValueError(f'noise colour must be one of {NOISE_COLOURS}, got {colour!r}')
  white = rng.standard_normal(n)
  if colour == 'white' or n < 4:
    noise = white
  else:
    spectrum = np.fft.rfft(white)
    f = np.arange(spectrum.shape[0], dtype=np.float64)
    f[0] = 1.0                                   # keep DC finite (then removed below)
    exponent = 0.5 if colour == 'pink' else 1.0  # amplitude ~ f^-1/2 (pink), f^-1 (brown)
    spectrum = spectrum / f ** exponent
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n)
  rms = np.sqrt(np.mean(noise ** 2))
  return (noise / max(rms, 1e-12)).astype(np.float32)


def add_noise(wave: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
  """`wave + g * noise` with `g` chosen so that `10 log10(P_wave / P_{g noise}) = snr_db`.

  A silent `wave` (power 0) is returned unchanged (no SNR is defined).
  """
  wave = _as_wave(wave)
  noise = np.asarray(noise, np.float32)
  if noise.shape != wave.shape:
    raise ValueError(f'noise shape {noise.shape} must equal wave shape {wave.shape}')
  p_signal, p_noise = _power(wave), _power(noise)
  if p_signal == 0.0 or p_noise == 0.0:
    return wave
  g = np.sqrt(p_signal / (p_noise * 10.0 ** (snr_db / 10.0)))
  return (wave + np.float32(g) * noise).astype(np.float32)


def random_noise(wave, rng, prob, snr_db_range, coloured_prob=0.5):
  """White noise, or (with `coloured_prob`) pink or brown, at an SNR drawn from the range."""
  wave = _as_wave(wave)
  if rng.random() >= prob:
    return wave
  snr = _uniform(rng, snr_db_range)
  colour = 'white' if rng.random() >= coloured_prob else ('pink', 'brown')[int(rng.integers(2))]
  return add_noise(wave, coloured_noise(rng, wave.shape[0], colour), snr)


# ---------------------------------------------------------------------------- reverb
def synthetic_rir(rng: np.random.Generator, rt60: float, sample_rate: int) -> np.ndarray:
  """Unit-energy impulse response `[round(rt60 * sr)]`: a direct path (sample 0) plus a Gaussian
  noise tail decaying 60 dB over `rt60` seconds, tail and direct path of equal energy (0 dB
  direct-to-reverberant ratio)."""
  if rt60 <= 0:
    raise ValueError(f'rt60 must be positive, got {rt60}')
  n = max(int(round(rt60 * sample_rate)), 2)
  t = np.arange(n) / sample_rate
  tail = rng.standard_normal(n) * np.exp(-_DB_60 * t / rt60)
  tail[0] = 0.0
  h = tail / np.sqrt(np.sum(tail ** 2))
  h[0] = 1.0
  return (h / np.sqrt(np.sum(h ** 2))).astype(np.float32)


def apply_reverb(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
  """Causal convolution with `rir`, cut to the input length, rescaled to the input's RMS."""
  wave = _as_wave(wave)
  wet = scipy.signal.fftconvolve(wave, np.asarray(rir, np.float32))[:wave.shape[0]]
  p_in, p_out = _power(wave), _power(wet)
  if p_out > 0.0:
    wet = wet * np.sqrt(p_in / p_out)
  return wet.astype(np.float32)


def random_reverb(wave, rng, prob, rt60_range, sample_rate):
  if rng.random() >= prob:
    return _as_wave(wave)
  return apply_reverb(wave, synthetic_rir(rng, _uniform(rng, rt60_range), sample_rate))


# ---------------------------------------------------------------------------- band-limit / EQ
def apply_bandlimit(wave: np.ndarray, low_hz: float, high_hz: float, sample_rate: int,
                    order: int = 4) -> np.ndarray:
  """Zero-phase Butterworth band-pass `[low_hz, high_hz]` (scipy `sosfiltfilt`, no delay).

  `high_hz` is capped at 0.95 x Nyquist; `low_hz <= 0` makes it a low-pass.
  """
  wave = _as_wave(wave)
  nyquist = sample_rate / 2.0
  high = min(float(high_hz), 0.95 * nyquist)
  if low_hz > 0:
    if not low_hz < high:
      raise ValueError(f'band-limit needs low_hz < high_hz, got {low_hz} >= {high}')
    sos = scipy.signal.butter(order, [low_hz, high], btype='bandpass', fs=sample_rate,
                              output='sos')
  else:
    sos = scipy.signal.butter(order, high, btype='lowpass', fs=sample_rate, output='sos')
  if wave.shape[0] <= 3 * (2 * sos.shape[0] + 1):   # too short for filtfilt padding
    return wave
  return scipy.signal.sosfiltfilt(sos, wave).astype(np.float32)


def random_bandlimit(wave, rng, prob, low_hz_range, high_hz_range, sample_rate):
  if rng.random() >= prob:
    return _as_wave(wave)
  low, high = _uniform(rng, low_hz_range), _uniform(rng, high_hz_range)
  return apply_bandlimit(wave, low, high, sample_rate)


# ---------------------------------------------------------------------------- pitch
def apply_pitch_shift(wave: np.ndarray, semitones: float, sample_rate: int) -> np.ndarray:
  """Pitch shift keeping duration and timing (librosa phase vocoder + soxr resampling).

  The phase vocoder uses a 512-sample window (32 ms at 16 kHz, hop 128: a speech-sized window;
  librosa's default 2048 smears onsets), smaller for shorter inputs; inputs under 64 samples are
  returned unchanged.
  """
  wave = _as_wave(wave)
  if semitones == 0.0 or wave.shape[0] < 64:
    return wave
  n_fft = min(512, 2 ** int(np.log2(wave.shape[0])))
  out = librosa.effects.pitch_shift(wave, sr=sample_rate, n_steps=float(semitones),
                                    res_type='soxr_hq', n_fft=n_fft)
  return _fix_length(np.asarray(out, np.float32), wave.shape[0])


def random_pitch_shift(wave, rng, prob, semitone_range, sample_rate):
  if rng.random() >= prob:
    return _as_wave(wave)
  return apply_pitch_shift(wave, _uniform(rng, semitone_range), sample_rate)


# ---------------------------------------------------------------------------- speed
def apply_speed(wave: np.ndarray, speed: float, sample_rate: int) -> np.ndarray:
  """Speed perturbation (tempo and pitch together) by soxr resampling, length restored.

  Output time `t / speed` holds input time `t`: the start stays aligned; a faster signal is
  zero-padded at the end, a slower one cropped at the end.
  """
  wave = _as_wave(wave)
  if speed <= 0:
    raise ValueError(f'speed must be positive, got {speed}')
  if speed == 1.0:
    return wave
  out = soxr.resample(wave, sample_rate, sample_rate / speed, quality='HQ')
  return _fix_length(np.asarray(out, np.float32), wave.shape[0])


def random_speed(wave, rng, prob, speed_range, sample_rate):
  if rng.random() >= prob:
    return _as_wave(wave)
  return apply_speed(wave, _uniform(rng, speed_range), sample_rate)


# ---------------------------------------------------------------------------- time shift
def apply_shift(wave: np.ndarray, shift: int) -> np.ndarray:
  """Delays by `shift` samples (advances when negative), zero fill, same length."""
  wave = _as_wave(wave)
  n, shift = wave.shape[0], int(shift)
  out = np.zeros_like(wave)
  if shift >= 0:
    out[shift:] = wave[:max(n - shift, 0)]
  else:
    out[:max(n + shift, 0)] = wave[-shift:]
  return out


def random_shift(wave, rng, prob, max_shift_ms, sample_rate):
  """Shift by an integer number of samples drawn uniformly from `[-max, max]`."""
  if rng.random() >= prob:
    return _as_wave(wave)
  max_shift = int(round(max_shift_ms * sample_rate / 1000.0))
  return apply_shift(wave, int(rng.integers(-max_shift, max_shift + 1)))


# ---------------------------------------------------------------------------- chain
def augment_view(wave: np.ndarray, rng: np.random.Generator, aug_cfg: Mapping[str, Any],
                 sample_rate: int, *, time_warp: bool = True) -> np.ndarray:
  """One augmented view of `wave` (float32 `[n]` -> `[n]`); see the module docstring.

  `aug_cfg` is `config.data.augment`. With every `*_prob` at 0 the input is returned unchanged.
  Each step draws from `rng` only when it is reached, so the draws are a pure function of the
  rng state.
  """
  c = aug_cfg
  x = _as_wave(wave)
  if time_warp:
    x = random_speed(x, rng, c['speed_prob'], c['speed'], sample_rate)
  x = random_pitch_shift(x, rng, c['pitch_prob'], c['pitch_semitones'], sample_rate)
  x = random_bandlimit(x, rng, c['eq_prob'], c['eq_low_hz'], c['eq_high_hz'], sample_rate)
  x = random_reverb(x, rng, c['reverb_prob'], c['reverb_rt60'], sample_rate)
  x = random_noise(x, rng, c['noise_prob'], c['snr_db'], c['coloured_noise_prob'])
  x = random_gain(x, rng, c['gain_prob'], c['gain_db'])
  if time_warp:
    x = random_shift(x, rng, c['shift_prob'], c['max_shift_ms'], sample_rate)
  return x
