"""Tests for pairalign_jax/objective.py: which terms each stage computes, ablations that remove
compute, prefix corruption that never touches the targets, finite gradients for every term.

Tiny sizes: d_model 32, 1+1 layers, K 16, L 8, 0.5 s (50 mel frames of 16 bands), B = 3 pairs.
The loss-function spies below record, at trace time, what the objective hands to
`sequences.sequence_log_likelihood` and `sequences.corrupt_inputs`; the jitted functions return the
recorded arrays, so the checks see the real values of the compiled step.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default as default_config
from pairalign_jax import code_groups
from pairalign_jax import losses
from pairalign_jax import models
from pairalign_jax import objective
from pairalign_jax import sequences
from pairalign_jax import targets as targets_lib
from pairalign_jax import vocab as vocab_lib

B, F, M, K, L = 3, 50, 16, 16, 8
VOCAB = vocab_lib.Vocab(K)
DECODER_TERMS = (
  'cross_tf',
  'self_tf',
  'antibypass',
  'contrast',
  'length',
  'timing',
  'monotonic',
  'coverage',
)
RELU_TERMS = ('monotonic', 'coverage', 'antibypass')  # exactly 0 (and no gradient) when satisfied


def tiny_config(**loss):
  config = default_config.get_config()
  config.audio.segment_seconds = 0.5
  config.length.target_rate = 10.0
  config.frontend.n_mels = M
  config.model.update(
    d_model=32,
    num_heads=2,
    mlp_dim=64,
    enc_layers=1,
    dec_layers=1,
    codebook_size=K,
    code_dim=8,
    max_len=L,
    recon_channels=16,
    dropout_rate=0.0,
  )
  config.targets.min_run_frames = 2
  config.targets.code_groups = 4
  config.loss.update(loss)
  return config


def settings_for(**loss) -> objective.ObjectiveSettings:
  return objective.ObjectiveSettings.from_config(tiny_config(**loss))


# ------------------------------------------------------------------------------ spies

CAPTURE = {}


@pytest.fixture(scope='module', autouse=True)
def spies():
  mp = pytest.MonkeyPatch()
  real_ll, real_corrupt = sequences.sequence_log_likelihood, sequences.corrupt_inputs

  def ll_spy(logits, targets, mask):
    CAPTURE['ll_targets'], CAPTURE['ll_mask'] = targets, mask
    return real_ll(logits, targets, mask)

  def corrupt_spy(rng, inputs, mask, **kw):
    out = real_corrupt(rng, inputs, mask, **kw)
    CAPTURE['clean_inputs'], CAPTURE['corrupt_inputs'] = inputs, out
    return out

  mp.setattr(sequences, 'sequence_log_likelihood', ll_spy)
  mp.setattr(sequences, 'corrupt_inputs', corrupt_spy)
  yield
  mp.undo()


# ------------------------------------------------------------------------------ harness


@pytest.fixture(scope='module')
def setup():
  config = tiny_config()
  model = models.PairAlign(models.ModelConfig.from_config(config))
  rngs = dict(zip(('params', 'dropout', 'vq'), jax.random.split(jax.random.PRNGKey(0), 3)))
  variables = nn.meta.unbox(
    model.init(rngs, jnp.zeros((1, F, M)), jnp.zeros((1, L), jnp.int32), train=False)
  )
  mel = jax.random.normal(jax.random.PRNGKey(1), (2 * B, F, M))
  energy = np.full((2 * B, F), -20.0, np.float32)
  energy[:, 10:41] = 0.0  # voiced 0.10 .. 0.41 s
  mels = {'mel_in': mel, 'mel_clean': mel, 'energy': jnp.asarray(energy)}
  keys = dict(
    zip(
      ('dropout', 'vq', 'corrupt', 'negatives', 'jitter'),
      jax.random.split(jax.random.PRNGKey(2), 5),
    )
  )
  keys['own_times'] = jax.random.PRNGKey(7)
  return model, variables, mels, keys


def _terms_fn(model, settings, stage, grads):
  """(params, vq_stats, mels, targets, rngs) -> (terms, aux, captured[, per-term grads])."""

  def terms_and_aux(params, vq_stats, mels, targets, rngs):
    CAPTURE.clear()
    if targets is not None:  # (tokens, lengths, times): Targets is not a pytree
      targets = targets_lib.Targets(*targets)
    terms, aux = objective.compute_terms(
      model, params, vq_stats, mels, targets, rngs, stage=stage, settings=settings, train=True
    )
    aux = dict(aux)
    if 'targets' in aux:
      aux['targets'] = {
        f.name: getattr(aux['targets'], f.name) for f in dataclasses.fields(targets_lib.Targets)
      }
    return terms, aux, dict(CAPTURE)

  if not grads:
    return terms_and_aux

  def with_grads(params, vq_stats, mels, targets, rngs):
    def vec(p):
      terms, aux, cap = terms_and_aux(p, vq_stats, mels, targets, rngs)
      return jnp.stack([terms[n] for n in sorted(terms)]), (terms, aux, cap)

    jac, (terms, aux, cap) = jax.jacrev(vec, has_aux=True)(params)
    return terms, aux, cap, jac

  return with_grads


@functools.lru_cache(maxsize=None)
def _jitted(model, settings, stage, grads):
  return jax.jit(_terms_fn(model, settings, stage, grads))


def run(setup, settings, stage, *, grads=False, targets=None):
  model, variables, mels, keys = setup
  out = _jitted(model, settings, stage, grads)(
    variables['params'], variables['vq_stats'], mels, targets, keys
  )
  return jax.tree.map(np.asarray, out)


def shapes(setup, settings, stage, targets=None):
  """Shapes only (jax.eval_shape: traced, never compiled)."""
  model, variables, mels, keys = setup
  return jax.eval_shape(
    _terms_fn(model, settings, stage, False),
    variables['params'],
    variables['vq_stats'],
    mels,
    targets,
    keys,
  )


def expected_terms(settings, stage):
  return {n for n in objective.STAGE_TERMS[stage] if settings.weight(n) > 0}


def _norm(tree):
  return float(
    np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree)))
  )


# ------------------------------------------------------------------------------ stages


@pytest.mark.parametrize('stage', [0, 1, 2])
def test_stage_computes_exactly_the_active_weighted_terms(setup, stage):
  settings = settings_for()
  terms, aux, cap = shapes(setup, settings, stage)
  assert set(terms) == expected_terms(settings, stage)
  if stage == 0:
    assert {'recon', 'commit', 'code_pred'} <= set(terms)
    assert not set(terms) & set(DECODER_TERMS)
    assert 'targets' not in aux and not cap  # the decoder is never scored
  elif stage == 1:
    assert {
      'recon',
      'commit',
      'code_pred',
      'cross_tf',
      'length',
      'timing',
      'monotonic',
      'coverage',
    } <= set(terms)
    assert 'self_tf' in terms  # on by default
    assert not set(terms) & {'contrast', 'antibypass'}  # stage 2 only
  else:
    assert {'cross_tf', 'self_tf', 'contrast', 'antibypass', 'timing', 'coverage'} <= set(terms)
  assert all(v.shape == () for v in terms.values())
  assert aux['codes'].shape == (2 * B, F // 2)


@pytest.mark.parametrize('stage', [0, 2])  # stage 2 computes every term of stage 1 as well
def test_every_term_is_finite_with_gradients(setup, stage):
  settings = settings_for()
  terms, aux, _, jac = run(setup, settings, stage, grads=True)
  assert set(terms) == expected_terms(settings, stage)
  # Every term is finite with finite gradients; a term has a nonzero gradient unless it is a
  # hinge that is already satisfied (exactly 0).
  for i, name in enumerate(sorted(terms)):
    value = float(terms[name])
    assert np.isfinite(value), name
    grad = jax.tree.map(lambda g, i=i: g[i], jac)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad)), name
    if name in RELU_TERMS and value == 0.0:
      assert _norm(grad) == 0.0, name
    else:
      assert _norm(grad) > 0.0, name
  # The decoder is only trained from stage 1 on.
  dec_grad = sum(
    _norm(jax.tree.map(lambda g, i=i: g[i], jac['decoder'])) for i in range(len(terms))
  )
  assert (dec_grad > 0) == (stage > 0)
  # The EMA codebook moves in stage 0 only (config.vq.freeze_after_stage0, on by default).
  _, variables, _, _ = setup
  moved = any(
    not np.array_equal(np.asarray(a), b)
    for a, b in zip(jax.tree.leaves(variables['vq_stats']), jax.tree.leaves(aux['vq_stats']))
  )
  assert settings.freeze_codebook_after_stage0 and moved == (stage == 0)


NOISY = dict(prefix_corruption=0.5, corruption_delete=0.2, corruption_duplicate=0.2)


def test_cross_tf_is_the_cross_paired_likelihood(setup):
  """cross_tf = -mean ℓ̄(y1|H2) - mean ℓ̄(y2|H1) of the rows the objective scored."""
  terms, aux, cap = run(setup, settings_for(**NOISY), 1)  # the corruption test's run
  tgt = targets_lib.Targets(**aux['targets'])
  rows = cap['ll_targets']  # [R, L]
  # pos12 rows are y1 (targets[:B]) and pos21 rows are y2 (targets[B:]).
  np.testing.assert_array_equal(rows[:B], tgt.tokens[:B])
  np.testing.assert_array_equal(rows[B : 2 * B], tgt.tokens[B:])
  mask = cap['ll_mask']
  np.testing.assert_array_equal(mask.sum(1)[: 2 * B], tgt.lengths + (tgt.lengths < L))
  # The self rows (on by default) follow: y1|H1, y2|H2, the same targets.
  np.testing.assert_array_equal(rows[2 * B : 4 * B], tgt.tokens)
  assert terms['cross_tf'] > 0  # -log-likelihoods are positive
  # The targets are collapsed VQ codes: runs of the frame codes, EOS, PAD.
  assert np.all(tgt.lengths >= 1) and np.all(tgt.lengths <= L - 1)
  for b in range(2 * B):
    n = int(tgt.lengths[b])
    assert np.all(tgt.tokens[b, :n] < K) and tgt.tokens[b, n] == VOCAB.eos
    assert np.all(np.diff(tgt.tokens[b, :n]) != 0)


# ------------------------------------------------------------------------------ ablations


@pytest.mark.parametrize(
  'name',
  [
    'contrast',
    'antibypass',
    'self_tf',
    'recon',
    'code_pred',
    'length',
    'timing',
    'coverage',
    'cross_tf',
  ],
)
def test_zero_weight_term_is_absent(setup, name):
  on = settings_for(**{f'{name}_weight': 0.7})
  off = settings_for(**{f'{name}_weight': 0.0})
  terms_on = shapes(setup, on, 2)[0]
  terms_off = shapes(setup, off, 2)[0]
  assert name in terms_on and name not in terms_off
  assert set(terms_on) - set(terms_off) == {name}


def _scored_rows(setup, settings):
  return shapes(setup, settings, 2)[2]['ll_targets'].shape[0]


def test_ablation_removes_scored_rows(setup):
  # pos12 + pos21 = 2B; anti-bypass: 2B rolled rows; contrast: B x B (or B x k); self: 2B.
  no_self = dict(self_tf_weight=0.0)
  assert _scored_rows(setup, settings_for(**no_self)) == 2 * B + 2 * B + B * B
  assert _scored_rows(setup, settings_for(contrast_weight=0.0, **no_self)) == 4 * B
  assert _scored_rows(setup, settings_for(antibypass_weight=0.0, **no_self)) == 2 * B + B * B
  assert (
    _scored_rows(setup, settings_for(contrast_weight=0.0, antibypass_weight=0.0, **no_self))
    == 2 * B
  )
  assert _scored_rows(setup, settings_for(contrast_negatives=2, **no_self)) == 4 * B + 2 * B
  assert _scored_rows(setup, settings_for()) == 2 * B + 2 * B + B * B + 2 * B


def test_sampled_negatives_never_pick_the_positive():
  for k in (1, 2):
    settings = settings_for(contrast_negatives=k)
    tgt, cnd, blocks = objective._row_pairs(B, 2, settings, jax.random.PRNGKey(5))
    start, size = blocks['neg']
    assert size == B * k
    t, c = np.asarray(tgt[start : start + size]), np.asarray(cnd[start : start + size])
    np.testing.assert_array_equal(t, np.repeat(np.arange(B), k))  # y1_i ...
    assert np.all(c >= B) and np.all(c - B != t)  # ... under H2_j, j != i
    assert len(set(zip(t.tolist(), c.tolist()))) == B * k  # no repeated pair in a row
  # k = 0: all in-batch conditions in row-major order (S_ij = y1_i | H2_j).
  tgt, cnd, blocks = objective._row_pairs(B, 2, settings_for(), jax.random.PRNGKey(5))
  start, size = blocks['neg']
  np.testing.assert_array_equal(tgt[start : start + size], np.repeat(np.arange(B), B))
  np.testing.assert_array_equal(cnd[start : start + size], B + np.tile(np.arange(B), B))
  s, n = blocks['pos12']
  np.testing.assert_array_equal(cnd[s : s + n], B + np.arange(B))
  s, n = blocks['other12']
  np.testing.assert_array_equal(cnd[s : s + n], B + np.roll(np.arange(B), 1))


def test_contrast_weight_zero_lowers_flops(setup):
  model, variables, mels, keys = setup

  def flops(settings):
    fn = jax.jit(_terms_fn(model, settings, 2, False))
    cost = fn.lower(variables['params'], variables['vq_stats'], mels, None, keys).cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0]
    return float(cost['flops'])

  with_contrast = flops(settings_for())
  without = flops(settings_for(contrast_weight=0.0))
  assert without < 0.9 * with_contrast, (without, with_contrast)


# ------------------------------------------------------------------------------ corruption


def test_prefix_corruption_changes_inputs_never_targets(setup):
  settings = settings_for(**NOISY)
  assert settings.weight('cross_tf') > 0
  terms, aux, cap = run(setup, settings, 1)
  assert (
    'corrupt_inputs' not in shapes(setup, settings_for(prefix_corruption=0.0), 1)[2]
  )  # p = 0: none

  # The loss targets are the VQ-derived target sequences, row for row (pos12 = y1, pos21 = y2) ...
  targets, mask = cap['ll_targets'], cap['ll_mask']
  np.testing.assert_array_equal(targets[: 2 * B], aux['targets']['tokens'])
  vocab_codes = targets_lib.vq_targets(jnp.asarray(aux['codes']), settings.targets, aux['vq_stats'])
  np.testing.assert_array_equal(
    aux['targets']['tokens'], vocab_codes.tokens
  )  # from the codes alone
  # Targets are code groups (targets.code_groups = 4): ids < 4, the codes' groups collapsed.
  groups = code_groups.groups_from_vq_stats(aux['vq_stats'], 4)
  grouped = sequences.collapse_runs(
    code_groups.map_codes(jnp.asarray(aux['codes']), groups),
    0.02,
    max_len=L,
    vocab=VOCAB,
    min_run_frames=2,
  )[0]
  np.testing.assert_array_equal(aux['targets']['tokens'], grouped)
  codes_in_targets = aux['targets']['tokens'][aux['targets']['tokens'] < K]
  assert codes_in_targets.size and codes_in_targets.max() < 4
  # Substituted inputs are drawn from the group ids too.
  assert np.all(cap['corrupt_inputs'][cap['clean_inputs'] != cap['corrupt_inputs']] < 4)
  np.testing.assert_array_equal(aux['targets']['times'], vocab_codes.times)
  # ... and the teacher-forced inputs are the shifted targets with some codes changed.
  clean_in, noisy_in = cap['clean_inputs'], cap['corrupt_inputs']
  np.testing.assert_array_equal(
    clean_in, np.asarray(sequences.shift_right(jnp.asarray(targets), VOCAB))
  )
  changed = clean_in != noisy_in
  assert changed.any()
  assert not changed[:, 0].any() and np.all(noisy_in[:, 0] == VOCAB.bos)  # BOS is never touched
  assert np.all(mask[changed] > 0) and np.all(noisy_in[changed] < K)  # only scored code inputs
  assert np.all(np.isfinite(list(terms.values())))


def test_targets_override_is_what_gets_scored(setup):
  """Stage 2 scores the given (teacher/mixed) targets, not the student's VQ runs."""
  settings = settings_for()
  seqs = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10, 11], [0, 1], [2, 3, 4, 5], []]
  tokens, lengths = sequences.from_lists(seqs, L, VOCAB)
  times = np.where(np.arange(L)[None] < lengths[:, None], 0.05 * (np.arange(L)[None] + 1), 0.0)
  override = (jnp.asarray(tokens), jnp.asarray(lengths), jnp.asarray(times, jnp.float32))
  terms, aux, cap = run(setup, settings, 2, targets=override)
  np.testing.assert_array_equal(aux['targets']['tokens'], tokens)
  np.testing.assert_array_equal(
    cap['ll_targets'][: 2 * B], np.concatenate([tokens[:B], tokens[B:]])
  )
  assert set(terms) == expected_terms(settings, 2)
  assert all(np.isfinite(v) for v in terms.values())
  assert float(aux['mean_target_length']) == pytest.approx(np.mean(lengths))
  assert float(aux['target_at_max_len']) == pytest.approx(np.mean(lengths >= L - 1))
  assert 0 < float(aux['target_at_max_len']) < 1  # the 7-code string fills its L - 1 slots


