"""Device mesh, logical axis rules, and the shardings of the train state and the batch.

The mesh has three axes, always in this order::

  'data'    pure data parallelism (parameters replicated)
  'fsdp'    data parallelism with parameters (and optimizer state) sharded along 'embed'
  'tensor'  tensor parallelism over 'mlp' / 'heads' / 'vocab'

Parameters carry *logical* axis names (`nn.with_logical_partitioning(init, ('embed', 'mlp'))`);
`config.mesh.logical_axis_rules` maps them to mesh axes. A batch is split over `('data', 'fsdp')`
along its leading dimension. The same code runs on one CPU, 8 simulated CPU devices, a GPU node
and a TPU pod slice; multi-host runs call `maybe_initialize_distributed()` first and build each
global batch from per-host data with `global_batch()`.

Typical use (as in the train loop)::

  mesh = make_mesh(config)
  rules = logical_rules(config)
  boxed = jax.eval_shape(create_state, rng)             # params carry LogicallyPartitioned boxes
  abstract, shardings = abstract_state_and_shardings(boxed, mesh, rules)
  step = jax.jit(train_step, in_shardings=(shardings, batch_sharding(mesh)),
                 out_shardings=(shardings, None), donate_argnums=(0,))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state, metrics = step(state, global_batch(local_numpy_batch, mesh))
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Optional, Sequence

from absl import logging
import flax.linen as nn
import jax
import ml_collections
import numpy as np

from pairalign_jax import config_validation

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')

LogicalRules = tuple[tuple[str, Any], ...]


# ------------------------------------------------------------------------------------------ mesh


def resolve_mesh_shape(
  config: ml_collections.ConfigDict, device_count: Optional[int] = None
) -> tuple[int, int, int]:
  """`config.mesh.shape` with its -1 replaced by the remaining devices.

  Raises:
    ValueError (`config_validation.ConfigError`) naming `config.mesh.shape` when the shape is
    malformed or does not use exactly `device_count` devices, and naming `config.batch_size`
    when the global batch is not divisible by the data-parallel size `data * fsdp`.
  """
  device_count = jax.device_count() if device_count is None else device_count
  shape = tuple(config.mesh.shape)
  if len(shape) != len(MESH_AXES):
    raise config_validation.ConfigError(
      f'config.mesh.shape: must have {len(MESH_AXES)} entries for axes {MESH_AXES}, got {shape}'
    )
  if sum(1 for x in shape if x == -1) > 1 or any(x != -1 and x < 1 for x in shape):
    raise config_validation.ConfigError(
      f'config.mesh.shape: entries must be >= 1 with at most one -1, got {shape}'
    )
  resolved = config_validation.resolve_mesh_shape(shape, device_count)
  data_parallel = resolved[0] * resolved[1]
  if config.batch_size % data_parallel:
    raise config_validation.ConfigError(
      f'config.batch_size: {config.batch_size} is not divisible by the data-parallel size '
      f'data*fsdp = {data_parallel} (config.mesh.shape={shape} -> '
      f'{dict(zip(MESH_AXES, resolved))})'
    )
  return resolved


def make_mesh(
  config: ml_collections.ConfigDict, devices: Optional[Sequence[jax.Device]] = None
) -> jax.sharding.Mesh:
  """A mesh with axes ('data', 'fsdp', 'tensor') over all (global) devices.

  The axes are `AxisType.Auto` (GSPMD propagation, what `nn.with_logical_constraint` and
  jit's `in_shardings`/`out_shardings` are written for); `jax.make_mesh` would default to
  `Explicit`. Device order comes from `jax.make_mesh` (topology-aware on TPU).
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(config, len(devices))
  mesh = jax.make_mesh(
    shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES), devices=devices
  )
  logging.info(
    'mesh %s over %d devices (%d processes)', dict(mesh.shape), len(devices), jax.process_count()
  )
  return mesh


def logical_rules(config: ml_collections.ConfigDict) -> LogicalRules:
  """`config.mesh.logical_axis_rules` as a tuple of (logical name, mesh axis | tuple | None)."""
  rules = []
  for i, rule in enumerate(config.mesh.logical_axis_rules):
    if len(rule) != 2 or not isinstance(rule[0], str):
      raise config_validation.ConfigError(
        f'config.mesh.logical_axis_rules[{i}]: expected (logical_name, mesh_axes), got {rule!r}'
      )
    name, target = rule
    targets = (target,) if isinstance(target, str) else tuple(target or ())
    unknown = [t for t in targets if t not in MESH_AXES]
    if unknown:
      raise config_validation.ConfigError(
        f'config.mesh.logical_axis_rules[{i}]: {name!r} maps to unknown mesh axes {unknown}; '
        f'the mesh axes are {MESH_AXES}'
      )
    rules.append((name, tuple(target) if isinstance(target, (list, tuple)) else target))
  return tuple(rules)


