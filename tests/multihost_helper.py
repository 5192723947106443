"""A toy sharded train step, and a script that runs it as one process of a multi-process job.

Imported by `sharding_test.py` / `checkpointing_test.py` for the toy model, state and step; run
as a script by `sharding_test.py::test_two_process_training_matches_single_process`:

  python tests/multihost_helper.py --process_id=0 --num_processes=2 \
      --coordinator=localhost:12345 --outdir=/tmp/out [--mesh=2,2,1] [--steps=3]

Each process initializes `jax.distributed` through `sharding.maybe_initialize_distributed()` and
the PAIRALIGN_* environment variables (CPU collectives: gloo, the jax default),
builds the mesh over all processes' devices, feeds its own slice of the fixed global batch
through `sharding.global_batch`, runs the steps, saves a checkpoint with `Checkpointer`
(state + its grain iterator) into `outdir/checkpoints`, restores it, and process 0 writes the
final parameters (gathered with `process_allgather`) to `outdir/params.npz`.

The model-specific part is `toy_setup()` / `toy_train_step()`; to exercise the real train step
replace those two (everything else only needs a state pytree with boxed params and a step
function `(state, batch) -> (state, metrics)`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

if __name__ == '__main__':
  # Before jax is imported: a CPU-only process with a few simulated devices.
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from typing import Any  # noqa: E402

import flax  # noqa: E402
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from pairalign_jax import sharding  # noqa: E402

FEATURES = 8  # 'embed'
HIDDEN = 16  # 'mlp'
GLOBAL_BATCH = 16
RULES = (('batch', ('data', 'fsdp')), ('embed', 'fsdp'), ('mlp', 'tensor'))


# ------------------------------------------------------------------------ toy model and step


class ToyModel(nn.Module):
  """Two Dense layers with logically partitioned kernels: [b, embed] -> [b, mlp] -> [b, embed]."""

  @nn.compact
  def __call__(self, x, dropout_rng=None):
    h = nn.Dense(
      HIDDEN,
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ('embed', 'mlp')),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('mlp',)),
    )(x)
    h = nn.with_logical_constraint(nn.gelu(h), ('batch', 'mlp'))  # [b, mlp]
    if dropout_rng is not None:
      keep = jax.random.bernoulli(dropout_rng, 0.9, h.shape)
      h = jnp.where(keep, h / 0.9, 0.0)
    return nn.Dense(
      FEATURES,
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ('mlp', 'embed')),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)),
    )(h)


@flax.struct.dataclass
class ToyState:
  """Shaped like the real TrainState: step, params, opt_state, rng plus extra fields."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # raw uint32[2] key data
  loss_ema: jax.Array  # [] float32, an extra non-parameter field


def toy_optimizer() -> optax.GradientTransformation:
  return optax.adamw(1e-2, weight_decay=1e-3)


def toy_create_state(rng: jax.Array) -> ToyState:
  """The state with boxed params (call under jax.eval_shape for the abstract state)."""
  model, tx = ToyModel(), toy_optimizer()
  init_rng, rng = jax.random.split(rng)
  params = model.init(init_rng, jnp.zeros((1, FEATURES), jnp.float32))['params']
  return ToyState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    rng=rng,
    loss_ema=jnp.zeros((), jnp.float32),
  )


def toy_train_step(
  state: ToyState, batch: dict[str, jax.Array]
) -> tuple[ToyState, dict[str, jax.Array]]:
  """One AdamW step on mean squared error with dropout; batch {'x': [b, 8], 'y': [b, 8]}."""
  model, tx = ToyModel(), toy_optimizer()
  rng, dropout_rng = jax.random.split(state.rng)

  def loss_fn(params):
    pred = model.apply({'params': params}, batch['x'], dropout_rng=dropout_rng)  # [b, embed]
    return jnp.mean((pred - batch['y']) ** 2)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    opt_state=opt_state,
    rng=rng,
    loss_ema=0.9 * state.loss_ema + 0.1 * loss,
  )
  return new_state, {'loss': loss}


def toy_global_batch(seed: int = 0, size: int = GLOBAL_BATCH) -> dict[str, np.ndarray]:
  """A fixed global batch {'x', 'y'}: [size, 8] float32 each."""
  rs = np.random.RandomState(seed)
  x = rs.randn(size, FEATURES).astype(np.float32)
  w = rs.randn(FEATURES, FEATURES).astype(np.float32) / np.sqrt(FEATURES)
  return {'x': x, 'y': np.tanh(x @ w).astype(np.float32)}


def toy_setup(mesh: jax.sharding.Mesh, rules=RULES, seed: int = 0):
  """(initial state, jitted step, abstract state, state shardings) for the toy model on `mesh`."""
  boxed = jax.eval_shape(toy_create_state, jax.random.PRNGKey(seed))
  abstract, shardings = sharding.abstract_state_and_shardings(boxed, mesh, rules)
  init = jax.jit(lambda r: sharding.unbox(toy_create_state(r)), out_shardings=shardings)
  step = jax.jit(
    toy_train_step,
    in_shardings=(shardings, sharding.batch_sharding(mesh)),
    out_shardings=(shardings, None),
    donate_argnums=(0,),
  )
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state = init(jax.random.PRNGKey(seed))
  return state, step, abstract, shardings


