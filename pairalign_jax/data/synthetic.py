"""The built-in synthetic speech corpus: a source-filter (Klatt-style) synthesizer in numpy.

Described in docs/synthetic_corpus.md. No download, no model code: numpy and scipy.signal only.
The corpus is fully determined by `cfg.seed`; the same seed gives bit-identical audio.

Synthesizer (`synthesize`):

* **Phones** (`PHONES`, 35, ARPAbet names; `y` is the palatal glide /j/): 10 monophthongs and 4
  diphthongs as F1-F3 formant targets (diphthongs move between two targets), nasals m n ng (low
  murmur F1, weak higher formants, a nasal pole-zero pair: antiformant near 0.9 / 1.7 / 2.8 kHz,
  reduced amplitude), fricatives (f v th dh s z sh: band-shaped noise, voiced ones also voiced;
  h: aspiration noise through the vocal tract), stops p b t d k g (closure: silence or a voice
  bar; burst: a short noise transient shaped by the place of articulation; aspiration for p t k,
  not after s), glides/liquids w y r l (brief formant targets, so their formants move).
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
  direct-form filter per 5 ms block (`lfilter`; runs of identical blocks are merged) whose
  initial state is rebuilt from the true input/output history, so switching coefficients is
  exactly the time-varying difference equation (no stale-state clicks). Lip radiation is a first
  difference. Frication and bursts are added in parallel (Butterworth band-passed noise, levels
  set relative to the utterance's voiced speech). scipy's lfilter core is called directly when
  an import-time self-check confirms it matches `scipy.signal.lfilter` (the public wrapper's
  validation costs more than filtering a 5 ms block); otherwise the public function is used.
* **Speakers** (`make_speaker`): f0 mean 85-145 Hz (male-like) or 160-250 Hz (female-like), accent
  range, vocal-tract-length formant scale 0.85-1.02 / 1.06-1.2, duration scale 0.9-1.12 (the
  corpus averages 12 phones/s, 5-95 % of utterances 10.6-13.6), jitter, shimmer, tilt,
  breathiness, loudness (output peak 0.35-0.85).

Corpus (`SyntheticSpeechSource`):

* Lexicon (`make_lexicon`): `NUM_TRAIN_WORDS` + `NUM_HELDOUT_WORDS` + `NUM_VALIDATION_WORDS`
  distinct words of 1-3 syllables (V/CV/CVC/CCVC), drawn from `seed`, in three disjoint lists:
  train, test ("held-out") and validation words. Neither evaluation list is used in training.
* Sentences: several words whose nominal duration is 1.6-2.25 s at the neutral rate; each
  split's sentences use only its own words.
* Speakers: `num_train_speakers`, `num_heldout_speakers` (test) and `num_validation_speakers`
  independent parameter draws.
* Utterance layout: a leading silence of 0.1-0.3 s, optional 40-120 ms pauses between words, and
  the whole sentence always ends at least `_TAIL_SECONDS` before the end of the segment (slow
  speakers are compressed if needed), so every content item lies inside the window for every
  speaker. The rest is padded with a very low noise floor (-70 dB re. peak).
* 'train' split: `cfg.train_size` virtual examples; example `i` draws its (train speaker, train
  sentence) pair and all its variation from `np.random.default_rng([seed, 5, i])`. With
  `cfg.train_grid` the split is instead the fixed grid of `num_train_speakers x
  num_train_sentences` recordings (index `= speaker * num_train_sentences + sentence`, variation
  from the same generator): a small corpus of fixed recordings, as a user's own would be.
* 'test' split (also called 'heldout', its name in configs): the grid of `num_heldout_speakers x
  num_heldout_sentences`, index `= speaker * num_heldout_sentences + sentence` (`heldout_index`),
  so the same sentence (`content_id`, `text`) is available from every test speaker; the variation
  of item `i` comes from `np.random.default_rng([seed, 6, i])`. Claims are reported here only.
* 'validation' split: the same kind of grid with its own speakers, words and sentences
  (`num_validation_speakers x num_validation_sentences`, generators `[seed, 7, i]` for speakers,
  `[seed, 8]` for sentences, `[seed, 9, i]` for item variation). Every setting is chosen here.
  Adding it left the train and test splits bit-identical to the corpus without it.
"""

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.signal

from pairalign_jax.data.splits import canonical_split
from pairalign_jax.data.splits import SPLITS  # noqa: F401  (re-exported)

# scipy's lfilter core without the per-call input validation (~10 us of a ~12 us call); used only
# if `_check_fast_filter` confirms it matches `scipy.signal.lfilter`.
try:
  from scipy.signal import _sigtools

  _LINEAR_FILTER = getattr(_sigtools, '_linear_filter', None)
except ImportError:  # pragma: no cover
  _LINEAR_FILTER = None

# ------------------------------------------------------------------------------ phone inventory

# kind: 'vowel' | 'diphthong' | 'nasal' | 'fricative' | 'aspirate' | 'stop' | 'glide'
# Fixed higher formants F4-F9 (neutral tract). Those that the speaker's scale puts above 0.47 of the
# sample rate are left out; the rest stand in for the higher poles a 5-formant cascade lacks.
_F_HIGH = (3300.0, 3750.0, 4900.0, 5900.0, 6900.0, 7900.0)
_B_HIGH = (400.0, 500.0, 600.0, 700.0)  # B6-B9
_B_VOWEL = (70.0, 100.0, 140.0, 250.0, 300.0) + _B_HIGH
_B_NASAL = (90.0, 250.0, 300.0, 350.0, 400.0) + _B_HIGH
_B_GLIDE = (80.0, 110.0, 160.0, 250.0, 300.0) + _B_HIGH
_B_CONS = (90.0, 140.0, 200.0, 300.0, 350.0) + _B_HIGH
# Stop closures: wide upper bandwidths, so a voice bar keeps only its low-frequency energy.
_B_CLOSURE = (120.0, 900.0, 1200.0, 1500.0, 1500.0, 2000.0, 2000.0, 2000.0, 2000.0)


