"""Token-sequence utilities: VQ run collapsing, teacher-forcing inputs, masks, scoring, corruption.

Pure functions over arrays (no model calls). Conventions (docs/ARCHITECTURE.md):

* A **sequence batch** is ``tokens: int32[B, L]`` holding ``n_b`` codes, then ``EOS``, then ``PAD``
  (a row with ``n_b == L`` codes has no EOS: not terminated), plus ``lengths: int32[B] = n_b``.
* Teacher forcing: ``inputs = [BOS, y_1 .. y_{L-1}]`` (:func:`shift_right`), targets = ``tokens``;
  the scored positions are the ``n_b`` codes and the EOS when present (:func:`score_mask`).
* Times are seconds from the start of the segment.

Everything that runs inside a training step (:func:`collapse_runs`, :func:`prune_short_runs`,
:func:`shift_right`, :func:`score_mask`, :func:`sequence_log_likelihood`, :func:`corrupt_inputs`,
:func:`mix_targets`, :func:`resize`) is jittable with static shapes; :func:`to_lists` and
:func:`from_lists` are host-side numpy helpers.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pairalign_jax import vocab as vocab_lib

Array = jax.Array
_BIG = np.iinfo(np.int32).max


# ----------------------------------------------------------------------------- runs


def _runs(codes: Array):
  """Run decomposition of one row of frame codes [T].

  Returns (run_id [T] (run index of every frame), num_runs [], run_len [T], run_code [T],
  run_first [T], run_last [T]); the per-run arrays are indexed by run id and meaningful for
  ids < num_runs (0 elsewhere).
  """
  t = codes.shape[0]
  boundary = jnp.concatenate([jnp.ones((1,), bool), codes[1:] != codes[:-1]])  # [T]
  run_id = jnp.cumsum(boundary.astype(jnp.int32)) - 1  # [T]
  num_runs = run_id[-1] + 1
  frames = jnp.arange(t, dtype=jnp.int32)
  run_len = jax.ops.segment_sum(jnp.ones((t,), jnp.int32), run_id, num_segments=t)  # [T]
  run_code = jax.ops.segment_max(codes, run_id, num_segments=t)  # [T]
  run_first = jax.ops.segment_min(frames, run_id, num_segments=t)  # [T]
  run_last = jax.ops.segment_max(frames, run_id, num_segments=t)  # [T]
  valid = frames < num_runs
  zero = jnp.zeros_like(frames)
  return (
    run_id,
    num_runs,
    run_len,
    jnp.where(valid, run_code, zero),
    jnp.where(valid, run_first, zero),
    jnp.where(valid, run_last, zero),
  )


def _prune_row(codes: Array, min_run_frames: int) -> Array:
  """prune_short_runs for one row [T] (see there for the rule): one merge per loop iteration."""

  def merge_one(state):
    c, _ = state
    run_id, num_runs, run_len, run_code, _, _ = _runs(c)
    valid = jnp.arange(c.shape[0]) < num_runs
    short_len = jnp.where(valid & (run_len < min_run_frames), run_len, _BIG)
    go = (jnp.min(short_len) < _BIG) & (num_runs > 1)
    r = jnp.argmin(short_len)  # shortest short run; leftmost on ties
    left_len = jnp.where(r > 0, run_len[jnp.maximum(r - 1, 0)], _BIG)
    right_len = jnp.where(r + 1 < num_runs, run_len[jnp.minimum(r + 1, c.shape[0] - 1)], _BIG)
    partner = jnp.where(left_len <= right_len, r - 1, r + 1)  # the shorter neighbour; left on ties
    r_len, p_len = run_len[r], run_len[partner]
    keep_partner = (p_len > r_len) | ((p_len == r_len) & (partner < r))
    code = jnp.where(keep_partner, run_code[partner], run_code[r])  # the longer part's code
    merged = jnp.where(go & ((run_id == r) | (run_id == partner)), code, c)
    return merged, go

  out, _ = jax.lax.while_loop(lambda state: state[1], merge_one, (codes, jnp.array(True)))
  return out


def prune_short_runs(codes: Array, min_run_frames: int) -> Array:
  """Relabels frame codes so that no run is shorter than ``min_run_frames`` frames.

  Rule (greedy agglomerative merging, one merge at a time until every run is long enough or
  the row is a single run):
    1. take the shortest run below ``min_run_frames`` (the leftmost one on ties);
    2. merge it with its *shorter* adjacent run (the left one on ties; the only one at an edge);
    3. the merged run takes the code of the longer of the two parts (the earlier one on ties);
       if that code equals the next run's code, the two re-merge (runs are recomputed from codes).
  Merging with the shorter neighbour (rather than letting long runs absorb everything around
  them) turns a stretch of flickering 1-2 frame runs into a few runs of about ``min_run_frames``
  instead of one very long run, so the pruned sequence spans the segment at roughly
  ``1 / (min_run_frames * frame_seconds)`` tokens/s or less, and stable long runs keep their
  identity and boundaries up to the absorbed fragments. Frames are never dropped: the runs still
  tile the whole segment.

  Args:
    codes: int32 [B, T] frame codes.
    min_run_frames: static int >= 1; 1 returns ``codes`` unchanged.
  Returns:
    int32 [B, T] relabelled codes (a ``lax.while_loop`` per row, at most T - 1 merges).
  """
  _check_codes(codes)
  min_run_frames = _check_min_run(min_run_frames)
  if min_run_frames == 1:
    return codes
  return _prune_batch(codes, min_run_frames)


@functools.partial(jax.jit, static_argnums=1)
def _prune_batch(codes: Array, min_run_frames: int) -> Array:
  return jax.vmap(lambda c: _prune_row(c, min_run_frames))(codes)


def frame_run_centres(codes: Array, frame_seconds: float) -> Array:
  """Frame codes [B, T] -> [B, T] float32 seconds: for every frame, the centre of the run of equal
  codes it lies in, `(first + last + 1) / 2 * frame_seconds` (the time `collapse_runs` gives that
  run's token)."""
  _check_codes(codes)
  b, t = codes.shape
  frames = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))  # [B, T]
  change = codes[:, 1:] != codes[:, :-1]  # [B, T-1]
  starts = jnp.concatenate([jnp.ones((b, 1), bool), change], axis=1)  # [B, T]
  ends = jnp.concatenate([change, jnp.ones((b, 1), bool)], axis=1)  # [B, T]
  first = jax.lax.cummax(jnp.where(starts, frames, 0), axis=1)  # [B, T]
  last = jax.lax.cummin(jnp.where(ends, frames, t - 1), axis=1, reverse=True)  # [B, T]
  return (first + last + 1).astype(jnp.float32) * (0.5 * frame_seconds)


