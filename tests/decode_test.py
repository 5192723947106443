"""Tests for pairalign_jax/decode.py: the cached greedy decode agrees with teacher forcing.

Tiny model (d_model 32, 1 encoder + 2 decoder layers, K 16, L 12), with the location-aware
cross-attention on and its bias tables set to random values (they start at 0), so the feedback of
each step's time into the next step is exercised. The conditions H are random [B, T, d] arrays (the
decoder only sees H through `PairAlign.condition`).
"""

import dataclasses
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from configs import default as default_config
from pairalign_jax import decode
from pairalign_jax import models
from pairalign_jax import sequences
from pairalign_jax import vocab as vocab_lib

B, T, K, L = 4, 25, 16, 12
VOCAB = vocab_lib.Vocab(K)
NO_EOS, NOW = -1e4, 1e4


def tiny_cfg() -> models.ModelConfig:
  config = default_config.get_config()
  config.model.update(
    d_model=32,
    num_heads=2,
    mlp_dim=64,
    enc_layers=1,
    dec_layers=2,
    codebook_size=K,
    code_dim=8,
    max_len=L,
    recon_channels=16,
    dropout_rate=0.0,
    time_bias_frames=4,
  )
  return models.ModelConfig.from_config(config)


def _randomize_time_bias(variables):
  leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
  found = [jax.tree_util.keystr(p) for p, _ in leaves if 'time_bias' in jax.tree_util.keystr(p)]
  assert found, 'the tiny model has no location bias'
  keys = iter(jax.random.split(jax.random.PRNGKey(7), len(leaves)))
  return jax.tree_util.tree_map_with_path(
    lambda p, x: (
      2.0 * jax.random.normal(next(keys), x.shape) if 'time_bias' in jax.tree_util.keystr(p) else x
    ),
    variables,
  )


@pytest.fixture(scope='module')
def tiny():
  cfg = tiny_cfg()
  model = models.PairAlign(cfg)
  rngs = dict(zip(('params', 'dropout', 'vq'), jax.random.split(jax.random.PRNGKey(0), 3)))
  variables = nn.meta.unbox(
    model.init(rngs, jnp.zeros((1, 2 * T, cfg.n_mels)), jnp.zeros((1, L), jnp.int32), train=False)
  )
  variables = _randomize_time_bias(variables)
  hcond = jax.random.normal(jax.random.PRNGKey(1), (B, T, cfg.d_model))
  return model, variables, hcond


@pytest.fixture(scope='module')
def tiny_unrolled(tiny):
  """The tiny model with model.scan_layers=False (per-layer caches) and the same parameters."""
  model, variables, hcond = tiny
  assert model.cfg.scan_layers
  unrolled = models.PairAlign(dataclasses.replace(model.cfg, scan_layers=False, remat=False))
  params = models.unstack_layers(variables['params'])
  expected = jax.eval_shape(
    lambda: unrolled.init(
      jax.random.PRNGKey(0),
      jnp.zeros((1, 2 * T, unrolled.cfg.n_mels)),
      jnp.zeros((1, L), jnp.int32),
      train=False,
    )
  )['params']
  assert jax.tree.structure(nn.meta.unbox(expected)) == jax.tree.structure(params)
  return unrolled, {**variables, 'params': params}, hcond


@functools.lru_cache(maxsize=None)
def _jitted(model, max_len, recompute=False):
  fn = decode.greedy_decode_recompute if recompute else decode.greedy_decode
  return jax.jit(lambda v, h, bias: fn(model, v, h, max_len=max_len, eos_bias=bias))


@functools.lru_cache(maxsize=None)
def _jitted_score(model):
  def score(v, h, tokens, times):
    cond = model.apply(v, h, method=models.PairAlign.condition)
    return model.apply(
      v,
      cond,
      sequences.shift_right(tokens, VOCAB),
      False,
      sequences.shift_times(times),
      method=models.PairAlign.score,
    )

  return jax.jit(score)


def _np(out: decode.DecodeOutput):
  return jax.tree.map(np.asarray, out)


def _eos_margin(logits):
  """[B, L] best-code logit minus EOS logit (EOS wins when eos_bias exceeds it)."""
  logits = np.asarray(logits, np.float64)
  return logits[..., :K].max(-1) - logits[..., VOCAB.eos]


def _bias_ending_at(margin_row, t_max):
  """An eos_bias whose decode stops at some step in [1, t_max] (not at 0), and that step.

  The prefix of a decode does not depend on the bias until EOS, so EOS comes at the first step
  whose margin is below the bias.
  """
  running = np.minimum.accumulate(margin_row)
  candidates = [t for t in range(1, t_max + 1) if margin_row[t] < running[t - 1] - 0.02]
  if not candidates:
    return None, None
  t = candidates[-1]
  bias = margin_row[t] + 0.01
  return bias, int(np.argmax(margin_row < bias))


