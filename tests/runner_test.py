"""Tests for pairalign_jax.evaluation.runner: eval-set construction and the metrics of a report.

A small fake corpus: `NUM_SENTENCES` sentences, each a sequence of tones ("phones"), spoken by
`NUM_SPEAKERS` speakers (amplitude and onset differ); index = speaker * NUM_SENTENCES + sentence,
as in the synthetic held-out split.
"""

import numpy as np
import pytest

from pairalign_jax import token_strings
from pairalign_jax.data import bad_input
from pairalign_jax.evaluation import runner

SR = 8000
SEGMENT_SECONDS = 1.0
NUM_SENTENCES = 6
NUM_SPEAKERS = 3
FREQS = np.array([300, 500, 700, 900, 1100, 1300, 1500, 1700], np.float64)
PHONE_SECONDS = 0.15
BLOCK = 400  # 50 ms tokenizer frames


def _sentence_phones(sentence):
  rng = np.random.default_rng(100 + sentence)
  return rng.permutation(len(FREQS))[:5]  # 5 distinct tones: no collapsed repeats


class FakeSource:
  """Random-access source of record dicts (the data/ contract)."""

  def __len__(self):
    return NUM_SPEAKERS * NUM_SENTENCES

  def __getitem__(self, index):
    speaker, sentence = divmod(int(index), NUM_SENTENCES)
    phones = _sentence_phones(sentence)
    onset = 0.1 + 0.005 * speaker
    audio = np.zeros(int(SEGMENT_SECONDS * SR), np.float32)
    times = []
    for k, p in enumerate(phones):
      s = onset + k * PHONE_SECONDS
      i0, i1 = int(round(s * SR)), int(round((s + PHONE_SECONDS) * SR))
      t = np.arange(i1 - i0) / SR
      audio[i0:i1] = (0.2 + 0.2 * speaker) * np.sin(2 * np.pi * FREQS[p] * t)
      times.append((s, s + PHONE_SECONDS))
    return {
      'audio': audio,
      'sample_rate': SR,
      'id': f'spk{speaker}-s{sentence}',
      'speaker': f'spk{speaker}',
      'content_id': f's{sentence}',
      'phones': [f'p{p}' for p in phones],
      'phone_times': np.array(times, np.float32),
    }


def tone_tokenizer(waves, sample_rate):
  """One token per 50 ms block with energy: the index of the nearest tone; runs collapsed."""
  assert sample_rate == SR
  tokens, times = [], []
  n_blocks = waves.shape[1] // BLOCK
  blocks = waves[:, : n_blocks * BLOCK].reshape(waves.shape[0], n_blocks, BLOCK)
  spec = np.abs(np.fft.rfft(blocks, axis=-1))
  peak = spec.argmax(-1) * SR / BLOCK  # [N, blocks] Hz
  loud = (blocks**2).mean(-1) > 1e-3
  for row_peak, row_loud in zip(peak, loud):
    toks, tms = [], []
    for b, (f, on) in enumerate(zip(row_peak, row_loud)):
      if not on:
        continue
      code = int(np.abs(FREQS - f).argmin())
      if toks and code == toks[-1] and tms[-1][1] == b - 1:
        tms[-1][1] = b
      else:
        toks.append(code)
        tms.append([b, b])
    tokens.append(toks)
    times.append(np.array([(a + b + 1) / 2 * BLOCK / SR for a, b in tms], np.float32))
  return token_strings.TokenizerOutput(
    tokens=tokens, times=times, terminated=np.ones(len(tokens), bool)
  )


def collapsed_tokenizer(waves, sample_rate):
  """Everything maps to the same string (many-to-one collapse)."""
  return token_strings.TokenizerOutput(tokens=[[3, 3]] * waves.shape[0])