def snap_to_run_centres(times: Array, run_centres: Array, frame_seconds: float) -> Array:
  """Times [B] (seconds) -> [B]: the centre of the run (`frame_run_centres` [B, T]) of the frame
  each time falls in (times before the first frame or after the last take the nearest one)."""
  frame = jnp.floor(times / frame_seconds).astype(jnp.int32)
  frame = jnp.clip(frame, 0, run_centres.shape[1] - 1)  # [B]
  return jnp.take_along_axis(run_centres, frame[:, None], axis=1)[:, 0]


def _runs_after(last_run: Array, num_runs: Array, slots: int) -> Array:
  """[B, slots] bool: the run slots after `last_run` [B] and before `num_runs` [B]."""
  idx = jnp.arange(slots, dtype=jnp.int32)[None, :]  # [1, R]
  return (idx > last_run[:, None]) & (idx < num_runs[:, None])


def align_to_runs(
  token: Array,
  own_time: Array,
  last_run: Array,
  run_tokens: Array,
  run_times: Array,
  num_runs: Array,
  tolerance: float,
) -> tuple[Array, Array]:
  """One decoding step's token placed on the audio's own runs, by content.

  token [B] (the token just chosen), own_time [B] seconds (the decoder's time for it), last_run
  [B] int32 (the run the previous token was placed on; -1 before the first), run_tokens [B, R]
  and run_times [B, R] (the audio's own collapsed runs, `collapse_runs`), num_runs [B] ->
  (time [B], run [B]): the token goes to the run of its own code after `last_run` whose time is
  nearest `own_time`, if one lies within `tolerance` seconds of it, and takes that run's time; a
  token with no such run keeps its own time and is placed after the last run that starts before
  it. The runs only move forward."""
  valid = _runs_after(last_run, num_runs, run_tokens.shape[1])  # [B, R]
  gap = jnp.abs(run_times - own_time[:, None])  # [B, R]
  match = valid & (run_tokens == token[:, None]) & (gap <= tolerance)  # [B, R]
  best = jnp.argmin(jnp.where(match, gap, jnp.inf), axis=1).astype(jnp.int32)  # [B]
  found = jnp.any(match, axis=1)  # [B]
  best_time = jnp.take_along_axis(run_times, best[:, None], axis=1)[:, 0]  # [B]
  passed = jnp.sum(valid & (run_times <= own_time[:, None]), axis=1).astype(jnp.int32)  # [B]
  unmatched_run = last_run + passed  # the last run at or before own_time (or last_run)
  return jnp.where(found, best_time, own_time), jnp.where(found, best, unmatched_run)


