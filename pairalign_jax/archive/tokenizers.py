"""Any tokenizer as what the archive needs: long audio -> windows, a query clip -> tokens.

    st = from_tokenizer(tok, kind='pairalign', hop_seconds=1.0)   # or kind='vq'
    st = from_segment_fn('mfcc_kmeans', kmeans_tok, sample_rate=16_000, window_seconds=3.0)
    windows = st.windows(wave, sr)         # [{'start', 'end', 'tokens', 'times'}], absolute times
    tokens, times = st.clip(clip, sr)      # one clip of at most a window

A `StringTokenizer` holds two callables and what the index records about it (`info`, stored in
the index manifest: a re-run must use the same tokenizer). PairAlign and its VQ stage go
through `Tokenizer.tokenize_long` (`vq=True` for the VQ stage); any segment tokenizer
`fn(waves float32 [N, S], sample_rate) -> object with .tokens, .times` (e.g. an
`evaluation.baselines.KMeansTokenizer`) is windowed by `segment_windows` exactly as
`tokenize_long` windows (`window_starts`: a window every hop while a whole one fits, the last
aligned to the end of the audio; audio of at most one window is one zero-padded window; times
absolute, rounded to 0.1 ms and clipped to the window).

A query clip (at most one window) is tokenized as one zero-padded segment and the tokens whose
time lies past the clip's end (written for the padding) are dropped (`StringTokenizer.clip`). A
query *region* of a longer recording (`region_tokens`) is tokenized in context, as the archive's
windows are: the window of `window_seconds` centred on the region (moved inside the recording),
then the tokens whose time falls inside the region. This is the better query: the model and the
MFCC front end normalize each segment over its own frames, so a short clip padded with 2.5 s of
zeros is normalized unlike any archive window (measured in docs/METHOD.md, "Searching an
archive").
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import numpy as np
import soxr

WindowsFn = Callable[[np.ndarray, int], list[dict[str, Any]]]
ClipFn = Callable[[np.ndarray, int], tuple[list[int], np.ndarray]]


@dataclasses.dataclass
class StringTokenizer:
  name: str  # 'pairalign', 'vq', 'mfcc_kmeans', ...
  windows: WindowsFn  # (wave float32 [n], sample_rate) -> windows with absolute times
  clip: ClipFn  # (wave [n] of at most one window, sample_rate) -> (tokens, times [k])
  sample_rate: int
  window_seconds: float
  hop_seconds: float
  info: dict[str, Any] = dataclasses.field(default_factory=dict)  # recorded in the index


def window_starts(num_samples: int, window_samples: int, hop_samples: int) -> list[int]:
  """Start samples of the windows (`Tokenizer.window_starts`' rule, module docstring)."""
  if window_samples < 1 or hop_samples < 1:
    raise ValueError(f'window and hop must be >= 1 sample, got {window_samples}, {hop_samples}')
  if num_samples <= window_samples:
    return [0]
  starts = list(range(0, num_samples - window_samples + 1, hop_samples))
  if starts[-1] + window_samples < num_samples:
    starts.append(num_samples - window_samples)
  return starts


def _resampled(wave: np.ndarray, sample_rate: int, target: int) -> np.ndarray:
  wave = np.asarray(wave, np.float32)
  if wave.ndim != 1 or wave.size == 0:
    raise ValueError(f'waveform must be 1-D and non-empty, got shape {wave.shape}')
  if int(sample_rate) != target:
    wave = soxr.resample(wave, int(sample_rate), target).astype(np.float32)
  return wave


def segment_windows(
  fn,
  wave: np.ndarray,
  sample_rate: int,
  *,
  model_rate: int,
  window_seconds: float,
  hop_seconds: float,
  batch_size: int = 64,
) -> list[dict[str, Any]]:
  """Windows of a segment tokenizer over long audio (module docstring)."""
  wave = _resampled(wave, sample_rate, model_rate)
  size = int(round(window_seconds * model_rate))
  hop = max(1, int(round(hop_seconds * model_rate)))
  starts = window_starts(wave.shape[0], size, hop)
  out = []
  for first in range(0, len(starts), batch_size):
    chunk = starts[first : first + batch_size]
    batch = np.zeros((len(chunk), size), np.float32)  # [n, S], zero-padded
    for i, s in enumerate(chunk):
      piece = wave[s : s + size]
      batch[i, : piece.shape[0]] = piece
    res = fn(batch, model_rate)
    for s, tok, tim in zip(chunk, res.tokens, res.times):
      t0 = s / model_rate
      t1 = min(s + size, wave.shape[0]) / model_rate
      times = [min(max(round(float(t) + t0, 4), t0), t1) for t in np.asarray(tim).reshape(-1)]
      out.append({'start': t0, 'end': t1, 'tokens': [int(x) for x in tok], 'times': times})
  return out


def segment_clip(fn, wave: np.ndarray, sample_rate: int, *, model_rate: int, window_seconds: float):
  """A query clip through a segment tokenizer: (tokens, times [k]) of the clip (module doc)."""
  wave = _resampled(wave, sample_rate, model_rate)
  size = int(round(window_seconds * model_rate))
  if wave.shape[0] > size:
    raise ValueError(
      f'query: {wave.shape[0] / model_rate:.2f} s is longer than one {window_seconds:g} s window'
    )
  batch = np.zeros((1, size), np.float32)
  batch[0, : wave.shape[0]] = wave
  res = fn(batch, model_rate)
  return keep_inside(res.tokens[0], res.times[0], wave.shape[0] / model_rate)


def keep_inside(tokens, times, duration: float) -> tuple[list[int], np.ndarray]:
  """The tokens whose time is at most `duration` (those of the clip, not of its padding)."""
  t = np.asarray(times, np.float32).reshape(-1)
  keep = t <= duration + 1e-6
  return [int(x) for x, k in zip(tokens, keep) if k], t[keep]


def context_span(start: float, end: float, duration: float, window: float) -> tuple[float, float]:
  """The `window`-long span centred on `[start, end]`, moved inside `[0, duration]`."""
  lo = min(max(0.0, (start + end) / 2 - window / 2), max(0.0, duration - window))
  return lo, min(duration, lo + window)


def region_tokens(
  st: 'StringTokenizer', wave: np.ndarray, sample_rate: int, start: float, end: float
) -> tuple[list[int], np.ndarray]:
  """Tokens (and times, seconds from the start of `wave`) of the region `[start, end]` of
  `wave`, tokenized in its context window (module docstring). ValueError naming `start`/`end`
  when the region is empty, outside the audio or longer than a window."""
  duration = len(wave) / sample_rate
  if not 0 <= start < end <= duration + 1e-6:
    raise ValueError(
      f'query region start={start:g}, end={end:g} must satisfy 0 <= start < end <= '
      f'{duration:.3f} (the query audio)'
    )
  if end - start > st.window_seconds + 1e-6:
    raise ValueError(
      f'query region start={start:g}, end={end:g}: {end - start:.2f} s is longer than one '
      f'{st.window_seconds:g} s window'
    )
  lo, hi = context_span(start, end, duration, st.window_seconds)
  piece = np.asarray(wave)[int(round(lo * sample_rate)) : int(round(hi * sample_rate))]
  tokens, times = st.clip(piece, sample_rate)
  times = np.asarray(times, np.float64) + lo
  keep = (times >= start - 1e-6) & (times <= end + 1e-6)
  return [t for t, k in zip(tokens, keep) if k], times[keep].astype(np.float32)


def from_segment_fn(
  name: str,
  fn,
  *,
  sample_rate: int,
  window_seconds: float = 3.0,
  hop_seconds: float = 1.0,
  batch_size: int = 64,
  info: Optional[dict[str, Any]] = None,
) -> StringTokenizer:
  """A segment tokenizer `fn(waves [N, S], sr) -> .tokens, .times` (e.g. MFCC k-means)."""
  if not (np.isfinite(hop_seconds) and 0 < hop_seconds <= window_seconds):
    raise ValueError(
      f'hop_seconds must be in (0, {window_seconds:g}] (the window), got {hop_seconds!r}'
    )
  kw = dict(model_rate=int(sample_rate), window_seconds=float(window_seconds))
  return StringTokenizer(
    name=name,
    windows=lambda w, sr: segment_windows(
      fn, w, sr, hop_seconds=hop_seconds, batch_size=batch_size, **kw
    ),
    clip=lambda w, sr: segment_clip(fn, w, sr, **kw),
    sample_rate=int(sample_rate),
    window_seconds=float(window_seconds),
    hop_seconds=float(hop_seconds),
    info=dict(info or {}, kind=name),
  )


KINDS = ('pairalign', 'vq')


def from_tokenizer(
  tok,
  *,
  kind: str = 'pairalign',
  hop_seconds: float = 1.0,
  eos_bias: Optional[float] = None,
  info: Optional[dict[str, Any]] = None,
) -> StringTokenizer:
  """PairAlign (`kind='pairalign'`, decoding with `eos_bias`, default the trained bias) or its
  VQ stage (`kind='vq'`) of a `tokenizer.Tokenizer`, windowed by `tokenize_long`."""
  if kind not in KINDS:
    raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
  vq = kind == 'vq'
  if vq and eos_bias is not None:
    raise ValueError("eos_bias sets the length of PairAlign's strings; kind='vq' has none to set")
  window_seconds = tok.segment_samples / tok.sample_rate
  from pairalign_jax.tokenizer import check_hop_seconds

  check_hop_seconds(hop_seconds, window_seconds)

  def windows(wave, sr):
    return tok.tokenize_long(wave, sr, hop_seconds=hop_seconds, eos_bias=eos_bias, vq=vq)

  def clip(wave, sr):
    wave = _resampled(wave, sr, tok.sample_rate)
    if wave.shape[0] > tok.segment_samples:
      raise ValueError(
        f'query: {wave.shape[0] / tok.sample_rate:.2f} s is longer than one '
        f'{window_seconds:g} s window'
      )
    out = (
      tok.vq_tokenize([wave], tok.sample_rate)
      if vq
      else tok.tokenize([wave], tok.sample_rate, eos_bias=eos_bias)
    )
    return keep_inside(out.tokens[0], out.times[0], wave.shape[0] / tok.sample_rate)

  recorded = dict(info or {})
  recorded.update(
    kind=kind,
    eos_bias=None if eos_bias is None else float(eos_bias),
    model_fingerprint=tok.fingerprint(),  # the index refuses a search with another model
  )
  return StringTokenizer(
    name=kind,
    windows=windows,
    clip=clip,
    sample_rate=int(tok.sample_rate),
    window_seconds=float(window_seconds),
    hop_seconds=float(hop_seconds),
    info=recorded,
  )
