"""A corpus of speech the model was not developed on: English sentences read by eSpeak NG voices.

The synthetic corpus (`pairalign_jax.data.synthetic`) is where the method's settings were chosen.
This corpus tests them on other speech: a different synthesizer (eSpeak NG's formant and Klatt
voices, `apt-get install espeak-ng`), English words with each accent's own pronunciation (US, UK,
Scottish, RP, Lancaster, West Midlands, Caribbean, New York), and voices that differ in variant
(eSpeak's m1-m8, f1-f5, klatt*, croak), pitch, speaking rate and level. Nothing is downloaded.

Layout written by `build_corpus(out_dir)` (or `python -m pairalign_jax.data.espeak_corpus
--out=DIR`), as a user's own corpus would be given to the manifest source:

* `train.tsv`: `train_voices` voices x `train_sentences` sentences, *every recording a different
  sentence* (no parallel readings, as in most of a user's audio): 576 recordings by default.
* `heldout.tsv`: voices never heard in training reading sentences never heard in training, every
  voice of a split reading the same sentences (parallel readings: the evaluation's queries are
  the other voices' readings). The manifest source halves `config.data.eval_path` into
  'validation' and 'test' by a hash of the speaker (`folder.split_entries`); the voices are drawn
  until each half has `heldout_voices`, and each half reads its own `heldout_sentences` sentences,
  so validation and test share neither voices nor sentences (nor with training).
* `audio/<speaker>/<id>.flac` (16 kHz, 16-bit), and `voices.json` (each voice's settings, split).

Train on it with `configs/espeak_small_corpus.py` (`configs/small_corpus.py` with these
manifests); every reading fits in `max_seconds` (default 2.9 s, inside the 3 s segment).
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import os
import re
import shutil
import subprocess
from typing import Iterator, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np
import soundfile as sf
import soxr
import tqdm

from pairalign_jax.data import folder

SAMPLE_RATE = 16_000
ESPEAK = 'espeak-ng'
ACCENTS = (
  'en-us',
  'en-gb',
  'en-gb-scotland',
  'en-gb-x-rp',
  'en-gb-x-gbclan',
  'en-gb-x-gbcwmd',
  'en-029',
  'en-us-nyc',
)
# eSpeak variants (voice qualities) of the training voices and of the held-out voices: disjoint,
# so that a held-out voice is not a training voice at another pitch.
TRAIN_VARIANTS = ('m1', 'm2', 'm3', 'm4', 'f1', 'f2', 'f3', 'klatt', 'klatt2')
HELDOUT_VARIANTS = ('m5', 'm6', 'm7', 'm8', 'f4', 'f5', 'klatt3', 'klatt4', 'croak')
PITCH_RANGE = (25, 75)  # espeak-ng -p (0-99, default 50)
SPEED_RANGE = (140, 185)  # espeak-ng -s, words per minute
LEVEL_RANGE_DB = (-24.0, -8.0)  # peak level of a recording (dBFS)
NOISE_DB = -55.0  # a noise floor under each recording, relative to full scale (RMS)
LEAD_SECONDS = (0.05, 0.3)  # silence before the speech

# Words for the sentence templates: every split draws from the same words (as the speech of one
# language does), so that retrieval has to tell sentences apart by their word order and choice.
ADJECTIVES = (
  'small big old young red green dark bright quiet loud cold warm soft hard long short '
  'happy tired quick slow clean heavy empty narrow'
).split()
NOUNS = (
  'dog cat horse bird fish boat car train house garden river bridge window door table chair '
  'letter book candle basket apple orange bottle kettle hammer ladder blanket pillow mirror '
  'lantern wagon engine pencil teacher doctor farmer sailor baker painter neighbour captain '
  'village market forest meadow mountain harbour station kitchen'
).split()
VERBS = (
  'found carried painted washed dropped opened closed followed watched pushed pulled lifted '
  'cleaned fixed bought sold moved counted visited remembered'
).split()
PREPOSITIONS = 'near behind under beside across inside above below past toward'.split()
NUMBERS = 'two three four five six seven eight nine ten'.split()
TEMPLATES = (
  'the {a} {n} {v} the {n2}',
  'the {n} {v} the {a} {n2}',
  'a {a} {n} {v} the {n2} {p} the {n3}',
  '{num} {a} {n}s {v} the {n2}',
  'the {n} {v} {num} {n2}s {p} the {n3}',
  'my {n} {v} a {a} {n2}',
  'the {a} {n} was {p} the {a2} {n2}',
  'her {n} {v} the {n2} {p} the {n3}',
)


@dataclasses.dataclass(frozen=True)
class Voice:
  """One eSpeak NG voice: accent (language voice), variant, pitch (-p), speed (-s, wpm), level."""

  accent: str
  variant: str
  pitch: int
  speed: int
  level_db: float

  @property
  def speaker(self) -> str:
    return f'{self.accent}+{self.variant}_p{self.pitch}_s{self.speed}'

  def command(self, text: str) -> list[str]:
    return [ESPEAK, '-v', f'{self.accent}+{self.variant}', '-p', str(self.pitch), '-s',
            str(self.speed), '--stdout', text]  # fmt: skip


def check_espeak() -> str:
  """espeak-ng's version line (`--version`), or a RuntimeError saying how to install it."""
  path = shutil.which(ESPEAK)
  if path is None:
    raise RuntimeError(
      'espeak-ng is not installed (needed to build this corpus): apt-get install espeak-ng'
    )
  proc = subprocess.run([path, '--version'], capture_output=True, check=False, text=True)
  return proc.stdout.strip()


