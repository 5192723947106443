"""Tests for pairalign_jax/losses.py: every term against hand-computed values (docs/METHOD.md
§5)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pairalign_jax import decode
from pairalign_jax import losses
from pairalign_jax import vocab as vocab_lib


def _log_softmax_np(x, axis=-1):
  x = np.asarray(x, np.float64)
  m = np.max(x, axis=axis, keepdims=True)
  return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


# ----------------------------------------------------------------------------- contrast


def test_info_nce_hand_computed_2x2():
  # S = [[2, 0], [1, 1]], tau = 0.5  ->  Z = [[4, 0], [2, 2]].
  # rows:  row 0 picks col 0 from (4, 0): log(1 + e^-4); row 1 picks col 1 from (2, 2): log 2.
  # cols:  col 0 picks row 0 from (4, 2): log(1 + e^-2);
  #        col 1 picks row 1 from (0, 2): log(1 + e^-2).
  s = jnp.array([[2.0, 0.0], [1.0, 1.0]])
  rows = 0.5 * (math.log1p(math.exp(-4.0)) + math.log(2.0))
  cols = math.log1p(math.exp(-2.0))
  expected = 0.5 * (rows + cols)  # = 0.241288...
  assert expected == pytest.approx(0.2412880, abs=1e-6)
  np.testing.assert_allclose(float(losses.info_nce(s, 0.5)), expected, rtol=1e-6)
  # The transpose swaps the roles of rows and columns; the symmetric loss is unchanged.
  np.testing.assert_allclose(float(losses.info_nce(s.T, 0.5)), expected, rtol=1e-6)


def test_info_nce_3x3_limits_and_temperature():
  b = 3
  # Constant S: every softmax is uniform -> log B.
  np.testing.assert_allclose(
    float(losses.info_nce(jnp.full((b, b), -2.5), 0.1)), math.log(b), rtol=1e-6
  )
  # A dominant diagonal -> ~0; a dominant off-diagonal -> large.
  diag = -10.0 * (1.0 - jnp.eye(b))
  assert float(losses.info_nce(diag, 0.1)) < 1e-6
  assert float(losses.info_nce(-diag, 0.1)) > 50.0
  # Lower temperature sharpens: a correct matrix gets a lower loss.
  s = jnp.array([[-1.0, -1.5, -2.0], [-1.4, -1.0, -1.2], [-2.0, -1.1, -0.9]])
  assert float(losses.info_nce(s, 0.1)) < float(losses.info_nce(s, 1.0))
  # Gradient pushes the diagonal up and the off-diagonal down.
  g = jax.grad(lambda x: losses.info_nce(x, 0.5))(s)
  assert np.all(np.diag(g) < 0) and np.all(g[~np.eye(b, dtype=bool)] > 0)


def test_info_nce_rejects_bad_input():
  with pytest.raises(ValueError, match='square'):
    losses.info_nce(jnp.zeros((2, 3)), 0.1)
  with pytest.raises(ValueError, match='temperature'):
    losses.info_nce(jnp.zeros((2, 2)), 0.0)


def test_info_nce_sampled_equals_row_term_with_all_negatives():
  s = np.array(
    [
      [-1.0, -1.5, -2.0, -0.7],
      [-1.4, -1.0, -1.2, -3.0],
      [-2.0, -1.1, -0.9, -1.0],
      [-0.5, -0.6, -0.7, -0.8],
    ],
    np.float32,
  )
  b, tau = s.shape[0], 0.3
  pos = np.diag(s)
  neg = np.stack([np.delete(s[i], i) for i in range(b)])  # [B, B-1]: every other column
  rows = -np.mean([_log_softmax_np(s[i] / tau)[i] for i in range(b)])
  got = float(losses.info_nce_sampled(jnp.asarray(pos), jnp.asarray(neg), tau))
  np.testing.assert_allclose(got, rows, rtol=1e-5)
  # The order of the negatives does not matter.
  got_rev = float(losses.info_nce_sampled(jnp.asarray(pos), jnp.asarray(neg[:, ::-1]), tau))
  np.testing.assert_allclose(got_rev, rows, rtol=1e-5)
  # info_nce = 0.5 (rows + cols); with a symmetric S rows == cols == info_nce.
  sym = 0.5 * (s + s.T)
  negs = np.stack([np.delete(sym[i], i) for i in range(b)])
  np.testing.assert_allclose(
    float(losses.info_nce_sampled(jnp.asarray(np.diag(sym)), jnp.asarray(negs), tau)),
    float(losses.info_nce(jnp.asarray(sym), tau)),
    rtol=1e-5,
  )
  # 2x2 by hand: row 0 of Z = [4, 0] -> log(1 + e^-4); row 1 = [2, 2] -> log 2.
  np.testing.assert_allclose(
    float(losses.info_nce_sampled(jnp.array([2.0, 1.0]), jnp.array([[0.0], [1.0]]), 0.5)),
    0.5 * (math.log1p(math.exp(-4.0)) + math.log(2.0)),
    rtol=1e-6,
  )
  with pytest.raises(ValueError):
    losses.info_nce_sampled(jnp.zeros((3,)), jnp.zeros((3,)), 0.1)
  with pytest.raises(ValueError, match='temperature'):
    losses.info_nce_sampled(jnp.zeros((3,)), jnp.zeros((3, 2)), -1.0)


# ----------------------------------------------------------------------------- anti-bypass


def test_antibypass_hinge_values_and_gradient():
  own = jnp.array([-1.0, -2.0, -0.5])
  other = jnp.array([-3.0, -2.2, -0.4])
  # own - other = [2.0, 0.2, -0.1]; margin 0.5 -> relu([-1.5, 0.3, 0.6]) -> mean 0.3.
  np.testing.assert_allclose(float(losses.antibypass(own, other, 0.5)), 0.3, rtol=1e-6)
  # margin 0: only the row where the other condition wins costs (0.1 / 3).
  np.testing.assert_allclose(float(losses.antibypass(own, other, 0.0)), 0.1 / 3, rtol=1e-5)
  g_own, g_other = jax.grad(lambda a, b: losses.antibypass(a, b, 0.5), argnums=(0, 1))(own, other)
  np.testing.assert_allclose(g_own, [0.0, -1 / 3, -1 / 3], rtol=1e-6)
  np.testing.assert_allclose(g_other, [0.0, 1 / 3, 1 / 3], rtol=1e-6)
  with pytest.raises(ValueError):
    losses.antibypass(own, other[:2], 0.5)


# ----------------------------------------------------------------------------- likelihoods


def test_cross_teacher_forcing():
  ll12 = jnp.array([-1.0, -3.0])
  ll21 = jnp.array([-2.0, -2.0])
  # -(mean(-1, -3) + mean(-2, -2)) = -(-2 - 2) = 4.
  np.testing.assert_allclose(float(losses.cross_teacher_forcing(ll12, ll21)), 4.0, rtol=1e-6)
  ll11, ll22 = jnp.array([-0.5, -1.5]), jnp.array([-1.0, -1.0])
  # + self terms: 4 - 0.5 * (mean(-0.5, -1.5) + mean(-1, -1)) = 4 + 0.5 * 2 = 5.
  got = losses.cross_teacher_forcing(
    ll12, ll21, ll_1_given_1=ll11, ll_2_given_2=ll22, self_weight=0.5
  )
  np.testing.assert_allclose(float(got), 5.0, rtol=1e-6)
  g = jax.grad(lambda a: losses.cross_teacher_forcing(a, ll21))(ll12)
  np.testing.assert_allclose(g, [-0.5, -0.5])  # raising a likelihood lowers the loss
  with pytest.raises(ValueError, match='both'):
    losses.cross_teacher_forcing(ll12, ll21, ll_1_given_1=ll11)


# ----------------------------------------------------------------------------- VQ prior


def test_vq_prior_terms():
  mel = jnp.array([[[1.0, 2.0], [3.0, 4.0]]])
  mel_hat = jnp.array([[[1.0, 1.0], [3.0, 6.0]]])
  np.testing.assert_allclose(float(losses.vq_recon_loss(mel_hat, mel)), (0 + 1 + 0 + 4) / 4)
  g = jax.grad(lambda m: losses.vq_recon_loss(mel_hat, m))(mel)
  np.testing.assert_array_equal(g, 0.0)  # the target is stop-gradient
  with pytest.raises(ValueError):
    losses.vq_recon_loss(mel_hat[:, :1], mel)

  logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
  codes = jnp.array([[0, 1]])
  np.testing.assert_allclose(
    float(losses.code_prediction_loss(logits, codes)),
    -0.5 * (math.log(0.5) + math.log(0.8)),
    rtol=1e-5,
  )
  np.testing.assert_allclose(
    float(losses.code_prediction_loss(logits, codes, jnp.array([[0.0, 1.0]]))),
    -math.log(0.8),
    rtol=1e-5,
  )
  with pytest.raises(ValueError):
    losses.code_prediction_loss(logits, codes[:, :1])
  assert float(losses.commitment_loss(jnp.array(0.7))) == pytest.approx(0.7)
  with pytest.raises(ValueError):
    losses.commitment_loss(jnp.zeros((2,)))


# ----------------------------------------------------------------------------- timing / coverage


def test_timing_loss():
  target = jnp.array([[0.1, 0.3, 0.5, 0.0]])
  mask = jnp.array([[1.0, 1.0, 1.0, 0.0]])
  assert float(losses.timing_loss(target, target, mask)) == 0.0
  # Errors 0.1 s (beyond beta = 0.02: |x| - beta/2 = 0.09) and 0.01 s
  # (inside: 0.5 x^2 / beta = 0.0025);
  # the masked position's 9 s error is ignored.
  pred = jnp.array([[0.2, 0.31, 0.5, 9.0]])
  np.testing.assert_allclose(
    float(losses.timing_loss(pred, target, mask)), (0.09 + 0.0025) / 3, rtol=1e-4
  )
  np.testing.assert_allclose(
    float(losses.timing_loss(pred, target, mask, beta=0.0)), 0.11 / 3, rtol=1e-4
  )
  g_pred, g_tgt = jax.grad(lambda p, t: losses.timing_loss(p, t, mask), argnums=(0, 1))(
    pred, target
  )
  np.testing.assert_array_equal(g_tgt, 0.0)  # targets are stop-gradient
  assert g_pred[0, 0] > 0 and g_pred[0, 3] == 0


def test_monotonic_penalty():
  mask = jnp.ones((1, 4))
  assert float(losses.monotonic_penalty(jnp.array([[0.1, 0.2, 0.2, 0.5]]), mask)) == 0.0
  back = jnp.array([[0.1, 0.3, 0.2, 0.5]])  # one step back by 0.1 over 3 pairs
  np.testing.assert_allclose(float(losses.monotonic_penalty(back, mask)), 0.1 / 3, rtol=1e-5)
  # Pairs that touch an unscored position do not count.
  tail = jnp.array([[0.1, 0.2, 0.3, 0.0]])
  assert float(losses.monotonic_penalty(tail, jnp.array([[1.0, 1.0, 1.0, 0.0]]))) == 0.0
  assert float(losses.monotonic_penalty(tail, mask)) > 0.0


def test_coverage_loss():
  start, end, g = jnp.array([0.1]), jnp.array([0.9]), 0.4  # cover = t +- 0.2
  mask3 = jnp.array([[1.0, 1.0, 1.0, 0.0]])

  def cov(times, mask=mask3, s=start, e=end):
    return float(losses.coverage_loss(jnp.array([times]), mask, s, e, g))

  assert cov([0.25, 0.5, 0.75, 7.0]) == 0.0  # spans [0.05, 0.95], gaps 0.25
  mask2 = jnp.array([[1.0, 1.0, 0.0, 0.0]])
  np.testing.assert_allclose(
    cov([0.25, 0.4, 7.0, 7.0], mask2), 0.9 - 0.4 - 0.2, rtol=1e-5
  )  # early EOS
  np.testing.assert_allclose(
    cov([0.5, 0.75, 0.0, 0.0], mask2), 0.5 - 0.2 - 0.1, rtol=1e-5
  )  # late start
  np.testing.assert_allclose(
    cov([0.25, 0.75, 0.0, 0.0], mask2), 0.5 - 0.4, rtol=1e-5
  )  # one long gap
  np.testing.assert_allclose(
    cov([0.0, 0.0, 0.0, 0.0], jnp.zeros((1, 4))), 0.8, rtol=1e-5
  )  # no codes
  assert (
    cov([0.0, 0.0, 0.0, 0.0], jnp.zeros((1, 4)), jnp.array([0.5]), jnp.array([0.5])) == 0.0
  )  # silent
  # Averaged over rows.
  two = losses.coverage_loss(
    jnp.array([[0.25, 0.5, 0.75, 0.0], [0.25, 0.4, 0.0, 0.0]]),
    jnp.concatenate([mask3, mask2]),
    jnp.array([0.1, 0.1]),
    jnp.array([0.9, 0.9]),
    g,
  )
  np.testing.assert_allclose(float(two), 0.3 / 2, rtol=1e-5)
  # An early EOS gets a gradient pulling the last time towards the end.
  grad = jax.grad(lambda t: losses.coverage_loss(t, mask2, start, end, g))(
    jnp.array([[0.25, 0.4, 7.0, 7.0]])
  )
  assert grad[0, 1] < 0 and grad[0, 2] == 0 and grad[0, 3] == 0


def test_voiced_region_hand_made_energy():
  # 30 dB below the max = 3 ln(10) = 6.91 nats: frames >= -6.91 are voiced.
  row = [-20.0, -20.0, -3.0, 0.0, -1.0, -20.0, -5.0, -20.0, -20.0, -20.0]  # voiced frames 2..6
  flat = [-4.0] * 10  # all voiced
  silent = [-20.0] * 10
  energy = jnp.array([row, flat, silent])
  start, end = losses.voiced_region(energy, 0.01, 30.0)
  np.testing.assert_allclose(start, [0.02, 0.0, 0.0], atol=1e-7)
  np.testing.assert_allclose(end, [0.07, 0.10, 0.10], atol=1e-7)
  # A floor leaves the silent row out (start = end = 0) and keeps the others.
  start, end = losses.voiced_region(energy, 0.01, 30.0, min_energy=-10.0)
  np.testing.assert_allclose(start, [0.02, 0.0, 0.0], atol=1e-7)
  np.testing.assert_allclose(end, [0.07, 0.10, 0.0], atol=1e-7)
  # A 5 dB threshold (1.15 nats) keeps only frames 3 and 4.
  start, end = losses.voiced_region(energy[:1], 0.01, 5.0)
  np.testing.assert_allclose([float(start[0]), float(end[0])], [0.03, 0.05], atol=1e-7)
  with pytest.raises(ValueError):
    losses.voiced_region(energy[0], 0.01, 30.0)


# ----------------------------------------------------------------------------- length


def test_length_loss():
  # rel = [(10-10)/10, (12-8)/8 = 0.5]; smoothL1_0.1(0.5) = 0.5 - 0.05 = 0.45 -> mean 0.225.
  got = losses.length_loss(jnp.array([10.0, 12.0]), jnp.array([10, 8]))
  np.testing.assert_allclose(float(got), 0.225, rtol=1e-5)
  assert float(losses.length_loss(jnp.array([3.0, 0.0]), jnp.array([3, 0]))) == 0.0


def test_eos_bias_update_direction_and_clip():
  # Too long (20 > 10): the bias rises by gain * 10.
  up = losses.eos_bias_update(jnp.float32(0.0), 20.0, 10.0, 0.05, 8.0)
  np.testing.assert_allclose(float(up), 0.5, rtol=1e-6)
  # Too short (5 < 10): it falls.
  down = losses.eos_bias_update(jnp.float32(0.0), 5.0, 10.0, 0.05, 8.0)
  np.testing.assert_allclose(float(down), -0.25, rtol=1e-6)
  # On target: unchanged.
  assert float(losses.eos_bias_update(jnp.float32(1.5), 10.0, 10.0, 0.05, 8.0)) == pytest.approx(
    1.5
  )
  # Clipped at +-limit.
  assert float(losses.eos_bias_update(jnp.float32(7.9), 20.0, 10.0, 0.05, 8.0)) == pytest.approx(
    8.0
  )
  assert float(losses.eos_bias_update(jnp.float32(-7.9), 0.0, 10.0, 0.05, 8.0)) == pytest.approx(
    -8.0
  )
  assert losses.eos_bias_update(jnp.float32(0.0), 20.0, 10.0, 0.05, 8.0).dtype == jnp.float32

  # "More EOS bias" means an earlier EOS in the greedy decoder: a row whose EOS logit is 0.3
  # below the best code keeps going at bias 0 and stops with the raised bias.
  vocab = vocab_lib.Vocab(4)
  logits = jnp.zeros((1, vocab.size)).at[0, 2].set(1.0).at[0, vocab.eos].set(0.7)
  done = jnp.zeros((1,), bool)
  assert int(decode._choose(logits, jnp.zeros((1,)), done, vocab)[0]) == 2
  assert int(decode._choose(logits, jnp.broadcast_to(up, (1,)), done, vocab)[0]) == vocab.eos


def test_eos_bias_is_never_lowered_while_decodes_loop():
  # Terminated decodes too short (5 < 10), but only 70% terminated (floor 0.98): the bias rises by
  # gain * (0 + 0.28 * 10) instead of falling.
  got = losses.eos_bias_update(jnp.float32(-1.0), 5.0, 10.0, 0.05, 8.0, jnp.float32(0.7), 0.98)
  np.testing.assert_allclose(float(got), -1.0 + 0.05 * 0.28 * 10.0, rtol=1e-5)
  # Too long and looping: both push the same way.
  got = losses.eos_bias_update(jnp.float32(0.0), 14.0, 10.0, 0.05, 8.0, jnp.float32(0.9), 0.98)
  np.testing.assert_allclose(float(got), 0.05 * (4.0 + 0.08 * 10.0), rtol=1e-5)
  # At or above the floor the plain proportional update applies, as does a floor of 0.
  for rate, floor in ((0.99, 0.98), (0.5, 0.0)):
    got = losses.eos_bias_update(jnp.float32(0.0), 5.0, 10.0, 0.05, 8.0, jnp.float32(rate), floor)
    np.testing.assert_allclose(float(got), -0.25, rtol=1e-6)


# ----------------------------------------------------------------------------- total


def test_total_from_terms_sums_weighted_and_skips_zero_weights():
  terms = {'a': jnp.float32(2.0), 'b': jnp.float32(np.nan), 'd': jnp.float32(-1.0)}
  weights = {'a': 0.5, 'b': 0.0, 'c': 0, 'd': np.float32(3.0)}
  total, logged = losses.total_from_terms(terms, weights)
  # 0.5 * 2 + 3 * (-1) = -2; 'b' (NaN, weight 0) and 'c' (absent, weight 0) are left out.
  np.testing.assert_allclose(float(total), -2.0, rtol=1e-6)
  assert set(logged) == {'a', 'b', 'c', 'd'}
  assert float(logged['a']) == 2.0 and float(logged['d']) == -1.0
  assert float(logged['b']) == 0.0 and float(logged['c']) == 0.0
  # Only nonzero-weight terms get gradients.
  g = jax.grad(lambda t: losses.total_from_terms(t, {'a': 0.5, 'b': 0.0})[0])(
    {'a': jnp.float32(1.0), 'b': jnp.float32(1.0)}
  )
  assert float(g['a']) == 0.5 and float(g['b']) == 0.0


def test_total_from_terms_errors():
  with pytest.raises(KeyError, match="'a'"):
    losses.total_from_terms({}, {'a': 1.0})  # weighted but not computed
  with pytest.raises(KeyError, match='no weight'):
    losses.total_from_terms({'a': 1.0, 'z': 1.0}, {'a': 1.0})  # computed but no weight
  with pytest.raises(TypeError):
    losses.total_from_terms({'a': 1.0}, {'a': True})
  with pytest.raises(TypeError):
    jax.jit(lambda w: losses.total_from_terms({'a': 1.0}, {'a': w})[0])(1.0)  # traced weight
