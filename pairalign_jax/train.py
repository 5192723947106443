r"""Training loop: staged schedule, compiled sharded steps, EMA teacher, checkpoints, logging.

`train_and_evaluate(config, workdir)` is the whole job: validate the config, build the mesh,
initialize (or restore) the state and the data iterator, run stages 0/1/2 with one compiled step
per stage, checkpoint (and on SIGTERM / preemption), and finish with the evaluation report.

Fine-tuning: `--config.init_from=PATH` (a workdir: its newest committed checkpoint; or one step
folder `<workdir>/checkpoints/<step>`) starts a new run from that run's parameters, with a fresh
optimizer state and data iterator and the step counter at 0 (the schedule, learning-rate warmup
included, runs from its start). `config.init_from_vq_stats` also takes the VQ codebook state
('vq_stats'), `config.init_from_teacher` the EMA teacher (and the EOS bias of its decodes,
when this run's length controller is on: with `length.controller_gain = 0` nothing would move
it from the source's value, so it starts at 0);
without it the teacher starts as a copy of the loaded student, as in a fresh run. At start-up,
every config key that changes the parameter shapes (`INIT_FROM_MATCH_KEYS`) is compared with the
source's saved config, and one ConfigError names those that differ; the one difference allowed
is a module this run adds (`model.decoder_reads_codes` on, the source without it: the code
embedding starts from its fresh init). A workdir that already has a
checkpoint of its own resumes from it and ignores `init_from` (logged), so a preempted fine-tuning
run continues where it stopped. To fine-tune a stage-2 model on a small corpus (with the base
run's config file, so that the model keys match)::

  python -m pairalign_jax.main --config=configs/librispeech.py --workdir=runs/libri_ft \
    --config.init_from=runs/libri --config.data.source=folder --config.data.path=/data/small \
    --config.schedule.stage1_start=0 --config.schedule.stage2_start=0 \
    --config.schedule.ema_warmup_steps=0 --config.num_train_steps=2000 \
    --config.optim.learning_rate=1e-4

(stage 2 from step 0; with `ema_warmup_steps=0` the loaded teacher goes on as a slow EMA. In stage
0 the teacher copies the student, so a loaded teacher only lasts from stage 1 on; a schedule that
replaces it is logged as a warning. A run without a stage 0, `runs_stage0`, keeps the source's
acoustic units, refitted VQ and chosen code grouping: nothing is fitted, refitted or chosen.)
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any, Optional

from absl import logging
from etils import epath
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from pairalign_jax import checkpointing
from pairalign_jax import code_group_choice
from pairalign_jax import code_groups as code_groups_lib
from pairalign_jax import config_lib
from pairalign_jax import config_validation
from pairalign_jax import frontend
from pairalign_jax import losses
from pairalign_jax import metric_writer
from pairalign_jax import models
from pairalign_jax import objective
from pairalign_jax import sharding
from pairalign_jax import train_state as train_state_lib
from pairalign_jax import units as units_lib
from pairalign_jax import vq_refit as vq_refit_lib
from pairalign_jax.data import pipeline

TrainState = train_state_lib.TrainState
# What the code-group choice measured (Trainer.choose_code_groups), next to the checkpoints.
CODE_GROUPS_FILE = 'code_groups.json'
# What the VQ refit measured (Trainer.refit_vq).
VQ_REFIT_FILE = 'vq_refit.json'

# The modules that only the stage-0 terms train; `schedule.freeze_encoder` keeps them.
STAGE0_MODULES = ('encoder', 'vq', 'mel_decoder', 'code_head')
# Incremented each time a train step is traced (tests check there is one compile per stage).


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


def clip_stage0_modules_apart(max_norm: float) -> optax.GradientTransformation:
  """`optax.clip_by_global_norm` with two norms: the gradients of the stage-0 modules
  (`STAGE0_MODULES`, the top-level parameter collections) are scaled by their own global norm and
  the rest (the decoder, the length head) by theirs, each down to at most `max_norm`. Stateless,
  like the one-norm clip, so checkpoints' optimizer states have the same structure either way.

  With `loss.sequence_losses_train_encoder = False` the encoder's gradient then depends on the
  stage-0 terms alone, so runs that differ only in the decoder train the same encoder (with one
  norm, the decoder's gradient sets the scale of every encoder update whenever it clips).
  """

  def is_stage0(path) -> bool:
    return getattr(path[0], 'key', None) in STAGE0_MODULES

  def update_fn(updates, state, params=None):
    del params
    leaves = jax.tree_util.tree_flatten_with_path(updates)[0]
    scales = []
    for group in (True, False):
      norm = optax.tree.norm([g for p, g in leaves if is_stage0(p) == group])
      scales.append(jnp.where(norm > max_norm, max_norm / jnp.maximum(norm, 1e-30), 1.0))
    stage0_scale, rest_scale = scales
    clipped = jax.tree_util.tree_map_with_path(
      lambda p, g: (g * (stage0_scale if is_stage0(p) else rest_scale)).astype(g.dtype), updates
    )
    return clipped, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  o = config.optim
  schedule = optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=o.learning_rate,
    warmup_steps=max(1, o.warmup_steps),
    decay_steps=max(o.warmup_steps + 1, config.num_train_steps),
    end_value=o.learning_rate * o.end_learning_rate_factor,
  )
  chain = []
  if o.grad_clip > 0 and o.clip_stage0_apart:
    chain.append(clip_stage0_modules_apart(o.grad_clip))
  elif o.grad_clip > 0:
    chain.append(optax.clip_by_global_norm(o.grad_clip))
  chain.append(optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay))
  return optax.chain(*chain)


def make_model(config: ml_collections.ConfigDict) -> models.PairAlign:
  return models.PairAlign(models.ModelConfig.from_config(config))


def init_variables(model: models.PairAlign, config, rng):
  """Boxed (logically partitioned) variables of the model: {'params', 'vq_stats'}."""
  fcfg = frontend.FrontendConfig.from_config(config)
  n_frames = config_lib.mel_frames_per_segment(config)
  mel = jnp.zeros((1, n_frames, fcfg.n_mels), jnp.float32)
  tokens = jnp.zeros((1, config.model.max_len), jnp.int32)
  p_rng, d_rng, v_rng = jax.random.split(rng, 3)
  return model.init({'params': p_rng, 'dropout': d_rng, 'vq': v_rng}, mel, tokens, train=False)


def create_train_state(model, optimizer, config, rng) -> TrainState:
  """A fresh state (params still boxed with logical axis names when called under eval_shape)."""
  init_rng, state_rng = jax.random.split(rng)
  variables = init_variables(model, config, init_rng)
  return train_state_lib.new_train_state(
    variables['params'], variables['vq_stats'], optimizer, state_rng
  )


# ---------------------------------------------------------------------- fine-tuning (init_from)

# `ModelConfig` fields that change the parameter shapes or the parameter tree, with the config key
# each comes from: a fine-tuning source (config.init_from) must have the same values. (Checked with
# jax.eval_shape of the init: dropout rates, remat and model.dtype change no parameter.)
INIT_FROM_MATCH_KEYS = {
  'd_model': 'config.model.d_model',
  'num_heads': 'config.model.num_heads',
  'mlp_dim': 'config.model.mlp_dim',
  'enc_layers': 'config.model.enc_layers',
  'dec_layers': 'config.model.dec_layers',
  'subsample': 'config.model.subsample',
  'codebook_size': 'config.model.codebook_size',
  'code_dim': 'config.model.code_dim',
  'max_len': 'config.model.max_len',
  'recon_channels': 'config.model.recon_channels',
  'time_bias_frames': 'config.model.time_bias_frames',
  'scan_layers': 'config.model.scan_layers',
  'enc_positions': 'config.model.enc_positions',
  'adapter_layers': 'config.model.adapter_layers',
  'decoder_reads_codes': 'config.model.decoder_reads_codes',
  'time_head': 'config.model.time_head',
  'n_mels': 'config.frontend.n_mels',
}

# Top-level parameter modules that a model adds to its source's by one `INIT_FROM_MATCH_KEYS`
# option turned on: {field: module}. Fine-tuning with the option on from a source without it
# starts that module from its fresh init (logged) and loads everything else.
INIT_FROM_ADDED_MODULES = {'decoder_reads_codes': 'code_embed'}


def check_init_from_config(
  config: ml_collections.ConfigDict, source_config: ml_collections.ConfigDict, source: str
) -> None:
  """Raises ConfigError naming every `INIT_FROM_MATCH_KEYS` key whose value differs between this
  run (`config`) and the fine-tuning source (`source_config`, the config saved with `source`)."""
  ours = models.ModelConfig.from_config(config)
  theirs = models.ModelConfig.from_config(
    source_config
  )  # same defaults for keys an old config lacks
  diffs = [
    f'{key}={getattr(ours, field)!r} (source: {getattr(theirs, field)!r})'
    for field, key in INIT_FROM_MATCH_KEYS.items()
    if getattr(ours, field) != getattr(theirs, field)
    and not (
      field in INIT_FROM_ADDED_MODULES and getattr(ours, field) and not getattr(theirs, field)
    )
  ]
  if (
    ours.enc_positions == theirs.enc_positions == 'learned'
    and ours.enc_max_frames != theirs.enc_max_frames
  ):
    diffs.append(
      f'config.audio.segment_seconds={config.audio.segment_seconds!r} (source: '
      f'{source_config.audio.segment_seconds!r}; learned encoder positions: {ours.enc_max_frames} '
      f'frames, source {theirs.enc_max_frames})'
    )
  if diffs:
    raise config_validation.ConfigError(
      f'config.init_from={source!r}: the source model has other parameter shapes than this run; '
      f'set these keys as the source run had them: {"; ".join(diffs)}'
    )


def resolve_init_from(config: ml_collections.ConfigDict, workdir: str) -> Optional[epath.Path]:
  """The checkpoint step folder that `config.init_from` names, checked against this run's model.

  None when `config.init_from` is '' or when `workdir` has a committed checkpoint of its own
  (resuming from it wins). Raises FileNotFoundError when the source has no committed checkpoint,
  ConfigError (`check_init_from_config`) when its model does not match.
  """
  if not config.init_from:
    return None
  if checkpointing.committed_steps(os.path.join(workdir, 'checkpoints')):
    return None
  source = str(config.init_from)
  if '://' not in source:  # Orbax misreads a relative step folder's metadata: make it absolute
    source = os.path.abspath(os.path.expanduser(source))
  try:
    folder = checkpointing.step_dir(source)
    source_config = checkpointing.read_config(folder)
  except FileNotFoundError as e:
    raise FileNotFoundError(f'config.init_from={config.init_from!r}: {e}') from e
  check_init_from_config(config, source_config, config.init_from)
  return folder


def _saved_shape_mismatches(metadata, abstract: dict[str, Any]) -> list[str]:
  """'item[path]: ...' for each leaf whose saved shape (or presence) differs from `abstract`'s."""

  def shapes(tree):
    return {
      jax.tree_util.keystr(p): tuple(x.shape)
      for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }

  problems = []
  for item, target in abstract.items():
    if metadata.get(item) is None:
      problems.append(f'{item}: not in the checkpoint')
      continue
    want, have = shapes(target), shapes(metadata[item])
    for key in sorted(want.keys() | have.keys()):
      if key not in have:
        problems.append(f'{item}{key}: not in the checkpoint')
      elif key not in want:
        problems.append(f'{item}{key}: not in this model')
      elif want[key] != have[key]:
        problems.append(
          f'{item}{key}: shape {have[key]} in the checkpoint, {want[key]} in this model'
        )
  return problems


def teacher_frozen_from(config: ml_collections.ConfigDict) -> int | None:
  """The step from which the teacher stays frozen until stage 2 (`ema_decay_at`'s `frozen_from`):
  stage 1's start, or None when `schedule.stage1_teacher = 'student'` (the teacher copies the
  student until stage 2)."""
  s = config.schedule
  return s.stage1_start if s.stage1_teacher == 'frozen' else None


def _warn_if_loaded_teacher_is_replaced(config: ml_collections.ConfigDict) -> None:
  """The loaded teacher only lasts if the first update keeps it (stage 1, or stage 2 without
  warmup)."""
  s = config.schedule
  decay = float(
    train_state_lib.ema_decay_at(
      1,
      start=s.stage2_start,
      decay=s.ema_decay,
      warmup_steps=s.ema_warmup_steps,
      frozen_from=teacher_frozen_from(config),
    )
  )
  if decay < s.ema_decay:
    logging.warning(
      'config.init_from_teacher: the loaded EMA teacher is replaced by the student within the '
      'first steps (stage 0 copies the student; stage 2 ramps its EMA decay up from 0 over '
      'schedule.ema_warmup_steps). To keep it, set schedule.stage1_start=0 and either '
      'schedule.stage2_start > 0 (frozen teacher) or schedule.ema_warmup_steps=0.'
    )


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  *,
  model: models.PairAlign,
  optimizer: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
  settings: objective.ObjectiveSettings,
  stage: int,
):
  """One optimizer step of `stage` on a batch {'view1', 'view2': [B, S]} -> (state, metrics)."""
  fcfg = frontend.FrontendConfig.from_config(config)
  rng, step_rng = jax.random.split(state.rng)
  keys = dict(
    zip(
      ('spec', 'dropout', 'vq', 'corrupt', 'negatives', 'mix', 'jitter', 'own_times'),
      jax.random.split(step_rng, 8),
    )
  )

  waves = jnp.concatenate([batch['view1'], batch['view2']], axis=0)  # [2B, S]
  mel_in, mel_clean, energy = objective.view_features(
    waves, fcfg, keys['spec'], train=True, specaugment=settings.specaugment
  )
  mels = {'mel_in': mel_in, 'mel_clean': mel_clean, 'energy': energy}
  metrics = {}

  targets = None
  new_eos_bias = state.eos_bias
  if stage >= 1:
    teacher_vars = {'params': state.teacher_params, 'vq_stats': state.vq_stats}
    targets, new_eos_bias, teacher_metrics = objective.teacher_targets(
      model,
      teacher_vars,
      mel_clean,
      settings,
      stage=stage,
      eos_bias=state.eos_bias,
      alpha=teacher_alpha(state.step, config),
      rng=keys['mix'],
    )
    metrics.update(teacher_metrics)

  weights = settings.stage_weights(stage)

  def loss_fn(params):
    terms, aux = objective.compute_terms(
      model, params, state.vq_stats, mels, targets, keys, stage=stage, settings=settings, train=True
    )
    total, logged = losses.total_from_terms(terms, weights)
    return total, (logged, aux)

  (loss, (logged, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state, finite = train_state_lib.apply_update_if_finite(
    state, grads, loss, optimizer, new_vq_stats=aux['vq_stats'], new_rng=rng
  )
  if settings.encoder_frozen(stage):
    # No gradient reaches these (stop-gradient H, stage-0 terms off), but the optimizer's momentum
    # and weight decay would still move them: they keep their stage-0 values exactly.
    new_state = new_state.replace(
      params=train_state_lib.keep_subtrees(new_state.params, state.params, STAGE0_MODULES)
    )

  decay = train_state_lib.ema_decay_at(
    new_state.step,
    start=config.schedule.stage2_start,
    decay=config.schedule.ema_decay,
    warmup_steps=config.schedule.ema_warmup_steps,
    frozen_from=teacher_frozen_from(config),
  )
  new_state = new_state.replace(
    teacher_params=train_state_lib.ema_update(new_state.teacher_params, new_state.params, decay),
    eos_bias=jnp.where(finite, new_eos_bias, state.eos_bias),
  )

  cluster_size = _cluster_size(aux['vq_stats'])
  metrics.update({f'loss/{name}': value for name, value in logged.items()})
  metrics.update(
    {
      'loss/total': loss,
      'grad_norm': optax.tree.norm(grads),
      'finite': finite.astype(jnp.float32),
      'vq/perplexity': aux['perplexity'],
      'vq/reseeded_codes': aux['reseeded'],  # dead codes (EMA count below the threshold) re-seeded
      'vq/codes_in_use': (
        jnp.sum(cluster_size > 2.0 * config.vq.dead_code_threshold)
        if cluster_size is not None
        else jnp.zeros(())
      ),
      'eos_bias': new_state.eos_bias,
      'ema_decay': decay,
      'nonfinite_steps': new_state.nonfinite_steps,  # consecutive skipped updates (int32)
      'stage': jnp.asarray(stage, jnp.float32),
    }
  )
  if 'targets' in aux:
    metrics['targets/tokens_per_second'] = aux['mean_target_length'] / config.audio.segment_seconds
    metrics['targets/at_max_len'] = aux['target_at_max_len']
  return new_state, metrics


# Share of a step's targets filling all model.max_len - 1 code slots above which the run warns.
CUT_TARGETS_WARNING = 0.01


def _warn_if_targets_are_cut(metrics, config, warned: bool) -> bool:
  """Warns (once a run) when more than CUT_TARGETS_WARNING of a logged step's targets fill all
  `model.max_len - 1` code slots: longer strings are cut there, silently, and the decoder learns
  to stop at the limit. Returns whether the run has warned."""
  share = float(metrics.get('targets/at_max_len', 0.0))
  if warned or share <= CUT_TARGETS_WARNING:
    return warned
  logging.warning(
    '%.1f%% of the targets fill all %d code slots of model.max_len=%d: strings longer than that '
    'are cut (metric targets/at_max_len); raise model.max_len or lower the target rate '
    '(targets.code_groups, targets.min_run_frames)',
    100 * share,
    config.model.max_len - 1,
    config.model.max_len,
  )
  return True


def _cluster_size(vq_stats) -> Optional[jax.Array]:
  found = [
    v
    for path, v in jax.tree_util.tree_flatten_with_path(vq_stats)[0]
    if 'cluster_size' in jax.tree_util.keystr(path)
  ]
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
    self.abstract_state, self.state_sharding = sharding.abstract_state_and_shardings(
      boxed, self.mesh, self.rules
    )
    self.batch_sharding = sharding.batch_sharding(self.mesh)
    self._init = jax.jit(lambda r: nn.meta.unbox(init_fn(r)), out_shardings=self.state_sharding)

    def init_from_loaded(r, loaded):
      # The fresh init's parts that `loaded` replaces are dead code (XLA drops them).
      fresh = nn.meta.unbox(init_fn(r))

      def with_added(params):  # modules the source lacks (INIT_FROM_ADDED_MODULES): fresh init
        return {**fresh.params, **params}

      teacher_params = loaded.get('teacher_params')
      vq_stats = fresh.vq_stats
      if 'vq_stats' in loaded:  # leaves the source lacks (a chosen grouping): fresh
        vq_stats = {
          module: {**fresh.vq_stats[module], **loaded['vq_stats'].get(module, {})}
          for module in fresh.vq_stats
        }
      return train_state_lib.new_train_state(
        with_added(loaded['params']),
        vq_stats,
        self.optimizer,
        fresh.rng,
        teacher_params=None if teacher_params is None else with_added(teacher_params),
        eos_bias=loaded.get('eos_bias'),
      )

    self._init_from_loaded = jax.jit(init_from_loaded, out_shardings=self.state_sharding)
    self._rng = rng
    self._steps = {}

  def init_state(self) -> TrainState:
    # No logical-rules context here: the out_shardings place the parameters, and flax's
    # DenseGeneral would otherwise constrain its flat init kernel with the 3-D names.
    with jax.set_mesh(self.mesh):
      return self._init(self._rng)

  def init_from_checkpoint(
    self, path, *, vq_stats: bool = True, teacher: bool = True
  ) -> TrainState:
    """A step-0 state from another run's checkpoint (fine-tuning, `config.init_from`).

    `path`: a workdir (its newest committed step), its checkpoints folder or one step folder.
    Read onto this trainer's mesh with the state's shardings: the student params, with `vq_stats`
    the VQ codebook state, with `teacher` the EMA teacher and the EOS bias of its decodes. The
    rest is as `init_state` makes it: fresh optimizer state, step 0, the seed's RNG, the teacher
    a copy of the (loaded) student, EOS bias 0 (also with `teacher` when this run's length
    controller is off: the source's bias would never move). A module this model adds to the source's
    (`INIT_FROM_ADDED_MODULES`, e.g. the code embedding of `model.decoder_reads_codes`) keeps its
    fresh init, logged. Raises ValueError naming the leaves whose saved shapes differ from this
    model's.
    """
    folder = checkpointing.step_dir(path)
    # The source's EOS bias is its length controller's state: with this run's controller off
    # (length.controller_gain = 0) nothing would ever move it, and every decode would keep the
    # source's bias (e.g. +5 after a controller that raised it): it starts at 0 instead.
    keep_eos_bias = teacher and float(self.config.length.controller_gain) > 0
    if teacher and not keep_eos_bias:
      logging.info(
        'config.init_from: the source EOS bias is not loaded (length.controller_gain = 0 here, '
        'so it would stay fixed): 0.'
      )
    items = (
      ('params',)
      + (('vq_stats',) if vq_stats else ())
      + (('teacher_params',) if teacher else ())
      + (('eos_bias',) if keep_eos_bias else ())
    )
    abstract = {item: getattr(self.abstract_state, item) for item in items}
    metadata = checkpointing.state_metadata(folder)
    # Modules this model adds to the source's (INIT_FROM_ADDED_MODULES) keep their fresh init.
    added = sorted(
      module
      for module in INIT_FROM_ADDED_MODULES.values()
      if module in abstract['params'] and module not in (metadata.get('params') or {})
    )
    for item in ('params', 'teacher_params'):
      if item in abstract:
        abstract[item] = {k: v for k, v in abstract[item].items() if k not in added}
    if 'vq_stats' in abstract:  # a source without a chosen grouping: this run's starts unchosen
      abstract['vq_stats'] = _without_unsaved_code_groups(
        abstract['vq_stats'], metadata.get('vq_stats') or {}
      )
    problems = _saved_shape_mismatches(metadata, abstract)
    if problems:
      raise ValueError(
        f'config.init_from: {folder} does not fit this model ({len(problems)} mismatching leaves; '
        'did the model code change since it was saved?): '
        + '; '.join(problems[:10])
        + ('; ...' if len(problems) > 10 else '')
      )
    loaded = checkpointing.restore_params(folder, abstract=abstract, items=items)
    with jax.set_mesh(self.mesh):
      state = self._init_from_loaded(self._rng, loaded)
    logging.info(
      'Initialized from %s (step %s): %s loaded; %s%soptimizer state, data iterator and '
      'step counter fresh (step 0).',
      folder,
      folder.name,
      ', '.join(items),
      f'{", ".join(added)} not in the source: fresh init; ' if added else '',
      '' if teacher else 'teacher = copy of the loaded student; ',
    )
    return state

  def choose_code_groups(self, state: TrainState, workdir: str) -> TrainState:
    """`state` with its chosen code grouping stored in 'vq_stats' (`code_group_choice.py`; at
    the start of stage 1 when `config.targets.group_candidates > 1`); what the choice measured
    is logged and written to `<workdir>/code_groups.json`."""
    t0 = time.time()
    variables = {'params': state.teacher_params, 'vq_stats': state.vq_stats}
    with jax.set_mesh(self.mesh):
      groups, choice = code_group_choice.choose_code_groups(
        self.model, variables, self.config, cache_dir=os.path.join(workdir, 'cache')
      )
    fits = int(choice.fits.sum())
    if not fits:
      logging.warning(
        'code-group choice: no candidate is within %.2f x the VQ strings (%.1f tokens/s); kept '
        'the shortest (%.1f tokens/s)',
        float(self.config.targets.group_choice_max_rate_ratio),
        choice.vq_rate,
        choice.rates[choice.index],
      )
    logging.info(
      'code-group choice: kept candidate %d of %d (%s %.3f, %.1f tokens/s; the '
      'farthest-point grouping: %.3f, %.1f tokens/s; %d within %.1f tokens/s) in %.1f s',
      choice.index,
      len(choice.scores),
      choice.measure.replace('_', ' '),
      choice.scores[choice.index],
      choice.rates[choice.index],
      choice.scores[0],
      choice.rates[0],
      fits,
      choice.max_rate,
      time.time() - t0,
    )
    if jax.process_index() == 0:
      with open(os.path.join(workdir, CODE_GROUPS_FILE), 'w', encoding='utf-8') as f:
        json.dump({'step': int(jax.device_get(state.step)), **choice.as_dict()}, f, indent=1)
    return state.replace(
      vq_stats=_with_vq_stats_leaf(state.vq_stats, code_groups_lib.CHOSEN, groups)
    )

  def refit_vq(self, state: TrainState, workdir: str) -> TrainState:
    """`state` with its VQ projection and codebook refitted to the encoder (`vq_refit.py`; at
    the start of stage 1 when `config.vq.refit != 'none'`), in the student and the teacher;
    what the fit measured is logged and written to `<workdir>/vq_refit.json`."""
    t0 = time.time()
    variables = {'params': state.teacher_params, 'vq_stats': state.vq_stats}
    with jax.set_mesh(self.mesh):
      refit, bad = vq_refit_lib.refit_from_training_audio(
        self.model, variables, self.config, cache_dir=os.path.join(workdir, 'cache')
      )
    if sum(bad.values()):
      logging.warning('VQ refit: %d bad training recordings skipped (%s)', sum(bad.values()), bad)
    summary = {'step': int(jax.device_get(state.step)), **refit.as_dict()}
    logging.info(
      'VQ refit: projection onto the top %d principal directions of %d encoder frames (%.1f%% of '
      'their variance), codebook of %d codes by k-means (%d take frames) in %.1f s',
      summary['code_dim'],
      summary['num_frames'],
      100 * summary['explained_variance'],
      summary['codebook_size'],
      summary['codes_used'],
      time.time() - t0,
    )
    if jax.process_index() == 0:
      with open(os.path.join(workdir, VQ_REFIT_FILE), 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=1)
    projection = {"['vq']['proj']['kernel']": refit.kernel, "['vq']['proj']['bias']": refit.bias}
    return state.replace(
      params=_with_leaves(state.params, projection),
      teacher_params=_with_leaves(state.teacher_params, projection),
      vq_stats=_with_leaves(
        state.vq_stats,
        {
          "['vq']['codebook']": refit.codebook,
          "['vq']['cluster_size']": refit.cluster_size,
          "['vq']['embed_sum']": refit.embed_sum,
        },
      ),
    )

  def fit_units(self, state: TrainState, workdir: str) -> TrainState:
    """`state` with the acoustic-unit centroids of `loss.code_pred_targets = 'units'` fitted on
    training audio (`units.fit_from_training_audio`) and stored in 'vq_stats'."""
    t0 = time.time()
    centroids = units_lib.fit_from_training_audio(
      self.config, cache_dir=os.path.join(workdir, 'cache')
    )
    logging.info(
      'acoustic units: %d centroids of %d-dim cepstral frames fitted on %d training recordings '
      'in %.1f s',
      centroids.shape[0],
      centroids.shape[1],
      int(self.config.loss.unit_fit_recordings),
      time.time() - t0,
    )
    return state.replace(
      vq_stats=_with_vq_stats_leaf(state.vq_stats, units_lib.UNIT_CENTROIDS, centroids)
    )

  def step_fn(self, stage: int):
    if stage not in self._steps:
      fn = functools.partial(
        train_step,
        model=self.model,
        optimizer=self.optimizer,
        config=self.config,
        settings=self.settings,
        stage=stage,
      )
      self._steps[stage] = jax.jit(
        fn,
        in_shardings=(self.state_sharding, self.batch_sharding),
        out_shardings=(self.state_sharding, None),
        donate_argnums=(0,),
      )
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


def _check_refit_has_enough_frames(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError when the VQ refit at the start of stage 1 would cluster fewer encoder
  frames than `model.codebook_size` (`vq_refit.fit_quantizer`): at most `vq.refit_recordings`
  training recordings of `ModelConfig.enc_max_frames` frames each."""
  recordings = min(int(config.vq.refit_recordings), len(pipeline.make_source(config, 'train')))
  frames = recordings * models.ModelConfig.from_config(config).enc_max_frames
  if frames < int(config.model.codebook_size):
    raise config_validation.ConfigError(
      f'config.vq.refit: the refit at the start of stage 1 clusters the encoder frames of '
      f'{recordings} training recordings ({frames} frames), fewer than '
      f'config.model.codebook_size={config.model.codebook_size}; raise config.vq.refit_recordings '
      'or use a smaller codebook'
    )


def _log_kept_from_source(config: ml_collections.ConfigDict, model_cfg: models.ModelConfig) -> None:
  """Says which stage-0 fits a run without a stage 0 takes from its `init_from` source."""
  kept = [
    what
    for what, on in (
      ('acoustic units (loss.code_pred_targets=units)', model_cfg.unit_clusters > 0),
      (f'VQ refit (vq.refit={config.vq.get("refit", "none")})', _refits(config)),
      (
        f'code grouping (targets.group_candidates={config.targets.group_candidates})',
        model_cfg.stores_code_groups,
      ),
    )
    if on
  ]
  if kept:
    logging.info(
      "config.init_from with schedule.stage1_start=0 (no stage 0 in this run): the source's %s "
      'kept as loaded, nothing fitted or chosen.',
      ', '.join(kept),
    )


def _refits(config: ml_collections.ConfigDict) -> bool:
  return config.vq.get('refit', 'none') != 'none'


def chooses_on_validation(config: ml_collections.ConfigDict) -> bool:
  """Whether the code grouping is chosen on the validation split's evaluation set
  (`targets.group_choice = 'validation_recall'`, code_group_choice.py)."""
  return (
    int(config.targets.group_candidates) > 1
    and config.targets.get('group_choice', 'view_margin') == 'validation_recall'
  )


def runs_stage0(config: ml_collections.ConfigDict) -> bool:
  """Whether the run trains a stage 0 of its own (`schedule.stage1_start > 0`). A run without one
  (only with `config.init_from`) starts from the source's encoder, quantizer, code grouping and
  acoustic units and keeps them: nothing is fitted, refitted or chosen."""
  return int(config.schedule.stage1_start) > 0


def chooses_code_groups_at(step: int, config: ml_collections.ConfigDict) -> bool:
  """Whether the code grouping is chosen before step `step` runs: at the first stage-1 step when
  `config.targets.group_candidates > 1` and the run has a stage 0 (a run resumed later has it in
  its checkpoint; one resumed exactly there chooses again, the same way)."""
  return (
    int(config.targets.group_candidates) > 1
    and runs_stage0(config)
    and step == int(config.schedule.stage1_start)
  )


def refits_vq_at(step: int, config: ml_collections.ConfigDict) -> bool:
  """Whether the VQ stage is refitted to the encoder before step `step` runs: at the first
  stage-1 step when `config.vq.refit != 'none'` and the run has a stage 0 (before the code
  grouping is chosen; a run resumed exactly there refits again, the same way)."""
  return _refits(config) and runs_stage0(config) and step == int(config.schedule.stage1_start)


def _with_leaves(tree, values: dict[str, np.ndarray]):
  """`tree` with each leaf whose key path ends with a key of `values` (e.g. "['proj']['kernel']")
  replaced by that host array (same shape), placed with the leaf's own sharding."""

  def put(path, leaf):
    keys = jax.tree_util.keystr(path)
    for suffix, value in values.items():
      if keys.endswith(suffix):
        if tuple(leaf.shape) != tuple(value.shape):
          raise ValueError(f'{keys}: shape {leaf.shape}, replacement {value.shape}')
        return jax.make_array_from_callback(
          leaf.shape, leaf.sharding, lambda index, value=value: np.asarray(value, leaf.dtype)[index]
        )
    return leaf

  return jax.tree_util.tree_map_with_path(put, tree)


def _with_vq_stats_leaf(vq_stats, name: str, value: np.ndarray):
  """`vq_stats` with its leaf `name` replaced by the host array `value` (same shape), placed
  with the leaf's own sharding."""
  return _with_leaves(vq_stats, {f"['{name}']": value})


# 'vq_stats' leaves that only some models carry (a source saved without one starts it fresh).
_OPTIONAL_VQ_STATS = (code_groups_lib.CHOSEN, units_lib.UNIT_CENTROIDS)


def _without_unsaved_code_groups(abstract_vq_stats, saved_vq_stats):
  """The abstract 'vq_stats' without the optional leaves (a chosen grouping, unit centroids)
  the saved one lacks."""
  return {
    module: {
      name: leaf
      for name, leaf in leaves.items()
      if name not in _OPTIONAL_VQ_STATS or name in (saved_vq_stats.get(module) or {})
    }
    for module, leaves in abstract_vq_stats.items()
  }


def _format_eta(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  seconds = int(seconds)
  return f'{seconds // 3600:d}h{(seconds % 3600) // 60:02d}m{seconds % 60:02d}s'


def _check_nonfinite(step: int, nonfinite_steps, max_nonfinite_steps: int) -> None:
  """Raises NonFiniteError when `nonfinite_steps` (the counter after `step`) reached the limit."""
  nonfinite = int(jax.device_get(nonfinite_steps))
  if nonfinite >= max_nonfinite_steps:
    raise NonFiniteError(
      f'{nonfinite} consecutive non-finite updates at step {step} '
      f'(config.max_nonfinite_steps={max_nonfinite_steps}); lower config.optim.learning_rate '
      'or check the data.'
    )


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, run_evaluation: bool = True
) -> TrainState:
  """Trains (resuming from the newest checkpoint in `workdir`) and writes the evaluation report."""
  if '://' in str(workdir):
    # Checkpoints would go there (Orbax reads URLs), but the metrics, the stage-1 fit reports and
    # the evaluation report are written with local file calls: refused now, not after training.
    raise ValueError(
      f'workdir={workdir!r}: a URL workdir is not supported; use a path that every host sees '
      '(on a Cloud TPU VM: the bucket mounted with gcsfuse at the same path on every worker, '
      'launch/tpu_vm.sh mount)'
    )
  sharding.maybe_initialize_distributed()
  config_validation.validate_config(config, device_count=jax.device_count())
  init_from = resolve_init_from(
    config, workdir
  )  # fine-tuning source, checked before anything is built
  if run_evaluation:  # an evaluation set that cannot be built fails now, not after training
    from pairalign_jax import evaluate

    evaluate.check_evaluation_source(config)
  if chooses_on_validation(config):  # the same for the grouping choice at stage 1's start
    from pairalign_jax import evaluate

    evaluate.check_evaluation_source(config, split='validation')
  if _refits(config) and runs_stage0(config):  # and for the VQ refit at stage 1's start
    _check_refit_has_enough_frames(config)
  os.makedirs(workdir, exist_ok=True)
  logging.info(
    'devices: %d (%s), processes: %d',
    jax.device_count(),
    jax.devices()[0].platform,
    jax.process_count(),
  )

  trainer = Trainer(config)
  data_iter = pipeline.make_train_iterator(
    config, process_index=jax.process_index(), process_count=jax.process_count()
  )
  writer = metric_writer.MetricWriter(workdir)
  ckpt = checkpointing.Checkpointer.from_config(os.path.join(workdir, 'checkpoints'), config)
  ckpt.install_preemption_handler()

  data_stats = pipeline.make_bad_input_stats(config)  # counted from the batches (any worker count)

  restored = ckpt.restore_latest(
    trainer.abstract_state, data_iter, state_sharding=trainer.state_sharding
  )
  if restored is not None:
    state, start_step = restored
    logging.info('Resumed from step %d.', start_step)
    if config.init_from:
      logging.info(
        'config.init_from=%s ignored: this workdir has its own checkpoint (step %d), and '
        'resuming from it wins.',
        config.init_from,
        start_step,
      )
  elif init_from is not None:
    state = trainer.init_from_checkpoint(
      init_from, vq_stats=config.init_from_vq_stats, teacher=config.init_from_teacher
    )
    if config.init_from_teacher:
      _warn_if_loaded_teacher_is_replaced(config)
  else:
    state = trainer.init_state()
    start_step = 0
    logging.info('Starting from scratch.')
  start_step = int(jax.device_get(state.step))
  if restored is None and trainer.model.cfg.unit_clusters > 0 and runs_stage0(config):
    state = trainer.fit_units(state, workdir)  # every run with a stage 0 that does not resume
  if restored is None and init_from is not None and not runs_stage0(config):
    _log_kept_from_source(config, trainer.model.cfg)
  n_params = models.count_params(state.params)
  logging.info('model parameters: %.2fM', n_params / 1e6)

  stop_early = False
  last_log_time, last_log_step = time.time(), start_step
  warned_cut_targets = False
  train_start = time.time()
  step = start_step
  # The non-finite counter of the previous step, read after the next step is dispatched: no
  # device -> host wait per step (the host prepares step n + 1 while the device runs step n).
  pending_nonfinite = None
  try:
    while step < config.num_train_steps:
      if refits_vq_at(step, config):
        state = trainer.refit_vq(state, workdir)
      if chooses_code_groups_at(step, config):
        state = trainer.choose_code_groups(state, workdir)
      stage = stage_at(step, config)
      local_batch = next(data_iter)
      data_stats.update_from_batch(local_batch)
      state, metrics = trainer.run_step(state, trainer.device_batch(local_batch), stage)
      step += 1
      if pending_nonfinite is not None:
        _check_nonfinite(*pending_nonfinite, config.max_nonfinite_steps)
      pending_nonfinite = (step, metrics['nonfinite_steps'])

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
        logging.info(
          'step %d/%d stage %d | loss %.4f | %s | %.2f steps/s, %.1f ex/s, ETA %s',
          step,
          config.num_train_steps,
          stage,
          metrics['loss/total'],
          ' '.join(
            f'{k.split("/")[-1]}={float(v):.3f}'
            for k, v in sorted(metrics.items())
            if k.startswith('loss/') and k != 'loss/total' and float(v) != 0.0
          ),
          steps_per_sec,
          steps_per_sec * config.batch_size,
          _format_eta(eta),
        )
        _check_nonfinite(step, metrics['nonfinite_steps'], config.max_nonfinite_steps)
        pending_nonfinite = None
        warned_cut_targets = _warn_if_targets_are_cut(metrics, config, warned_cut_targets)

      # A periodic evaluation reads the checkpoint of its own step: saved then whatever
      # checkpoint_every_steps says.
      evaluates_now = bool(
        config.eval_every_steps
        and step % config.eval_every_steps == 0
        and step < config.num_train_steps
        and run_evaluation
      )
      if (
        step % config.checkpoint_every_steps == 0 or step == config.num_train_steps or evaluates_now
      ):
        ckpt.save(step, state, data_iter, meta=_checkpoint_meta(data_stats))
      if ckpt.should_stop(step):
        logging.warning('Preemption requested: saving step %d and exiting.', step)
        ckpt.save(step, state, data_iter, force=True, meta=_checkpoint_meta(data_stats))
        stop_early = True
        break
      if evaluates_now:
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
  from pairalign_jax import evaluate

  report = evaluate.evaluate_workdir(workdir, config=config)
  logging.info(
    'Evaluation at step %d on the %r split written to %s',
    step,
    report['eval_set'].get('split'),
    os.path.join(workdir, 'report.md'),
  )
  for name, block in report['tokenizers'].items():  # the VQ stage's figures too, every evaluation
    ci = block.get('recall_at_1_ci95') or [float('nan')] * 2
    logging.info(
      '  %-20s recall@1 %.3f [%.3f, %.3f] at %.2f tokens/s',
      name,
      block['recall_at_1'],
      ci[0],
      ci[1],
      block['tokens_per_second'],
    )
  return report
