"""Speed benchmark: train step, decoding, input pipeline and retrieval (README "Performance").

    python -m pairalign_jax.bench [--config=configs/demo.py] [--out=bench.json] [--tiny]

Writes one JSON file and prints a table. Every speed figure that has a goal is a *ratio of two
timings taken in the same run*, interleaved where possible, because the machines this runs on are
shared and noisy (absolute seconds are reported too, for reference). Sections, each with its
`device` (CPU model or GPU name, core count, jax version):

* `train_step`: the compiled train step of `--config` (label from the file name, e.g. 'demo') and
  of `--base_config` ('default', the base model) at stage 0 and stage 2 (`--train_entries`; the
  base config's stage 2 runs at batch 8, 'base:2@8': at its batch 32 the step needs 16 GB of
  temporary buffers).
  Model FLOPs per step come from XLA `cost_analysis()` of an *unrolled* lowering of the same step
  (`model.scan_layers=False`, `model.remat=False`: `cost_analysis` counts a scan body once, and
  remat recomputation is not model work); in stage 2 the teacher's greedy decode is a
  `lax.scan` over `max_len` steps, whose body is counted once, so `(max_len - 1)` times the cost of
  one decoder step is added. The step time is the median of `reps` calls; after each call a large
  float32 `jnp.matmul` is timed (median of 3 calls), and `train_flops_ratio` = (FLOPs / median
  step time) / (matmul FLOPs / median matmul time). `--levers=base:2@8` also times variants of an
  entry (remat off, unrolled layers, batch size x2 / x1/2) with the entry as configured timed
  after every variant step (`flops_rate_vs_baseline_interleaved`: same load), and oneDNN dot
  fusion via XLA_FLAGS in a subprocess (compared through each process's matmul peak).
* `decode`: greedy decoding of 64 rows at L = 128 (the `--config` model with `max_len` = 128, random
  initialization) with the KV cache (`decode.greedy_decode`) vs re-scoring the prefix every step
  (`decode.greedy_decode_recompute`): `decode_cache_speedup`. Then `Tokenizer.tokenize` end to end
  (log-mel, encoder, cached greedy decode, host post-processing) on 64 three-second waveforms with
  the `--config` model as configured: `tokenize_realtime_factor` = seconds of audio per second of
  wall time. A randomly initialized model never emits EOS, so every row decodes `max_len` tokens:
  the worst case (the decode loop always runs `max_len` steps; only host work depends on length).
* `input`: examples/s of the two-view Grain pipeline (`data.pipeline.make_train_dataset`, all
  augmentations on, `align_views_in_stage0=False`) on the synthetic source and on a folder of FLAC
  files written to a temp dir, with `worker_count` 0 and 2 (steady state: the batches the
  prefetch buffers can hold are skipped); `input_headroom` = pipeline ex/s (best worker count,
  synthetic source) / train ex/s of the `--config` step at its fastest stage (the one the
  pipeline must keep up with), that step re-timed before and after the pipeline runs.
* `search`: 1 000 queries against an archive of 10 000 random token strings: the project's
  `evaluation.retrieval.evaluate_retrieval` vs one direct `rapidfuzz.process.cdist` call:
  `search_ratio` = direct time / project time.

`--tiny` shrinks every size (a few seconds of compute; for tests/bench_test.py, which checks the
schema, not the speeds). `--sections=...` runs a subset; with `--update` the sections run replace
those in an existing `--out` file (a lever run adds its levers beside the entries). Compiled
programs go to JAX's persistent compilation cache in `--compile_cache` (default
~/.cache/pairalign_jax/bench_xla_cache; '' = off): compile times are reported but are in no ratio.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from pairalign_jax import config_lib

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:  # configs/*.py import `configs.default`
  sys.path.insert(0, _ROOT)

SCHEMA_VERSION = 1
SECTIONS = ('train_step', 'decode', 'input', 'search')
GOALS = {  # name: (goal, which way)
  'train_flops_ratio': (0.5, '>='),
  'decode_cache_speedup': (5.0, '>='),
  'tokenize_realtime_factor': (500.0, '>='),
  'tokenize_realtime_factor_trained': (1000.0, '>='),
  'input_headroom': (2.0, '>='),
  'search_ratio': (0.9, '>='),
}
ONEDNN_FLAG = '--xla_cpu_experimental_onednn_fusion_type=dot'
DEFAULT_COMPILE_CACHE = os.path.join(
  os.path.expanduser('~'), '.cache', 'pairalign_jax', 'bench_xla_cache'
)

FLAGS = flags.FLAGS


def _define_flags():
  """Defined only when run as a program (importing the module defines no absl flags)."""
  config_flags.DEFINE_config_file(
    'config',
    os.path.join(_ROOT, 'configs', 'demo.py'),
    'Config of the benchmarked model (train step, decode, tokenizer, input pipeline).',
    lock_config=False,
  )
  config_flags.DEFINE_config_file(
    'base_config',
    os.path.join(_ROOT, 'configs', 'default.py'),
    'The base-size config (train-step entries labelled by its file name).',
    lock_config=False,
  )
  flags.DEFINE_string('out', 'bench.json', 'Where to write the JSON results.')
  flags.DEFINE_bool(
    'tiny',
    False,
    'Tiny sizes everywhere (seconds; for the schema test). The '
    'base entries then use the tiny --config too.',
  )
  flags.DEFINE_list('sections', list(SECTIONS), f'Sections to run, of {SECTIONS}.')
  flags.DEFINE_list(
    'train_entries',
    ['config:0', 'config:2', 'base:0', 'base:2@8'],
    "Train-step entries 'config|base:stage[@batch]'. The base config's stage 2 runs at "
    'batch 8 by default: at its own batch 32 the step needs 16 GB of temporary '
    'buffers (XLA memory_analysis), more than a small shared machine has.',
  )
  flags.DEFINE_list('levers', [], "Train-step entries ('base:0', ...) on which to try the levers.")
  flags.DEFINE_integer('reps', 0, 'Timed repetitions per measurement (0 = the section default).')
  flags.DEFINE_float(
    'budget_s',
    60.0,
    'Stop repeating a timing once its calls have taken this long '
    '(at least one timed call is always made).',
  )
  flags.DEFINE_string(
    'compile_cache', DEFAULT_COMPILE_CACHE, "JAX persistent compilation cache directory ('' = off)."
  )
  flags.DEFINE_bool('update', False, 'Merge the sections run into an existing --out file.')
  flags.DEFINE_string(
    'checkpoint',
    '',
    'A trained run (workdir or step folder): the decode section then also times '
    '`Tokenizer.tokenize` on 64 x 3 s of its validation split (tokenize_realtime_factor_trained) '
    'and the early-exit decode against the full-length one.',
  )


# ============================================================================ small helpers
def _median(xs):
  return float(statistics.median(xs))


def _now() -> float:
  return time.perf_counter()


def _block(x):
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
    'dtype': str(m.dtype),
    'segment_seconds': float(config.audio.segment_seconds),
  }


def _cost_flops(cost) -> float:
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
    _block(self.fn(self.a, self.b))
    self.samples: list[float] = []

  @property
  def flops(self) -> float:
    return 2.0 * self.n**3

  def measure(self, calls: int = 3) -> float:
    """FLOP/s of the median of `calls` timed calls (also appended to `samples`)."""
    ts = []
    for _ in range(calls):
      t = _now()
      _block(self.fn(self.a, self.b))
      ts.append(_now() - t)
    value = self.flops / _median(ts)
    self.samples.append(value)
    return value


def _random_views(config, seed: int = 0) -> dict[str, Any]:
  import numpy as np

  rng = np.random.default_rng(seed)
  shape = (config.batch_size, config_lib.segment_samples(config))
  return {k: (0.1 * rng.standard_normal(shape)).astype(np.float32) for k in ('view1', 'view2')}


# ============================================================================ train step
def decode_step_flops(config, batch: int) -> float:
  """XLA FLOPs of one cached decoder step (`PairAlign.decode_step`) at `batch` rows."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from pairalign_jax import models
  from pairalign_jax import train

  model = train.make_model(config)
  variables = jax.eval_shape(
    lambda r: nn.meta.unbox(train.init_variables(model, config, r)), jax.random.PRNGKey(0)
  )
  frames = config_lib.mel_frames_per_segment(config) // config.model.subsample
  h = jax.ShapeDtypeStruct((batch, frames, config.model.d_model), model.cfg.activation_dtype)
  cond = jax.eval_shape(
    lambda v, x: model.apply(v, x, method=models.PairAlign.condition), variables, h
  )
  cache = jax.eval_shape(lambda: models.init_cache(model.cfg, batch, config.model.max_len))
  token = jax.ShapeDtypeStruct((batch,), jnp.int32)
  prev_time = jax.ShapeDtypeStruct((batch,), jnp.float32)
  fn = jax.jit(
    lambda v, c, k, t, pt: model.apply(v, c, k, t, 1, pt, method=models.PairAlign.decode_step)
  )
  return _cost_flops(fn.lower(variables, cond, cache, token, prev_time).cost_analysis())


