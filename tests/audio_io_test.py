"""Tests for pairalign_jax/data/audio_io.py and the bad-input bookkeeping it feeds."""

import pickle

import numpy as np
import pytest
import soundfile as sf

from pairalign_jax.data import audio_io
from pairalign_jax.data import bad_input

SR = 16_000


def tone(freq, seconds, sr=SR, amp=0.3):
  t = np.arange(int(round(seconds * sr))) / sr
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_sphere(path, wave, sr, *, magic=b'NIST_1A', coding=b'pcm'):
  """A NIST SPHERE file as TIMIT ships it: 1024-byte ASCII header, 16-bit little-endian PCM."""
  pcm = np.round(np.clip(wave, -1, 1) * 32767).astype('<i2')
  header = (
    magic
    + b'\n   1024\n'
    + b'sample_count -i %d\n' % len(pcm)
    + b'sample_rate -i %d\n' % sr
    + b'channel_count -i 1\nsample_n_bytes -i 2\n'
    + b'sample_coding -s%d %s\n' % (len(coding), coding)
    + b'sample_byte_format -s2 01\nsample_sig_bits -i 16\nend_head\n'
  )
  with open(path, 'wb') as f:
    f.write(header.ljust(1024, b' ') + pcm.tobytes())


def peak_hz(wave, sr):
  spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
  return np.argmax(spectrum) * sr / len(wave)


def reason_of(path):
  with pytest.raises(bad_input.BadAudioError) as info:
    audio_io.read_audio(path)
  assert info.value.path == str(path)
  return info.value.reason


def test_read_flac_mono_values(tmp_path):
  x = tone(440, 1.0)
  sf.write(tmp_path / 'a.flac', x, SR)
  y, sr = audio_io.read_audio(tmp_path / 'a.flac')
  assert sr == SR and y.dtype == np.float32 and y.shape == x.shape
  np.testing.assert_allclose(y, x, atol=1 / 16384)  # 16-bit quantization


def test_stereo_is_downmixed_by_mean(tmp_path):
  left, right = tone(300, 0.5), tone(500, 0.5, amp=0.2)
  sf.write(tmp_path / 's.wav', np.stack([left, right], 1), SR, subtype='FLOAT')
  y, _ = audio_io.read_audio(tmp_path / 's.wav')
  np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)


def test_region_read(tmp_path):
  x = np.linspace(-0.5, 0.5, SR * 2, dtype=np.float32)
  sf.write(tmp_path / 'r.wav', x, SR, subtype='FLOAT')
  y, _ = audio_io.read_audio(tmp_path / 'r.wav', start=0.5, end=1.25)
  np.testing.assert_array_equal(y, x[8000:20000])
  y, _ = audio_io.read_audio(tmp_path / 'r.wav', start=1.5)
  np.testing.assert_array_equal(y, x[24000:])
  with pytest.raises(bad_input.BadAudioError, match='outside'):
    audio_io.read_audio(tmp_path / 'r.wav', start=5.0)


def test_nist_sphere_written_here_is_read_by_soundfile(tmp_path):
  x = tone(200, 0.75)
  write_sphere(tmp_path / 'SX1.WAV', x, SR)
  assert sf.info(str(tmp_path / 'SX1.WAV')).format == 'NIST'
  y, sr = audio_io.read_audio(tmp_path / 'SX1.WAV')
  assert sr == SR
  np.testing.assert_allclose(y, x, atol=1 / 32767)


def test_float_peak_above_one_is_scaled_to_one(tmp_path):
  x = tone(100, 0.2, amp=2.0)
  sf.write(tmp_path / 'loud.wav', x, SR, subtype='FLOAT')
  y, _ = audio_io.read_audio(tmp_path / 'loud.wav')
  assert np.isclose(np.abs(y).max(), 1.0)
  np.testing.assert_allclose(y, x / np.abs(x).max(), atol=1e-6)