def run_toy_steps(state, step, mesh, local_batches, rules=RULES):
  """Runs `step` over `local_batches` (this process's numpy slices); returns (state, losses)."""
  losses = []
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    for local in local_batches:
      state, metrics = step(state, sharding.global_batch(local, mesh))
      losses.append(float(metrics['loss']))
  return state, losses


def local_slice(
  batch: dict[str, np.ndarray], process_id: int, num_processes: int
) -> dict[str, np.ndarray]:
  """This process's consecutive slice of a global batch."""
  n = next(iter(batch.values())).shape[0] // num_processes
  return {k: v[process_id * n : (process_id + 1) * n] for k, v in batch.items()}


def mesh_config(shape, batch_size: int = GLOBAL_BATCH) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.batch_size = batch_size
  config.mesh = ml_collections.ConfigDict()
  config.mesh.shape = tuple(shape)
  config.mesh.logical_axis_rules = RULES
  return config


def flat_params(params) -> dict[str, np.ndarray]:
  """{'Dense_0/kernel': array, ...} from a params tree of (fully addressable) arrays."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep='/')
  return {k: np.asarray(v) for k, v in flat.items()}


# ------------------------------------------------------------------------------------ script


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--process_id', type=int, required=True)
  parser.add_argument('--num_processes', type=int, required=True)
  parser.add_argument('--coordinator', required=True, help='host:port of process 0')
  parser.add_argument('--outdir', required=True)
  parser.add_argument('--mesh', default='2,2,1', help="('data','fsdp','tensor') shape, -1 allowed")
  parser.add_argument('--steps', type=int, default=3)
  args = parser.parse_args(argv)

  import grain
  from jax.experimental import multihost_utils

  from pairalign_jax import checkpointing

  # The environment route of the real entry point (launch/*.sh set these variables), which ends in
  # jax.distributed.initialize(coordinator_address, num_processes, process_id).
  os.environ.update(
    PAIRALIGN_COORDINATOR=args.coordinator,
    PAIRALIGN_NUM_PROCESSES=str(args.num_processes),
    PAIRALIGN_PROCESS_ID=str(args.process_id),
  )
  assert sharding.maybe_initialize_distributed()
  assert jax.process_count() == args.num_processes, jax.process_count()
  config = mesh_config([int(x) for x in args.mesh.split(',')])
  mesh = sharding.make_mesh(config)

  state, step, abstract, shardings = toy_setup(mesh)
  local = local_slice(toy_global_batch(), jax.process_index(), jax.process_count())
  state, losses = run_toy_steps(state, step, mesh, [local] * args.steps)

  # Checkpoint (state + this process's data iterator), then restore it into a fresh target.
  data_iter = iter(
    grain.MapDataset.range(32)[jax.process_index() :: jax.process_count()]
    .batch(2)
    .to_iter_dataset()
  )
  next(data_iter)
  ckpt_dir = os.path.join(args.outdir, 'checkpoints')
  with checkpointing.Checkpointer(ckpt_dir, max_to_keep=2, async_save=True, config=config) as ckpt:
    handler_installed = ckpt.install_preemption_handler()  # False: JAX's preemption service
    stop_requested = ckpt.should_stop(args.steps)  # collective sync point, no preemption
    ckpt.save(args.steps, state, data_iter, meta={'losses': losses})
    ckpt.wait_until_finished()
    expected_next = next(data_iter)
    fresh_iter = iter(
      grain.MapDataset.range(32)[jax.process_index() :: jax.process_count()]
      .batch(2)
      .to_iter_dataset()
    )
    restored, restored_step = ckpt.restore_latest(abstract, fresh_iter)
  restored_next = next(fresh_iter)

  gathered = multihost_utils.process_allgather(state.params, tiled=True)
  gathered_restored = multihost_utils.process_allgather(restored.params, tiled=True)
  restore_ok = (
    restored_step == args.steps
    and all(
      np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(gathered), jax.tree.leaves(gathered_restored))
    )
    and np.array_equal(expected_next, restored_next)
  )
  all_ok = multihost_utils.process_allgather(np.array([restore_ok]), tiled=True)
  if jax.process_index() == 0:
    os.makedirs(args.outdir, exist_ok=True)
    np.savez(os.path.join(args.outdir, 'params.npz'), **flat_params(gathered))
    with open(os.path.join(args.outdir, 'result.json'), 'w') as f:
      json.dump(
        {
          'losses': losses,
          'restore_ok': bool(np.all(all_ok)),
          'process_count': jax.process_count(),
          'device_count': jax.device_count(),
          'mesh': dict(mesh.shape),
          'handler_installed': handler_installed,
          'stop_requested': stop_requested,
        },
        f,
      )
  multihost_utils.sync_global_devices('multihost_helper_done')
  jax.distributed.shutdown()


if __name__ == '__main__':
  main()