@pytest.mark.parametrize('after_stage0', [True, False])
def test_code_pred_after_stage0(after_stage0):
  """loss.code_pred_after_stage0=False leaves the code prediction in stage 0 only; the other
  stage-0 terms (one view each) stay on in stages 1-2."""
  config = tiny_config()
  config.loss.code_pred_after_stage0 = after_stage0
  s = objective.ObjectiveSettings.from_config(config)
  w = config.loss.code_pred_weight
  assert w > 0 and s.stage_weights(0)['code_pred'] == w
  for stage in (1, 2):
    weights = s.stage_weights(stage)
    assert weights['code_pred'] == (w if after_stage0 else 0.0)
    assert weights['recon'] == config.loss.recon_weight > 0
    assert weights['cross_tf'] == config.loss.cross_tf_weight > 0


def test_settings_from_config_resolve_min_run_frames():
  s = settings_for()
  assert s.min_run_frames == 2 and s.max_len == L and s.codebook_size == K
  assert s.frame_seconds == pytest.approx(0.02) and s.mel_frame_seconds == pytest.approx(0.01)
  config = tiny_config()
  config.targets.min_run_frames = -1  # 10 tokens/s at 20 ms -> 5
  assert objective.ObjectiveSettings.from_config(config).min_run_frames == 5
  hash(s)
  weights = s.stage_weights(0)
  assert set(weights) == set(objective.TERM_NAMES)
  assert all(weights[n] == 0 for n in objective.TERM_NAMES if n not in objective.STAGE_TERMS[0])
  assert (
    dataclasses.replace(s, weights=tuple((n, 0.0) for n, _ in s.weights)).stage_weights(2)[
      'contrast'
    ]
    == 0
  )