def check_sequence_invariants(out, max_len):
  """tokens: codes, then EOS, then PAD only; lengths/terminated/times consistent with them."""
  tokens, lengths, term, times = out.tokens, out.lengths, out.terminated, out.times
  assert tokens.shape == (B, max_len) and tokens.dtype == np.int32
  assert out.logits is None or out.logits.shape == (B, max_len, VOCAB.size)
  assert times.shape == (B, max_len)
  assert lengths.dtype == np.int32 and term.dtype == np.bool_
  assert not np.any(tokens == VOCAB.bos)
  for b in range(B):
    row, n = tokens[b], int(lengths[b])
    assert np.all(row[:n] < K), row
    if term[b]:
      assert n < max_len and row[n] == VOCAB.eos, row
      assert np.all(row[n + 1 :] == VOCAB.pad), row
    else:
      assert n == max_len and not np.any(row == VOCAB.eos), row
    assert np.sum(row == VOCAB.eos) == int(term[b])
    np.testing.assert_array_equal(times[b][row == VOCAB.pad], 0.0)
    assert np.all(times[b][row != VOCAB.pad] > 0)  # attention times are positive


def _biases(model, variables, hcond, max_len):
  """A per-row eos_bias vector: row 0 never stops, row 1 stops at once, rows 2-3 end early."""
  free = _np(_jitted(model, max_len)(variables, hcond, jnp.full((B,), NO_EOS)))
  margin = _eos_margin(free.logits)  # [B, L]
  bias = np.full((B,), NO_EOS, np.float32)
  bias[1] = NOW
  expected = {0: max_len, 1: 0}
  for b in (2, 3):
    if max_len > 1:
      value, stop = _bias_ending_at(margin[b], max_len - 1)
      if value is not None:
        bias[b], expected[b] = value, stop
  return jnp.asarray(bias), expected, free


@pytest.mark.parametrize('max_len', [1, 5, L])
def test_cached_logits_equal_teacher_forced_logits(tiny, max_len):
  model, variables, hcond = tiny
  bias, expected, _ = _biases(model, variables, hcond, max_len)
  out = _np(_jitted(model, max_len)(variables, hcond, bias))
  check_sequence_invariants(out, max_len)
  for b, n in expected.items():
    assert out.lengths[b] == n, (b, out.tokens[b])
  if max_len == L:  # the construction gives rows that end early, not at once (tiny model: checked)
    assert any(0 < out.lengths[b] < max_len for b in (2, 3)), out.lengths

  # Teacher forcing with the decode's own times as the input times reproduces every step.
  logits, times = _jitted_score(model)(
    variables, hcond, jnp.asarray(out.tokens), jnp.asarray(out.times)
  )
  logits, times = np.asarray(logits), np.asarray(times)
  mask = (
    np.asarray(sequences.score_mask(jnp.asarray(out.tokens), jnp.asarray(out.lengths), VOCAB)) > 0
  )
  assert mask.sum() == (out.lengths + out.terminated).sum()
  np.testing.assert_allclose(out.logits[mask], logits[mask], atol=1e-4, rtol=0)
  np.testing.assert_allclose(out.times[mask], times[mask], atol=1e-4, rtol=0)
  # Forced decoding of the same tokens (how Tokenizer.score runs) gives the same logits and times.
  forced_logits, forced_times = jax.jit(functools.partial(decode.forced_decode, model))(
    variables, hcond, jnp.asarray(out.tokens)
  )
  np.testing.assert_allclose(np.asarray(forced_logits)[mask], out.logits[mask], atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(forced_times), out.times, atol=1e-4, rtol=0)
  # The times matter: teacher forcing with all input times at 0 gives other logits.
  zero_logits, _ = _jitted_score(model)(
    variables, hcond, jnp.asarray(out.tokens), jnp.zeros(out.times.shape)
  )
  if max_len > 1:
    assert not np.allclose(np.asarray(zero_logits)[mask], out.logits[mask], atol=1e-3)

  # Greedy: each emitted token is the argmax of the biased logits (BOS/PAD never chosen).
  biased = out.logits.copy()
  biased[:, :, VOCAB.eos] += np.asarray(bias)[:, None]
  biased[:, :, [VOCAB.bos, VOCAB.pad]] = -np.inf
  np.testing.assert_array_equal(np.argmax(biased, -1)[mask], out.tokens[mask])


def _assert_reproduced_from_fed_times(tiny, out, fed_times, **feed):
  """A greedy decode `out` (numpy) that fed back `fed_times` [B, L] as input times: teacher
  forcing with those input times gives its logits, and forced_decode with the same `feed`
  (run_centres= or token_runs=) its logits and times."""
  model, variables, hcond = tiny
  tokens = jnp.asarray(out.tokens)
  logits, _ = _jitted_score(model)(variables, hcond, tokens, jnp.asarray(fed_times))
  np.testing.assert_allclose(out.logits, np.asarray(logits), atol=1e-4, rtol=0)
  forced_logits, forced_times = jax.jit(
    lambda v, h, tok, f: decode.forced_decode(model, v, h, tok, **f)
  )(variables, hcond, tokens, feed)
  np.testing.assert_allclose(np.asarray(forced_logits), out.logits, atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(forced_times), out.times, atol=1e-4, rtol=0)


