"""Training loop: staged schedule, compiled sharded steps, EMA teacher, checkpoints, logging.

`train_and_evaluate(config, workdir)` is the whole job: validate the config, build the mesh,
initialize (or restore) the state and the data iterator, run stages 0/1/2 with one compiled step
per stage, checkpoint (and on SIGTERM / preemption), and finish with the evaluation report.
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Any, Optional

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from pairalign_jax import checkpointing
from pairalign_jax import config_validation
from pairalign_jax import decode
from pairalign_jax import frontend
from pairalign_jax import losses
from pairalign_jax import metric_writer
from pairalign_jax import models
from pairalign_jax import objective
from pairalign_jax import sequences
from pairalign_jax import sharding
from pairalign_jax import train_state as train_state_lib
from pairalign_jax.data import pipeline

TrainState = train_state_lib.TrainState

# Incremented each time a train step is traced (tests check there is one compile per stage).
TRACE_COUNT = {0: 0, 1: 0, 2: 0}


class NonFiniteError(RuntimeError):
  """Too many consecutive non-finite updates."""


def stage_at(step: int, config: ml_collections.ConfigDict) -> int:
  if step >= config.schedule.stage2_start:
    return 2
  if step >= config.schedule.stage1_start:
    return 1
  return 0


def teacher_alpha(step, config: ml_collections.ConfigDict):
  """alpha(step): share of teacher targets, 0 at stage-2 start rising linearly to
  `schedule.max_alpha` over `ramp_steps` (the rest stay VQ-derived sequences)."""
  s = config.schedule
  step = jnp.asarray(step, jnp.float32)
  max_alpha = float(s.max_alpha)
  if s.ramp_steps <= 0:
    return jnp.where(step >= s.stage2_start, max_alpha, 0.0)
  return max_alpha * jnp.clip((step - s.stage2_start) / s.ramp_steps, 0.0, 1.0)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  o = config.optim
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=o.learning_rate, warmup_steps=max(1, o.warmup_steps),
      decay_steps=max(o.warmup_steps + 1, config.num_train_steps),
      end_value=o.learning_rate * o.end_learning_rate_factor)
  chain = []
  if o.grad_clip > 0:
    chain.append(optax.clip_by_global_norm(o.grad_clip))
  chain.append(optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay))
  return optax.chain(*chain)


def make_model(config: ml_collections.ConfigDict) -> models.PairAlign:
  return models.PairAlign(models.ModelConfig.from_config(config))


def segment_samples(config) -> int:
  return int(round(config.audio.sample_rate * config.audio.segment_seconds))


def init_variables(model: models.PairAlign, config, rng):
  """Boxed (logically partitioned) variables of the model: {'params', 'vq_stats'}."""
  fcfg = frontend.FrontendConfig.from_config(config)
  n_frames = segment_samples(config) // config.frontend.hop_length
  mel = jnp.zeros((1, n_frames, fcfg.n_mels), jnp.float32)
  tokens = jnp.zeros((1, config.model.max_len), jnp.int32)
  p_rng, d_rng, v_rng = jax.random.split(rng, 3)
  return model.init({'params': p_rng, 'dropout': d_rng, 'vq': v_rng}, mel, tokens, train=False)


def create_train_state(model, optimizer, config, rng) -> TrainState:
  """A fresh state (params still boxed with logical axis names when called under eval_shape)."""
  init_rng, state_rng = jax.random.split(rng)
  variables = init_variables(model, config, init_rng)
  params = variables['params']
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      teacher_params=jax.tree.map(lambda x: x, params),
      opt_state=optimizer.init(params),
      vq_stats=variables['vq_stats'],
      eos_bias=jnp.zeros((), jnp.float32),
      rng=state_rng,
      nonfinite_steps=jnp.zeros((), jnp.int32),
  )


def train_step(state: TrainState, batch: dict[str, jax.Array], *, model: models.PairAlign,
               optimizer: optax.GradientTransformation, config: ml_collections.ConfigDict,
               settings: objective.ObjectiveSettings, stage: int):
  """One optimizer step of `stage` on a batch {'view1', 'view2': [B, S]}. Returns (state, metrics)."""
  TRACE_COUNT[stage] += 1
  fcfg = frontend.FrontendConfig.from_config(config)
  rng, step_rng = jax.random.split(state.rng)
  keys = dict(zip(('spec', 'dropout', 'vq', 'corrupt', 'negatives', 'mix', 'jitter', 'own_times'),
                  jax.random.split(step_rng, 8)))

  waves = jnp.concatenate([batch['view1'], batch['view2']], axis=0)                 # [2B, S]
  mel_in, mel_clean, energy = objective.view_features(
      waves, fcfg, keys['spec'], train=True, specaugment=settings.specaugment)
  mels = {'mel_in': mel_in, 'mel_clean': mel_clean, 'energy': energy}
  metrics = {}

  targets = None
  new_eos_bias = state.eos_bias
  if stage >= 1:
    # Targets come from the EMA teacher (stop-gradient), never from the student's own codes: the
    # student's encoder moves every step and its codes with it, and a decoder chasing its own
    # moving codes does not learn (measured: cross_tf stayed at chance even on one fixed batch).
    teacher_vars = {'params': state.teacher_params, 'vq_stats': state.vq_stats}
    h_t = model.apply(teacher_vars, mel_clean, train=False, method=models.PairAlign.encode)   # [2B, T, d]
    vq_t = model.apply(teacher_vars, h_t, train=False, method=models.PairAlign.quantize)
    vq_targets = objective.vq_targets(vq_t.codes, settings, state.vq_stats)
    targets = objective.Targets(tokens=jax.lax.stop_gradient(vq_targets.tokens), lengths=vq_targets.lengths,
                                times=jax.lax.stop_gradient(vq_targets.times))
  if stage == 2:
    dec = decode.greedy_decode(model, teacher_vars, h_t, max_len=settings.max_len, eos_bias=state.eos_bias)
    alpha = teacher_alpha(state.step, config)
    tokens, lengths, times = sequences.mix_targets(
        keys['mix'], vq_targets.tokens, vq_targets.lengths, vq_targets.times,
        dec.tokens, dec.lengths, dec.times, alpha)
    targets = objective.Targets(tokens=jax.lax.stop_gradient(tokens), lengths=lengths,
                                times=jax.lax.stop_gradient(times))
    mean_len = jnp.mean(dec.lengths.astype(jnp.float32))
    terminated = dec.terminated.astype(jnp.float32)
    termination_rate = jnp.mean(terminated)
    # Length of the decodes that ended with EOS (all of them if none did: the rate floor acts then).
    mean_terminated_len = jnp.where(
        termination_rate > 0,
        jnp.sum(dec.lengths * terminated) / jnp.maximum(jnp.sum(terminated), 1.0), mean_len)
    target_len = config.length.target_rate * config.audio.segment_seconds
    new_eos_bias = losses.eos_bias_update(state.eos_bias, mean_terminated_len, target_len,
                                          config.length.controller_gain, config.length.bias_limit,
                                          termination_rate, config.length.min_termination)
    metrics.update({
        'teacher/tokens_per_second': mean_len / config.audio.segment_seconds,
        'teacher/termination_rate': termination_rate,
        'teacher/alpha': alpha,
    })

  weights = settings.stage_weights(stage)

  def loss_fn(params):
    terms, aux = objective.compute_terms(model, params, state.vq_stats, mels, targets, keys,
                                         stage=stage, settings=settings, train=True)
    total, logged = losses.total_from_terms(terms, weights)
    return total, (logged, aux)

  (loss, (logged, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state, finite = train_state_lib.apply_update_if_finite(
      state, grads, loss, optimizer, new_vq_stats=aux['vq_stats'], new_rng=rng)

  decay = train_state_lib.ema_decay_at(new_state.step, start=config.schedule.stage2_start,
                                       decay=config.schedule.ema_decay,
                                       warmup_steps=config.schedule.ema_warmup_steps,
                                       frozen_from=config.schedule.stage1_start)
  new_state = new_state.replace(
      teacher_params=train_state_lib.ema_update(new_state.teacher_params, new_state.params, decay),
      eos_bias=jnp.where(finite, new_eos_bias, state.eos_bias))

  cluster_size = _cluster_size(aux['vq_stats'])
  metrics.update({f'loss/{name}': value for name, value in logged.items()})
  metrics.update({
      'loss/total': loss,
      'grad_norm': optax.global_norm(grads),
      'finite': finite.astype(jnp.float32),
      'vq/perplexity': aux['perplexity'],
      'vq/reseeded_codes': aux['reseeded'],   # dead codes (EMA count below the threshold) re-seeded
      'vq/codes_in_use': (jnp.sum(cluster_size > 2.0 * config.vq.dead_code_threshold)
                          if cluster_size is not None else jnp.zeros(())),
      'eos_bias': new_state.eos_bias,
      'ema_decay': decay,
      'stage': jnp.asarray(stage, jnp.float32),
  })
  if 'targets' in aux:
    metrics['targets/tokens_per_second'] = aux['mean_target_length'] / config.audio.segment_seconds
  return new_state, metrics


def _cluster_size(vq_stats) -> Optional[jax.Array]:
  found = [v for path, v in jax.tree_util.tree_flatten_with_path(vq_stats)[0]
           if 'cluster_size' in jax.tree_util.keystr(path)]
  return found[0] if found else None


class Trainer:
  """Holds the compiled steps and everything the loop needs (also used by tests and the bench)."""

  def __init__(self, config: ml_collections.ConfigDict, mesh=None):
    self.config = config
    self.mesh = mesh if mesh is not None else sharding.make_mesh(config)
    self.rules = sharding.logical_rules(config)
    self.model = make_model(config)
    self.optimizer = make_optimizer(config)
    self.settings = objective.ObjectiveSettings.from_config(config)
    rng = jax.random.PRNGKey(config.seed)
    init_fn = functools.partial(create_train_state, self.model, self.optimizer, config)
    boxed = jax.eval_shape(init_fn, rng)
    self.abstract_state, self.state_sharding = sharding.abstract_state_and_shardings(boxed, self.mesh, self.rules)
    self.batch_sharding = sharding.batch_sharding(self.mesh)
    self._init = jax.jit(lambda r: nn.meta.unbox(init_fn(r)), out_shardings=self.state_sharding)
    self._rng = rng
    self._steps = {}

  def init_state(self) -> TrainState:
    # No logical-rules context here: the out_shardings place the parameters, and flax's
    # DenseGeneral would otherwise constrain its flat init kernel with the 3-D names.
    with jax.set_mesh(self.mesh):
      return self._init(self._rng)

  def step_fn(self, stage: int):
    if stage not in self._steps:
      fn = functools.partial(train_step, model=self.model, optimizer=self.optimizer, config=self.config,
                             settings=self.settings, stage=stage)
      self._steps[stage] = jax.jit(fn, in_shardings=(self.state_sharding, self.batch_sharding),
                                   out_shardings=(self.state_sharding, None), donate_argnums=(0,))
    return self._steps[stage]

  def run_step(self, state: TrainState, batch: dict[str, jax.Array], stage: int):
    # Parameters and batches are placed by the in/out shardings (from the logical names);
    # activation layouts follow by propagation. (A logical-rules context here would make flax
    # re-check DenseGeneral's flat init kernels against their 3-D names inside nn.scan.)
    with jax.set_mesh(self.mesh):
      return self.step_fn(stage)(state, batch)

  def device_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    views = {k: local_batch[k] for k in ('view1', 'view2')}
    return sharding.global_batch(views, self.mesh)


def _format_eta(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  seconds = int(seconds)
  return f'{seconds // 3600:d}h{(seconds % 3600) // 60:02d}m{seconds % 60:02d}s'


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       run_evaluation: bool = True) -> TrainState:
  """Trains (resuming from the newest checkpoint in `workdir`) and writes the evaluation report."""
  sharding.maybe_initialize_distributed()
  config_validation.validate_config(config, device_count=jax.device_count())
  os.makedirs(workdir, exist_ok=True)
  logging.info('devices: %d (%s), processes: %d', jax.device_count(), jax.devices()[0].platform,
               jax.process_count())

  trainer = Trainer(config)
  data_iter = pipeline.make_train_iterator(config, process_index=jax.process_index(),
                                           process_count=jax.process_count())
  writer = metric_writer.MetricWriter(workdir)
  ckpt = checkpointing.Checkpointer.from_config(os.path.join(workdir, 'checkpoints'), config)
  ckpt.install_preemption_handler()

  data_stats = pipeline.make_bad_input_stats(config)   # counted from the batches (any worker count)

  restored = ckpt.restore_latest(trainer.abstract_state, data_iter, state_sharding=trainer.state_sharding)
  if restored is not None:
    state, start_step = restored
    logging.info('Resumed from step %d.', start_step)
  else:
    state = trainer.init_state()
    start_step = 0
    logging.info('Starting from scratch.')
  start_step = int(jax.device_get(state.step))
  n_params = models.count_params(state.params)
  logging.info('model parameters: %.2fM', n_params / 1e6)

  stop_early = False
  last_log_time, last_log_step = time.time(), start_step
  train_start = time.time()
  step = start_step
  try:
    while step < config.num_train_steps:
      stage = stage_at(step, config)
      local_batch = next(data_iter)
      data_stats.update_from_batch(local_batch)
      state, metrics = trainer.run_step(state, trainer.device_batch(local_batch), stage)
      step += 1

      if step % config.log_every_steps == 0 or step == config.num_train_steps:
        metrics = jax.device_get(metrics)
        now = time.time()
        steps_per_sec = (step - last_log_step) / max(now - last_log_time, 1e-9)
        last_log_time, last_log_step = now, step
        metrics['steps_per_second'] = steps_per_sec
        metrics['examples_per_second'] = steps_per_sec * config.batch_size
        metrics.update({f'data/{k}': v for k, v in data_stats.as_dict().items()})
        writer.write_scalars(step, metrics)
        eta = (config.num_train_steps - step) / max(steps_per_sec, 1e-9)
        logging.info('step %d/%d stage %d | loss %.4f | %s | %.2f steps/s, %.1f ex/s, ETA %s',
                     step, config.num_train_steps, stage, metrics['loss/total'],
                     ' '.join(f'{k.split("/")[-1]}={float(v):.3f}' for k, v in sorted(metrics.items())
                              if k.startswith('loss/') and k != 'loss/total' and float(v) != 0.0),
                     steps_per_sec, steps_per_sec * config.batch_size, _format_eta(eta))
        nonfinite = int(metrics.get('nonfinite_steps', jax.device_get(state.nonfinite_steps)))
        if nonfinite >= config.max_nonfinite_steps:
          raise NonFiniteError(
              f'{nonfinite} consecutive non-finite updates at step {step} (config.max_nonfinite_steps='
              f'{config.max_nonfinite_steps}); lower config.optim.learning_rate or check the data.')
      elif int(jax.device_get(state.nonfinite_steps)) >= config.max_nonfinite_steps:
        raise NonFiniteError(
            f'{int(jax.device_get(state.nonfinite_steps))} consecutive non-finite updates at step {step} '
            f'(config.max_nonfinite_steps={config.max_nonfinite_steps}).')

      if step % config.checkpoint_every_steps == 0 or step == config.num_train_steps:
        ckpt.save(step, state, data_iter, meta=_checkpoint_meta(data_stats))
      if ckpt.should_stop(step):
        logging.warning('Preemption requested: saving step %d and exiting.', step)
        ckpt.save(step, state, data_iter, force=True, meta=_checkpoint_meta(data_stats))
        stop_early = True
        break
      if (config.eval_every_steps and step % config.eval_every_steps == 0
          and step < config.num_train_steps and run_evaluation):
        ckpt.wait_until_finished()
        _evaluate(config, workdir, step)
  finally:
    ckpt.wait_until_finished()
    writer.flush()

  logging.info('Training finished at step %d in %.1f s.', step, time.time() - train_start)
  if not stop_early and run_evaluation:
    _evaluate(config, workdir, step)
  writer.close()
  ckpt.close()
  return state


def _checkpoint_meta(data_stats) -> dict[str, Any]:
  return {'data_stats': {k: float(v) for k, v in data_stats.as_dict().items()}}


def _evaluate(config, workdir, step):
  from pairalign_jax import evaluate  # pylint: disable=import-outside-toplevel
  report = evaluate.evaluate_workdir(workdir, config=config)
  logging.info('Evaluation at step %d written to %s', step, os.path.join(workdir, 'report.md'))
  return report