def _eval_set(**kw):
  args = dict(
    num_items=4,
    queries_per_item=2,
    seed=0,
    sample_rate=SR,
    segment_seconds=SEGMENT_SECONDS,
    sweep_items=3,
    sweep_shifts_ms=(0, 10, 20),
  )
  args.update(kw)
  return runner.build_eval_set(FakeSource(), **args)


def test_build_eval_set_structure_and_determinism():
  es = _eval_set()
  assert es.num_archive == 4 and es.num_queries == 8
  assert es.waves.shape == (12, SR) and es.waves.dtype == np.float32
  assert es.sweep_waves.shape == (3, SR + 160)
  # Archive: the first speaker of each item; queries: other speakers of the same item.
  assert all(s == 'spk0' for s in es.speakers[:4])
  assert all(s != 'spk0' for s in es.speakers[4:])
  for q, t in enumerate(es.query_targets):
    assert es.content_ids[4 + q] == es.content_ids[t]
  assert len(set(es.content_ids[:4])) == 4
  np.testing.assert_array_equal(es.waves[0], FakeSource()[es.source_indices[0]]['audio'])
  assert es.phones[5] is not None and es.phone_times[5].shape == (5, 2)
  again = _eval_set()
  np.testing.assert_array_equal(again.waves, es.waves)
  np.testing.assert_array_equal(again.source_indices, es.source_indices)
  other = _eval_set(seed=1)
  assert other.source_indices.tolist() != es.source_indices.tolist()


class SourceWithBadRecords(FakeSource):
  """FakeSource whose record `silent` is all zeros, `nan` non-finite and `unreadable` raises the
  data sources' BadAudioError on read."""

  def __init__(self, silent, nan, unreadable):
    self.silent, self.nan, self.unreadable = silent, nan, unreadable

  def __getitem__(self, index):
    if index == self.unreadable:
      raise bad_input.BadAudioError(f'/corpus/{index}.wav', 'unreadable', 'not a sound file')
    record = super().__getitem__(index)
    if index == self.silent:
      record['audio'] = np.zeros_like(record['audio'])
    if index == self.nan:
      record['audio'][10] = np.nan
    return record


def test_bad_records_are_logged_and_left_out_of_the_eval_set(caplog):
  """A user's evaluation split with a silent, a non-finite and an unreadable file: each is logged
  with its reason and left out (never a crash at the end of training, never a zero row); the set
  is the one drawn from the good records only, the same on every call."""
  good = _eval_set(archive_rotations=-1)
  used = sorted(set(good.source_indices.tolist()))
  silent, nan, unreadable = used[0], used[4], used[-1]  # an archive and two other rows
  args = dict(num_items=4, queries_per_item=2, seed=0, sample_rate=SR)
  args.update(segment_seconds=SEGMENT_SECONDS, sweep_items=3, sweep_shifts_ms=(0.0, 10.0, 20.0))
  args['archive_rotations'] = -1
  with caplog.at_level('WARNING'):
    es = runner.build_eval_set(SourceWithBadRecords(silent, nan, unreadable), **args)
  bad = {silent, nan, unreadable}
  assert not bad & set(es.source_indices.tolist())
  assert np.isfinite(es.waves).all() and (np.abs(es.waves).max(axis=1) > 0).all()
  log = caplog.text
  assert 'silent' in log and 'nonfinite' in log and '/corpus/' in log
  assert '3 bad record(s) left out' in log
  for q, t in enumerate(es.rotations[0].query_targets):  # queries still read their own item
    assert es.content_ids[es.rotations[0].query_rows[q]] == es.content_ids[t]
  again = runner.build_eval_set(SourceWithBadRecords(silent, nan, unreadable), **args)
  np.testing.assert_array_equal(again.source_indices, es.source_indices)
  np.testing.assert_array_equal(again.waves, es.waves)
  # Two items read twice each and 14 single readings: a bad one leaves too few items.
  ids = ['a', 'a', 'b', 'b'] + [f'u{i}' for i in range(4, len(FakeSource()))]
  with pytest.raises(ValueError, match=r'1 content items .*\(1 bad records left out\)'):
    runner.build_eval_set(SourceWithBadRecords(*range(3)), **{**args, 'content_ids': ids})