def test_snapped_times_feed_back_the_run_centres(tiny):
  """greedy_decode with run_centres: each step is fed the centre of the run its previous time
  falls in, so teacher forcing with those snapped times as input times reproduces every step;
  forced_decode with the same run centres agrees, and the times change the decode."""
  model, variables, hcond = tiny
  fs = model.cfg.frame_seconds
  codes = jnp.asarray(np.random.default_rng(0).integers(0, 3, (B, T)), jnp.int32)  # [B, T]
  centres = sequences.frame_run_centres(codes, fs)  # [B, T]
  bias = jnp.full((B,), NO_EOS)  # every row runs to L: no PAD positions
  decode_fn = jax.jit(
    lambda v, h, rc: decode.greedy_decode(model, v, h, max_len=L, eos_bias=bias, run_centres=rc)
  )
  out = _np(decode_fn(variables, hcond, centres))
  assert (out.lengths == L).all()
  snapped = np.stack(
    [np.asarray(sequences.snap_to_run_centres(out.times[:, t], centres, fs)) for t in range(L)], 1
  )  # [B, L]
  assert np.isin(snapped, np.asarray(centres)).all()
  _assert_reproduced_from_fed_times(tiny, out, snapped, run_centres=centres)
  plain, _ = jax.jit(functools.partial(decode.forced_decode, model))(
    variables, hcond, jnp.asarray(out.tokens)
  )
  assert not np.allclose(np.asarray(plain), out.logits, atol=1e-3)


def test_aligned_times_feed_back_the_time_of_the_run_each_token_is_placed_on(tiny):
  """greedy_decode with token_runs: each step is fed the time of the run its token is placed on
  (`sequences.align_to_runs`, replayed here step by step), or its own time where no run of its
  code is near; teacher forcing with those input times reproduces every step, forced_decode with
  the same runs agrees, and both kinds of step occur."""
  model, variables, hcond = tiny
  fs = model.cfg.frame_seconds
  codes = jnp.asarray(np.random.default_rng(1).integers(0, 4, (B, T)), jnp.int32)  # [B, T]
  run_tokens, run_lengths, run_times, _ = sequences.collapse_runs(
    codes, fs, max_len=T + 1, vocab=VOCAB
  )
  runs = decode.TokenRuns(tokens=run_tokens, times=run_times, lengths=run_lengths, tolerance=3 * fs)
  bias = jnp.full((B,), NO_EOS)  # every row runs to L: no PAD positions
  decode_fn = jax.jit(
    lambda v, h, r: decode.greedy_decode(model, v, h, max_len=L, eos_bias=bias, token_runs=r)
  )
  out = _np(decode_fn(variables, hcond, runs))
  assert (out.lengths == L).all()
  fed, last = [], jnp.full((B,), -1, jnp.int32)
  for t in range(L):
    time, last = sequences.align_to_runs(
      jnp.asarray(out.tokens[:, t]),
      jnp.asarray(out.times[:, t]),
      last,
      run_tokens,
      run_times,
      run_lengths,
      3 * fs,
    )
    fed.append(np.asarray(time))
  fed = np.stack(fed, 1)  # [B, L]
  placed = ~np.isclose(fed, out.times, atol=1e-6)
  assert placed.any() and (~placed).any()
  assert np.isin(fed[placed], np.asarray(run_times)).all()
  _assert_reproduced_from_fed_times(tiny, out, fed, token_runs=runs)
  with pytest.raises(ValueError, match='pass one'):
    decode.greedy_decode(
      model,
      variables,
      hcond,
      max_len=L,
      run_centres=sequences.frame_run_centres(codes, fs),
      token_runs=runs,
    )


def test_choosing_from_runs_picks_only_codes_of_runs_it_can_be_placed_on(tiny):
  """TokenRuns.choose_from_runs: every token greedy writes is one that `run_token_mask` allows at
  its step (a code of a run after the previous placement within the tolerance of the decoder's
  time, or any token where there is none), replayed step by step; the aligned times are fed as
  without the choice; and the choice changes the strings (the tiny model's own choice is mostly
  a code no run near it has)."""
  model, variables, hcond = tiny
  fs = model.cfg.frame_seconds
  codes = jnp.asarray(np.random.default_rng(1).integers(0, 4, (B, T)), jnp.int32)  # [B, T]
  run_tokens, run_lengths, run_times, _ = sequences.collapse_runs(
    codes, fs, max_len=T + 1, vocab=VOCAB
  )
  kwargs = dict(tokens=run_tokens, times=run_times, lengths=run_lengths, tolerance=3 * fs)
  bias = jnp.full((B,), NO_EOS)
  decode_fn = jax.jit(
    lambda v, h, r: decode.greedy_decode(model, v, h, max_len=L, eos_bias=bias, token_runs=r)
  )
  choosing = decode.TokenRuns(**kwargs, choose_from_runs=True)
  free = _np(decode_fn(variables, hcond, decode.TokenRuns(**kwargs)))
  out = _np(decode_fn(variables, hcond, choosing))
  assert (out.lengths == L).all()
  last, constrained = jnp.full((B,), -1, jnp.int32), 0
  for t in range(L):
    time, token = jnp.asarray(out.times[:, t]), jnp.asarray(out.tokens[:, t])
    allowed = np.asarray(choosing.allowed(time, last, model.cfg.vocab_size))  # [B, V]
    assert allowed[np.arange(B), out.tokens[:, t]].all(), t
    constrained += int((~allowed.all(axis=1)).sum())
    _, last = choosing.place(token, time, last)
  assert constrained > 0
  assert (
    np.isin(out.tokens[out.tokens < K], np.arange(4)).mean()
    > np.isin(free.tokens[free.tokens < K], np.arange(4)).mean()
  )
  assert not np.array_equal(out.tokens, free.tokens)


