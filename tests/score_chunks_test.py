"""Tests for `loss.score_chunk_rows`: the stage-2 scoring rows run in chunks (objective.py).

Tiny sizes (d_model 32, 1+1 layers, K 16, L 8, 0.5 s, B = 3 pairs, dropout 0), stage 2 with the
own-time pass on (own_time_prob 0.5, one pass): every loss term and every term's gradient
with chunks of at most 5 rows, which divide neither the 27 rows of all in-batch negatives (6
chunks of 5, 3 rows padded) nor the 24 rows of 2 sampled negatives (5 of 5, 1 padded), equal
those of the one-call scoring.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.extend.core
import jax.numpy as jnp
import ml_collections
import numpy as np
import objective_test
import pytest

from configs import demo
from pairalign_jax import config_validation as cv
from pairalign_jax import models
from pairalign_jax import objective

B, F, M, K, L = (
  objective_test.B,
  objective_test.F,
  objective_test.M,
  objective_test.K,
  objective_test.L,
)
CHUNK = 5


def tiny_config(**loss):
  """objective_test's tiny config, every row scored in one call unless `loss` says otherwise."""
  # One own-time pass: the chunked passes are covered, and one compiles faster.
  config = objective_test.tiny_config(own_time_passes=1, score_chunk_rows=0)
  config.loss.update(loss)
  return config


def _setup(config):
  model = models.PairAlign(models.ModelConfig.from_config(config))
  rngs = dict(zip(('params', 'dropout', 'vq'), jax.random.split(jax.random.PRNGKey(0), 3)))
  init = jax.jit(lambda r: model.init(r, jnp.zeros((1, F, M)), jnp.zeros((1, L), jnp.int32)))
  variables = nn.meta.unbox(init(rngs))
  mel = jax.random.normal(jax.random.PRNGKey(1), (2 * B, F, M))
  energy = np.full((2 * B, F), -20.0, np.float32)
  energy[:, 10:41] = 0.0  # voiced 0.10 .. 0.41 s
  mels = {'mel_in': mel, 'mel_clean': mel, 'energy': jnp.asarray(energy)}
  names = ('dropout', 'vq', 'corrupt', 'negatives', 'jitter', 'own_times')
  keys = dict(zip(names, jax.random.split(jax.random.PRNGKey(2), len(names))))
  return model, variables, mels, keys


@pytest.fixture(scope='module')
def setup():
  return _setup(tiny_config())


def pointer_config(**loss):
  """tiny_config with the pointer time head and token times at the end of their runs."""
  config = tiny_config(**loss)
  config.model.time_head = 'pointer'
  config.targets.time_anchor = 'end'
  return config


def terms_fn(model, settings):
  """(params, vq_stats, mels, rngs) -> terms {name: []} of stage 2, VQ-derived targets."""

  def terms(params, vq_stats, mels, rngs):
    out, _ = objective.compute_terms(
      model, params, vq_stats, mels, None, rngs, stage=2, settings=settings, train=True
    )
    return out

  return terms


def terms_and_gradient(setup, settings):
  """Every stage-2 term, and the gradient w.r.t. the params of a combination of the terms with
  distinct weights (one backward pass; a term whose gradient differed would show in it)."""
  model, variables, mels, keys = setup
  fn = terms_fn(model, settings)

  def combined(params):
    terms = fn(params, variables['vq_stats'], mels, keys)
    return sum((1.0 + 0.37 * i) * terms[n] for i, n in enumerate(sorted(terms))), terms

  grads, terms = jax.jit(jax.grad(combined, has_aux=True))(variables['params'])
  return {n: float(v) for n, v in terms.items()}, jax.tree.map(np.asarray, grads)


def assert_same_terms_and_gradients(whole_terms, whole_grads, chunk_terms, chunk_grads):
  for name, value in whole_terms.items():
    assert chunk_terms[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
  paths = jax.tree_util.tree_flatten_with_path(whole_grads)[0]
  # float32 sums in another order: the absolute tolerance is relative to the largest gradient
  # entry (leaves whose gradient is ~0 hold rounding noise of ~1e-7 in both paths).
  scale = max(float(np.abs(g).max()) for _, g in paths)
  for (path, whole), chunk in zip(paths, jax.tree.leaves(chunk_grads)):
    np.testing.assert_allclose(
      chunk, whole, rtol=1e-4, atol=1e-6 * scale, err_msg=jax.tree_util.keystr(path)
    )


@pytest.mark.parametrize('negatives', [0, 2])
def test_chunked_scoring_gives_the_unchunked_terms_and_gradients(setup, negatives):
  settings = objective.ObjectiveSettings.from_config(tiny_config(contrast_negatives=negatives))
  assert settings.score_chunk_rows == 0 and settings.own_time_prob > 0
  _, _, blocks = objective._row_pairs(B, 2, settings, setup[3]['negatives'])
  rows = sum(size for _, size in blocks.values())
  assert rows == (27 if negatives == 0 else 24) and rows % CHUNK != 0
  whole_terms, whole_grads = terms_and_gradient(setup, settings)
  chunk_terms, chunk_grads = terms_and_gradient(
    setup, dataclasses.replace(settings, score_chunk_rows=CHUNK)
  )
  # Every weighted stage-2 term is checked.
  assert set(whole_terms) == {n for n in objective.TERM_NAMES if settings.weight(n) > 0}
  assert set(chunk_terms) == set(whole_terms)
  assert_same_terms_and_gradients(whole_terms, whole_grads, chunk_terms, chunk_grads)
  # The decoder's parameters do get a gradient (the comparison above is not between zeros).
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(whole_grads['decoder'])) > 1e-3


