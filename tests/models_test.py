"""Tests for pairalign_jax.models (tiny sizes: d_model 32, 2+2 layers, K 16, L 12, 0.5 s)."""

import dataclasses
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default as default_config
from pairalign_jax import models
from pairalign_jax import vocab as vocab_lib

B, F, M, L, K = 3, 50, 80, 12, 16  # 0.5 s of 10 ms frames


def tiny_cfg(**kw) -> models.ModelConfig:
  config = default_config.get_config()
  config.model.update(
    d_model=32,
    num_heads=2,
    mlp_dim=64,
    enc_layers=2,
    dec_layers=2,
    codebook_size=K,
    code_dim=8,
    max_len=L,
    recon_channels=16,
    time_bias_frames=0,
  )
  return dataclasses.replace(models.ModelConfig.from_config(config), **kw)


def init(cfg, seed=0):
  model = models.PairAlign(cfg)
  mel = jnp.zeros((1, F, M))
  tokens = jnp.zeros((1, cfg.max_len), jnp.int32)
  rngs = dict(zip(('params', 'dropout', 'vq'), jax.random.split(jax.random.PRNGKey(seed), 3)))
  # Jitted: one compiled program instead of hundreds of op-by-op dispatches (the same values).
  boxed = jax.jit(functools.partial(model.init, train=False))(rngs, mel, tokens)
  return model, boxed, nn.meta.unbox(boxed)


@pytest.fixture(scope='module')
def tiny():
  return init(tiny_cfg())


def _mel(seed=1, b=B):
  return jax.random.normal(jax.random.PRNGKey(seed), (b, F, M))


def _tokens(seed, b, lengths, k=K, length=L):
  """[b, L] sequences with the given number of codes, then EOS, then PAD."""
  v = vocab_lib.Vocab(k)
  codes = np.asarray(jax.random.randint(jax.random.PRNGKey(seed), (b, length), 0, k))
  pos = np.arange(length)[None]
  n = np.asarray(lengths)[:, None]
  return jnp.asarray(np.where(pos < n, codes, np.where(pos == n, v.eos, v.pad)), jnp.int32)


def _shift_right(tokens, k=K):
  return jnp.concatenate(
    [jnp.full((tokens.shape[0], 1), vocab_lib.Vocab(k).bos, jnp.int32), tokens[:, :-1]], axis=1
  )


# ---------------------------------------------------------------------------------------- config
def test_from_config_default():
  cfg = models.ModelConfig.from_config(default_config.get_config())
  assert (cfg.d_model, cfg.enc_layers, cfg.dec_layers, cfg.codebook_size) == (256, 6, 4, 512)
  assert cfg.frame_seconds == pytest.approx(0.02) and cfg.enc_max_frames == 150
  assert cfg.vocab_size == 515 and cfg.head_dim == 64
  hash(cfg)


def test_bad_config_raises():
  with pytest.raises(ValueError, match='num_heads'):
    tiny_cfg(num_heads=5)
  with pytest.raises(ValueError, match='subsample'):
    tiny_cfg(subsample=3)
  with pytest.raises(ValueError, match='dtype'):
    tiny_cfg(dtype='float16')


