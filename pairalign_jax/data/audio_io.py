"""Reading audio files and fitting waveforms to fixed-length segments (numpy, soundfile, soxr).

* `read_audio(path, start, end)` decodes any format soundfile reads (WAV, FLAC, NIST SPHERE, OGG,
  ...), downmixes to mono (mean over channels) and returns `(float32[n], native_sample_rate)`.
  It raises `bad_input.BadAudioError` with a reason for unusable input (see `bad_input.REASONS`).
* `resample(wave, sr_in, sr_out)` uses soxr (high quality).
* `fit_segment(wave, length, crop=..., rng=...)` crops to `length` samples, or zero-pads **at the
  end** when the clip is shorter: a short clip starts at time 0 of the segment, so its labels'
  times (seconds from the file start) stay valid.
  Crop placement: `'random'` (training) draws the start uniformly from `[0, n - length]`;
  `'center'` (evaluation, deterministic) starts at `(n - length) // 2`; `'start'` at 0.
"""

import os
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from pairalign_jax.data.bad_input import BadAudioError
from pairalign_jax.data.bad_input import validate_audio

CROPS = ('random', 'center', 'start')


def audio_info(path: str) -> dict[str, Any] | None:
  """`{'frames', 'sample_rate', 'channels'}` from the header (cheap), or None if unreadable."""
  try:
    info = sf.info(path)
  except (sf.LibsndfileError, RuntimeError, OSError, ValueError):
    return None
  return {
    'frames': int(info.frames),
    'sample_rate': int(info.samplerate),
    'channels': int(info.channels),
  }


def to_mono(wave: np.ndarray) -> np.ndarray:
  """`[n]` or `[n, channels]` -> float32 `[n]` (mean over channels)."""
  wave = np.asarray(wave, np.float32)
  if wave.ndim == 2:
    wave = wave.mean(axis=1, dtype=np.float32)
  elif wave.ndim != 1:
    raise ValueError(f'expected audio of shape [n] or [n, channels], got {wave.shape}')
  return wave


def read_audio(
  path: str, start: float | None = None, end: float | None = None
) -> tuple[np.ndarray, int]:
  """Decodes `path` (optionally the region `[start, end)` in seconds) to mono float32.

  Returns `(wave float32[n], sample_rate)` at the file's own rate. Float files whose peak
  exceeds 1 are scaled down to peak 1 (the record contract is audio in [-1, 1]).
  Raises `BadAudioError`: 'empty' (zero-byte file, no samples, empty region), 'unreadable'
  (decoder error, bad or unsupported header), 'truncated' (fewer samples than the header
  promises), 'nonfinite', 'silent'.
  """
  path = os.fspath(path)
  try:
    size = os.path.getsize(path)
  except OSError as e:
    raise BadAudioError(path, 'unreadable', f'cannot stat: {e}') from e
  if size == 0:
    raise BadAudioError(path, 'empty', 'zero-byte file')
  try:
    with sf.SoundFile(path) as f:
      sr = int(f.samplerate)
      total = int(f.frames)
      first = 0 if start is None else int(round(float(start) * sr))
      last = total if end is None else min(int(round(float(end) * sr)), total)
      if first < 0 or (start is not None and first >= total):
        raise BadAudioError(
          path, 'empty', f'region start {start}s outside the file ({total / max(sr, 1):.3f}s)'
        )
      want = last - first
      if want <= 0:
        raise BadAudioError(path, 'empty', f'no samples in region [{start}, {end})')
      if first:
        f.seek(first)
      wave = f.read(frames=want, dtype='float32', always_2d=True)  # [n, channels]
  except BadAudioError:
    raise
  except (sf.LibsndfileError, RuntimeError, OSError, ValueError, EOFError) as e:
    raise BadAudioError(path, 'unreadable', str(e).strip() or type(e).__name__) from e
  if wave.shape[0] < want:
    raise BadAudioError(path, 'truncated', f'read {wave.shape[0]} of {want} samples')
  wave = to_mono(wave)
  validate_audio(wave, path)
  peak = float(np.abs(wave).max())
  if peak > 1.0:
    wave = wave / np.float32(peak)
  return wave, sr


def resample(wave: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
  """float32 `[n]` at `sr_in` -> float32 `[round(n * sr_out / sr_in)]` at `sr_out` (soxr HQ)."""
  wave = np.asarray(wave, np.float32)
  if int(sr_in) == int(sr_out):
    return wave
  if sr_in <= 0 or sr_out <= 0:
    raise ValueError(f'sample rates must be positive, got {sr_in} -> {sr_out}')
  return np.asarray(soxr.resample(wave, sr_in, sr_out, quality='HQ'), np.float32)


def crop_start(n: int, length: int, crop: str, rng: np.random.Generator | None = None) -> int:
  """First sample of the `length`-sample window over an `n`-sample clip (0 when `n <= length`)."""
  if crop not in CROPS:
    raise ValueError(f'crop must be one of {CROPS}, got {crop!r}')
  if n <= length:
    return 0
  if crop == 'random':
    if rng is None:
      raise ValueError("crop='random' needs an rng (np.random.Generator)")
    return int(rng.integers(0, n - length + 1))
  if crop == 'center':
    return (n - length) // 2
  return 0


def fit_segment(
  wave: np.ndarray, length: int, *, crop: str = 'center', rng: np.random.Generator | None = None
) -> np.ndarray:
  """float32 `[n]` -> float32 `[length]`: crop (see `crop_start`) or zero-pad at the end."""
  wave = np.asarray(wave, np.float32)
  if wave.ndim != 1:
    raise ValueError(f'fit_segment expects mono [n] audio, got shape {wave.shape}')
  start = crop_start(wave.shape[0], length, crop, rng)
  out = wave[start : start + length]
  if out.shape[0] < length:
    out = np.pad(out, (0, length - out.shape[0]))
  return np.ascontiguousarray(out, dtype=np.float32)
