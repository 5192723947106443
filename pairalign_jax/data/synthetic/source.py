"""The synthetic corpus as a random-access source (`SyntheticSpeechSource`), split by split.

* Speakers: `num_train_speakers`, `num_heldout_speakers` (test) and `num_validation_speakers`
  independent parameter draws (`speakers.make_speaker`).
* Utterance layout: a leading silence of 0.1-0.3 s, optional 40-120 ms pauses between words, and
  the whole sentence always ends at least `TAIL_SECONDS` before the end of the segment (slow
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

import time
from typing import Any

import numpy as np

from pairalign_jax.data.splits import canonical_split
from pairalign_jax.data.synthetic.lexicon import make_lexicon
from pairalign_jax.data.synthetic.lexicon import make_sentences
from pairalign_jax.data.synthetic.speakers import make_speaker
from pairalign_jax.data.synthetic.synthesis import synthesize

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
    audio, phone_times = self._read_aloud(sentence, speaker, rng)
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

  def _read_aloud(self, sentence, speaker, rng: np.random.Generator):
    """`sentence` spoken by `speaker` at this source's rate and length: (audio, phone_times)."""
    return synthesize(
      sentence.phones,
      speaker,
      rng,
      self.sample_rate,
      segment_seconds=self.segment_seconds,
      word_index=sentence.word_index,
    )

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
    audio, phone_times = self._read_aloud(sentence, speaker, rng)
    return dict(
      record,
      audio=audio,
      speaker=speaker.name,
      speaker_index=other,
      phone_times=phone_times,
      id=f'{record["id"]}-spk{other:03d}',
    )


def benchmark(source: SyntheticSpeechSource, num: int = 200) -> dict[str, float]:
  """Generates `num` records on this process (one core); returns timing figures."""
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