def run_token_mask(
  own_time: Array,
  last_run: Array,
  run_tokens: Array,
  run_times: Array,
  num_runs: Array,
  tolerance: float,
  vocab_size: int,
) -> Array:
  """The tokens one decoding step may choose from when it chooses among the audio's own runs.

  own_time [B] seconds (the decoder's time for this step), last_run [B] int32 (the run the
  previous token was placed on; -1 before the first), run_tokens / run_times [B, R] and num_runs
  [B] (as `align_to_runs`) -> allowed [B, vocab_size] bool: the codes of the runs after
  `last_run` within `tolerance` seconds of `own_time` (the tokens `align_to_runs` would place on a
  run); every token where no run is that near (the decoder's own choice, unconstrained). The
  caller adds what is always allowed (EOS)."""
  valid = _runs_after(last_run, num_runs, run_tokens.shape[1])  # [B, R]
  near = valid & (jnp.abs(run_times - own_time[:, None]) <= tolerance)  # [B, R]
  codes = jnp.where(near, run_tokens, vocab_size)  # [B, R]; vocab_size = none
  allowed = jax.vmap(lambda c: jnp.zeros((vocab_size + 1,), bool).at[c].set(True))(codes)
  allowed = allowed[:, :vocab_size]  # [B, V]
  return allowed | ~jnp.any(near, axis=1, keepdims=True)


# The time a collapsed token carries: its run's centre, or its end (the centre of the run's last
# frame, so that the location-aware decoder's frame offsets from it are whole frames: the run's
# last frame at 0, the next run's first frame at +1).
TIME_ANCHORS = ('centre', 'end')


