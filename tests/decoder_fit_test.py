"""evaluation/decoder_fit.py: run lengths from run centres, the summaries on hand-made logits and
strings, and the readings on the tiny checkpoint of tokenizer_test.py (the own-times path scores
a string exactly as `Tokenizer.score` does)."""

import json

import numpy as np
import pytest
import tokenizer_test

from pairalign_jax import checkpointing
from pairalign_jax import token_strings
from pairalign_jax import vocab as vocab_lib
from pairalign_jax.evaluation import decoder_fit
from pairalign_jax.tokenizer import Tokenizer

FS = 0.02  # encoder frame seconds


def test_run_frames_from_run_centres():
  # Runs of 2, 3, 1 and 9 frames from frame 0: centres 1, 3.5, 5.5, 10.5 frames.
  times = np.array([1.0, 3.5, 5.5, 10.5]) * FS
  np.testing.assert_array_equal(decoder_fit.run_frames(times, FS), [2, 3, 1, 9])
  assert decoder_fit.run_frames([], FS).shape == (0,)
  with pytest.raises(ValueError, match='tile'):
    decoder_fit.run_frames(np.array([1.0, 1.2]) * FS, FS)  # the second run would be 0 frames
  assert [decoder_fit.bucket(r) for r in (1, 7, 8, 30)] == ['1', '7', '8+', '8+']
  # The same runs from their ends (a decoder trained with targets.time_anchor='end').
  ends = np.array([1.5, 4.5, 5.5, 14.5]) * FS  # the centres of the runs' last frames
  np.testing.assert_array_equal(decoder_fit.run_frames(ends, FS, 'end'), [2, 3, 1, 9])
  with pytest.raises(ValueError, match='ends of runs that tile'):
    decoder_fit.run_frames(np.array([1.5, 1.5]) * FS, FS, 'end')


def test_target_arrays_add_eos_pad_and_cut_at_max_len():
  vocab = vocab_lib.Vocab(8)
  tokens, times, lengths = decoder_fit.target_arrays(
    [[1, 2], [3, 4, 5, 6, 7]], [[0.1, 0.2], [0.1, 0.2, 0.3, 0.4, 0.5]], 4, vocab
  )
  np.testing.assert_array_equal(lengths, [2, 3])
  np.testing.assert_array_equal(tokens, [[1, 2, vocab.eos, vocab.pad], [3, 4, 5, vocab.eos]])
  np.testing.assert_allclose(times, [[0.1, 0.2, 0, 0], [0.1, 0.2, 0.3, 0]])


def test_teacher_forced_summary_by_run_length():
  vocab = vocab_lib.Vocab(4)
  tokens = np.array([[1, 2, vocab.eos], [3, vocab.eos, vocab.pad]])
  lengths = np.array([2, 1])
  runs = [np.array([2, 9]), np.array([2])]
  logits = np.zeros((2, 3, vocab.size), np.float32)
  logits[0, 0, 1] = 5.0  # right (run of 2)
  logits[0, 1, 0] = 5.0  # wrong (run of 9)
  logits[0, 2, vocab.eos] = 5.0  # right (EOS)
  logits[1, 0, 2] = 5.0  # wrong (run of 2)
  logits[1, 1, vocab.eos] = 5.0  # right (EOS)
  logits[1, 2, 0] = 99.0  # PAD: never scored
  got = decoder_fit.teacher_forced_summary(logits, tokens, lengths, runs)
  assert got['positions'] == 5 and got['accuracy'] == pytest.approx(3 / 5)
  by = got['by_run_frames']
  assert list(by) == ['2', '8+', 'eos']
  assert by['2']['accuracy'] == 0.5 and by['2']['count'] == 2
  assert by['8+']['accuracy'] == 0.0 and by['eos']['accuracy'] == 1.0
  # NLL of a right answer at logit 5 among V - 1 zeros: log(e^5 + V - 1) - 5.
  right = np.log(np.exp(5.0) + vocab.size - 1) - 5.0
  assert by['eos']['nll'] == pytest.approx(right, rel=1e-5)
  assert by['8+']['nll'] == pytest.approx(np.log(np.exp(5.0) + vocab.size - 1), rel=1e-5)
  assert 'time_error_seconds' not in got
  error = np.array([[0.01, -0.03, 9.0], [0.02, 9.0, 9.0]])  # EOS / PAD positions not counted
  timed = decoder_fit.teacher_forced_summary(logits, tokens, lengths, runs, time_error=error)
  assert timed['time_error_seconds'] == pytest.approx(0.02)