def test_build_eval_set_content_ids_and_augment():
  ids = [f's{i % NUM_SENTENCES}' for i in range(len(FakeSource()))]
  es = _eval_set(content_ids=ids)
  np.testing.assert_array_equal(es.source_indices, _eval_set().source_indices)
  # Unique content (every record its own item): needs augment_fn, then queries are augmented copies.
  unique = [str(i) for i in range(len(FakeSource()))]
  with pytest.raises(ValueError, match='realizations'):
    _eval_set(content_ids=unique)
  es = _eval_set(content_ids=unique, augment_fn=lambda w, rng: 0.5 * w + 0 * rng.random())
  assert es.num_queries == 8
  for q, t in enumerate(es.query_targets):
    np.testing.assert_allclose(es.waves[4 + q], 0.5 * es.waves[t])
    assert es.phones[4 + q] is None


def test_synthetic_heldout_content_ids_without_synthesis():
  synthetic = pytest.importorskip('pairalign_jax.data.synthetic')
  cfg = {
    'seed': 3,
    'num_train_speakers': 2,
    'num_heldout_speakers': 2,
    'num_train_sentences': 3,
    'num_heldout_sentences': 3,
    'train_size': 4,
  }
  src = synthetic.SyntheticSpeechSource(cfg, 'heldout')
  ids = runner._content_ids(src, None)
  assert len(ids) == 6 and ids[0] == ids[3] != ids[1]
  for i in (0, 4):
    assert ids[i] == src[i]['content_id']


def test_evaluate_tokenizers_known_values():
  es = _eval_set()
  rep = runner.evaluate_tokenizers(
    {'pairalign': tone_tokenizer, 'vq': collapsed_tokenizer},
    es,
    codebook_sizes={'pairalign': 8, 'vq': 4},
    batch_size=5,
    archive_sizes=(2, 4),
    example_features_fn=lambda w: np.abs(w[:, :800].reshape(1, 20, 40)),
    example_index=1,
  )
  pa, vq = rep['tokenizers']['pairalign'], rep['tokenizers']['vq']
  # The tone tokenizer reads the phones exactly: 5 tokens per segment, perfect retrieval.
  assert pa['lengths'] == [5] * 12
  assert pa['tokens_per_second'] == pytest.approx(5.0)
  assert pa['recall_at_1'] == 1.0 and pa['mrr'] == 1.0 and pa['cross_view_ned'] == 0.0
  assert pa['unique_ratio'] == 1.0 and pa['termination_rate'] == 1.0
  assert pa['archive_tokens'] == 20 and pa['num_queries'] == 8
  assert pa['phone']['token_purity'] == 1.0 and pa['phone']['nmi'] > 0.9
  assert pa['sweep']['normalized_edit_distance'] == [0.0, 0.0, 0.0]
  assert pa['recall_vs_archive_size']['sizes'] == [2, 4]
  # The collapsed tokenizer: chance-level retrieval, one string for all items.
  assert vq['recall_at_1'] == pytest.approx(1 / 4)
  assert vq['unique_ratio'] == pytest.approx(1 / 4)
  assert vq['vocab_usage'] == pytest.approx(1 / 4)
  assert vq['termination_rate'] is None and vq['phone'] is None
  assert vq['ned_gap'] == 0.0
  h = rep['headline']
  assert h['archive_tokens_ratio'] == pytest.approx(20 / 8)
  assert h['recall_at_1_difference'] == pytest.approx(0.75)
  ex = rep['example']
  assert ex['log_mel'].shape == (20, 40) and ex['tokens']['vq'] == [3, 3]
  assert len(ex['times']['pairalign']) == 5 and ex['times']['vq'] is None
  assert rep['eval_set']['num_queries'] == 8
  assert 'ned_to_targets' not in h and 'edits_to_targets' not in h  # no targets tokenizer


