"""Words and sentences of the synthetic corpus (`make_lexicon`, `make_sentences`).

* Lexicon (`make_lexicon`): `NUM_TRAIN_WORDS` + `NUM_HELDOUT_WORDS` + `NUM_VALIDATION_WORDS`
  distinct words of 1-3 syllables (V/CV/CVC/CCVC), drawn from `seed`, in three disjoint lists:
  train, test ("held-out") and validation words. Neither evaluation list is used in training.
* Sentences: several words whose nominal duration is 1.6-2.25 s at the neutral rate; each
  split's sentences use only its own words.
"""

import dataclasses
import functools
from typing import Sequence

import numpy as np

from pairalign_jax.data.splits import canonical_split
from pairalign_jax.data.synthetic.phones import CONSONANTS
from pairalign_jax.data.synthetic.phones import PHONE_RATE_FACTOR
from pairalign_jax.data.synthetic.phones import PHONE_SPECS
from pairalign_jax.data.synthetic.phones import VOWELS

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

# Spellings (`Word.text`); a phone not listed is spelled as its name.
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
  return PHONE_RATE_FACTOR * sum(PHONE_SPECS[p].duration for w in words for p in w.phones)


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