_FLOPS_MEMO: dict[Any, tuple[float, dict[str, Any]]] = {}


def train_step_flops(config, stage: int) -> tuple[float, dict[str, Any]]:
  """Model FLOPs of one train step: XLA cost analysis of the unrolled, un-rematerialized lowering
  (no compile) plus the teacher-decode correction in stage 2 (see the module docstring)."""
  unrolled = config_overrides(config, {'model.scan_layers': False, 'model.remat': False})
  key = (unrolled.to_json(), stage)  # remat / scan variants share the count
  if key not in _FLOPS_MEMO:
    _FLOPS_MEMO[key] = _train_step_flops(config, stage)
  flops, info = _FLOPS_MEMO[key]
  return flops, dict(info)


def _train_step_flops(config, stage: int) -> tuple[float, dict[str, Any]]:
  import jax
  import jax.numpy as jnp

  from pairalign_jax import train

  c = config_overrides(config, {'model.scan_layers': False, 'model.remat': False})
  t0 = _now()
  trainer = train.Trainer(c)
  shape = (c.batch_size, config_lib.segment_samples(c))
  batch = {
    k: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=trainer.batch_sharding)
    for k in ('view1', 'view2')
  }
  with jax.set_mesh(trainer.mesh):
    lowered = trainer.step_fn(stage).lower(trainer.abstract_state, batch)
  flops = _cost_flops(lowered.cost_analysis())
  info = {
    'flops_method': 'XLA Lowered.cost_analysis() of the same train step lowered with '
    'model.scan_layers=False, model.remat=False',
    'flops_unrolled_lowering': flops,
  }
  if stage == 2:
    step = decode_step_flops(c, 2 * c.batch_size)
    extra = (c.model.max_len - 1) * step
    flops += extra
    info['flops_method'] += (
      f'; plus (max_len - 1) = {c.model.max_len - 1} x one teacher decode '
      'step (the decode lax.scan body is counted once)'
    )
    info['flops_decode_correction'] = extra
  info['flops_lowering_s'] = _now() - t0
  return flops, info


