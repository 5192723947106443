"""Mesh construction, logical-rule shardings, global batches, and one toy train step that must give
the same numbers on every mesh, in one process or two."""

import json
import os
import socket
import subprocess
import sys

import flax.linen as nn
import jax
import multihost_helper as mh
import numpy as np
import pytest

from configs import default
from pairalign_jax import config_validation
from pairalign_jax import sharding

STEPS = 3
HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _mesh(shape):
  return sharding.make_mesh(mh.mesh_config(shape), devices=jax.devices()[: int(np.prod(shape))])


@pytest.fixture(scope='module')
def reference():
  """Losses and final params of the toy step on one device."""
  mesh = _mesh((1, 1, 1))
  state, step, _, _ = mh.toy_setup(mesh)
  state, losses = mh.run_toy_steps(state, step, mesh, [mh.toy_global_batch()] * STEPS)
  return losses, mh.flat_params(state.params), np.asarray(state.rng), float(state.loss_ema)


@pytest.mark.parametrize('shape', [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 1, 1)])
def test_toy_train_step_is_mesh_independent(reference, shape):
  ref_losses, ref_params, ref_rng, ref_ema = reference
  mesh = _mesh(shape)
  state, step, abstract, shardings = mh.toy_setup(mesh)
  first = state
  state, losses = mh.run_toy_steps(state, step, mesh, [mh.toy_global_batch()] * STEPS)

  assert first.params['Dense_0']['kernel'].is_deleted()  # donated
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
  params = mh.flat_params(state.params)
  assert params.keys() == ref_params.keys()
  for key in params:
    np.testing.assert_allclose(params[key], ref_params[key], rtol=1e-5, atol=1e-6, err_msg=key)
  np.testing.assert_array_equal(np.asarray(state.rng), ref_rng)
  np.testing.assert_allclose(float(state.loss_ema), ref_ema, rtol=1e-5)
  assert int(state.step) == STEPS

  # Parameters and their optimizer moments follow the rules (embed -> fsdp, mlp -> tensor).
  _, fsdp, tensor = shape
  kernel = state.params['Dense_0']['kernel']  # [embed=8, mlp=16]
  assert kernel.sharding == shardings.params['Dense_0']['kernel']
  assert kernel.addressable_shards[0].data.shape == (8 // fsdp, 16 // tensor)
  mu = state.opt_state[0].mu['Dense_1']['kernel']  # [mlp=16, embed=8]
  assert mu.addressable_shards[0].data.shape == (16 // tensor, 8 // fsdp)
  assert state.step.sharding.is_fully_replicated and state.rng.sharding.is_fully_replicated
  assert abstract.params['Dense_0']['kernel'].sharding == kernel.sharding


def test_make_mesh_resolves_minus_one():
  mesh = sharding.make_mesh(mh.mesh_config((-1, 2, 1)))
  assert mesh.axis_names == ('data', 'fsdp', 'tensor')
  assert dict(mesh.shape) == {'data': 4, 'fsdp': 2, 'tensor': 1}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  assert sharding.make_mesh(default.get_config()).shape['data'] == jax.device_count()


@pytest.mark.parametrize(
  'shape,batch,key',
  [
    ((3, 1, 1), 16, 'config.mesh.shape'),  # uses 3 of 8 devices
    ((-1, 3, 1), 16, 'config.mesh.shape'),  # 3 does not divide 8
    ((2, 2), 16, 'config.mesh.shape'),  # wrong rank
    ((-1, -1, 1), 16, 'config.mesh.shape'),  # two -1
    ((0, 8, 1), 16, 'config.mesh.shape'),
    ((8, 1, 1), 12, 'config.batch_size'),  # 12 not divisible by data*fsdp = 8
    ((2, 2, 2), 6, 'config.batch_size'),  # 6 not divisible by 4
  ],
)
def test_make_mesh_errors_name_the_key(shape, batch, key):
  with pytest.raises(config_validation.ConfigError, match=key.replace('.', r'\.')):
    sharding.make_mesh(mh.mesh_config(shape, batch_size=batch))


def test_logical_rules_from_config():
  rules = sharding.logical_rules(default.get_config())
  assert isinstance(rules, tuple)
  assert dict(rules)['batch'] == ('data', 'fsdp') and dict(rules)['embed'] == 'fsdp'
  assert dict(rules)['kv'] is None
  config = mh.mesh_config((8, 1, 1))
  config.mesh.logical_axis_rules = (('embed', 'fsdp'), ('mlp', 'model'))
  with pytest.raises(config_validation.ConfigError, match=r'logical_axis_rules\[1\].*model'):
    sharding.logical_rules(config)


def test_state_shardings_boxes_specs_and_indivisible_dims():
  mesh = _mesh((1, 2, 4))
  rules = (('vocab', 'tensor'), ('embed', 'fsdp'), ('mlp', 'tensor'))
  sds = jax.ShapeDtypeStruct
  tree = {
    'logits': nn.LogicallyPartitioned(
      sds((8, 515), np.float32), ('embed', 'vocab')
    ),  # 515 % 4 != 0
    'mlp': nn.LogicallyPartitioned(sds((8, 16), np.float32), ('embed', 'mlp')),
    'mesh_named': nn.Partitioned(sds((4, 6), np.float32), ('tensor', None)),
    'count': sds((), np.int32),
    'rng': np.zeros((2,), np.uint32),
  }
  out = sharding.state_shardings(tree, mesh, rules)
  assert out['logits'].spec == jax.P('fsdp')  # vocab stays whole
  assert out['mlp'].spec == jax.P('fsdp', 'tensor')
  assert out['mesh_named'].spec == jax.P('tensor')
  assert out['count'].spec == jax.P() and out['rng'].spec == jax.P()
  abstract, shardings = sharding.abstract_state_and_shardings(tree, mesh, rules)
  assert abstract['mlp'].shape == (8, 16) and abstract['mlp'].sharding == shardings['mlp']
  # A tree of logical PartitionSpecs works as well.
  specs = sharding.state_shardings({'w': jax.P('embed', 'mlp'), 'b': jax.P()}, mesh, rules)
  assert specs['w'].spec == jax.P('fsdp', 'tensor') and specs['b'].spec == jax.P()
  # Without explicit rules, the `nn.logical_axis_rules` context is used.
  with nn.logical_axis_rules(rules):
    assert sharding.state_shardings(tree, mesh)['mlp'].spec == jax.P('fsdp', 'tensor')
  with pytest.raises(TypeError, match=r"\['bad'\]"):
    sharding.state_shardings({'bad': 'x'}, mesh, rules)


def test_global_batch_single_process():
  mesh = _mesh((2, 2, 2))
  local = {'x': np.arange(16 * 3, dtype=np.float32).reshape(16, 3), 'i': np.arange(16)}
  out = sharding.global_batch(local, mesh)
  assert out['x'].sharding == sharding.batch_sharding(mesh)
  assert out['x'].addressable_shards[0].data.shape == (4, 3)  # 16 / (data*fsdp)
  np.testing.assert_array_equal(np.asarray(out['x']), local['x'])
  np.testing.assert_array_equal(np.asarray(out['i']), local['i'])
  with pytest.raises(ValueError, match="'x'.*data\\*fsdp = 4"):
    sharding.global_batch({'x': np.zeros((6, 3))}, mesh)


def test_maybe_initialize_distributed_is_noop_without_request():
  assert not sharding.maybe_initialize_distributed(env={})
  assert not sharding.maybe_initialize_distributed(
    env={'PAIRALIGN_DISTRIBUTED': '0', 'PAIRALIGN_COORDINATOR': 'localhost:1'}
  )
  assert not sharding.maybe_initialize_distributed(
    env={
      'PAIRALIGN_COORDINATOR': 'localhost:1',
      'PAIRALIGN_NUM_PROCESSES': '1',
      'PAIRALIGN_PROCESS_ID': '0',
    }
  )
  with pytest.raises(ValueError, match='PAIRALIGN_NUM_PROCESSES'):
    sharding.maybe_initialize_distributed(
      env={'PAIRALIGN_COORDINATOR': 'localhost:1', 'PAIRALIGN_NUM_PROCESSES': 'two'}
    )
  assert not jax.distributed.is_initialized()


def test_two_process_training_matches_single_process(reference, tmp_path):
  """Two CPU processes x 2 devices on loopback, mesh (2, 2, 1): same params as one device."""
  ref_losses, ref_params, _, _ = reference
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if not k.startswith(('PAIRALIGN_', 'JAX_COORDINATOR'))}
  env.update(XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
  env.pop('JAX_NUM_CPU_DEVICES', None)
  procs, logs = [], []
  for pid in range(2):
    log = open(tmp_path / f'process_{pid}.log', 'w+')
    logs.append(log)
    procs.append(
      subprocess.Popen(
        [
          sys.executable,
          os.path.join(HERE, 'multihost_helper.py'),
          f'--process_id={pid}',
          '--num_processes=2',
          f'--coordinator=localhost:{port}',
          f'--outdir={tmp_path}',
          '--mesh=2,2,1',
          f'--steps={STEPS}',
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
      )
    )
  try:
    for p in procs:
      p.wait(timeout=120)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  outputs = []
  for log in logs:
    log.seek(0)
    outputs.append(log.read()[-3000:])
    log.close()
  codes = [p.returncode for p in procs]
  if any(codes) and any('UNIMPLEMENTED' in o and 'distributed' in o.lower() for o in outputs):
    pytest.skip(f'jax.distributed is not supported on this machine: {outputs[0][-500:]}')
  assert codes == [0, 0], '\n\n'.join(outputs)

  result = json.loads((tmp_path / 'result.json').read_text())
  assert result['process_count'] == 2 and result['device_count'] == 4
  assert result['mesh'] == {'data': 2, 'fsdp': 2, 'tensor': 1}
  assert result['restore_ok']
  assert not result['handler_installed'] and not result['stop_requested']
  np.testing.assert_allclose(result['losses'], ref_losses, rtol=1e-5, atol=1e-6)
  got = dict(np.load(tmp_path / 'params.npz'))
  assert got.keys() == ref_params.keys()
  for key in got:
    np.testing.assert_allclose(got[key], ref_params[key], rtol=1e-5, atol=1e-6, err_msg=key)
  saved = tmp_path / 'checkpoints' / str(STEPS)
  iterator_files = sorted(f for f in os.listdir(saved / 'data_iter') if f.endswith('.json'))
  assert iterator_files == ['process_0-of-2.json', 'process_1-of-2.json']
