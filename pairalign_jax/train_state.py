"""The train state (a `flax.struct.dataclass`) and the updates that act on it outside the gradient.

Everything a resumed run needs is in the state, so a checkpoint of it (plus the data iterator)
resumes exactly: the student and EMA-teacher parameters, the optimizer state, the VQ codebook
statistics, the adaptive EOS bias of the teacher decodes, the RNG and the count of skipped
(non-finite) updates.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # [] int32: optimizer steps taken
  params: Any  # student parameters θ
  teacher_params: Any  # EMA teacher θ̄ (same structure as params)
  opt_state: Any
  vq_stats: Any  # EMA codebook statistics ('vq_stats' collection)
  eos_bias: jax.Array  # [] float32: EOS-logit bias of teacher decodes (length controller)
  rng: jax.Array  # PRNG key (raw uint32[2] key data, checkpointable)
  nonfinite_steps: jax.Array  # [] int32: consecutive skipped updates (non-finite loss or grads)


def new_train_state(
  params,
  vq_stats,
  optimizer: optax.GradientTransformation,
  rng,
  *,
  teacher_params=None,
  eos_bias=None,
) -> TrainState:
  """A state at step 0 around given variables: fresh optimizer state, no skipped updates.

  Used for a fresh run (randomly initialized variables) and for fine-tuning (`config.init_from`:
  another run's variables). The teacher starts as a copy of the student unless `teacher_params`
  is given; `eos_bias` defaults to 0.
  """
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    teacher_params=jax.tree.map(lambda x: x, params) if teacher_params is None else teacher_params,
    opt_state=optimizer.init(params),
    vq_stats=vq_stats,
    eos_bias=jnp.zeros((), jnp.float32) if eos_bias is None else jnp.asarray(eos_bias, jnp.float32),
    rng=rng,
    nonfinite_steps=jnp.zeros((), jnp.int32),
  )


def ema_decay_at(step, *, start: int, decay: float, warmup_steps: int, frozen_from=None):
  """EMA decay of the teacher update that follows the student's `step`-th update (`step` counts
  the updates taken, so the update made at state step k has `step` = k + 1).

  Up to and including the last stage-0 update (`step` <= `frozen_from`): 0, the teacher copies
  the student, so it ends stage 0 equal to it. The stage-1 updates (`frozen_from` < `step` <
  `start`): 1, the teacher is frozen, so stage-1 targets are those of the final stage-0 VQ
  tokenizer and cannot drift with the student (a teacher that follows the student lets the
  encoder collapse its own targets). From `start` on: a linear ramp from 0 to `decay` over
  `warmup_steps` (0 at `step` = `start`: the teacher takes the student's stage-1 model, decoder
  included, before the first stage-2 step), then it averages slowly. Without `frozen_from` the
  decay is 0 before `start`.
  """
  step = jnp.asarray(step, jnp.float32)
  if warmup_steps <= 0:
    ramp = jnp.where(step >= start, 1.0, 0.0)
  else:
    ramp = jnp.clip((step - start) / warmup_steps, 0.0, 1.0)
  value = decay * ramp
  if frozen_from is not None:
    value = jnp.where((step > frozen_from) & (step < start), 1.0, value)
  return value


def ema_update(teacher_params, params, decay):
  """θ̄ ← decay·θ̄ + (1 − decay)·θ, leaf by leaf."""
  return jax.tree.map(
    lambda t, p: decay * t + (1.0 - decay) * p.astype(t.dtype), teacher_params, params
  )


def keep_subtrees(params, old_params, names) -> Any:
  """`params` with the top-level subtrees `names` (those it has) taken from `old_params`."""
  return {k: (old_params[k] if k in names else v) for k, v in params.items()}


def tree_all_finite(tree) -> jax.Array:
  """True when every leaf of `tree` is finite."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def apply_update_if_finite(
  state: TrainState, grads, loss, optimizer: optax.GradientTransformation, *, new_vq_stats, new_rng
) -> tuple[TrainState, jax.Array]:
  """Applies the optimizer update unless the loss or any gradient is non-finite.

  A skipped update leaves params, optimizer state and VQ statistics unchanged, still advances
  `step` (so the data and schedule move on) and increments `nonfinite_steps`; a finite update
  resets it. Returns (new_state, finite flag).
  """
  finite = jnp.logical_and(jnp.isfinite(loss), tree_all_finite(grads))
  updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)

  def pick(new, old):
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

  state = state.replace(
    step=state.step + 1,
    params=pick(new_params, state.params),
    opt_state=pick(new_opt_state, state.opt_state),
    vq_stats=pick(new_vq_stats, state.vq_stats),
    rng=new_rng,
    nonfinite_steps=jnp.where(finite, 0, state.nonfinite_steps + 1).astype(jnp.int32),
  )
  return state, finite
