"""Fine-tuning from another run's checkpoint (`config.init_from`, pairalign_jax/train.py).

The source is a checkpoint of the tiny train_test config whose every part (params, teacher,
optimizer state, VQ statistics, EOS bias, step, RNG, data iterator) differs from a fresh run's, so
each check below fails if that part is taken (or not taken) against the config. The fine-tuning
runs stop at their first train step (the state is captured there), except the stage-2 run.
"""

import logging as py_logging
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import shared_runs
from train_test import _record_device_batches
from train_test import flat
from train_test import state_arrays
from train_test import tiny_config

from pairalign_jax import checkpointing
from pairalign_jax import config_validation
from pairalign_jax import train
from pairalign_jax.data import pipeline

SOURCE_STEP = 5
SOURCE_EOS_BIAS = 1.25


class _Stop(Exception):
  """Raised by the patched train step: the state it was given has been captured."""


def _perturbed(tree, seed):
  rng = np.random.default_rng(seed)

  def bump(x):
    if jnp.issubdtype(x.dtype, jnp.floating):
      return x + jnp.asarray(0.1 * rng.standard_normal(x.shape), x.dtype)
    return x + 7

  return jax.tree.map(bump, tree)


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  """A saved run (step SOURCE_STEP) whose every state part differs from a fresh init's."""
  config = tiny_config()
  trainer = train.Trainer(config)
  fresh = trainer.init_state()
  saved = fresh.replace(
    step=jnp.int32(SOURCE_STEP),
    params=_perturbed(fresh.params, 1),
    teacher_params=_perturbed(fresh.params, 2),
    opt_state=_perturbed(fresh.opt_state, 3),
    vq_stats=_perturbed(fresh.vq_stats, 4),
    eos_bias=jnp.float32(SOURCE_EOS_BIAS),
    rng=jax.random.PRNGKey(99),
    nonfinite_steps=jnp.int32(1),
  )
  data_iter = pipeline.make_train_iterator(config)
  next(data_iter)
  next(data_iter)
  workdir = tmp_path_factory.mktemp('source')
  with checkpointing.Checkpointer(workdir / 'checkpoints', async_save=False, config=config) as ck:
    ck.save(SOURCE_STEP, saved, data_iter)
  return {
    'workdir': str(workdir),
    'state': state_arrays(saved),
    'fresh': state_arrays(fresh),
    'fresh_state': fresh,
  }


def _first_step_state(config, workdir, monkeypatch):
  """Runs train_and_evaluate up to its first train step; returns (state, first batch's indices)."""
  batches = _record_device_batches(monkeypatch)
  captured = []

  def run_step(self, state, batch, stage):
    captured.append(state)
    raise _Stop()

  monkeypatch.setattr(train.Trainer, 'run_step', run_step)
  with pytest.raises(_Stop):
    train.train_and_evaluate(config, str(workdir), run_evaluation=False)
  return captured[0], batches[0]


def _assert_part_equal(got, want, part):
  assert got[part].keys() == want[part].keys(), part
  for key in want[part]:
    np.testing.assert_array_equal(got[part][key], want[part][key], err_msg=f'{part}{key}')


def _messages(caplog):
  return '\n'.join(r.getMessage() for r in caplog.records)


