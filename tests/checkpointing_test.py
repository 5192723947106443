"""Checkpointer: round trip with the data iterator, retention, torn-checkpoint fallback,
params-only restore onto another mesh, SIGTERM flag."""

import logging as py_logging
import os
import signal

import grain
import jax
import multihost_helper as mh
import numpy as np
import pytest

from pairalign_jax import checkpointing
from pairalign_jax import sharding


def _mesh(shape):
  return sharding.make_mesh(mh.mesh_config(shape), devices=jax.devices()[: int(np.prod(shape))])


def _iterator(seed=3):
  # [4] int64 batches of a shuffled range.
  return iter(grain.MapDataset.range(64).seed(seed).shuffle().batch(4).to_iter_dataset())


def _trained_state(mesh, steps=2):
  state, step, abstract, shardings = mh.toy_setup(mesh)
  state, _ = mh.run_toy_steps(state, step, mesh, [mh.toy_global_batch()] * steps)
  return state, abstract, shardings


def _assert_trees_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb) and la
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_state_iterator_config_meta(tmp_path):
  mesh = _mesh((8, 1, 1))
  state, abstract, shardings = _trained_state(mesh)
  config = mh.mesh_config((8, 1, 1))
  it = _iterator()
  for _ in range(3):
    next(it)
  with checkpointing.Checkpointer(
    tmp_path / 'ckpt', max_to_keep=3, async_save=True, config=config
  ) as ck:
    assert ck.save(2, state, it, meta={'skipped': {'empty': 1}, 'rate': np.float32(12.5)})
    # The iterator moves on while the async save may still be writing: the saved position stays.
    expected = [next(it) for _ in range(2)]
  with checkpointing.Checkpointer(tmp_path / 'ckpt', max_to_keep=3) as ck:
    fresh = _iterator()
    restored, step = ck.restore_latest(abstract, fresh)
    assert step == 2
    assert ck.read_meta() == {'skipped': {'empty': 1}, 'rate': 12.5}
  _assert_trees_equal(restored, state)
  assert restored.params['Dense_0']['kernel'].sharding == shardings.params['Dense_0']['kernel']
  assert int(restored.step) == 2 and restored.loss_ema.dtype == np.float32
  for want in expected:
    np.testing.assert_array_equal(next(fresh), want)
  read = checkpointing.read_config(tmp_path / 'ckpt')
  assert read.mesh.shape == (8, 1, 1) and read.mesh.logical_axis_rules == mh.RULES
  assert read.batch_size == config.batch_size


def test_restore_latest_without_checkpoints_is_none(tmp_path):
  with checkpointing.Checkpointer(tmp_path / 'empty', async_save=False) as ck:
    assert ck.restore_latest({'w': jax.ShapeDtypeStruct((2,), np.float32)}) is None
    assert ck.latest_step() is None


@pytest.mark.parametrize('max_to_keep,keep_period,expected', [(2, None, [6, 7]), (2, 3, [3, 6, 7])])
def test_retention(tmp_path, max_to_keep, keep_period, expected):
  state = {'w': np.arange(3, dtype=np.float32)}
  with checkpointing.Checkpointer(
    tmp_path, max_to_keep=max_to_keep, keep_period=keep_period, async_save=True
  ) as ck:
    for step in range(1, 8):
      assert ck.save(step, {'w': state['w'] + step})
    ck.wait_until_finished()
    assert ck.all_steps() == expected
  assert checkpointing.committed_steps(tmp_path) == expected


def test_save_interval_and_repeated_step(tmp_path):
  with checkpointing.Checkpointer(tmp_path, save_interval_steps=5, async_save=False) as ck:
    assert ck.save(3, {'w': np.zeros(2)})  # Orbax always takes the first save
    assert not ck.save(7, {'w': np.zeros(2)})  # not a multiple of 5
    assert ck.save(7, {'w': np.zeros(2)}, force=True)
    assert not ck.save(7, {'w': np.ones(2)}, force=True)  # already saved: not overwritten
    assert ck.save(10, {'w': np.ones(2)})
    assert ck.all_steps() == [3, 7, 10]


def _corrupt(folder, how):
  if how == 'truncate':
    for root, _, files in os.walk(folder / 'state'):
      for name in files:
        if name not in ('commit_success.txt',):
          with open(os.path.join(root, name), 'r+b') as f:
            f.truncate(3)
  elif how == 'delete':
    for root, _, files in os.walk(folder / 'state'):  # every array data file
      if os.path.basename(root) == 'd':
        for name in files:
          os.remove(os.path.join(root, name))
  elif how == 'no_marker':
    os.remove(folder / checkpointing.COMMIT_MARKER)
  elif how == 'iterator':
    for name in os.listdir(folder / 'data_iter'):
      if name.endswith('.json'):
        (folder / 'data_iter' / name).write_text('{"next_index": ')
  elif how == 'uncommitted':
    os.rename(folder, str(folder) + checkpointing.TMP_SUFFIX + '-123')
  else:
    raise ValueError(how)


