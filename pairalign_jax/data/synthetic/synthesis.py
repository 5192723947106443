"""The synthesizer (`synthesize`): a source-filter (Klatt-style) model of one utterance in numpy.

`synthesize` runs these steps in order; every random draw comes from the caller's generator, in
this order, so the same generator state gives bit-identical audio:

1. `_check_inputs`: phone names, a vowel, the sample rate, `word_index`.
2. `_layout`: phone start/end times (durations, pauses, leading silence, fit to the segment);
   then the utterance's formant-scale jitter.
3. `_control_tracks` (no randomness): voicing and aspiration amplitude tracks on a 1 ms grid,
   the formant/bandwidth knots of every phone, the frication/burst events, the nasal phones.
4. `_f0_contour`: declination, pitch accents, the final fall and a slow random drift.
5. `_glottal_pulses` (jitter, shimmer) and `_glottal_filter` (glottal low-pass, spectral tilt).
6. `_add_aspiration`: breathiness and h / stop aspiration noise mixed into the source.
7. `_tract_coefficients` (`_formant_cascade`, `_add_nasal_pair`) and `_vocal_tract`: the
   time-varying cascade per 5 ms block, then lip radiation.
8. `_noise_branch`: frication and bursts in parallel, relative to the voiced speech.
9. `_normalize`: peak normalisation to the speaker's loudness, the noise floor, float32.

* **Coarticulation**: formant and bandwidth tracks are piecewise-linear between the phones'
  target knots (consonants give loci, h and aspiration take their neighbours' formants), then
  smoothed over 15 ms; the vocal tract is updated every 5 ms block.
* **Source**: a glottal pulse train (pulses placed at sub-sample positions by integrating the f0
  contour) through a -12 dB/octave glottal low-pass (Klatt's RGP) and a speaker-dependent
  spectral-tilt pole; jitter (pulse-time perturbation) and shimmer (pulse-amplitude perturbation);
  breathiness = aspiration noise, gated by the glottal cycle, mixed into the voiced source.
  f0 contour: declination, a pitch accent on most words (first vowel), a phrase-final fall and
  a slow random drift.
* **Filter**: a time-varying cascade of formant resonators, each of unit gain at DC: F1-F3 follow
  the phone tracks, F4-F9 are fixed (scaled by the speaker) and stand in for the higher poles, so
  the spectrum above 4 kHz does not collapse; nasals add a pole-zero pair. The cascade is one
  direct-form filter per 5 ms block (`dsp.time_varying_filter`; runs of identical blocks are
  merged) whose initial state is rebuilt from the true input/output history, so switching
  coefficients is exactly the time-varying difference equation (no stale-state clicks). Lip
  radiation is a first difference. Frication and bursts are added in parallel (Butterworth
  band-passed noise, levels set relative to the utterance's voiced speech).
"""

import dataclasses
import functools
from typing import Sequence

import numpy as np
import scipy.signal

from pairalign_jax.data.synthetic.dsp import interp_nan
from pairalign_jax.data.synthetic.dsp import lfilter
from pairalign_jax.data.synthetic.dsp import poly_mul
from pairalign_jax.data.synthetic.dsp import resonator_poly
from pairalign_jax.data.synthetic.dsp import smooth
from pairalign_jax.data.synthetic.dsp import time_varying_filter
from pairalign_jax.data.synthetic.phones import B_CLOSURE
from pairalign_jax.data.synthetic.phones import F_HIGH
from pairalign_jax.data.synthetic.phones import NOISE_CLASSES
from pairalign_jax.data.synthetic.phones import PHONE_RATE_FACTOR
from pairalign_jax.data.synthetic.phones import PHONE_SPECS
from pairalign_jax.data.synthetic.phones import PHONES
from pairalign_jax.data.synthetic.phones import PhoneSpec
from pairalign_jax.data.synthetic.speakers import Speaker