@pytest.mark.slow  # an option no shipped config uses (models_test.py says which tests run)
def test_pointer_time_head_chunked_scoring_gives_the_unchunked_terms_and_gradients():
  """model.time_head='pointer': the timing term (the pointer's cross entropy on the self rows) and
  every other term and gradient are the same with the rows scored in chunks."""
  setup = _setup(pointer_config())
  settings = objective.ObjectiveSettings.from_config(pointer_config(contrast_negatives=2))
  whole_terms, whole_grads = terms_and_gradient(setup, settings)
  chunk_terms, chunk_grads = terms_and_gradient(
    setup, dataclasses.replace(settings, score_chunk_rows=CHUNK)
  )
  assert set(chunk_terms) == set(whole_terms) and 'timing' in whole_terms
  # A cross entropy over ~25 frames (nats), not a time error in seconds.
  assert 0.5 < whole_terms['timing'] < 10.0
  assert_same_terms_and_gradients(whole_terms, whole_grads, chunk_terms, chunk_grads)
  pointer = whole_grads['decoder']['time_pointer']
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(pointer)) > 1e-3


def _shapes(jaxpr) -> list[tuple[int, ...]]:
  """Shapes of every value a jaxpr (and each jaxpr inside it: scan, remat, ...) produces."""
  out = []
  for eqn in jaxpr.eqns:
    out += [tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, 'shape')]
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      out += _shapes(sub)
  return out


@pytest.mark.parametrize('chunk', [0, CHUNK])
def test_only_the_one_call_scoring_gathers_the_condition_of_every_row(setup, chunk):
  """The gathered condition [layers, R, heads, T, head_dim] (and the logits [R, L, V]) exist only
  when every row is scored in one call; chunks form [layers, C, heads, T, head_dim]."""
  model, variables, mels, keys = setup
  settings = objective.ObjectiveSettings.from_config(tiny_config(score_chunk_rows=chunk))
  jaxpr = jax.make_jaxpr(terms_fn(model, settings))(
    variables['params'], variables['vq_stats'], mels, keys
  ).jaxpr
  shapes = _shapes(jaxpr)
  rows, frames = 27, F // 2
  cfg = model.cfg
  whole = (cfg.dec_layers, rows, cfg.num_heads, frames, cfg.head_dim)
  part = (cfg.dec_layers, CHUNK, cfg.num_heads, frames, cfg.head_dim)
  assert (whole in shapes) == (chunk == 0)
  assert ((rows, L, cfg.vocab_size) in shapes) == (chunk == 0)
  assert (part in shapes) == (chunk == CHUNK)


def test_chunks_of_at_least_the_rows_trace_the_one_call_scoring(setup):
  """With no more rows than the chunk size (27 rows here) the step is the one-call scoring."""
  model, variables, mels, keys = setup

  def traced(chunk):
    settings = objective.ObjectiveSettings.from_config(tiny_config(score_chunk_rows=chunk))
    fn = terms_fn(model, settings)
    return str(jax.make_jaxpr(fn)(variables['params'], variables['vq_stats'], mels, keys))

  one_call = traced(0)
  assert traced(27) == one_call and traced(64) == one_call
  assert traced(26) != one_call


def test_rows_are_split_into_even_chunks_of_at_most_the_chunk_size():
  x = jnp.arange(7.0)[:, None] * jnp.ones((7, 3))  # [R=7, 3]
  calls = []

  def fn(i, chunk):
    calls.append(chunk.shape)
    return chunk * 2.0 + i

  np.testing.assert_array_equal(objective._map_row_chunks(fn, x, 100), x * 2.0)  # one call
  # At most 3 rows: 3 calls of 3 (2 padded rows, dropped).
  np.testing.assert_array_equal(
    objective._map_row_chunks(fn, x, 3), x * 2.0 + (jnp.arange(7) // 3)[:, None]
  )
  # At most 6 rows: 2 calls of 4, not 6 + 1 (padding 1 row, not 5).
  np.testing.assert_array_equal(
    objective._map_row_chunks(fn, x, 6), x * 2.0 + (jnp.arange(7) // 4)[:, None]
  )
  assert calls == [(7, 3), (3, 3), (4, 3)]


def _with_chunk(value):
  tree = demo.get_config().to_dict()
  tree['loss']['score_chunk_rows'] = value  # as a saved config could hold it
  return ml_collections.ConfigDict(tree)


@pytest.mark.parametrize('value', [-1, 1.5, 64.0, '64', True])
def test_validation_rejects_anything_but_an_integer_from_zero(value):
  with pytest.raises(cv.ConfigError, match=r'config\.loss\.score_chunk_rows.*integer >= 0'):
    cv.validate_config(_with_chunk(value))


@pytest.mark.parametrize('value', [0, 1, 256])
def test_validation_accepts_integers_from_zero(value):
  cv.validate_config(_with_chunk(value))
