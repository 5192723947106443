"""Helpers shared by the bench sections: timing, the device record, config overrides, the tiny
config and the matmul FLOP/s reference. jax is imported inside the functions that need it (the
CLI sets the compilation cache before jax does any work; importing the package loads no jax)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULE = 'pairalign_jax.bench'  # `python -m MODULE` runs the bench (also the lever subprocess)
SECTIONS = ('train_step', 'decode', 'input', 'search')


def median(xs) -> float:
  return float(statistics.median(xs))


def now() -> float:
  return time.perf_counter()


def block(x):
  import jax

  return jax.block_until_ready(x)


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def device_info() -> dict[str, Any]:
  """The device the section ran on: CPU model (and usable cores) or the accelerator's name."""
  import jax
  import jaxlib

  dev = jax.devices()[0]
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:
    cores = os.cpu_count() or 0
  info = {
    'platform': dev.platform,
    'name': cpu_model() if dev.platform == 'cpu' else str(dev.device_kind),
    'device_count': jax.device_count(),
    'cpu_model': cpu_model(),
    'cpu_cores': int(cores),
    'jax_version': jax.__version__,
    'jaxlib_version': getattr(jaxlib, '__version__', ''),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'load_average': [round(x, 2) for x in os.getloadavg()],
  }
  return info


def use_compile_cache(directory: str) -> None:
  """JAX's persistent compilation cache in `directory` ('' = leave it off)."""
  if not directory:
    return
  import jax

  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def config_overrides(config, overrides: dict[str, Any]):
  """A copy of `config` with dotted-key overrides applied."""
  c = config.copy_and_resolve_references()
  c.unlock()
  for key, value in overrides.items():
    node = c
    parts = key.split('.')
    for p in parts[:-1]:
      node = node[p]
    node[parts[-1]] = value
  return c


def tiny_config(config):
  """Every size small (the model, the batch, 1 s segments): compiles and runs in seconds."""
  return config_overrides(
    config,
    {
      'batch_size': 2,
      'audio.segment_seconds': 1.0,
      'frontend.n_mels': 20,
      'frontend.specaugment.freq_width': 4,
      'model.d_model': 16,
      'model.num_heads': 2,
      'model.mlp_dim': 32,
      'model.enc_layers': 1,
      'model.dec_layers': 1,
      'model.codebook_size': 8,
      'model.code_dim': 8,
      'model.max_len': 6,
      'targets.code_groups': 4,
      'model.recon_channels': 8,
      'data.synthetic.num_train_speakers': 2,
      'data.synthetic.num_heldout_speakers': 1,
      'data.synthetic.num_train_sentences': 4,
      'data.synthetic.num_heldout_sentences': 2,
      'data.synthetic.train_size': 64,
      'data.read_threads': 1,
      'loss.contrast_negatives': 0,
    },
  )


def config_summary(config) -> dict[str, Any]:
  m = config.model
  return {
    'batch_size': int(config.batch_size),
    'd_model': int(m.d_model),
    'num_heads': int(m.num_heads),
    'mlp_dim': int(m.mlp_dim),
    'enc_layers': int(m.enc_layers),
    'dec_layers': int(m.dec_layers),
    'codebook_size': int(m.codebook_size),
    'max_len': int(m.max_len),
    'scan_layers': bool(m.scan_layers),
    'remat': bool(m.remat),
    'remat_policy': str(m.remat_policy),
    'dtype': str(m.dtype),
    'segment_seconds': float(config.audio.segment_seconds),
  }


def cost_flops(cost) -> float:
  """The FLOP count of an XLA `cost_analysis()` result (a dict, or a list of one)."""
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or 'flops' not in cost:
    raise RuntimeError('XLA cost analysis gave no FLOP count on this backend')
  return float(cost['flops'])


class MatmulPeak:
  """A large float32 `jnp.matmul` (n x n @ n x n, 2 n^3 FLOPs): the run's reference FLOP/s."""

  def __init__(self, n: int):
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    self.n = n
    self.a = jnp.asarray(rng.standard_normal((n, n)), jnp.float32)
    self.b = jnp.asarray(rng.standard_normal((n, n)), jnp.float32)
    self.fn = jax.jit(jnp.matmul)
    block(self.fn(self.a, self.b))
    self.samples: list[float] = []

  @property
  def flops(self) -> float:
    return 2.0 * self.n**3

  def measure(self, calls: int = 3) -> float:
    """FLOP/s of the median of `calls` timed calls (also appended to `samples`)."""
    ts = []
    for _ in range(calls):
      t = now()
      block(self.fn(self.a, self.b))
      ts.append(now() - t)
    value = self.flops / median(ts)
    self.samples.append(value)
    return value


def random_variables(config, seed: int = 0):
  """(model, randomly initialized variables) of `config`'s PairAlign model."""
  import flax.linen as nn
  import jax

  from pairalign_jax import train

  model = train.make_model(config)
  variables = jax.jit(lambda r: nn.meta.unbox(train.init_variables(model, config, r)))(
    jax.random.PRNGKey(seed)
  )
  return model, variables