def test_input_times_move_onto_the_condition_views_clock():
  settings = settings_for()
  energy = np.full((4, F), -40.0, np.float32)
  energy[0, 5:25] = 0.0  # view 0 voiced 0.05 .. 0.25 s
  energy[1, 10:50] = 0.0  # view 1 voiced 0.10 .. 0.50 s (twice as long, later)
  energy[2:, :] = 0.0
  times = jnp.asarray([[0.05, 0.15, 0.25, 0.0], [0.05, 0.15, 0.25, 0.0]], jnp.float32)
  tgt, cnd = jnp.asarray([0, 0]), jnp.asarray([0, 1])
  start, end = (
    np.asarray(x)
    for x in losses.voiced_region(jnp.asarray(energy), 0.01, objective.VOICED_THRESHOLD_DB)
  )
  out = np.asarray(
    objective._times_on_condition_clock(
      times, tgt, cnd, jnp.asarray(start), jnp.asarray(end), settings
    )
  )
  np.testing.assert_allclose(out[0], times[0])  # self row: unchanged
  expected = start[1] + (np.asarray(times[1, :3]) - start[0]) * (end[1] - start[1]) / (
    end[0] - start[0]
  )
  np.testing.assert_allclose(out[1, :3], expected, atol=1e-6)  # linear map of the voiced regions
  assert out[1, 3] == 0.0  # EOS/PAD stay 0
  assert expected[0] == pytest.approx(start[1]) and expected[2] == pytest.approx(end[1])


