"""Content-preserving waveform augmentations (numpy/scipy/soxr; no jax).

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

Everything is numpy / scipy.fft (float32) / soxr, vectorized: no Python loop over samples or
frames. Costs per 3 s clip at 16 kHz on the 2-core CPU (busy machine, CPU time): pitch shift
(phase vocoder + soxr) about 5 ms; EQ about 0.7 ms; reverb about 1 ms; noise about 0.9 ms; speed
(soxr) 0.4 ms; a default-config `augment_view` about 3.3 ms on average.
"""

import functools
from typing import Any, Mapping

import numpy as np
import scipy.fft
import scipy.signal
import soxr

NOISE_COLOURS = ('white', 'pink', 'brown')
_DB_60 = 3.0 * np.log(10.0)  # amplitude decays by 60 dB when exp(-_DB_60) = 1e-3


def _as_wave(wave: np.ndarray) -> np.ndarray:
  wave = np.asarray(wave, np.float32)
  if wave.ndim != 1:
    raise ValueError(f'augmentations expect mono [n] audio, got shape {wave.shape}')
  return wave


def _power(x: np.ndarray) -> float:
  """Mean square, accumulated in float64."""
  # Not np.dot: OpenBLAS threads a 48k-sample dot and, on a busy CPU, takes ~1000x longer.
  return float(np.mean(np.square(x, dtype=np.float64)))


def _uniform(rng: np.random.Generator, bounds) -> float:
  lo, hi = (float(b) for b in bounds)
  if hi < lo:
    raise ValueError(f'range must be (low, high) with low <= high, got {bounds}')
  return float(rng.uniform(lo, hi)) if hi > lo else lo


