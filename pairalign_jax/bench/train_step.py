"""The `train_step` section: compiled train steps timed against a same-run matmul peak, with model
FLOPs from XLA cost analysis (method in the package docstring), and the levers tried on an entry.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

from absl import logging

from pairalign_jax import config_lib
from pairalign_jax.bench import common
from pairalign_jax.bench import levers as levers_lib

Timer = Callable[[], float]  # times one more train step (s)
DEFAULT_ENTRIES = ('config:0', 'config:2', 'base:0', 'base:2@8')


@dataclasses.dataclass
class StepCache:
  """What one run reuses across its train entries: the `Trainer` of each config (tiny mode's two
  labels share one, and its traced steps) and the FLOP count of each (unrolled config, stage)."""

  trainers: dict[str, Any] = dataclasses.field(default_factory=dict)
  flops: dict[Any, tuple[float, dict[str, Any]]] = dataclasses.field(default_factory=dict)


def random_views(config, seed: int = 0) -> dict[str, Any]:
  import numpy as np

  rng = np.random.default_rng(seed)
  shape = (config.batch_size, config_lib.segment_samples(config))
  return {k: (0.1 * rng.standard_normal(shape)).astype(np.float32) for k in ('view1', 'view2')}


# The lowering whose `cost_analysis` counts a step's model FLOPs: no loop whose body XLA counts
# once (the scan over layers, the `lax.map` over scoring chunks) and no recomputation that is not
# model work (remat, the chunks' `jax.checkpoint`).
FLOPS_LOWERING = {'model.scan_layers': False, 'model.remat': False, 'loss.score_chunk_rows': 0}


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
  return common.cost_flops(fn.lower(variables, cond, cache, token, prev_time).cost_analysis())


def train_step_flops(
  config, stage: int, memo: Optional[dict[Any, tuple[float, dict[str, Any]]]] = None
) -> tuple[float, dict[str, Any]]:
  """Model FLOPs of one train step: XLA cost analysis of the unrolled, un-rematerialized lowering
  (no compile) plus the teacher-decode correction in stage 2 (see the package docstring). `memo`
  (e.g. `StepCache.flops`) keeps the counts: remat / scan variants of a config share theirs."""
  memo = {} if memo is None else memo
  unrolled = common.config_overrides(config, FLOPS_LOWERING)
  key = (unrolled.to_json(), stage)
  if key not in memo:
    memo[key] = _train_step_flops(config, stage)
  flops, info = memo[key]
  return flops, dict(info)


def _train_step_flops(config, stage: int) -> tuple[float, dict[str, Any]]:
  import jax
  import jax.numpy as jnp

  from pairalign_jax import train

  c = common.config_overrides(config, FLOPS_LOWERING)
  t0 = common.now()
  trainer = train.Trainer(c)
  shape = (c.batch_size, config_lib.segment_samples(c))
  batch = {
    k: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=trainer.batch_sharding)
    for k in ('view1', 'view2')
  }
  with jax.set_mesh(trainer.mesh):
    lowered = trainer.step_fn(stage).lower(trainer.abstract_state, batch)
  flops = common.cost_flops(lowered.cost_analysis())
  info = {
    'flops_method': 'XLA Lowered.cost_analysis() of the same train step lowered with '
    + ', '.join(f'{k}={v}' for k, v in FLOPS_LOWERING.items()),
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
  info['flops_lowering_s'] = common.now() - t0
  return flops, info


def compile_step(config, stage: int, cache: StepCache):
  """The `stage` train step of `config` compiled on a fresh state and a batch of random views.
  -> (trainer, state, batch, compiled step, compile seconds). A config seen before (tiny mode's
  two labels) reuses its `Trainer` and so its traced steps."""
  import jax

  from pairalign_jax import train

  key = config.to_json()
  if key not in cache.trainers:
    cache.trainers[key] = train.Trainer(config)
  trainer = cache.trainers[key]
  state = trainer.init_state()
  batch = trainer.device_batch(random_views(config))
  t0 = common.now()
  with jax.set_mesh(trainer.mesh):
    compiled = trainer.step_fn(stage).lower(state, batch).compile()
  return trainer, state, batch, compiled, common.now() - t0


def parse_entry(spec: str) -> tuple[str, int, dict[str, Any]]:
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


def bench_train_entry(
  label: str,
  config,
  stage: int,
  peak: common.MatmulPeak,
  reps: int,
  *,
  budget_s: float,
  cache: StepCache,
  overrides: Optional[dict[str, Any]] = None,
  keep_timer: bool = False,
  interleave: Optional[Timer] = None,
) -> tuple[dict[str, Any], Optional[Timer]]:
  """Compiles and times one (config, stage) train step; see the package docstring. Timed calls
  stop once they have taken `budget_s` (at least one is made). -> (the entry, a closure timing
  one more step with `keep_timer`, else None). With `interleave` (another entry's timer), that
  step is also timed after every timed call, so the two can be compared under the same load
  (`interleaved_step_s_all`)."""
  import jax
  import numpy as np

  if overrides:
    config = common.config_overrides(config, overrides)
  trainer, state, batch, compiled, compile_s = compile_step(config, stage, cache)
  mem = compiled.memory_analysis()
  flops, flops_info = train_step_flops(config, stage, cache.flops)
  with jax.set_mesh(trainer.mesh):
    t0 = common.now()
    state, metrics = common.block(compiled(state, batch))  # first call (warm-up), not counted
    first_s = common.now() - t0
    times, peaks, other = [], [], []
    for i in range(reps):
      t0 = common.now()
      state, metrics = common.block(compiled(state, batch))
      times.append(common.now() - t0)
      peaks.append(peak.measure())
      if interleave is not None:
        other.append(interleave())
      if i + 1 < reps and sum(times) + times[-1] > budget_s:
        break
  step_s = common.median(times)
  achieved = flops / step_s
  peak_fs = common.median(peaks)
  loss = float(np.asarray(jax.device_get(metrics['loss/total'])))
  timer = None
  if keep_timer:
    holder = {'state': state}

    def timer() -> float:
      with jax.set_mesh(trainer.mesh):
        t0 = common.now()
        holder['state'], _ = common.block(compiled(holder['state'], batch))
        return common.now() - t0

  del state
  extra = {'interleaved_step_s_all': other} if other else {}
  entry = {
    **extra,
    'label': label,
    'stage': stage,
    'overrides': dict(overrides or {}),
    'config': common.config_summary(config),
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
  return entry, timer


def compiled_step_memory(label: str, config, stage: int, cache: StepCache) -> dict[str, Any]:
  """XLA `memory_analysis` of the `stage` train step of `config`, compiled and never run (so a
  step too large for this machine can still be measured). -> {'temp_bytes', 'temp_gb', ...}."""
  _, _, _, compiled, compile_s = compile_step(config, stage, cache)
  mem = compiled.memory_analysis()
  temp = int(getattr(mem, 'temp_size_in_bytes', 0) or 0) if mem is not None else 0
  return {
    'label': label,
    'stage': stage,
    'config': common.config_summary(config),
    'contrast_negatives': int(config.loss.contrast_negatives),
    'score_chunk_rows': int(config.loss.get('score_chunk_rows', 0)),
    'compile_s': compile_s,
    'temp_bytes': temp,
    'temp_gb': temp / 1e9,
    'method': 'XLA compiled.memory_analysis().temp_size_in_bytes of the jitted train step',
  }


def section_train_step(
  configs: dict[str, tuple[str, Any]],
  reps: int,
  *,
  entries: Sequence[str] = DEFAULT_ENTRIES,
  levers: Sequence[str] = (),
  memory_entry: str = '',
  budget_s: float = 60.0,
  peak_n: int = 2048,
  use_entry_batch: bool = True,
  lever_subprocess: Optional[levers_lib.LeverSubprocess] = None,
  lever_names: Optional[Sequence[str]] = None,
) -> tuple[dict[str, Any], dict[str, Timer]]:
  """The section: `entries` ('config|base:stage[@batch]', `configs` maps 'config' and 'base' to
  (label, config)) and the levers tried on each of `levers` (`lever_names`: those of
  `levers.LEVER_NAMES` to try; None = all); `memory_entry` (same form; '' =
  none) is compiled but not run, for its temporary memory (`stage2_base_temp_gb` when it is a
  base stage-2 entry); `peak_n` sizes the matmul peak, `use_entry_batch=False` ignores the
  '@batch' of the entries (tiny mode), `lever_subprocess` runs the levers that need a fresh
  process (an XLA flag). -> (the section, a timer of one more step for each 'config:...' entry,
  by entry spec: see `bench_train_entry`)."""
  peak = common.MatmulPeak(peak_n)
  peak.measure()
  cache = StepCache()
  timers: dict[str, Timer] = {}
  results = []
  for spec in entries:
    which, stage, batch = parse_entry(spec)
    label, config = configs[which]
    if not use_entry_batch:
      batch = {}
    logging.info('train_step: %s stage %d %s', label, stage, batch)
    entry, timer = bench_train_entry(
      label,
      common.config_overrides(config, batch),
      stage,
      peak,
      reps,
      budget_s=budget_s,
      cache=cache,
      keep_timer=which == 'config',
    )
    entry['entry'] = spec
    results.append(entry)
    if timer is not None:
      timers[spec] = timer
  lever_results = []
  for spec in levers:
    which, stage, batch = parse_entry(spec)
    label, config = configs[which]
    config = common.config_overrides(config, batch)
    base, base_timer = bench_train_entry(
      label, config, stage, peak, reps, budget_s=budget_s, cache=cache, keep_timer=True
    )
    base['entry'] = spec
    results.append(base)
    for name, overrides, xla_flag in levers_lib.lever_variants(config, lever_names):
      logging.info('lever %s on %s', name, spec)
      if xla_flag:
        if lever_subprocess is None:
          raise ValueError(f'lever {name} needs an XLA flag: pass lever_subprocess')
        got = lever_subprocess(spec, xla_flag, reps)
        got['xla_flag'] = xla_flag
      else:
        got, _ = bench_train_entry(
          label,
          config,
          stage,
          peak,
          reps,
          budget_s=budget_s,
          cache=cache,
          overrides=overrides,
          interleave=base_timer,
        )
        got['xla_flag'] = ''
      lever_results.append(levers_lib.compare_to_baseline(got, base, name, spec))
  out = {
    'device': common.device_info(),
    'peak_method': f'float32 jnp.matmul {peak.n}x{peak.n} @ {peak.n}x{peak.n}, '
    'median of 3 calls, measured after every timed step',
    'peak_flops_per_s_median': common.median(peak.samples),
    'entries': results,
  }
  if lever_results:
    out['levers'] = lever_results
  if memory_entry:
    which, stage, batch = parse_entry(memory_entry)
    label, config = configs[which]
    if not use_entry_batch:
      batch = {}
    logging.info('train_step: memory of %s stage %d %s (compiled, not run)', label, stage, batch)
    memory = compiled_step_memory(label, common.config_overrides(config, batch), stage, cache)
    memory['entry'] = memory_entry
    out['memory'] = memory
    if which == 'base' and stage == 2:
      out['stage2_base_temp_gb'] = memory['temp_gb']
  base_entries = [e for e in results if e['entry'].startswith('base:')]
  if base_entries:
    worst = max(base_entries, key=lambda e: e['stage'])
    out['train_flops_ratio'] = worst['train_flops_ratio']
    out['train_flops_ratio_entry'] = worst['entry']
  return out, timers
