"""Every term of the PairAlign objective (docs/METHOD.md §5) as a pure function over arrays.

No model calls here: the functions take logits, log-likelihoods, codes and times. Notation:
``ℓ(y|H) = Σ_t mask_t log p(y_t | y_<t, H)`` and ``ℓ̄ = ℓ / Σ_t mask_t`` (nats per scored token).
Times are in seconds. Every loss returns a float32 scalar unless stated.

`objective.py` composes these with the model for one training stage and calls an expensive term
(the scoring rows it needs, the reconstruction decoder, ...) only when its weight is nonzero;
:func:`total_from_terms` then sums ``weight * term`` without referencing ablated terms, so an
ablation (weight 0) removes the term's cost from the compiled step entirely.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array


def _safe_div(num: Array, den: Array) -> Array:
  return num / jnp.maximum(den, 1.0)


def _smooth_l1(x: Array, beta: float) -> Array:
  """Huber scaled to slope 1: ``0.5 x²/β`` for ``|x| < β``, else ``|x| - β/2`` (L1 when β = 0)."""
  if beta <= 0:
    return jnp.abs(x)
  return optax.losses.huber_loss(x, delta=beta) / beta


# ----------------------------------------------------------------------------- sequence terms


def cross_teacher_forcing(
  ll_1_given_2: Array,
  ll_2_given_1: Array,
  *,
  ll_1_given_1: Optional[Array] = None,
  ll_2_given_2: Optional[Array] = None,
  self_weight: float = 1.0,
) -> Array:
  """Cross-paired teacher forcing (docs/METHOD.md §5.2).

  ``-mean_b ℓ̄(y1_b|H2_b) - mean_b ℓ̄(y2_b|H1_b)``.

  Args are per-sequence mean log-likelihoods ``ℓ̄`` [B]. With ``ll_1_given_1`` and
  ``ll_2_given_2`` (both or neither), the self terms ``-self_weight * (mean ℓ̄(y1|H1) +
  mean ℓ̄(y2|H2))`` are added (the optional self-teacher-forcing variant).
  """
  loss = -(jnp.mean(ll_1_given_2) + jnp.mean(ll_2_given_1))
  if (ll_1_given_1 is None) != (ll_2_given_2 is None):
    raise ValueError(
      'cross_teacher_forcing: pass both self terms (ll_1_given_1, ll_2_given_2) or neither'
    )
  if ll_1_given_1 is not None:
    loss = loss - self_weight * (jnp.mean(ll_1_given_1) + jnp.mean(ll_2_given_2))
  return loss


def antibypass(ll_own: Array, ll_other: Array, margin: float) -> Array:
  """Anti-bypass margin (docs/METHOD.md §5.4).

  ``mean_b relu(m - (ℓ̄(y_b|H_b) - ℓ̄(y_b|H_other(b))))``.

  ll_own, ll_other: [B] mean log-likelihoods of the same sequences under their own and an
  unrelated condition; margin ``m`` in nats per token. Zero once own beats other by ``m``.
  """
  if ll_own.shape != ll_other.shape:
    raise ValueError(f'antibypass: ll_own {ll_own.shape} and ll_other {ll_other.shape} differ')
  return jnp.mean(jax.nn.relu(margin - (ll_own - ll_other)))


def info_nce(s: Array, temperature: float) -> Array:
  """Symmetric InfoNCE over a likelihood matrix (docs/METHOD.md §5.5).

  ``S_ij = ℓ̄(y1_i | H2_j)`` [B, B]; with ``Z = S / τ``:
  ``0.5 * (mean_i -log softmax_j(Z_i·)_i + mean_j -log softmax_i(Z_·j)_j)``, i.e. row i must
  pick its own condition among all conditions, and column j must pick its own sequence among
  all sequences. Its minimum is 0 (the diagonal dominates); ``log B`` when S is constant.
  """
  if s.ndim != 2 or s.shape[0] != s.shape[1]:
    raise ValueError(f'info_nce expects a square [B, B] matrix, got {s.shape}')
  if not temperature > 0:
    raise ValueError(f'info_nce: temperature must be positive, got {temperature}')
  z = s.astype(jnp.float32) / temperature
  labels = jnp.arange(s.shape[0])
  rows = optax.softmax_cross_entropy_with_integer_labels(z, labels)  # [B]
  cols = optax.softmax_cross_entropy_with_integer_labels(z.T, labels)  # [B]
  return 0.5 * (jnp.mean(rows) + jnp.mean(cols))


def info_nce_sampled(s_pos: Array, s_neg: Array, temperature: float) -> Array:
  """InfoNCE with k sampled negatives: ``mean_i -log softmax([S_pos_i, S_neg_i1..ik] / τ)_0``.

  s_pos [B] = ``ℓ̄(y1_i|H2_i)``, s_neg [B, k] = ``ℓ̄(y1_i|H2_j)`` for k sampled ``j != i``. One
  direction only (each sequence against conditions); with all ``B - 1`` negatives it equals the
  row term ``mean_i -log softmax_j(Z_i·)_i`` of :func:`info_nce`.
  """
  if s_neg.ndim != 2 or s_neg.shape[0] != s_pos.shape[0]:
    raise ValueError(f'info_nce_sampled: s_pos {s_pos.shape} needs s_neg [B, k], got {s_neg.shape}')
  if not temperature > 0:
    raise ValueError(f'info_nce_sampled: temperature must be positive, got {temperature}')
  z = jnp.concatenate([s_pos[:, None], s_neg], axis=1).astype(jnp.float32) / temperature  # [B, 1+k]
  labels = jnp.zeros((s_pos.shape[0],), jnp.int32)
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, labels))


# ----------------------------------------------------------------------------- VQ prior (stage 0)


def vq_recon_loss(mel_hat: Array, mel: Array) -> Array:
  """Mel reconstruction from quantized frames: ``mean (mel_hat - mel)²`` over [B, F, M]."""
  if mel_hat.shape != mel.shape:
    raise ValueError(f'vq_recon_loss: mel_hat {mel_hat.shape} and mel {mel.shape} differ')
  return jnp.mean(
    jnp.square(mel_hat.astype(jnp.float32) - jax.lax.stop_gradient(mel).astype(jnp.float32))
  )


def code_prediction_loss(logits: Array, codes: Array, mask: Optional[Array] = None) -> Array:
  """Cross-view code prediction: ``mean_{b,t} -log softmax(logits_bt)[sg(codes_bt)]``.

  logits [B, T, K] (view 2's frames), codes int [B, T] (view 1's codes; stop-gradient), optional
  mask [B, T] (masked mean).
  """
  if logits.shape[:-1] != codes.shape:
    raise ValueError(
      f'code_prediction_loss: logits {logits.shape} and codes {codes.shape} disagree'
    )
  ce = optax.softmax_cross_entropy_with_integer_labels(
    logits.astype(jnp.float32), jax.lax.stop_gradient(codes)
  )  # [B, T]
  if mask is None:
    return jnp.mean(ce)
  return _safe_div(jnp.sum(jnp.where(mask > 0, ce * mask, 0.0)), jnp.sum(mask))


def commitment_loss(commit_loss: Array) -> Array:
  """Passthrough of the VQ head's commitment loss ``mean ||z - sg(q)||²`` (computed in models.py).

  Kept as a named term so the objective composes every term the same way; checks it is a scalar.
  """
  commit_loss = jnp.asarray(commit_loss, jnp.float32)
  if commit_loss.ndim != 0:
    raise ValueError(f'commitment_loss expects a scalar, got shape {commit_loss.shape}')
  return commit_loss


# ----------------------------------------------------------------------------- timing


def timing_loss(pred_times: Array, target_times: Array, mask: Array, beta: float = 0.02) -> Array:
  """Timing recovery: masked mean smooth-L1 (seconds) between predicted and target token times.

  ``Σ mask · smoothL1_β(pred - sg(target)) / max(Σ mask, 1)`` with ``smoothL1_β(x) = 0.5 x²/β`` for
  ``|x| < β`` and ``|x| - β/2`` beyond (β = 0.02 s, one encoder frame; β = 0 gives L1).
  pred_times, target_times, mask: [B, L].
  """
  err = _smooth_l1(pred_times.astype(jnp.float32) - jax.lax.stop_gradient(target_times), beta)
  return _safe_div(jnp.sum(jnp.where(mask > 0, err * mask, 0.0)), jnp.sum(mask))


def monotonic_penalty(times: Array, mask: Array) -> Array:
  """``mean relu(t_i - t_{i+1})`` over consecutive positions that are both scored (seconds).

  times, mask: [B, L] (mask: code positions). 0 when times never go backwards.
  """
  both = (mask[:, :-1] > 0) & (mask[:, 1:] > 0)  # [B, L-1]
  back = jax.nn.relu(times[:, :-1] - times[:, 1:])
  return _safe_div(jnp.sum(jnp.where(both, back, 0.0)), jnp.sum(both))


def coverage_loss(
  times: Array, mask: Array, voiced_start: Array, voiced_end: Array, max_gap: float
) -> Array:
  """Seconds of the voiced region left uncovered by the token times (docs/METHOD.md §5.6).

  Each token time ``t`` covers ``[t - g/2, t + g/2]`` with ``g = max_gap``; the loss is the length
  of ``[start, end]`` outside that cover (for times in order):
  ``relu(t_first - g/2 - start) + relu(end - t_last - g/2) + Σ_i relu(t_{i+1} - t_i - g)``,
  averaged over rows. So an early EOS (last time far from the end), a late start, and any gap
  longer than ``g`` all cost; a row with no codes costs ``end - start``; a row with an empty
  voiced region (``end <= start``) costs 0. The gap excesses are summed, not averaged, so one long
  hole costs its full duration however many tokens the row has.

  Args:
    times: [B, L] token times (seconds); mask: [B, L] (1 at code positions, a prefix per row).
    voiced_start, voiced_end: [B] seconds (see :func:`voiced_region`).
    max_gap: g in seconds.
  """
  valid = mask > 0  # [B, L]
  n = jnp.sum(valid, axis=1)  # [B]
  half = 0.5 * max_gap
  first = times[:, 0]
  last = jnp.take_along_axis(times, jnp.maximum(n - 1, 0)[:, None], axis=1)[:, 0]
  both = valid[:, :-1] & valid[:, 1:]
  gaps = jnp.sum(jnp.where(both, jax.nn.relu(times[:, 1:] - times[:, :-1] - max_gap), 0.0), axis=1)
  per_row = jax.nn.relu(first - half - voiced_start) + jax.nn.relu(voiced_end - last - half) + gaps
  span = jax.nn.relu(voiced_end - voiced_start)
  per_row = jnp.where(n > 0, per_row, span)
  per_row = jnp.where(voiced_end > voiced_start, per_row, 0.0)
  return jnp.mean(per_row)


def voiced_region(
  frame_energy: Array, frame_seconds: float, threshold_db: float, min_energy: Optional[float] = None
):
  """(start [B], end [B]) seconds of the voiced region from a per-frame energy envelope.

  frame_energy [B, T] is a natural-log power per frame (e.g. the mean over bands of
  `frontend.log_mel`). A frame is voiced when it lies within ``threshold_db`` dB of the row's
  loudest frame (``energy >= max - threshold_db · ln(10) / 10``) and, if given, above
  ``min_energy`` (same log units; use it to leave all-silent rows out). Frame ``t`` spans
  ``[t, t + 1) * frame_seconds``; start is the first voiced frame's start, end the last voiced
  frame's end. Rows with no voiced frame get ``start = end = 0``.
  """
  if frame_energy.ndim != 2:
    raise ValueError(f'voiced_region expects frame_energy [B, T], got {frame_energy.shape}')
  t = frame_energy.shape[1]
  energy = frame_energy.astype(jnp.float32)
  thresh = jnp.max(energy, axis=1, keepdims=True) - threshold_db * math.log(10.0) / 10.0
  voiced = energy >= thresh  # [B, T]
  if min_energy is not None:
    voiced = voiced & (energy > min_energy)
  idx = jnp.arange(t)
  any_voiced = jnp.any(voiced, axis=1)
  first = jnp.min(jnp.where(voiced, idx, t), axis=1)
  last = jnp.max(jnp.where(voiced, idx, -1), axis=1)
  start = jnp.where(any_voiced, first * frame_seconds, 0.0).astype(jnp.float32)
  end = jnp.where(any_voiced, (last + 1) * frame_seconds, 0.0).astype(jnp.float32)
  return start, end


# ----------------------------------------------------------------------------- length


def length_loss(pred_len: Array, lengths: Array, beta: float = 0.1) -> Array:
  """Length head regression: ``mean smoothL1_β((pred - n) / max(n, 1))`` (relative error, β = 0.1).

  pred_len [B] float (predicted number of codes), lengths int [B] (targets, stop-gradient).
  Relative error makes a 2-token miss on a 10-token string cost as much as 8 on a 40-token one.
  """
  n = jax.lax.stop_gradient(lengths).astype(jnp.float32)
  rel = (pred_len.astype(jnp.float32) - n) / jnp.maximum(n, 1.0)
  return jnp.mean(_smooth_l1(rel, beta))


def eos_bias_update(
  bias: Array,
  mean_length: Array,
  target_length: float,
  gain: float,
  limit: float,
  termination_rate: Optional[Array] = None,
  min_termination: float = 0.0,
) -> Array:
  """Proportional length controller for the teacher's EOS-logit bias (docs/METHOD.md §7).

  ``clip(bias + gain · err, -limit, limit)`` with ``err = mean_length - target_length``: the bias
  is added to the EOS logit, so decodes that are too long raise it (earlier EOS) and too short
  lower it. ``mean_length`` should be over the decodes that emitted EOS.

  A mean length can be met by a mixture of short strings and loops that run to L without EOS
  (measured: 31% of the teacher's decodes looped at a target above its natural rate). So while
  ``termination_rate < min_termination`` the bias is never lowered:
  ``err = max(err, 0) + (min_termination - termination_rate) · target_length``.
  """
  err = jnp.asarray(mean_length, jnp.float32) - target_length
  if termination_rate is not None and min_termination > 0:
    shortfall = min_termination - jnp.asarray(termination_rate, jnp.float32)
    err = jnp.where(shortfall > 0, jnp.maximum(err, 0.0) + shortfall * target_length, err)
  return jnp.clip(bias + gain * err, -limit, limit).astype(jnp.float32)


# ----------------------------------------------------------------------------- total


def total_from_terms(terms: Mapping[str, Array], weights: Mapping[str, float]):
  """``total = Σ_{w_name != 0} w_name · terms[name]`` and a logging dict of every weighted name.

  A term whose weight is 0 is never referenced (it need not even be in ``terms``), so nothing
  of it reaches the compiled step; it is logged as 0.0. Weights must be Python/numpy numbers
  (static: the ablation decision is made at trace time).

  Raises:
    KeyError: a nonzero-weight term is missing from ``terms``, or ``terms`` holds a name that
      has no weight.
    TypeError: a weight is not a static number.
  """
  unknown = sorted(set(terms) - set(weights))
  if unknown:
    raise KeyError(f'total_from_terms: terms {unknown} have no weight (weights: {sorted(weights)})')
  total = jnp.zeros((), jnp.float32)
  logged = {}
  for name, weight in weights.items():
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.number)):
      raise TypeError(
        f'total_from_terms: weight of {name!r} must be a static number, got {type(weight)}'
      )
    if weight == 0:
      logged[name] = jnp.zeros((), jnp.float32)
      continue
    if name not in terms:
      raise KeyError(f'total_from_terms: term {name!r} has weight {weight} but was not computed')
    value = jnp.asarray(terms[name], jnp.float32)
    total = total + float(weight) * value
    logged[name] = value
  return total, logged