@pytest.mark.parametrize('how', ['truncate', 'delete', 'no_marker', 'iterator', 'uncommitted'])
def test_corrupt_latest_falls_back_with_warning(tmp_path, caplog, how):
  states = {s: {'w': np.full((4,), s, np.float32), 'step': np.int32(s)} for s in (1, 2, 3)}
  abstract = {
    'w': jax.ShapeDtypeStruct((4,), np.float32, sharding=_replicated()),
    'step': jax.ShapeDtypeStruct((), np.int32, sharding=_replicated()),
  }
  iterators = {}
  with checkpointing.Checkpointer(tmp_path, max_to_keep=5, async_save=False) as ck:
    it = _iterator()
    for s in (1, 2, 3):
      next(it)
      ck.save(s, states[s], it)
      iterators[s] = next(_clone_after(s))
  _corrupt(tmp_path / '3', how)
  caplog.set_level(py_logging.WARNING)
  with checkpointing.Checkpointer(tmp_path, max_to_keep=5, async_save=False) as ck:
    fresh = _iterator()
    state, step = ck.restore_latest(abstract, fresh)
    assert step == 2
    np.testing.assert_array_equal(state['w'], states[2]['w'])
    np.testing.assert_array_equal(next(fresh), iterators[2])
    folder3 = str(tmp_path / '3')
    assert any(folder3 in r.getMessage() for r in caplog.records if r.levelno >= py_logging.WARNING)
    # The broken step is out of the way: training can save step 3 again.
    assert ck.all_steps() == [1, 2]
    assert ck.save(3, states[3], fresh)
    ck.wait_until_finished()
    assert ck.restore_latest(abstract)[1] == 3


def _replicated():
  return jax.sharding.SingleDeviceSharding(jax.devices()[0])


def _clone_after(n):
  it = _iterator()
  for _ in range(n):
    next(it)
  return it


def test_no_usable_checkpoint_raises(tmp_path):
  with checkpointing.Checkpointer(tmp_path, async_save=False) as ck:
    ck.save(1, {'w': np.zeros(3, np.float32)})
    bad_target = {
      'w': jax.ShapeDtypeStruct((3,), np.float32, sharding=_replicated()),
      'extra': jax.ShapeDtypeStruct((2,), np.float32, sharding=_replicated()),
    }
    with pytest.raises(checkpointing.NoUsableCheckpointError, match='step 1'):
      ck.restore_latest(bad_target)
  assert checkpointing.committed_steps(tmp_path) == [1]  # nothing moved aside


def test_restore_params_on_other_mesh(tmp_path):
  mesh8 = _mesh((8, 1, 1))
  state, _, _ = _trained_state(mesh8, steps=1)
  assert len(state.params['Dense_0']['kernel'].sharding.device_set) == 8
  workdir = tmp_path / 'work'
  config = mh.mesh_config((8, 1, 1))
  with checkpointing.Checkpointer(workdir / 'checkpoints', config=config) as ck:
    ck.save(1, state)
    ck.save(2, state.replace(params=jax.tree.map(lambda x: x + 1, state.params)), force=True)

  # Workdir -> newest step, replicated on one CPU device; fields the state lacks are skipped.
  out = checkpointing.restore_params(workdir)
  assert sorted(out) == ['params']
  leaf = out['params']['Dense_0']['kernel']
  assert leaf.sharding.device_set == {jax.local_devices(backend='cpu')[0]}
  _assert_trees_equal(out['params'], jax.tree.map(lambda x: x + 1, state.params))

  # A specific step folder, onto a (2, 2, 2) mesh via an explicit abstract target.
  mesh222 = _mesh((2, 2, 2))
  _, _, abstract222, shard222 = mh.toy_setup(mesh222)
  out = checkpointing.restore_params(
    workdir / 'checkpoints' / '1', items=('params', 'rng'), abstract={'params': abstract222.params}
  )
  _assert_trees_equal(out['params'], state.params)
  assert out['params']['Dense_0']['kernel'].sharding == shard222.params['Dense_0']['kernel']
  np.testing.assert_array_equal(out['rng'], np.asarray(state.rng))
  assert checkpointing.read_config(workdir).mesh.shape == (8, 1, 1)
  for path in (workdir, workdir / 'checkpoints', workdir / 'checkpoints' / '2'):
    assert checkpointing.workdir_of(path) == str(workdir)
  assert checkpointing.workdir_of(tmp_path) is None

  with pytest.raises(FileNotFoundError, match='step 7'):
    checkpointing.restore_params(workdir, step=7)
  with pytest.raises(FileNotFoundError, match='no committed checkpoint'):
    checkpointing.restore_params(tmp_path / 'nowhere')


def test_sigterm_sets_stop_flag(tmp_path):
  old = signal.getsignal(signal.SIGTERM)
  ck = checkpointing.Checkpointer(tmp_path, async_save=False)
  try:
    assert ck.install_preemption_handler()
    assert not ck.should_stop(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert ck.preempted
    assert ck.should_stop(2)
    assert ck.save(2, {'w': np.zeros(2)}, force=True)
  finally:
    ck.close()
    if signal.getsignal(signal.SIGTERM) is not old:
      signal.signal(signal.SIGTERM, old)
  assert signal.getsignal(signal.SIGTERM) is old  # close() restored the previous handler
