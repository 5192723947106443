"""Tests for pairalign_jax/data/augment.py."""

import numpy as np
import pytest

from configs import default as default_config
from pairalign_jax.data import augment

SR = 16_000


def tone(freqs, seconds=0.5, sr=SR, amp=0.2):
  t = np.arange(int(seconds * sr)) / sr
  return sum(amp * np.sin(2 * np.pi * f * t) for f in np.atleast_1d(freqs)).astype(np.float32)


def power_db(x):
  return 10 * np.log10(np.mean(np.square(x, dtype=np.float64)))


def band_power(x, sr, lo, hi):
  spectrum = np.abs(np.fft.rfft(x)) ** 2
  f = np.fft.rfftfreq(len(x), 1 / sr)
  return spectrum[(f >= lo) & (f < hi)].sum()


def peak_hz(x, sr=SR):
  spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
  return np.argmax(spectrum) * sr / len(x)


def aug_cfg(**overrides):
  cfg = default_config.get_config().data.augment.to_dict()
  cfg.update(overrides)
  return cfg


ALL_OFF = {k: 0.0 for k in aug_cfg() if k.endswith('_prob') and k != 'coloured_noise_prob'}


@pytest.mark.parametrize('gain_db', [-6.0, 0.0, 3.5])
def test_gain_is_exact_in_db(gain_db):
  x = tone(300)
  y = augment.apply_gain(x, gain_db)
  assert power_db(y) - power_db(x) == pytest.approx(gain_db, abs=1e-4)


@pytest.mark.parametrize('colour', augment.NOISE_COLOURS)
@pytest.mark.parametrize('snr_db', [5.0, 20.0])
def test_noise_snr_measured_back(colour, snr_db):
  x = tone([220, 1000])
  y = augment.add_noise(x, augment.coloured_noise(np.random.default_rng(0), len(x), colour), snr_db)
  assert y.shape == x.shape and y.dtype == np.float32
  assert power_db(x) - power_db(y - x) == pytest.approx(snr_db, abs=0.05)


def test_random_noise_snr_within_range():
  x = tone(500)
  for seed in range(10):
    y = augment.random_noise(x, np.random.default_rng(seed), 1.0, (10.0, 12.0), 0.5)
    assert 10.0 - 0.05 <= power_db(x) - power_db(y - x) <= 12.0 + 0.05