@dataclasses.dataclass(frozen=True)
class PhoneSpec:
  """One phone of the inventory (formants in Hz for a neutral vocal tract, durations in s)."""

  name: str
  kind: str
  voiced: bool
  formants: tuple[float, float, float]  # F1-F3 target (locus for consonants)
  duration: float  # base duration at the neutral speaking rate
  formants_end: tuple[float, float, float] | None = None  # diphthongs: second target
  bandwidths: tuple[float, ...] = _B_VOWEL  # B1-B9
  noise: str = ''  # frication / burst noise class ('' = none)
  nasal_zero: float = 0.0  # nasals: antiformant frequency
  nasal_pole: float = 0.0  # nasals: the extra nasal resonance
  amplitude: float = 1.0  # voicing amplitude


def _vowel(name, f, d, f_end=None):
  kind = 'vowel' if f_end is None else 'diphthong'
  return PhoneSpec(name, kind, True, f, d, formants_end=f_end)


# Monophthong targets: Peterson & Barney / Hillenbrand adult-male averages.
_SPECS = (
  _vowel('iy', (270.0, 2290.0, 3010.0), 0.090),
  _vowel('ih', (390.0, 1990.0, 2550.0), 0.070),
  _vowel('eh', (530.0, 1840.0, 2480.0), 0.080),
  _vowel('ae', (660.0, 1720.0, 2410.0), 0.100),
  _vowel('aa', (730.0, 1090.0, 2440.0), 0.100),
  _vowel('ao', (570.0, 840.0, 2410.0), 0.100),
  _vowel('uh', (440.0, 1020.0, 2240.0), 0.070),
  _vowel('uw', (300.0, 870.0, 2240.0), 0.090),
  _vowel('ah', (640.0, 1190.0, 2390.0), 0.065),
  _vowel('er', (490.0, 1350.0, 1690.0), 0.090),
  _vowel('ey', (480.0, 1950.0, 2550.0), 0.120, (330.0, 2250.0, 2900.0)),
  _vowel('ay', (710.0, 1150.0, 2450.0), 0.130, (360.0, 2150.0, 2800.0)),
  _vowel('aw', (710.0, 1150.0, 2450.0), 0.130, (420.0, 900.0, 2300.0)),
  _vowel('ow', (550.0, 950.0, 2400.0), 0.120, (400.0, 800.0, 2300.0)),
  PhoneSpec(
    'm',
    'nasal',
    True,
    (280.0, 1100.0, 2200.0),
    0.065,
    bandwidths=_B_NASAL,
    nasal_zero=900.0,
    nasal_pole=1200.0,
    amplitude=0.6,
  ),
  PhoneSpec(
    'n',
    'nasal',
    True,
    (280.0, 1600.0, 2600.0),
    0.060,
    bandwidths=_B_NASAL,
    nasal_zero=1700.0,
    nasal_pole=2100.0,
    amplitude=0.6,
  ),
  PhoneSpec(
    'ng',
    'nasal',
    True,
    (280.0, 2000.0, 2500.0),
    0.070,
    bandwidths=_B_NASAL,
    nasal_zero=2800.0,
    nasal_pole=3300.0,
    amplitude=0.55,
  ),
  PhoneSpec('f', 'fricative', False, (300.0, 900.0, 2200.0), 0.090, bandwidths=_B_CONS, noise='f'),
  PhoneSpec(
    'v',
    'fricative',
    True,
    (300.0, 900.0, 2200.0),
    0.065,
    bandwidths=_B_CONS,
    noise='f',
    amplitude=0.45,
  ),
  PhoneSpec(
    'th', 'fricative', False, (300.0, 1400.0, 2700.0), 0.085, bandwidths=_B_CONS, noise='th'
  ),
  PhoneSpec(
    'dh',
    'fricative',
    True,
    (300.0, 1400.0, 2700.0),
    0.050,
    bandwidths=_B_CONS,
    noise='th',
    amplitude=0.5,
  ),
  PhoneSpec('s', 'fricative', False, (300.0, 1700.0, 2600.0), 0.100, bandwidths=_B_CONS, noise='s'),
  PhoneSpec(
    'z',
    'fricative',
    True,
    (300.0, 1700.0, 2600.0),
    0.085,
    bandwidths=_B_CONS,
    noise='s',
    amplitude=0.45,
  ),
  PhoneSpec(
    'sh', 'fricative', False, (300.0, 1900.0, 2500.0), 0.105, bandwidths=_B_CONS, noise='sh'
  ),
  PhoneSpec('h', 'aspirate', False, (float('nan'),) * 3, 0.065, bandwidths=_B_VOWEL),
  PhoneSpec('p', 'stop', False, (250.0, 900.0, 2200.0), 0.085, bandwidths=_B_CONS, noise='p'),
  PhoneSpec('b', 'stop', True, (250.0, 900.0, 2200.0), 0.070, bandwidths=_B_CONS, noise='p'),
  PhoneSpec('t', 'stop', False, (250.0, 1750.0, 2600.0), 0.080, bandwidths=_B_CONS, noise='t'),
  PhoneSpec('d', 'stop', True, (250.0, 1750.0, 2600.0), 0.065, bandwidths=_B_CONS, noise='t'),
  PhoneSpec('k', 'stop', False, (250.0, 2000.0, 2400.0), 0.085, bandwidths=_B_CONS, noise='k'),
  PhoneSpec('g', 'stop', True, (250.0, 2000.0, 2400.0), 0.070, bandwidths=_B_CONS, noise='k'),
  PhoneSpec('w', 'glide', True, (300.0, 700.0, 2200.0), 0.060, bandwidths=_B_GLIDE, amplitude=0.85),
  PhoneSpec(
    'y', 'glide', True, (280.0, 2200.0, 3000.0), 0.060, bandwidths=_B_GLIDE, amplitude=0.85
  ),
  PhoneSpec('r', 'glide', True, (350.0, 1100.0, 1600.0), 0.065, bandwidths=_B_GLIDE, amplitude=0.9),
  PhoneSpec('l', 'glide', True, (360.0, 1200.0, 2700.0), 0.065, bandwidths=_B_GLIDE, amplitude=0.9),
)
PHONE_SPECS: Mapping[str, PhoneSpec] = {p.name: p for p in _SPECS}
PHONES: tuple[str, ...] = tuple(p.name for p in _SPECS)
VOWELS = tuple(p.name for p in _SPECS if p.kind in ('vowel', 'diphthong'))
CONSONANTS = tuple(p.name for p in _SPECS if p.kind not in ('vowel', 'diphthong'))