# ---------------------------------------------------------------------------------------- shapes
def test_shapes_and_dtypes(tiny):
  model, _, v = tiny
  cfg = model.cfg
  mel = _mel()
  h = model.apply(v, mel, method=models.PairAlign.encode)
  chex.assert_shape(h, (B, F // 2, 32))
  chex.assert_type(h, jnp.float32)
  vq = model.apply(v, h, method=models.PairAlign.quantize)
  chex.assert_shape([vq.codes, vq.quantized, vq.z], [(B, 25), (B, 25, 8), (B, 25, 8)])
  chex.assert_type(vq.codes, jnp.int32)
  assert vq.commit_loss.shape == () and vq.perplexity.shape == ()
  assert 1.0 <= float(vq.perplexity) <= K
  np.testing.assert_allclose(np.linalg.norm(vq.z, axis=-1), 1.0, atol=1e-4)
  chex.assert_shape(model.apply(v, vq.quantized, method=models.PairAlign.reconstruct), (B, F, M))
  chex.assert_shape(
    model.apply(v, vq.quantized, 53, method=models.PairAlign.reconstruct), (B, 53, M)
  )
  chex.assert_shape(model.apply(v, h, method=models.PairAlign.predict_codes), (B, 25, K))
  chex.assert_shape(model.apply(v, h, method=models.PairAlign.predict_length), (B,))
  cond = model.apply(v, h, method=models.PairAlign.condition)
  chex.assert_shape([cond['k'], cond['v']], [(2, B, 2, 25, 16)] * 2)
  inputs = _shift_right(_tokens(0, B, [3, 0, L]))
  logits, times = model.apply(v, cond, inputs, False, method=models.PairAlign.score)
  chex.assert_shape([logits, times], [(B, L, cfg.vocab_size), (B, L)])
  chex.assert_type([logits, times], [jnp.float32, jnp.float32])
  assert np.all(times > 0) and np.all(times < 25 * cfg.frame_seconds)
  # Shorter sequences score too (any L' <= max_len).
  chex.assert_shape(
    model.apply(v, cond, inputs[:, :5], False, method=models.PairAlign.score)[0],
    (B, 5, cfg.vocab_size),
  )


def test_subsample_4_and_learned_positions():
  model, _, v = init(
    tiny_cfg(subsample=4, enc_positions='learned', enc_max_frames=12, frame_seconds=0.04)
  )
  h = model.apply(v, _mel(), method=models.PairAlign.encode)
  chex.assert_shape(h, (B, 12, 32))  # 50 // 4
  vq = model.apply(v, h, method=models.PairAlign.quantize)
  chex.assert_shape(model.apply(v, vq.quantized, F, method=models.PairAlign.reconstruct), (B, F, M))
  with pytest.raises(ValueError, match='position table'):
    model.apply(v, jnp.zeros((1, 80, M)), method=models.PairAlign.encode)


def test_bad_inputs_raise(tiny):
  model, _, v = tiny
  with pytest.raises(ValueError, match='mel must be'):
    model.apply(v, jnp.zeros((2, 50, 40)), method=models.PairAlign.encode)
  h = model.apply(v, _mel(), method=models.PairAlign.encode)
  cond = model.apply(v, h, method=models.PairAlign.condition)
  with pytest.raises(ValueError, match='max_len'):
    model.apply(v, cond, jnp.zeros((B, L + 1), jnp.int32), False, method=models.PairAlign.score)
  with pytest.raises(ValueError, match='gather_condition'):
    model.apply(v, cond, jnp.zeros((B + 1, L), jnp.int32), False, method=models.PairAlign.score)


def test_count_params_boxed_and_unboxed(tiny):
  _, boxed, v = tiny
  n = models.count_params(v['params'])
  assert n == models.count_params(boxed['params'])
  assert n == sum(x.size for x in jax.tree.leaves(v['params']))
  # Scan-stacked layers carry the 'layers' logical axis.
  kernel = boxed['params']['decoder']['layers']['self_query']['kernel']
  assert kernel.names == ('layers', 'embed', 'heads', 'kv')
  assert boxed['vq_stats']['vq']['cluster_size'].names == ('codebook',)


# ---------------------------------------------------------------------------------------- gradients
def _loss(model, params, vq_stats, mel, tokens, rng):
  v = {'params': params, 'vq_stats': vq_stats}
  d_rng, q_rng = jax.random.split(rng)
  h = model.apply(v, mel, True, method=models.PairAlign.encode, rngs={'dropout': d_rng})
  vq, _ = model.apply(
    v, h, True, method=models.PairAlign.quantize, mutable=['vq_stats'], rngs={'vq': q_rng}
  )
  recon = model.apply(v, vq.quantized, mel.shape[1], method=models.PairAlign.reconstruct)
  code_logits = model.apply(v, h, method=models.PairAlign.predict_codes)
  length = model.apply(v, h, method=models.PairAlign.predict_length)
  cond = model.apply(v, h, method=models.PairAlign.condition)
  # Cross pairing: row i's tokens under row (i+1)'s condition.
  cond = models.gather_condition(cond, jnp.roll(jnp.arange(mel.shape[0]), 1))
  logits, times = model.apply(
    v, cond, _shift_right(tokens), True, method=models.PairAlign.score, rngs={'dropout': d_rng}
  )
  ll = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], -1)
  return (
    -jnp.mean(ll)
    + jnp.mean((recon - mel) ** 2)
    + vq.commit_loss
    + jnp.mean(times)
    + jnp.mean(jax.nn.log_softmax(code_logits)[..., 0])
    + jnp.mean(length**2)
  )


def test_gradients_finite_and_nonzero(tiny):
  model, _, v = tiny
  tokens = _tokens(2, B, [4, 7, L])
  grads = jax.jit(
    jax.grad(lambda p: _loss(model, p, v['vq_stats'], _mel(), tokens, jax.random.PRNGKey(0)))
  )(v['params'])
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
  for sub in ('encoder', 'decoder', 'vq', 'mel_decoder', 'code_head', 'length_out'):
    norm = float(optax_global_norm(grads[sub]))
    assert norm > 0, sub
  assert float(optax_global_norm(grads['vq']['proj'])) > 0  # through the straight-through path
  assert float(optax_global_norm(grads['decoder']['cross_kv'])) > 0


def optax_global_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def test_straight_through_gradient_is_identity(tiny):
  model, _, v = tiny
  h = model.apply(v, _mel(), method=models.PairAlign.encode)
  w = jax.random.normal(jax.random.PRNGKey(5), (B, 25, 8))

  def via(field):
    return lambda hh: jnp.sum(
      w * getattr(model.apply(v, hh, method=models.PairAlign.quantize), field)
    )

  g_q, g_z = jax.grad(via('quantized'))(h), jax.grad(via('z'))(h)
  np.testing.assert_allclose(g_q, g_z, atol=1e-6)
  assert float(jnp.max(jnp.abs(g_q))) > 0
  # And the value is the code vector.
  vq = model.apply(v, h, method=models.PairAlign.quantize)
  codebook = v['vq_stats']['vq']['codebook']
  np.testing.assert_allclose(vq.quantized, codebook[vq.codes], atol=1e-6)
  np.testing.assert_allclose(
    vq.commit_loss, np.mean(np.sum((np.asarray(vq.z) - codebook[vq.codes]) ** 2, -1)), rtol=1e-5
  )


# ---------------------------------------------------------------------------------------- VQ / EMA
def test_ema_update_formula_hand_made():
  cs = jnp.array([1.0, 2.0, 0.5])
  es = jnp.array([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]])
  z = jnp.array([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])
  onehot = jax.nn.one_hot(jnp.array([0, 0, 1]), 3)
  decay, eps = 0.9, 0.1
  new_cs, new_es, new_cb = models.ema_codebook_update(cs, es, onehot, z, decay=decay, epsilon=eps)
  exp_cs = np.array([0.9 * 1 + 0.1 * 2, 0.9 * 2 + 0.1 * 1, 0.9 * 0.5])
  exp_es = np.array([[0.9 + 0.1 * 1.6, 0.1 * 0.8], [0.0, 1.8 + 0.1], [0.45, 0.45]])
  n = exp_cs.sum()
  smoothed = (exp_cs + eps) / (n + 3 * eps) * n
  mean = exp_es / smoothed[:, None]
  np.testing.assert_allclose(new_cs, exp_cs, rtol=1e-6)
  np.testing.assert_allclose(new_es, exp_es, rtol=1e-6)
  np.testing.assert_allclose(new_cb, mean / np.linalg.norm(mean, axis=1, keepdims=True), rtol=1e-5)


