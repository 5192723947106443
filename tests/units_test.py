"""Acoustic units (`loss.code_pred_targets = 'units'`): features, assignment, the fit, and a
training run that fits them at its start, predicts them, and keeps them on resume."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft
import shared_runs
from train_test import tiny_config

from pairalign_jax import checkpointing
from pairalign_jax import code_groups
from pairalign_jax import config_validation
from pairalign_jax import frontend
from pairalign_jax import losses
from pairalign_jax import models
from pairalign_jax import objective
from pairalign_jax import train
from pairalign_jax import units


def test_unit_features_are_standardized_cepstra_and_deltas_at_the_encoder_rate():
  rng = np.random.default_rng(0)
  mel = rng.normal(size=(2, 11, 16)).astype(np.float32)  # [N, F, M]
  got = np.asarray(units.unit_features(jnp.asarray(mel), subsample=2, num_coeffs=5))
  assert got.shape == (2, 5, 10)  # 11 frames -> 5 encoder frames (the last one dropped)
  ceps = scipy.fft.dct(mel, type=2, norm='ortho', axis=-1)[..., :5]  # [N, F, 5]
  padded = np.concatenate([ceps[:, :1], ceps, ceps[:, -1:]], axis=1)
  x = np.concatenate([ceps, 0.5 * (padded[:, 2:] - padded[:, :-2])], axis=-1)
  x = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
  want = x[:, :10].reshape(2, 5, 2, 10).mean(2)
  np.testing.assert_allclose(got, want, atol=1e-4)
  with pytest.raises(ValueError, match='batch, frames, bands'):
    units.unit_features(jnp.zeros((4, 16)), subsample=2, num_coeffs=5)


def test_assign_units_picks_the_nearest_centroid():
  centroids = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], np.float32)
  feats = np.array([[[9.0, 1.0], [1.0, -1.0], [-1.0, 7.0], [6.0, 5.0]]], np.float32)
  # [6, 5]: squared distance 61 to (0, 0), 41 to (10, 0), 61 to (0, 10) -> unit 1.
  got = units.assign_units(jnp.asarray(feats), jnp.asarray(centroids))
  np.testing.assert_array_equal(np.asarray(got), [[1, 0, 2, 1]])


def test_fit_centroids_finds_separated_clusters_and_is_a_function_of_the_seed():
  rng = np.random.default_rng(1)
  centres = np.array([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
  frames = centres[rng.integers(0, 3, size=(6, 40))] + 0.1 * rng.normal(size=(6, 40, 2))
  got = units.fit_centroids(frames, 3, seed=0)
  assert got.shape == (3, 2) and got.dtype == np.float32
  np.testing.assert_allclose(np.sort(got, axis=0), np.sort(centres, axis=0), atol=0.1)
  np.testing.assert_array_equal(got, units.fit_centroids(frames, 3, seed=0))
  with pytest.raises(ValueError, match='cannot make'):
    units.fit_centroids(frames[:1, :2], 3, seed=0)


def units_config():
  return shared_runs.with_units(tiny_config())


def test_config_validation_names_the_unit_keys():
  for key, value, match in (
    ('code_pred_targets', 'mfcc', 'code_pred_targets'),
    ('unit_clusters', 17, 'unit_clusters'),  # > codebook_size 16
    ('unit_coeffs', 0, 'unit_coeffs'),
    ('code_pred_weight', 0.0, 'code_pred_targets'),
  ):
    c = units_config()
    c.loss[key] = value
    with pytest.raises(config_validation.ConfigError, match=match):
      config_validation.validate_config(c)


def test_the_model_carries_centroids_only_when_it_predicts_units():
  def vq_stats(config):
    model = models.PairAlign(models.ModelConfig.from_config(config))
    mel = jnp.zeros((1, 100, config.frontend.n_mels))
    tokens = jnp.zeros((1, config.model.max_len), jnp.int32)
    return model.init({'params': jax.random.PRNGKey(0)}, mel, tokens)['vq_stats']

  leaf = code_groups.vq_stats_leaf(vq_stats(units_config()), units.UNIT_CENTROIDS)
  assert leaf.shape == (8, 8) and not np.any(np.asarray(leaf))  # zeros until fitted
  with pytest.raises(ValueError, match='exactly one'):
    code_groups.vq_stats_leaf(vq_stats(tiny_config()), units.UNIT_CENTROIDS)


@pytest.fixture(scope='module')
def unit_run(tmp_path_factory):
  """The session's tiny run with units (tests/shared_runs.py): (config, workdir, final state)."""
  return shared_runs.stage1_run(tmp_path_factory)


def test_training_fits_the_units_at_its_start_and_keeps_them(unit_run):
  config, workdir, state = unit_run
  stored = np.asarray(code_groups.vq_stats_leaf(state.vq_stats, units.UNIT_CENTROIDS))
  np.testing.assert_allclose(stored, units.fit_from_training_audio(config), atol=1e-6)
  assert np.all(np.isfinite(stored)) and np.any(stored)
  # The checkpoint holds them: a resumed run reads the same units, it does not fit anew.
  step1 = checkpointing.Checkpointer.from_config(f'{workdir}/checkpoints', config)
  trainer = train.Trainer(config)
  restored = step1.restore_latest(trainer.abstract_state, None)
  step1.close()
  assert restored is not None
  np.testing.assert_array_equal(
    np.asarray(code_groups.vq_stats_leaf(restored[0].vq_stats, units.UNIT_CENTROIDS)), stored
  )


def test_the_code_prediction_reads_the_other_views_units(unit_run):
  config, _, state = unit_run
  settings = objective.ObjectiveSettings.from_config(config)
  model = models.PairAlign(models.ModelConfig.from_config(config))
  fcfg = frontend.FrontendConfig.from_config(config)
  waves = jax.random.normal(jax.random.PRNGKey(3), (4, 16_000)) * 0.1  # [2B, S], B = 2
  mel_in, mel_clean, energy = objective.view_features(
    waves, fcfg, None, train=False, specaugment=False
  )
  rngs = {name: jax.random.PRNGKey(i) for i, name in enumerate(('dropout', 'vq', 'corrupt'))}
  terms, _ = objective.compute_terms(
    model,
    state.params,
    state.vq_stats,
    {'mel_in': mel_in, 'mel_clean': mel_clean, 'energy': energy},
    None,
    rngs,
    stage=0,
    settings=settings,
    train=False,
  )
  variables = {'params': state.params, 'vq_stats': state.vq_stats}
  h = model.apply(variables, mel_in, train=False, method=models.PairAlign.encode)
  logits = model.apply(variables, h, method=models.PairAlign.predict_codes)
  centroids = code_groups.vq_stats_leaf(state.vq_stats, units.UNIT_CENTROIDS)
  labels = units.assign_units(
    units.unit_features(mel_clean, config.model.subsample, config.loss.unit_coeffs)[
      :, : h.shape[1]
    ],
    centroids,
  )
  swapped = jnp.concatenate([labels[2:], labels[:2]])
  want = losses.code_prediction_loss(logits, swapped)
  np.testing.assert_allclose(float(terms['code_pred']), float(want), rtol=1e-5)