# Noise classes: (low, high) band edges in Hz for a neutral vocal tract, filter order, level in dB
# relative to the RMS of the utterance's voiced speech.
_NOISE_CLASSES = {
  's': (3800.0, 7600.0, 3, -8.0),
  'sh': (2000.0, 5200.0, 3, -6.0),
  'f': (1200.0, 7800.0, 1, -21.0),
  'th': (1600.0, 7800.0, 1, -22.0),
  'p': (300.0, 3500.0, 1, -8.0),  # labial burst: diffuse, low
  't': (3000.0, 7600.0, 2, -2.0),  # alveolar burst: high
  'k': (1400.0, 3400.0, 2, -2.0),  # velar burst: compact, mid
}
_PHONE_RATE_FACTOR = 0.93  # global duration calibration: about 12 phones/s at duration_scale 1
_TAIL_SECONDS = 0.1  # the sentence ends at least this long before the segment's end
_BLOCK_SECONDS = 0.005  # vocal-tract parameter update period
_NOISE_FLOOR_DB = -70.0  # padding / background noise, relative to the output peak
_ASPIRATION_GAIN = 0.008  # h / stop aspiration noise, relative to the voiced source RMS
_BREATH_GAIN = 0.02  # breathiness noise in voiced speech, relative to the source RMS

_ORTHOGRAPHY = {
  'iy': 'ee',
  'ih': 'i',
  'eh': 'e',
  'ae': 'a',
  'aa': 'ah',
  'ao': 'au',
  'uh': 'u',
  'uw': 'oo',
  'ah': 'uh',
  'er': 'er',
  'ey': 'ai',
  'ay': 'ie',
  'aw': 'ow',
  'ow': 'oa',
  'ng': 'ng',
  'th': 'th',
  'dh': 'dh',
  'sh': 'sh',
  'y': 'y',
}

# --------------------------------------------------------------------------------- speakers


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


# ---------------------------------------------------------------------------------- lexicon

NUM_TRAIN_WORDS = 300
NUM_HELDOUT_WORDS = 100
NUM_VALIDATION_WORDS = 100
_ONSETS = tuple(c for c in CONSONANTS if c != 'ng')
_CLUSTERS = (
  ('s', 'p'),
  ('s', 't'),
  ('s', 'k'),
  ('s', 'm'),
  ('s', 'n'),
  ('s', 'l'),
  ('s', 'w'),
  ('p', 'r'),
  ('p', 'l'),
  ('b', 'r'),
  ('b', 'l'),
  ('k', 'r'),
  ('k', 'l'),
  ('g', 'r'),
  ('g', 'l'),
  ('f', 'r'),
  ('f', 'l'),
  ('t', 'r'),
  ('d', 'r'),
  ('th', 'r'),
  ('sh', 'r'),
  ('k', 'w'),
  ('t', 'w'),
)
_CODAS = ('p', 'b', 't', 'd', 'k', 'g', 'm', 'n', 'ng', 'f', 'v', 'th', 's', 'z', 'sh', 'l', 'r')


@dataclasses.dataclass(frozen=True)
class Word:
  text: str
  phones: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Lexicon:
  """Disjoint word lists (by phones and by spelling): `train`, `heldout` (test) and `validation`."""

  train: tuple[Word, ...]
  heldout: tuple[Word, ...]
  validation: tuple[Word, ...] = ()

  def words(self, split: str) -> tuple[Word, ...]:
    split = canonical_split(split)
    return {'train': self.train, 'test': self.heldout, 'validation': self.validation}[split]


def _syllable(rng: np.random.Generator, first: bool) -> list[str]:
  r = rng.random()
  if first and r < 0.08:
    onset = []  # V(C)
  elif r < 0.22:
    onset = list(_CLUSTERS[rng.integers(len(_CLUSTERS))])  # CCV(C)
  else:
    onset = [_ONSETS[rng.integers(len(_ONSETS))]]  # CV(C)
  vowel = [VOWELS[rng.integers(len(VOWELS))]]
  coda = [_CODAS[rng.integers(len(_CODAS))]] if rng.random() < 0.45 else []
  return onset + vowel + coda


def _spell(phones: Sequence[str]) -> str:
  return ''.join(_ORTHOGRAPHY.get(p, p) for p in phones)


def _make_word(rng: np.random.Generator) -> tuple[str, ...]:
  num_syllables = 1 + int(rng.choice(3, p=(0.35, 0.45, 0.2)))
  while True:
    phones = []
    for s in range(num_syllables):
      phones += _syllable(rng, s == 0)
    if all(a != b for a, b in zip(phones[:-1], phones[1:])):
      return tuple(phones)


