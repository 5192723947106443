"""A spoken-term-detection set from the synthetic corpus' held-out split: long recordings with
known word times, and spoken queries by other speakers.

    corpus = build_std_corpus(source, archive_speakers=4, num_words=60, num_phrases=40, seed=0)
    corpus.recordings[0].wave, corpus.terms[0].query_wave, corpus.terms[0].occurrences

* `source` is a grid split of `data.synthetic.SyntheticSpeechSource` ('test' or 'validation':
  speakers, words and sentences never used in training), whose records carry `phone_times` and
  whose sentences give each phone's word (`Sentence.word_index`), so every word's start and end
  are known (`word_spans`: first phone start, last phone end).
* **Archive**: the first `archive_speakers` speakers; each one's recording is the concatenation
  of their readings of the first `num_sentences` sentences (3 s segments, in a seeded order per
  speaker). Word times are shifted by each segment's place in the recording.
* **Terms**: `num_words` single words and `num_phrases` two-word phrases (consecutive words of a
  sentence) that occur in the archive, drawn with `seed`; a term's occurrences are all places
  where its words follow each other in the archive (span: first word's start to last word's end).
* **Queries**: each term is spoken by one of the *other* speakers (the remaining ones; drawn per
  term), in a sentence of the split that contains it (drawn), and cut out at its word times
  widened by `margin` seconds on each side and, when shorter, to `min_query_seconds` around its
  centre (clipped to the segment). The record (`context_wave`, 3 s) is kept: queries are
  tokenized in context by default (`tokenizers.region_tokens`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np


@dataclasses.dataclass
class Recording:
  name: str
  speaker: str
  wave: np.ndarray  # float32 [n]
  sample_rate: int
  words: list[tuple[str, float, float]]  # (word, start s, end s), in order

  @property
  def seconds(self) -> float:
    return self.wave.shape[0] / self.sample_rate


@dataclasses.dataclass
class Term:
  text: str  # words joined by spaces
  query_wave: np.ndarray  # float32 [n]
  query_speaker: str
  query_id: str  # record the query was cut from
  query_span: tuple[float, float]  # the cut, seconds in that record
  context_wave: np.ndarray  # float32 [S]: that record (the query's context window)
  occurrences: list[tuple[str, float, float]]  # (recording name, start s, end s)


@dataclasses.dataclass
class StdCorpus:
  recordings: list[Recording]
  terms: list[Term]
  sample_rate: int
  settings: dict[str, Any]

  @property
  def archive_seconds(self) -> float:
    return float(sum(r.seconds for r in self.recordings))


def word_spans(phone_times: np.ndarray, word_index: np.ndarray) -> np.ndarray:
  """Per-phone times [P, 2] and word numbers [P] -> each word's [start, end] [W, 2]."""
  phone_times = np.asarray(phone_times, np.float64).reshape(-1, 2)
  word_index = np.asarray(word_index, np.int64)
  if word_index.shape[0] != phone_times.shape[0]:
    raise ValueError(f'{phone_times.shape[0]} phone times for {word_index.shape[0]} word indices')
  n = int(word_index.max()) + 1 if word_index.size else 0
  out = np.zeros((n, 2))
  for w in range(n):
    rows = phone_times[word_index == w]
    out[w] = rows[:, 0].min(), rows[:, 1].max()
  return out


def find_occurrences(words: list[tuple[str, float, float]], term: tuple[str, ...], name: str):
  """(name, start, end) of every place where `term`'s words follow each other in `words`."""
  k = len(term)
  return [
    (name, words[i][1], words[i + k - 1][2])
    for i in range(len(words) - k + 1)
    if tuple(w for w, _, _ in words[i : i + k]) == term
  ]


def _record_words(source, record) -> list[tuple[str, float, float]]:
  sentence = source.sentences[int(record['sentence_index'])]
  spans = word_spans(record['phone_times'], sentence.word_index)
  return [(w.text, float(s), float(e)) for w, (s, e) in zip(sentence.words, spans)]