def collapse_runs(
  codes: Array,
  frame_times: Union[float, Array],
  *,
  max_len: int,
  vocab: vocab_lib.Vocab,
  min_run_frames: int = 1,
  time_anchor: str = 'centre',
):
  """Frame codes -> token sequences: one token per run of repeated codes, with run-centre times.

  Runs shorter than ``min_run_frames`` are first merged into a neighbour (:func:`prune_short_runs`).
  A row with more than ``max_len - 1`` runs keeps its first ``max_len - 1`` codes, then EOS
  (counted in ``truncated``); every other row is ``n`` codes, EOS, PAD.

  Args:
    codes: int32 [B, T] frame codes in ``[0, K)``.
    frame_times: either the frame duration in seconds (a Python/numpy scalar; frame ``t`` then
      spans ``[t, t + 1) * frame_seconds``), or frame-centre times in seconds, [T] or [B, T].
    max_len: static L, the token length (at most L - 1 codes + EOS).
    vocab: the vocabulary (EOS/PAD ids).
    min_run_frames: static int >= 1, see :func:`prune_short_runs`.
    time_anchor: static, one of :data:`TIME_ANCHORS`: which time of its run a token carries.
  Returns:
    tokens int32 [B, L], lengths int32 [B] (codes kept), times float32 [B, L] (run centre, or end,
    in seconds at the code positions, 0 at EOS/PAD), truncated bool [B] (runs > L - 1).
    A run's centre is the midpoint of its first and last frame centres, i.e.
    ``(first + last + 1) / 2 * frame_seconds`` for a scalar frame duration; its end is its last
    frame's centre, ``(last + 0.5) * frame_seconds``.
  """
  _check_codes(codes)
  if time_anchor not in TIME_ANCHORS:
    raise ValueError(f'time_anchor must be one of {TIME_ANCHORS}, got {time_anchor!r}')
  if max_len < 1:
    raise ValueError(f'max_len must be >= 1 (room for EOS), got {max_len}')
  b, t = codes.shape
  codes = prune_short_runs(codes.astype(jnp.int32), min_run_frames)
  if jnp.ndim(frame_times) == 0:
    fs = float(frame_times)
    if not fs > 0:
      raise ValueError(f'frame_times as a frame duration must be positive, got {frame_times}')
    centres = jnp.broadcast_to((jnp.arange(t, dtype=jnp.float32) + 0.5) * fs, (b, t))  # [B, T]
  else:
    centres = jnp.asarray(frame_times, jnp.float32)
    if centres.shape not in ((t,), (b, t)):
      raise ValueError(
        f'frame_times must be a scalar frame duration, [T] or [B, T] with T={t}, '
        f'got shape {centres.shape}'
      )
    centres = jnp.broadcast_to(centres, (b, t))
  return _collapse(codes, centres, max_len, vocab.eos, vocab.pad, time_anchor)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _collapse(codes: Array, centres: Array, max_len: int, eos: int, pad: int, time_anchor: str):
  """collapse_runs after pruning: codes [B, T], frame centres [B, T] -> (tokens, n, times,
  truncated)."""
  t = codes.shape[1]
  _, num_runs, _, run_code, run_first, run_last = jax.vmap(_runs)(codes)  # [B], [B, T] x3
  last_centre = jnp.take_along_axis(centres, run_last, axis=1)  # [B, T]
  if time_anchor == 'end':
    run_time = last_centre  # [B, T]
  else:
    run_time = 0.5 * (jnp.take_along_axis(centres, run_first, axis=1) + last_centre)  # [B, T]
  n = jnp.minimum(num_runs, max_len - 1).astype(jnp.int32)  # [B]
  pos = jnp.arange(max_len)  # [L]
  src = jnp.minimum(pos, t - 1)
  is_code = pos[None, :] < n[:, None]  # [B, L]
  tokens = jnp.where(
    is_code, run_code[:, src], jnp.where(pos[None, :] == n[:, None], eos, pad)
  ).astype(jnp.int32)
  times = jnp.where(is_code, run_time[:, src], 0.0).astype(jnp.float32)
  truncated = num_runs > max_len - 1
  return tokens, n, times, truncated


def min_run_frames_for_rate(
  target_rate: float, frame_seconds: float, natural_rate: Optional[float] = None
) -> int:
  """The run-pruning threshold derived from a target token rate (``targets.min_run_frames = -1``).

  Rule: the *largest* integer ``m >= 1`` whose rate cap ``1 / (m * frame_seconds)`` is not below
  ``target_rate``, i.e. ``m = max(1, floor(1 / (target_rate * frame_seconds)))``.
  After :func:`prune_short_runs` every run lasts at least ``m`` frames, so the pruned targets
  can never exceed ``1 / (m * frame_seconds)`` tokens/s; choosing the largest ``m`` that still
  allows the target rate removes as much frame-level flicker as possible without forcing the
  targets *below* the target rate by construction (runs come out between ``m`` and about ``2m``
  frames, so the realized rate lands a little under the cap). The EOS-bias controller trims the
  rest. Example: 12.7 tokens/s at 20 ms frames -> 1 / 0.254 = 3.94 -> m = 3 (cap 16.7 tokens/s).

  If ``natural_rate`` (the measured rate of the unpruned collapsed sequences) is given and is
  already at or below ``target_rate``, no pruning is needed and 1 is returned.
  """
  if not target_rate > 0:
    raise ValueError(f'target_rate must be positive, got {target_rate}')
  if not frame_seconds > 0:
    raise ValueError(f'frame_seconds must be positive, got {frame_seconds}')
  if natural_rate is not None and natural_rate <= target_rate:
    return 1
  frames_per_token = 1.0 / (target_rate * frame_seconds)
  return max(1, int(math.floor(frames_per_token + 1e-9)))


# ----------------------------------------------------------------------------- teacher forcing


def shift_right(tokens: Array, vocab: vocab_lib.Vocab) -> Array:
  """Targets [B, L] -> teacher-forcing inputs [B, L] = [BOS, tokens[:, :-1]]."""
  bos = jnp.full((tokens.shape[0], 1), vocab.bos, tokens.dtype)
  return jnp.concatenate([bos, tokens[:, :-1]], axis=1)


