"""The PairAlign objective of one training stage: runs the model and combines the loss terms.

Stages (docs/METHOD.md §3; every term with its formula: §5):
  0  VQ prior: mel reconstruction + commitment + codebook diversity + cross-view code prediction.
  1  + decoder on VQ-derived targets (the teacher's codes, mapped to code groups when
     `targets.code_groups` > 0): cross-paired teacher forcing with prefix corruption, self rows
     y_v|H_v (where the timing loss is supervised, on one clock), timing recovery (run centres),
     monotonicity, coverage, length head. The location-aware decoder (`model.time_bias_frames`)
     gets each input token's time, mapped onto the condition view's clock for cross rows.
  2  + EMA-teacher targets mixed in by the ramp alpha(step), likelihood contrast,
     anti-bypass margin; the teacher's EOS bias is driven by the length controller (train.py).

Every weight comes from `config.loss`; a term whose weight is 0 is not computed at all (the
Python branch is resolved at trace time), so an ablation does not pay for the ablated term.

All sequence scoring of a step is ONE batched `score` call: the rows are (target, condition)
index pairs into the 2B sequences [y1; y2] and the 2B conditions [H1; H2], whose cross-attention
keys/values are projected once (`PairAlign.condition`) and gathered per row. The likelihood matrix
`S_ij = mean log p(y1_i | H2_j)` therefore needs no per-pair projection and no Python loop.
With `loss.score_chunk_rows = C > 0` and more than C rows, they are scored at most C at a time
(`_score_rows_chunked`: `jax.lax.map` over a `jax.checkpoint`-ed chunk that gathers its own
condition rows), so that the activations of stage 2's ~B^2 rows are never all alive at once.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections

from pairalign_jax import code_groups as code_groups_lib
from pairalign_jax import config_lib
from pairalign_jax import decode
from pairalign_jax import frontend
from pairalign_jax import losses
from pairalign_jax import models
from pairalign_jax import sequences
from pairalign_jax import targets as targets_lib
from pairalign_jax import units as units_lib
from pairalign_jax import vocab as vocab_lib

# Names of every logged term, in a stable order (weights are config.loss.<name>_weight).
TERM_NAMES = (
  'recon',
  'commit',
  'diversity',
  'code_pred',
  'cross_tf',
  'self_tf',
  'antibypass',
  'contrast',
  'length',
  'timing',
  'monotonic',
  'coverage',
)
# `schedule.freeze_encoder` -> the first stage whose steps keep the encoder (3: none does).
FREEZE_ENCODER_FROM_STAGE = {'never': 3, 'stage1': 1, 'stage2': 2}
STAGE_TERMS = {
  0: ('recon', 'commit', 'diversity', 'code_pred'),
  1: (
    'recon',
    'commit',
    'diversity',
    'code_pred',
    'cross_tf',
    'self_tf',
    'length',
    'timing',
    'monotonic',
    'coverage',
  ),
  2: TERM_NAMES,
}
VOICED_THRESHOLD_DB = 30.0  # frames within this many dB of the loudest frame count as voiced


@dataclasses.dataclass(frozen=True)
class ObjectiveSettings:
  """Everything the objective reads from the config (hashable: it is a static jit argument)."""

  weights: tuple[tuple[str, float], ...]
  prefix_corruption: float
  corruption_delete: float
  corruption_duplicate: float
  antibypass_margin: float
  contrast_temperature: float
  contrast_negatives: int
  max_gap_seconds: float
  max_len: int
  codebook_size: int
  min_run_frames: int
  frame_seconds: float  # encoder frame (after subsampling)
  mel_frame_seconds: float  # front-end hop
  specaugment: bool
  freeze_codebook_after_stage0: bool
  code_groups: int  # 0: targets are codes; G > 0: codes mapped to G groups (code_groups.py)
  time_anchor: str  # target token times: run 'centre' or 'end' (targets.TargetSettings)
  time_jitter_seconds: float  # std of the noise on the location-aware decoder's input times
  own_time_prob: float  # share of rows whose input times are the decoder's own (below)
  own_time_passes: int  # forward passes that produce those times (1 = one step of drift)
  # False: the sequence terms (stages 1-2) reach the decoder and the length head only; the encoder
  # keeps learning from the stage-0 terms alone, so the VQ codes (the targets) stay what they were.
  sequence_losses_train_encoder: bool
  code_pred_after_stage0: bool  # False: the code prediction is a stage-0 term only
  # 'vq' (the other view's VQ codes) or 'units' (its acoustic units, pairalign_jax/units.py)
  code_pred_targets: str
  unit_coeffs: int
  # From this stage on the stage-0 terms are off (train.py also keeps the encoder's parameters);
  # 3 (no such stage): never (`schedule.freeze_encoder`).
  freeze_encoder_from_stage: int
  # The teacher's length controller (stage 2; docs/METHOD.md §7): target tokens per segment
  # (length.target_rate x segment seconds), gain, bias limit, minimum termination rate.
  segment_seconds: float
  length_target_tokens: float
  controller_gain: float
  eos_bias_limit: float
  min_termination: float
  controller_decode_rows: int  # 0: decode every row; N: N evenly strided rows (max_alpha = 0)
  # False when nothing reads the stage-2 teacher decodes (schedule.max_alpha = 0 and
  # length.controller_gain = 0): stage 2 then skips them and keeps the EOS bias as it is.
  teacher_decodes: bool
  score_chunk_rows: int  # 0: every scored row in one decoder call; C > 0: C rows at a time

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'ObjectiveSettings':
    weights = tuple((name, float(config.loss[f'{name}_weight'])) for name in TERM_NAMES)
    target_settings = targets_lib.TargetSettings.from_config(config)
    return cls(
      weights=weights,
      prefix_corruption=float(config.loss.prefix_corruption),
      corruption_delete=float(config.loss.corruption_delete),
      corruption_duplicate=float(config.loss.corruption_duplicate),
      antibypass_margin=float(config.loss.antibypass_margin),
      contrast_temperature=float(config.loss.contrast_temperature),
      contrast_negatives=int(config.loss.contrast_negatives),
      max_gap_seconds=float(config.loss.max_gap_seconds),
      max_len=target_settings.max_len,
      codebook_size=target_settings.codebook_size,
      min_run_frames=target_settings.min_run_frames,
      frame_seconds=target_settings.frame_seconds,
      mel_frame_seconds=config_lib.mel_frame_seconds(config),
      specaugment=bool(config.frontend.specaugment.enabled),
      freeze_codebook_after_stage0=bool(config.vq.freeze_after_stage0),
      code_groups=target_settings.code_groups,
      time_anchor=target_settings.time_anchor,
      time_jitter_seconds=float(config.loss.time_jitter_seconds),
      own_time_prob=float(config.loss.own_time_prob),
      own_time_passes=int(config.loss.own_time_passes),
      sequence_losses_train_encoder=bool(config.loss.sequence_losses_train_encoder),
      code_pred_after_stage0=bool(config.loss.code_pred_after_stage0),
      code_pred_targets=str(config.loss.get('code_pred_targets', 'vq')),
      unit_coeffs=int(config.loss.get('unit_coeffs', 13)),
      freeze_encoder_from_stage=FREEZE_ENCODER_FROM_STAGE[config.schedule.freeze_encoder],
      segment_seconds=float(config.audio.segment_seconds),
      length_target_tokens=float(config.length.target_rate * config.audio.segment_seconds),
      controller_gain=float(config.length.controller_gain),
      eos_bias_limit=float(config.length.bias_limit),
      min_termination=float(config.length.min_termination),
      controller_decode_rows=int(config.length.controller_decode_rows),
      teacher_decodes=bool(config.schedule.max_alpha > 0 or config.length.controller_gain > 0),
      score_chunk_rows=int(config.loss.score_chunk_rows),
    )

  @property
  def targets(self) -> targets_lib.TargetSettings:
    """The settings of the VQ-derived targets (`targets.py`)."""
    return targets_lib.TargetSettings(
      codebook_size=self.codebook_size,
      max_len=self.max_len,
      frame_seconds=self.frame_seconds,
      min_run_frames=self.min_run_frames,
      code_groups=self.code_groups,
      time_anchor=self.time_anchor,
    )

  def encoder_frozen(self, stage: int) -> bool:
    """Whether the encoder, VQ and stage-0 heads keep their values through `stage`'s steps."""
    return stage >= self.freeze_encoder_from_stage

  def weight(self, name: str) -> float:
    return dict(self.weights)[name]

  def stage_weights(self, stage: int) -> dict[str, float]:
    active = STAGE_TERMS[stage]
    if self.encoder_frozen(stage):
      active = tuple(name for name in active if name not in STAGE_TERMS[0])
    if stage >= 1 and not self.code_pred_after_stage0:
      active = tuple(name for name in active if name != 'code_pred')
    return {name: (w if name in active else 0.0) for name, w in self.weights}