def test_quantize_applies_ema_only_when_training_and_mutable(tiny):
  model, _, v = tiny
  cfg = dataclasses.replace(model.cfg, vq_reseed=False)
  model = models.PairAlign(cfg)
  h = model.apply(v, _mel(), method=models.PairAlign.encode)
  vq, mutated = model.apply(
    v,
    h,
    True,
    method=models.PairAlign.quantize,
    mutable=['vq_stats'],
    rngs={'vq': jax.random.PRNGKey(0)},
  )
  old = v['vq_stats']['vq']
  onehot = jax.nn.one_hot(vq.codes.reshape(-1), K)
  exp = models.ema_codebook_update(
    old['cluster_size'],
    old['embed_sum'],
    onehot,
    vq.z.reshape(-1, 8),
    decay=cfg.vq_ema_decay,
    epsilon=cfg.vq_epsilon,
  )
  new = mutated['vq_stats']['vq']
  for name, e in zip(('cluster_size', 'embed_sum', 'codebook'), exp):
    np.testing.assert_allclose(new[name], e, rtol=1e-5, atol=1e-7)
  assert not np.allclose(new['codebook'], old['codebook'])
  # train=False with mutable: unchanged; train=True without mutable: runs, no 'vq' rng needed.
  _, same = model.apply(v, h, False, method=models.PairAlign.quantize, mutable=['vq_stats'])
  chex.assert_trees_all_equal(same['vq_stats'], v['vq_stats'])
  model.apply(v, h, True, method=models.PairAlign.quantize)


def test_dead_codes_are_reseeded_from_batch(tiny):
  model, _, v = tiny
  dead = np.array([0, 5, 9])
  stats = jax.tree.map(lambda x: x, v['vq_stats'])
  stats['vq']['cluster_size'] = jnp.full((K,), 100.0).at[dead].set(0.0)  # live codes well used
  # Make codes 0/5/9 unreachable so they stay unused this step.
  stats['vq']['codebook'] = stats['vq']['codebook'].at[dead].set(0.0)
  vars_ = {'params': v['params'], 'vq_stats': stats}
  h = model.apply(vars_, _mel(), method=models.PairAlign.encode)
  vq, mutated = model.apply(
    vars_,
    h,
    True,
    method=models.PairAlign.quantize,
    mutable=['vq_stats'],
    rngs={'vq': jax.random.PRNGKey(3)},
  )
  assert not np.isin(np.asarray(vq.codes), dead).any()
  new = mutated['vq_stats']['vq']
  z = np.asarray(vq.z).reshape(-1, 8)
  restart = 2.0 * model.cfg.dead_code_threshold
  for k in dead:
    assert new['cluster_size'][k] == restart
    dist = np.min(np.linalg.norm(z - np.asarray(new['codebook'][k]), axis=1))
    assert dist < 1e-6, f'code {k} was not re-seeded from a batch vector'
  live = np.setdiff1d(np.arange(K), dead)
  # Live codes follow the EMA: decay * 100 + (1 - decay) * (frames assigned), never re-seeded.
  decay = model.cfg.vq_ema_decay
  assert np.all(np.asarray(new['cluster_size'])[live] >= decay * 100.0)
  np.testing.assert_allclose(
    np.asarray(new['cluster_size'])[live].sum(),
    decay * 100.0 * len(live) + (1 - decay) * z.shape[0],
    rtol=1e-5,
  )
  # Without re-seeding they stay dead.
  off = models.PairAlign(dataclasses.replace(model.cfg, vq_reseed=False))
  _, m2 = off.apply(
    vars_,
    h,
    True,
    method=models.PairAlign.quantize,
    mutable=['vq_stats'],
    rngs={'vq': jax.random.PRNGKey(3)},
  )
  np.testing.assert_array_equal(np.asarray(m2['vq_stats']['vq']['cluster_size'])[dead], 0.0)


# ---------------------------------------------------------------------------------------- decoder
def test_padding_never_changes_scores(tiny):
  model, _, v = tiny
  h = model.apply(v, _mel(), method=models.PairAlign.encode)
  cond = model.apply(v, h, method=models.PairAlign.condition)
  lengths = np.array([2, 5, 0])
  tokens = _tokens(3, B, lengths)
  other = _tokens(4, B, lengths)
  # Replace everything after each row's EOS with random tokens (codes, BOS, PAD...).
  junk = jax.random.randint(jax.random.PRNGKey(9), (B, L), 0, K + 3)
  after = np.arange(L)[None] > lengths[:, None]
  tokens2 = jnp.where(after, junk, tokens)
  del other
  s1 = model.apply(v, cond, _shift_right(tokens), False, method=models.PairAlign.score)
  s2 = model.apply(v, cond, _shift_right(tokens2), False, method=models.PairAlign.score)
  scored = ~after  # t <= n_b
  for a, b in zip(s1, s2):
    np.testing.assert_allclose(np.asarray(a)[scored], np.asarray(b)[scored], atol=1e-6)
  assert not np.allclose(np.asarray(s1[0])[after], np.asarray(s2[0])[after])


def test_gather_condition_equals_conditioning_gathered_rows(tiny):
  model, _, v = tiny
  h = model.apply(v, _mel(), method=models.PairAlign.encode)
  idx = jnp.array([2, 0, 0, 1, 2])
  cond = models.gather_condition(model.apply(v, h, method=models.PairAlign.condition), idx)
  direct = model.apply(v, h[idx], method=models.PairAlign.condition)
  chex.assert_trees_all_close(cond, direct, atol=1e-6)
  inputs = _shift_right(_tokens(6, 5, [1, 2, 3, 4, 5]))
  np.testing.assert_allclose(
    model.apply(v, cond, inputs, False, method=models.PairAlign.score)[0],
    model.apply(v, direct, inputs, False, method=models.PairAlign.score)[0],
    atol=1e-5,
  )