def test_bad_files_raise_with_reason(tmp_path):
  (tmp_path / 'empty.flac').write_bytes(b'')
  assert reason_of(tmp_path / 'empty.flac') == 'empty'
  sf.write(tmp_path / 'ok.flac', tone(220, 2.0), SR)
  data = (tmp_path / 'ok.flac').read_bytes()
  (tmp_path / 'trunc.flac').write_bytes(data[: len(data) // 3])
  assert reason_of(tmp_path / 'trunc.flac') == 'unreadable'
  nan = tone(220, 0.5)
  nan[100] = np.nan
  sf.write(tmp_path / 'nan.wav', nan, SR, subtype='FLOAT')
  assert reason_of(tmp_path / 'nan.wav') == 'nonfinite'
  sf.write(tmp_path / 'zero.flac', np.zeros(SR, np.float32), SR)
  assert reason_of(tmp_path / 'zero.flac') == 'silent'
  write_sphere(tmp_path / 'bad_magic.wav', tone(220, 0.5), SR, magic=b'NIST_XX')
  assert reason_of(tmp_path / 'bad_magic.wav') == 'unreadable'
  write_sphere(tmp_path / 'bad_coding.wav', tone(220, 0.5), SR, coding=b'shorten')
  assert reason_of(tmp_path / 'bad_coding.wav') == 'unreadable'
  (tmp_path / 'text.wav').write_text('not audio at all')
  assert reason_of(tmp_path / 'text.wav') == 'unreadable'
  assert reason_of(tmp_path / 'missing.wav') == 'unreadable'


def test_audio_info(tmp_path):
  sf.write(tmp_path / 'a.flac', tone(220, 1.5, sr=8000), 8000)
  assert audio_io.audio_info(str(tmp_path / 'a.flac')) == {
    'frames': 12000,
    'sample_rate': 8000,
    'channels': 1,
  }
  (tmp_path / 'b.flac').write_bytes(b'junk')
  assert audio_io.audio_info(str(tmp_path / 'b.flac')) is None


@pytest.mark.parametrize('sr_in', [8000, 44100])
def test_resample_keeps_frequency_and_duration(sr_in):
  x = tone(1000, 1.0, sr=sr_in)
  y = audio_io.resample(x, sr_in, SR)
  assert y.dtype == np.float32 and y.shape == (SR,)
  assert abs(peak_hz(y, SR) - 1000) <= 2
  np.testing.assert_array_equal(audio_io.resample(x, sr_in, sr_in), x)


def test_fit_segment_pads_at_end_and_crops():
  x = np.arange(1, 11, dtype=np.float32)
  np.testing.assert_array_equal(audio_io.fit_segment(x, 14), np.r_[x, np.zeros(4, np.float32)])
  np.testing.assert_array_equal(audio_io.fit_segment(x, 4, crop='center'), x[3:7])
  np.testing.assert_array_equal(audio_io.fit_segment(x, 4, crop='start'), x[:4])
  starts = {
    int(audio_io.fit_segment(x, 4, crop='random', rng=np.random.default_rng(s))[0])
    for s in range(40)
  }
  assert starts == set(range(1, 8))  # every start in [0, n - length] occurs
  a = audio_io.fit_segment(x, 4, crop='random', rng=np.random.default_rng(3))
  b = audio_io.fit_segment(x, 4, crop='random', rng=np.random.default_rng(3))
  np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match='rng'):
    audio_io.fit_segment(x, 4, crop='random')
  with pytest.raises(ValueError, match='crop'):
    audio_io.fit_segment(x, 4, crop='middle')


def test_stats_fraction_error_names_worst_files():
  stats = bad_input.BadInputStats(max_bad_fraction=0.25, min_reads=4)
  for _ in range(2):
    stats.record_good()
  stats.record_bad(bad_input.BadAudioError('/d/a.flac', 'silent'))
  stats.check()  # 3 reads < min_reads: no error yet
  stats.record_bad(bad_input.BadAudioError('/d/a.flac', 'silent'))
  stats.record_bad(bad_input.BadAudioError('/d/b.wav', 'unreadable', 'bad header'))
  assert stats.as_dict()['bad/silent'] == 2 and stats.as_dict()['reads'] == 5
  with pytest.raises(bad_input.BadInputError) as info:
    stats.check()
  msg = str(info.value)
  assert '/d/a.flac: silent' in msg and '/d/b.wav: unreadable (bad header)' in msg
  assert msg.index('/d/a.flac') < msg.index('/d/b.wav')  # most often met first


def test_stats_pickle_round_trip():
  stats = bad_input.BadInputStats(0.5, 1)
  stats.record_bad(bad_input.BadAudioError('x', 'empty'))
  copy = pickle.loads(pickle.dumps(stats))
  copy.record_good()
  assert copy.as_dict()['reads'] == 2 and copy.as_dict()['bad/empty'] == 1
  with pytest.raises(ValueError, match='reason'):
    bad_input.BadAudioError('x', 'cursed')