@functools.lru_cache(maxsize=8)
def make_lexicon(
  seed: int,
  num_train_words: int = NUM_TRAIN_WORDS,
  num_heldout_words: int = NUM_HELDOUT_WORDS,
  num_validation_words: int = NUM_VALIDATION_WORDS,
) -> Lexicon:
  """The corpus lexicon for `seed`: distinct words split into train, test and validation parts.

  The validation words are drawn after the train and test words are fixed (same generator, so
  the first two lists do not depend on `num_validation_words`)."""
  rng = np.random.default_rng([seed, 4])
  by_phones, texts = {}, set()

  def draw(total):
    while len(by_phones) < total:
      phones = _make_word(rng)
      text = _spell(phones)
      if phones in by_phones or text in texts:
        continue
      by_phones[phones] = text
      texts.add(text)

  draw(num_train_words + num_heldout_words)
  words = [Word(text, phones) for phones, text in by_phones.items()]
  order = rng.permutation(len(words))
  words = [words[i] for i in order]
  draw(len(words) + num_validation_words)
  validation = [Word(text, phones) for phones, text in list(by_phones.items())[len(words) :]]
  return Lexicon(
    train=tuple(words[:num_train_words]),
    heldout=tuple(words[num_train_words:]),
    validation=tuple(validation),
  )


# -------------------------------------------------------------------------------- sentences

_MIN_NOMINAL, _MAX_NOMINAL = 1.6, 2.25  # seconds of speech at the neutral rate


@dataclasses.dataclass(frozen=True)
class Sentence:
  content_id: str
  words: tuple[Word, ...]

  @property
  def text(self) -> str:
    return ' '.join(w.text for w in self.words)

  @property
  def phones(self) -> list[str]:
    return [p for w in self.words for p in w.phones]

  @property
  def word_index(self) -> np.ndarray:
    return np.concatenate([np.full(len(w.phones), i) for i, w in enumerate(self.words)])


def nominal_seconds(words: Sequence[Word]) -> float:
  """Speech duration of `words` at the neutral rate, without pauses or jitter."""
  return _PHONE_RATE_FACTOR * sum(PHONE_SPECS[p].duration for w in words for p in w.phones)


def make_sentences(
  rng: np.random.Generator, words: Sequence[Word], num: int, prefix: str
) -> tuple[Sentence, ...]:
  """`num` distinct sentences of words from `words`, each 1.6-2.25 s at the neutral rate."""
  sentences, seen = [], set()
  attempts = 0
  while len(sentences) < num:
    attempts += 1
    if attempts > 100 * num + 1000:
      raise ValueError(f'could not draw {num} distinct sentences from {len(words)} words')
    target = rng.uniform(_MIN_NOMINAL, _MAX_NOMINAL - 0.1)
    chosen: list[Word] = []
    while nominal_seconds(chosen) < target:
      for _ in range(20):
        w = words[rng.integers(len(words))]
        if (not chosen or w != chosen[-1]) and nominal_seconds(chosen + [w]) <= _MAX_NOMINAL:
          chosen.append(w)
          break
      else:
        break
    if nominal_seconds(chosen) < _MIN_NOMINAL:
      continue
    key = tuple(w.text for w in chosen)
    if key in seen:
      continue
    seen.add(key)
    sentences.append(Sentence(f'{prefix}-s{len(sentences):04d}', tuple(chosen)))
  return tuple(sentences)


# ------------------------------------------------------------------------------ synthesizer