# (False, False) is configs/synthetic.py's model; (True, False) compares gradients too; (False,
# True) (slow) adds remat to the unrolled layers.
@pytest.mark.parametrize(
  'scan,remat', [(False, False), pytest.param(False, True, marks=pytest.mark.slow), (True, False)]
)
def test_scan_and_remat_give_same_outputs(tiny, scan, remat):
  model, _, v = tiny  # scan_layers=True, remat=True
  other = models.PairAlign(dataclasses.replace(model.cfg, scan_layers=scan, remat=remat))
  _, _, v_other = init(other.cfg)
  params = v['params'] if scan else models.unstack_layers(v['params'])
  chex.assert_trees_all_equal_shapes(params, v_other['params'])
  v2 = {'params': params, 'vq_stats': v['vq_stats']}
  tokens = _tokens(7, B, [3, 6, 1])

  @functools.partial(jax.jit, static_argnums=0)
  def run(m, var):
    h = m.apply(var, _mel(), method=models.PairAlign.encode)
    cond = m.apply(var, h, method=models.PairAlign.condition)
    return h, m.apply(var, cond, _shift_right(tokens), False, method=models.PairAlign.score)

  @functools.partial(jax.jit, static_argnums=0)
  def grads(m, p):
    return jax.grad(lambda q: _loss(m, q, v['vq_stats'], _mel(), tokens, jax.random.PRNGKey(0)))(p)

  chex.assert_trees_all_close(run(model, v), run(other, v2), atol=1e-5)
  g1, g2 = grads(model, v['params']), grads(other, params)
  if scan:  # same rng splitting: identical gradients (remat only changes what is stored)
    chex.assert_trees_all_close(g1, g2, atol=1e-5)


@pytest.mark.parametrize('scan', [True, False])
@pytest.mark.parametrize('policy', ['weight_matmuls', 'matmuls'])
def test_remat_policies_give_the_gradients_of_no_remat(tiny, scan, policy):
  """model.remat_policy only changes what the backward pass keeps: the loss gradients equal those
  of the same model without remat (scanned and unrolled layers, dropout on)."""
  model, _, v = tiny
  params = v['params'] if scan else models.unstack_layers(v['params'])
  tokens = _tokens(7, B, [3, 6, 1])

  def grads(**kw):
    m = models.PairAlign(dataclasses.replace(model.cfg, scan_layers=scan, **kw))

    def loss(p):
      return _loss(m, p, v['vq_stats'], _mel(), tokens, jax.random.PRNGKey(0))

    return jax.value_and_grad(loss)(params)

  no_remat = grads(remat=False)
  with_policy = grads(remat=True, remat_policy=policy)
  chex.assert_trees_all_close(with_policy, no_remat, atol=1e-5)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(no_remat[1])) > 0


def test_unknown_remat_policy_is_refused():
  with pytest.raises(ValueError, match='model.remat_policy must be one of'):
    tiny_cfg(remat_policy='dots')


def test_unrolled_is_the_same_model_with_per_layer_parameters():
  """models.unrolled: the parameter tree of a model initialized with scan_layers=False (encoder,
  decoder, cross K/V and adapter layers), and the same outputs."""
  cfg = tiny_cfg(adapter_layers=2, time_bias_frames=3)
  model, _, v = init(cfg)
  flat, flat_v = models.unrolled(model, v)
  assert not flat.cfg.scan_layers and not flat.cfg.remat
  assert flat.cfg == dataclasses.replace(cfg, scan_layers=False, remat=False)
  _, _, v_init = init(flat.cfg)
  chex.assert_trees_all_equal_shapes(flat_v, v_init)
  assert 'adapter_1' in flat_v['params']['decoder'] and 'layers_1' in flat_v['params']['encoder']
  tokens = _shift_right(_tokens(7, B, [3, 6, 1]))
  in_times = jax.random.uniform(jax.random.PRNGKey(3), (B, L), maxval=0.4)

  @functools.partial(jax.jit, static_argnums=0)
  def run(m, var):
    h = m.apply(var, _mel(), method=models.PairAlign.encode)
    cond = m.apply(var, h, method=models.PairAlign.condition)
    return h, cond, m.apply(var, cond, tokens, False, in_times, method=models.PairAlign.score)

  chex.assert_trees_all_close(run(flat, flat_v), run(model, v), atol=1e-5)
  again = models.unrolled(flat, flat_v)  # already unrolled: returned as is
  assert again[0] is flat and again[1] is flat_v


def test_decoder_reads_codes_memory_is_h_plus_the_embedding_of_its_own_codes():
  """model.decoder_reads_codes: the cross-attention K/V are those of H + code_embed[codes of H]
  (the VQ head's codes under the stored codebook), so a different codebook changes them; without
  the option the codebook does not reach the decoder."""
  cfg = tiny_cfg(decoder_reads_codes=True, time_bias_frames=3)
  model, _, v = init(cfg)
  assert v['params']['code_embed']['embedding'].shape == (K, cfg.d_model)
  h = model.apply(v, _mel(), method=models.PairAlign.encode)
  codes = model.apply(v, h, method=models.PairAlign.quantize).codes  # [B,T]
  memory = h + v['params']['code_embed']['embedding'][codes]
  cond = model.apply(v, h, method=models.PairAlign.condition)
  by_hand = model.apply(v, memory, method=lambda m, x: m.decoder.condition(x))
  chex.assert_trees_all_close(cond, by_hand, atol=1e-5)
  other_codebook = dict(v)
  other_codebook['vq_stats'] = dict(
    v['vq_stats'], vq=dict(v['vq_stats']['vq'], codebook=-v['vq_stats']['vq']['codebook'])
  )
  moved = model.apply(other_codebook, h, method=models.PairAlign.condition)
  assert not np.allclose(moved['k'], cond['k'], atol=1e-4)
  plain, _, pv = init(tiny_cfg(time_bias_frames=3))
  assert 'code_embed' not in pv['params']
  pv_other = dict(pv, vq_stats=other_codebook['vq_stats'])
  chex.assert_trees_all_equal(
    plain.apply(pv, h, method=models.PairAlign.condition),
    plain.apply(pv_other, h, method=models.PairAlign.condition),
  )
  # The unrolled model (decoding's fast path) reads the same memory.
  flat, flat_v = models.unrolled(model, v)
  chex.assert_trees_all_close(
    flat.apply(flat_v, h, method=models.PairAlign.condition), cond, atol=1e-5
  )