def _parse_entry(spec: str) -> tuple[str, int, dict[str, Any]]:
  """'base:2@8' -> ('base', 2, {'batch_size': 8}); 'config:0' -> ('config', 0, {})."""
  which, _, rest = spec.partition(':')
  stage, _, batch = rest.partition('@')
  if (
    which not in ('config', 'base')
    or stage not in ('0', '1', '2')
    or (batch and not batch.isdigit())
  ):
    raise ValueError(f"train entry must be 'config|base:0|1|2[@batch]', got {spec!r}")
  return which, int(stage), ({'batch_size': int(batch)} if batch else {})


TRAIN_TIMERS: dict[str, Callable[[], float]] = {}  # entry spec -> time one more step (s)
_TRAINERS: dict[str, Any] = {}


def bench_train_entry(
  label: str,
  config,
  stage: int,
  peak: MatmulPeak,
  reps: int,
  overrides: Optional[dict[str, Any]] = None,
  keep_timer: str = '',
  interleave: Optional[Callable[[], float]] = None,
) -> dict[str, Any]:
  """Compiles and times one (config, stage) train step; see the module docstring. With
  `keep_timer`, a closure timing one more step is kept in TRAIN_TIMERS[keep_timer]. With
  `interleave` (another entry's timer), that step is also timed after every timed call, so the
  two can be compared under the same load (`interleaved_step_s_all`)."""
  import jax
  import numpy as np

  from pairalign_jax import train

  if overrides:
    config = config_overrides(config, overrides)
  key = config.to_json()
  if key not in _TRAINERS:  # the same config (tiny mode's two labels) reuses its traced steps
    _TRAINERS[key] = train.Trainer(config)
  trainer = _TRAINERS[key]
  state = trainer.init_state()
  batch = trainer.device_batch(_random_views(config))
  t0 = _now()
  with jax.set_mesh(trainer.mesh):
    compiled = trainer.step_fn(stage).lower(state, batch).compile()
  compile_s = _now() - t0
  mem = compiled.memory_analysis()
  flops, flops_info = train_step_flops(config, stage)
  with jax.set_mesh(trainer.mesh):
    t0 = _now()
    state, metrics = _block(compiled(state, batch))  # first call (warm-up), not counted
    first_s = _now() - t0
    times, peaks, other = [], [], []
    for i in range(reps):
      t0 = _now()
      state, metrics = _block(compiled(state, batch))
      times.append(_now() - t0)
      peaks.append(peak.measure())
      if interleave is not None:
        other.append(interleave())
      if i + 1 < reps and sum(times) + times[-1] > FLAGS.budget_s:
        break
  step_s = _median(times)
  achieved = flops / step_s
  peak_fs = _median(peaks)
  loss = float(np.asarray(jax.device_get(metrics['loss/total'])))
  if keep_timer:
    holder = {'state': state}

    def timer() -> float:
      with jax.set_mesh(trainer.mesh):
        t0 = _now()
        holder['state'], _ = _block(compiled(holder['state'], batch))
        return _now() - t0

    timer.entry = keep_timer  # type: ignore[attr-defined]
    TRAIN_TIMERS[keep_timer] = timer
  del state
  extra = {'interleaved_step_s_all': other} if other else {}
  return {
    **extra,
    'label': label,
    'stage': stage,
    'overrides': dict(overrides or {}),
    'config': config_summary(config),
    'compile_s': compile_s,
    'first_call_s': first_s,
    'step_s': step_s,
    'step_s_all': times,
    'examples_per_s': config.batch_size / step_s,
    'flops_per_step': flops,
    **flops_info,
    'achieved_flops_per_s': achieved,
    'peak_flops_per_s': peak_fs,
    'peak_flops_per_s_all': peaks,
    'train_flops_ratio': achieved / peak_fs,
    'temp_bytes': int(getattr(mem, 'temp_size_in_bytes', 0) or 0) if mem is not None else 0,
    'loss_finite': bool(math.isfinite(loss)),
  }


