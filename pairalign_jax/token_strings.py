"""Token strings as every tokenizer returns them, and the one rule that turns frame codes into
a string.

    out = TokenizerOutput(tokens=[[3, 5]], times=[np.array([0.01, 0.05])])
    tokens, centres = collapse_repeats(np.array([3, 3, 5, 5, 5]))   # [3, 5], [0.5, 3.0]
    out = strings_from_frame_codes(codes, frame_seconds=0.02)        # codes [N, T]

Numpy only (no model, no training code), so the evaluation, the baselines and the trained
`tokenizer.Tokenizer` share it. The in-graph form used for training targets is
`sequences.collapse_runs` (batched, padded to a fixed length; tested equal to `collapse_repeats`).

Time convention: frame `t` spans `[t, t + 1) * frame_seconds`; a token's time is the centre of
its run, `(centre_frame + 0.5) * frame_seconds` with `centre_frame = (first + last) / 2`, or with
`time_anchor='end'` (the decoder trained with `targets.time_anchor = 'end'`) the centre of its
run's last frame, `(last + 0.5) * frame_seconds`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np


@dataclasses.dataclass
class TokenizerOutput:
  """What a tokenizer returns for `N` waveforms."""

  tokens: list[list[int]]  # codes only (no BOS/EOS)
  times: Optional[list[np.ndarray]] = None  # seconds from the segment start, one per token
  terminated: Optional[np.ndarray] = None  # [N] bool: EOS before the length limit (None: no decode)
  # The decoder's own cross-attention time per token, before the running maximum that makes
  # `times` non-decreasing (for analysis of the attention itself); `times` for frame-code strings.
  raw_times: Optional[list[np.ndarray]] = None


def collapse_repeats(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Merges runs of a repeated code: `codes [T]` -> `(tokens [n] int64, centres [n] float64)`.

  `centres[i]` is the centre frame index of token `i`'s run, `(first + last) / 2` (a half-integer
  for runs of even length). ValueError unless `codes` is 1-D.
  """
  c = np.asarray(codes)
  if c.ndim != 1:
    raise ValueError(f'collapse_repeats expects codes [T], got shape {c.shape}')
  if c.size == 0:
    return np.zeros([0], np.int64), np.zeros([0], np.float64)
  starts = np.concatenate([[0], np.flatnonzero(c[1:] != c[:-1]) + 1])
  ends = np.concatenate([starts[1:], [c.size]])  # exclusive
  return c[starts].astype(np.int64), (starts + ends - 1) / 2.0


def strings_from_frame_codes(
  codes: np.ndarray, frame_seconds: float, time_anchor: str = 'centre'
) -> TokenizerOutput:
  """Frame codes `[N, T]` -> one collapsed string per row with run-centre (or, with
  `time_anchor='end'`, run-end) times in seconds.

  `terminated` is all True and `raw_times` is `times` (nothing is decoded).
  """
  if time_anchor not in ('centre', 'end'):
    raise ValueError(f"time_anchor must be 'centre' or 'end', got {time_anchor!r}")
  codes = np.asarray(codes)
  if codes.ndim != 2:
    raise ValueError(f'frame codes must be [N, T], got shape {codes.shape}')
  if not (np.isfinite(frame_seconds) and frame_seconds > 0):
    raise ValueError(f'frame_seconds must be a positive number, got {frame_seconds!r}')
  tokens, times = [], []
  for row in codes:
    seq, centres = collapse_repeats(row)
    tokens.append(seq.tolist())
    if time_anchor == 'end':
      ends = np.concatenate([np.flatnonzero(row[1:] != row[:-1]) + 1, [row.size]])  # exclusive
      times.append(((ends - 0.5) * frame_seconds).astype(np.float32))
    else:
      times.append(((centres + 0.5) * frame_seconds).astype(np.float32))
  return TokenizerOutput(
    tokens=tokens, times=times, terminated=np.ones(len(tokens), bool), raw_times=times
  )