def test_noise_colours_have_their_slopes():
  n = 2**16
  f = np.fft.rfftfreq(n, 1 / SR)
  band = (f > 50) & (f < 5000)
  slopes = {}
  for colour in augment.NOISE_COLOURS:
    noise = augment.coloured_noise(np.random.default_rng(1), n, colour)
    assert np.sqrt(np.mean(noise.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-4)
    p = np.abs(np.fft.rfft(noise)) ** 2
    slopes[colour] = np.polyfit(np.log10(f[band]), np.log10(p[band]), 1)[0]
  assert slopes['white'] == pytest.approx(0.0, abs=0.15)
  assert slopes['pink'] == pytest.approx(-1.0, abs=0.15)
  assert slopes['brown'] == pytest.approx(-2.0, abs=0.15)


@pytest.mark.parametrize('shift', [0, 7, -13, 800, -800, 9000])
def test_shift_is_exact_with_zero_fill(shift):
  x = np.arange(1, 8001, dtype=np.float32)
  y = augment.apply_shift(x, shift)
  assert y.shape == x.shape
  expected = np.zeros_like(x)
  if shift >= 0:
    expected[shift:] = x[: len(x) - shift] if shift < len(x) else []
  else:
    expected[: len(x) + shift] = x[-shift:]
  np.testing.assert_array_equal(y, expected)


def test_random_shift_is_integer_and_bounded():
  x = np.zeros(SR, np.float32)
  x[8000] = 1.0
  max_ms = 100.0
  seen = set()
  for seed in range(30):
    y = augment.random_shift(x, np.random.default_rng(seed), 1.0, max_ms, SR)
    assert np.count_nonzero(y) == 1 and y.max() == 1.0  # exact sample move
    shift = int(np.argmax(y)) - 8000
    assert abs(shift) <= 1600
    seen.add(shift)
  assert len(seen) > 20


def test_reverb_and_eq_change_signal_keep_length_and_finite():
  x = tone([150, 900, 6000])
  rng = np.random.default_rng(0)
  rir = augment.synthetic_rir(rng, 0.3, SR)
  assert rir.shape == (4800,) and np.sum(rir.astype(np.float64) ** 2) == pytest.approx(1.0, 1e-5)
  assert np.abs(rir[-100:]).max() < 0.01 * np.abs(rir[1:100]).max()  # decayed by the end
  y = augment.apply_reverb(x, rir)
  assert y.shape == x.shape and np.isfinite(y).all() and not np.allclose(y, x, atol=1e-3)
  assert power_db(y) == pytest.approx(power_db(x), abs=1e-3)  # level kept
  z = augment.apply_bandlimit(x, 400.0, 3000.0, SR)
  assert z.shape == x.shape and np.isfinite(z).all()
  assert band_power(z, SR, 800, 1000) > 0.9 * band_power(x, SR, 800, 1000)  # pass band kept
  assert band_power(z, SR, 100, 200) < 0.05 * band_power(x, SR, 100, 200)  # low cut
  assert band_power(z, SR, 5500, 6500) < 0.01 * band_power(x, SR, 5500, 6500)  # high cut


@pytest.mark.parametrize('speed', [0.95, 1.05])
def test_speed_scales_frequency_and_keeps_length(speed):
  x = tone(1000, 1.0)
  y = augment.apply_speed(x, speed, SR)
  assert y.shape == x.shape
  assert peak_hz(y[: int(SR * 0.9)], SR) == pytest.approx(1000 * speed, abs=3)


def test_pitch_shift_keeps_length_and_timing():
  x = tone(440, 1.0)
  y = augment.apply_pitch_shift(x, 1.0, SR)
  assert y.shape == x.shape and np.isfinite(y).all()
  assert peak_hz(y, SR) == pytest.approx(440 * 2 ** (1 / 12), abs=3)
  burst = np.zeros(SR, np.float32)
  burst[8000:9600] = tone(500, 0.1)
  z = augment.apply_pitch_shift(burst, -1.0, SR)
  energy = z.astype(np.float64) ** 2
  centroid = np.sum(np.arange(len(z)) * energy) / np.sum(energy)
  assert abs(centroid - 8800) < 80  # the burst stays where it was (5 ms)


def test_probability_zero_is_identity():
  x = tone([200, 2000])
  y = augment.augment_view(x, np.random.default_rng(0), aug_cfg(**ALL_OFF), SR)
  np.testing.assert_array_equal(y, x)


def test_time_warp_off_skips_speed_and_shift():
  x = tone(300)
  cfg = aug_cfg(**{**ALL_OFF, 'speed_prob': 1.0, 'shift_prob': 1.0})
  np.testing.assert_array_equal(
    augment.augment_view(x, np.random.default_rng(0), cfg, SR, time_warp=False), x
  )
  assert not np.array_equal(augment.augment_view(x, np.random.default_rng(0), cfg, SR), x)


@pytest.mark.parametrize('n', [48_000, 1_000])
def test_full_chain_keeps_length_is_deterministic_and_varies(n):
  x = tone([200, 700, 2500], seconds=n / SR)
  cfg = aug_cfg(**{k: 1.0 for k in ALL_OFF})
  a = augment.augment_view(x, np.random.default_rng(5), cfg, SR)
  b = augment.augment_view(x, np.random.default_rng(5), cfg, SR)
  c = augment.augment_view(x, np.random.default_rng(6), cfg, SR)
  assert a.shape == (n,) and a.dtype == np.float32 and np.isfinite(a).all()
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_two_views_from_one_rng_differ():
  x = tone([300, 1200])
  rng = np.random.default_rng(0)
  v1 = augment.augment_view(x, rng, aug_cfg(), SR)
  v2 = augment.augment_view(x, rng, aug_cfg(), SR)
  assert not np.array_equal(v1, v2)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match='colour'):
    augment.coloured_noise(np.random.default_rng(0), 10, 'purple')
  with pytest.raises(ValueError, match='mono'):
    augment.apply_gain(np.zeros((2, 3)), 1.0)
  with pytest.raises(ValueError, match='low_hz < high_hz'):
    augment.apply_bandlimit(np.zeros(1000, np.float32), 5000.0, 3000.0, SR)
  with pytest.raises(ValueError, match='range'):
    augment.random_gain(np.ones(10, np.float32), np.random.default_rng(0), 1.0, (3.0, -3.0))


# ---------------------------------------------------------------------------- fast implementations
# The augmentations are vectorized numpy / scipy.fft versions of librosa's pitch shift and scipy's
# sosfiltfilt / fftconvolve; these tests pin them to those references.


def _butter_sos(low, high):
  import scipy.signal

  if low > 0:
    return scipy.signal.butter(4, [low, high], btype='bandpass', fs=SR, output='sos')
  return scipy.signal.butter(4, high, btype='lowpass', fs=SR, output='sos')


def _rel_rms(a, ref):
  a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
  return np.sqrt(np.mean((a - ref) ** 2) / np.mean(ref**2))


@pytest.mark.parametrize(
  'low, high', [(50.0, 3000.0), (300.0, 7600.0), (0.0, 4000.0), (1000.0, 1100.0)]
)
def test_bandlimit_power_response_is_the_butterworth_design(low, high):
  import scipy.signal

  f = np.linspace(0.0, SR / 2, 2001)
  ref = np.abs(scipy.signal.sosfreqz(_butter_sos(low, high), f, fs=SR)[1]) ** 2
  np.testing.assert_allclose(augment.butterworth_power_response(f, low, high, SR), ref, atol=1e-9)