def run_lever_subprocess(spec: str, xla_flag: str, reps: int) -> dict[str, Any]:
  """Runs one train entry in a fresh process with `xla_flag` added to XLA_FLAGS."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' ' + xla_flag).strip()
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, 'lever.json')
    cmd = [
      sys.executable,
      '-m',
      'pairalign_jax.bench',
      '--sections=train_step',
      f'--train_entries={spec}',
      f'--out={out}',
      f'--reps={reps}',
      f'--budget_s={FLAGS.budget_s}',
      f'--config={FLAGS["config"].config_filename}',
      f'--base_config={FLAGS["base_config"].config_filename}',
    ]
    if FLAGS.tiny:
      cmd.append('--tiny')
    if FLAGS.compile_cache:
      cmd.append(f'--compile_cache={FLAGS.compile_cache}')
    proc = subprocess.run(cmd, env=env, cwd=_ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
      raise RuntimeError(f'lever subprocess failed ({proc.returncode}): {proc.stderr[-2000:]}')
    with open(out, encoding='utf-8') as f:
      return json.load(f)['train_step']['entries'][0]


def lever_variants(config) -> list[tuple[str, dict[str, Any], str]]:
  """(name, config overrides, extra XLA flag) of the cheap levers."""
  b = int(config.batch_size)
  return [
    (
      'remat_off' if config.model.remat else 'remat_on',
      {'model.remat': not config.model.remat},
      '',
    ),
    ('unrolled_layers_no_remat', {'model.scan_layers': False, 'model.remat': False}, ''),
    ('batch_x2', {'batch_size': 2 * b}, ''),
    ('batch_half', {'batch_size': max(2, b // 2)}, ''),
    ('onednn_dot_fusion', {}, ONEDNN_FLAG),
  ]


def section_train_step(configs: dict[str, Any], reps: int) -> dict[str, Any]:
  peak = MatmulPeak(256 if FLAGS.tiny else 2048)
  peak.measure()
  entries = []
  for spec in FLAGS.train_entries:
    which, stage, batch = _parse_entry(spec)
    label, config = configs[which]
    if FLAGS.tiny:
      batch = {}  # the tiny batch everywhere
    logging.info('train_step: %s stage %d %s', label, stage, batch)
    keep = spec if which == 'config' else ''
    entries.append(
      bench_train_entry(label, config_overrides(config, batch), stage, peak, reps, keep_timer=keep)
    )
    entries[-1]['entry'] = spec
  levers = []
  for spec in FLAGS.levers:
    which, stage, batch = _parse_entry(spec)
    label, config = configs[which]
    config = config_overrides(config, batch)
    timer_key = f'lever-baseline:{spec}'
    base = bench_train_entry(label, config, stage, peak, reps, keep_timer=timer_key)
    base['entry'] = spec
    entries.append(base)
    for name, overrides, xla_flag in lever_variants(config):
      logging.info('lever %s on %s', name, spec)
      if xla_flag:
        got = run_lever_subprocess(spec, xla_flag, reps)
        got['xla_flag'] = xla_flag
      else:
        got = bench_train_entry(
          label, config, stage, peak, reps, overrides, interleave=TRAIN_TIMERS[timer_key]
        )
        got['xla_flag'] = ''
      got.update(
        {
          'lever': name,
          'entry': spec,
          'baseline_step_s': base['step_s'],
          'baseline_train_flops_ratio': base['train_flops_ratio'],
          # Both normalized by their own interleaved matmul peaks:
          'ratio_vs_baseline': got['train_flops_ratio'] / base['train_flops_ratio'],
          'examples_per_s_vs_baseline': (got['examples_per_s'] / got['peak_flops_per_s'])
          / (base['examples_per_s'] / base['peak_flops_per_s']),
        }
      )
      if got.get('interleaved_step_s_all'):
        # The baseline step timed right after each lever step (same load): the most direct ratio.
        base_s = _median(got['interleaved_step_s_all'])
        got['flops_rate_vs_baseline_interleaved'] = (got['flops_per_step'] / got['step_s']) / (
          base['flops_per_step'] / base_s
        )
        got['examples_per_s_vs_baseline_interleaved'] = (got['examples_per_s']) / (
          base['config']['batch_size'] / base_s
        )
      levers.append(got)
    TRAIN_TIMERS.pop(timer_key, None)
  out = {
    'device': device_info(),
    'peak_method': f'float32 jnp.matmul {peak.n}x{peak.n} @ {peak.n}x{peak.n}, '
    'median of 3 calls, measured after every timed step',
    'peak_flops_per_s_median': _median(peak.samples),
    'entries': entries,
  }
  if levers:
    out['levers'] = levers
  base_entries = [e for e in entries if e['entry'].startswith('base:')]
  if base_entries:
    worst = max(base_entries, key=lambda e: e['stage'])
    out['train_flops_ratio'] = worst['train_flops_ratio']
    out['train_flops_ratio_entry'] = worst['entry']
  return out


# ============================================================================ decode
def _random_variables(config, seed: int = 0):
  import flax.linen as nn
  import jax

  from pairalign_jax import train

  model = train.make_model(config)
  variables = jax.jit(lambda r: nn.meta.unbox(train.init_variables(model, config, r)))(
    jax.random.PRNGKey(seed)
  )
  return model, variables


def section_decode(config, reps: int) -> dict[str, Any]:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from pairalign_jax import decode
  from pairalign_jax import tokenizer as tokenizer_lib

  batch = 4 if FLAGS.tiny else 64
  length = 6 if FLAGS.tiny else 128
  dcfg = config_overrides(config, {'model.max_len': length})
  model, variables = _random_variables(dcfg)
  frames = config_lib.mel_frames_per_segment(dcfg) // dcfg.model.subsample
  h = jax.random.normal(jax.random.PRNGKey(1), (batch, frames, dcfg.model.d_model), jnp.float32)

  fns = {
    'cache': jax.jit(lambda v, x: decode.greedy_decode(model, v, x, max_len=length).tokens),
    'recompute': jax.jit(
      lambda v, x: decode.greedy_decode_recompute(model, v, x, max_len=length).tokens
    ),
  }
  compiled, compile_s = {}, {}
  for name, fn in fns.items():
    t0 = _now()
    compiled[name] = fn.lower(variables, h).compile()
    compile_s[name] = _now() - t0
  _block(compiled['cache'](variables, h))  # warm-up
  # The recompute baseline is O(L^2) and slow: its first call is the timed one (its one-time costs
  # are small next to its length), repeated only while within --budget_s; cache calls bracket it.
  times = {'cache': [], 'recompute': []}
  tokens = {}

  def timed(name):
    t0 = _now()
    tokens[name] = np.asarray(_block(compiled[name](variables, h)))
    times[name].append(_now() - t0)

  timed('cache')
  for _ in range(max(1, reps // 2)):
    timed('recompute')
    timed('cache')
    if sum(times['recompute']) + times['recompute'][-1] > FLAGS.budget_s:
      break
  while len(times['cache']) < reps:
    timed('cache')
  speedup = _median(times['recompute']) / _median(times['cache'])
  equal = float(np.mean(tokens['cache'] == tokens['recompute']))

  # Tokenizer end to end: the --config model as configured, batch 64 of 3 s waveforms.
  tok_batch = 4 if FLAGS.tiny else 64
  _, tvars = _random_variables(config, seed=2)
  tok = tokenizer_lib.Tokenizer(config, tvars, batch_size=tok_batch)
  rng = np.random.default_rng(3)
  n = config_lib.segment_samples(config)
  t_axis = np.arange(n) / config.audio.sample_rate
  waves = [
    (
      0.3 * np.sin(2 * np.pi * (150 + 20 * i) * t_axis) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t_axis))
      + 0.03 * rng.standard_normal(n)
    ).astype(np.float32)
    for i in range(tok_batch)
  ]
  t0 = _now()
  out = tok.tokenize(waves, config.audio.sample_rate)  # compile + first call
  tok_first = _now() - t0
  tok_times, enc_dec_times, enc_times, peaks = [], [], [], []
  prepared = jnp.asarray(tok.prepare(waves, config.audio.sample_rate))
  bias = jnp.float32(0.0)
  encode = jax.jit(tok._encode)
  _block(encode(tok.variables, prepared))
  peak = MatmulPeak(256 if FLAGS.tiny else 2048)
  for _ in range(reps):
    t0 = _now()
    out = tok.tokenize(waves, config.audio.sample_rate)
    tok_times.append(_now() - t0)
    t0 = _now()
    _block(tok._encode_decode(tok.variables, prepared, bias))
    enc_dec_times.append(_now() - t0)
    t0 = _now()
    _block(encode(tok.variables, prepared))
    enc_times.append(_now() - t0)
    peaks.append(peak.measure())
  audio_s = tok_batch * n / config.audio.sample_rate
  tok_s = _median(tok_times)
  lengths = [len(t) for t in out.tokens]
  return {
    'device': device_info(),
    'greedy': {
      'model': config_summary(dcfg),
      'batch': batch,
      'max_len': length,
      'params': 'random initialization (no EOS: every row decodes max_len tokens)',
      'cache_s': _median(times['cache']),
      'cache_s_all': times['cache'],
      'recompute_s': _median(times['recompute']),
      'recompute_s_all': times['recompute'],
      'compile_s': compile_s,
      'tokens_equal_fraction': equal,
    },
    'decode_cache_speedup': speedup,
    'tokenize': {
      'model': config_summary(config),
      'batch': tok_batch,
      'audio_seconds': audio_s,
      'params': 'random initialization (no EOS: every row decodes max_len tokens, the worst case)',
      'terminated_fraction': float(np.mean(out.terminated)),
      'mean_tokens': float(np.mean(lengths)),
      'first_call_s': tok_first,
      'tokenize_s': tok_s,
      'tokenize_s_all': tok_times,
      'encode_decode_jit_s': _median(enc_dec_times),
      'encode_jit_s': _median(enc_times),
      'decode_fraction': max(0.0, 1.0 - _median(enc_times) / _median(enc_dec_times)),
      'host_overhead_fraction': max(0.0, 1.0 - _median(enc_dec_times) / tok_s),
      'peak_flops_per_s': _median(peaks),
      'peak_method': f'float32 jnp.matmul {peak.n}^3, median of 3 calls after each tokenize call '
      '(how much of the machine this run had)',
    },
    'tokenize_realtime_factor': audio_s / tok_s,
  }


IDLE_PEAK_FLOPS = 450e9  # float32 2048^3 matmul on 2 idle cores of this machine kind


def section_trained_tokenizer(path: str, reps: int) -> dict[str, Any]:
  """`Tokenizer.tokenize` of a trained checkpoint on 64 x 3 s of its validation split, and its
  greedy decode with the early exit against the full-length scan (same H, interleaved calls).
  Absolute rates also come normalized to an idle machine: x IDLE_PEAK / this run's matmul peak."""
  import jax
  import numpy as np

  from pairalign_jax import checkpointing
  from pairalign_jax import decode
  from pairalign_jax import tokenizer as tokenizer_lib
  from pairalign_jax.data import pipeline

  batch = 4 if FLAGS.tiny else 64
  tok = tokenizer_lib.Tokenizer.from_checkpoint(path, batch_size=batch)
  config = checkpointing.read_config(path)
  source = pipeline.make_source(config, 'validation')
  waves = np.stack(
    [pipeline.load_segment(source[i], config, crop='start') for i in range(min(batch, len(source)))]
  )
  sr = config.audio.sample_rate
  out = tok.tokenize(waves, sr)  # compile + first call
  h = jax.jit(tok._encode)(tok.variables, tok.prepare(waves, sr))
  bias = tok.default_eos_bias
  decodes = {
    early: jax.jit(
      lambda v, x, e=early: (
        decode.greedy_decode(
          tok.model, v, x, max_len=tok.max_len, eos_bias=bias, early_exit=e
        ).tokens
      )
    )
    for early in (True, False)
  }
  tokens = {e: np.asarray(_block(fn(tok.variables, h))) for e, fn in decodes.items()}
  times = {'tokenize': [], True: [], False: []}
  peak = MatmulPeak(256 if FLAGS.tiny else 2048)
  peaks = []
  for _ in range(reps):
    t0 = _now()
    out = tok.tokenize(waves, sr)
    times['tokenize'].append(_now() - t0)
    for e, fn in decodes.items():
      t0 = _now()
      _block(fn(tok.variables, h))
      times[e].append(_now() - t0)
    peaks.append(peak.measure())
  audio_s = waves.shape[0] * waves.shape[1] / sr
  rtf = audio_s / _median(times['tokenize'])
  return {
    'checkpoint': os.path.abspath(path),
    'segments': int(waves.shape[0]),
    'audio_seconds': audio_s,
    'mean_tokens': float(np.mean([len(t) for t in out.tokens])),
    'max_len': tok.max_len,
    'terminated_fraction': float(np.mean(out.terminated)),
    'tokenize_s_all': times['tokenize'],
    'decode_early_exit_s': _median(times[True]),
    'decode_full_scan_s': _median(times[False]),
    'early_exit_speedup': _median(times[False]) / _median(times[True]),
    'early_exit_tokens_equal': bool(np.array_equal(tokens[True], tokens[False])),
    'peak_flops_per_s': _median(peaks),
    'tokenize_realtime_factor_trained': rtf,
    'tokenize_realtime_factor_trained_normalized': rtf * IDLE_PEAK_FLOPS / _median(peaks),
  }


