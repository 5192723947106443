"""The VQ refit (`vq.refit = 'pca_kmeans'`): the fit on hand-made frames, config validation, and a
run that refits its quantizer at the start of stage 1 and keeps it frozen."""

import json
import os

import jax
import numpy as np
import pytest
import shared_runs
from sklearn import decomposition
from train_test import tiny_config

from pairalign_jax import checkpointing
from pairalign_jax import code_group_choice
from pairalign_jax import code_groups
from pairalign_jax import config_validation
from pairalign_jax import models
from pairalign_jax import train
from pairalign_jax import vq_refit


def _three_clusters_in_a_plane(seed=0):
  """Frames [300, 6] on a 2-dim plane of R^6 (plus a constant offset): three tight clusters of
  100 frames at angles 0, 120 and 240 degrees; the cluster of every frame."""
  rng = np.random.default_rng(seed)
  basis = np.linalg.qr(rng.normal(size=(6, 2)))[0].T  # [2, 6] orthonormal
  angles = np.deg2rad([0.0, 120.0, 240.0])
  centres = np.stack([np.cos(angles), np.sin(angles)], axis=-1) * 5.0  # [3, 2]
  labels = np.repeat(np.arange(3), 100)
  plane = centres[labels] + rng.normal(scale=0.05, size=(300, 2))
  return plane @ basis + 3.0, labels


def test_fit_quantizer_projects_onto_the_principal_plane_and_finds_the_clusters():
  frames, labels = _three_clusters_in_a_plane()
  refit = vq_refit.fit_quantizer(frames, code_dim=2, codebook_size=3, seed=0)
  assert refit.kernel.shape == (6, 2) and refit.bias.shape == (2,)
  assert refit.explained_variance > 0.999 and refit.num_frames == 300
  # The projection is the PCA transform: kernel = principal axes, bias = -mean @ kernel.
  want = decomposition.PCA(2, svd_solver='full').fit(frames).transform(frames)
  np.testing.assert_allclose(frames @ refit.kernel + refit.bias, want, atol=1e-4)
  # The codebook is unit-norm and takes each cluster whole, 100 frames per code.
  np.testing.assert_allclose(np.linalg.norm(refit.codebook, axis=-1), 1.0, atol=1e-6)
  z = frames @ refit.kernel + refit.bias
  codes = np.argmax(z @ refit.codebook.T, axis=-1)
  for c in range(3):
    assert len(set(codes[labels == c])) == 1
  assert len(set(codes)) == 3
  np.testing.assert_array_equal(np.sort(refit.cluster_size), [100, 100, 100])
  # The EMA statistics give the codebook back (codebook = l2norm(embed_sum / count)).
  back = refit.embed_sum / refit.cluster_size[:, None]
  np.testing.assert_allclose(back, refit.codebook, atol=1e-6)
  assert refit.as_dict()['codes_used'] == 3


def test_fit_quantizer_is_a_function_of_its_seed_and_checks_its_shapes():
  frames, _ = _three_clusters_in_a_plane(seed=1)
  frames = np.concatenate([frames, np.random.default_rng(2).normal(size=(300, 6))])
  a = vq_refit.fit_quantizer(frames, 3, 8, seed=4)
  b = vq_refit.fit_quantizer(frames, 3, 8, seed=4)
  np.testing.assert_array_equal(a.codebook, b.codebook)
  with pytest.raises(ValueError, match='code_dim=7'):
    vq_refit.fit_quantizer(frames, 7, 8, seed=0)
  with pytest.raises(ValueError, match='cannot make a 700-code'):
    vq_refit.fit_quantizer(frames, 3, 700, seed=0)
  with pytest.raises(ValueError, match=r'\[N, d\]'):
    vq_refit.fit_quantizer(frames[None], 3, 8, seed=0)


def refit_config():
  return shared_runs.with_vq_refit(tiny_config())


def test_a_refit_with_fewer_frames_than_codes_stops_at_start(tmp_path):
  """The refit clusters at most `vq.refit_recordings` recordings' encoder frames: fewer frames
  than codes is refused before the first step, not at the start of stage 1."""
  config = refit_config()
  config.vq.refit_recordings = 2
  frames = models.ModelConfig.from_config(config).enc_max_frames
  config.model.codebook_size = 2 * frames + 1
  config_validation.validate_config(config)
  workdir = tmp_path / 'run'
  with pytest.raises(config_validation.ConfigError, match=rf'\({2 * frames} frames\), fewer than'):
    train.train_and_evaluate(config, str(workdir), run_evaluation=False)
  assert not workdir.exists()


