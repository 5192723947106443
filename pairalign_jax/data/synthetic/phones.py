"""The phone inventory of the synthetic corpus: formant targets, durations, noise classes.

35 phones (`PHONES`, ARPAbet names; `y` is the palatal glide /j/): 10 monophthongs and 4
diphthongs as F1-F3 formant targets (diphthongs move between two targets), nasals m n ng (low
murmur F1, weak higher formants, a nasal pole-zero pair: antiformant near 0.9 / 1.7 / 2.8 kHz,
reduced amplitude), fricatives (f v th dh s z sh: band-shaped noise, voiced ones also voiced;
h: aspiration noise through the vocal tract), stops p b t d k g (closure: silence or a voice
bar; burst: a short noise transient shaped by the place of articulation; aspiration for p t k,
not after s), glides/liquids w y r l (brief formant targets, so their formants move).
How `synthesis.py` turns them into sound: docs/synthetic_corpus.md.
"""

import dataclasses
from typing import Mapping

# kind: 'vowel' | 'diphthong' | 'nasal' | 'fricative' | 'aspirate' | 'stop' | 'glide'
# Fixed higher formants F4-F9 (neutral tract). Those that the speaker's scale puts above 0.47 of the
# sample rate are left out; the rest stand in for the higher poles a 5-formant cascade lacks.
F_HIGH = (3300.0, 3750.0, 4900.0, 5900.0, 6900.0, 7900.0)
_B_HIGH = (400.0, 500.0, 600.0, 700.0)  # B6-B9
_B_VOWEL = (70.0, 100.0, 140.0, 250.0, 300.0) + _B_HIGH
_B_NASAL = (90.0, 250.0, 300.0, 350.0, 400.0) + _B_HIGH
_B_GLIDE = (80.0, 110.0, 160.0, 250.0, 300.0) + _B_HIGH
_B_CONS = (90.0, 140.0, 200.0, 300.0, 350.0) + _B_HIGH
# Stop closures: wide upper bandwidths, so a voice bar keeps only its low-frequency energy.
B_CLOSURE = (120.0, 900.0, 1200.0, 1500.0, 1500.0, 2000.0, 2000.0, 2000.0, 2000.0)


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
NOISE_CLASSES = {
  's': (3800.0, 7600.0, 3, -8.0),
  'sh': (2000.0, 5200.0, 3, -6.0),
  'f': (1200.0, 7800.0, 1, -21.0),
  'th': (1600.0, 7800.0, 1, -22.0),
  'p': (300.0, 3500.0, 1, -8.0),  # labial burst: diffuse, low
  't': (3000.0, 7600.0, 2, -2.0),  # alveolar burst: high
  'k': (1400.0, 3400.0, 2, -2.0),  # velar burst: compact, mid
}
PHONE_RATE_FACTOR = 0.93  # global duration calibration: about 12 phones/s at duration_scale 1