def test_ned_to_targets_compares_the_primary_with_its_targets_on_the_same_segment():
  es = _eval_set()

  def dropped_first(waves, sample_rate):  # the tone strings without their first token
    out = tone_tokenizer(waves, sample_rate)
    return token_strings.TokenizerOutput(tokens=[t[1:] for t in out.tokens])

  rep = runner.evaluate_tokenizers(
    {'pairalign': tone_tokenizer, 'vq': collapsed_tokenizer, 'vq_groups': dropped_first},
    es,
    codebook_sizes=8,
    batch_size=5,
  )
  assert rep['headline']['ned_to_targets'] == pytest.approx(1 / 5)  # one edit in 5 tokens
  edits = rep['headline']['edits_to_targets']  # the targets lack the first token: one insertion
  n = edits['reference_tokens']
  assert edits['hypothesis_tokens'] == n * 5 / 4
  assert edits['insertions'] == pytest.approx(edits['hypothesis_tokens'] / 5 / n)
  assert edits['substitutions'] == 0.0 and edits['deletions'] == 0.0
  rep = runner.evaluate_tokenizers(
    {'pairalign': tone_tokenizer, 'vq_groups': tone_tokenizer}, es, codebook_sizes=8
  )
  assert rep['headline']['ned_to_targets'] == 0.0


def test_tokenizer_contract_errors():
  es = _eval_set()

  def bad_count(w, sr):
    return token_strings.TokenizerOutput(tokens=[[1]])

  with pytest.raises(ValueError, match='strings for'):
    runner.evaluate_tokenizers({'x': bad_count}, es, codebook_sizes=4)

  def bad_times(w, sr):
    return token_strings.TokenizerOutput(
      tokens=[[1, 2]] * w.shape[0], times=[np.zeros(1)] * w.shape[0]
    )

  with pytest.raises(ValueError, match='times for 2 tokens'):
    runner.evaluate_tokenizers({'x': bad_times}, es, codebook_sizes=4)


def test_default_archive_sizes():
  assert runner.default_archive_sizes(100) == [2, 5, 10, 20, 50, 100]
  assert runner.default_archive_sizes(30) == [2, 5, 10, 20, 30]
  assert runner.default_archive_sizes(2) == [2]


def test_archive_rotations_cover_every_speaker_once():
  es = _eval_set(archive_rotations=-1, queries_per_item=NUM_SPEAKERS - 1)
  assert len(es.rotations) == NUM_SPEAKERS
  # Every distinct segment is tokenized once: 4 items x 3 speakers.
  assert es.waves.shape[0] == 4 * NUM_SPEAKERS and es.total_queries == 4 * NUM_SPEAKERS * 2
  for r, rot in enumerate(es.rotations):
    assert {es.speakers[i] for i in rot.archive_rows} == {f'spk{r}'}
    assert f'spk{r}' not in {es.speakers[i] for i in rot.query_rows}
    for q, t in zip(rot.query_rows, rot.query_targets):
      assert es.content_ids[q] == es.content_ids[rot.archive_rows[t]]
  # Rotation 0 keeps the single-archive layout: archive rows [0, A), queries next.
  np.testing.assert_array_equal(es.rotations[0].archive_rows, np.arange(4))
  np.testing.assert_array_equal(es.rotations[0].query_rows, np.arange(4, 12))
  # Same rotation-0 segments as the single-archive set of the same seed.
  single = _eval_set(queries_per_item=NUM_SPEAKERS - 1)
  np.testing.assert_array_equal(single.source_indices, es.source_indices[:12])
  with pytest.raises(ValueError, match='archive_rotations'):
    _eval_set(archive_rotations=0)
  with pytest.raises(ValueError, match='sweep_items'):
    _eval_set(sweep_items=0)