def test_bfloat16_path_runs_finite():
  cfg = tiny_cfg(dtype='bfloat16')
  model, _, v = init(cfg)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(v['params']))
  tokens = _tokens(1, B, [2, 3, 4])

  @jax.jit
  def forward(v):
    h = model.apply(v, _mel(), method=models.PairAlign.encode)
    vq = model.apply(v, h, method=models.PairAlign.quantize)
    cond = model.apply(v, h, method=models.PairAlign.condition)
    logits, times = model.apply(v, cond, _shift_right(tokens), False, method=models.PairAlign.score)
    recon = model.apply(v, vq.quantized, method=models.PairAlign.reconstruct)
    return h, vq, logits, times, recon

  h, vq, logits, times, recon = forward(v)
  assert h.dtype == jnp.bfloat16
  assert logits.dtype == jnp.float32
  for x in (vq.quantized, vq.commit_loss, logits, times, recon):
    assert np.all(np.isfinite(np.asarray(x, np.float32)))
  grads = jax.jit(
    jax.grad(lambda p: _loss(model, p, v['vq_stats'], _mel(), tokens, jax.random.PRNGKey(0)))
  )(v['params'])
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_dropout_needs_rng_and_changes_outputs(tiny):
  model, _, v = tiny
  mel = _mel()
  h_eval = model.apply(v, mel, False, method=models.PairAlign.encode)
  h_tr = model.apply(
    v, mel, True, method=models.PairAlign.encode, rngs={'dropout': jax.random.PRNGKey(1)}
  )
  assert not np.allclose(h_eval, h_tr)
  np.testing.assert_array_equal(h_eval, model.apply(v, mel, False, method=models.PairAlign.encode))


def test_first_training_step_seeds_the_codebook_from_batch_vectors(tiny):
  """Counts start at 0, so after the first update every code that got fewer than
  threshold / (1 - decay) frames is dead and re-seeded from a batch vector; none keeps its random
  init."""
  model, _, v = tiny
  np.testing.assert_array_equal(np.asarray(v['vq_stats']['vq']['cluster_size']), 0.0)
  h = model.apply(v, _mel(), method=models.PairAlign.encode)
  vq, mutated = model.apply(
    v,
    h,
    True,
    method=models.PairAlign.quantize,
    mutable=['vq_stats'],
    rngs={'vq': jax.random.PRNGKey(0)},
  )
  z = np.asarray(vq.z).reshape(-1, vq.z.shape[-1])
  frames = np.bincount(np.asarray(vq.codes).ravel(), minlength=K)  # [K]
  dead = frames * (1 - model.cfg.vq_ema_decay) < model.cfg.dead_code_threshold
  assert dead.sum() > K // 2 and int(vq.reseeded) == int(dead.sum())
  codebook = np.asarray(mutated['vq_stats']['vq']['codebook'])
  dist = np.min(np.linalg.norm(codebook[:, None, :] - z[None, :, :], axis=-1), axis=1)  # [K]
  np.testing.assert_array_less(dist[dead], 1e-5)
  init = np.asarray(v['vq_stats']['vq']['codebook'])
  assert np.all(np.linalg.norm(codebook - init, axis=1) > 1e-3)  # nothing kept its init


def test_diversity_loss_formula_and_collapse(tiny):
  model, _, v = tiny
  h = jax.random.normal(jax.random.PRNGKey(4), (B, 20, 32))
  vq = model.apply(v, h, method=models.PairAlign.quantize)
  codebook = np.asarray(v['vq_stats']['vq']['codebook'])
  sim = np.einsum('btc,kc->btk', np.asarray(vq.z, np.float64), codebook)
  soft = np.exp((sim - sim.max(-1, keepdims=True)) / model.cfg.vq_diversity_temperature)
  mean_soft = (soft / soft.sum(-1, keepdims=True)).mean(axis=(0, 1))
  expected = 1.0 - np.exp(-np.sum(mean_soft * np.log(mean_soft + 1e-10))) / K
  np.testing.assert_allclose(float(vq.diversity_loss), expected, rtol=1e-4, atol=1e-5)
  collapsed = model.apply(
    v, jnp.ones_like(h), method=models.PairAlign.quantize
  )  # every frame alike
  assert 0.0 <= float(vq.diversity_loss) < float(collapsed.diversity_loss) < 1.0
  grad = jax.grad(lambda x: model.apply(v, x, method=models.PairAlign.quantize).diversity_loss)(h)
  assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).max()) > 0


