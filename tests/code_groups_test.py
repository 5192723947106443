"""Tests for pairalign_jax/code_groups.py: grouping the frozen codebook into similar-code groups."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default as default_config
from pairalign_jax import code_groups
from pairalign_jax import models
from pairalign_jax import sequences
from pairalign_jax import vocab as vocab_lib


def _clustered_codebook(num_clusters=4, per_cluster=6, dim=8, noise=0.05, seed=0):
  """Codes scattered tightly around `num_clusters` orthogonal directions -> (codebook, truth)."""
  rng = np.random.default_rng(seed)
  truth = np.repeat(np.arange(num_clusters), per_cluster)
  rng.shuffle(truth)
  vecs = np.eye(dim)[truth] + noise * rng.normal(size=(truth.size, dim))
  return jnp.asarray(vecs / np.linalg.norm(vecs, axis=1, keepdims=True), jnp.float32), truth


def _same_partition(a, b):
  a, b = np.asarray(a), np.asarray(b)
  return np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :])


def test_recovers_well_separated_clusters_and_is_deterministic():
  codebook, truth = _clustered_codebook()
  counts = jnp.asarray(np.random.default_rng(1).uniform(1, 10, truth.size), jnp.float32)
  groups = code_groups.group_codebook(codebook, counts, num_groups=4)
  assert groups.shape == truth.shape and groups.dtype == jnp.int32
  assert _same_partition(groups, truth)
  np.testing.assert_array_equal(groups, code_groups.group_codebook(codebook, counts, num_groups=4))
  assert set(np.asarray(groups).tolist()) == {0, 1, 2, 3}


def test_one_group_per_code_and_fresh_counts():
  codebook, truth = _clustered_codebook(num_clusters=3, per_cluster=2)
  # As many groups as codes: every code is its own group (a permutation of the ids).
  groups = code_groups.group_codebook(codebook, jnp.ones(6), num_groups=6)
  assert sorted(np.asarray(groups).tolist()) == list(range(6))
  # A fresh model has all counts 0: every code is still a candidate centre (no collapse to one
  # group).
  groups = code_groups.group_codebook(codebook, jnp.zeros(6), num_groups=3)
  assert _same_partition(groups, truth)


def test_dead_codes_are_assigned_but_never_centres():
  codebook, truth = _clustered_codebook(num_clusters=2, per_cluster=4)
  counts = np.ones(8, np.float32)
  counts[0] = 0.0  # a dead code is still mapped to its nearest group
  groups = code_groups.group_codebook(codebook, jnp.asarray(counts), num_groups=2)
  assert _same_partition(groups, truth)


@pytest.mark.parametrize('num_groups', [0, 9])
def test_rejects_bad_group_counts(num_groups):
  codebook, _ = _clustered_codebook(num_clusters=2, per_cluster=4)
  with pytest.raises(ValueError, match='num_groups'):
    code_groups.group_codebook(codebook, jnp.ones(8), num_groups=num_groups)


def test_grouped_codes_collapse_to_fewer_runs():
  codebook, truth = _clustered_codebook(num_clusters=2, per_cluster=2, seed=3)
  groups = np.asarray(code_groups.group_codebook(codebook, jnp.ones(4), num_groups=2))
  a, b = np.flatnonzero(truth == 0), np.flatnonzero(truth == 1)
  # Frame codes that flicker between two codes of one group, then of the other: 8 runs of codes,
  # 2 runs of groups.
  codes = jnp.asarray([[a[0], a[1], a[0], a[1], b[0], b[1], b[0], b[1]]], jnp.int32)
  vocab = vocab_lib.Vocab(4)
  raw = sequences.collapse_runs(codes, 0.02, max_len=10, vocab=vocab)
  grouped = sequences.collapse_runs(
    code_groups.map_codes(codes, jnp.asarray(groups)), 0.02, max_len=10, vocab=vocab
  )
  assert int(raw[1][0]) == 8 and int(grouped[1][0]) == 2
  assert grouped[0][0, :2].tolist() == [groups[a[0]], groups[b[0]]]
  np.testing.assert_allclose(
    grouped[2][0, :2], [0.04, 0.12], atol=1e-6
  )  # run centres of 4 frames each


def test_groups_from_a_models_vq_stats():
  config = default_config.get_config()
  config.model.update(
    d_model=16,
    num_heads=2,
    mlp_dim=32,
    enc_layers=1,
    dec_layers=1,
    codebook_size=12,
    code_dim=4,
    max_len=8,
    recon_channels=8,
  )
  config.frontend.n_mels = 8
  model = models.PairAlign(models.ModelConfig.from_config(config))
  variables = nn.meta.unbox(
    model.init(
      {
        'params': jax.random.PRNGKey(0),
        'dropout': jax.random.PRNGKey(1),
        'vq': jax.random.PRNGKey(2),
      },
      jnp.zeros((1, 20, 8)),
      jnp.zeros((1, 8), jnp.int32),
      train=False,
    )
  )
  groups = code_groups.groups_from_vq_stats(variables['vq_stats'], 3)
  assert groups.shape == (12,) and int(groups.min()) >= 0 and int(groups.max()) < 3
  with pytest.raises(ValueError, match="exactly one 'codebook'"):
    code_groups.groups_from_vq_stats({'a': {'cluster_size': jnp.ones(3)}}, 2)