def test_ending_at_the_last_run_stops_right_after_a_token_is_placed_there(tiny):
  """TokenRuns.end_after_last_run: a row writes what it writes without the rule up to the step
  whose token is placed on the audio's last run (replayed step by step with `place`), then EOS;
  a row that never gets there is unchanged. Scoring a given string (forced_decode) ignores it."""
  model, variables, hcond = tiny
  fs = model.cfg.frame_seconds
  bias = jnp.full((B,), NO_EOS)
  decode_fn = jax.jit(
    lambda v, h, r: decode.greedy_decode(model, v, h, max_len=L, eos_bias=bias, token_runs=r)
  )
  # Rows 0-1: one run, of the code the decoder writes first (its first step does not depend on
  # the runs), so its first token is placed on the last run; rows 2-3: a run every frame or two.
  first = np.asarray(decode_fn(variables, hcond, None).tokens[:, 0])
  codes = np.random.default_rng(2).integers(0, 4, (B, T))
  codes[:2] = first[:2, None]
  run_tokens, run_lengths, run_times, _ = sequences.collapse_runs(
    jnp.asarray(codes, jnp.int32), fs, max_len=T + 1, vocab=VOCAB
  )
  kwargs = dict(tokens=run_tokens, times=run_times, lengths=run_lengths, tolerance=T * fs)
  free_runs = decode.TokenRuns(**kwargs)
  ending_runs = decode.TokenRuns(**kwargs, end_after_last_run=True)
  free = _np(decode_fn(variables, hcond, free_runs))
  out = _np(decode_fn(variables, hcond, ending_runs))
  assert (free.lengths == L).all()
  last, end_step = jnp.full((B,), -1, jnp.int32), np.full(B, -1)
  for t in range(L):
    _, last = free_runs.place(jnp.asarray(free.tokens[:, t]), jnp.asarray(free.times[:, t]), last)
    reached = np.asarray(ending_runs.at_end(last)) & (end_step < 0)
    end_step[reached] = t
  ends = (end_step >= 0) & (end_step < L - 1)
  assert ends[:2].all() and (end_step[:2] == 0).all()
  for b in range(B):
    e = end_step[b]
    if 0 <= e < L - 1:
      np.testing.assert_array_equal(out.tokens[b, : e + 1], free.tokens[b, : e + 1])
      assert out.tokens[b, e + 1] == VOCAB.eos and out.lengths[b] == e + 1 and out.terminated[b]
    else:
      np.testing.assert_array_equal(out.tokens[b], free.tokens[b])
  given = jnp.asarray(np.where(free.tokens < K, free.tokens, 0))
  scored = [
    np.asarray(decode.forced_decode(model, variables, hcond, given, token_runs=r)[0])
    for r in (free_runs, ending_runs)
  ]
  np.testing.assert_array_equal(scored[0], scored[1])


@pytest.mark.parametrize('max_len,scan', [(5, True), (L, True), (L, False)])
def test_recompute_oracle_gives_identical_tokens(tiny, tiny_unrolled, max_len, scan):
  model, variables, hcond = tiny if scan else tiny_unrolled
  bias, _, _ = _biases(model, variables, hcond, max_len)
  cached = _np(_jitted(model, max_len)(variables, hcond, bias))
  ref = _np(_jitted(model, max_len, recompute=True)(variables, hcond, bias))
  check_sequence_invariants(ref, max_len)
  np.testing.assert_array_equal(cached.tokens, ref.tokens)
  np.testing.assert_array_equal(cached.lengths, ref.lengths)
  np.testing.assert_array_equal(cached.terminated, ref.terminated)
  mask = cached.tokens != VOCAB.pad
  np.testing.assert_allclose(cached.logits[mask], ref.logits[mask], atol=1e-4, rtol=0)
  np.testing.assert_allclose(cached.times, ref.times, atol=1e-4, rtol=0)


def test_huge_eos_bias_stops_at_once_and_negative_never(tiny):
  model, variables, hcond = tiny
  # A scalar bias (eager, not jitted) is broadcast to every row.
  now = _np(decode.greedy_decode(model, variables, hcond, max_len=L, eos_bias=NOW))
  check_sequence_invariants(now, L)
  np.testing.assert_array_equal(now.lengths, 0)
  assert now.terminated.all()
  np.testing.assert_array_equal(now.tokens[:, 0], VOCAB.eos)
  np.testing.assert_array_equal(now.tokens[:, 1:], VOCAB.pad)
  np.testing.assert_array_equal(now.times[:, 1:], 0.0)

  never = _np(_jitted(model, L)(variables, hcond, jnp.full((B,), NO_EOS)))
  check_sequence_invariants(never, L)
  np.testing.assert_array_equal(never.lengths, L)
  assert not never.terminated.any()
  assert np.all(never.tokens < K)
  # The bias does not change the raw logits: step 0 sees the same input (BOS) either way.
  np.testing.assert_allclose(now.logits[:, 0], never.logits[:, 0], atol=1e-5)