@pytest.mark.parametrize(
  'low, high', [(50.0, 3000.0), (250.0, 7500.0), (0.0, 5000.0), (1000.0, 1100.0)]
)
def test_bandlimit_matches_sosfiltfilt_away_from_the_ends(low, high):
  import scipy.signal

  x = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
  y = augment.apply_bandlimit(x, low, high, SR)
  ref = scipy.signal.sosfiltfilt(_butter_sos(low, high), x.astype(np.float64))
  assert y.shape == x.shape and y.dtype == np.float32
  interior = slice(2000, -2000)  # 125 ms: sosfiltfilt's edge handling differs (odd extension)
  assert _rel_rms(y[interior], ref[interior]) < 1e-4


def test_bandlimit_is_zero_phase():
  x = np.zeros(8001, np.float32)
  x[4000] = 1.0
  y = augment.apply_bandlimit(x, 120.0, 3500.0, SR).astype(np.float64)
  assert np.argmax(np.abs(y)) == 4000  # no delay
  np.testing.assert_allclose(y[4001:], y[:4000][::-1], atol=1e-6 * np.abs(y).max())  # symmetric


@pytest.mark.parametrize('rt60', [0.1, 0.45])
def test_reverb_is_the_causal_convolution(rt60):
  x = tone([150, 900, 6000])
  rir = augment.synthetic_rir(np.random.default_rng(1), rt60, SR)
  ref = np.convolve(x.astype(np.float64), rir.astype(np.float64))[: len(x)]
  ref *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / np.mean(ref**2))
  y = augment.apply_reverb(x, rir)
  assert y.shape == x.shape and y.dtype == np.float32
  assert _rel_rms(y, ref) < 1e-5


@pytest.mark.parametrize('n', [1001, 48_000])
@pytest.mark.parametrize('colour', augment.NOISE_COLOURS)
def test_coloured_noise_any_length_float32_unit_rms(n, colour):
  noise = augment.coloured_noise(np.random.default_rng(3), n, colour)
  assert noise.shape == (n,) and noise.dtype == np.float32 and np.isfinite(noise).all()
  assert np.sqrt(np.mean(noise.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-4)


def test_fast_fft_lengths():
  for n in list(range(1, 300)) + [48_000, 50_560, 55_999, 56_000, 65_537, 1_000_003]:
    size = augment._fast_len(n)
    assert n <= size <= 1.15 * n + 8


@pytest.mark.parametrize('semitones', [-1.0, -0.4, 0.6])
def test_pitch_shift_moves_the_peak(semitones):
  x = tone(440, 1.0)
  y = augment.apply_pitch_shift(x, semitones, SR)
  assert y.shape == x.shape and y.dtype == np.float32
  assert peak_hz(y, SR) == pytest.approx(440 * 2 ** (semitones / 12), abs=3)
  # level about kept (a phase vocoder loses up to ~0.8 dB on a steady tone, librosa's too)
  assert power_db(y[1000:-1000]) == pytest.approx(power_db(x[1000:-1000]), abs=1.5)


@pytest.mark.parametrize('n', [10, 63, 64, 100, 513, 1000, 4097])
def test_pitch_shift_short_inputs_keep_length(n):
  x = tone(700, n / SR)
  y = augment.apply_pitch_shift(x, 0.8, SR)
  assert y.shape == (n,) and y.dtype == np.float32 and np.isfinite(y).all()
  if n < 64:
    np.testing.assert_array_equal(y, x)


def test_stft_phase_vocoder_istft_match_librosa():
  librosa = pytest.importorskip('librosa')
  rng = np.random.default_rng(0)
  x = tone([220, 1330], 1.0) + 0.01 * rng.standard_normal(SR).astype(np.float32)
  spec = augment._stft(x, 512, 128)
  ref = librosa.stft(x, n_fft=512, hop_length=128).T
  scale = np.abs(ref).max()
  np.testing.assert_allclose(spec, ref, atol=1e-5 * scale)
  for rate in (2 ** (-1 / 12), 2 ** (0.5 / 12)):
    # librosa accumulates the phase in the input's precision (float32 for complex64, drifting by
    # ~1e-2 rad over 3 s); the vectorized version is as accurate as librosa run in float64.
    ref_pv = librosa.phase_vocoder(
      ref.T.astype(np.complex128), rate=rate, hop_length=128, n_fft=512
    ).T
    out = augment._phase_vocoder(spec, rate)
    assert out.shape == ref_pv.shape
    np.testing.assert_allclose(out, ref_pv, atol=1e-4 * scale)
    length = int(round(len(x) / rate))
    ref_y = librosa.istft(out.T, hop_length=128, n_fft=512, length=length, dtype=np.float32)
    np.testing.assert_allclose(
      augment._istft(out, 512, 128, length), ref_y, atol=1e-5 * np.abs(ref_y).max()
    )


@pytest.mark.parametrize('semitones', [-1.0, 0.7])
def test_pitch_shift_matches_librosa(semitones):
  librosa = pytest.importorskip('librosa')
  rng = np.random.default_rng(1)
  x = tone([180, 760, 2300], 3.0) + 0.01 * rng.standard_normal(3 * SR).astype(np.float32)
  ref = librosa.effects.pitch_shift(x, sr=SR, n_steps=semitones, res_type='soxr_hq', n_fft=512)
  assert _rel_rms(augment.apply_pitch_shift(x, semitones, SR), ref) < 2e-2