def shift_times(times: Array) -> Array:
  """Token times [B, L] -> the times of the teacher-forcing inputs [B, L]: [0 (BOS), t_1 ..
  t_{L-1}] (what the location-aware decoder is fed with :func:`shift_right`'s inputs)."""
  return jnp.concatenate([jnp.zeros_like(times[:, :1]), times[:, :-1]], axis=1)


def score_mask(tokens: Array, lengths: Array, vocab: vocab_lib.Vocab) -> Array:
  """float32 [B, L]: 1 at the ``n`` code positions and at the EOS (position ``n``) when present."""
  pos = jnp.arange(tokens.shape[1])[None, :]  # [1, L]
  n = lengths[:, None]  # [B, 1]
  mask = (pos < n) | ((pos == n) & (tokens == vocab.eos))
  return mask.astype(jnp.float32)


# ----------------------------------------------------------------------------- scoring


def token_log_probs(logits: Array, targets: Array) -> Array:
  """``log p(targets_t)`` under ``softmax(logits_t)``: logits [B, L, V], targets [B, L] -> [B, L].

  Computed in float32 whatever the logits' dtype.
  """
  if logits.shape[:-1] != targets.shape:
    raise ValueError(
      f'logits {logits.shape} and targets {targets.shape} disagree on [batch, length]'
    )
  return -optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)


def sequence_log_likelihood(logits: Array, targets: Array, mask: Array):
  """Teacher-forced sequence log-likelihood (training's scoring rows and `Tokenizer.score`).

  ``total_b = Σ_t mask_bt log p(y_bt | y_b<t, H_b)`` and ``mean_b = total_b / max(Σ_t mask_bt, 1)``.
  Unscored positions (mask 0) contribute exactly 0 to the value and to the gradient, whatever
  their logits hold.

  Args:
    logits: [B, L, V]; targets: int [B, L]; mask: [B, L] (1 at scored positions, see
      :func:`score_mask`).
  Returns:
    (total [B], mean [B]) float32.
  """
  scored = mask > 0
  # Unscored logits are replaced before the softmax: a NaN/inf there would otherwise reach the
  # gradient as 0 * NaN through the softmax backward.
  logits = jnp.where(scored[..., None], logits, jnp.zeros((), logits.dtype))
  lp = token_log_probs(logits, targets)  # [B, L]
  total = jnp.sum(jnp.where(scored, lp * mask, 0.0), axis=-1)  # [B]
  count = jnp.sum(jnp.where(scored, mask, 0.0), axis=-1).astype(jnp.float32)  # [B]
  return total, total / jnp.maximum(count, 1.0)