def test_eos_bias_is_per_row(tiny):
  model, variables, hcond = tiny
  bias = jnp.asarray([NOW, NO_EOS, NOW, NO_EOS])
  out = _np(_jitted(model, L)(variables, hcond, bias))
  np.testing.assert_array_equal(out.lengths, [0, L, 0, L])
  np.testing.assert_array_equal(out.terminated, [True, False, True, False])
  # A frozen row does not disturb the others: rows 1 and 3 decode as without any EOS.
  free = _np(_jitted(model, L)(variables, hcond, jnp.full((B,), NO_EOS)))
  np.testing.assert_array_equal(out.tokens[[1, 3]], free.tokens[[1, 3]])


@functools.lru_cache(maxsize=None)
def _jitted_beam(model, max_len, beam_size, length_penalty=0.0):
  return jax.jit(
    lambda v, h, bias: decode.beam_decode(
      model,
      v,
      h,
      max_len=max_len,
      beam_size=beam_size,
      eos_bias=bias,
      length_penalty=length_penalty,
    )
  )


def _forced_log_prob(model, variables, hcond, out, bias):
  """Sum over emitted tokens (codes and EOS) of log p under the decode rule (EOS biased, BOS/PAD
  excluded), with the decoder's own times fed back (forced decoding). [B]"""
  logits, times = jax.jit(functools.partial(decode.forced_decode, model))(
    variables, hcond, jnp.asarray(out.tokens)
  )
  biased = np.asarray(logits, np.float64).copy()
  biased[:, :, VOCAB.eos] += np.asarray(bias, np.float64)[:, None]
  biased[:, :, [VOCAB.bos, VOCAB.pad]] = -np.inf
  logp = scipy.special.log_softmax(biased, axis=-1)
  mask = out.tokens != VOCAB.pad
  picked = np.take_along_axis(logp, out.tokens[..., None].astype(np.int64), -1)[..., 0]
  return np.where(mask, picked, 0.0).sum(-1), np.asarray(times)


def test_beam_of_one_is_greedy(tiny):
  model, variables, hcond = tiny
  bias, _, _ = _biases(model, variables, hcond, L)
  greedy = _np(_jitted(model, L)(variables, hcond, bias))
  beam = _np(_jitted_beam(model, L, 1)(variables, hcond, bias))
  check_sequence_invariants(beam, L)
  np.testing.assert_array_equal(beam.tokens, greedy.tokens)
  np.testing.assert_array_equal(beam.lengths, greedy.lengths)
  np.testing.assert_array_equal(beam.terminated, greedy.terminated)
  np.testing.assert_allclose(beam.times, greedy.times, atol=1e-5, rtol=0)


def test_beam_finds_the_best_two_token_string(tiny):
  """With EOS ruled out, max_len 2 and a beam as wide as the codebook, beam search is exhaustive:
  it must return the most likely of all K * K strings (each scored by forced decoding)."""
  model, variables, hcond = tiny
  bias = jnp.full((B,), NO_EOS)
  beam = _np(_jitted_beam(model, 2, K)(variables, hcond, bias))
  check_sequence_invariants(beam, 2)
  pairs = np.stack(np.meshgrid(np.arange(K), np.arange(K), indexing='ij'), -1).reshape(
    -1, 2
  )  # [K*K, 2]
  best = []
  for b in range(B):
    h = jnp.repeat(hcond[b : b + 1], len(pairs), axis=0)
    cand = decode.DecodeOutput(
      tokens=pairs.astype(np.int32), lengths=None, terminated=None, logits=None, times=None
    )
    lp, _ = _forced_log_prob(model, variables, h, cand, np.full((len(pairs),), NO_EOS))
    best.append(pairs[int(np.argmax(lp))])
  np.testing.assert_array_equal(beam.tokens, np.stack(best))
  greedy = _np(_jitted(model, 2)(variables, hcond, bias))
  beam_lp, _ = _forced_log_prob(model, variables, hcond, beam, bias)
  greedy_lp, _ = _forced_log_prob(model, variables, hcond, greedy, bias)
  assert np.all(beam_lp >= greedy_lp - 1e-4)
  assert np.any(beam_lp > greedy_lp + 1e-4), (
    'the tiny model should have a row where greedy is not best'
  )