# ------------------------------------------------------------------------------- state shardings


def _is_box(x) -> bool:
  return isinstance(x, nn.meta.AxisMetadata)


def _axis_size(mesh: jax.sharding.Mesh, entry) -> int:
  if entry is None:
    return 1
  names = (entry,) if isinstance(entry, str) else tuple(entry)
  return math.prod(mesh.shape[n] for n in names)


def _fit_spec(
  spec: jax.sharding.PartitionSpec, shape: Sequence[int], mesh: jax.sharding.Mesh, where: str
) -> jax.sharding.PartitionSpec:
  """Drops mesh axes from dimensions they do not divide (that dimension is then replicated).

  E.g. a vocabulary of K + 3 = 515 entries cannot be split over tensor=2; rather than failing
  at compile time the dimension stays whole, and it is logged.
  """
  entries = list(spec) + [None] * (len(shape) - len(spec))
  fitted = []
  for dim, entry in zip(shape, entries):
    size = _axis_size(mesh, entry)
    if size > 1 and dim % size:
      logging.info(
        'sharding: %s dim of size %d is not divisible by mesh axes %s (%d); replicated.',
        where,
        dim,
        entry,
        size,
      )
      entry = None
    fitted.append(entry)
  while fitted and fitted[-1] is None:
    fitted.pop()
  return jax.sharding.PartitionSpec(*fitted)


def _unbox_leaf(x):
  # The raw value: `Partitioned.unbox()` would add a sharding constraint under a global mesh.
  return x.value if hasattr(x, 'value') else x.unbox()


def unbox(tree: Any) -> Any:
  """`tree` with every partitioning box replaced by its value (no sharding constraint added)."""
  return jax.tree.map(lambda x: _unbox_leaf(x) if _is_box(x) else x, tree, is_leaf=_is_box)


def state_shardings(
  abstract_state: Any, mesh: jax.sharding.Mesh, rules: Optional[LogicalRules] = None
) -> Any:
  """A tree of `NamedSharding` with the structure of the unboxed state.

  Args:
    abstract_state: a state pytree (arrays or `jax.ShapeDtypeStruct`) whose leaves may be
      `nn.LogicallyPartitioned` / `nn.Partitioned` boxes (as returned by `model.init` under
      `jax.eval_shape`, also inside optimizer state built from boxed params), or a pytree of
      logical `PartitionSpec`s (one per leaf). Unannotated array leaves (step, rng, scalars)
      are replicated.
    mesh: the device mesh.
    rules: logical -> mesh axis rules (`logical_rules(config)`); needed for logical boxes.

  Returns:
    The same structure with boxes removed and each leaf replaced by a `NamedSharding`. A
    mesh axis that does not divide a dimension is dropped for that dimension (replicated).
  """
  rules = tuple(rules) if rules is not None else None  # None: the `nn.logical_axis_rules` context

  def leaf_sharding(path, x):
    where = jax.tree_util.keystr(path)
    if isinstance(x, jax.sharding.PartitionSpec):
      spec, shape = nn.logical_to_mesh_axes(tuple(x), rules), None
    elif _is_box(x) and hasattr(x, 'get_partition_spec'):
      spec = x.get_partition_spec()
      if isinstance(x, nn.LogicallyPartitioned):
        spec = nn.logical_to_mesh_axes(tuple(spec), x.rules or rules)
      shape = getattr(_unbox_leaf(x), 'shape', None)
    elif hasattr(x, 'shape'):
      spec, shape = jax.sharding.PartitionSpec(), x.shape
    else:
      raise TypeError(
        f'state_shardings: leaf {where} of type {type(x).__name__} is neither an '
        'array, a ShapeDtypeStruct, a partitioning box nor a PartitionSpec'
      )
    if shape is not None:
      spec = _fit_spec(spec, shape, mesh, where)
    return jax.sharding.NamedSharding(mesh, spec)

  return jax.tree_util.tree_map_with_path(
    leaf_sharding,
    abstract_state,
    is_leaf=lambda x: _is_box(x) or isinstance(x, jax.sharding.PartitionSpec),
  )


def abstract_state_and_shardings(
  boxed_state: Any, mesh: jax.sharding.Mesh, rules: Optional[LogicalRules] = None
) -> tuple[Any, Any]:
  """From `jax.eval_shape(init_fn, rng)` (with boxes) to (abstract state, shardings).

  The abstract state is unboxed, its leaves are `jax.ShapeDtypeStruct`s carrying their
  `NamedSharding` (usable directly as an Orbax restore target).
  """
  shardings = state_shardings(boxed_state, mesh, rules)
  unboxed = unbox(boxed_state)
  abstract = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), unboxed, shardings
  )
  return abstract, shardings