def test_config_validation_names_the_refit_keys():
  for key, value, match in (
    ('vq.refit', 'kmeans', 'one of'),
    ('schedule.freeze_encoder', 'never', "freeze_encoder='stage1'"),
    ('vq.freeze_after_stage0', False, 'freeze_after_stage0=True'),
    ('model.code_dim', 33, 'code_dim must be <= config.model.d_model'),
    ('vq.refit_recordings', 1, 'refit_recordings'),
    ('schedule.stage1_start', 0, 'stage1_start must be in'),
  ):
    c = refit_config()
    section, name = key.split('.')
    c[section][name] = value
    if key == 'schedule.stage1_start':
      c.targets.group_candidates = 1
    with pytest.raises(config_validation.ConfigError, match=match):
      config_validation.validate_config(c)
  config_validation.validate_config(refit_config())


@pytest.fixture(scope='module')
def refit_run(tmp_path_factory):
  """The session's tiny run that refits at stage1_start = 2 (tests/shared_runs.py: two stage-0
  steps, then two stage-1 steps after the refit): (config, workdir, final state)."""
  return shared_runs.stage1_run(tmp_path_factory)


def _leaf(tree, suffix):
  (leaf,) = [
    np.asarray(x)
    for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    if jax.tree_util.keystr(p).endswith(suffix)
  ]
  return leaf


def test_the_run_refits_its_quantizer_at_stage_1_and_keeps_it(refit_run):
  config, workdir, state = refit_run
  # The stage-0 model (checkpoint of step 2, saved before the refit) refitted directly.
  ckpt = checkpointing.Checkpointer.from_config(f'{workdir}/checkpoints', config)
  trainer = train.Trainer(config)
  stage0 = ckpt.restore(2, trainer.abstract_state, None)
  ckpt.close()
  variables = {'params': stage0.teacher_params, 'vq_stats': stage0.vq_stats}
  want, _ = vq_refit.refit_from_training_audio(trainer.model, variables, config)
  for tree in (state.params, state.teacher_params):
    np.testing.assert_allclose(_leaf(tree, "['vq']['proj']['kernel']"), want.kernel, atol=1e-5)
    np.testing.assert_allclose(_leaf(tree, "['vq']['proj']['bias']"), want.bias, atol=1e-5)
  np.testing.assert_allclose(
    np.asarray(code_groups.vq_stats_leaf(state.vq_stats, 'codebook')), want.codebook, atol=1e-5
  )
  np.testing.assert_array_equal(
    np.asarray(code_groups.vq_stats_leaf(state.vq_stats, 'cluster_size')), want.cluster_size
  )
  # The encoder is the stage-0 one, and the run's VQ codes are the refitted quantizer's.
  np.testing.assert_array_equal(
    _leaf(state.params, "['encoder']['input_proj']['kernel']"),
    _leaf(stage0.params, "['encoder']['input_proj']['kernel']"),
  )
  waves, _, _ = code_group_choice.training_view_waves(config, 8)
  codes = code_group_choice.view_frame_codes(
    trainer.model, {'params': state.params, 'vq_stats': state.vq_stats}, waves, config, None
  )
  frames = vq_refit.encoder_frames(trainer.model, variables, waves, config)
  z = frames @ want.kernel + want.bias
  z /= np.linalg.norm(z, axis=-1, keepdims=True)
  np.testing.assert_array_equal(codes, np.argmax(z @ want.codebook.T, axis=-1))
  with open(os.path.join(workdir, train.VQ_REFIT_FILE)) as f:
    summary = json.load(f)
  assert summary['step'] == 2 and summary['codebook_size'] == config.model.codebook_size
  assert summary['num_frames'] == frames.shape[0] * frames.shape[1]


def test_refit_happens_only_at_the_first_stage_1_step():
  config = refit_config()
  assert [s for s in range(6) if train.refits_vq_at(s, config)] == [2]
  config.vq.refit = 'none'
  assert not any(train.refits_vq_at(s, config) for s in range(6))
  assert models.ModelConfig.from_config(refit_config()).code_dim == 8