@pytest.mark.parametrize('length_penalty', [0.0, 1.0])
def test_beam_strings_and_times_are_their_own(tiny, length_penalty):
  """Beam reordering keeps each beam's tokens, times and cache together: forced decoding of the
  returned string reproduces its times, and the string is at least as likely as greedy's
  (plain log-probability; K = 4 keeps greedy's prefix on this tiny model)."""
  model, variables, hcond = tiny
  bias, _, _ = _biases(model, variables, hcond, L)
  beam = _np(_jitted_beam(model, L, 4, length_penalty)(variables, hcond, bias))
  check_sequence_invariants(beam, L)
  beam_lp, forced_times = _forced_log_prob(model, variables, hcond, beam, bias)
  np.testing.assert_allclose(
    beam.times, np.where(beam.tokens == VOCAB.pad, 0.0, forced_times), atol=1e-4, rtol=0
  )
  np.testing.assert_array_equal(beam.lengths[:2], [L, 0])  # the never-stop and stop-at-once rows
  if length_penalty == 0.0:
    greedy = _np(_jitted(model, L)(variables, hcond, bias))
    greedy_lp, _ = _forced_log_prob(model, variables, hcond, greedy, bias)
    assert np.all(beam_lp >= greedy_lp - 1e-4), (beam_lp, greedy_lp)


def test_beam_bad_arguments_raise(tiny):
  model, variables, hcond = tiny
  with pytest.raises(ValueError, match='beam_size'):
    decode.beam_decode(model, variables, hcond, max_len=4, beam_size=0)
  with pytest.raises(ValueError, match='beam_size'):
    decode.beam_decode(model, variables, hcond, max_len=4, beam_size=K + 1)
  with pytest.raises(ValueError, match='length_penalty'):
    decode.beam_decode(model, variables, hcond, max_len=4, beam_size=2, length_penalty=-1.0)
  with pytest.raises(ValueError, match='max_len'):
    decode.beam_decode(model, variables, hcond, max_len=L + 1, beam_size=2)


def test_bad_shapes_and_max_len_raise(tiny):
  model, variables, hcond = tiny
  for fn in (decode.greedy_decode, decode.greedy_decode_recompute):
    with pytest.raises(ValueError, match='H must be'):
      fn(model, variables, hcond[0], max_len=4)
    with pytest.raises(ValueError, match='max_len'):
      fn(model, variables, hcond, max_len=0)
    with pytest.raises(ValueError, match='max_len'):
      fn(model, variables, hcond, max_len=L + 1)
    with pytest.raises(ValueError, match='eos_bias'):
      fn(model, variables, hcond, max_len=4, eos_bias=jnp.zeros((B + 1,)))
    with pytest.raises(ValueError, match='eos_bias'):
      fn(model, variables, hcond, max_len=4, eos_bias=jnp.zeros((B, 1)))


def test_shift_right_and_shift_times():
  tokens = jnp.asarray([[3, 4, VOCAB.eos, VOCAB.pad], [1, 2, 3, 4]], jnp.int32)
  expected = [[VOCAB.bos, 3, 4, VOCAB.eos], [VOCAB.bos, 1, 2, 3]]
  np.testing.assert_array_equal(sequences.shift_right(tokens, VOCAB), expected)
  times = jnp.asarray([[0.1, 0.5, 0.9, 0.0]], jnp.float32)
  np.testing.assert_allclose(sequences.shift_times(times), [[0.0, 0.1, 0.5, 0.9]])