def test_own_input_times_are_the_decoders_own_pass_by_pass(setup):
  model, variables, mels, _ = setup
  h = model.apply(variables, mels['mel_in'], train=False, method=models.PairAlign.encode)
  cond = model.apply(variables, h, method=models.PairAlign.condition)
  rows = 2 * B
  cnd_idx = jnp.arange(rows)[::-1]
  inputs = (
    jax.random.randint(jax.random.PRNGKey(3), (rows, L), 0, K).at[:, 0].set(vocab_lib.Vocab(K).bos)
  )
  true_times = (
    jnp.tile(jnp.linspace(0.0, 0.4, L)[None], (rows, 1)).at[:, -2:].set(0.0)
  )  # [R, L], PAD at 0
  rng = jax.random.PRNGKey(5)

  def own(prob, passes):
    settings = dataclasses.replace(settings_for(), own_time_prob=prob, own_time_passes=passes)
    return np.asarray(
      objective.own_input_times(
        model, variables, models.gather_condition(cond, cnd_idx), inputs, true_times, rng, settings
      )
    )

  def one_pass(times_in):
    _, out = model.apply(
      variables,
      models.gather_condition(cond, cnd_idx),
      inputs,
      train=False,
      input_times=times_in,
      method=models.PairAlign.score,
    )
    return jnp.where(true_times > 0, sequences.shift_times(out), 0.0)

  first = one_pass(true_times)
  np.testing.assert_allclose(own(1.0, 1), first, atol=1e-6)
  np.testing.assert_allclose(own(1.0, 2), one_pass(first), atol=1e-6)  # pass 2 reads pass 1's times
  assert not np.allclose(own(1.0, 1), true_times, atol=1e-3)  # they are not the true times
  np.testing.assert_array_equal(own(0.0, 2), true_times)
  assert (own(1.0, 2)[np.asarray(true_times) == 0] == 0).all()  # BOS / PAD stay at 0
  mixed = own(0.5, 1)
  is_own = [np.allclose(r, f, atol=1e-6) for r, f in zip(mixed, np.asarray(first))]
  is_true = [np.array_equal(r, t) for r, t in zip(mixed, np.asarray(true_times))]
  assert all(a or b for a, b in zip(is_own, is_true))  # whole rows, one or the other
  assert sum(is_own) == rows // 2  # round(0.5 * rows) rows, the ones own_time_rows draws
  assert [i for i, o in enumerate(is_own) if o] == list(
    np.asarray(objective.own_time_rows(rng, rows, 0.5))
  )
  np.testing.assert_array_equal(mixed, own(0.5, 1))  # deterministic in the key


