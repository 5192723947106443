"""Tests for pairalign_jax.sequences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from pairalign_jax import sequences
from pairalign_jax import vocab as vocab_lib

VOCAB = vocab_lib.Vocab(8)  # codes 0..7, BOS 8, EOS 9, PAD 10
BOS, EOS, PAD = VOCAB.bos, VOCAB.eos, VOCAB.pad


def _runs_of(row):
  """Host reference: list of (code, length) runs of a 1-D sequence."""
  out = []
  for c in row:
    if out and out[-1][0] == c:
      out[-1][1] += 1
    else:
      out.append([int(c), 1])
  return out


# ----------------------------------------------------------------------------- collapse_runs


def test_collapse_runs_known_runs_centres_and_padding():
  codes = jnp.array([[1, 1, 2, 2, 2, 3], [4, 4, 4, 4, 4, 4]], jnp.int32)
  tokens, lengths, times, truncated = sequences.collapse_runs(codes, 0.01, max_len=5, vocab=VOCAB)
  np.testing.assert_array_equal(tokens, [[1, 2, 3, EOS, PAD], [4, EOS, PAD, PAD, PAD]])
  np.testing.assert_array_equal(lengths, [3, 1])
  # run centre = (first + last + 1) / 2 frames * 10 ms
  np.testing.assert_allclose(times, [[0.01, 0.035, 0.055, 0, 0], [0.03, 0, 0, 0, 0]], atol=1e-6)
  np.testing.assert_array_equal(truncated, [False, False])
  assert tokens.dtype == jnp.int32 and lengths.dtype == jnp.int32


def test_frame_run_centres_are_the_collapsed_token_times():
  """Every frame gets its run's centre, the time collapse_runs gives that run's token; times snap
  to the run of their frame (outside the segment: the nearest frame's run)."""
  codes = jnp.asarray([[3, 3, 5, 5, 5, 1, 1, 1, 1, 2], [0] * 10], jnp.int32)
  centres = np.asarray(sequences.frame_run_centres(codes, 0.02))
  np.testing.assert_allclose(centres[0], [0.02] * 2 + [0.07] * 3 + [0.14] * 4 + [0.19], atol=1e-7)
  np.testing.assert_allclose(centres[1], [0.1] * 10, atol=1e-7)
  _, lengths, times, _ = sequences.collapse_runs(codes, 0.02, max_len=8, vocab=vocab_lib.Vocab(8))
  np.testing.assert_allclose(
    np.unique(centres[0]), np.asarray(times)[0, : int(lengths[0])], rtol=1e-6
  )
  snapped = sequences.snap_to_run_centres(jnp.asarray([0.051, 0.5]), jnp.asarray(centres), 0.02)
  np.testing.assert_allclose(np.asarray(snapped), [0.07, 0.1], atol=1e-7)
  early = sequences.snap_to_run_centres(jnp.asarray([-0.3, 0.0]), jnp.asarray(centres), 0.02)
  np.testing.assert_allclose(np.asarray(early), [0.02, 0.1], atol=1e-7)


def test_collapse_runs_truncates_to_l_minus_1_codes_plus_eos():
  codes = jnp.array([[0, 1, 2, 3, 4, 4], [0, 0, 1, 1, 2, 2]], jnp.int32)  # 5 and 3 runs
  tokens, lengths, times, truncated = sequences.collapse_runs(codes, 0.02, max_len=4, vocab=VOCAB)
  np.testing.assert_array_equal(tokens, [[0, 1, 2, EOS], [0, 1, 2, EOS]])
  np.testing.assert_array_equal(lengths, [3, 3])
  np.testing.assert_array_equal(truncated, [True, False])
  np.testing.assert_allclose(times[0], [0.01, 0.03, 0.05, 0.0], atol=1e-6)


def test_collapse_runs_frame_times_array_matches_scalar():
  rng = np.random.default_rng(0)
  codes = jnp.asarray(rng.integers(0, 3, (3, 20)), jnp.int32)
  fs = 0.02
  a = sequences.collapse_runs(codes, fs, max_len=24, vocab=VOCAB)
  centres = (np.arange(20) + 0.5) * fs
  b = sequences.collapse_runs(codes, jnp.asarray(centres), max_len=24, vocab=VOCAB)
  c = sequences.collapse_runs(codes, jnp.asarray(np.tile(centres, (3, 1))), max_len=24, vocab=VOCAB)
  for x, y, z in zip(a, b, c):
    np.testing.assert_allclose(x, y, atol=1e-6)
    np.testing.assert_allclose(x, z, atol=1e-6)
  # Against a host reference.
  for row, tok, n, t in zip(np.asarray(codes), a[0], a[1], a[2]):
    runs = _runs_of(row)
    assert int(n) == len(runs)
    np.testing.assert_array_equal(np.asarray(tok)[:n], [r[0] for r in runs])
    starts = np.cumsum([0] + [r[1] for r in runs])[:-1]
    expected = (starts + np.array([r[1] for r in runs]) / 2) * fs
    np.testing.assert_allclose(np.asarray(t)[:n], expected, atol=1e-6)


def test_collapse_runs_end_anchor_gives_run_ends():
  """time_anchor='end': each token's time is the centre of its run's last frame, from a scalar
  frame duration or from frame centres; tokens and lengths as with run centres."""
  rng = np.random.default_rng(2)
  codes = jnp.asarray(rng.integers(0, 3, (3, 20)), jnp.int32)
  fs = 0.02
  centre = sequences.collapse_runs(codes, fs, max_len=24, vocab=VOCAB)
  end = sequences.collapse_runs(codes, fs, max_len=24, vocab=VOCAB, time_anchor='end')
  from_centres = sequences.collapse_runs(
    codes, jnp.asarray((np.arange(20) + 0.5) * fs), max_len=24, vocab=VOCAB, time_anchor='end'
  )
  np.testing.assert_array_equal(end[0], centre[0])
  np.testing.assert_array_equal(end[1], centre[1])
  np.testing.assert_allclose(end[2], from_centres[2], atol=1e-6)
  for row, n, t in zip(np.asarray(codes), end[1], end[2]):
    ends = (np.cumsum([r[1] for r in _runs_of(row)]) - 0.5) * fs
    np.testing.assert_allclose(np.asarray(t)[:n], ends, atol=1e-6)
    assert not np.asarray(t)[n:].any()  # 0 at EOS/PAD
  with pytest.raises(ValueError, match='time_anchor'):
    sequences.collapse_runs(codes, fs, max_len=24, vocab=VOCAB, time_anchor='start')


def test_collapse_runs_jits_and_matches_eager():
  rng = np.random.default_rng(1)
  codes = jnp.asarray(rng.integers(0, 4, (4, 30)), jnp.int32)
  fn = jax.jit(
    lambda c: sequences.collapse_runs(c, 0.02, max_len=16, vocab=VOCAB, min_run_frames=3)
  )
  jitted = fn(codes)
  eager = sequences.collapse_runs(codes, 0.02, max_len=16, vocab=VOCAB, min_run_frames=3)
  for x, y in zip(jitted, eager):
    np.testing.assert_array_equal(x, y)


def test_collapse_runs_rejects_bad_inputs():
  with pytest.raises(ValueError, match='codes must be'):
    sequences.collapse_runs(jnp.zeros((5,), jnp.int32), 0.02, max_len=4, vocab=VOCAB)
  with pytest.raises(ValueError, match='integers'):
    sequences.collapse_runs(jnp.zeros((1, 5), jnp.float32), 0.02, max_len=4, vocab=VOCAB)
  with pytest.raises(ValueError, match='min_run_frames'):
    sequences.collapse_runs(
      jnp.zeros((1, 5), jnp.int32), 0.02, max_len=4, vocab=VOCAB, min_run_frames=-1
    )
  with pytest.raises(ValueError, match='frame_times'):
    sequences.collapse_runs(jnp.zeros((1, 5), jnp.int32), jnp.zeros((4,)), max_len=4, vocab=VOCAB)
  with pytest.raises(ValueError, match='max_len'):
    sequences.collapse_runs(jnp.zeros((1, 5), jnp.int32), 0.02, max_len=0, vocab=VOCAB)


# ----------------------------------------------------------------------------- pruning


def test_prune_short_runs_hand_made():
  codes = jnp.array(
    [[1, 1, 1, 2, 3, 3, 3, 3, 4, 1, 1, 1], [5, 5, 5, 5, 1, 2, 3, 4, 6, 6, 6, 6]], jnp.int32
  )
  pruned = sequences.prune_short_runs(codes, 2)
  # Row 0: every run already >= 2 except the singles 2 and 4.
  #   '2' (shortest, leftmost) joins its shorter neighbour '111' (3 < 4) and takes code 1;
  #   '4' joins '111' on its right (3 < 4) -> 1; nothing left under 2 frames.
  np.testing.assert_array_equal(pruned[0], [1, 1, 1, 1, 3, 3, 3, 3, 1, 1, 1, 1])
  # Row 1: flicker 1 2 3 4 between two long runs: '1' joins its shorter neighbour '2' (tie in
  # length -> the earlier code, 1), then '3' joins '4' -> 3. The long runs keep their boundaries.
  np.testing.assert_array_equal(pruned[1], [5, 5, 5, 5, 1, 1, 3, 3, 6, 6, 6, 6])
  tokens, lengths, times, _ = sequences.collapse_runs(
    codes, 0.01, max_len=8, vocab=VOCAB, min_run_frames=2
  )
  np.testing.assert_array_equal(tokens[1], [5, 1, 3, 6, EOS, PAD, PAD, PAD])
  np.testing.assert_allclose(times[1, :4], [0.02, 0.05, 0.07, 0.10], atol=1e-6)
  np.testing.assert_array_equal(lengths, [3, 4])


def test_prune_short_runs_properties_on_random_codes():
  rng = np.random.default_rng(2)
  codes = jnp.asarray(rng.integers(0, 5, (6, 40)), jnp.int32)
  for m in (1, 2, 3, 4):
    pruned = np.asarray(sequences.prune_short_runs(codes, m))
    for row in pruned:
      runs = _runs_of(row)
      assert len(runs) == 1 or min(r[1] for r in runs) >= m, (m, runs)
    # Idempotent, and m=1 is the identity.
    np.testing.assert_array_equal(sequences.prune_short_runs(jnp.asarray(pruned), m), pruned)
  np.testing.assert_array_equal(sequences.prune_short_runs(codes, 1), codes)


def test_prune_single_short_segment_becomes_one_run():
  codes = jnp.array([[0, 1, 2]], jnp.int32)  # shorter than min_run_frames in total
  pruned = sequences.prune_short_runs(codes, 5)
  assert len(_runs_of(np.asarray(pruned[0]))) == 1


def test_min_run_frames_for_rate():
  assert sequences.min_run_frames_for_rate(12.7, 0.02) == 3  # 1 / 0.254 = 3.94 -> 3
  assert sequences.min_run_frames_for_rate(12.7, 0.01) == 7  # 7.87 -> 7
  assert sequences.min_run_frames_for_rate(12.5, 0.02) == 4  # exactly 4 frames per token
  assert sequences.min_run_frames_for_rate(100.0, 0.02) == 1
  assert sequences.min_run_frames_for_rate(12.7, 0.02, natural_rate=10.0) == 1
  assert sequences.min_run_frames_for_rate(12.7, 0.02, natural_rate=28.0) == 3
  with pytest.raises(ValueError, match='target_rate'):
    sequences.min_run_frames_for_rate(0.0, 0.02)
  with pytest.raises(ValueError, match='frame_seconds'):
    sequences.min_run_frames_for_rate(12.7, -1.0)


def test_pruned_rate_never_exceeds_the_cap():
  rng = np.random.default_rng(3)
  codes = jnp.asarray(rng.integers(0, 6, (8, 150)), jnp.int32)  # very flickery
  fs = 0.02
  m = sequences.min_run_frames_for_rate(12.7, fs)
  _, lengths, _, _ = sequences.collapse_runs(codes, fs, max_len=160, vocab=VOCAB, min_run_frames=m)
  rate = np.asarray(lengths) / (150 * fs)
  assert np.all(rate <= 1.0 / (m * fs) + 1e-6)
  assert np.all(rate > 0.3 * 12.7)  # still spans the segment: not collapsed to a few tokens


# ----------------------------------------------------------------------------- teacher forcing


def test_shift_right_and_score_mask():
  tokens = jnp.array([[3, 4, EOS, PAD], [5, 6, 7, 1], [EOS, PAD, PAD, PAD]], jnp.int32)
  lengths = jnp.array([2, 4, 0], jnp.int32)
  np.testing.assert_array_equal(
    sequences.shift_right(tokens, VOCAB), [[BOS, 3, 4, EOS], [BOS, 5, 6, 7], [BOS, EOS, PAD, PAD]]
  )
  np.testing.assert_array_equal(
    sequences.score_mask(tokens, lengths, VOCAB), [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
  )
  # A row whose position n is not EOS scores only its codes.
  np.testing.assert_array_equal(
    sequences.score_mask(jnp.array([[3, PAD, PAD]]), jnp.array([1]), VOCAB), [[1, 0, 0]]
  )


def _random_batch(rng, b, length, k=VOCAB.codebook_size):
  lengths = rng.integers(0, length, (b,))
  lists = [list(rng.integers(0, k, (n,))) for n in lengths]
  tokens, lengths = sequences.from_lists(lists, length, VOCAB)
  return jnp.asarray(tokens), jnp.asarray(lengths)


def test_corrupt_inputs_substitution_fraction_and_untouched_positions():
  rng = np.random.default_rng(4)
  tokens, lengths = _random_batch(rng, 256, 24)
  tokens_before = np.asarray(tokens).copy()
  mask = sequences.score_mask(tokens, lengths, VOCAB)
  inputs = sequences.shift_right(tokens, VOCAB)
  out = sequences.corrupt_inputs(jax.random.key(0), inputs, mask, p=0.3, vocab=VOCAB)
  inputs, out = np.asarray(inputs), np.asarray(out)
  eligible = (inputs < VOCAB.codebook_size) & (np.asarray(mask) > 0)
  eligible[:, 0] = False
  changed = out != inputs
  assert not changed[~eligible].any()  # BOS, EOS, PAD never touched
  assert np.all(out[:, 0] == BOS)
  frac = changed[eligible].mean()
  assert abs(frac - 0.3) < 0.03, frac
  assert np.all(out[changed] < VOCAB.codebook_size)  # replacements are codes
  # Targets and their scored mask are unchanged (derived from the originals).
  np.testing.assert_array_equal(tokens, tokens_before)
  np.testing.assert_array_equal(sequences.score_mask(tokens, lengths, VOCAB), mask)
  # p = 0 and no deletion/duplication: identity.
  np.testing.assert_array_equal(
    sequences.corrupt_inputs(jax.random.key(0), jnp.asarray(inputs), mask, p=0.0, vocab=VOCAB),
    inputs,
  )


@pytest.mark.parametrize('p_delete,p_duplicate', [(0.2, 0.0), (0.0, 0.2), (0.15, 0.15)])
def test_corrupt_inputs_delete_duplicate_never_leak_targets(p_delete, p_duplicate):
  # Distinct codes per position: tokens[i] = i, so a value names its source position.
  vocab = vocab_lib.Vocab(64)
  b, length = 128, 20
  lengths = jnp.full((b,), 16, jnp.int32)
  tokens = jnp.where(
    jnp.arange(length)[None, :] < 16,
    jnp.arange(length)[None, :],
    jnp.where(jnp.arange(length)[None, :] == 16, vocab.eos, vocab.pad),
  )
  tokens = jnp.broadcast_to(tokens, (b, length)).astype(jnp.int32)
  mask = sequences.score_mask(tokens, lengths, vocab)
  inputs = sequences.shift_right(tokens, vocab)
  out = np.asarray(
    sequences.corrupt_inputs(
      jax.random.key(1),
      inputs,
      mask,
      p=0.0,
      vocab=vocab,
      p_delete=p_delete,
      p_duplicate=p_duplicate,
    )
  )
  codes = out[:, 1:17]  # scored input positions 1..16
  pos = np.arange(1, 17)
  assert np.all(out[:, 0] == vocab.bos)
  assert np.all(codes < vocab.codebook_size)  # BOS never copied forward
  assert np.all(codes <= pos - 1)  # input t never shows target y_{t+1}
  assert np.all(np.diff(codes, axis=1) >= 0)  # order of the prefix kept
  np.testing.assert_array_equal(out[:, 17:], np.asarray(inputs)[:, 17:])  # unscored part unchanged
  repeats = (np.diff(codes, axis=1) == 0).mean()
  assert 0.05 < repeats < 0.45, repeats
  if p_duplicate > 0:
    assert np.any(codes < pos - 1)  # some shifted right


def test_corrupt_inputs_num_codes_limits_substitutes():
  rng = np.random.default_rng(5)
  tokens, lengths = _random_batch(rng, 64, 24)
  tokens = jnp.where(tokens < VOCAB.codebook_size, tokens % 4, tokens)  # targets use ids 0..3 only
  mask = sequences.score_mask(tokens, lengths, VOCAB)
  inputs = np.asarray(sequences.shift_right(tokens, VOCAB))
  out = np.asarray(
    sequences.corrupt_inputs(
      jax.random.key(1), jnp.asarray(inputs), mask, p=0.5, vocab=VOCAB, num_codes=4
    )
  )
  changed = out != inputs
  assert changed.any() and np.all(out[changed] < 4)
  with pytest.raises(ValueError, match='num_codes'):
    sequences.corrupt_inputs(
      jax.random.key(1), jnp.asarray(inputs), mask, p=0.5, vocab=VOCAB, num_codes=1
    )


def test_corrupt_inputs_rejects_bad_probabilities():
  x = jnp.zeros((1, 4), jnp.int32)
  with pytest.raises(ValueError, match='p_delete'):
    sequences.corrupt_inputs(
      jax.random.key(0), x, jnp.ones((1, 4)), p=0.1, vocab=VOCAB, p_delete=1.5
    )


def test_mix_targets():
  rng = np.random.default_rng(5)
  b, length = 400, 6
  vq_tok, vq_len = _random_batch(rng, b, length)
  te_tok, te_len = _random_batch(rng, b, length)
  te_len = te_len.at[:10].set(length)  # unterminated teacher rows
  te_tok = te_tok.at[:10].set(1)
  vq_times = jnp.ones((b, length))
  te_times = 2 * jnp.ones((b, length))
  key = jax.random.key(3)
  tok, n, times = sequences.mix_targets(
    key, vq_tok, vq_len, vq_times, te_tok, te_len, te_times, 0.0
  )
  np.testing.assert_array_equal(tok, vq_tok)
  np.testing.assert_array_equal(n, vq_len)
  tok, n, times = sequences.mix_targets(
    key, vq_tok, vq_len, vq_times, te_tok, te_len, te_times, 1.0
  )
  np.testing.assert_array_equal(tok[10:], te_tok[10:])
  np.testing.assert_array_equal(tok[:10], vq_tok[:10])  # unterminated -> VQ fallback
  tok, n, times = sequences.mix_targets(
    key, vq_tok, vq_len, vq_times, te_tok, te_len, te_times, 0.5
  )
  from_teacher = np.all(np.asarray(tok) == np.asarray(te_tok), axis=1) & (
    np.asarray(n) == np.asarray(te_len)
  )
  assert 0.4 < from_teacher[10:].mean() < 0.62
  # Times are zero outside each row's codes.
  pos = np.arange(length)[None, :]
  assert np.all(np.asarray(times)[pos >= np.asarray(n)[:, None]] == 0)


# ----------------------------------------------------------------------------- pad / trim / host


def test_lists_roundtrip_and_resize():
  seqs = [[1, 2, 3], [], [7, 7, 0, 1, 2, 3]]
  tokens, lengths = sequences.from_lists(seqs, 5, VOCAB)
  np.testing.assert_array_equal(
    tokens, [[1, 2, 3, EOS, PAD], [EOS, PAD, PAD, PAD, PAD], [7, 7, 0, 1, EOS]]
  )
  assert sequences.to_lists(tokens, lengths) == [[1, 2, 3], [], [7, 7, 0, 1]]
  with pytest.raises(ValueError, match='row 0'):
    sequences.from_lists([[1, BOS]], 5, VOCAB)

  longer, n = sequences.resize(jnp.asarray(tokens), jnp.asarray(lengths), 7, VOCAB)
  np.testing.assert_array_equal(longer[0], [1, 2, 3, EOS, PAD, PAD, PAD])
  np.testing.assert_array_equal(n, lengths)
  shorter, n = sequences.resize(jnp.asarray(tokens), jnp.asarray(lengths), 3, VOCAB)
  np.testing.assert_array_equal(shorter, [[1, 2, EOS], [EOS, PAD, PAD], [7, 7, EOS]])
  np.testing.assert_array_equal(n, [2, 0, 2])
  # Decode convention: unterminated rows (n == L) stay without EOS.
  dec = jnp.array([[1, 2, 3], [4, EOS, PAD]], jnp.int32)
  out, n = sequences.resize(dec, jnp.array([3, 1]), 5, VOCAB, terminate=False)
  np.testing.assert_array_equal(out, [[1, 2, 3, PAD, PAD], [4, EOS, PAD, PAD, PAD]])
  out, n = sequences.resize(dec, jnp.array([3, 1]), 2, VOCAB, terminate=False)
  np.testing.assert_array_equal(out, [[1, 2], [4, EOS]])
  np.testing.assert_array_equal(n, [2, 1])


# ------------------------------------------------------------------------------ scoring


def _ll_inputs():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((2, 5, 7)).astype(np.float32)
  targets = rng.integers(0, 7, (2, 5)).astype(np.int32)
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  return logits, targets, mask


def test_sequence_log_likelihood_hand_computed():
  logits, targets, mask = _ll_inputs()
  lp = np.take_along_axis(
    scipy.special.log_softmax(logits.astype(np.float64), axis=-1), targets[..., None], axis=-1
  )[..., 0]  # [2, 5]
  total, mean = sequences.sequence_log_likelihood(
    jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask)
  )
  np.testing.assert_allclose(total, [lp[0, :3].sum(), lp[1].sum()], rtol=1e-5)
  np.testing.assert_allclose(mean, [lp[0, :3].mean(), lp[1].mean()], rtol=1e-5)
  # An all-masked row gives 0 (no division by zero).
  total0, mean0 = sequences.sequence_log_likelihood(
    jnp.asarray(logits), jnp.asarray(targets), jnp.zeros_like(jnp.asarray(mask))
  )
  np.testing.assert_array_equal(total0, [0.0, 0.0])
  np.testing.assert_array_equal(mean0, [0.0, 0.0])
  with pytest.raises(ValueError):
    sequences.token_log_probs(jnp.asarray(logits), jnp.asarray(targets[:, :4]))


@pytest.mark.parametrize('garbage', [1e4, -1e4, np.nan])
def test_sequence_log_likelihood_masked_positions_never_matter(garbage):
  logits, targets, mask = _ll_inputs()
  masked = mask == 0  # [2, 5]
  dirty = logits.copy()
  dirty[masked] = garbage
  dirty_targets = targets.copy()
  dirty_targets[masked] = 0

  def f(lg, tg):
    total, mean = sequences.sequence_log_likelihood(lg, tg, jnp.asarray(mask))
    return jnp.sum(total) + 3.0 * jnp.sum(mean), (total, mean)

  (_, (t_clean, m_clean)), g_clean = jax.value_and_grad(f, has_aux=True)(
    jnp.asarray(logits), jnp.asarray(targets)
  )
  (_, (t_dirty, m_dirty)), g_dirty = jax.value_and_grad(f, has_aux=True)(
    jnp.asarray(dirty), jnp.asarray(dirty_targets)
  )
  np.testing.assert_array_equal(t_clean, t_dirty)
  np.testing.assert_array_equal(m_clean, m_dirty)
  g_clean, g_dirty = np.asarray(g_clean), np.asarray(g_dirty)
  assert np.all(np.isfinite(g_dirty))
  np.testing.assert_array_equal(g_dirty[masked], 0.0)
  np.testing.assert_array_equal(g_dirty[~masked], g_clean[~masked])
  assert np.all(np.abs(g_clean[~masked]).sum(-1) > 0)  # scored positions do get gradient


def _hand_made_runs():
  """One row of runs (code, time): 3 @0.1, 5 @0.2, 3 @0.3, 7 @0.4, 9 @0.5, then EOS/PAD (codes 11
  @0.6, 0.7, never runs): (run_tokens [1, 7], run_times [1, 7], num_runs [1])."""
  return (
    jnp.asarray([[3, 5, 3, 7, 9, 11, 11]], jnp.int32),
    jnp.asarray([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]], jnp.float32),
    jnp.asarray([5], jnp.int32),
  )


