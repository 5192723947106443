"""Tests for pairalign_jax.data.synthetic (the built-in synthetic speech corpus)."""

import dataclasses
import pickle

import librosa
import ml_collections
import numpy as np
import pytest

from configs import default
from pairalign_jax.data import synthetic
from pairalign_jax.data.synthetic import dsp

SR = 16_000
SEGMENT = 3.0


def _cfg(**overrides):
  cfg = dict(
    seed=7,
    num_train_speakers=8,
    num_heldout_speakers=4,
    num_train_sentences=20,
    num_heldout_sentences=6,
    train_size=50,
  )
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


@pytest.fixture(scope='module')
def train():
  return synthetic.SyntheticSpeechSource(_cfg(), 'train')


@pytest.fixture(scope='module')
def heldout():
  return synthetic.SyntheticSpeechSource(_cfg(), 'heldout')


@pytest.fixture(scope='module')
def train_records(train):
  return [train[i] for i in range(8)]


def test_inventory():
  assert 30 <= len(synthetic.PHONES) <= 40
  assert len(set(synthetic.PHONES)) == len(synthetic.PHONES)
  kinds = {synthetic.PHONE_SPECS[p].kind for p in synthetic.PHONES}
  assert kinds == {'vowel', 'diphthong', 'nasal', 'fricative', 'aspirate', 'stop', 'glide'}
  for p in ('s', 'sh', 'f', 'th', 'h', 'z', 'v', 'm', 'n', 'w', 'y', 'r', 'l'):
    assert p in synthetic.PHONES


def test_record_contract(train, heldout, train_records):
  assert len(train) == 50
  assert len(heldout) == 4 * 6
  for r in train_records + [heldout[0], heldout[len(heldout) - 1]]:
    assert set(r) == {
      'audio',
      'sample_rate',
      'id',
      'speaker',
      'content_id',
      'text',
      'phones',
      'phone_times',
      'speaker_index',
      'sentence_index',
    }
    assert r['audio'].shape == (int(SR * SEGMENT),) and r['audio'].dtype == np.float32
    assert np.all(np.isfinite(r['audio']))
    peak = np.abs(r['audio']).max()
    assert 0.3 <= peak <= 0.9, peak
    assert r['sample_rate'] == SR
    assert r['phone_times'].dtype == np.float32
    assert r['phone_times'].shape == (len(r['phones']), 2)
    assert all(p in synthetic.PHONES for p in r['phones'])
    words = r['text'].split()
    assert 2 <= len(words) and all(words)
  assert train_records[3]['id'] == 'train-0000003'
  assert heldout[0]['id'] == 'heldout-spk000-s0000'
  assert train_records[0]['content_id'].startswith('train-s')
  assert heldout[0]['content_id'] == 'heldout-s0000'


def test_accepts_default_config_and_plain_dict():
  config = default.get_config()
  source = synthetic.SyntheticSpeechSource(
    config.data.synthetic,
    'heldout',
    sample_rate=config.audio.sample_rate,
    segment_seconds=config.audio.segment_seconds,
  )
  assert len(source) == (
    config.data.synthetic.num_heldout_speakers * config.data.synthetic.num_heldout_sentences
  )
  from_dict = synthetic.SyntheticSpeechSource(dict(_cfg()), 'train')
  assert len(from_dict) == 50


def test_deterministic_and_index_dependent(train_records):
  again = synthetic.SyntheticSpeechSource(_cfg(), 'train')
  for i in (0, 5):
    r = again[i]
    np.testing.assert_array_equal(r['audio'], train_records[i]['audio'])
    np.testing.assert_array_equal(r['phone_times'], train_records[i]['phone_times'])
    assert r['text'] == train_records[i]['text'] and r['speaker'] == train_records[i]['speaker']
  assert not np.array_equal(train_records[0]['audio'], train_records[1]['audio'])
  other_seed = synthetic.SyntheticSpeechSource(_cfg(seed=8), 'train')
  assert not np.array_equal(other_seed[0]['audio'], train_records[0]['audio'])