# ------------------------------------------------------------------------ location-aware decoder
def test_location_bias_follows_the_input_times():
  cfg = tiny_cfg(time_bias_frames=8)
  model, _, v = init(cfg)
  table = [
    x
    for p, x in jax.tree_util.tree_flatten_with_path(v)[0]
    if 'time_bias' in jax.tree_util.keystr(p)
  ]
  assert len(table) == 1 and table[0].shape == (cfg.dec_layers, 17, cfg.num_heads)
  prior = np.asarray(table[0][0])  # [17, H]: peaks after offset 0
  assert np.all(np.argmax(prior, axis=0) - 8 >= 2) and np.all(np.argmax(prior, axis=0) - 8 <= 6)
  h = model.apply(v, _mel(), method=models.PairAlign.encode)
  cond = model.apply(v, h, method=models.PairAlign.condition)
  inputs = _shift_right(_tokens(3, B, [L - 1] * B))
  with pytest.raises(ValueError, match='time of every input token'):
    model.apply(v, cond, inputs, False, method=models.PairAlign.score)
  with pytest.raises(ValueError, match='input times must have shape'):
    model.apply(v, cond, inputs, False, jnp.zeros((B, L - 1)), method=models.PairAlign.score)
  # At init the attention sits a few frames after each input token's time, wherever that is.
  for start in (0.05, 0.2):
    in_times = jnp.broadcast_to(start + 0.02 * jnp.arange(L, dtype=jnp.float32), (B, L))
    _, times = model.apply(v, cond, inputs, False, in_times, method=models.PairAlign.score)
    lag = np.asarray(times) - np.asarray(in_times)
    assert np.all(lag > 0.0) and np.all(lag < 0.2), lag


def test_token_times_mix_heads_uniformly_at_init_and_as_weighted():
  head_times = jax.random.uniform(jax.random.PRNGKey(0), (2, 3, 4, 5))  # [Ld, B, H, Lq]
  uniform = models.token_times(head_times, jnp.zeros((2, 4)))
  np.testing.assert_allclose(uniform, head_times.mean(axis=(0, 2)), rtol=1e-6)
  # A dominant logit picks that layer's head.
  logits = jnp.zeros((2, 4)).at[1, 2].set(20.0 / models.TIME_HEAD_LOGIT_SCALE)
  np.testing.assert_allclose(models.token_times(head_times, logits), head_times[1, :, 2], atol=1e-6)


def test_time_head_logits_are_learned_per_layer_and_drive_the_times():
  cfg = tiny_cfg(time_bias_frames=8)
  model, _, v = init(cfg)
  found = {
    jax.tree_util.keystr(p): x
    for p, x in jax.tree_util.tree_flatten_with_path(v)[0]
    if 'time_head_logits' in jax.tree_util.keystr(p)
  }
  assert [x.shape for x in found.values()] == [(cfg.dec_layers, cfg.num_heads)]
  h = model.apply(v, _mel(), method=models.PairAlign.encode)
  cond = model.apply(v, h, method=models.PairAlign.condition)
  inputs = _shift_right(_tokens(3, B, [L - 1] * B))
  in_times = jnp.broadcast_to(0.05 + 0.02 * jnp.arange(L, dtype=jnp.float32), (B, L))

  def times_for(params):
    return model.apply(
      {**v, 'params': params}, cond, inputs, False, in_times, method=models.PairAlign.score
    )[1]

  grads = jax.grad(lambda p: jnp.sum(times_for(p)))(v['params'])
  g = [
    x
    for p, x in jax.tree_util.tree_flatten_with_path(grads)[0]
    if 'time_head_logits' in jax.tree_util.keystr(p)
  ]
  assert np.abs(np.asarray(g[0])).max() > 0  # the timing losses reach them
  moved = jax.tree_util.tree_map_with_path(
    lambda p, x: x.at[0, 0].set(10.0) if 'time_head_logits' in jax.tree_util.keystr(p) else x,
    v['params'],
  )
  assert not np.allclose(times_for(moved), times_for(v['params']), atol=1e-4)


def test_previous_layer_anchor_centres_each_layer_on_the_time_before_it():
  """model.location_anchor='previous_layer': the first decoder layer's location bias is centred on
  the input times, each later one on the time the layer before it found (its heads' centroids
  mixed by its time-head weights); 'input' centres every layer on the input times."""
  cfg = tiny_cfg(
    time_bias_frames=8, scan_layers=False, remat=False, location_anchor='previous_layer'
  )
  model, _, v = init(cfg)
  h = model.apply(v, _mel(), method=models.PairAlign.encode)
  cond = model.apply(v, h, method=models.PairAlign.condition)
  inputs = _shift_right(_tokens(3, B, [L - 1] * B))
  in_times = jnp.broadcast_to(0.05 + 0.02 * jnp.arange(L, dtype=jnp.float32), (B, L))

  def layer_calls(m):
    calls = []

    def record(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if isinstance(context.module, models.DecoderLayer) and context.method_name == '__call__':
        calls.append((args[3], out[1]))  # (in_times it was given, its outputs)
      return out

    with nn.intercept_methods(record):
      m.apply(v, cond, inputs, False, in_times, method=models.PairAlign.score)
    return calls

  calls = layer_calls(model)
  assert len(calls) == cfg.dec_layers == 2
  np.testing.assert_array_equal(calls[0][0], in_times)
  first = calls[0][1]
  found = models.token_times(first['head_times'][None], first['time_logits'][None])
  np.testing.assert_allclose(calls[1][0], found, atol=1e-6)
  assert not np.allclose(calls[1][0], in_times, atol=1e-3)
  base = models.PairAlign(dataclasses.replace(cfg, location_anchor='input'))
  for given, _ in layer_calls(base):
    np.testing.assert_array_equal(given, in_times)


def test_previous_layer_anchor_needs_centroid_times_and_unscanned_layers():
  for bad in (
    dict(scan_layers=True),
    dict(scan_layers=False, time_head='pointer'),
    dict(scan_layers=False, time_bias_frames=0),
  ):
    kw = {'time_bias_frames': 8, 'location_anchor': 'previous_layer', **bad}
    with pytest.raises(ValueError, match="location_anchor='previous_layer' needs"):
      tiny_cfg(**kw)
  with pytest.raises(ValueError, match='location_anchor must be one of'):
    tiny_cfg(location_anchor='output')


# ------------------------------------------------------------- attention against a numpy reference
# The references use the layout the model had before heads-first projections: q/k/v [B,L,H,hd]
# from the [d,H,hd] kernels, scores 'bqhd,bkhd->bhqk', output 'bhqk,bkhd->bqhd' then the [H,hd,d]
# kernel. Every parameter (biases too) is random, so a wrong bias broadcast or axis shows.
@functools.partial(jax.jit, static_argnums=1)
def _randomized(params, seed):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(
    treedef, [0.3 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
  )


def _np_tree(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _np_layer_norm(x, p):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-6) * p['scale'] + p['bias']


def _np_mlp(x, p):
  y = x @ p['wi']['kernel'] + p['wi']['bias']
  y = 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y**3)))  # nn.gelu (tanh)
  return y @ p['wo']['kernel'] + p['wo']['bias']