def test_align_to_runs_places_a_token_on_the_nearest_later_run_of_its_code():
  """Runs (code, time): 3 @0.1, 5 @0.2, 3 @0.3, 7 @0.4, 9 @0.5, then EOS/PAD (never matched)."""
  run_tokens, run_times, num_runs = _hand_made_runs()

  def align(token, own_time, last_run, tolerance=0.15):
    time, run = sequences.align_to_runs(
      jnp.asarray([token]),
      jnp.asarray([own_time], jnp.float32),
      jnp.asarray([last_run]),
      run_tokens,
      run_times,
      num_runs,
      tolerance,
    )
    return round(float(time[0]), 4), int(run[0])

  assert align(3, 0.12, -1) == (0.1, 0)  # the nearer of the two runs of 3
  assert align(3, 0.27, -1) == (0.3, 2)
  assert align(3, 0.12, 0, tolerance=0.2) == (0.3, 2)  # only runs after the previous one
  assert align(3, 0.12, 0, tolerance=0.1) == (0.12, 0)  # 0.3 is too far: own time, no move
  assert align(7, 0.37, 1) == (0.4, 3)
  # No run of its code: its own time, placed after the runs that lie at or before that time.
  assert align(8, 0.42, 1) == (0.42, 3)
  assert align(8, 0.05, 1) == (0.05, 1)  # never moves back
  assert align(11, 0.6, 3) == (0.6, 4)  # positions past the runs (EOS, PAD) are not runs


def test_run_token_mask_allows_the_codes_of_the_runs_a_token_could_be_placed_on():
  """Runs (code, time): 3 @0.1, 5 @0.2, 3 @0.3, 7 @0.4, 9 @0.5, then EOS/PAD (never allowed)."""
  run_tokens, run_times, num_runs = _hand_made_runs()

  def allowed(own_time, last_run, tolerance):
    mask = sequences.run_token_mask(
      jnp.asarray([own_time], jnp.float32),
      jnp.asarray([last_run]),
      run_tokens,
      run_times,
      num_runs,
      tolerance,
      12,
    )
    assert mask.shape == (1, 12) and mask.dtype == bool
    return set(np.flatnonzero(np.asarray(mask[0])).tolist())

  assert allowed(0.12, -1, 0.15) == {3, 5}  # 0.3 is 0.18 away
  assert allowed(0.12, -1, 0.2) == {3, 5}  # the second 3 adds no new code
  assert allowed(0.45, 3, 0.06) == {9}  # only runs after the previous placement
  assert allowed(0.6, 3, 0.15) == {9}  # positions past the runs (EOS @0.6) are not runs
  assert allowed(0.9, 4, 0.15) == set(range(12))  # no run near: unconstrained