def with_shardings(abstract_state: Any, shardings: Any) -> Any:
  """`jax.ShapeDtypeStruct` leaves of `abstract_state` with the given shardings attached."""
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings
  )


# ----------------------------------------------------------------------------------------- batch


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Sharding of `[batch, ...]` arrays: the batch split over ('data', 'fsdp')."""
  return jax.sharding.NamedSharding(mesh, jax.P(BATCH_AXES))


def global_batch(
  local_batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh
) -> dict[str, jax.Array]:
  """Global `jax.Array`s (sharded by `batch_sharding(mesh)`) from this process's sub-batch.

  Each process passes its own `[batch // process_count, ...]` slice (processes in
  `jax.process_index()` order hold consecutive slices of the global batch); on one process
  this is the whole batch. Works single- and multi-process.
  """
  sharding = batch_sharding(mesh)
  data_parallel = mesh.shape['data'] * mesh.shape['fsdp']
  out = {}
  for key, value in local_batch.items():
    value = np.asarray(value)
    if value.ndim == 0:
      raise ValueError(f'global_batch: {key!r} is a scalar; every entry needs a leading batch dim')
    global_size = value.shape[0] * jax.process_count()
    if global_size % data_parallel:
      raise ValueError(
        f'global_batch: {key!r} has local batch {value.shape[0]} x {jax.process_count()} '
        f'processes = {global_size}, not divisible by data*fsdp = {data_parallel}'
      )
    out[key] = jax.make_array_from_process_local_data(
      sharding, value, (global_size,) + value.shape[1:]
    )
  return out


# ---------------------------------------------------------------------------------- multi-host

_TRUE = ('1', 'true', 'yes', 'auto')


def maybe_initialize_distributed(env: Optional[Mapping[str, str]] = None) -> bool:
  """Calls `jax.distributed.initialize()` when the environment asks for it; no-op otherwise.

  Call it before anything touches a JAX backend. Environment variables:

  - `PAIRALIGN_COORDINATOR=host:port`, `PAIRALIGN_NUM_PROCESSES=N`, `PAIRALIGN_PROCESS_ID=i`
    (or JAX's own `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`):
    explicit initialization (multi-node GPU, CPU clusters, tests). With N == 1 nothing happens.
    A coordinator without N / i leaves them to JAX's cluster auto-detection.
  - `PAIRALIGN_DISTRIBUTED=1` (or `auto`): `jax.distributed.initialize()` with no arguments,
    letting JAX auto-detect the cluster (Cloud TPU VM slice, GKE, SLURM, Open MPI, K8s).
  - `TPU_WORKER_HOSTNAMES` listing more than one host (multi-worker Cloud TPU): as above.
  - `PAIRALIGN_DISTRIBUTED=0` disables all of the above.

  Returns:
    True when JAX runs distributed (initialized now or before), False otherwise.
  """
  env = os.environ if env is None else env
  if jax.distributed.is_initialized():
    _log_processes('already initialized')
    return True
  flag = env.get('PAIRALIGN_DISTRIBUTED', '').strip().lower()
  if flag in ('0', 'false', 'no'):
    return False

  coordinator = env.get('PAIRALIGN_COORDINATOR') or env.get('JAX_COORDINATOR_ADDRESS')
  num_processes = env.get('PAIRALIGN_NUM_PROCESSES') or env.get('JAX_NUM_PROCESSES')
  process_id = env.get('PAIRALIGN_PROCESS_ID') or env.get('JAX_PROCESS_ID')
  if coordinator:
    num = _env_int('PAIRALIGN_NUM_PROCESSES', num_processes)
    pid = _env_int('PAIRALIGN_PROCESS_ID', process_id)
    if num == 1:
      logging.info('distributed: one process requested; not initializing.')
      return False
    logging.info(
      'distributed: initializing with coordinator %s, %s processes, process id %s',
      coordinator,
      num,
      pid,
    )
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num, process_id=pid)
  elif flag in _TRUE or len([h for h in env.get('TPU_WORKER_HOSTNAMES', '').split(',') if h]) > 1:
    logging.info('distributed: initializing with cluster auto-detection')
    jax.distributed.initialize()
  else:
    return False
  _log_processes('initialized')
  return True


def _env_int(name: str, value: Optional[str]) -> Optional[int]:
  if value is None or value == '':
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(
      f'{name} (or its JAX_* equivalent) must be an integer, got {value!r}'
    ) from None


def _log_processes(what: str) -> None:
  logging.info(
    'distributed %s: process %d of %d, %d local / %d global devices',
    what,
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