def test_phone_times_sorted_inside_segment_and_cover_the_energy(train_records):
  for r in train_records:
    t = r['phone_times'].astype(np.float64)
    assert np.all(t[:, 1] > t[:, 0])
    assert np.all(t[1:, 0] >= t[:-1, 1] - 1e-6)  # ordered, non-overlapping
    assert t[0, 0] >= 0.1 - 1e-6 and t[-1, 1] <= SEGMENT - synthetic._TAIL_SECONDS + 1e-4
    audio = r['audio'].astype(np.float64)
    inside = np.zeros(len(audio), bool)
    inside[int((t[0, 0] - 0.005) * SR) : int((t[-1, 1] + 0.03) * SR)] = True
    energy_outside = np.sum(audio[~inside] ** 2)
    assert energy_outside < 1e-4 * np.sum(audio[inside] ** 2)
    # The labelled span is not silent at its start and end (first/last 100 ms carry energy).
    head = audio[int(t[0, 0] * SR) : int((t[0, 0] + 0.1) * SR)]
    tail = audio[int((t[-1, 1] - 0.1) * SR) : int(t[-1, 1] * SR)]
    floor = np.sqrt(np.mean(audio[~inside] ** 2))
    assert np.sqrt(np.mean(head**2)) > 30 * floor and np.sqrt(np.mean(tail**2)) > 30 * floor


def test_speaking_rate(train_records):
  rates = [
    len(r['phones']) / (r['phone_times'][-1, 1] - r['phone_times'][0, 0]) for r in train_records
  ]
  assert 10.0 <= np.mean(rates) <= 14.0, rates


def test_slowest_speaker_longest_sentence_fits():
  slow = dataclasses.replace(synthetic.make_speaker(0), duration_scale=1.6)
  phones = ['s', 't', 'r', 'ay', 'k', 'ih', 'ng'] * 6  # about 4.5 s nominal
  audio, times = synthetic.synthesize(
    phones, slow, np.random.default_rng(0), SR, word_index=np.repeat(np.arange(6), 7)
  )
  assert audio.shape == (int(SR * SEGMENT),)
  assert times[-1, 1] <= SEGMENT - synthetic._TAIL_SECONDS + 1e-4


def test_splits_are_disjoint(train, heldout):
  lex = train.lexicon
  assert len(lex.train) == synthetic.NUM_TRAIN_WORDS
  assert len(lex.heldout) == synthetic.NUM_HELDOUT_WORDS
  train_phones = {w.phones for w in lex.train}
  heldout_phones = {w.phones for w in lex.heldout}
  assert not train_phones & heldout_phones
  assert not {w.text for w in lex.train} & {w.text for w in lex.heldout}
  heldout_texts = {w.text for w in lex.heldout}
  train_texts = {w.text for w in lex.train}
  for s in heldout.sentences:
    assert all(w.text in heldout_texts for w in s.words)
  for s in train.sentences:
    assert all(w.text in train_texts for w in s.words)

  def params(s):
    return dataclasses.astuple(dataclasses.replace(s, name=''))

  assert not {params(s) for s in train.speakers} & {params(s) for s in heldout.speakers}
  assert len({s.name for s in train.speakers + heldout.speakers}) == 12
  assert synthetic.make_lexicon(7) == lex
  assert synthetic.make_lexicon(8) != lex


def test_heldout_grid_same_sentence_across_speakers(heldout):
  sentence = 2
  records = [heldout[heldout.index_of(s, sentence)] for s in range(heldout.num_speakers)]
  assert {r['content_id'] for r in records} == {'heldout-s0002'}
  assert len({r['text'] for r in records}) == 1
  assert len({tuple(r['phones']) for r in records}) == 1
  assert [r['speaker_index'] for r in records] == list(range(4))
  assert all(r['sentence_index'] == sentence for r in records)
  assert synthetic.heldout_index(3, 5, 6) == 23 == heldout.index_of(3, 5)
  assert heldout[23]['speaker_index'] == 3 and heldout[23]['sentence_index'] == 5
  assert len({r['speaker'] for r in records}) == 4
  with pytest.raises(IndexError):
    heldout.index_of(4, 0)


def test_picklable(train, train_records):
  clone = pickle.loads(pickle.dumps(train))
  np.testing.assert_array_equal(clone[2]['audio'], train_records[2]['audio'])
  record = pickle.loads(pickle.dumps(train_records[0]))
  np.testing.assert_array_equal(record['audio'], train_records[0]['audio'])


def _frames_of(record, phones, n_fft=512, hop=160):
  """Frame indices (librosa, center=True) whose centre lies in the middle of a phone in `phones`."""
  frames = []
  for p, (t0, t1) in zip(record['phones'], record['phone_times']):
    if p in phones:
      d = t1 - t0
      lo, hi = int(np.ceil((t0 + 0.25 * d) * SR / hop)), int((t1 - 0.25 * d) * SR / hop)
      frames += list(range(lo, hi + 1))
  return np.array(frames, int)