def draw_voice(rng: np.random.Generator, variant: str) -> Voice:
  """A voice of `variant` with a random accent, pitch, speed and level."""
  return Voice(
    accent=str(rng.choice(ACCENTS)),
    variant=variant,
    pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
    speed=int(rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1)),
    level_db=float(rng.uniform(*LEVEL_RANGE_DB)),
  )


def draw_sentence(rng: np.random.Generator) -> str:
  """One sentence from `TEMPLATES` (distinct nouns and adjectives within a sentence)."""
  template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
  n, n2, n3 = rng.choice(NOUNS, size=3, replace=False)
  a, a2 = rng.choice(ADJECTIVES, size=2, replace=False)
  text = template.format(
    a=a,
    a2=a2,
    n=n,
    n2=n2,
    n3=n3,
    v=rng.choice(VERBS),
    p=rng.choice(PREPOSITIONS),
    num=rng.choice(NUMBERS),
  )
  return re.sub(r'\ba (?=[aeiou])', 'an ', text)


def speak(voice: Voice, text: str) -> np.ndarray:
  """eSpeak NG's reading of `text` by `voice`, its leading and trailing silence cut, at 16 kHz:
  float32 [S]. Raises RuntimeError (with espeak-ng's message) if it fails or says nothing."""
  proc = subprocess.run(voice.command(text), capture_output=True, check=False)
  if proc.returncode != 0 or not proc.stdout:
    raise RuntimeError(
      f'{" ".join(voice.command(text))} failed ({proc.returncode}): '
      f'{proc.stderr.decode(errors="replace").strip()}'
    )
  audio, rate = sf.read(io.BytesIO(proc.stdout), dtype='float32')
  voiced = np.flatnonzero(np.abs(audio) > 1e-3)
  if voiced.size == 0:
    raise RuntimeError(f'{voice.speaker} produced silence for {text!r}')
  audio = audio[voiced[0] : voiced[-1] + 1]
  return soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)