# ============================================================================ input pipeline
def _write_flac_folder(config, root: str, num_files: int, seconds: float) -> None:
  import numpy as np
  import soundfile as sf

  sr = int(config.audio.sample_rate)
  rng = np.random.default_rng(7)
  n = int(seconds * sr)
  t = np.arange(n) / sr
  for i in range(num_files):
    spk = os.path.join(root, f'spk{i % 4}')
    os.makedirs(spk, exist_ok=True)
    f0 = 100 + 10 * (i % 8)
    wave = (
      0.2 * np.sign(np.sin(2 * np.pi * f0 * t)) * (0.6 + 0.4 * np.sin(2 * np.pi * 2.5 * t))
      + 0.02 * rng.standard_normal(n)
    ).astype(np.float32)
    sf.write(os.path.join(spk, f'utt{i:03d}.flac'), wave, sr, subtype='PCM_16')


def _pipeline_rate(config, source, workers: int, measure: int) -> dict[str, Any]:
  """Steady-state examples/s of the training iterator: batches are taken as fast as possible and
  the rate is read over the last `measure` of them, after skipping as many batches as the
  prefetch buffers can hold (they fill during start-up and would inflate the rate)."""
  from pairalign_jax.data import pipeline

  c = config_overrides(config, {'data.worker_count': workers})
  buffered = (int(c.data.prefetch_buffer_size) + 2) * max(1, workers)
  t0 = _now()
  it = iter(pipeline.make_train_dataset(c, source=source))
  next(it)  # start-up (workers, first batch)
  startup = _now() - t0
  stamps = [_now()]
  for _ in range(buffered + measure):
    next(it)
    stamps.append(_now())
  elapsed = stamps[-1] - stamps[-1 - measure]
  with contextlib.suppress(Exception):
    it.close()  # type: ignore[attr-defined]
  del it
  return {
    'worker_count': workers,
    'skipped_batches': buffered,
    'measured_batches': measure,
    'batch_size': int(c.batch_size),
    'startup_s': startup,
    'seconds': elapsed,
    'examples_per_s': measure * c.batch_size / elapsed,
    'examples_per_s_including_buffered': (buffered + measure)
    * c.batch_size
    / (stamps[-1] - stamps[0]),
  }