def _fast_len(n: int) -> int:
  """The smallest FFT length `>= n` of the form `m * 2^k`, `m` in {1, 3, 5, 7, 9, 15, 21, 25,
  27}: pocketfft is fastest on these (e.g. 49152 or 51200 beat `next_fast_len`'s 50625 = 3^4 5^4
  by ~1.5x in float32)."""
  n = max(int(n), 1)
  best = 1 << (n - 1).bit_length()
  for m in (3, 5, 7, 9, 15, 21, 25, 27):
    size = m * (1 << max(0, (-(-n // m) - 1).bit_length()))
    best = min(best, size)
  return best


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
  """Unit-RMS float32 `[n]` noise; pink has power ~ 1/f, brown ~ 1/f^2 (shaped in the FFT).

  Drawn and shaped in float32 (`rng.standard_normal(n, dtype=float32)`, single-precision rFFT).
  """
  if colour not in NOISE_COLOURS:
    raise ValueError(f'noise colour must be one of {NOISE_COLOURS}, got {colour!r}')
  noise = rng.standard_normal(n, dtype=np.float32)
  if colour != 'white' and n >= 4:
    spectrum = scipy.fft.rfft(noise)
    spectrum *= _colour_shape(n, colour)
    noise = scipy.fft.irfft(spectrum, n)
  rms = np.sqrt(_power(noise))
  return (noise * np.float32(1.0 / max(rms, 1e-12))).astype(np.float32, copy=False)


@functools.lru_cache(maxsize=16)
def _colour_shape(n: int, colour: str) -> np.ndarray:
  """float32 `[n // 2 + 1]` rFFT amplitude shaping: f^-1/2 (pink) or f^-1 (brown), DC zeroed."""
  f = np.arange(n // 2 + 1, dtype=np.float64)
  f[0] = 1.0  # keep DC finite (then removed below)
  exponent = 0.5 if colour == 'pink' else 1.0  # amplitude ~ f^-1/2 (pink), f^-1 (brown)
  shape = f**-exponent
  shape[0] = 0.0
  shape = shape.astype(np.float32)
  shape.flags.writeable = False
  return shape


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
  h = tail / np.sqrt(np.sum(tail**2))
  h[0] = 1.0
  return (h / np.sqrt(np.sum(h**2))).astype(np.float32)


def _causal_fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
  """`np.convolve(x, h)[:len(x)]` by a single-precision rFFT of a fast length (`_fast_len`) >=
  the full linear-convolution length (no circular wrap-around)."""
  n, m = x.shape[0], h.shape[0]
  size = _fast_len(n + m - 1)
  spectrum = scipy.fft.rfft(x, size)
  spectrum *= scipy.fft.rfft(h, size)
  return scipy.fft.irfft(spectrum, size)[:n]


def apply_reverb(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
  """Causal convolution with `rir`, cut to the input length, rescaled to the input's RMS."""
  wave = _as_wave(wave)
  rir = np.asarray(rir, np.float32)
  if wave.shape[0] == 0 or rir.shape[0] == 0:
    return wave
  wet = _causal_fft_convolve(wave, rir)
  p_in, p_out = _power(wave), _power(wet)
  if p_out > 0.0:
    wet *= np.float32(np.sqrt(p_in / p_out))
  return wet.astype(np.float32, copy=False)


def random_reverb(wave, rng, prob, rt60_range, sample_rate):
  if rng.random() >= prob:
    return _as_wave(wave)
  return apply_reverb(wave, synthetic_rir(rng, _uniform(rng, rt60_range), sample_rate))


# ---------------------------------------------------------------------------- band-limit / EQ
def butterworth_power_response(
  freqs_hz: np.ndarray, low_hz: float, high_hz: float, sample_rate: int, order: int = 4
) -> np.ndarray:
  """`|H(f)|^2` of the digital Butterworth band-pass `[low_hz, high_hz]` (low-pass to `high_hz`
  when `low_hz <= 0`) that `scipy.signal.butter(order, ..., fs=sample_rate)` designs.

  Closed form: scipy designs the analog prototype at the pre-warped edges
  `W = 2 fs tan(pi f / fs)` and maps it with the bilinear transform, which maps the analog
  frequency `2 fs tan(pi f / fs)` to `f` exactly, so `|H(f)|^2 = 1 / (1 + P(f)^(2 order))` with
  `P = W / W_high` (low-pass) or `P = |W^2 - W_low W_high| / (W (W_high - W_low))` (band-pass).
  Equals `abs(scipy.signal.sosfreqz(sos, freqs_hz, fs=sample_rate)[1]) ** 2` to rounding.
  """
  fs = float(sample_rate)
  warp = lambda f: 2.0 * fs * np.tan(np.pi * np.asarray(f, np.float64) / fs)  # noqa: E731
  w = warp(freqs_hz)
  with np.errstate(divide='ignore', over='ignore', invalid='ignore'):
    if low_hz > 0:
      w_lo, w_hi = warp(low_hz), warp(high_hz)
      proto = np.abs(w * w - w_lo * w_hi) / (w * (w_hi - w_lo))
    else:
      proto = w / warp(high_hz)
    power = 1.0 / (1.0 + proto ** (2 * order))
  return np.where(np.isfinite(power), power, 0.0)


def apply_bandlimit(
  wave: np.ndarray, low_hz: float, high_hz: float, sample_rate: int, order: int = 4
) -> np.ndarray:
  """Zero-phase Butterworth band-pass `[low_hz, high_hz]` (no delay).

  The response is that of scipy's `sosfiltfilt` with `butter(order, ..., output='sos')`: the
  filter's squared magnitude `|H|^2` (`butterworth_power_response`), zero phase, applied as one
  float32 rFFT product. The FFT is zero-padded past the end by about 19 time constants of the
  slowest pole (`8 / min(low_hz, (high_hz - low_hz) / 2)` seconds), so circular wrap-around is
  below -140 dB. The clip is taken as zero outside its ends (`sosfiltfilt` extends it by an odd
  reflection of 27 samples instead); away from the ends the two agree to float32 rounding.
  `high_hz` is capped at 0.95 x Nyquist; `low_hz <= 0` makes it a low-pass.
  """
  wave = _as_wave(wave)
  nyquist = sample_rate / 2.0
  high = min(float(high_hz), 0.95 * nyquist)
  low = float(low_hz)
  if low > 0 and not low < high:
    raise ValueError(f'band-limit needs low_hz < high_hz, got {low_hz} >= {high}')
  n = wave.shape[0]
  num_sections = order if low > 0 else (order + 1) // 2  # sos rows of scipy's design
  if n <= 3 * (2 * num_sections + 1):  # too short (as for sosfiltfilt's padding): unchanged
    return wave
  slowest_hz = min(low, 0.5 * (high - low)) if low > 0 else high  # edge or half-bandwidth
  pad = max(256, int(np.ceil(8.0 * sample_rate / slowest_hz)))
  size = _fast_len(n + pad)
  gain = butterworth_power_response(
    np.arange(size // 2 + 1) * (sample_rate / size), low, high, sample_rate, order
  )
  spectrum = scipy.fft.rfft(wave, size)
  spectrum *= gain.astype(np.float32)
  return scipy.fft.irfft(spectrum, size)[:n].astype(np.float32, copy=False)


def random_bandlimit(wave, rng, prob, low_hz_range, high_hz_range, sample_rate):
  if rng.random() >= prob:
    return _as_wave(wave)
  low, high = _uniform(rng, low_hz_range), _uniform(rng, high_hz_range)
  return apply_bandlimit(wave, low, high, sample_rate)


# ---------------------------------------------------------------------------- pitch
@functools.lru_cache(maxsize=8)
def _hann(n_fft: int) -> np.ndarray:
  """Periodic Hann window (librosa's / scipy's `get_window('hann', n, fftbins=True)`), float32."""
  w = scipy.signal.get_window('hann', n_fft, fftbins=True).astype(np.float32)
  w.flags.writeable = False
  return w


def _stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
  """Centered STFT `[frames, n_fft // 2 + 1]` (complex64), zero-padded by `n_fft // 2` each
  side, periodic Hann window; frames = `1 + len(x) // hop` (librosa `stft(center=True,
  pad_mode='constant')`)."""
  padded = np.pad(x, n_fft // 2)
  frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
  return scipy.fft.rfft(frames * _hann(n_fft), axis=-1)


def _istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
  """Inverse of `_stft` (windowed overlap-add divided by the summed squared window where it is
  non-negligible), the first `length` samples, zero-padded if the frames end earlier; as
  librosa's `istft(center=True, length=length)`. Needs `n_fft % hop == 0`."""
  ratio = n_fft // hop
  start = n_fft // 2
  num_frames = min(spec.shape[0], -(-(length + start) // hop))  # later frames start past the end
  window = _hann(n_fft)
  frames = scipy.fft.irfft(spec[:num_frames], n_fft, axis=-1)
  frames *= window
  frames = frames.reshape(num_frames, ratio, hop)
  blocks = np.zeros((num_frames + ratio - 1, hop), np.float32)
  envelope = np.zeros((num_frames + ratio - 1, hop), np.float32)
  square = (window * window).reshape(ratio, hop)
  for j in range(ratio):  # frame k's j-th hop-block lands in block k + j
    blocks[j : j + num_frames] += frames[:, j]
    envelope[j : j + num_frames] += square[j]
  y = blocks.reshape(-1)[start : start + length]
  envelope = envelope.reshape(-1)[start : start + length]
  nonzero = envelope > np.finfo(np.float32).tiny
  y = np.where(nonzero, y / np.where(nonzero, envelope, 1.0), y)
  return _fix_length(y, length)


def _cumprod_rows(x: np.ndarray) -> np.ndarray:
  """`np.cumprod(x, axis=0)` for a 2-D array, in place, as row-vector products over blocks of
  about sqrt(rows) rows (numpy's own accumulate along axis 0 runs one strided column at a time,
  several times slower for a few hundred x a few hundred)."""
  rows = x.shape[0]
  block = max(1, int(np.sqrt(rows)))
  num_blocks = -(-rows // block)
  if num_blocks * block != rows:
    x_pad = np.ones((num_blocks * block,) + x.shape[1:], x.dtype)
    x_pad[:rows] = x
  else:
    x_pad = x
  v = x_pad.reshape((num_blocks, block) + x.shape[1:])
  for j in range(1, block):  # running product inside each block
    v[:, j] *= v[:, j - 1]
  for k in range(1, num_blocks):  # carry the previous blocks' products
    v[k] *= v[k - 1, -1]
  if x_pad is not x:
    x[...] = x_pad[:rows]
  return x


def _phase_vocoder(spec: np.ndarray, rate: float) -> np.ndarray:
  """Time-stretches an STFT `[frames, bins]` by `rate` (librosa's `phase_vocoder`, vectorized).

  Output frame `t` reads input position `t * rate`: the magnitude is linearly interpolated
  between the two neighbouring frames `i, i + 1`, and the phase is the first frame's phase plus
  the running sum of the phase advances `angle(X[i + 1]) - angle(X[i])` of the frame pairs read
  so far (librosa adds the expected advance and the deviation wrapped to [-pi, pi): the same
  angle modulo 2 pi, so the same phasor). The running sum is kept as a running product of unit
  phasors (complex64): no angles, sines or cosines, and no Python loop over frames.
  A zero bin has phase 0, as `np.angle(0)` in librosa.
  """
  steps = np.arange(0, spec.shape[0], rate, dtype=np.float64)
  idx = steps.astype(np.int64)
  alpha = (steps - idx).astype(np.float32)[:, None]
  padded = np.concatenate([spec, np.zeros((2, spec.shape[1]), spec.dtype)])
  magnitude = np.abs(padded)
  zero = magnitude == 0.0
  unit = padded / np.where(zero, np.float32(1.0), magnitude)  # e^{i angle}
  unit[zero] = 1.0
  mag = magnitude[idx]
  mag *= 1.0 - alpha
  mag += magnitude[idx + 1] * alpha
  phasor = np.empty(mag.shape, np.complex64)  # e^{i phase} of output frame t
  phasor[0] = unit[0]
  if phasor.shape[0] > 1:
    last = int(idx[-2]) + 2  # frames read before the last output
    advance = np.conj(unit[: last - 1])
    advance *= unit[1:last]  # e^{i (angle[i + 1] - angle[i])}
    step = advance[idx[:-1]]
    step[0] *= unit[0]
    phasor[1:] = _cumprod_rows(step)
  phasor *= mag
  return phasor


def apply_pitch_shift(wave: np.ndarray, semitones: float, sample_rate: int) -> np.ndarray:
  """Pitch shift keeping duration and timing: phase-vocoder time stretch by
  `rate = 2 ** (-semitones / 12)`, then soxr (HQ) resampling by `rate` (librosa's
  `effects.pitch_shift` algorithm, vectorized in numpy).

  The phase vocoder uses a 512-sample window (32 ms at 16 kHz, hop 128: a speech-sized window;
  librosa's default 2048 smears onsets), smaller for shorter inputs; inputs under 64 samples are
  returned unchanged.
  """
  wave = _as_wave(wave)
  n = wave.shape[0]
  if semitones == 0.0 or n < 64:
    return wave
  n_fft = min(512, 2 ** int(np.log2(n)))
  hop = n_fft // 4
  rate = 2.0 ** (-float(semitones) / 12.0)
  spec = _phase_vocoder(_stft(wave, n_fft, hop), rate)
  stretched = _istft(spec, n_fft, hop, int(round(n / rate)))
  out = soxr.resample(stretched, sample_rate / rate, sample_rate, quality='HQ')
  out = np.asarray(out, np.float32)[: int(np.ceil(stretched.shape[0] * rate))]
  return _fix_length(out, n)


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
    out[shift:] = wave[: max(n - shift, 0)]
  else:
    out[: max(n + shift, 0)] = wave[-shift:]
  return out


def random_shift(wave, rng, prob, max_shift_ms, sample_rate):
  """Shift by an integer number of samples drawn uniformly from `[-max, max]`."""
  if rng.random() >= prob:
    return _as_wave(wave)
  max_shift = int(round(max_shift_ms * sample_rate / 1000.0))
  return apply_shift(wave, int(rng.integers(-max_shift, max_shift + 1)))


# ---------------------------------------------------------------------------- chain
def augment_view(
  wave: np.ndarray,
  rng: np.random.Generator,
  aug_cfg: Mapping[str, Any],
  sample_rate: int,
  *,
  time_warp: bool = True,
) -> np.ndarray:
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