def recording(speech: np.ndarray, voice: Voice, rng: np.random.Generator) -> np.ndarray:
  """The speech at the voice's level, after a short random silence, over a faint noise floor, with
  0.1 s of silence after it: float32 [S] at 16 kHz."""
  lead = int(rng.uniform(*LEAD_SECONDS) * SAMPLE_RATE)
  out = np.concatenate(
    [np.zeros(lead, np.float32), speech, np.zeros(SAMPLE_RATE // 10, np.float32)]
  )
  out *= 10 ** (voice.level_db / 20) / max(float(np.max(np.abs(speech))), 1e-6)
  out += 10 ** (NOISE_DB / 20) * rng.standard_normal(out.shape[0]).astype(np.float32)
  return np.clip(out, -1.0, 1.0).astype(np.float32)


def variant_cycle(rng: np.random.Generator, variants: Sequence[str]) -> Iterator[str]:
  """The variants in a random order, again and again: each used once before any twice."""
  order = [str(v) for v in rng.permutation(list(variants))]
  return itertools.cycle(order)


def heldout_voices(
  rng: np.random.Generator, per_split: int, taken: set[str]
) -> dict[str, list[Voice]]:
  """`per_split` voices for each of 'validation' and 'test', drawn one at a time and placed where
  the manifest source's split rule puts their speaker (`folder.heldout_half`: with both halves
  given speakers, `folder.split_entries` of an eval_path splits by it)."""
  out: dict[str, list[Voice]] = {'validation': [], 'test': []}
  variants = variant_cycle(rng, HELDOUT_VARIANTS)
  for _ in range(1000 * per_split):
    if min(len(v) for v in out.values()) >= per_split:
      return out
    voice = draw_voice(rng, next(variants))
    if voice.speaker in taken:
      continue
    split = folder.heldout_half(voice.speaker)
    if len(out[split]) < per_split:
      out[split].append(voice)
      taken.add(voice.speaker)
  raise RuntimeError(f'could not draw {per_split} held-out voices per split')


def _fitting_sentences(
  rng: np.random.Generator,
  voices: Sequence[Voice],
  count: int,
  used: set[str],
  max_seconds: float,
) -> list[tuple[str, list[np.ndarray]]]:
  """`count` new sentences, each with every voice's reading (speech only), every reading at most
  `max_seconds` once its lead-in and tail are added; a sentence too long for one voice is
  redrawn."""
  out = []
  budget = max_seconds - LEAD_SECONDS[1] - 0.1
  for _ in range(100 * count):
    if len(out) == count:
      return out
    text = draw_sentence(rng)
    if text in used:
      continue
    used.add(text)
    readings = [speak(voice, text) for voice in voices]
    if max(r.shape[0] for r in readings) <= budget * SAMPLE_RATE:
      out.append((text, readings))
  raise RuntimeError(f'could not draw {count} sentences of at most {max_seconds} s')


def build_corpus(
  out_dir: str,
  *,
  train_voices: int = 9,
  train_sentences: int = 64,
  heldout_voices_per_split: int = 6,
  heldout_sentences: int = 50,
  max_seconds: float = 2.9,
  seed: int = 0,
) -> dict[str, int]:
  """Writes the corpus (module docstring) under `out_dir`; returns the recordings per split.

  Deterministic: the same arguments and eSpeak NG version (in `voices.json`) give the same
  audio."""
  version = check_espeak()
  rng = np.random.default_rng(seed)
  taken: set[str] = set()
  train = []
  variants = variant_cycle(rng, TRAIN_VARIANTS)
  while len(train) < train_voices:
    voice = draw_voice(rng, next(variants))
    if voice.speaker not in taken:
      taken.add(voice.speaker)
      train.append(voice)
  by_split = {'train': train, **heldout_voices(rng, heldout_voices_per_split, taken)}

  used: set[str] = set()
  rows: dict[str, list[dict[str, str]]] = {'train': [], 'heldout': []}
  counts = {'train': 0, 'validation': 0, 'test': 0}
  jobs = [('train', [voice], train_sentences) for voice in train]
  jobs += [(split, by_split[split], heldout_sentences) for split in ('validation', 'test')]
  sentence_no = 0
  for split, voices, count in tqdm.tqdm(jobs, desc='espeak corpus', unit='voice set'):
    for text, readings in _fitting_sentences(rng, voices, count, used, max_seconds):
      sentence_no += 1
      for voice, speech in zip(voices, readings):
        rel = os.path.join('audio', voice.speaker, f'{sentence_no:05d}.flac')
        path = os.path.join(out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sf.write(path, recording(speech, voice, rng), SAMPLE_RATE, subtype='PCM_16')
        rows['train' if split == 'train' else 'heldout'].append(
          {'path': rel, 'speaker': voice.speaker, 'text': text}
        )
        counts[split] += 1
  for name, manifest_rows in rows.items():
    with open(os.path.join(out_dir, f'{name}.tsv'), 'w', encoding='utf-8') as f:
      f.write('path\tspeaker\ttext\n')
      f.writelines(f'{r["path"]}\t{r["speaker"]}\t{r["text"]}\n' for r in manifest_rows)
  voices = [
    {'split': split, **dataclasses.asdict(v), 'speaker': v.speaker}
    for split, split_voices in by_split.items()
    for v in split_voices
  ]
  with open(os.path.join(out_dir, 'voices.json'), 'w', encoding='utf-8') as f:
    json.dump(
      {'seed': seed, 'max_seconds': max_seconds, 'espeak': version, 'voices': voices}, f, indent=1
    )
  logging.info('espeak corpus in %s: %s recordings', out_dir, counts)
  return counts


FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string('out', None, 'Directory to write the corpus to.')
  flags.DEFINE_integer('train_voices', 9, 'Training voices.')
  flags.DEFINE_integer('train_sentences', 64, 'Sentences per training voice (all different).')
  flags.DEFINE_integer('heldout_voices', 6, 'Voices of each of the validation and test splits.')
  flags.DEFINE_integer('heldout_sentences', 50, 'Sentences of each held-out split.')
  flags.DEFINE_float('max_seconds', 2.9, 'Longest recording (lead-in and tail included).')
  flags.DEFINE_integer('seed', 0, 'Voices, sentences, levels and noise.')
  flags.mark_flags_as_required(['out'])


def main(argv: Optional[Sequence[str]]) -> None:
  if argv is not None and len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  counts = build_corpus(
    FLAGS.out,
    train_voices=FLAGS.train_voices,
    train_sentences=FLAGS.train_sentences,
    heldout_voices_per_split=FLAGS.heldout_voices,
    heldout_sentences=FLAGS.heldout_sentences,
    max_seconds=FLAGS.max_seconds,
    seed=FLAGS.seed,
  )
  print(json.dumps(counts))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