def section_input(config, train_timer: Optional[Callable[[], float]]) -> dict[str, Any]:
  """See the module docstring. `train_timer()` times one train step of the `--config` model at
  its fastest stage (compiled in the train_step section); it is timed before and after the
  pipeline measurements so that both sides of `input_headroom` see the same load."""
  from pairalign_jax.data import folder
  from pairalign_jax.data import pipeline

  c = config_overrides(config, {'data.align_views_in_stage0': False})
  measure = 2 if FLAGS.tiny else 8
  train_times = [train_timer() for _ in range(2)] if train_timer else []
  results = {}
  syn = pipeline.make_source(c, 'train')
  results['synthetic'] = [_pipeline_rate(c, syn, w, measure) for w in (0, 2)]
  seconds = 2.0 if FLAGS.tiny else 10.0
  with tempfile.TemporaryDirectory(prefix='pairalign_bench_flac_') as tmp:
    num_files = 8 if FLAGS.tiny else 64
    _write_flac_folder(c, tmp, num_files, seconds)
    src = folder.FolderSource(tmp, 'all', cache_dir=tmp)
    cf = config_overrides(c, {'data.cross_speaker_views': 0.0})  # a folder has no parallel readings
    results['flac_folder'] = [_pipeline_rate(cf, src, w, measure) for w in (0, 2)]
  if train_timer:
    train_times += [train_timer() for _ in range(2)]
  out = {
    'device': device_info(),
    'setup': 'make_train_dataset: every augmentation on (align_views_in_stage0=False), '
    f'read_threads={c.data.read_threads}, prefetch_buffer_size={c.data.prefetch_buffer_size}, '
    f'batch {c.batch_size} of two {c.audio.segment_seconds:g} s views; flac_folder: '
    f'{num_files} files of {seconds:g} s, 16-bit FLAC at {c.audio.sample_rate} Hz '
    f'(random 3 s crops); cross_speaker_views={c.data.get("cross_speaker_views", 0.0)} '
    'for the synthetic source, 0 for the folder',
    'sources': results,
  }
  if train_times:
    train_eps = c.batch_size / _median(train_times)
    best = max(r['examples_per_s'] for r in results['synthetic'])
    out.update(
      {
        'train_step_s_all': train_times,
        'train_examples_per_s': train_eps,
        'train_entry': getattr(train_timer, 'entry', ''),
        'input_headroom': best / train_eps,
        'input_headroom_by_source': {
          name: {str(r['worker_count']): r['examples_per_s'] / train_eps for r in rs}
          for name, rs in results.items()
        },
      }
    )
  return out


# ============================================================================ search
def _random_strings(rng, n: int, vocab: int, lo: int, hi: int) -> list[list[int]]:
  lengths = rng.integers(lo, hi + 1, size=n)
  return [rng.integers(0, vocab, size=int(k)).tolist() for k in lengths]


def _perturb(rng, seq: list[int], vocab: int, p: float) -> list[int]:
  out = []
  for tok in seq:
    r = rng.random()
    if r < p / 3:
      continue  # delete
    if r < 2 * p / 3:
      out.append(int(rng.integers(vocab)))  # substitute
      continue
    out.append(tok)
    if r < p:
      out.append(int(rng.integers(vocab)))  # insert
  return out or seq[:1]