def corrupt_inputs(
  rng: Array,
  inputs: Array,
  mask: Array,
  *,
  p: float,
  vocab: vocab_lib.Vocab,
  p_delete: float = 0.0,
  p_duplicate: float = 0.0,
  num_codes: Optional[int] = None,
) -> Array:
  """Prefix corruption (docs/METHOD.md §5.3) of teacher-forcing inputs; targets are never touched.

  Only input positions holding a code and scored (``mask > 0``) are eligible: never the BOS at
  position 0, never EOS/PAD. Position ``t`` of ``inputs`` holds ``y_t`` and predicts ``y_{t+1}``, so
  a corruption must never place ``y_{t+1}`` or a later token at or before position ``t``; every
  operation below is a gather ``inputs'[t] = inputs[src[t]]`` with ``src[t] <= t``:

  * duplication (probability ``p_duplicate`` per eligible position ``j``): ``y_j`` is repeated and
    the rest of the prefix is shifted right by one (the last token falls off the scored part);
  * deletion (probability ``p_delete`` per eligible position ``j >= 2``): ``y_j`` disappears
    from the prefix and its slot repeats the token before it (shifting the suffix left instead
    would show each position its own target);
  * substitution (probability ``p`` per eligible position, applied last): the token is replaced
    by a uniformly random *different* code, so the expected corrupted fraction is exactly ``p``.

  Args:
    rng: PRNG key.
    inputs: int32 [B, L] from :func:`shift_right`.
    mask: [B, L] the targets' :func:`score_mask` (1 at scored positions).
    p, p_delete, p_duplicate: static probabilities in [0, 1].
    num_codes: static; substitutes are drawn from codes ``[0, num_codes)`` (the ids the targets
      actually use, e.g. ``targets.code_groups``); default all K codes.
  Returns:
    int32 [B, L] corrupted inputs (positions that are not eligible are unchanged).
  """
  for name, value in (('p', p), ('p_delete', p_delete), ('p_duplicate', p_duplicate)):
    if not 0.0 <= value <= 1.0:
      raise ValueError(f'corrupt_inputs: {name} must be in [0, 1], got {value}')
  if inputs.shape != mask.shape:
    raise ValueError(f'inputs {inputs.shape} and mask {mask.shape} must have the same shape')
  k = vocab.codebook_size
  b, length = inputs.shape
  pos = jnp.arange(length)[None, :]  # [1, L]
  eligible = (inputs >= 0) & (inputs < k) & (mask > 0) & (pos > 0)  # [B, L]
  k_dup, k_del, k_sub, k_code = jax.random.split(rng, 4)
  out = inputs

  if p_duplicate > 0 or p_delete > 0:
    dup = eligible & jax.random.bernoulli(k_dup, p_duplicate, (b, length))  # repeat y_j at j+1
    dele = eligible & (pos >= 2) & jax.random.bernoulli(k_del, p_delete, (b, length))
    shift = jnp.cumsum(dup, axis=1) - dup.astype(jnp.int32)  # duplications before t
    src = jnp.maximum(pos - shift, 0)  # [B, L], src <= t
    src = jax.lax.cummax(jnp.where(dele, 0, src), axis=1)  # deleted slot repeats its predecessor
    gathered = jnp.take_along_axis(inputs, src, axis=1)
    out = jnp.where(mask > 0, gathered, inputs)

  if p > 0:
    n = k if num_codes is None else int(num_codes)
    if not 2 <= n <= k:
      raise ValueError(f'corrupt_inputs: num_codes must be in [2, {k}], got {num_codes}')
    sub = eligible & jax.random.bernoulli(k_sub, p, (b, length))
    # A uniformly random code different from the current one: current + U{1..n-1} mod n.
    offset = jax.random.randint(k_code, (b, length), 1, n)
    replacement = (jnp.clip(out, 0, n - 1) + offset) % n
    out = jnp.where(sub & (out < k), replacement, out)
  return out.astype(inputs.dtype)


def mix_targets(
  rng: Array,
  vq_tokens: Array,
  vq_lengths: Array,
  vq_times: Array,
  teacher_tokens: Array,
  teacher_lengths: Array,
  teacher_times: Array,
  alpha,
  *,
  fallback_unterminated: bool = True,
):
  """Per-row choice of VQ-derived or teacher targets (the ramp ``alpha(step)``, docs/METHOD.md §3).

  Each row independently takes the teacher's sequence with probability ``alpha`` and the VQ
  sequence otherwise. With ``fallback_unterminated`` a teacher decode that never emitted EOS
  (``teacher_lengths >= L``) is not used as a target (it would teach never stopping): the row keeps
  its VQ sequence. Times are zeroed outside each row's code positions.

  Args:
    vq_*/teacher_*: tokens int32 [B, L], lengths int32 [B], times float32 [B, L].
    alpha: scalar in [0, 1] (may be traced).
  Returns:
    (tokens [B, L], lengths [B], times [B, L]).
  """
  if vq_tokens.shape != teacher_tokens.shape:
    raise ValueError(
      f'vq_tokens {vq_tokens.shape} and teacher_tokens {teacher_tokens.shape} '
      'must have the same shape'
    )
  b, length = vq_tokens.shape
  take = jax.random.uniform(rng, (b,)) < alpha  # [B]
  if fallback_unterminated:
    take = take & (teacher_lengths < length)
  tokens = jnp.where(take[:, None], teacher_tokens, vq_tokens).astype(jnp.int32)
  lengths = jnp.where(take, teacher_lengths, vq_lengths).astype(jnp.int32)
  times = jnp.where(take[:, None], teacher_times, vq_times).astype(jnp.float32)
  times = jnp.where(jnp.arange(length)[None, :] < lengths[:, None], times, 0.0)
  return tokens, lengths, times


# ----------------------------------------------------------------------------- pad / trim, host