def test_init_from_takes_params_vq_stats_teacher_on_another_mesh(
  source, tmp_path, monkeypatch, caplog
):
  caplog.set_level(py_logging.INFO)
  config = tiny_config()
  config.mesh.shape = (2, 2, 2)
  config.init_from = source['workdir']
  assert config.init_from_vq_stats and config.init_from_teacher  # the defaults
  state, first_batch = _first_step_state(config, tmp_path / 'ft', monkeypatch)
  got, want = state_arrays(state), source['state']

  for part in ('params', 'teacher', 'vq_stats'):
    _assert_part_equal(got, want, part)
  np.testing.assert_array_equal(got['eos_bias'], SOURCE_EOS_BIAS)
  # Fresh: step 0, optimizer state = optax init of the loaded params, the seed's RNG, the data
  # iterator from its start (the source's was 2 batches on).
  assert int(got['step']) == 0 and int(state.nonfinite_steps) == 0
  opt = flat(train.make_optimizer(config).init(state.params))
  assert got['opt'].keys() == opt.keys()
  for key in opt:
    np.testing.assert_array_equal(got['opt'][key], opt[key], err_msg=f'opt{key}')
  assert any(not np.array_equal(got['opt'][k], want['opt'][k]) for k in opt)
  np.testing.assert_array_equal(got['rng'], jax.random.split(jax.random.PRNGKey(config.seed))[1])
  np.testing.assert_array_equal(first_batch, next(pipeline.make_train_iterator(config))['index'])
  # Placed with the state's shardings on this (2, 2, 2) mesh, not the source's (8, 1, 1).
  shardings = train.Trainer(config).state_sharding
  for x, s in zip(jax.tree.leaves(state), jax.tree.leaves(shardings)):
    assert x.sharding.is_equivalent_to(s, x.ndim), (x.shape, x.sharding, s)
  kernel = state.params['decoder']['layers']['mlp']['wi']['kernel']  # [layers, embed, mlp]
  assert kernel.addressable_shards[0].data.shape == (1, 32 // 2, 64 // 2)

  log = _messages(caplog)
  assert re.search(
    rf'Initialized from .*{SOURCE_STEP} \(step {SOURCE_STEP}\): params, vq_stats, '
    'teacher_params, eos_bias loaded',
    log,
  ), log
  # The default schedule starts in stage 0, where the teacher copies the student: warned.
  assert 'init_from_teacher: the loaded EMA teacher is replaced' in log


def test_init_from_without_vq_stats_and_teacher(source, tmp_path, monkeypatch):
  config = tiny_config()
  config.init_from = os.path.join(
    source['workdir'], 'checkpoints', str(SOURCE_STEP)
  )  # a step folder
  config.init_from_vq_stats = False
  config.init_from_teacher = False
  state, _ = _first_step_state(config, tmp_path / 'ft', monkeypatch)
  got, want, fresh = state_arrays(state), source['state'], source['fresh']
  _assert_part_equal(got, want, 'params')
  # The teacher starts as a copy of the loaded student, the codebook state as a fresh run's.
  assert got['teacher'].keys() == want['params'].keys()
  for key in want['params']:
    np.testing.assert_array_equal(got['teacher'][key], want['params'][key], err_msg=key)
  _assert_part_equal(got, fresh, 'vq_stats')
  assert any(not np.array_equal(got['vq_stats'][k], want['vq_stats'][k]) for k in want['vq_stats'])
  assert float(got['eos_bias']) == 0.0 and int(got['step']) == 0


def test_init_from_without_a_length_controller_starts_the_eos_bias_at_0(
  source, tmp_path, monkeypatch, caplog
):
  """With this run's controller off nothing moves the EOS bias: the source's is not loaded (it
  would shorten every decode for good); the teacher still is."""
  caplog.set_level(py_logging.INFO)
  config = tiny_config()
  config.init_from = source['workdir']
  config.length.controller_gain = 0.0
  state, _ = _first_step_state(config, tmp_path / 'ft', monkeypatch)
  got, want = state_arrays(state), source['state']
  assert float(got['eos_bias']) == 0.0
  _assert_part_equal(got, want, 'teacher')
  log = _messages(caplog)
  assert 'the source EOS bias is not loaded' in log
  assert 'params, vq_stats, teacher_params loaded' in log


def test_init_from_a_source_without_the_code_embedding(source, tmp_path, monkeypatch, caplog):
  """`model.decoder_reads_codes` on, the source without it: everything the source has is loaded,
  the code embedding it lacks starts from this run's fresh init (student and teacher); the other
  way round is refused."""
  caplog.set_level(py_logging.INFO)
  config = tiny_config()
  config.init_from = source['workdir']
  config.model.decoder_reads_codes = True
  state, _ = _first_step_state(config, tmp_path / 'ft', monkeypatch)
  got, want = state_arrays(state), source['state']
  trainer = train.Trainer(config)
  fresh = state_arrays(trainer.init_state())
  for part in ('params', 'teacher'):
    added = {k for k in got[part] if k.startswith("['code_embed']")}
    assert added and got[part].keys() == want[part].keys() | added, part
    for key in want[part]:
      np.testing.assert_array_equal(got[part][key], want[part][key], err_msg=f'{part}{key}')
    for key in added:
      np.testing.assert_array_equal(got[part][key], fresh['params'][key], err_msg=f'{part}{key}')
  _assert_part_equal(got, want, 'vq_stats')
  assert 'code_embed not in the source: fresh init' in _messages(caplog)

  # A source that reads codes does not fit a run that does not.
  reads_codes = tmp_path / 'reads_codes'
  with checkpointing.Checkpointer(
    reads_codes / 'checkpoints', async_save=False, config=config
  ) as ck:
    ck.save(1, jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), trainer.abstract_state))
  with pytest.raises(
    config_validation.ConfigError,
    match=re.escape('config.model.decoder_reads_codes=False (source: True)'),
  ):
    train.resolve_init_from(_with_init_from(tiny_config(), reads_codes), str(tmp_path / 'ft2'))