def section_search(reps: int) -> dict[str, Any]:
  import numpy as np
  import rapidfuzz
  from rapidfuzz import process
  from rapidfuzz.distance import Levenshtein

  from pairalign_jax.archive import speed
  from pairalign_jax.evaluation import retrieval

  n_archive, n_queries = (300, 30) if FLAGS.tiny else (10_000, 1_000)
  vocab, lo, hi = 512, 20, 60  # about 38 tokens per 3 s segment at 12.7 tokens/s
  rng = np.random.default_rng(11)
  archive = _random_strings(rng, n_archive, vocab, lo, hi)
  targets = rng.integers(0, n_archive, size=n_queries)
  queries = [_perturb(rng, archive[t], vocab, 0.3) for t in targets]

  def project():
    return retrieval.evaluate_retrieval(queries, archive, targets)

  def direct():
    return process.cdist(queries, archive, scorer=Levenshtein.normalized_distance, workers=-1)

  result = project()
  d = direct()
  same = bool(np.allclose(retrieval.distance_matrix(queries, archive), d))
  times = {'project': [], 'direct': []}
  for i in range(reps):
    order = (
      (('project', project), ('direct', direct))
      if i % 2 == 0
      else (('direct', direct), ('project', project))
    )
    for name, fn in order:
      t0 = _now()
      fn()
      times[name].append(_now() - t0)
  proj, dire = _median(times['project']), _median(times['direct'])
  return {
    'device': device_info(),
    'rapidfuzz_version': rapidfuzz.__version__,
    'archive_size': n_archive,
    'num_queries': n_queries,
    'strings': f'random token lists, lengths {lo}-{hi}, vocabulary {vocab}; queries are archive '
    'strings with 30% random edits',
    'direct_call': 'rapidfuzz.process.cdist(queries, archive, '
    'scorer=Levenshtein.normalized_distance, workers=-1)',
    'project_call': 'evaluation.retrieval.evaluate_retrieval(queries, archive, targets)',
    'project_s': proj,
    'project_s_all': times['project'],
    'direct_s': dire,
    'direct_s_all': times['direct'],
    'pairs_per_s_direct': n_archive * n_queries / dire,
    'distances_identical': same,
    'recall_at_1': result.recall_at_1,
    'search_ratio': dire / proj,
    # Archive search (query by example): subsequence matching over a synthetic archive at
    # PairAlign's length (about 31 tokens per 3 s window, 5-token queries); archive/speed.py.
    'archive': speed.measure_search_speed(
      31.0, 5, hours=0.05 if FLAGS.tiny else 10.0, reps=reps, partial_ratio=not FLAGS.tiny
    ),
  }