def _np_heads(x, p):
  """[B,L,d] -> [B,L,H,hd] (the old projection layout)."""
  return np.einsum('bld,dhk->blhk', x, p['kernel']) + p['bias']


def _np_attend(q, k, v, p_out, mask=None, bias=None):
  """q [B,Lq,H,hd], k/v [B,Lk,H,hd] -> (output [B,Lq,d], weights [B,H,Lq,Lk])."""
  s = np.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(q.shape[-1])
  if bias is not None:
    s = s + bias
  if mask is not None:
    s = np.where(mask, s, -1e9)
  w = np.exp(s - s.max(-1, keepdims=True))
  w = w / w.sum(-1, keepdims=True)
  o = np.einsum('bhqk,bkhd->bqhd', w, v)
  return np.einsum('bqhd,hde->bqe', o, p_out['kernel']) + p_out['bias'], w


def test_encoder_layer_equals_the_old_layout_reference():
  cfg = tiny_cfg(num_heads=4, scan_layers=False, remat=False)  # hd = 8
  layer = models.EncoderLayer(cfg)
  x = jax.random.normal(jax.random.PRNGKey(0), (B, 7, cfg.d_model))
  params = nn.meta.unbox(jax.jit(layer.init, static_argnums=2)(jax.random.PRNGKey(1), x, False))
  params = params['params']
  shapes = {n: params[n]['kernel'].shape for n in ('query', 'key', 'value', 'out')}
  assert shapes == {
    **dict.fromkeys(('query', 'key', 'value'), (32, 4, 8)),
    'out': (4, 8, 32),
  }
  params = _randomized(params, 2)
  y, _ = jax.jit(layer.apply, static_argnums=2)({'params': params}, x, False)
  p, xn = _np_tree(params), np.asarray(x, np.float64)
  h = _np_layer_norm(xn, p['ln_attn'])
  q, k, v = (_np_heads(h, p[n]) for n in ('query', 'key', 'value'))
  ref = xn + _np_attend(q, k, v, p['out'])[0]
  ref = ref + _np_mlp(_np_layer_norm(ref, p['ln_mlp']), p['mlp'])
  np.testing.assert_allclose(np.asarray(y), ref, atol=2e-5, rtol=1e-5)


def test_decoder_layer_and_cross_kv_equal_the_old_layout_reference():
  cfg = tiny_cfg(num_heads=4, time_bias_frames=3, scan_layers=False, remat=False)
  t, lq, r = 20, 6, 3
  hcond = jax.random.normal(jax.random.PRNGKey(0), (B, t, cfg.d_model))
  x = jax.random.normal(jax.random.PRNGKey(1), (B, lq, cfg.d_model))
  in_times = jax.random.uniform(jax.random.PRNGKey(2), (B, lq), maxval=t * cfg.frame_seconds)
  cross_kv = models.CrossKV(cfg)
  kv_params = _randomized(
    nn.meta.unbox(jax.jit(cross_kv.init)(jax.random.PRNGKey(3), hcond, None))['params'], 4
  )
  _, kv = jax.jit(cross_kv.apply)({'params': kv_params}, hcond, None)  # {'k','v': [B,H,T,hd]}
  hn = np.asarray(hcond, np.float64)
  ck, cv = (_np_heads(hn, _np_tree(kv_params)[n]) for n in ('key', 'value'))  # [B,T,H,hd]
  np.testing.assert_allclose(np.asarray(kv['k']), ck.transpose(0, 2, 1, 3), atol=1e-5)
  np.testing.assert_allclose(np.asarray(kv['v']), cv.transpose(0, 2, 1, 3), atol=1e-5)

  layer = models.DecoderLayer(cfg)
  init = jax.jit(layer.init, static_argnums=(3, 5, 6))
  boxed = init(jax.random.PRNGKey(5), x, kv, None, in_times, False, 'score')
  params = _randomized(nn.meta.unbox(boxed)['params'], 6)
  apply = jax.jit(layer.apply, static_argnums=(3, 5, 6))
  y, out = apply({'params': params}, x, kv, None, in_times, False, 'score')
  p, xn = _np_tree(params), np.asarray(x, np.float64)
  h = _np_layer_norm(xn, p['ln_self'])
  q, k, v = (_np_heads(h, p[n]) for n in ('self_query', 'self_key', 'self_value'))
  causal = np.tril(np.ones((lq, lq), bool))
  ref = xn + _np_attend(q, k, v, p['self_out'], mask=causal)[0]
  centres = (np.arange(t) + 0.5) * cfg.frame_seconds
  # The bias index in float32, as the model computes it (a rounding tie must fall the same way).
  offset = (np.float32(centres)[None, None] - np.asarray(in_times)[:, :, None]) / np.float32(
    cfg.frame_seconds
  )
  idx = np.clip(np.round(offset), -r, r).astype(int) + r  # [B,Lq,T]
  bias = p['time_bias'][idx].transpose(0, 3, 1, 2)  # [B,H,Lq,T]
  q = _np_heads(_np_layer_norm(ref, p['ln_cross']), p['cross_query'])
  cross, w = _np_attend(q, ck, cv, p['cross_out'], bias=bias)
  ref = ref + cross
  ref = ref + _np_mlp(_np_layer_norm(ref, p['ln_mlp']), p['mlp'])
  np.testing.assert_allclose(np.asarray(y), ref, atol=2e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(out['head_times']), w @ centres, atol=1e-5)