def test_model_mismatch_raises_naming_the_keys(source, tmp_path, monkeypatch):
  config = tiny_config()
  config.init_from = source['workdir']
  config.model.d_model = 48
  config.model.codebook_size = 32
  config.model.dropout_rate = 0.1  # changes no parameter shape: not reported
  workdir = tmp_path / 'ft'
  monkeypatch.setattr(train.Trainer, '__init__', lambda *a, **k: pytest.fail('built a trainer'))
  with pytest.raises(ValueError, match='config.init_from') as e:
    train.train_and_evaluate(config, str(workdir), run_evaluation=False)
  assert isinstance(e.value, config_validation.ConfigError)
  message = str(e.value)
  assert 'config.model.d_model=48 (source: 32)' in message
  assert 'config.model.codebook_size=32 (source: 16)' in message
  assert 'dropout_rate' not in message and 'mlp_dim' not in message
  assert not workdir.exists()  # failed before anything was made
  pointer = tiny_config()  # the time head's own parameters
  pointer.model.update(time_head='pointer', scan_layers=False)
  match = "time_head='pointer' .source: 'centroid'"
  with pytest.raises(config_validation.ConfigError, match=match):
    train.check_init_from_config(pointer, tiny_config(), 'runs/source')


def test_saved_shapes_are_checked_too(source, tmp_path):
  """A checkpoint whose saved config matches but whose arrays do not (e.g. the code changed)."""
  config = tiny_config()
  other = tiny_config()
  other.model.mlp_dim = 96
  abstract = train.Trainer(other).abstract_state
  zeros = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract)
  with checkpointing.Checkpointer(
    tmp_path / 'src' / 'checkpoints', async_save=False, config=config
  ) as ck:
    ck.save(1, zeros)
  folder = train.resolve_init_from(_with_init_from(config, tmp_path / 'src'), str(tmp_path / 'ft'))
  assert folder.name == '1'  # the saved configs agree
  with pytest.raises(
    ValueError,
    match=re.escape(
      "params['decoder']['layers']['mlp']['wi']['kernel']: shape (1, 32, 96) in the checkpoint, "
      '(1, 32, 64) in this model'
    ),
  ):
    train.Trainer(config).init_from_checkpoint(folder)


def test_init_from_a_source_without_a_chosen_grouping(source, tmp_path, monkeypatch):
  """A run that chooses its code grouping (targets.group_candidates > 1) from a source that did
  not: the source's VQ statistics are loaded, the chosen grouping starts unchosen (-1)."""
  config = tiny_config()
  config.init_from = source['workdir']
  config.targets.group_candidates = 3
  state, _ = _first_step_state(config, tmp_path / 'ft', monkeypatch)
  got, want = state_arrays(state)['vq_stats'], source['state']['vq_stats']
  chosen = "['vq']['code_groups']"
  assert got.keys() == want.keys() | {chosen}
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  np.testing.assert_array_equal(got[chosen], np.full(config.model.codebook_size, -1))


def _with_init_from(config, path):
  config.init_from = str(path)
  return config


def test_missing_source_raises_naming_the_key(tmp_path):
  config = _with_init_from(tiny_config(), tmp_path / 'nowhere')
  with pytest.raises(FileNotFoundError, match='config.init_from=.*no committed checkpoint'):
    train.resolve_init_from(config, str(tmp_path / 'ft'))