@functools.lru_cache(maxsize=512)
def _noise_filter(noise: str, scale: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
  """Butterworth band-pass (b, a) of a noise class for a formant scale (order <= 6: the
  transfer-function form is accurate here)."""
  low, high, order, _ = _NOISE_CLASSES[noise]
  nyq = sample_rate / 2
  low = min(low * scale, 0.8 * nyq)
  high = min(high * scale, 0.97 * nyq)
  return scipy.signal.butter(order, [low, high], btype='bandpass', fs=sample_rate)


def _layout(phones, word_index, speaker, rng, segment_seconds):
  """Phone start/end times [P, 2] (seconds): durations, pauses, leading silence."""
  specs = [PHONE_SPECS[p] for p in phones]
  base = np.array([s.duration for s in specs]) * _PHONE_RATE_FACTOR
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
  room = segment_seconds - _TAIL_SECONDS - lead
  if room <= 0.2:
    raise ValueError(f'segment_seconds={segment_seconds} is too short for a sentence')
  if total > room:  # compress so the whole sentence fits in the window
    dur *= room / total
    pauses *= room / total
  starts = lead + np.concatenate([[0.0], np.cumsum(dur + pauses)[:-1]])
  return np.stack([starts, starts + dur], axis=1)


def _interp_nan(x_knots, y_knots, x):
  """Piecewise-linear interpolation of each column of y_knots [K, C], ignoring NaN knots."""
  out = np.empty((len(x), y_knots.shape[1]))
  for c in range(y_knots.shape[1]):
    ok = np.isfinite(y_knots[:, c])
    out[:, c] = np.interp(x, x_knots[ok], y_knots[ok, c])
  return out


def _smooth(x, width):
  """Moving average along axis 0 with edge padding (x: [T, C])."""
  if width <= 1:
    return x
  pad = width // 2
  xp = np.pad(x, ((pad, width - 1 - pad), (0, 0)), mode='edge')
  c = np.cumsum(np.concatenate([np.zeros((1, x.shape[1])), xp]), axis=0)
  return (c[width:] - c[:-width]) / width


def _poly_mul(a, s):
  """Batched polynomial product: a [B, n] x second-order s [B, 3] -> [B, n + 2]."""
  out = np.zeros((a.shape[0], a.shape[1] + 2))
  out[:, :-2] += a * s[:, :1]
  out[:, 1:-1] += a * s[:, 1:2]
  out[:, 2:] += a * s[:, 2:]
  return out


def _resonator_poly(freq, bw, sample_rate):
  """[..., 3] denominators 1 - 2 r cos(theta) z^-1 + r^2 z^-2."""
  r = np.exp(-np.pi * bw / sample_rate)
  theta = 2 * np.pi * freq / sample_rate
  return np.stack([np.ones_like(r), -2 * r * np.cos(theta), r * r], axis=-1)


def _time_varying_filter(b, a, x, block, first, last):
  """y[n] = sum_j b_j(n) x[n-j] - sum_{j>=1} a_j(n) y[n-j], coefficients constant per block.

  b: [nb, 3], a: [nb, M + 1] (a[:, 0] == 1), x: [N]; blocks `first .. last-1` are filtered, the
  output elsewhere is zero. Each run of blocks with identical coefficients is one `lfilter` call
  whose initial state is computed from the true past inputs and outputs, so changing
  coefficients never leaves a stale filter state (this is the exact time-varying recursion).
  """
  order = a.shape[1] - 1
  n = len(x)
  bp = np.zeros((b.shape[0], order + 2))
  bp[:, : b.shape[1]] = b
  ap = np.zeros((a.shape[0], order + 2))
  ap[:, : order + 1] = a
  # Runs of identical coefficients between `first` and `last`.
  coef = np.concatenate([b[first:last], a[first:last]], axis=1)
  changes = np.flatnonzero(np.any(coef[1:] != coef[:-1], axis=1)) + 1
  run_blocks = first + np.concatenate([[0], changes])  # first block of each run
  starts = run_blocks * block
  stops = np.minimum(np.append(run_blocks[1:], last) * block, n)
  # DF2T state before sample n0: z_k = sum_m (b[k+1+m] x[n0-1-m] - a[k+1+m] y[n0-1-m]).
  kk, mm = np.meshgrid(np.arange(order), np.arange(order), indexing='ij')
  idx = np.where(kk + 1 + mm <= order, kk + 1 + mm, order + 1)  # Hankel gather
  ha = ap[run_blocks][:, idx]  # [runs, order, order]
  x1 = np.where(starts >= 1, x[np.maximum(starts - 1, 0)], 0.0)  # x[n0 - 1]
  x2 = np.where(starts >= 2, x[np.maximum(starts - 2, 0)], 0.0)  # x[n0 - 2]
  zx = np.zeros((len(run_blocks), order))  # input part (b has 3 taps)
  zx[:, 0] = bp[run_blocks, 1] * x1 + bp[run_blocks, 2] * x2
  zx[:, 1] = bp[run_blocks, 2] * x1
  ypad = np.zeros(n + order)  # ypad[k + order] = y[k]
  for j, i in enumerate(run_blocks):
    n0, n1 = starts[j], stops[j]
    zi = zx[j] - ha[j] @ ypad[n0 : n0 + order][::-1]
    ypad[n0 + order : n1 + order] = _lfilter(bp[i, :3], a[i], x[n0:n1], zi)
  return ypad[order:]


def _lfilter(b, a, x, zi=None):
  """`scipy.signal.lfilter(b, a, x, zi=zi)[0]` (or without zi) for float64 1-D inputs."""
  if _FAST_FILTER_OK:
    return _LINEAR_FILTER(b, a, x, -1) if zi is None else _LINEAR_FILTER(b, a, x, -1, zi)[0]
  return scipy.signal.lfilter(b, a, x) if zi is None else scipy.signal.lfilter(b, a, x, zi=zi)[0]


def _check_fast_filter() -> bool:
  """True if scipy's private lfilter core behaves like `scipy.signal.lfilter` here."""
  if _LINEAR_FILTER is None:
    return False
  try:
    b, a = np.array([0.5, 0.2, 0.1]), np.array([1.0, -0.9, 0.2, 0.05])
    x, zi = np.linspace(-1.0, 1.0, 7), np.array([0.3, -0.1, 0.2])
    with_state = _LINEAR_FILTER(b, a, x, -1, zi)[0]
    without = _LINEAR_FILTER(b, a, x, -1)
    return bool(
      np.allclose(with_state, scipy.signal.lfilter(b, a, x, zi=zi)[0], rtol=1e-12)
      and np.allclose(without, scipy.signal.lfilter(b, a, x), rtol=1e-12)
    )
  except Exception:  # noqa: BLE001
    return False


_FAST_FILTER_OK = _check_fast_filter()


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
  sr = int(sample_rate)
  n = int(round(segment_seconds * sr))
  times = _layout(phones, word_index, speaker, rng, segment_seconds)
  scale = speaker.formant_scale * rng.uniform(0.98, 1.02)

  # ---- control tracks on a 1 ms grid: voicing AV, aspiration AH (through the tract).
  ms = 1000
  num_ms = int(np.ceil(segment_seconds * ms)) + 1
  av = np.zeros(num_ms)
  ah = np.zeros(num_ms)
  knot_t, knot_v = [], []  # formant knots: time, [F1..F9, B1..B9]
  fric = []  # (start s, end s, noise class, gain dB, kind)
  nasal = np.zeros(len(phones), bool)

  def fill(track, t0, t1, value):
    track[int(round(t0 * ms)) : int(round(t1 * ms))] = value

  def knot(t, f, bws):
    knot_t.append(t)
    knot_v.append(list(f) + list(_F_HIGH) + list(bws))

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
      gain = _NOISE_CLASSES[spec.noise][3] - (6.0 if spec.voiced else 0.0)
      fric.append((t0, t1, spec.noise, gain, 'fricative'))
    elif spec.kind == 'aspirate':
      fill(ah, t0, t1, 0.5)
    else:  # stop: closure, burst, (aspiration | voicing)
      closure = t0 + (0.6 if spec.voiced else 0.55) * d
      knot(t0 + 0.2 * d, (200.0,) + spec.formants[1:], _B_CLOSURE)
      knot(closure, spec.formants, spec.bandwidths)
      burst = min(0.012, 0.5 * (t1 - closure))
      fric.append((closure, closure + burst, spec.noise, _NOISE_CLASSES[spec.noise][3], 'burst'))
      if spec.voiced:
        fill(av, t0, closure, 0.12)  # voice bar
        fill(av, closure + 0.3 * burst, t1, 1.0)
      elif prev != 's':
        fill(ah, closure + 0.5 * burst, t1, 1.2)  # aspiration
  av = _smooth(av[:, None], 8)[:, 0]
  ah = _smooth(ah[:, None], 8)[:, 0]

  # ---- f0 contour (5 ms grid): declination, one accent per word, final fall.
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
  f0_grid = speaker.f0_mean * 2.0 ** (semitones / 12.0)

  # ---- glottal pulses: integrate f0, jitter, shimmer, sub-sample placement.
  t_samp = np.arange(n) / sr
  f0 = np.interp(t_samp, grid, f0_grid)
  phase = np.cumsum(f0) / sr
  crossing = np.flatnonzero(np.diff(np.floor(phase)) > 0)  # phase passes an integer
  frac = (np.ceil(phase[crossing]) - phase[crossing]) / (phase[crossing + 1] - phase[crossing])
  pulse_t = (crossing + frac) / sr
  pulse_t += rng.normal(0.0, speaker.jitter, len(pulse_t)) / f0[crossing]
  pulse_amp = np.interp(pulse_t, np.arange(num_ms) / ms, av)
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
  # Glottal low-pass (two real poles, Klatt's RGP, 100 Hz bandwidth) and spectral tilt pole.
  rg = np.exp(-np.pi * 100.0 / sr)
  tilt = speaker.tilt
  den = np.convolve([1.0, -2 * rg, rg * rg], [1.0, -tilt])
  glottal = _lfilter(np.array([(1 - rg) ** 2 * (1 - tilt)]), den, impulses)

  # ---- aspiration source: breathiness (gated by the glottal cycle) + h / stop aspiration.
  av_samp = np.interp(t_samp, np.arange(num_ms) / ms, av)
  ah_samp = np.interp(t_samp, np.arange(num_ms) / ms, ah)
  voiced = av_samp > 0.5
  src_rms = np.sqrt(np.mean(glottal[voiced] ** 2)) if voiced.any() else 1e-3
  open_phase = (phase - np.floor(phase)) < 0.5
  asp_level = _ASPIRATION_GAIN * ah_samp + _BREATH_GAIN * speaker.breathiness * av_samp * (
    0.4 + 1.2 * open_phase
  )
  source = glottal + src_rms * asp_level * rng.standard_normal(n, dtype=np.float32)

  # ---- vocal tract: time-varying cascade, 5 ms blocks.
  block = int(round(_BLOCK_SECONDS * sr))
  num_blocks = -(-n // block)
  centres = (np.arange(num_blocks) + 0.5) * block / sr
  tracks = _interp_nan(np.array(knot_t), np.array(knot_v, float), centres)  # [nb, 18]
  tracks = _smooth(tracks, 3)
  # Formants that this speaker's scale puts near or above Nyquist are left out.
  num_f = 3 + sum(f * scale < 0.47 * sr for f in _F_HIGH)
  freqs = tracks[:, :num_f] * scale  # [nb, num_f]
  for k in range(1, num_f):  # keep formants ordered and apart
    freqs[:, k] = np.maximum(freqs[:, k], freqs[:, k - 1] + 200.0)
  freqs = np.minimum(freqs, 0.47 * sr - (num_f - 1 - np.arange(num_f)) * 150.0)
  bws = tracks[:, 9 : 9 + num_f]
  polys = _resonator_poly(freqs, bws, sr)  # [nb, num_f, 3]
  a = np.ones((num_blocks, 1))
  for k in range(num_f):
    a = _poly_mul(a, polys[:, k])
  gain = np.prod(polys.sum(axis=-1), axis=-1)  # unit DC gain
  b = np.zeros((num_blocks, 3))
  b[:, 0] = gain
  # Nasal pole-zero pair on the blocks inside nasals.
  nasal_pole = np.zeros(num_blocks)
  nasal_zero = np.zeros(num_blocks)
  for i in np.flatnonzero(nasal):
    in_phone = (centres >= times[i, 0]) & (centres < times[i, 1])
    nasal_pole[in_phone] = min(specs[i].nasal_pole * scale, 0.45 * sr)
    nasal_zero[in_phone] = min(specs[i].nasal_zero * scale, 0.43 * sr)
  a = np.concatenate([a, np.zeros((num_blocks, 2))], axis=1)
  nb_idx = np.flatnonzero(nasal_pole > 0)
  if len(nb_idx):
    pole = _resonator_poly(nasal_pole[nb_idx], np.full(len(nb_idx), 200.0), sr)
    zero = _resonator_poly(nasal_zero[nb_idx], np.full(len(nb_idx), 120.0), sr)
    a[nb_idx] = _poly_mul(a[nb_idx, :-2], pole)
    b[nb_idx] = (gain[nb_idx] * pole.sum(-1) / zero.sum(-1))[:, None] * zero
  active = np.flatnonzero(source)
  first = int(active[0] // block) if len(active) else 0
  last = (
    min(num_blocks, int(active[-1] // block) + 1 + int(0.05 * sr) // block) if len(active) else 0
  )
  tract = _time_varying_filter(b, a, source, block, first, last)
  speech = np.diff(tract, prepend=0.0)  # lip radiation

  # ---- frication and bursts (parallel branch), levels relative to voiced speech.
  speech_rms = np.sqrt(np.mean(speech[voiced] ** 2)) if voiced.any() else np.std(speech) + 1e-6
  noise_out = np.zeros(n)
  for t0, t1, cls, gain_db, kind in fric:
    s0, s1 = int(t0 * sr), int(np.ceil(t1 * sr))
    length = s1 - s0
    if length < 4:
      continue
    nb_, na_ = _noise_filter(cls, round(speaker.formant_scale * 20) / 20, sr)
    x = _lfilter(nb_, na_, rng.standard_normal(length + 256))[256:]
    x /= np.sqrt(np.mean(x**2)) + 1e-12
    tt = np.arange(length) / sr
    if kind == 'burst':
      env = np.exp(-tt / 0.004)
    else:
      ramp = min(0.02, (t1 - t0) / 3)
      env = np.minimum(1.0, np.minimum(tt, tt[-1] - tt) / ramp + 0.05)
      env *= 1.0 + 0.2 * np.sin(np.pi * tt / tt[-1])
    noise_out[s0:s1] += x * env * speech_rms * 10 ** ((gain_db + rng.normal(0, 1.0)) / 20)
  audio = speech + noise_out
  peak = np.max(np.abs(audio))
  if not np.isfinite(peak) or peak == 0:
    raise FloatingPointError(f'synthesis produced peak {peak} for phones {phones}')
  audio *= speaker.loudness / peak
  audio += speaker.loudness * 10 ** (_NOISE_FLOOR_DB / 20) * rng.standard_normal(n, np.float32)
  audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
  return audio, times.astype(np.float32)


# ----------------------------------------------------------------------------------- source


# split -> (speaker stream, sentence stream, item-variation stream, config size prefix, id prefix)
_STREAMS = {
  'train': (0, 2, 5, 'train', 'train'),
  'test': (1, 3, 6, 'heldout', 'heldout'),
  'validation': (7, 8, 9, 'validation', 'validation'),
}


def _cfg_get(cfg: Any, key: str) -> Any:
  try:
    return cfg[key]
  except (KeyError, AttributeError, TypeError) as e:
    raise KeyError(f'synthetic corpus config lacks {key!r} (config.data.synthetic)') from e


def _cfg_get_or(cfg: Any, key: str, default: Any) -> Any:
  try:
    return _cfg_get(cfg, key)
  except KeyError:
    return default


def heldout_index(speaker_index: int, sentence_index: int, num_sentences: int) -> int:
  """Index of (speaker, sentence) in a grid split ('test', 'validation', or a 'train' grid)."""
  return speaker_index * num_sentences + sentence_index


class SyntheticSpeechSource:
  """Grain-compatible random-access source over the synthetic corpus (see module docstring).

  `source[i]` returns a record dict: `audio float32[S]` in [-1, 1], `sample_rate`, `id`,
  `speaker`, `content_id` (sentence id, e.g. 'train-s0123'), `text`, `phones`,
  `phone_times float32[P, 2]` (seconds), `speaker_index`, `sentence_index`.
  """

  def __init__(
    self, cfg: Any, split: str, *, sample_rate: int = 16_000, segment_seconds: float = 3.0
  ):
    split = canonical_split(split)
    self.split = split
    self.seed = int(_cfg_get(cfg, 'seed'))
    self.sample_rate = int(sample_rate)
    self.segment_seconds = float(segment_seconds)
    if self.segment_seconds < 1.0:
      raise ValueError(f'segment_seconds must be >= 1.0, got {segment_seconds}')
    sizes = {
      k: int(_cfg_get(cfg, k))
      for k in (
        'num_train_speakers',
        'num_heldout_speakers',
        'num_train_sentences',
        'num_heldout_sentences',
        'train_size',
      )
    }
    # Configs written before the validation split have no sizes for it: those of the test split.
    for k in ('speakers', 'sentences'):
      sizes[f'num_validation_{k}'] = int(
        _cfg_get_or(cfg, f'num_validation_{k}', sizes[f'num_heldout_{k}'])
      )
    for k, v in sizes.items():
      if v <= 0:
        raise ValueError(f'config.data.synthetic.{k} must be positive, got {v}')
    speaker_stream, sentence_stream, self._item_stream, size_key, prefix = _STREAMS[split]
    self.lexicon = make_lexicon(self.seed)
    self.words = self.lexicon.words(split)
    num_speakers = sizes[f'num_{size_key}_speakers']
    num_sentences = sizes[f'num_{size_key}_sentences']
    self._id_prefix = prefix
    self.speakers = tuple(
      make_speaker(np.random.default_rng([self.seed, speaker_stream, i]), f'{prefix}-spk{i:03d}')
      for i in range(num_speakers)
    )
    self.sentences = make_sentences(
      np.random.default_rng([self.seed, sentence_stream]), self.words, num_sentences, prefix
    )
    self.num_speakers = num_speakers
    self.num_sentences = num_sentences
    # Evaluation splits, and the train split with `train_grid`, are speaker x sentence grids.
    self.is_grid = split != 'train' or bool(_cfg_get_or(cfg, 'train_grid', False))
    self._length = num_speakers * num_sentences if self.is_grid else sizes['train_size']

  def __len__(self) -> int:
    return self._length

  def __repr__(self) -> str:
    return (
      f'SyntheticSpeechSource(split={self.split!r}, seed={self.seed}, len={len(self)}, '
      f'speakers={self.num_speakers}, sentences={self.num_sentences})'
    )

  def index_of(self, speaker_index: int, sentence_index: int) -> int:
    """Grid splits only: the index of the given (speaker, sentence) grid cell."""
    if not self.is_grid:
      raise ValueError(
        'index_of is defined on grid splits only (train pairs are drawn unless '
        'config.data.synthetic.train_grid)'
      )
    if not (0 <= speaker_index < self.num_speakers and 0 <= sentence_index < self.num_sentences):
      raise IndexError(
        f'(speaker {speaker_index}, sentence {sentence_index}) outside the '
        f'{self.num_speakers} x {self.num_sentences} grid'
      )
    return heldout_index(speaker_index, sentence_index, self.num_sentences)

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not isinstance(index, (int, np.integer)):
      raise TypeError(f'index must be an integer, got {type(index).__name__}')
    index = int(index)
    if not 0 <= index < self._length:
      raise IndexError(f'index {index} out of range for {self!r}')
    rng = np.random.default_rng([self.seed, self._item_stream, index])
    if self.is_grid:
      speaker_index, sentence_index = divmod(index, self.num_sentences)
      record_id = f'{self._id_prefix}-spk{speaker_index:03d}-s{sentence_index:04d}'
    else:
      speaker_index = int(rng.integers(self.num_speakers))
      sentence_index = int(rng.integers(self.num_sentences))
      record_id = f'train-{index:07d}'
    speaker = self.speakers[speaker_index]
    sentence = self.sentences[sentence_index]
    audio, phone_times = synthesize(
      sentence.phones,
      speaker,
      rng,
      self.sample_rate,
      segment_seconds=self.segment_seconds,
      word_index=sentence.word_index,
    )
    return {
      'audio': audio,
      'sample_rate': self.sample_rate,
      'id': record_id,
      'speaker': speaker.name,
      'content_id': sentence.content_id,
      'text': sentence.text,
      'phones': sentence.phones,
      'phone_times': phone_times,
      'speaker_index': speaker_index,
      'sentence_index': sentence_index,
    }

  def parallel_record(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Another speaker of this split reading the same sentence as `record` (a content-preserving
    view across speakers; `config.data.cross_speaker_views`). Deterministic given `rng`."""
    if self.num_speakers < 2:
      raise ValueError('parallel_record needs at least two speakers in the split')
    own = int(record['speaker_index'])
    other = int(rng.integers(self.num_speakers - 1))
    other += other >= own  # any speaker but the record's own
    speaker = self.speakers[other]
    sentence = self.sentences[int(record['sentence_index'])]
    audio, phone_times = synthesize(
      sentence.phones,
      speaker,
      rng,
      self.sample_rate,
      segment_seconds=self.segment_seconds,
      word_index=sentence.word_index,
    )
    return dict(
      record,
      audio=audio,
      speaker=speaker.name,
      speaker_index=other,
      phone_times=phone_times,
      id=f'{record["id"]}-spk{other:03d}',
    )


# ------------------------------------------------------------------------ benchmark, figure


def benchmark(source: SyntheticSpeechSource, num: int = 200) -> dict[str, float]:
  """Generates `num` records on this process (one core); returns timing figures."""
  import time

  source[0]  # warm caches (filter designs)
  start = time.perf_counter()
  for i in range(num):
    source[i % len(source)]
  seconds = time.perf_counter() - start
  return {
    'ms_per_utterance': 1e3 * seconds / num,
    'utterances_per_second': num / seconds,
    'realtime_factor': num * source.segment_seconds / seconds,
  }


def plot_examples(
  source: SyntheticSpeechSource, path: str, sentences: Sequence[int] = (0, 1)
) -> list[dict[str, Any]]:
  """Log-mel spectrograms with phone labels: sentence `sentences[0]` by the held-out speakers with
  the lowest and the highest f0, and each further sentence by the lowest-f0 speaker. Returns the
  plotted records. Needs matplotlib and librosa (imported here only)."""
  import librosa
  import librosa.display
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  if source.split == 'train':
    raise ValueError('plot_examples needs an evaluation split (same sentence, several speakers)')
  f0 = [s.f0_mean for s in source.speakers]
  low, high = int(np.argmin(f0)), int(np.argmax(f0))
  cells = [(low, sentences[0]), (high, sentences[0])] + [(low, j) for j in sentences[1:]]
  records = [source[source.index_of(s, j)] for s, j in cells]
  fig, axes = plt.subplots(len(records), 1, figsize=(14, 3.3 * len(records)), squeeze=False)
  for ax, r in zip(axes[:, 0], records):
    sr = r['sample_rate']
    mel = librosa.feature.melspectrogram(
      y=r['audio'], sr=sr, n_fft=512, win_length=400, hop_length=160, n_mels=80, fmax=sr / 2
    )
    librosa.display.specshow(
      librosa.power_to_db(mel, ref=np.max, top_db=80.0),
      sr=sr,
      hop_length=160,
      x_axis='time',
      y_axis='mel',
      fmax=sr / 2,
      ax=ax,
    )
    for k, (phone, (t0, t1)) in enumerate(zip(r['phones'], r['phone_times'])):
      ax.axvline(t0, color='w', lw=0.5, alpha=0.5)
      ax.text((t0 + t1) / 2, 5200 if k % 2 else 6400, phone, color='w', ha='center', fontsize=9)
    spk = source.speakers[r['speaker_index']]
    ax.set_title(
      f"{r['id']}  ({r['content_id']}: '{r['text']}')   f0 {spk.f0_mean:.0f} Hz, "
      f'formant scale {spk.formant_scale:.2f}, {len(r["phones"])} phones',
      fontsize=10,
    )
    ax.set_xlabel('time (s)')
  fig.tight_layout()
  fig.savefig(path, dpi=72)
  plt.close(fig)
  return records


def main(argv: Sequence[str] | None = None) -> None:
  """`python -m pairalign_jax.data.synthetic [--figure PNG] [--wav_dir DIR] [--bench N]`."""
  import argparse

  from absl import logging

  logging.set_verbosity(logging.INFO)
  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument('--figure', default='', help='write example log-mel spectrograms here')
  parser.add_argument('--wav_dir', default='', help='write the plotted examples as WAV files here')
  parser.add_argument('--bench', type=int, default=0, help='time this many train utterances')
  args = parser.parse_args(argv)
  from pairalign_jax import default_config

  cfg = default_config.get_config()
  sr, seconds = cfg.audio.sample_rate, cfg.audio.segment_seconds
  if args.bench:
    train = SyntheticSpeechSource(
      cfg.data.synthetic, 'train', sample_rate=sr, segment_seconds=seconds
    )
    logging.info(
      'generation speed (%d utterances, one process): %s', args.bench, benchmark(train, args.bench)
    )
    times = [train[i]['phone_times'] for i in range(min(args.bench, 200))]
    rates = [len(t) / (t[-1, 1] - t[0, 0]) for t in times]
    logging.info(
      'speaking rate: mean %.2f phones/s (min %.2f, max %.2f)',
      np.mean(rates),
      np.min(rates),
      np.max(rates),
    )
  if args.figure or args.wav_dir:
    heldout = SyntheticSpeechSource(
      cfg.data.synthetic, 'heldout', sample_rate=sr, segment_seconds=seconds
    )
    records = plot_examples(heldout, args.figure) if args.figure else [heldout[0], heldout[1]]
    if args.wav_dir:
      import os

      import soundfile

      for r in records:
        soundfile.write(os.path.join(args.wav_dir, r['id'] + '.wav'), r['audio'], sr)


if __name__ == '__main__':
  main()