def teacher_targets(
  model: models.PairAlign,
  teacher_vars: dict,
  mel_clean: jax.Array,
  settings: ObjectiveSettings,
  *,
  stage: int,
  eos_bias: jax.Array,
  alpha: jax.Array,
  rng: jax.Array,
) -> tuple[targets_lib.Targets, jax.Array, dict[str, jax.Array]]:
  """The sequence targets of stages 1-2 for both views, from the EMA teacher (stop-gradient).

  mel_clean [2B, F, M] -> (targets (tokens [2B, L], lengths [2B], times [2B, L]), the next EOS
  bias [], metrics). Stage 1: the teacher's VQ-derived strings (`targets.vq_targets`). Stage 2
  also decodes greedily with the teacher at `eos_bias`, mixes a share `alpha` of those decodes
  into the targets (`sequences.mix_targets`), and moves the EOS bias toward the target length
  by the length controller (`losses.eos_bias_update`, on the decodes that terminated). With
  `settings.controller_decode_rows = N > 0` (only when alpha is always 0) only N evenly strided
  rows are decoded, for the controller alone; the targets are then the VQ-derived strings.

  Targets come from the teacher, never from the student's own codes: the student's encoder moves
  every step and its codes with it, and a decoder chasing its own moving codes does not learn
  (measured: cross_tf stayed at chance even on one fixed batch).
  """
  h_t = model.apply(teacher_vars, mel_clean, train=False, method=models.PairAlign.encode)
  vq_t = model.apply(teacher_vars, h_t, train=False, method=models.PairAlign.quantize)
  vq = targets_lib.vq_targets(vq_t.codes, settings.targets, teacher_vars['vq_stats'])
  if stage < 2 or not settings.teacher_decodes:
    targets = targets_lib.Targets(
      tokens=jax.lax.stop_gradient(vq.tokens),
      lengths=vq.lengths,
      times=jax.lax.stop_gradient(vq.times),
    )
    return targets, eos_bias, {}

  rows = settings.controller_decode_rows
  if rows:  # only the controller reads the decodes (schedule.max_alpha = 0): a strided subset
    h_t = h_t[:: h_t.shape[0] // rows][:rows]  # [rows, T, d]
  dec = decode.greedy_decode(model, teacher_vars, h_t, max_len=settings.max_len, eos_bias=eos_bias)
  if rows:
    tokens, lengths, times = vq.tokens, vq.lengths, vq.times
  else:
    tokens, lengths, times = sequences.mix_targets(
      rng, vq.tokens, vq.lengths, vq.times, dec.tokens, dec.lengths, dec.times, alpha
    )
  targets = targets_lib.Targets(
    tokens=jax.lax.stop_gradient(tokens), lengths=lengths, times=jax.lax.stop_gradient(times)
  )
  mean_len = jnp.mean(dec.lengths.astype(jnp.float32))
  terminated = dec.terminated.astype(jnp.float32)
  termination_rate = jnp.mean(terminated)
  # Length of the decodes that ended with EOS (all of them if none did: the rate floor acts then).
  mean_terminated_len = jnp.where(
    termination_rate > 0,
    jnp.sum(dec.lengths * terminated) / jnp.maximum(jnp.sum(terminated), 1.0),
    mean_len,
  )
  new_eos_bias = losses.eos_bias_update(
    eos_bias,
    mean_terminated_len,
    settings.length_target_tokens,
    settings.controller_gain,
    settings.eos_bias_limit,
    termination_rate,
    settings.min_termination,
  )
  metrics = {
    'teacher/tokens_per_second': mean_len / settings.segment_seconds,
    'teacher/termination_rate': termination_rate,
    'teacher/alpha': alpha,
  }
  return targets, new_eos_bias, metrics


def view_features(waves, fcfg, rng, *, train: bool, specaugment: bool):
  """Waveforms [N, S] -> (model input mel [N, F, M], clean normalized mel [N, F, M], energy [N, F]).

  In training with `fcfg.vtlp`, every row is first warped by its own vocal-tract-length factor
  (`frontend.vtlp_warp`): the two views of a pair then differ as two speakers' formants do, and
  everything downstream (the teacher's targets included) sees the warped view. "clean" means
  without SpecAugment.
  """
  alpha = None
  if train and fcfg.vtlp:
    rng, warp_rng = jax.random.split(rng)
    alpha = frontend.sample_vtlp_alpha(warp_rng, waves.shape[0], fcfg)  # [N]
  raw = frontend.warped_log_mel(waves, fcfg, alpha)  # [N, F, M]
  clean = frontend.normalize(raw)  # [N, F, M]
  energy = jnp.mean(raw, axis=-1)  # [N, F] log-mel energy
  mel_in = clean
  if train and specaugment:
    mel_in = frontend.spec_augment(rng, clean, fcfg)
  return mel_in, clean, energy


def _gather(tree, idx):
  return jax.tree.map(lambda a: jnp.take(a, idx, axis=0), tree)


def _row_pairs(b: int, stage: int, settings: ObjectiveSettings, rng):
  """(target index, condition index) arrays into [y1; y2] x [H1; H2] and where each block lives.

  Blocks: 'pos12' y1_i|H2_i, 'pos21' y2_i|H1_i, optionally 'self' y_v|H_v, 'other12'/'other21'
  (rolled condition, anti-bypass) and 'neg' (contrast: y1_i under H2_j for all j, or k sampled j).
  """
  ar = jnp.arange(b)
  blocks = {}
  tgt, cnd = [], []

  def add(name, t, c):
    start = sum(x.shape[0] for x in tgt)
    tgt.append(t)
    cnd.append(c)
    blocks[name] = (start, t.shape[0])

  use_contrast = stage == 2 and settings.weight('contrast') > 0
  use_antibypass = stage == 2 and settings.weight('antibypass') > 0
  add('pos12', ar, b + ar)
  add('pos21', b + ar, ar)
  if settings.weight('self_tf') > 0:
    add('self', jnp.arange(2 * b), jnp.arange(2 * b))
  if use_antibypass:
    rolled = jnp.roll(ar, 1)
    add('other12', ar, b + rolled)
    add('other21', b + ar, rolled)
  if use_contrast:
    k = settings.contrast_negatives
    if k == 0:  # every in-batch condition (the diagonal duplicates pos12; kept for a clean matrix)
      add('neg', jnp.repeat(ar, b), b + jnp.tile(ar, b))
    else:  # k negatives per row, sampled without the positive
      offs = jax.vmap(lambda r: jax.random.choice(r, b - 1, (k,), replace=False))(
        jax.random.split(rng, b)
      )
      neg = (ar[:, None] + 1 + offs) % b  # [B, k], never == i
      add('neg', jnp.repeat(ar, k), b + neg.reshape(-1))
  return jnp.concatenate(tgt), jnp.concatenate(cnd), blocks


def _times_on_condition_clock(
  times, tgt_idx, cnd_idx, voiced_start, voiced_end, settings: ObjectiveSettings
):
  """Target token times [R, L] (on the target view's clock) -> on the condition view's clock.

  The location-aware decoder is told where each input token is in *its condition's* audio. For a
  self row that is the target time itself; for a cross row (another augmentation, time shift,
  speed, or another speaker) the exact correspondence is unknown, so the time is mapped linearly
  from the target view's voiced region onto the condition view's voiced region (this absorbs
  shifts, speed changes and a speaker's overall rate). The mapping is the identity when the
  target and condition view are the same. voiced_start, voiced_end: [2B] seconds
  (`losses.voiced_region` of the views). Returns [R, L] seconds (stop-gradient).
  """
  ts, te = jnp.take(voiced_start, tgt_idx)[:, None], jnp.take(voiced_end, tgt_idx)[:, None]  # [R,1]
  cs, ce = jnp.take(voiced_start, cnd_idx)[:, None], jnp.take(voiced_end, cnd_idx)[:, None]
  scale = (ce - cs) / jnp.maximum(te - ts, settings.frame_seconds)
  mapped = cs + (times - ts) * scale
  mapped = jnp.where((tgt_idx == cnd_idx)[:, None], times, mapped)
  return jax.lax.stop_gradient(jnp.where(times > 0, mapped, 0.0))


def _own_time_passes(model, variables, row_cond, inputs, true_input_times, passes: int):
  """The decoder's own input times [R, L] after `passes` stop-gradient forward passes (no dropout),
  each fed the previous pass's output times; PAD/BOS (true time 0) stay at 0."""
  times_in = true_input_times
  for _ in range(passes):
    _, own = model.apply(
      variables, row_cond, inputs, train=False, input_times=times_in, method=models.PairAlign.score
    )  # [R, L]
    own = jnp.where(true_input_times > 0, sequences.shift_times(own), 0.0)  # PAD/BOS stay at 0
    # The next pass reads these times, so each pass adds one more step of drift.
    times_in = jax.lax.stop_gradient(own)
  return times_in


def own_time_rows(rng, rows: int, prob: float) -> jax.Array:
  """The rows that train on the decoder's own input times: n = round(prob * rows) distinct rows
  (at least one when prob > 0), drawn uniformly without replacement, sorted. [n] int32.

  A fixed count rather than a coin per row, so that the stop-gradient passes that produce the own
  times run on those n rows only (their shapes are static), not on all rows and then discarded.
  """
  n = 0 if prob <= 0 else min(rows, max(1, int(round(prob * rows))))
  return jnp.sort(jax.random.permutation(rng, rows)[:n]).astype(jnp.int32)


def own_input_times(
  model, variables, row_cond, inputs, true_input_times, rng, settings: ObjectiveSettings
):
  """Input times [R, L] where a share of rows carry the decoder's *own* times (exposure bias).

  Teacher forcing tells the location-aware decoder where the previous token truly was; greedy
  decoding tells it where the decoder itself put it, and the error compounds (measured: token-time
  error 0.04 s with true times, 0.34 s with its own). Here the decoder is run forward
  (stop-gradient, no dropout) `own_time_passes` times, each pass fed the previous pass's output
  times, and `own_time_rows` of them (a random `own_time_prob` share) are then trained on those
  times, so that the decoder learns to find the next token from where it actually is rather than
  from an exact anchor. The passes run on those rows only.
  row_cond: the condition gathered to the rows (`models.gather_condition`); inputs: [R, L]
  (already corrupted); true_input_times: [R, L] (shifted). Returns [R, L] seconds.
  With `settings.score_chunk_rows > 0` the objective calls `_own_input_times_chunked` instead.
  """
  idx = own_time_rows(rng, true_input_times.shape[0], settings.own_time_prob)  # [n]
  if idx.shape[0] == 0:
    return true_input_times
  own = _own_time_passes(
    model,
    variables,
    models.gather_condition(row_cond, idx),
    jnp.take(inputs, idx, axis=0),
    jnp.take(true_input_times, idx, axis=0),
    settings.own_time_passes,
  )  # [n, L]
  return true_input_times.at[idx].set(own)


def _map_row_chunks(fn, xs, chunk_rows: int):
  """`fn` over the rows of `xs` (a pytree of [R, ...] arrays), at most `chunk_rows` rows per call.

  The R rows go to N = ceil(R / chunk_rows) calls of C = ceil(R / N) <= chunk_rows rows each (as
  many calls as `chunk_rows` needs, evened out, so that fewer than N rows are padding: 1 216 rows
  in chunks of at most 128 are 10 calls of 122). R is padded up to N * C rows (the padded rows
  repeat row R - 1; their outputs are dropped, so they get no cotangent) and the calls run one
  after another (`jax.lax.map`). fn: (chunk index [] int32, xs chunk [C, ...]) -> pytree of
  [C, ...]. Returns fn's outputs over all rows, each [R, ...].
  """
  rows = jax.tree.leaves(xs)[0].shape[0]
  num = -(-rows // chunk_rows)  # ceil
  chunk = -(-rows // num)
  pad_idx = jnp.minimum(jnp.arange(num * chunk), rows - 1)  # [num * C]

  def split(x):  # [R, ...] -> [num, C, ...]
    if num * chunk != rows:
      x = jnp.take(x, pad_idx, axis=0)
    return x.reshape((num, chunk) + x.shape[1:])

  out = jax.lax.map(lambda a: fn(*a), (jnp.arange(num), jax.tree.map(split, xs)))
  return jax.tree.map(lambda y: y.reshape((num * chunk,) + y.shape[2:])[:rows], out)


def _own_input_times_chunked(
  model, variables, cond, cnd_idx, inputs, true_input_times, rng, settings: ObjectiveSettings
):
  """`own_input_times` with the passes run on at most `settings.score_chunk_rows` rows at once.

  Each row's passes read only that row, so a chunk runs all `own_time_passes` passes on its rows
  and gathers its own condition rows from `cond` ({'k','v': [layers, 2B, heads, T, head_dim]})
  by `cnd_idx` [R]; the rows that use their own times are the unchunked path's (`own_time_rows`,
  same key), so the values equal `own_input_times`'. The passes are stop-gradient: their inputs
  are cut from the gradient before the map (no tangent of the map is formed, nothing is saved for
  the backward pass, and no `jax.checkpoint` is needed). Returns [R, L] seconds.
  """
  frozen = jax.lax.stop_gradient(variables)
  cond = jax.lax.stop_gradient(cond)

  def passes(_, chunk):
    idx, chunk_inputs, chunk_times = chunk  # [C], [C, L], [C, L]
    return _own_time_passes(
      model,
      frozen,
      models.gather_condition(cond, idx),
      chunk_inputs,
      chunk_times,
      settings.own_time_passes,
    )  # [C, L]

  idx = own_time_rows(rng, true_input_times.shape[0], settings.own_time_prob)  # [n]
  if idx.shape[0] == 0:
    return true_input_times
  rows = tuple(jnp.take(x, idx, axis=0) for x in (cnd_idx, inputs, true_input_times))
  own = _map_row_chunks(passes, rows, settings.score_chunk_rows)  # [n, L]
  return true_input_times.at[idx].set(own)


def _score_call(
  model, variables, row_cond, inputs, input_times, target_times, dropout_rng, *, train
):
  """One teacher-forced decoder call over rows -> (logits [R, L, V], times [R, L], the pointer time
  head's cross entropy [R, L], or None without target_times)."""
  kwargs = dict(train=train, input_times=input_times, rngs={'dropout': dropout_rng})
  if target_times is None:
    logits, times = model.apply(
      variables, row_cond, inputs, method=models.PairAlign.score, **kwargs
    )
    return logits, times, None
  return model.apply(
    variables,
    row_cond,
    inputs,
    target_times=target_times,
    method=models.PairAlign.score_with_time_nll,
    **kwargs,
  )


def _score_rows_chunked(
  model,
  variables,
  cond,
  cnd_idx,
  inputs,
  tokens,
  mask,
  input_times,
  dropout_rng,
  *,
  train,
  chunk,
  target_times=None,
):
  """Teacher-forced scores of R rows, at most `chunk` rows per decoder call (`_map_row_chunks`)
  -> (mean log-likelihood [R], token times [R, L], time cross entropy): the values of one
  `PairAlign.score` call over
  all rows followed by `sequences.sequence_log_likelihood`.

  Each chunk gathers its own condition rows from `cond` ({'k','v': [layers, 2B, heads, T,
  head_dim]}) by `cnd_idx` [R], so the gathered [layers, R, heads, T, head_dim] condition is never
  formed whole, and returns only the per-row mean log-likelihood [C] and token times [C, L] (the
  logits [C, L, V] stay inside the chunk). The chunk is a `jax.checkpoint`: the backward pass
  recomputes its forward pass from (params, cond, the chunk's rows) instead of keeping every
  chunk's activations, so the memory of the scoring is that of one chunk (the price: one more
  forward pass of the scoring rows). inputs, tokens, mask, input_times: [R, L] (input_times None
  without the location-aware decoder).

  Dropout: chunk i draws from `fold_in(dropout_rng, i)`, so with dropout > 0 the random masks
  differ from the unchunked call's (same distribution); with dropout 0 the values are equal.
  target_times [R, L] (the pointer time head, `PairAlign.score_with_time_nll`) or None: the time
  cross entropy [R, L] returned third, or None.
  """

  @functools.partial(jax.checkpoint, prevent_cse=False)  # inside a scan: no CSE to prevent
  def score_chunk(variables, cond, dropout_rng, i, rows):
    # [C], [C, L] x 5 (input and target times may be None: empty pytrees, mapped over as such)
    idx, chunk_inputs, chunk_tokens, chunk_mask, chunk_times, chunk_targets = rows
    logits, times, time_nll = _score_call(
      model,
      variables,
      models.gather_condition(cond, idx),
      chunk_inputs,
      chunk_times,
      chunk_targets,
      jax.random.fold_in(dropout_rng, i),
      train=train,
    )  # [C, L, V], [C, L], [C, L] or None
    _, mean_ll = sequences.sequence_log_likelihood(logits, chunk_tokens, chunk_mask)  # [C]
    return mean_ll, times, time_nll

  return _map_row_chunks(
    lambda i, rows: score_chunk(variables, cond, dropout_rng, i, rows),
    (cnd_idx, inputs, tokens, mask, input_times, target_times),
    chunk,
  )


def _block(x, blocks, name):
  start, size = blocks[name]
  return jax.lax.dynamic_slice_in_dim(x, start, size, axis=0)


def compute_terms(
  model: models.PairAlign,
  params,
  vq_stats,
  batch_mels: dict[str, Any],
  targets_override: Optional[targets_lib.Targets],
  rngs: dict[str, jax.Array],
  *,
  stage: int,
  settings: ObjectiveSettings,
  train: bool = True,
):
  """Runs the model for one stage and returns (terms dict, aux dict).

  Args:
    batch_mels: {'mel_in': [2B, F, M] (views stacked [v1; v2], possibly SpecAugmented),
                 'mel_clean': [2B, F, M], 'energy': [2B, F]}.
    targets_override: stage-2 targets (already mixed VQ/teacher), or None to use VQ targets.
    rngs: 'dropout', 'vq', 'corrupt', 'negatives'; 'jitter' when settings.time_jitter_seconds > 0,
      'own_times' when settings.own_time_prob > 0 (training only).
  Returns:
    terms: every name in TERM_NAMES that is active and weighted (scalars).
    aux: 'vq_stats' (updated), 'codes' [2B, T], 'targets' (Targets), 'perplexity', ...
  """
  weights = settings.stage_weights(stage)
  variables = {'params': params, 'vq_stats': vq_stats}
  mel_in = batch_mels['mel_in']
  two_b = mel_in.shape[0]
  b = two_b // 2
  terms, aux = {}, {}

  h = model.apply(
    variables,
    mel_in,
    train=train,
    method=models.PairAlign.encode,
    rngs={'dropout': rngs['dropout']},
  )  # [2B, T, d]
  # The codebook (EMA statistics, dead-code re-seeding) is updated in stage 0 only when
  # `freeze_codebook_after_stage0`: stable code identities give the decoder stable targets.
  update_codebook = train and (stage == 0 or not settings.freeze_codebook_after_stage0)
  vq_out, mutated = model.apply(
    variables,
    h,
    train=update_codebook,
    method=models.PairAlign.quantize,
    mutable=['vq_stats'],
    rngs={'vq': rngs['vq']},
  )
  aux['vq_stats'] = mutated['vq_stats']
  aux['codes'] = vq_out.codes  # [2B, T]
  aux['perplexity'] = vq_out.perplexity
  aux['reseeded'] = vq_out.reseeded

  if weights['recon'] > 0:
    mel_hat = model.apply(
      variables,
      vq_out.quantized,
      batch_mels['mel_clean'].shape[1],
      method=models.PairAlign.reconstruct,
    )  # [2B, F, M]
    terms['recon'] = losses.vq_recon_loss(mel_hat, batch_mels['mel_clean'])
  if weights['commit'] > 0:
    terms['commit'] = vq_out.commit_loss
  if weights['diversity'] > 0:
    terms['diversity'] = vq_out.diversity_loss
  if weights['code_pred'] > 0:
    logits = model.apply(variables, h, method=models.PairAlign.predict_codes)  # [2B, T, K]
    labels = vq_out.codes  # [2B, T]
    if settings.code_pred_targets == 'units':  # unit ids < K: the first logits predict them
      centroids = code_groups_lib.vq_stats_leaf(vq_stats, units_lib.UNIT_CENTROIDS)  # [C, D]
      feats = units_lib.unit_features(
        batch_mels['mel_clean'], mel_in.shape[1] // h.shape[1], settings.unit_coeffs
      )  # [2B, T', D]
      labels = units_lib.assign_units(feats[:, : h.shape[1]], centroids)
    swapped = jnp.concatenate([labels[b:], labels[:b]], axis=0)  # view v predicts the other's
    terms['code_pred'] = losses.code_prediction_loss(logits, jax.lax.stop_gradient(swapped))
  if stage == 0:
    return terms, aux

  targets = (
    targets_override
    if targets_override is not None
    else targets_lib.vq_targets(vq_out.codes, settings.targets, aux['vq_stats'])
  )
  aux['targets'] = targets
  vocab = vocab_lib.Vocab(settings.codebook_size)
  if not settings.sequence_losses_train_encoder or settings.encoder_frozen(stage):
    h = jax.lax.stop_gradient(h)  # [2B, T, d]: what the sequence terms below read

  if weights['length'] > 0:
    pred_len = model.apply(variables, h, method=models.PairAlign.predict_length)  # [2B]
    terms['length'] = losses.length_loss(pred_len, targets.lengths)

  cond = model.apply(variables, h, method=models.PairAlign.condition)
  tgt_idx, cnd_idx, blocks = _row_pairs(b, stage, settings, rngs['negatives'])
  tokens = jnp.take(targets.tokens, tgt_idx, axis=0)  # [R, L]
  lengths = jnp.take(targets.lengths, tgt_idx, axis=0)  # [R]
  mask = sequences.score_mask(tokens, lengths, vocab)  # [R, L]
  inputs = sequences.shift_right(tokens, vocab)  # [R, L]
  if (
    settings.prefix_corruption > 0
    or settings.corruption_delete > 0
    or settings.corruption_duplicate > 0
  ):
    inputs = sequences.corrupt_inputs(
      rngs['corrupt'],
      inputs,
      mask,
      p=settings.prefix_corruption,
      vocab=vocab,
      p_delete=settings.corruption_delete,
      p_duplicate=settings.corruption_duplicate,
      num_codes=settings.code_groups or None,
    )
  # Voiced region of every view [2B] (seconds): bounds the coverage term, maps input times.
  voiced_start, voiced_end = losses.voiced_region(
    batch_mels['energy'], settings.mel_frame_seconds, VOICED_THRESHOLD_DB
  )
  # 0: every row in one call; C > 0: at most C rows per call. R <= C rows are one call either way,
  # and then the one-call scoring runs (it needs no recomputation in the backward pass).
  chunk = settings.score_chunk_rows if settings.score_chunk_rows < tgt_idx.shape[0] else 0
  row_cond = models.gather_condition(cond, cnd_idx) if not chunk else None
  input_times = None
  pointer = model.cfg.time_head == 'pointer'
  target_row_times = None  # [R, L]: what the pointer time head's cross entropy is taken against
  if model.cfg.time_bias_frames > 0:
    row_times = _times_on_condition_clock(
      jnp.take(targets.times, tgt_idx, axis=0), tgt_idx, cnd_idx, voiced_start, voiced_end, settings
    )  # [R, L]
    if pointer:
      target_row_times = row_times
    if train and settings.time_jitter_seconds > 0:
      # In decoding the input times are the decoder's own (imperfect) times: train it to find the
      # next token from an approximate anchor rather than trusting an exact one (exposure bias).
      noise = settings.time_jitter_seconds * jax.random.normal(rngs['jitter'], row_times.shape)
      row_times = jnp.where(row_times > 0, jnp.maximum(row_times + noise, 0.0), 0.0)
    input_times = sequences.shift_times(row_times)
    if train and settings.own_time_prob > 0 and chunk:
      input_times = _own_input_times_chunked(
        model, variables, cond, cnd_idx, inputs, input_times, rngs['own_times'], settings
      )
    elif train and settings.own_time_prob > 0:
      input_times = own_input_times(
        model, variables, row_cond, inputs, input_times, rngs['own_times'], settings
      )
  if chunk:
    mean_ll, times, time_nll = _score_rows_chunked(
      model,
      variables,
      cond,
      cnd_idx,
      inputs,
      tokens,
      mask,
      input_times,
      rngs['dropout'],
      train=train,
      chunk=chunk,
      target_times=target_row_times,
    )  # [R], [R, L], the pointer time head's cross entropy [R, L] or None
  else:
    logits, times, time_nll = _score_call(
      model,
      variables,
      row_cond,
      inputs,
      input_times,
      target_row_times,
      rngs['dropout'],
      train=train,
    )
    _, mean_ll = sequences.sequence_log_likelihood(logits, tokens, mask)  # [R]

  pos12 = _block(mean_ll, blocks, 'pos12')
  pos21 = _block(mean_ll, blocks, 'pos21')
  if weights['cross_tf'] > 0:
    terms['cross_tf'] = losses.cross_teacher_forcing(pos12, pos21)
  if weights['self_tf'] > 0:
    self_ll = _block(mean_ll, blocks, 'self')
    terms['self_tf'] = -jnp.mean(self_ll)
  if weights['antibypass'] > 0 and 'other12' in blocks:
    terms['antibypass'] = 0.5 * (
      losses.antibypass(pos12, _block(mean_ll, blocks, 'other12'), settings.antibypass_margin)
      + losses.antibypass(pos21, _block(mean_ll, blocks, 'other21'), settings.antibypass_margin)
    )
  if weights['contrast'] > 0 and 'neg' in blocks:
    neg = _block(mean_ll, blocks, 'neg')
    if settings.contrast_negatives == 0:
      terms['contrast'] = losses.info_nce(neg.reshape(b, b), settings.contrast_temperature)
    else:
      terms['contrast'] = losses.info_nce_sampled(
        pos12, neg.reshape(b, settings.contrast_negatives), settings.contrast_temperature
      )

  # Timing recovery, each target once. With the self rows (y_v|H_v) present the times are
  # supervised there: the condition is the target's own view, so target times and attention share
  # one clock. Otherwise on the cross rows y1|H2, y2|H1, whose target times are on the *other*
  # view's clock (exact only for time-aligned views; docs/METHOD.md §11).
  def timing_rows(x):  # [R, ...] -> the rows the times are supervised on [2B, ...]
    if 'self' in blocks:
      return _block(x, blocks, 'self')
    return jnp.concatenate([_block(x, blocks, 'pos12'), _block(x, blocks, 'pos21')])

  pos_times = timing_rows(times)  # [2B, L]
  if 'self' in blocks:
    pos_lengths = _block(lengths, blocks, 'self')
    cond_view = jnp.arange(2 * b)  # condition of row r
  else:
    pos_lengths = jnp.concatenate(
      [_block(lengths, blocks, 'pos12'), _block(lengths, blocks, 'pos21')]
    )
    cond_view = jnp.concatenate([jnp.arange(b, 2 * b), jnp.arange(b)])
  code_mask = (jnp.arange(settings.max_len)[None, :] < pos_lengths[:, None]).astype(
    jnp.float32
  )  # codes only
  aux['mean_target_length'] = jnp.mean(targets.lengths.astype(jnp.float32))
  # Targets that fill all L - 1 code slots: collapse_runs cuts a longer string there.
  aux['target_at_max_len'] = jnp.mean((targets.lengths >= settings.max_len - 1).astype(jnp.float32))
  if weights['timing'] > 0 and pointer:
    # The pointer time head: cross entropy of each code token's frame (nats per token).
    terms['timing'] = jnp.sum(timing_rows(time_nll) * code_mask) / jnp.maximum(
      jnp.sum(code_mask), 1.0
    )
  elif weights['timing'] > 0:
    terms['timing'] = losses.timing_loss(pos_times, targets.times, code_mask)
  if weights['monotonic'] > 0:
    terms['monotonic'] = losses.monotonic_penalty(pos_times, code_mask)
  if weights['coverage'] > 0:
    # The voiced region of each row's condition view bounds its times.
    cond_start, cond_end = jnp.take(voiced_start, cond_view), jnp.take(voiced_end, cond_view)
    terms['coverage'] = losses.coverage_loss(
      pos_times, code_mask, cond_start, cond_end, settings.max_gap_seconds
    )
  return terms, aux