def test_speech_like_not_a_tone(train_records):
  vowels = set(synthetic.VOWELS)
  fricatives = {'s', 'sh', 'f', 'th'}
  vowel_flat, fric_flat, peak_counts = [], [], []
  for r in train_records:
    spec = np.abs(librosa.stft(r['audio'], n_fft=512, hop_length=160)) ** 2  # [257, frames]
    flat = librosa.feature.spectral_flatness(S=spec, power=1.0)[0]
    fv, ff = _frames_of(r, vowels), _frames_of(r, fricatives)
    vowel_flat += list(flat[fv])
    fric_flat += list(flat[ff])
    for f in fv[::5]:
      db = 10 * np.log10(spec[:, f] + 1e-12)
      local_max = (db[1:-1] > db[:-2]) & (db[1:-1] > db[2:]) & (db[1:-1] > db.max() - 40)
      peak_counts.append(int(local_max.sum()))
  assert fric_flat and vowel_flat
  # Fricatives are noise-like, vowels harmonic: flatness differs by more than 10x.
  assert np.median(fric_flat) > 10 * np.median(vowel_flat)
  assert np.median(vowel_flat) < 0.05
  # Vowel frames have many spectral peaks (harmonics under formants), never a single line.
  assert np.min(peak_counts) >= 5
  # Voiced (periodic) and unvoiced frames are both present in every utterance.
  for r in train_records:
    _, voiced, _ = _yin_voicing(r['audio'])
    assert 0.2 < voiced.mean() < 0.9


def _yin_voicing(audio):
  f0 = librosa.yin(
    audio, fmin=60, fmax=400, sr=SR, frame_length=1024, hop_length=160, trough_threshold=0.1
  )
  rms = librosa.feature.rms(y=audio, frame_length=1024, hop_length=160)[0]
  # yin returns a value for every frame; keep frames with energy and a stable estimate.
  stable = np.abs(np.diff(f0, prepend=f0[0])) < 0.05 * f0
  voiced = (rms > 0.05 * rms.max()) & stable
  return f0, voiced, rms


def test_speakers_differ_in_f0(heldout):
  f0_means = [s.f0_mean for s in heldout.speakers]
  low, high = int(np.argmin(f0_means)), int(np.argmax(f0_means))
  assert f0_means[high] > 1.2 * f0_means[low]  # precondition on the draws of seed 7
  measured = []
  for spk in (low, high):
    f0, voiced, _ = _yin_voicing(heldout[heldout.index_of(spk, 0)]['audio'])
    measured.append(np.median(f0[voiced]))
  for spk, m in zip((low, high), measured):
    assert abs(m / f0_means[spk] - 1) < 0.2, (m, f0_means[spk])
  ratio = f0_means[high] / f0_means[low]
  assert abs(measured[1] / measured[0] / ratio - 1) < 0.1, (measured, ratio)


@pytest.mark.parametrize('fast', [True, False])
def test_time_varying_filter_is_the_exact_recursion(fast, monkeypatch):
  monkeypatch.setattr(dsp, 'FAST_FILTER_OK', fast and dsp.FAST_FILTER_OK)
  rng = np.random.default_rng(0)
  num_blocks, block, order = 12, 8, 4
  a = np.zeros((num_blocks, order + 1))
  b = rng.normal(size=(num_blocks, 3))
  for i in range(num_blocks):
    r, th = 0.8 + 0.15 * rng.random(2), rng.random(2) * 3
    a[i] = np.convolve(
      [1, -2 * r[0] * np.cos(th[0]), r[0] ** 2], [1, -2 * r[1] * np.cos(th[1]), r[1] ** 2]
    )
  a[4:8], b[4:8] = a[4], b[4]  # a run of identical blocks
  x = rng.normal(size=num_blocks * block)
  y = dsp.time_varying_filter(b, a, x, block, 0, num_blocks)
  ref = np.zeros_like(x)
  for t in range(len(x)):
    i = t // block
    ref[t] = sum(b[i, j] * x[t - j] for j in range(3) if t >= j) - sum(
      a[i, j] * ref[t - j] for j in range(1, order + 1) if t >= j
    )
  np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())


def test_other_sample_rate():
  source = synthetic.SyntheticSpeechSource(_cfg(), 'heldout', sample_rate=8000, segment_seconds=2.5)
  r = source[1]
  assert r['audio'].shape == (20_000,) and r['sample_rate'] == 8000
  assert np.all(np.isfinite(r['audio'])) and 0.3 <= np.abs(r['audio']).max() <= 0.9
  assert r['phone_times'][-1, 1] <= 2.5