@pytest.mark.parametrize(
  'rows, prob, expected',
  [(8, 0.5, 4), (8, 1.0, 8), (8, 0.0, 0), (7, 0.5, 4), (3, 0.1, 1), (64, 0.25, 16)],
)
def test_own_time_rows_are_a_fixed_count_of_distinct_rows(rows, prob, expected):
  got = np.asarray(objective.own_time_rows(jax.random.PRNGKey(1), rows, prob))
  assert got.shape == (expected,) and got.dtype == np.int32
  assert len(set(got.tolist())) == expected and (np.diff(got) > 0).all()  # distinct, sorted
  assert ((got >= 0) & (got < rows)).all()
  draws = {
    tuple(np.asarray(objective.own_time_rows(jax.random.PRNGKey(k), 8, 0.5))) for k in range(8)
  }
  assert len(draws) > 1  # the key chooses the rows


def test_own_time_rows_train_with_finite_gradients_and_change_the_loss(setup):
  base = run(setup, settings_for(), 1, grads=True)
  own = run(setup, settings_for(own_time_prob=1.0, own_time_passes=2), 1, grads=True)
  for terms, _, _, jac in (base, own):
    assert all(np.isfinite(v) for v in terms.values())
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jac))
  assert own[0]['self_tf'] != pytest.approx(base[0]['self_tf'], abs=1e-7)