def test_early_exit_equals_the_full_length_scan(tiny):
  """The while loop that stops once every row has ended gives the scan's tokens and times, and
  its logits at every scored position (up to and including EOS)."""
  model, variables, hcond = tiny
  # Every row ends early (at different steps), so the loop stops before max_len.
  free = _np(_jitted(model, L)(variables, hcond, jnp.full((B,), NO_EOS)))
  margin = _eos_margin(free.logits)
  bias = np.full((B,), NOW, np.float32)
  for b in range(B):
    value, _ = _bias_ending_at(margin[b], L // 2)
    if value is not None:
      bias[b] = value

  def run(early):
    return _np(
      jax.jit(
        lambda v, h, e: decode.greedy_decode(model, v, h, max_len=L, eos_bias=e, early_exit=early)
      )(variables, hcond, jnp.asarray(bias))
    )

  fast, full = run(True), run(False)
  assert fast.terminated.all() and fast.lengths.max() < L - 1  # the loop did stop early
  np.testing.assert_array_equal(fast.tokens, full.tokens)
  np.testing.assert_array_equal(fast.times, full.times)
  np.testing.assert_array_equal(fast.lengths, full.lengths)
  for b in range(B):
    n = int(fast.lengths[b]) + 1  # codes and EOS
    np.testing.assert_allclose(fast.logits[b, :n], full.logits[b, :n], rtol=1e-6, atol=1e-6)
  # Past the last step run, the loop leaves logits at 0.
  assert np.all(fast.logits[:, fast.lengths.max() + 1 :] == 0.0)
  check_sequence_invariants(fast, L)


def test_cache_layout_and_one_position_written_per_step(tiny, tiny_unrolled):
  """Stacked cache with scan_layers, one per layer without; a step writes exactly its position,
  reads the positions before it and never the ones after; both layouts compute the same step."""
  model, variables, hcond = tiny
  unrolled, unrolled_vars, _ = tiny_unrolled
  hd = model.cfg.head_dim
  stacked = models.init_cache(model.cfg, B, L)
  assert set(stacked) == {'k', 'v'}
  assert all(a.shape == (2, B, 2, L, hd) and not a.any() for a in stacked.values())
  per_layer = models.init_cache(unrolled.cfg, B, L)
  assert isinstance(per_layer, tuple) and len(per_layer) == 2
  assert all(set(c) == {'k', 'v'} for c in per_layer)
  assert all(a.shape == (B, 2, L, hd) for c in per_layer for a in c.values())

  pos = 5
  keys = iter(jax.random.split(jax.random.PRNGKey(11), 4))
  stacked = {n: jax.random.normal(next(keys), (2, B, 2, L, hd)) for n in ('k', 'v')}
  token = jax.random.randint(next(keys), (B,), 0, K)
  prev_time = jax.random.uniform(next(keys), (B,), maxval=0.4)

  def step(m, v, cache):
    cond = m.apply(v, hcond, method=models.PairAlign.condition)
    return m.apply(v, cond, cache, token, pos, prev_time, method=models.PairAlign.decode_step)

  logits, times, new = jax.jit(functools.partial(step, model, variables))(stacked)
  assert jax.tree.structure(new) == jax.tree.structure(stacked)
  for n in ('k', 'v'):
    old, got = np.asarray(stacked[n]), np.asarray(new[n])
    np.testing.assert_array_equal(np.delete(got, pos, axis=3), np.delete(old, pos, axis=3))
    assert not np.any(got[:, :, :, pos] == old[:, :, :, pos])

  # The per-layer layout: the same step, the same cache written.
  split = tuple({n: stacked[n][i] for n in ('k', 'v')} for i in range(2))
  u_logits, u_times, u_new = jax.jit(functools.partial(step, unrolled, unrolled_vars))(split)
  assert jax.tree.structure(u_new) == jax.tree.structure(split)
  np.testing.assert_allclose(np.asarray(u_logits), np.asarray(logits), atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(u_times), np.asarray(times), atol=1e-6, rtol=0)
  for i in range(2):
    for n in ('k', 'v'):
      np.testing.assert_allclose(
        np.asarray(u_new[i][n]), np.asarray(new[n][i]), atol=1e-6, rtol=2e-6
      )

  # Positions after `pos` are masked; the ones before are read.
  later = {n: a.at[:, :, :, pos + 1 :].set(50.0) for n, a in stacked.items()}
  np.testing.assert_allclose(
    np.asarray(jax.jit(functools.partial(step, model, variables))(later)[0]),
    np.asarray(logits),
    atol=1e-6,
    rtol=0,
  )
  earlier = {n: a.at[:, :, :, pos - 1].set(50.0) for n, a in stacked.items()}
  assert not np.allclose(
    np.asarray(jax.jit(functools.partial(step, model, variables))(earlier)[0]),
    np.asarray(logits),
    atol=1e-3,
  )
  with pytest.raises(ValueError, match='one dict per layer'):
    step(unrolled, unrolled_vars, stacked)
  # The unrolled step also takes the condition split once per layer (as the decode loops pass it).
  cond = unrolled.apply(unrolled_vars, hcond, method=models.PairAlign.condition)
  s_logits, _, s_new = jax.jit(
    lambda c, cache: unrolled.apply(
      unrolled_vars, c, cache, token, pos, prev_time, method=models.PairAlign.decode_step
    )
  )(models.split_condition(cond), split)
  np.testing.assert_allclose(np.asarray(s_logits), np.asarray(u_logits), atol=1e-5, rtol=0)
  chex.assert_trees_all_close(s_new, u_new, atol=1e-5)


def test_unrolled_layers_decode_as_the_scan(tiny, tiny_unrolled):
  """A model built with model.scan_layers=False decodes as the scanned one (whose stacked
  parameters the decode loops split with models.unrolled): greedy, beam (whose per-step reorder
  gathers every layer's cache) and forced decoding."""
  model, variables, hcond = tiny
  unrolled, unrolled_vars, _ = tiny_unrolled
  bias, _, _ = _biases(model, variables, hcond, L)
  greedy = _np(_jitted(model, L)(variables, hcond, bias))
  u_greedy = _np(_jitted(unrolled, L)(unrolled_vars, hcond, bias))
  np.testing.assert_array_equal(u_greedy.tokens, greedy.tokens)
  np.testing.assert_allclose(u_greedy.times, greedy.times, atol=1e-5, rtol=0)
  u_beam1 = _np(_jitted_beam(unrolled, L, 1)(unrolled_vars, hcond, bias))
  np.testing.assert_array_equal(u_beam1.tokens, greedy.tokens)
  np.testing.assert_allclose(u_beam1.times, greedy.times, atol=1e-5, rtol=0)
  beam = _np(_jitted_beam(model, L, 4)(variables, hcond, bias))
  u_beam = _np(_jitted_beam(unrolled, L, 4)(unrolled_vars, hcond, bias))
  np.testing.assert_array_equal(u_beam.tokens, beam.tokens)
  np.testing.assert_allclose(u_beam.times, beam.times, atol=1e-5, rtol=0)
  forced = jax.jit(functools.partial(decode.forced_decode, model))(
    variables, hcond, jnp.asarray(beam.tokens)
  )
  u_forced = jax.jit(functools.partial(decode.forced_decode, unrolled))(
    unrolled_vars, hcond, jnp.asarray(beam.tokens)
  )
  for a, b in zip(u_forced, forced):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=0)


