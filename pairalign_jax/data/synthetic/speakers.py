"""Speakers of the synthetic corpus: one independent parameter draw each (`make_speaker`).

f0 mean 85-145 Hz (male-like) or 160-250 Hz (female-like), accent range, vocal-tract-length
formant scale 0.85-1.02 / 1.06-1.2, duration scale 0.9-1.12 (the corpus averages 12 phones/s,
5-95 % of utterances 10.6-13.6), jitter, shimmer, tilt, breathiness, loudness (output peak
0.35-0.85).
"""

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Speaker:
  """Speaker parameters (see module docstring for ranges)."""

  name: str
  female: bool
  f0_mean: float  # Hz
  f0_range: float  # pitch-accent range, semitones
  formant_scale: float  # vocal-tract length: formants are multiplied by this
  duration_scale: float  # phone durations are multiplied by this (1 / speaking rate)
  jitter: float  # std of pulse-time perturbation, fraction of the period
  shimmer: float  # std of log pulse amplitude
  tilt: float  # spectral-tilt pole in [0, 1): extra high-frequency roll-off
  breathiness: float  # aspiration noise level in voiced speech (relative)
  loudness: float  # output peak amplitude


def make_speaker(rng: np.random.Generator | int | Sequence[int], name: str = '') -> Speaker:
  """Draws one speaker's parameters from `rng` (a Generator, or a seed for `default_rng`)."""
  if not isinstance(rng, np.random.Generator):
    rng = np.random.default_rng(rng)
  female = bool(rng.random() < 0.5)
  if female:
    f0_mean, formant_scale = rng.uniform(160.0, 250.0), rng.uniform(1.06, 1.2)
    breathiness = rng.uniform(0.04, 0.12)
  else:
    f0_mean, formant_scale = rng.uniform(85.0, 145.0), rng.uniform(0.85, 1.02)
    breathiness = rng.uniform(0.02, 0.08)
  return Speaker(
    name=name,
    female=female,
    f0_mean=float(f0_mean),
    f0_range=float(rng.uniform(2.0, 5.0)),
    formant_scale=float(formant_scale),
    duration_scale=float(rng.uniform(0.9, 1.12)),
    jitter=float(rng.uniform(0.004, 0.02)),
    shimmer=float(rng.uniform(0.02, 0.08)),
    tilt=float(rng.uniform(0.0, 0.5)),
    breathiness=float(breathiness),
    loudness=float(rng.uniform(0.35, 0.85)),
  )