def test_sequence_losses_can_leave_the_encoder_to_the_stage0_terms(setup):
  """With loss.sequence_losses_train_encoder=False, no stage-1 sequence term sends a gradient into
  the encoder, the stage-0 terms still do, and every term's value is unchanged."""
  on = run(setup, settings_for(), 1, grads=True)
  off = run(setup, settings_for(sequence_losses_train_encoder=False), 1, grads=True)
  names = sorted(on[0])
  assert names == sorted(off[0])
  for i, name in enumerate(names):
    assert float(on[0][name]) == pytest.approx(float(off[0][name]), rel=1e-6), name
    enc_on = _norm(jax.tree.map(lambda g, i=i: g[i], on[3]['encoder']))
    enc_off = _norm(jax.tree.map(lambda g, i=i: g[i], off[3]['encoder']))
    if name in ('recon', 'commit', 'code_pred'):
      assert enc_off == pytest.approx(enc_on, rel=1e-5) and enc_off > 0, name
    else:
      assert enc_off == 0.0, name
      if name in ('cross_tf', 'self_tf'):
        assert enc_on > 0, name


def test_adapter_layers_learn_from_the_sequence_terms_when_the_encoder_does_not(setup):
  """model.adapter_layers > 0 with loss.sequence_losses_train_encoder=False: the decoder-side
  layers get gradients from the sequence terms (and none from the stage-0 terms), the encoder
  only from the stage-0 terms."""
  _, _, mels, keys = setup
  config = tiny_config(sequence_losses_train_encoder=False)
  config.model.adapter_layers = 2
  model = models.PairAlign(models.ModelConfig.from_config(config))
  rngs = dict(zip(('params', 'dropout', 'vq'), jax.random.split(jax.random.PRNGKey(0), 3)))
  variables = nn.meta.unbox(
    model.init(rngs, jnp.zeros((1, F, M)), jnp.zeros((1, L), jnp.int32), train=False)
  )
  assert {'adapter', 'adapter_ln'} <= set(variables['params']['decoder'])
  settings = objective.ObjectiveSettings.from_config(config)
  terms, _, _, jac = jax.tree.map(
    np.asarray,
    _jitted(model, settings, 1, True)(variables['params'], variables['vq_stats'], mels, None, keys),
  )
  names = sorted(terms)
  for i, name in enumerate(names):
    enc = _norm(jax.tree.map(lambda g, i=i: g[i], jac['encoder']))
    adapter = _norm(jax.tree.map(lambda g, i=i: g[i], jac['decoder']['adapter']))
    if name in ('recon', 'commit', 'code_pred'):
      assert enc > 0 and adapter == 0.0, name
    elif name in ('cross_tf', 'self_tf'):
      assert enc == 0.0 and adapter > 0, name