def test_resumed_workdir_ignores_init_from(source, tmp_path, monkeypatch, caplog):
  caplog.set_level(py_logging.INFO)
  config = tiny_config()
  config.init_from = source['workdir']
  workdir = tmp_path / 'ft'
  own_step = 3
  with checkpointing.Checkpointer(workdir / 'checkpoints', async_save=False, config=config) as ck:
    ck.save(own_step, source['fresh_state'].replace(step=jnp.int32(own_step)))
  state, _ = _first_step_state(config, workdir, monkeypatch)
  got, own = state_arrays(state), source['fresh']
  assert int(got['step']) == own_step
  for part in ('params', 'teacher', 'opt', 'vq_stats'):
    _assert_part_equal(got, own, part)
  assert not np.array_equal(
    got['params'][next(iter(own['params']))], source['state']['params'][next(iter(own['params']))]
  )
  log = _messages(caplog)
  assert 'config.init_from=' in log and 'ignored' in log and 'Initialized from' not in log


def test_finetune_stage2_step_continues_the_loaded_teacher(source, tmp_path, caplog):
  """A real stage-2 fine-tuning step (the donated, sharded loaded state): the teacher is the EMA of
  the loaded teacher, teacher_1 = d * teacher_0 + (1 - d) * params_1."""
  caplog.set_level(py_logging.INFO)
  config = tiny_config()
  config.init_from = source['workdir']
  config.num_train_steps = 1
  config.schedule.update(stage1_start=0, stage2_start=0, ema_warmup_steps=0)
  workdir = tmp_path / 'ft'
  state = train.train_and_evaluate(config, str(workdir), run_evaluation=False)
  got, want = state_arrays(state), source['state']
  assert int(got['step']) == 1 and int(state.nonfinite_steps) == 0
  d = config.schedule.ema_decay
  for key in want['teacher']:
    np.testing.assert_allclose(
      got['teacher'][key],
      d * want['teacher'][key] + (1 - d) * got['params'][key],
      rtol=1e-5,
      atol=1e-6,
      err_msg=key,
    )
  assert checkpointing.committed_steps(workdir / 'checkpoints') == [1]
  assert 'replaced by the student' not in _messages(caplog)


def test_config_validation_of_the_init_from_keys():
  config = tiny_config()
  assert config.init_from == ''
  config.update(init_from='runs/base', init_from_vq_stats=False)
  config.schedule.update(stage1_start=0, stage2_start=0)
  with pytest.raises(
    config_validation.ConfigError, match='config.init_from_vq_stats.*without ever being trained'
  ):
    config_validation.validate_config(config)
  config.init_from_vq_stats = True  # the source's codebook
  config_validation.validate_config(config)
  config.update(init_from_vq_stats=False, init_from='')  # not fine-tuning: a fresh run's business
  config_validation.validate_config(config)


def test_a_run_without_stage_0_keeps_the_sources_units_vq_refit_and_grouping(
  tmp_path_factory, tmp_path, caplog
):
  """configs/small_corpus.py's stage-0 fits (acoustic units, the VQ refit, the chosen grouping)
  with `init_from` and stage 1 from step 0 (the README's fine-tuning that keeps the teacher): the
  source's units, refitted codebook and chosen grouping stay as loaded; nothing is fitted again
  (no report files of a refit or a choice)."""
  caplog.set_level(py_logging.INFO)
  source_config, source_workdir, source_state = shared_runs.stage1_run(tmp_path_factory)
  config = shared_runs.stage1_config()  # the source's stage-1 step: its compiled program
  config.init_from = source_workdir
  config.num_train_steps = 1
  config.schedule.update(stage1_start=0, ema_warmup_steps=0)
  config_validation.validate_config(config)
  workdir = tmp_path / 'ft'
  state = train.train_and_evaluate(config, str(workdir), run_evaluation=False)
  got, want = state_arrays(state)['vq_stats'], state_arrays(source_state)['vq_stats']
  assert got.keys() == want.keys()
  assert any('unit_centroids' in k for k in got) and any('code_groups' in k for k in got)
  for key in want:  # the quantizer is frozen after stage 0: the step leaves it as loaded
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  assert np.all(got["['vq']['code_groups']"] >= 0)
  assert not (workdir / train.VQ_REFIT_FILE).exists()
  assert not (workdir / train.CODE_GROUPS_FILE).exists()
  assert 'kept as loaded, nothing fitted or chosen' in _messages(caplog)
  config.init_from = ''  # from scratch there is no stage-0 encoder to refit or group
  with pytest.raises(config_validation.ConfigError, match='config.vq.refit'):
    config_validation.validate_config(config)
  config.vq.refit = 'none'
  with pytest.raises(config_validation.ConfigError, match='config.targets.group_candidates'):
    config_validation.validate_config(config)