def test_rotations_pool_queries_and_keep_per_item_counts():
  es = _eval_set(archive_rotations=-1, queries_per_item=2, num_items=-1)
  assert es.num_archive == NUM_SENTENCES

  # A tokenizer that reads the speaker only for speaker 2: its strings differ from the others'.
  def speaker_marked(waves, sample_rate):
    out = tone_tokenizer(waves, sample_rate)
    loud = np.abs(waves).max(1) > 0.5  # speaker 2's amplitude is 0.6
    return token_strings.TokenizerOutput(
      tokens=[t + [7, 7, 7, 7, 7, 7] if is_loud else t for t, is_loud in zip(out.tokens, loud)]
    )

  rep = runner.evaluate_tokenizers(
    {'pairalign': speaker_marked, 'vq': tone_tokenizer}, es, codebook_sizes=8, archive_sizes=(2,)
  )
  pa, vq = rep['tokenizers']['pairalign'], rep['tokenizers']['vq']
  assert pa['num_rotations'] == 3 and pa['num_queries'] == NUM_SENTENCES * 3 * 2
  assert vq['recall_at_1'] == 1.0 and vq['recall_at_1_ci95'] == [1.0, 1.0]
  assert pa['per_item']['queries'] == [6.0] * NUM_SENTENCES
  # Archive tokens: 5 per string, speaker 2's archive (rotation 2) 11 per string.
  assert pa['rotations']['archive_tokens'] == [30.0, 30.0, 66.0]
  assert pa['archive_tokens'] == pytest.approx(42.0)
  assert pa['per_item']['archive_tokens'] == [7.0] * NUM_SENTENCES
  h = rep['headline']
  assert h['archive_tokens_ratio'] == pytest.approx(42 / 30)
  # Every item's archive ratio is 7/5: the interval collapses onto it.
  assert h['archive_tokens_ratio_ci95'] == pytest.approx([1.4, 1.4])
  lo, hi = h['recall_at_1_difference_ci95']
  assert lo <= h['recall_at_1_difference'] <= hi <= 0.0
  assert set(h['comparisons']) == {'vq'}
  assert rep['eval_set']['num_rotations'] == 3


def test_pooled_recall_at_1_equals_the_reports_recall_and_counts_ties_at_their_expected_value():
  es = _eval_set(archive_rotations=-1, queries_per_item=2, num_items=-1)

  # Speaker 1's readings of sentences 0 and 1 are one string: their queries tie in two archives.
  def half_confused(waves, sample_rate):
    out = tone_tokenizer(waves, sample_rate)
    return token_strings.TokenizerOutput(
      tokens=[
        [0, 1] if es.speakers[i] == 'spk1' and es.content_ids[i] in ('s0', 's1') else t
        for i, t in enumerate(out.tokens)
      ]
    )

  report, out = runner.evaluate_tokenizer(half_confused, es, codebook_size=8, archive_sizes=(2,))
  recall = runner.pooled_recall_at_1(out.tokens, es.rotations)
  assert recall == pytest.approx(report['recall_at_1'])
  assert 0.5 < recall < 1.0
  for r, rotation in enumerate(es.rotations):  # and each rotation's
    assert runner.pooled_recall_at_1(out.tokens, [rotation]) == pytest.approx(
      report['rotations']['recall_at_1'][r]
    )
  # Speaker 1's two sentences tie with each other: ties count as misses when pessimistic, as
  # hits when optimistic, and at their expected value (the report's convention) in between.
  pessimistic = runner.pooled_recall_at_1(out.tokens, es.rotations, 'pessimistic')
  optimistic = runner.pooled_recall_at_1(out.tokens, es.rotations, 'optimistic')
  assert pessimistic < recall < optimistic
  with pytest.raises(ValueError, match='at least one rotation'):
    runner.pooled_recall_at_1(out.tokens, [])