def test_decoder_reads_codes_embedding_learns_from_the_sequence_terms_only(setup):
  """model.decoder_reads_codes with loss.sequence_losses_train_encoder=False: the code embedding
  the decoder reads gets gradients from the teacher-forcing terms and none from the stage-0
  terms, and the encoder still none from the sequence terms (the codes are read without a
  gradient)."""
  _, _, mels, keys = setup
  config = tiny_config(sequence_losses_train_encoder=False)
  config.model.decoder_reads_codes = True
  model = models.PairAlign(models.ModelConfig.from_config(config))
  rngs = dict(zip(('params', 'dropout', 'vq'), jax.random.split(jax.random.PRNGKey(0), 3)))
  variables = nn.meta.unbox(
    model.init(rngs, jnp.zeros((1, F, M)), jnp.zeros((1, L), jnp.int32), train=False)
  )
  settings = objective.ObjectiveSettings.from_config(config)
  terms, _, _, jac = jax.tree.map(
    np.asarray,
    _jitted(model, settings, 1, True)(variables['params'], variables['vq_stats'], mels, None, keys),
  )
  for i, name in enumerate(sorted(terms)):
    enc = _norm(jax.tree.map(lambda g, i=i: g[i], jac['encoder']))
    embed = _norm(jax.tree.map(lambda g, i=i: g[i], jac['code_embed']))
    if name in ('recon', 'commit', 'code_pred'):
      assert enc > 0 and embed == 0.0, name
    elif name in ('cross_tf', 'self_tf'):
      assert enc == 0.0 and embed > 0, name