# ============================================================================ report
def merge_train_step(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
  """`--update` of the train_step section. A run with levers (e.g. `--train_entries= --levers=...`)
  adds its levers, their baseline entries and its device/peak beside the old entries; otherwise
  the new entries replace the old ones with the same spec."""
  merged = dict(old)
  if new.get('levers'):
    merged['levers'] = new['levers']
    merged['levers_baseline'] = new['entries']
    merged['levers_device'] = new['device']
    merged['levers_peak_flops_per_s_median'] = new['peak_flops_per_s_median']
    return merged
  specs = {e['entry'] for e in new['entries']}
  merged['entries'] = [e for e in old['entries'] if e['entry'] not in specs] + new['entries']
  for key in (
    'device',
    'peak_method',
    'peak_flops_per_s_median',
    'train_flops_ratio',
    'train_flops_ratio_entry',
  ):
    if key in new:
      merged[key] = new[key]
  return merged


def goals_table(results: dict[str, Any]) -> dict[str, Any]:
  """{goal name: {'value', 'goal', 'met'}} for the figures present in `results`."""
  where = {
    'train_flops_ratio': 'train_step',
    'decode_cache_speedup': 'decode',
    'tokenize_realtime_factor': 'decode',
    'input_headroom': 'input',
    'search_ratio': 'search',
  }
  out = {}
  for name, (goal, _) in GOALS.items():
    if name == 'tokenize_realtime_factor_trained':
      trained = results.get('decode', {}).get('trained', {})
      value = trained.get(name)
      if value is not None:  # judged on the idle-normalized figure (the raw one moves with load)
        normalized = trained[name + '_normalized']
        out[name] = {
          'value': float(value),
          'normalized': float(normalized),
          'goal': goal,
          'met': bool(normalized >= goal),
        }
      continue
    value = results.get(where[name], {}).get(name)
    if value is not None:
      out[name] = {'value': float(value), 'goal': goal, 'met': bool(value >= goal)}
  return out


def format_table(results: dict[str, Any]) -> str:
  lines = [f'{"figure":<46} {"value":>12} {"goal":>8}  met']
  for name, g in results.get('goals', {}).items():
    lines.append(f'{name:<46} {g["value"]:>12.3f} {g["goal"]:>8.2f}  {"yes" if g["met"] else "NO"}')
  ts = results.get('train_step')
  if ts:
    lines.append('')
    lines.append(
      f'{"train step":<40} {"stage":>5} {"step s":>9} {"ex/s":>8} {"GFLOP":>9} '
      f'{"GFLOP/s":>9} {"peak":>8} {"ratio":>6} {"vs base":>7}'
    )
    rows = ts['entries'] + [
      dict(e, lever='(lever baseline)') for e in ts.get('levers_baseline', [])
    ]
    for e in rows + ts.get('levers', []):
      name = (
        e['label']
        + (f'@{e["config"]["batch_size"]}' if e['stage'] else '')
        + (f' {e["lever"]}' if e.get('lever') else '')
      )
      vs = e.get('flops_rate_vs_baseline_interleaved', e.get('ratio_vs_baseline'))
      lines.append(
        f'{name:<40} {e["stage"]:>5} {e["step_s"]:>9.3f} {e["examples_per_s"]:>8.2f} '
        f'{e["flops_per_step"] / 1e9:>9.1f} {e["achieved_flops_per_s"] / 1e9:>9.1f} '
        f'{e["peak_flops_per_s"] / 1e9:>8.1f} {e["train_flops_ratio"]:>6.3f}'
        + (f' {vs:>7.2f}' if vs is not None else '')
      )
  dec = results.get('decode')
  if dec:
    g, t = dec['greedy'], dec['tokenize']
    lines.append('')
    lines.append(
      f'greedy decode B={g["batch"]} L={g["max_len"]}: cache {g["cache_s"]:.3f} s, '
      f'recompute {g["recompute_s"]:.3f} s'
    )
    lines.append(
      f'tokenize {t["batch"]} x {config_seconds(t)} s: {t["tokenize_s"]:.3f} s '
      f'(jitted encode+decode {t["encode_decode_jit_s"]:.3f} s)'
    )
    tr = dec.get('trained')
    if tr:
      lines.append(
        f'trained tokenizer: {tr["tokenize_realtime_factor_trained"]:.0f}x real time '
        f'({tr["tokenize_realtime_factor_trained_normalized"]:.0f}x on an idle machine), '
        f'{tr["mean_tokens"]:.1f} tokens of {tr["max_len"]}; early exit '
        f'{tr["early_exit_speedup"]:.2f}x the full-length decode (same tokens: '
        f'{tr["early_exit_tokens_equal"]})'
      )
  inp = results.get('input')
  if inp:
    lines.append('')
    for name, rs in inp['sources'].items():
      for r in rs:
        lines.append(
          f'input {name:<12} workers={r["worker_count"]}: {r["examples_per_s"]:8.1f} ex/s'
        )
    if 'train_examples_per_s' in inp:
      lines.append(f'train step (fastest stage): {inp["train_examples_per_s"]:8.1f} ex/s')
  se = results.get('search')
  if se:
    lines.append('')
    lines.append(
      f'search {se["num_queries"]} x {se["archive_size"]}: project {se["project_s"]:.3f} s, '
      f'direct cdist {se["direct_s"]:.3f} s'
    )
  return '\n'.join(lines)


def config_seconds(tok: dict[str, Any]) -> str:
  return f'{tok["model"]["segment_seconds"]:g}'


def run(argv) -> dict[str, Any]:
  del argv
  import jax

  if FLAGS.compile_cache:
    jax.config.update('jax_compilation_cache_dir', FLAGS.compile_cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  unknown = set(FLAGS.sections) - set(SECTIONS)
  if unknown:
    raise app.UsageError(f'unknown sections {sorted(unknown)}; choose from {SECTIONS}')
  config, base = FLAGS.config, FLAGS.base_config
  if FLAGS.tiny:  # one tiny model for both labels (one compile per stage with the cache)
    config = tiny_config(config)
    base = config
  label = os.path.splitext(os.path.basename(FLAGS['config'].config_filename))[0]
  base_label = os.path.splitext(os.path.basename(FLAGS['base_config'].config_filename))[0]
  if base_label == label:
    base_label += '(base)'
  configs = {'config': (label, config), 'base': (base_label, base)}

  t_start = _now()
  results: dict[str, Any] = {
    'schema_version': SCHEMA_VERSION,
    'tiny': bool(FLAGS.tiny),
    'command': ' '.join(
      [os.path.basename(sys.executable), '-m', 'pairalign_jax.bench'] + sys.argv[1:]
    ),
    'started': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
    'configs': {'config': label, 'base': base_label},
    'host': device_info(),
    'python_version': platform.python_version(),
  }
  reps = FLAGS.reps
  if 'train_step' in FLAGS.sections:
    results['train_step'] = section_train_step(configs, reps or (2 if FLAGS.tiny else 3))
  if 'decode' in FLAGS.sections:
    results['decode'] = section_decode(config, reps or (2 if FLAGS.tiny else 3))
    if FLAGS.checkpoint:
      results['decode']['trained'] = section_trained_tokenizer(
        FLAGS.checkpoint, reps or (2 if FLAGS.tiny else 3)
      )
  if 'input' in FLAGS.sections:
    timer = None
    ts = results.get('train_step')
    if ts:  # the --config step at its fastest stage is the one the pipeline must keep up with
      mine = [e for e in ts['entries'] if e['entry'] in TRAIN_TIMERS]
      if mine:
        timer = TRAIN_TIMERS[max(mine, key=lambda e: e['examples_per_s'])['entry']]
    results['input'] = section_input(config, timer)
  if 'search' in FLAGS.sections:
    results['search'] = section_search(reps or (2 if FLAGS.tiny else 3))
  results['wall_s'] = wall = _now() - t_start

  if FLAGS.update and os.path.exists(FLAGS.out):
    with open(FLAGS.out, encoding='utf-8') as f:
      old = json.load(f)
    for name in SECTIONS:
      if name not in results:
        continue
      if name == 'train_step' and 'train_step' in old:
        results[name] = merge_train_step(old['train_step'], results[name])
      old[name] = results[name]
    old.setdefault('updates', []).append({k: results[k] for k in ('command', 'started', 'wall_s')})
    results = old
  results['goals'] = goals_table(results)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  with open(FLAGS.out, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=1, sort_keys=False)
    f.write('\n')
  print(format_table(results))
  print(f'\nwrote {FLAGS.out} ({wall:.0f} s)')
  return results


def main(argv):
  run(argv)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