def build_std_corpus(
  source,
  *,
  archive_speakers: int = 4,
  num_sentences: Optional[int] = None,
  num_words: int = 60,
  num_phrases: int = 40,
  seed: int = 0,
  margin: float = 0.05,
  min_query_seconds: float = 0.3,
) -> StdCorpus:
  """The STD set (module docstring) from a grid split `source`."""
  if not getattr(source, 'is_grid', False):
    raise ValueError('build_std_corpus needs a grid split (synthetic test or validation)')
  if not 1 <= archive_speakers < source.num_speakers:
    raise ValueError(
      f'archive_speakers must be in [1, {source.num_speakers - 1}] (the other speakers read the '
      f'queries), got {archive_speakers}'
    )
  n_sent = source.num_sentences if num_sentences is None else int(num_sentences)
  if not 1 <= n_sent <= source.num_sentences:
    raise ValueError(f'num_sentences must be in [1, {source.num_sentences}], got {num_sentences}')
  rng = np.random.default_rng([seed, 17])
  sr = int(source.sample_rate)
  recordings = []
  for spk in range(archive_speakers):
    waves, words, t = [], [], 0.0
    for sent in rng.permutation(n_sent):
      rec = source[source.index_of(spk, int(sent))]
      waves.append(np.asarray(rec['audio'], np.float32))
      words += [(w, s + t, e + t) for w, s, e in _record_words(source, rec)]
      t += waves[-1].shape[0] / sr
    name = f'{source.speakers[spk].name}.wav'
    recordings.append(Recording(name, source.speakers[spk].name, np.concatenate(waves), sr, words))

  # Terms that occur in the archive: single words and two-word phrases of its sentences.
  sentences = source.sentences[:n_sent]
  singles = sorted({(w.text,) for s in sentences for w in s.words})
  pairs = sorted(
    {(a.text, b.text) for s in sentences for a, b in zip(s.words[:-1], s.words[1:]) if a != b}
  )
  chosen = [
    singles[i] for i in sorted(rng.choice(len(singles), min(num_words, len(singles)), False))
  ]
  chosen += [pairs[i] for i in sorted(rng.choice(len(pairs), min(num_phrases, len(pairs)), False))]

  query_speakers = list(range(archive_speakers, source.num_speakers))
  terms = []
  for term in chosen:
    holders = [
      i
      for i, s in enumerate(source.sentences)
      if find_occurrences([(w.text, 0, 0) for w in s.words], term, '')
    ]
    spk = int(rng.choice(query_speakers))
    sent = int(rng.choice(holders))
    rec = source[source.index_of(spk, sent)]
    words = _record_words(source, rec)
    _, s, e = find_occurrences(words, term, '')[0]
    lo, hi = s - margin, e + margin
    if hi - lo < min_query_seconds:
      mid = (s + e) / 2
      lo, hi = mid - min_query_seconds / 2, mid + min_query_seconds / 2
    audio = np.asarray(rec['audio'], np.float32)
    lo, hi = max(0.0, lo), min(audio.shape[0] / sr, hi)
    occurrences = [o for r in recordings for o in find_occurrences(r.words, term, r.name)]
    terms.append(
      Term(
        text=' '.join(term),
        query_wave=audio[int(round(lo * sr)) : int(round(hi * sr))],
        query_speaker=source.speakers[spk].name,
        query_id=str(rec['id']),
        query_span=(lo, hi),
        context_wave=audio,
        occurrences=occurrences,
      )
    )
  return StdCorpus(
    recordings=recordings,
    terms=terms,
    sample_rate=sr,
    settings={
      'split': getattr(source, 'split', None),
      'archive_speakers': archive_speakers,
      'query_speakers': len(query_speakers),
      'num_sentences': n_sent,
      'num_words': sum(len(t.text.split()) == 1 for t in terms),
      'num_phrases': sum(len(t.text.split()) == 2 for t in terms),
      'margin': margin,
      'min_query_seconds': min_query_seconds,
      'seed': seed,
    },
  )