TAIL_SECONDS = 0.1  # the sentence ends at least this long before the segment's end
_BLOCK_SECONDS = 0.005  # vocal-tract parameter update period
_NOISE_FLOOR_DB = -70.0  # padding / background noise, relative to the output peak
_ASPIRATION_GAIN = 0.008  # h / stop aspiration noise, relative to the voiced source RMS
_BREATH_GAIN = 0.02  # breathiness noise in voiced speech, relative to the source RMS
_MS = 1000  # control tracks (voicing, aspiration) have one value per 1 / _MS s


@functools.lru_cache(maxsize=512)
def _noise_filter(noise: str, scale: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
  """Butterworth band-pass (b, a) of a noise class for a formant scale (order <= 6: the
  transfer-function form is accurate here)."""
  low, high, order, _ = NOISE_CLASSES[noise]
  nyq = sample_rate / 2
  low = min(low * scale, 0.8 * nyq)
  high = min(high * scale, 0.97 * nyq)
  return scipy.signal.butter(order, [low, high], btype='bandpass', fs=sample_rate)


def _check_inputs(
  phones: Sequence[str], sample_rate: int, word_index: Sequence[int] | None
) -> tuple[list[str], list[PhoneSpec], np.ndarray]:
  """Validates `synthesize`'s arguments; returns (phones, their specs, word_index [P])."""
  phones = list(phones)
  unknown = [p for p in phones if p not in PHONE_SPECS]
  if unknown:
    raise ValueError(f'unknown phones {unknown}; the inventory is {PHONES}')
  specs = [PHONE_SPECS[p] for p in phones]
  if not any(s.kind in ('vowel', 'diphthong') for s in specs):
    raise ValueError(f'phones {phones} contain no vowel')
  if sample_rate < 8000:
    raise ValueError(f'sample_rate must be >= 8000, got {sample_rate}')
  word_index = np.zeros(len(phones), int) if word_index is None else np.asarray(word_index, int)
  if word_index.shape != (len(phones),):
    raise ValueError(f'word_index has shape {word_index.shape}, expected ({len(phones)},)')
  return phones, specs, word_index


def _layout(phones, word_index, speaker, rng, segment_seconds):
  """Phone start/end times [P, 2] (seconds): durations, pauses, leading silence."""
  specs = [PHONE_SPECS[p] for p in phones]
  base = np.array([s.duration for s in specs]) * PHONE_RATE_FACTOR
  jitter = np.exp(rng.normal(0.0, 0.15, len(phones)))
  jitter /= jitter.mean()
  dur = base * jitter * speaker.duration_scale
  # Phrase-final lengthening of the last syllable rhyme.
  last_vowel = max(i for i, s in enumerate(specs) if s.kind in ('vowel', 'diphthong'))
  dur[last_vowel:] *= 1.2
  boundary = np.flatnonzero(np.diff(word_index) != 0)  # pause after phone i (word end)
  pauses = np.zeros(len(phones))
  has_pause = rng.random(len(boundary)) < 0.25
  pauses[boundary[has_pause]] = rng.uniform(0.04, 0.12, int(has_pause.sum()))
  lead = rng.uniform(0.1, 0.3)
  total = float(dur.sum() + pauses.sum())
  room = segment_seconds - TAIL_SECONDS - lead
  if room <= 0.2:
    raise ValueError(f'segment_seconds={segment_seconds} is too short for a sentence')
  if total > room:  # compress so the whole sentence fits in the window
    dur *= room / total
    pauses *= room / total
  starts = lead + np.concatenate([[0.0], np.cumsum(dur + pauses)[:-1]])
  return np.stack([starts, starts + dur], axis=1)


@dataclasses.dataclass(frozen=True)
class _Controls:
  """What the phone layout alone fixes (no randomness): `_control_tracks`' output."""

  av: np.ndarray  # voicing amplitude on the 1 ms grid (smoothed)
  ah: np.ndarray  # aspiration amplitude (through the tract) on the 1 ms grid (smoothed)
  knot_t: list[float]  # formant knot times (s)
  knot_v: list[list[float]]  # at each knot: [F1..F9, B1..B9]
  noise_events: list[tuple[float, float, str, float, str]]  # (start s, end s, class, dB, kind)
  nasal: np.ndarray  # [P] bool: the phone is a nasal


def _control_tracks(specs, times, segment_seconds) -> _Controls:
  """Voicing AV and aspiration AH tracks (1 ms grid), formant knots, frication/burst events."""
  num_ms = int(np.ceil(segment_seconds * _MS)) + 1
  av = np.zeros(num_ms)
  ah = np.zeros(num_ms)
  knot_t, knot_v = [], []  # formant knots: time, [F1..F9, B1..B9]
  fric = []  # (start s, end s, noise class, gain dB, kind)
  nasal = np.zeros(len(specs), bool)

  def fill(track, t0, t1, value):
    track[int(round(t0 * _MS)) : int(round(t1 * _MS))] = value

  def knot(t, f, bws):
    knot_t.append(t)
    knot_v.append(list(f) + list(F_HIGH) + list(bws))

  for i, (spec, (t0, t1)) in enumerate(zip(specs, times)):
    d = t1 - t0
    prev = specs[i - 1].name if i else ''
    if spec.kind in ('vowel', 'diphthong', 'glide', 'nasal'):
      fill(av, t0, t1, spec.amplitude)
      if spec.kind == 'vowel':
        knot(t0 + 0.3 * d, spec.formants, spec.bandwidths)
        knot(t0 + 0.7 * d, spec.formants, spec.bandwidths)
      elif spec.kind == 'diphthong':
        knot(t0 + 0.2 * d, spec.formants, spec.bandwidths)
        knot(t0 + 0.85 * d, spec.formants_end, spec.bandwidths)
      elif spec.kind == 'glide':
        knot(t0 + 0.5 * d, spec.formants, spec.bandwidths)
      else:
        nasal[i] = True
        knot(t0 + 0.1 * d, spec.formants, spec.bandwidths)
        knot(t0 + 0.9 * d, spec.formants, spec.bandwidths)
    elif spec.kind == 'fricative':
      if spec.voiced:
        fill(av, t0, t1, spec.amplitude)
      knot(t0 + 0.3 * d, spec.formants, spec.bandwidths)
      knot(t0 + 0.7 * d, spec.formants, spec.bandwidths)
      gain = NOISE_CLASSES[spec.noise][3] - (6.0 if spec.voiced else 0.0)
      fric.append((t0, t1, spec.noise, gain, 'fricative'))
    elif spec.kind == 'aspirate':
      fill(ah, t0, t1, 0.5)
    else:  # stop: closure, burst, (aspiration | voicing)
      closure = t0 + (0.6 if spec.voiced else 0.55) * d
      knot(t0 + 0.2 * d, (200.0,) + spec.formants[1:], B_CLOSURE)
      knot(closure, spec.formants, spec.bandwidths)
      burst = min(0.012, 0.5 * (t1 - closure))
      fric.append((closure, closure + burst, spec.noise, NOISE_CLASSES[spec.noise][3], 'burst'))
      if spec.voiced:
        fill(av, t0, closure, 0.12)  # voice bar
        fill(av, closure + 0.3 * burst, t1, 1.0)
      elif prev != 's':
        fill(ah, closure + 0.5 * burst, t1, 1.2)  # aspiration
  av = smooth(av[:, None], 8)[:, 0]
  ah = smooth(ah[:, None], 8)[:, 0]
  return _Controls(av=av, ah=ah, knot_t=knot_t, knot_v=knot_v, noise_events=fric, nasal=nasal)


def _f0_contour(specs, times, word_index, speaker, rng, segment_seconds):
  """(grid, f0) on a 5 ms grid: declination, one accent per word, final fall, random drift."""
  grid = np.arange(0.0, segment_seconds + 0.005, 0.005)
  speech0, speech1 = float(times[0, 0]), float(times[-1, 1])
  rel = np.clip((grid - speech0) / max(speech1 - speech0, 1e-3), 0.0, 1.0)
  semitones = 1.5 - 3.0 * rel
  for w in np.unique(word_index):
    in_word = np.flatnonzero(word_index == w)
    vowels = [i for i in in_word if specs[i].kind in ('vowel', 'diphthong')]
    if not vowels or rng.random() < 0.3:
      continue
    centre = times[vowels[0]].mean()
    height = speaker.f0_range * rng.uniform(0.4, 1.0)
    semitones += height * np.exp(-0.5 * ((grid - centre) / 0.07) ** 2)
  semitones -= 3.0 * np.clip((grid - (speech1 - 0.25)) / 0.25, 0.0, 1.0) ** 2
  semitones += np.cumsum(rng.normal(0.0, 0.08, len(grid)))  # slow random drift
  return grid, speaker.f0_mean * 2.0 ** (semitones / 12.0)


def _glottal_pulses(grid, f0_grid, av, speaker, rng, n, sr):
  """(impulses [n], glottal phase [n]): integrate f0, jitter, shimmer, sub-sample placement."""
  t_samp = np.arange(n) / sr
  f0 = np.interp(t_samp, grid, f0_grid)
  phase = np.cumsum(f0) / sr
  crossing = np.flatnonzero(np.diff(np.floor(phase)) > 0)  # phase passes an integer
  frac = (np.ceil(phase[crossing]) - phase[crossing]) / (phase[crossing + 1] - phase[crossing])
  pulse_t = (crossing + frac) / sr
  pulse_t += rng.normal(0.0, speaker.jitter, len(pulse_t)) / f0[crossing]
  pulse_amp = np.interp(pulse_t, np.arange(len(av)) / _MS, av)
  pulse_amp *= np.exp(rng.normal(0.0, speaker.shimmer, len(pulse_t)))
  keep = (pulse_amp > 1e-3) & (pulse_t >= 0) & (pulse_t < (n - 2) / sr)
  pulse_t, pulse_amp = pulse_t[keep], pulse_amp[keep]
  pos = pulse_t * sr
  i0 = np.floor(pos).astype(int)
  w1 = pos - i0
  impulses = (
    np.bincount(i0, pulse_amp * (1 - w1), minlength=n)
    + np.bincount(i0 + 1, pulse_amp * w1, minlength=n)
  )[:n]
  return impulses, phase


def _glottal_filter(impulses, speaker, sr):
  """Glottal low-pass (two real poles, Klatt's RGP, 100 Hz bandwidth) and spectral tilt pole."""
  rg = np.exp(-np.pi * 100.0 / sr)
  tilt = speaker.tilt
  den = np.convolve([1.0, -2 * rg, rg * rg], [1.0, -tilt])
  return lfilter(np.array([(1 - rg) ** 2 * (1 - tilt)]), den, impulses)


def _add_aspiration(glottal, phase, controls, speaker, rng, sr):
  """(source [n], voiced [n] bool): breathiness (gated by the glottal cycle) + h / stop
  aspiration, added to the glottal source."""
  n = len(glottal)
  t_samp = np.arange(n) / sr
  ms_times = np.arange(len(controls.av)) / _MS
  av_samp = np.interp(t_samp, ms_times, controls.av)
  ah_samp = np.interp(t_samp, ms_times, controls.ah)
  voiced = av_samp > 0.5
  src_rms = np.sqrt(np.mean(glottal[voiced] ** 2)) if voiced.any() else 1e-3
  open_phase = (phase - np.floor(phase)) < 0.5
  asp_level = _ASPIRATION_GAIN * ah_samp + _BREATH_GAIN * speaker.breathiness * av_samp * (
    0.4 + 1.2 * open_phase
  )
  source = glottal + src_rms * asp_level * rng.standard_normal(n, dtype=np.float32)
  return source, voiced


def _formant_cascade(tracks, scale, sr):
  """(b [nb, 3], a [nb, 2 num_f + 1], gain [nb]): the cascade of formant resonators per block,
  unit DC gain. Formants that this speaker's scale puts near or above Nyquist are left out."""
  num_f = 3 + sum(f * scale < 0.47 * sr for f in F_HIGH)
  freqs = tracks[:, :num_f] * scale  # [nb, num_f]
  for k in range(1, num_f):  # keep formants ordered and apart
    freqs[:, k] = np.maximum(freqs[:, k], freqs[:, k - 1] + 200.0)
  freqs = np.minimum(freqs, 0.47 * sr - (num_f - 1 - np.arange(num_f)) * 150.0)
  bws = tracks[:, 9 : 9 + num_f]
  polys = resonator_poly(freqs, bws, sr)  # [nb, num_f, 3]
  a = np.ones((len(tracks), 1))
  for k in range(num_f):
    a = poly_mul(a, polys[:, k])
  gain = np.prod(polys.sum(axis=-1), axis=-1)  # unit DC gain
  b = np.zeros((len(tracks), 3))
  b[:, 0] = gain
  return b, a, gain


def _add_nasal_pair(b, a, gain, nasal, specs, times, centres, scale, sr):
  """(b, a [nb, order + 3]): a nasal pole-zero pair on the blocks inside nasals (a gets two more
  coefficients on every block)."""
  num_blocks = len(centres)
  nasal_pole = np.zeros(num_blocks)
  nasal_zero = np.zeros(num_blocks)
  for i in np.flatnonzero(nasal):
    in_phone = (centres >= times[i, 0]) & (centres < times[i, 1])
    nasal_pole[in_phone] = min(specs[i].nasal_pole * scale, 0.45 * sr)
    nasal_zero[in_phone] = min(specs[i].nasal_zero * scale, 0.43 * sr)
  a = np.concatenate([a, np.zeros((num_blocks, 2))], axis=1)
  nb_idx = np.flatnonzero(nasal_pole > 0)
  if len(nb_idx):
    pole = resonator_poly(nasal_pole[nb_idx], np.full(len(nb_idx), 200.0), sr)
    zero = resonator_poly(nasal_zero[nb_idx], np.full(len(nb_idx), 120.0), sr)
    a[nb_idx] = poly_mul(a[nb_idx, :-2], pole)
    b[nb_idx] = (gain[nb_idx] * pole.sum(-1) / zero.sum(-1))[:, None] * zero
  return b, a


def _tract_coefficients(controls, specs, times, scale, n, sr):
  """(b, a, block): the vocal tract's filter coefficients per 5 ms block of `block` samples."""
  block = int(round(_BLOCK_SECONDS * sr))
  num_blocks = -(-n // block)
  centres = (np.arange(num_blocks) + 0.5) * block / sr
  knot_v = np.array(controls.knot_v, float)
  tracks = interp_nan(np.array(controls.knot_t), knot_v, centres)  # [nb, 18]
  tracks = smooth(tracks, 3)
  b, a, gain = _formant_cascade(tracks, scale, sr)
  b, a = _add_nasal_pair(b, a, gain, controls.nasal, specs, times, centres, scale, sr)
  return b, a, block


def _vocal_tract(b, a, source, block, sr):
  """Speech [n]: `source` through the time-varying cascade (from its first non-zero sample to
  50 ms after its last), then lip radiation (a first difference)."""
  num_blocks = len(b)
  active = np.flatnonzero(source)
  first = int(active[0] // block) if len(active) else 0
  last = (
    min(num_blocks, int(active[-1] // block) + 1 + int(0.05 * sr) // block) if len(active) else 0
  )
  tract = time_varying_filter(b, a, source, block, first, last)
  return np.diff(tract, prepend=0.0)  # lip radiation


def _noise_branch(noise_events, speech, voiced, speaker, rng, sr):
  """Frication and bursts [n] (parallel branch), levels relative to the voiced speech."""
  speech_rms = np.sqrt(np.mean(speech[voiced] ** 2)) if voiced.any() else np.std(speech) + 1e-6
  noise_out = np.zeros(len(speech))
  for t0, t1, cls, gain_db, kind in noise_events:
    s0, s1 = int(t0 * sr), int(np.ceil(t1 * sr))
    length = s1 - s0
    if length < 4:
      continue
    nb_, na_ = _noise_filter(cls, round(speaker.formant_scale * 20) / 20, sr)
    x = lfilter(nb_, na_, rng.standard_normal(length + 256))[256:]
    x /= np.sqrt(np.mean(x**2)) + 1e-12
    tt = np.arange(length) / sr
    if kind == 'burst':
      env = np.exp(-tt / 0.004)
    else:
      ramp = min(0.02, (t1 - t0) / 3)
      env = np.minimum(1.0, np.minimum(tt, tt[-1] - tt) / ramp + 0.05)
      env *= 1.0 + 0.2 * np.sin(np.pi * tt / tt[-1])
    noise_out[s0:s1] += x * env * speech_rms * 10 ** ((gain_db + rng.normal(0, 1.0)) / 20)
  return noise_out


def _normalize(audio, speaker, rng, phones):
  """float32 audio with peak `speaker.loudness`, plus the noise floor, clipped to [-1, 1]."""
  peak = np.max(np.abs(audio))
  if not np.isfinite(peak) or peak == 0:
    raise FloatingPointError(f'synthesis produced peak {peak} for phones {phones}')
  audio *= speaker.loudness / peak
  noise = rng.standard_normal(len(audio), np.float32)
  audio += speaker.loudness * 10 ** (_NOISE_FLOOR_DB / 20) * noise
  return np.clip(audio, -1.0, 1.0).astype(np.float32)


def synthesize(
  phones: Sequence[str],
  speaker: Speaker,
  rng: np.random.Generator,
  sample_rate: int = 16_000,
  *,
  segment_seconds: float = 3.0,
  word_index: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Synthesizes one utterance of `phones` by `speaker` into a fixed-length segment.

  Args:
    phones: phone names from `PHONES` (at least one vowel).
    speaker: `Speaker` parameters.
    rng: all per-utterance variation (durations, pauses, leading silence, pitch accents, jitter,
      noise) is drawn from it, so the same generator state gives bit-identical audio.
    sample_rate: output rate in Hz (>= 8000).
    segment_seconds: output length.
    word_index: `[P]` word number of each phone (pauses and pitch accents go by word); default:
      one word.

  Returns:
    `(audio, phone_times)`: audio float32[round(segment_seconds * sample_rate)] with peak
    `speaker.loudness`; phone_times float32[P, 2], start and end of every phone in seconds from
    the segment start (ordered, non-overlapping, pauses between words are gaps).
  """
  phones, specs, word_index = _check_inputs(phones, sample_rate, word_index)
  sr = int(sample_rate)
  n = int(round(segment_seconds * sr))
  times = _layout(phones, word_index, speaker, rng, segment_seconds)
  scale = speaker.formant_scale * rng.uniform(0.98, 1.02)
  controls = _control_tracks(specs, times, segment_seconds)
  grid, f0_grid = _f0_contour(specs, times, word_index, speaker, rng, segment_seconds)
  impulses, phase = _glottal_pulses(grid, f0_grid, controls.av, speaker, rng, n, sr)
  glottal = _glottal_filter(impulses, speaker, sr)
  source, voiced = _add_aspiration(glottal, phase, controls, speaker, rng, sr)
  b, a, block = _tract_coefficients(controls, specs, times, scale, n, sr)
  speech = _vocal_tract(b, a, source, block, sr)
  audio = speech + _noise_branch(controls.noise_events, speech, voiced, speaker, rng, sr)
  return _normalize(audio, speaker, rng, phones), times.astype(np.float32)