def test_errors():
  with pytest.raises(ValueError, match='split'):
    synthetic.SyntheticSpeechSource(_cfg(), 'valid')
  with pytest.raises(KeyError, match='num_heldout_sentences'):
    synthetic.SyntheticSpeechSource(
      dict(
        seed=0, num_train_speakers=2, num_heldout_speakers=2, num_train_sentences=2, train_size=3
      ),
      'train',
    )
  with pytest.raises(ValueError, match='train_size'):
    synthetic.SyntheticSpeechSource(_cfg(train_size=0), 'train')
  source = synthetic.SyntheticSpeechSource(_cfg(), 'train')
  with pytest.raises(IndexError):
    source[50]
  with pytest.raises(TypeError):
    source['0']
  spk = synthetic.make_speaker(1)
  with pytest.raises(ValueError, match='unknown phones'):
    synthetic.synthesize(['aa', 'qq'], spk, np.random.default_rng(0))
  with pytest.raises(ValueError, match='no vowel'):
    synthetic.synthesize(['s', 't'], spk, np.random.default_rng(0))


def test_public_lfilter_fallback_gives_the_same_audio(monkeypatch, heldout):
  fast = heldout[3]['audio']
  monkeypatch.setattr(dsp, 'FAST_FILTER_OK', False)
  np.testing.assert_array_equal(heldout[3]['audio'], fast)


def test_parallel_record_is_another_speaker_reading_the_same_sentence(train, train_records):
  record = train_records[0]
  a = train.parallel_record(record, np.random.default_rng(7))
  b = train.parallel_record(record, np.random.default_rng(7))
  np.testing.assert_array_equal(a['audio'], b['audio'])  # deterministic given rng
  assert a['speaker_index'] != record['speaker_index'] and a['speaker'] != record['speaker']
  assert a['content_id'] == record['content_id'] and a['phones'] == record['phones']
  assert a['audio'].shape == record['audio'].shape
  assert not np.allclose(a['audio'], record['audio'])
  others = {
    train.parallel_record(record, np.random.default_rng(s))['speaker_index'] for s in range(30)
  }
  assert record['speaker_index'] not in others and len(others) > 1


def test_validation_and_test_splits_are_disjoint_from_each_other_and_from_train():
  cfg = _cfg(num_validation_speakers=3, num_validation_sentences=5)
  splits = {s: synthetic.SyntheticSpeechSource(cfg, s) for s in ('train', 'validation', 'test')}
  assert synthetic.SyntheticSpeechSource(cfg, 'heldout').split == 'test'
  assert len(splits['validation']) == 3 * 5 and splits['validation'].is_grid
  words = {s: {w.text for w in src.words} for s, src in splits.items()}
  texts = {s: {x.text for x in src.sentences} for s, src in splits.items()}
  for a, b in (('train', 'validation'), ('train', 'test'), ('validation', 'test')):
    assert not words[a] & words[b], (a, b)
    assert not texts[a] & texts[b], (a, b)

    # Speakers are independent draws: no two splits share a voice.
    def voices(s):
      return {(sp.f0_mean, sp.formant_scale) for sp in splits[s].speakers}

    assert not voices(a) & voices(b), (a, b)
  rec = splits['validation'][splits['validation'].index_of(2, 4)]
  assert rec['id'] == 'validation-spk002-s0004' and rec['content_id'] == 'validation-s0004'
  assert set(rec['text'].split()) <= words['validation']
  with pytest.raises(ValueError, match='split must be one of'):
    synthetic.SyntheticSpeechSource(cfg, 'dev')


def test_validation_sizes_default_to_the_test_split_for_old_configs():
  cfg = _cfg()  # written before the validation split: no num_validation_* keys
  assert 'num_validation_speakers' not in cfg
  val = synthetic.SyntheticSpeechSource(cfg, 'validation')
  assert (val.num_speakers, val.num_sentences) == (
    cfg.num_heldout_speakers,
    cfg.num_heldout_sentences,
  )


def test_train_grid_is_a_fixed_small_corpus():
  cfg = _cfg(train_grid=True, num_train_speakers=3, num_train_sentences=4)
  grid = synthetic.SyntheticSpeechSource(cfg, 'train')
  assert len(grid) == 12 and grid.is_grid
  rec = grid[grid.index_of(1, 2)]
  assert (rec['speaker_index'], rec['sentence_index']) == (1, 2)
  assert rec['id'] == 'train-spk001-s0002' and rec['content_id'] == 'train-s0002'
  np.testing.assert_array_equal(rec['audio'], grid[6]['audio'])  # fixed recordings
  assert {(r['speaker_index'], r['sentence_index']) for r in (grid[i] for i in range(12))} == {
    (s, t) for s in range(3) for t in range(4)
  }
  # The speakers and sentences are those of the drawn train split of the same config.
  drawn = synthetic.SyntheticSpeechSource(
    _cfg(num_train_speakers=3, num_train_sentences=4), 'train'
  )
  assert [s.name for s in drawn.speakers] == [s.name for s in grid.speakers]
  assert [s.text for s in drawn.sentences] == [s.text for s in grid.sentences]