@pytest.fixture(scope='module')
def tiny_pointer():
  """The tiny model with the pointer time head (model.time_head='pointer'), random location
  biases in the cross-attention and in the pointer."""
  cfg = dataclasses.replace(tiny_cfg(), time_head='pointer')
  model = models.PairAlign(cfg)
  variables = nn.meta.unbox(
    model.init(
      jax.random.PRNGKey(3), jnp.zeros((1, 2 * T, cfg.n_mels)), jnp.zeros((1, L), jnp.int32)
    )
  )
  variables = _randomize_time_bias(variables)
  pointer = variables['params']['decoder']['time_pointer']
  pointer['location_bias'] = 2.0 * jax.random.normal(
    jax.random.PRNGKey(8), pointer['location_bias'].shape
  )
  hcond = jax.random.normal(jax.random.PRNGKey(1), (B, T, cfg.d_model))
  return model, variables, hcond


def test_pointer_time_head_decodes_whole_frames_as_teacher_forcing_does(tiny_pointer):
  """model.time_head='pointer': every decoded token's time is the centre of one encoder frame
  (the pointer's most likely frame), and the cached decode, the recompute oracle, teacher forcing
  fed the decode's own times, forced decoding and the unrolled model all give the same tokens,
  logits and times."""
  model, variables, hcond = tiny_pointer
  bias, _, _ = _biases(model, variables, hcond, L)
  out = _np(_jitted(model, L)(variables, hcond, bias))
  check_sequence_invariants(out, L)
  mask = (
    np.asarray(sequences.score_mask(jnp.asarray(out.tokens), jnp.asarray(out.lengths), VOCAB)) > 0
  )
  assert (out.lengths > 1).any()
  frame_s = model.cfg.frame_seconds
  frames = out.times[mask] / frame_s - 0.5
  np.testing.assert_allclose(frames, np.round(frames), atol=1e-4)
  assert len(np.unique(np.round(frames))) > 1  # not one frame for every token
  ref = _np(_jitted(model, L, recompute=True)(variables, hcond, bias))
  np.testing.assert_array_equal(ref.tokens, out.tokens)
  np.testing.assert_allclose(ref.times, out.times, atol=1e-5, rtol=0)
  logits, times = _jitted_score(model)(
    variables, hcond, jnp.asarray(out.tokens), jnp.asarray(out.times)
  )
  np.testing.assert_allclose(np.asarray(logits)[mask], out.logits[mask], atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(times)[mask], out.times[mask], atol=1e-5, rtol=0)
  _, forced_times = jax.jit(functools.partial(decode.forced_decode, model))(
    variables, hcond, jnp.asarray(out.tokens)
  )
  np.testing.assert_allclose(np.asarray(forced_times), out.times, atol=1e-5, rtol=0)
  flat, flat_vars = models.unrolled(model, variables)
  u_out = _np(_jitted(flat, L)(flat_vars, hcond, bias))
  np.testing.assert_array_equal(u_out.tokens, out.tokens)
  np.testing.assert_allclose(u_out.times, out.times, atol=1e-5, rtol=0)


def test_previous_layer_anchor_decodes_as_teacher_forcing_does(tiny_unrolled):
  """model.location_anchor='previous_layer' (each decoder layer's location bias centred on the
  time the layer before it found): the same parameters as the unrolled tiny model give other
  strings, and the cached decode, the recompute oracle, teacher forcing fed the decode's own times
  and forced decoding agree, as with the input-time anchor."""
  base, variables, hcond = tiny_unrolled
  model = models.PairAlign(dataclasses.replace(base.cfg, location_anchor='previous_layer'))
  bias, _, _ = _biases(model, variables, hcond, L)
  out = _np(_jitted(model, L)(variables, hcond, bias))
  check_sequence_invariants(out, L)
  assert (out.lengths > 1).any()
  base_logits, _ = _jitted_score(base)(
    variables, hcond, jnp.asarray(out.tokens), jnp.asarray(out.times)
  )
  logits, times = _jitted_score(model)(
    variables, hcond, jnp.asarray(out.tokens), jnp.asarray(out.times)
  )
  mask = (
    np.asarray(sequences.score_mask(jnp.asarray(out.tokens), jnp.asarray(out.lengths), VOCAB)) > 0
  )
  assert not np.allclose(np.asarray(base_logits)[mask], np.asarray(logits)[mask], atol=1e-3)
  np.testing.assert_allclose(np.asarray(logits)[mask], out.logits[mask], atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(times)[mask], out.times[mask], atol=1e-4, rtol=0)
  ref = _np(_jitted(model, L, recompute=True)(variables, hcond, bias))
  np.testing.assert_array_equal(ref.tokens, out.tokens)
  np.testing.assert_allclose(ref.times, out.times, atol=1e-4, rtol=0)
  forced_logits, forced_times = jax.jit(functools.partial(decode.forced_decode, model))(
    variables, hcond, jnp.asarray(out.tokens)
  )
  np.testing.assert_allclose(np.asarray(forced_logits)[mask], out.logits[mask], atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(forced_times), out.times, atol=1e-4, rtol=0)