# The pointer time head is an option no shipped config uses: its decode test
# (decode_test.py) stays in the default run, this one and the chunked scoring's are slow.
@pytest.mark.slow
def test_pointer_time_head_is_a_distribution_over_frames_read_as_its_mode_or_mean():
  """model.time_head='pointer': score_with_time_nll's cross entropy is -log of a distribution
  over the encoder frames (summing exp(-nll) over a target time in every frame gives 1); outside
  training the token time is the centre of its most likely frame, in training its expected frame
  centre; the centroid head has no such cross entropy; the pointer needs the location bias."""
  cfg = tiny_cfg(
    time_bias_frames=3, time_head='pointer', dropout_rate=0.0, attention_dropout_rate=0.0
  )
  model, _, v = init(cfg)
  assert 'time_pointer' in v['params']['decoder']
  h = model.apply(v, _mel(), method=models.PairAlign.encode)
  cond = model.apply(v, h, method=models.PairAlign.condition)
  num_frames = h.shape[1]
  inputs = jnp.asarray(_tokens(2, B, [4, 7, 11])[:, :L])
  rng = np.random.default_rng(0)
  in_times = jnp.asarray(np.sort(rng.uniform(0, 0.5, (B, L)), axis=1), jnp.float32)
  centres = np.asarray(models.frame_centres(num_frames, cfg.frame_seconds))

  def nll_at(frame, train):
    t = jnp.full((B, L), centres[frame], jnp.float32)
    return model.apply(
      v,
      cond,
      inputs,
      train,
      in_times,
      t,
      method=models.PairAlign.score_with_time_nll,
      rngs={'dropout': jax.random.PRNGKey(0)},
    )

  probs = np.stack([np.exp(-np.asarray(nll_at(f, False)[2])) for f in range(num_frames)], -1)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)  # [B, L, T]
  _, eval_times = model.apply(v, cond, inputs, False, in_times, method=models.PairAlign.score)
  np.testing.assert_allclose(eval_times, centres[probs.argmax(-1)], atol=1e-6)
  _, train_times, _ = nll_at(0, True)
  np.testing.assert_allclose(train_times, probs @ centres, atol=1e-4)
  # A time on a frame edge or past the segment counts for the frame it starts / the last frame.
  edge = model.apply(
    v,
    cond,
    inputs,
    False,
    in_times,
    jnp.full((B, L), 3 * cfg.frame_seconds),
    method=models.PairAlign.score_with_time_nll,
  )[2]
  np.testing.assert_allclose(np.exp(-edge), probs[..., 3], atol=1e-5)
  late = model.apply(
    v,
    cond,
    inputs,
    False,
    in_times,
    jnp.full((B, L), 9.0),
    method=models.PairAlign.score_with_time_nll,
  )[2]
  np.testing.assert_allclose(np.exp(-late), probs[..., -1], atol=1e-5)

  plain, _, pv = init(tiny_cfg(time_bias_frames=3))
  pcond = plain.apply(pv, h, method=models.PairAlign.condition)
  with pytest.raises(ValueError, match="time_head='pointer'"):
    plain.apply(
      pv, pcond, inputs, False, in_times, in_times, method=models.PairAlign.score_with_time_nll
    )
  with pytest.raises(ValueError, match='time_bias_frames'):
    tiny_cfg(time_bias_frames=0, time_head='pointer')
  with pytest.raises(ValueError, match='time_head'):
    tiny_cfg(time_head='median')


def test_time_bias_scale_keeps_the_initial_model_and_scales_the_parameter():
  """model.time_bias_scale: the location bias is scale x its parameter, which starts as the prior
  divided by the scale, so the initial model is the same function; only how fast Adam can move
  the bias changes."""
  base_cfg = tiny_cfg(time_bias_frames=3, time_head='pointer')
  fast_cfg = dataclasses.replace(base_cfg, time_bias_scale=10.0)
  base, _, bv = init(base_cfg)
  fast, _, fv = init(fast_cfg)
  prior = np.asarray(models.location_prior_init(None, (7, base_cfg.num_heads)))
  base_tables = [
    (jax.tree_util.keystr(p), np.asarray(x))
    for p, x in jax.tree_util.tree_flatten_with_path(bv['params'])[0]
    if 'time_bias' in jax.tree_util.keystr(p) or 'location_bias' in jax.tree_util.keystr(p)
  ]
  fast_tables = dict(
    (jax.tree_util.keystr(p), np.asarray(x))
    for p, x in jax.tree_util.tree_flatten_with_path(fv['params'])[0]
  )
  assert len(base_tables) == 2  # the stacked cross-attention tables and the pointer's
  for path, table in base_tables:
    np.testing.assert_allclose(table, np.broadcast_to(prior, table.shape), atol=1e-6)
    np.testing.assert_allclose(fast_tables[path], table / 10.0, atol=1e-7)
  mel, tokens = _mel(), jnp.asarray(_tokens(2, B, [4, 7, 11])[:, :L])
  run = lambda m, v: m.apply(v, mel, tokens)  # noqa: E731
  out_base, out_fast = run(base, bv), run(fast, fv)
  np.testing.assert_allclose(out_fast['logits'], out_base['logits'], atol=1e-5)
  np.testing.assert_allclose(out_fast['times'], out_base['times'], atol=1e-6)
  with pytest.raises(ValueError, match='time_bias_scale'):
    dataclasses.replace(base_cfg, time_bias_scale=0.0)
