"""Tests for pairalign_jax/data/espeak_corpus.py: the eSpeak NG corpus as the manifest source and
the evaluation read it (needs espeak-ng: `apt-get install espeak-ng`, which .ci/run installs)."""

import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from configs import espeak_small_corpus
from pairalign_jax import config_validation
from pairalign_jax import evaluate
from pairalign_jax.data import espeak_corpus
from pairalign_jax.data import pipeline

needs_espeak = pytest.mark.skipif(
  shutil.which('espeak-ng') is None, reason='espeak-ng is not installed (.ci/run installs it)'
)
SIZES = dict(train_voices=2, train_sentences=3, heldout_voices_per_split=2, heldout_sentences=3)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('espeak'))
  counts = espeak_corpus.build_corpus(out, seed=3, **SIZES)
  return out, counts


def config_for(out):
  config = espeak_small_corpus.get_config()
  config.data.path = os.path.join(out, 'train.tsv')
  config.data.eval_path = os.path.join(out, 'heldout.tsv')
  return config


def _voices(out):
  with open(os.path.join(out, 'voices.json'), encoding='utf-8') as f:
    return json.load(f)['voices']


@needs_espeak
def test_splits_as_the_manifest_source_reads_them(corpus):
  out, counts = corpus
  assert counts == {'train': 6, 'validation': 6, 'test': 6}
  config = config_for(out)
  config_validation.validate_config(config)
  voices = _voices(out)
  texts = {}
  for split in ('train', 'validation', 'test'):
    source = pipeline.make_source(config, split)
    assert len(source) == counts[split]
    speakers = {e['speaker'] for e in source.entries}
    assert speakers == {v['speaker'] for v in voices if v['split'] == split}
    texts[split] = {e['text'] for e in source.entries}
    if split == 'train':  # every training recording its own sentence: no parallel readings
      assert len(texts[split]) == counts[split] and source.num_parallel_items == 0
    else:  # every voice of the split reads every sentence of the split
      assert len(texts[split]) == SIZES['heldout_sentences']
      assert source.num_parallel_items == counts[split]
  assert not texts['train'] & texts['validation']
  assert not texts['train'] & texts['test']
  assert not texts['validation'] & texts['test']
  held_variants = {v['variant'] for v in voices if v['split'] != 'train'}
  assert held_variants <= set(espeak_corpus.HELDOUT_VARIANTS)
  assert not held_variants & set(espeak_corpus.TRAIN_VARIANTS)


@needs_espeak
def test_recordings_fit_the_segment_and_are_speech(corpus):
  out, _ = corpus
  config = config_for(out)
  for split in ('train', 'test'):
    source = pipeline.make_source(config, split)
    for i in range(len(source)):
      record = source[i]
      audio = record['audio']
      assert record['sample_rate'] == espeak_corpus.SAMPLE_RATE
      assert audio.shape[0] <= 2.9 * espeak_corpus.SAMPLE_RATE
      peak_db = 20 * np.log10(np.max(np.abs(audio)))
      lo, hi = espeak_corpus.LEVEL_RANGE_DB
      assert lo - 1.5 < peak_db < hi + 1.5  # the noise floor adds to the peak
      # Speech in the middle, the noise floor in the lead-in silence.
      assert np.std(audio[: int(0.04 * 16_000)]) < 10 ** (-45 / 20)
      assert np.std(audio) > 10 ** (-45 / 20)


@needs_espeak
def test_the_evaluation_builds_its_set_from_the_held_out_voices(corpus):
  out, _ = corpus
  config = config_for(out)
  config.eval.sweep_items = 1
  eval_set = evaluate.build_split_eval_set(config, split='test')
  # Each of the 2 voices is the archive once; the other's readings of the 3 sentences are queries.
  assert len(eval_set.rotations) == 2
  assert eval_set.num_archive == 3 and eval_set.num_queries == 3
  assert eval_set.waves.shape == (6, 3 * 16_000)
  for rotation in eval_set.rotations:
    archive = {eval_set.speakers[i] for i in rotation.archive_rows}
    queries = {eval_set.speakers[i] for i in rotation.query_rows}
    assert len(archive) == 1 and len(queries) == 1 and archive != queries


@needs_espeak
def test_same_seed_same_corpus(corpus, tmp_path):
  out, _ = corpus
  espeak_corpus.build_corpus(str(tmp_path), seed=3, **SIZES)
  for name in ('train.tsv', 'heldout.tsv', 'voices.json'):
    with open(os.path.join(out, name), 'rb') as a, open(tmp_path / name, 'rb') as b:
      assert a.read() == b.read(), name
  with open(os.path.join(out, 'heldout.tsv'), encoding='utf-8') as f:
    rel = f.readlines()[1].split('\t')[0]
  np.testing.assert_array_equal(sf.read(os.path.join(out, rel))[0], sf.read(tmp_path / rel)[0])


def test_without_espeak_the_error_says_how_to_install_it(monkeypatch, tmp_path):
  monkeypatch.setattr(espeak_corpus.shutil, 'which', lambda name: None)
  with pytest.raises(RuntimeError, match='apt-get install espeak-ng'):
    espeak_corpus.build_corpus(str(tmp_path), seed=0, **SIZES)
  assert not os.listdir(tmp_path)


def test_sentences_are_distinct_words_in_a_template():
  rng = np.random.default_rng(0)
  for _ in range(200):
    words = espeak_corpus.draw_sentence(rng).split()
    assert 4 <= len(words) <= 9
    nouns = [w for w in words if w in espeak_corpus.NOUNS]
    assert len(nouns) == len(set(nouns))
    assert 'a' not in [w for w, nxt in zip(words, words[1:]) if nxt[0] in 'aeiou']