def test_frame_agreement_before_and_after_renaming():
  """Hand-made labelings: a pure renaming agrees fully after renaming; unpaired ids disagree."""
  targets = np.array([[0, 0, 1, 1, 2, 2]])
  renamed = np.array([[2, 2, 0, 0, 1, 1]])
  got = decoder_fit.frame_agreement(renamed, targets)
  assert got == {'frame_agreement': 0.0, 'frame_agreement_after_renaming': 1.0}
  # own splits target id 0 into two ids: one of them is left without a partner.
  split = np.array([[3, 4, 1, 1, 2, 2]])
  got = decoder_fit.frame_agreement(split, targets)
  assert got['frame_agreement'] == pytest.approx(4 / 6)
  assert got['frame_agreement_after_renaming'] == pytest.approx(5 / 6)
  with pytest.raises(ValueError, match='frames against'):
    decoder_fit.frame_agreement(split[:, :3], targets)


def test_edits_by_run_length():
  refs = [[1, 2, 3, 4], [5, 6]]
  runs = [np.array([2, 2, 3, 9]), np.array([2, 9])]
  hyps = [[1, 3, 7], [5, 6, 6]]  # ref 1: 2 deleted, 4 -> 7; ref 2: one 6 inserted
  got = decoder_fit.edits_by_run(hyps, refs, runs)
  assert got['target_tokens'] == 6 and got['written_tokens'] == 6
  assert got['deleted'] == pytest.approx(1 / 6) and got['substituted'] == pytest.approx(1 / 6)
  assert got['inserted'] == pytest.approx(1 / 6)
  assert got['written_repeats'] == pytest.approx(1 / 6)  # the second 6
  assert got['inserted_repeats'] == 1.0  # the one insertion repeats its predecessor
  other = decoder_fit.edits_by_run([[1, 2, 3, 4], [5, 7, 6]], refs, runs)  # 7 from elsewhere
  assert other['inserted'] == pytest.approx(1 / 6) and other['inserted_repeats'] == 0.0
  assert other['written_repeats'] == 0.0
  by = got['by_run_frames']
  assert by['2'] == {'share_of_targets': 0.5, 'deleted': pytest.approx(1 / 3), 'substituted': 0.0}
  assert by['8+'] == {'share_of_targets': pytest.approx(1 / 3), 'deleted': 0.0, 'substituted': 0.5}
  same = decoder_fit.edits_by_run(refs, refs, runs)
  assert same['deleted'] == same['substituted'] == same['inserted'] == 0.0
  assert same['written_repeats'] == same['inserted_repeats'] == 0.0
  with pytest.raises(ValueError, match='run lists'):
    decoder_fit.edits_by_run(hyps, refs, runs[:1])


@pytest.fixture(scope='module')
def tok(tmp_path_factory):
  return Tokenizer.from_checkpoint(tokenizer_test.tiny_workdir(tmp_path_factory), batch_size=4)


