"""Can a config's decoder write the targets of an encoder output that holds them exactly?

  python -m pairalign_jax.decoder_capacity --config=configs/small_corpus.py \
      [--steps=400] [--noise=0.5] [--input_time_jitter=0.0] [--prefix_corruption=0.0] \
      [--own_time_prob=0.0] [--codes_per_group=1] [--align_frames=2] [--out=cap.json]

`evaluation.decoder_fit` reads how well a trained decoder writes its code-group targets from the
audio's H; on speech that mixes what the decoder can learn with how much of its targets H holds
(the encoder that made them may have moved on, the views differ). This tool takes H out: it trains
the config's decoder alone (fresh parameters, the config's optimizer) on synthetic frame labels
whose collapsed runs *are* the targets, so a perfect decoder exists by construction.

* Frame labels: runs of `targets.code_groups` labels (neighbours differ) with lengths drawn from
  `--run_length_probs` (encoder frames; the default is the share of run lengths of the stage-1
  targets on the synthetic validation speech: half of them 2-3 frames), tiling the segment's
  encoder frames.
* H [B, T, d]: each frame is a fixed random vector of its label (or of one of
  `--codes_per_group` vectors per label, drawn per frame: a code-group string reads many codes
  as one group) plus Gaussian noise of standard deviation `--noise` (the vectors have unit
  variance per dimension).
* Targets: the labels' runs collapsed (`sequences.collapse_runs`, run-centre times; a run cut short
  by the segment's end is first merged as `targets.min_run_frames` says, in H as well), scored as in
  training's self rows: teacher forcing with the true prefix and the previous token's time as the
  location-aware decoder's input time (plus Gaussian jitter of `--input_time_jitter` seconds, as
  `loss.time_jitter_seconds` does in training; `--prefix_corruption`: that share of the input tokens
  replaced by another label, as `loss.prefix_corruption` does; `--own_time_prob`: that share of rows
  fed the decoder's own input times after `loss.own_time_passes` passes, as
  `objective.own_input_times` does), cross entropy + the timing term.

Every `--eval_every` steps it reads 256 held-out label sequences: next-token accuracy and nats per
token with the true prefix and the exact input times; accuracy and token-time error with the true
prefix but the decoder's own previous times as input times (`decode.forced_decode`, what greedy
decoding sees while its prefix is right); the greedy strings' normalized edit distance to the
targets, with the decoder's own times fed back and with each token placed on the label runs
within `--align_frames` frames of its time (`decode.TokenRuns`, as `eval.align_frames` places it
on the model's own code-group runs); and at the end the first accuracy by the target run's
length. Nothing of a trained model is read; the encoder, VQ and stage-0 heads are never called.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax

from pairalign_jax import config_lib
from pairalign_jax import decode
from pairalign_jax import losses
from pairalign_jax import models
from pairalign_jax import objective
from pairalign_jax import sequences
from pairalign_jax import sharding
from pairalign_jax import train as train_lib
from pairalign_jax import vocab as vocab_lib
from pairalign_jax.evaluation import decoder_fit
from pairalign_jax.evaluation import metrics

# Share of the stage-1 target runs of 1, 2, .., 11 encoder frames (the last bucket stands for
# 11 or more): `decoder_fit` on the synthetic validation speech, runs of 2, 3, 4, 5-7, 8+ frames
# 0.26, 0.27, 0.18, 0.18, 0.11 (docs/results.md, "Where the decoder loses its place").
DEFAULT_RUN_LENGTH_PROBS = (0.0, 0.26, 0.27, 0.18, 0.07, 0.06, 0.05, 0.04, 0.03, 0.02, 0.02)
EVAL_ROWS = 256


def sample_labels(
  rng: np.random.Generator, rows: int, frames: int, num_labels: int, run_probs: Sequence[float]
) -> np.ndarray:
  """Frame labels [rows, frames] int32: runs whose lengths (1, 2, ..) are drawn with `run_probs`
  and whose labels are uniform among the `num_labels` that differ from the run before."""
  if num_labels < 2:
    raise ValueError(f'need at least 2 labels (neighbouring runs differ), got {num_labels}')
  probs = np.asarray(run_probs, np.float64)
  if probs.ndim != 1 or probs.size == 0 or np.any(probs < 0) or probs.sum() <= 0:
    raise ValueError(f'run_length_probs must be non-negative with a positive sum, got {run_probs}')
  probs = probs / probs.sum()
  labels = np.empty((rows, frames), np.int32)
  for i in range(rows):
    t, prev = 0, -1
    while t < frames:
      length = 1 + int(rng.choice(probs.size, p=probs))
      label = int(rng.integers(num_labels - 1)) if prev >= 0 else int(rng.integers(num_labels))
      if prev >= 0 and label >= prev:
        label += 1  # uniform over the labels other than the previous run's
      labels[i, t : t + length] = label
      prev, t = label, t + length
  return labels


def frame_vectors(
  rng: np.random.Generator,
  labels: np.ndarray,
  table: np.ndarray,
  codes_per_label: int,
  noise: float,
) -> np.ndarray:
  """H [rows, frames, d] float32: each frame's vector from `table` [labels * codes_per_label, d]
  (label l owns rows l * codes_per_label .., one drawn per frame) plus N(0, noise^2) per
  dimension."""
  codes = labels * codes_per_label + rng.integers(codes_per_label, size=labels.shape)
  h = table[codes] + noise * rng.standard_normal(labels.shape + (table.shape[1],))
  return h.astype(np.float32)


class LabelTask:
  """Batches {'h': [B, T, d], 'tokens', 'times': [B, L], 'lengths': [B]} of the copy task."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    *,
    noise: float,
    codes_per_group: int,
    run_probs: Sequence[float],
    seed: int,
  ):
    cfg = models.ModelConfig.from_config(config)
    self.num_labels = int(config.targets.code_groups) or int(config.model.codebook_size)
    self.frames = config_lib.mel_frames_per_segment(config) // cfg.subsample
    self.frame_seconds = cfg.frame_seconds
    self.max_len = cfg.max_len
    self.min_run_frames = int(config.targets.min_run_frames)
    self.vocab = vocab_lib.Vocab(int(config.model.codebook_size))
    if self.num_labels > self.vocab.codebook_size:
      raise ValueError(f'{self.num_labels} labels > {self.vocab.codebook_size} codes in the vocab')
    if codes_per_group < 1:
      raise ValueError(f'codes_per_group must be >= 1, got {codes_per_group}')
    if noise < 0:
      raise ValueError(f'noise must be >= 0, got {noise}')
    self.noise = float(noise)
    self.codes_per_group = int(codes_per_group)
    self.run_probs = tuple(run_probs)
    table_rng = np.random.default_rng(seed)
    self.table = table_rng.standard_normal((self.num_labels * codes_per_group, cfg.d_model))
    self.table = self.table.astype(np.float32)

  def batch(self, rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
    labels = sample_labels(rng, rows, self.frames, self.num_labels, self.run_probs)
    # A run cut short by the segment's end is merged as the targets' would be, in H too.
    labels = np.asarray(sequences.prune_short_runs(jnp.asarray(labels), self.min_run_frames))
    tokens, lengths, times, _ = sequences.collapse_runs(
      jnp.asarray(labels), self.frame_seconds, max_len=self.max_len, vocab=self.vocab
    )
    return {
      'h': frame_vectors(rng, labels, self.table, self.codes_per_group, self.noise),
      'tokens': np.asarray(tokens),
      'lengths': np.asarray(lengths),
      'times': np.asarray(times),
    }


def teacher_forced(model, variables, batch, input_time_noise=None, corrupt=None, own_times=None):
  """(logits [B, L, V], times [B, L], score mask [B, L]) of the self rows of `batch`, as the
  objective scores them: `input_time_noise` [B, L] added to the target times (not at EOS/PAD),
  `corrupt(inputs [B, L], mask [B, L]) -> inputs` altering the teacher-forcing inputs, and
  `own_times(cond, inputs, input_times) -> input_times` giving rows the decoder's own times."""
  vocab = vocab_lib.Vocab(model.cfg.codebook_size)
  cond = model.apply(variables, batch['h'], method=models.PairAlign.condition)
  mask = sequences.score_mask(batch['tokens'], batch['lengths'], vocab)  # [B, L]
  inputs = sequences.shift_right(batch['tokens'], vocab)  # [B, L]
  if corrupt is not None:
    inputs = corrupt(inputs, mask)
  row_times = batch['times']  # [B, L]
  if input_time_noise is not None:
    row_times = jnp.where(row_times > 0, jnp.maximum(row_times + input_time_noise, 0.0), 0.0)
  in_times = sequences.shift_times(row_times)  # [B, L]
  if own_times is not None:
    in_times = own_times(cond, inputs, in_times)
  logits, times = model.apply(
    variables,
    cond,
    inputs,
    train=False,
    input_times=in_times,
    method=models.PairAlign.score,
  )
  return logits, times, mask


def decoder_capacity(
  config: ml_collections.ConfigDict,
  *,
  steps: int,
  noise: float = 0.5,
  input_time_jitter: float = 0.0,
  prefix_corruption: float = 0.0,
  own_time_prob: float = 0.0,
  codes_per_group: int = 1,
  run_probs: Sequence[float] = DEFAULT_RUN_LENGTH_PROBS,
  align_frames: int = 2,
  eval_every: int = 100,
  batch_rows: int = 0,
  seed: int = 0,
) -> dict[str, Any]:
  """Trains the config's decoder on the copy task for `steps` steps; returns the readings."""
  if steps < 1:
    raise ValueError(f'steps must be >= 1, got {steps}')
  if align_frames < 1:
    raise ValueError(f'align_frames must be >= 1, got {align_frames}')
  config = ml_collections.ConfigDict(config.to_dict())
  config.num_train_steps = int(steps)  # the learning-rate schedule spans this run
  task = LabelTask(
    config, noise=noise, codes_per_group=codes_per_group, run_probs=run_probs, seed=seed
  )
  rows = batch_rows or 2 * int(config.batch_size)  # training's self rows: both views
  model = train_lib.make_model(config)
  init = jax.jit(functools.partial(train_lib.init_variables, model, config))
  variables = sharding.unbox(init(jax.random.PRNGKey(seed)))
  frozen = {k: v for k, v in variables['params'].items() if k in train_lib.STAGE0_MODULES}
  trained = {k: v for k, v in variables['params'].items() if k not in train_lib.STAGE0_MODULES}
  optimizer = train_lib.make_optimizer(config)
  opt_state = optimizer.init(trained)
  vocab = task.vocab

  def with_params(trained_params):
    return {**variables, 'params': {**frozen, **trained_params}}

  # The objective's own-time rows: a share of rows fed the decoder's own input times after
  # `loss.own_time_passes` stop-gradient passes.
  own_settings = dataclasses.replace(
    objective.ObjectiveSettings.from_config(config), own_time_prob=float(own_time_prob)
  )

  def loss_fn(trained_params, batch, key):
    jitter_key, corrupt_key, own_key = jax.random.split(key, 3)
    noise_t = input_time_jitter * jax.random.normal(jitter_key, batch['times'].shape)
    corrupt = functools.partial(
      sequences.corrupt_inputs,
      corrupt_key,
      p=prefix_corruption,
      vocab=vocab,
      num_codes=task.num_labels,
    )
    variables = with_params(trained_params)
    own = functools.partial(
      objective.own_input_times, model, variables, rng=own_key, settings=own_settings
    )
    logits, times, mask = teacher_forced(
      model,
      variables,
      batch,
      noise_t,
      corrupt if prefix_corruption else None,
      own if own_time_prob > 0 else None,
    )
    code_mask = mask * (batch['tokens'] != vocab.eos)
    nll = -jnp.sum(sequences.token_log_probs(logits, batch['tokens']) * mask) / jnp.sum(mask)
    return nll + losses.timing_loss(times, batch['times'], code_mask)

  @jax.jit
  def train_step(trained_params, opt_state, batch, key):
    grads = jax.grad(loss_fn)(trained_params, batch, key)
    updates, opt_state = optimizer.update(grads, opt_state, trained_params)
    return optax.apply_updates(trained_params, updates), opt_state

  @jax.jit
  def readings(trained_params, batch):
    variables = with_params(trained_params)
    logits, _, _ = teacher_forced(model, variables, batch)  # [B, L, V]
    # The true prefix with the decoder's own previous output times as input times.
    own_logits, own_times = decode.forced_decode(model, variables, batch['h'], batch['tokens'])
    greedy = decode.greedy_decode(model, variables, batch['h'], max_len=task.max_len)
    # Aligned decoding (eval.align_frames): each token placed on the label runs, which here are
    # the targets themselves, as the tokenizer places them on its own code-group runs.
    runs = decode.TokenRuns(
      tokens=batch['tokens'],
      times=batch['times'],
      lengths=batch['lengths'],
      tolerance=align_frames * task.frame_seconds,
    )
    aligned = decode.greedy_decode(
      model, variables, batch['h'], max_len=task.max_len, token_runs=runs
    )
    return logits, own_logits, own_times, greedy, aligned

  eval_batch = task.batch(np.random.default_rng(seed + 1), EVAL_ROWS)
  eval_tokens, eval_lengths = eval_batch['tokens'], eval_batch['lengths']
  eval_runs = [
    decoder_fit.run_frames(eval_batch['times'][i, :n], task.frame_seconds)
    for i, n in enumerate(eval_lengths)
  ]
  eval_strings = [list(t[:n]) for t, n in zip(eval_tokens, eval_lengths)]
  data_rng = np.random.default_rng(seed + 2)
  key = jax.random.PRNGKey(seed + 3)
  curve = []
  t0 = time.time()
  for step in range(1, steps + 1):
    key, step_key = jax.random.split(key)
    trained, opt_state = train_step(trained, opt_state, task.batch(data_rng, rows), step_key)
    if step % eval_every == 0 or step == steps:
      logits, own_logits, own_times, greedy_out, aligned_out = jax.tree.map(
        np.asarray, readings(trained, eval_batch)
      )
      true_fit = decoder_fit.teacher_forced_summary(logits, eval_tokens, eval_lengths, eval_runs)
      own_fit = decoder_fit.teacher_forced_summary(
        own_logits, eval_tokens, eval_lengths, eval_runs, own_times - eval_batch['times']
      )
      greedy = [list(t[:n]) for t, n in zip(greedy_out.tokens, greedy_out.lengths)]
      aligned = [list(t[:n]) for t, n in zip(aligned_out.tokens, aligned_out.lengths)]
      point = {
        'step': step,
        'accuracy': true_fit['accuracy'],
        'nats_per_token': true_fit['nll'],
        'accuracy_own_times': own_fit['accuracy'],
        'time_error_own_times_seconds': own_fit['time_error_seconds'],
        'greedy_normalized_edit_distance': float(metrics.pairwise_ned(greedy, eval_strings).mean()),
        'greedy_aligned_normalized_edit_distance': float(
          metrics.pairwise_ned(aligned, eval_strings).mean()
        ),
        'seconds': round(time.time() - t0, 1),
      }
      logging.info('decoder_capacity %s', point)
      curve.append(point)
  by_run = {
    ('EOS' if k == 'eos' else k): v['accuracy'] for k, v in true_fit['by_run_frames'].items()
  }
  return {
    'steps': steps,
    'noise': noise,
    'input_time_jitter': input_time_jitter,
    'prefix_corruption': prefix_corruption,
    'own_time_prob': own_time_prob,
    'own_time_passes': own_settings.own_time_passes,
    'codes_per_group': codes_per_group,
    'align_frames': align_frames,
    'labels': task.num_labels,
    'frames': task.frames,
    'rows_per_step': rows,
    'run_length_probs': list(task.run_probs),
    'curve': curve,
    'final_accuracy_by_run_frames': by_run,
  }


FLAGS = flags.FLAGS


def _define_flags():
  config_flags.DEFINE_config_file('config', None, 'Training config (its model and optimizer).')
  flags.DEFINE_integer('steps', 400, 'Training steps of the decoder alone.')
  flags.DEFINE_float('noise', 0.5, 'Std of the Gaussian noise on each frame vector.')
  flags.DEFINE_float('input_time_jitter', 0.0, 'Std (s) of the noise on the input times.')
  flags.DEFINE_float(
    'prefix_corruption', 0.0, 'Share of input tokens replaced by another label (training only).'
  )
  flags.DEFINE_float(
    'own_time_prob', 0.0, "Share of rows fed the decoder's own input times (loss.own_time_prob)."
  )
  flags.DEFINE_integer('codes_per_group', 1, 'Frame vectors per label, drawn per frame.')
  flags.DEFINE_list(
    'run_length_probs',
    [str(p) for p in DEFAULT_RUN_LENGTH_PROBS],
    'Probabilities of runs of 1, 2, .. encoder frames.',
  )
  flags.DEFINE_integer(
    'align_frames',
    2,
    'Tolerance (encoder frames) of the aligned greedy reading (as config.eval.align_frames).',
  )
  flags.DEFINE_integer('eval_every', 100, 'Steps between readings.')
  flags.DEFINE_integer('seed', 0, 'Seed of the labels, vectors and parameters.')
  flags.DEFINE_string('out', None, 'Where to write the JSON (default: print only).')
  flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  report = decoder_capacity(
    FLAGS.config,
    steps=FLAGS.steps,
    noise=FLAGS.noise,
    input_time_jitter=FLAGS.input_time_jitter,
    prefix_corruption=FLAGS.prefix_corruption,
    own_time_prob=FLAGS.own_time_prob,
    codes_per_group=FLAGS.codes_per_group,
    run_probs=[float(p) for p in FLAGS.run_length_probs],
    align_frames=FLAGS.align_frames,
    eval_every=FLAGS.eval_every,
    seed=FLAGS.seed,
  )
  decoder_fit.print_and_write(report, FLAGS.out)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