def stage2_teacher_targets(model, variables, mels):
  """`objective.teacher_targets` at stage 2, EOS bias 0.5 and alpha 0, given only settings."""
  return functools.partial(
    objective.teacher_targets,
    model,
    variables,
    mels['mel_clean'],
    stage=2,
    eos_bias=jnp.float32(0.5),
    alpha=jnp.float32(0.0),
    rng=jax.random.PRNGKey(3),
  )


def test_stage2_without_controller_or_teacher_share_decodes_nothing(setup):
  """max_alpha = 0 and controller_gain = 0: stage 2's targets are the VQ strings the decoding
  path also returns at alpha 0, the EOS bias is returned as given, and no decode is run."""
  model, variables, mels, _ = setup
  settings = settings_for()
  call = stage2_teacher_targets(model, variables, mels)
  decoded, _, metrics = call(settings)
  assert 'teacher/tokens_per_second' in metrics
  calls = []
  real = objective.decode.greedy_decode
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(objective.decode, 'greedy_decode', lambda *a, **k: calls.append(1) or real(*a, **k))
    plain, bias, metrics = call(dataclasses.replace(settings, teacher_decodes=False))
  assert not calls and metrics == {} and float(bias) == 0.5
  np.testing.assert_array_equal(plain.tokens, decoded.tokens)
  np.testing.assert_array_equal(plain.lengths, decoded.lengths)
  np.testing.assert_allclose(plain.times, decoded.times)
  assert objective.ObjectiveSettings.from_config(tiny_config()).teacher_decodes
  config = tiny_config()
  config.schedule.max_alpha = 0.0
  config.length.controller_gain = 0.0
  assert not objective.ObjectiveSettings.from_config(config).teacher_decodes


def test_controller_decode_rows_decode_a_strided_subset_for_the_controller_only(setup):
  model, variables, mels, _ = setup
  settings = settings_for()
  call = stage2_teacher_targets(model, variables, mels)
  every, bias_every, metrics_every = call(settings)
  same, bias_same, metrics_same = call(dataclasses.replace(settings, controller_decode_rows=2 * B))
  np.testing.assert_array_equal(every.tokens, same.tokens)  # stride 1: every row, as before
  assert float(bias_same) == float(bias_every)
  assert float(metrics_same['teacher/tokens_per_second']) == pytest.approx(
    float(metrics_every['teacher/tokens_per_second'])
  )
  sub, bias_sub, metrics_sub = call(dataclasses.replace(settings, controller_decode_rows=2))
  np.testing.assert_array_equal(sub.tokens, every.tokens)  # the targets stay the VQ strings
  np.testing.assert_array_equal(sub.lengths, every.lengths)
  h = model.apply(variables, mels['mel_clean'], train=False, method=models.PairAlign.encode)
  dec = objective.decode.greedy_decode(
    model, variables, h[::B], max_len=settings.max_len, eos_bias=jnp.float32(0.5)
  )  # rows 0 and B: one of each view
  expected = float(np.mean(np.asarray(dec.lengths, np.float32))) / settings.segment_seconds
  assert float(metrics_sub['teacher/tokens_per_second']) == pytest.approx(expected, rel=1e-6)