def test_decoder_fit_on_a_checkpoint(tok):
  waves = np.stack(tokenizer_test.make_waves(5))
  got = decoder_fit.decoder_fit(tok, tok, waves, tokenizer_test.SR, batch_size=2)
  targets = tok.vq_group_tokenize(waves, tokenizer_test.SR)
  lengths = [min(len(t), tok.max_len - 1) for t in targets.tokens]
  for name in ('teacher_forced_true_times', 'teacher_forced_own_times'):
    reading = got[name]
    assert reading['positions'] == sum(lengths) + len(waves)  # every code and every EOS
    assert sum(b['count'] for b in reading['by_run_frames'].values()) == reading['positions']
    assert 0.0 <= reading['accuracy'] <= 1.0 and reading['nll'] > 0
  assert got['greedy']['target_tokens'] == sum(len(t) for t in targets.tokens)
  assert got['greedy']['written_tokens'] == sum(len(t) for t in tok.tokenize(waves).tokens)
  # The decoder's own encoder is the targets' here: its groups are the targets exactly.
  own = got['own_groups_vs_targets']
  assert own['mean_normalized_edit_distance'] == 0.0 and own['substitutions'] == 0.0
  assert own['frame_agreement'] == own['frame_agreement_after_renaming'] == 1.0
  frames = tok.vq_group_frames(waves, tokenizer_test.SR)  # [N, T]
  assert frames.shape[0] == len(waves)
  assert [list(t) for t in tok.vq_group_tokenize(waves, tokenizer_test.SR).tokens] == [
    [int(g) for i, g in enumerate(row) if i == 0 or g != row[i - 1]] for row in frames
  ]
  assert own['reference_tokens'] == got['greedy']['target_tokens']
  # The targets' times: run centres, or run ends for a run trained with targets.time_anchor='end'.
  for anchor in ('centre', 'end'):
    config = tok.config.copy_and_resolve_references()
    config.targets.time_anchor = anchor
    strings = Tokenizer(config, tok.variables, batch_size=4).vq_group_tokenize(
      waves, tokenizer_test.SR
    )
    want = token_strings.strings_from_frame_codes(frames, tok.frame_seconds, time_anchor=anchor)
    for got_times, want_times in zip(strings.times, want.times):
      np.testing.assert_allclose(got_times, want_times)
  # The own-times reading of one segment is Tokenizer.score's per-token log-likelihood.
  rows = decoder_fit.target_arrays(targets.tokens[:1], targets.times[:1], tok.max_len, tok.vocab)
  logits, times = decoder_fit.teacher_forced_logits(
    tok, waves[:1], rows[0], rows[1], own_times=True
  )
  one = decoder_fit.teacher_forced_summary(logits, rows[0], rows[2], [np.ones(rows[2][0], int)])
  _, mean_ll = tok.score(targets.tokens[0][: rows[2][0]], waves[0], tokenizer_test.SR)
  assert one['nll'] == pytest.approx(-mean_ll, rel=1e-4)
  # With the true times the decoder reads other input times: a different reading.
  true, _ = decoder_fit.teacher_forced_logits(tok, waves[:1], rows[0], rows[1], own_times=False)
  assert not np.allclose(true, logits, atol=1e-4)
  # The time error is over the code positions of the row, against the targets' times.
  n = rows[2][0]
  expected = np.abs(times[0, :n] - rows[1][0, :n]).mean()
  assert got['teacher_forced_own_times']['time_error_seconds'] >= 0
  one = decoder_fit.teacher_forced_summary(
    logits, rows[0], rows[2], [np.ones(n, int)], time_error=times - rows[1]
  )
  assert one['time_error_seconds'] == pytest.approx(expected)


def test_parallel_passes_start_from_the_true_times(tok):
  waves = np.stack(tokenizer_test.make_waves(3))
  targets = tok.vq_group_tokenize(waves, tokenizer_test.SR)
  rows = decoder_fit.target_arrays(targets.tokens, targets.times, tok.max_len, tok.vocab)
  got = decoder_fit.parallel_pass_readings(tok, waves, *rows, passes=(0, 2))
  assert list(got) == ['0', '2']
  logits, times = decoder_fit.teacher_forced_logits(tok, waves, rows[0], rows[1], own_times=False)
  true = decoder_fit.teacher_forced_summary(
    logits, rows[0], rows[2], [np.ones(n, int) for n in rows[2]], time_error=times - rows[1]
  )
  assert got['0']['time_error_seconds'] == pytest.approx(true['time_error_seconds'], rel=1e-5)
  assert got['2']['time_error_seconds'] != pytest.approx(got['0']['time_error_seconds'])
  report = decoder_fit.decoder_fit(tok, tok, waves, tokenizer_test.SR, passes=(0, 1))
  assert set(report['parallel_own_time_passes']) == {'0', '1'}


def test_split_segments_are_seeded_and_of_the_checkpoint_length(tok, tmp_path_factory):
  workdir = tokenizer_test.tiny_workdir(tmp_path_factory)
  step = tokenizer_test.STEPS[-1]
  config = checkpointing.read_config(workdir, step)
  a = decoder_fit.split_segments(config, 'validation', 3, seed=0)
  b = decoder_fit.split_segments(config, 'validation', 3, seed=0)
  assert a.shape == (3, tok.segment_samples)
  np.testing.assert_array_equal(a, b)
  assert json.dumps(decoder_fit.decoder_fit(tok, tok, a, tok.sample_rate)['greedy'])