def resize(
  tokens: Array, lengths: Array, max_len: int, vocab: vocab_lib.Vocab, *, terminate: bool = True
):
  """Re-pads or trims a sequence batch to a new static length ``max_len``.

  Rows keep ``min(n, max_len - 1)`` codes followed by EOS when ``terminate`` (the target
  convention of :func:`collapse_runs`); with ``terminate=False`` rows keep up to ``max_len``
  codes and only rows that fit get an EOS (the decode convention). Rows that were unterminated
  (``n == L``) stay unterminated when they still have more codes than fit; an unterminated row
  that fits in the longer length gets no EOS either (it did not end).
  Returns (tokens int32 [B, max_len], lengths int32 [B]).
  """
  if max_len < 1:
    raise ValueError(f'max_len must be >= 1, got {max_len}')
  b, length = tokens.shape
  had_eos = (
    jnp.take_along_axis(tokens, jnp.minimum(lengths, length - 1)[:, None], axis=1)[:, 0]
    == vocab.eos
  )
  had_eos = had_eos & (lengths < length)
  if terminate:  # at most max_len - 1 codes; EOS after a row that ended or was cut
    n = jnp.minimum(lengths, max_len - 1).astype(jnp.int32)
    eos_here = had_eos | (lengths > n)
  else:  # up to max_len codes; EOS only after a row that ended and still fits
    n = jnp.minimum(lengths, max_len).astype(jnp.int32)
    eos_here = had_eos & (lengths == n)
  width = max(length, max_len)
  padded = jnp.concatenate(
    [tokens, jnp.full((b, width - length), vocab.pad, tokens.dtype)], axis=1
  )[:, :max_len]
  pos = jnp.arange(max_len)[None, :]
  out = jnp.where(
    pos < n[:, None],
    padded,
    jnp.where((pos == n[:, None]) & eos_here[:, None], vocab.eos, vocab.pad),
  )
  return out.astype(jnp.int32), n


def to_lists(tokens, lengths) -> list[list[int]]:
  """Host side: sequence batch (numpy or jax) -> list of code lists (no BOS/EOS/PAD)."""
  tokens = np.asarray(tokens)
  lengths = np.asarray(lengths)
  if tokens.ndim != 2 or lengths.shape != tokens.shape[:1]:
    raise ValueError(
      f'to_lists expects tokens [B, L] and lengths [B], got {tokens.shape} and {lengths.shape}'
    )
  return [tokens[i, : int(n)].tolist() for i, n in enumerate(lengths)]


def from_lists(seqs: Sequence[Sequence[int]], max_len: int, vocab: vocab_lib.Vocab):
  """Host side: code lists -> (tokens int32 [B, max_len], lengths int32 [B]) numpy.

  A list longer than ``max_len - 1`` codes is truncated to ``max_len - 1`` codes + EOS.
  Raises ValueError naming the row of any entry that is not a code in ``[0, K)``.
  """
  if max_len < 1:
    raise ValueError(f'max_len must be >= 1, got {max_len}')
  tokens = np.full((len(seqs), max_len), vocab.pad, np.int32)
  lengths = np.zeros((len(seqs),), np.int32)
  for i, seq in enumerate(seqs):
    seq = np.asarray(list(seq), np.int64)
    bad = (seq < 0) | (seq >= vocab.codebook_size)
    if bad.any():
      raise ValueError(
        f'from_lists: row {i} holds non-code ids {seq[bad][:5].tolist()} '
        f'(codes are 0..{vocab.codebook_size - 1})'
      )
    n = min(len(seq), max_len - 1)
    tokens[i, :n] = seq[:n]
    tokens[i, n] = vocab.eos
    lengths[i] = n
  return tokens, lengths


# ----------------------------------------------------------------------------- checks


def _check_codes(codes) -> None:
  if jnp.ndim(codes) != 2:
    raise ValueError(f'codes must be [batch, frames], got shape {jnp.shape(codes)}')
  if not jnp.issubdtype(jnp.asarray(codes).dtype, jnp.integer):
    raise ValueError(f'codes must be integers, got dtype {jnp.asarray(codes).dtype}')


def _check_min_run(min_run_frames) -> int:
  if (
    isinstance(min_run_frames, bool) or int(min_run_frames) != min_run_frames or min_run_frames < 1
  ):
    raise ValueError(
      f'min_run_frames must be an int >= 1 (resolve -1 with min_run_frames_for_rate '
      f'first), got {min_run_frames}'
    )
  return int(min_run_frames)
