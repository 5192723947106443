"""How closely a decoder writes its training targets, and where it fails.

  python -m pairalign_jax.evaluation.decoder_fit --checkpoint=RUN/checkpoints/STEP \
      [--params=student] [--targets=teacher] [--split=validation] [--num_segments=256] \
      [--passes=0,1,2,3,4,8,16] [--out=fit.json]

The targets of a segment are the code-group string of `--targets`' parameters
(`Tokenizer.vq_group_tokenize`: what stage 1 trains the decoder on, when `--targets=teacher`
during stage 1, where the teacher is the frozen end of stage 0); the decoder is `--params`'. Every
target token is one run of a code group, and every figure is given by the run's length in encoder
frames (the runs tile the segment from frame 0, so their lengths follow from the run centres,
`run_frames`), because short runs are where a decoder that reads H through attention loses its
place. Four readings:

* `teacher_forced_true_times`: next-token accuracy, negative log-likelihood (nats) and the mean
  absolute error of the decoder's token times against the targets' (seconds) with the true
  prefix and the targets' own times as the location-aware decoder's input times (the self rows of
  training, without the input-time jitter);
* `teacher_forced_own_times`: the true prefix, but each step's input time is the decoder's own
  output time of the step before (`decode.forced_decode`: what greedy decoding sees while its
  prefix is right);
* `greedy`: the greedy string aligned to the target (`Levenshtein.editops`): the share of target
  tokens left out and substituted, by run length, and tokens added per target token;
* `own_groups_vs_targets`: the code-group string of `--params`' own encoder and VQ (what its H
  says) against the targets, as edits per target token and mean normalized edit distance: 0 when
  params and targets are the same; with a frozen stage-1 teacher, how far the encoder the decoder
  reads has moved away from the one that made its targets. Also frame by frame
  (`frame_agreement`): the share of encoder frames whose two group ids are equal, and the same
  after the one-to-one renaming of the ids that makes the most frames agree
  (`frame_agreement_after_renaming`, the Hungarian method on the frame confusion matrix): a high
  second figure with a low first says the encoder *renamed* its groups rather than re-cut them.

The gap between the first two is what the decoder's own token times cost it; between the second
and the third, what its own earlier mistakes cost it. `--passes` (default 0,1,2,3,4,8,16; empty:
none) adds the same teacher-forced reading after k parallel own-time passes (what training's
own-time rows feed the decoder with `loss.own_time_passes = k`), to compare with the whole
string's drift in the second. Nothing
here trains or needs the training code: a checkpoint and the split's audio.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from rapidfuzz.distance import Levenshtein
from scipy import optimize

from pairalign_jax import checkpointing
from pairalign_jax import decode
from pairalign_jax import models
from pairalign_jax import sequences
from pairalign_jax import token_strings
from pairalign_jax import tokenizer as tokenizer_lib
from pairalign_jax import vocab as vocab_lib
from pairalign_jax.data import pipeline
from pairalign_jax.evaluation import metrics

MAX_RUN_BUCKET = 8  # runs of this many frames or more share one bucket ('8+')


def run_frames(
  times: Sequence[float], frame_seconds: float, time_anchor: str = 'centre'
) -> np.ndarray:
  """Run lengths in frames [n] of a collapsed string whose runs tile the frames from frame 0, from
  its token times (run centres `(first + last + 1) / 2 * frame_seconds`, `sequences.collapse_runs`:
  each run ends where twice its centre minus its start puts it; with `time_anchor='end'` the
  times are the centres of the runs' last frames, half a frame before each run ends)."""
  lengths = []
  start = 0.0
  for t in np.asarray(times, np.float64) / frame_seconds:
    end = t + 0.5 if time_anchor == 'end' else 2.0 * t - start
    lengths.append(int(round(end - start)))
    start = end
  if any(n < 1 for n in lengths):
    raise ValueError(
      f'token times {list(times)} are not the {time_anchor}s of runs that tile the frames'
    )
  return np.asarray(lengths, np.int64)


def bucket(run: int) -> str:
  """The reporting bucket of a run length: '1' .. '7', then '8+'."""
  return f'{MAX_RUN_BUCKET}+' if run >= MAX_RUN_BUCKET else str(int(run))


def target_arrays(
  tokens: Sequence[Sequence[int]],
  times: Sequence[Sequence[float]],
  max_len: int,
  vocab: vocab_lib.Vocab,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Target strings as decoder rows: tokens [B, L] (codes, EOS, PAD), times [B, L] seconds (0 at
  EOS/PAD), lengths [B]. A string longer than L - 1 codes is cut there, as in training."""
  batch = len(tokens)
  out_tokens = np.full((batch, max_len), vocab.pad, np.int32)
  out_times = np.zeros((batch, max_len), np.float32)
  lengths = np.zeros(batch, np.int32)
  for i, (t, s) in enumerate(zip(tokens, times)):
    n = min(len(t), max_len - 1)
    out_tokens[i, :n] = np.asarray(t, np.int32)[:n]
    out_tokens[i, n] = vocab.eos
    out_times[i, :n] = np.asarray(s, np.float32)[:n]
    lengths[i] = n
  return out_tokens, out_times, lengths


def _code_positions(tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """[B, L] bool: the code positions of target rows (before each row's EOS)."""
  return np.arange(tokens.shape[1])[None, :] < np.asarray(lengths)[:, None]


def _forced_from_h(
  tok: tokenizer_lib.Tokenizer, h, tokens: np.ndarray, times: np.ndarray, *, own_times: bool
) -> tuple[np.ndarray, np.ndarray]:
  """`teacher_forced_logits` from the encoder output H [B, T, d] (`Tokenizer.encode`)."""
  model, variables = tok.model, tok.variables
  if own_times:
    logits, out_times = decode.forced_decode(
      model,
      variables,
      h,
      jnp.asarray(tokens),
      run_centres=tok.run_centres(variables, h),
      token_runs=tok.token_runs(variables, h),
    )
    return np.asarray(logits), np.asarray(out_times)
  cond = model.apply(variables, h, method=models.PairAlign.condition)
  logits, out_times = model.apply(
    variables,
    cond,
    sequences.shift_right(jnp.asarray(tokens), tok.vocab),
    train=False,
    input_times=sequences.shift_times(jnp.asarray(times)),
    method=models.PairAlign.score,
  )  # [B, L, V], [B, L]
  return np.asarray(logits), np.asarray(out_times)


def teacher_forced_logits(
  tok: tokenizer_lib.Tokenizer,
  waves: np.ndarray,
  tokens: np.ndarray,
  times: np.ndarray,
  *,
  own_times: bool,
) -> tuple[np.ndarray, np.ndarray]:
  """Logits [B, L, V] and token times [B, L] (seconds) of `tok`'s decoder over the given rows
  (true prefix), fed the given input times (the tokens' times shifted right) or, with
  `own_times`, its own previous output times. waves: [B, segment_samples]."""
  return _forced_from_h(tok, tok.encode(waves), tokens, times, own_times=own_times)


def parallel_pass_readings(
  tok: tokenizer_lib.Tokenizer,
  waves: np.ndarray,
  tokens: np.ndarray,
  times: np.ndarray,
  lengths: np.ndarray,
  passes: Sequence[int],
) -> dict[str, dict[str, float]]:
  """Accuracy and time error over the code positions after k parallel own-time passes, for each k
  in `passes`: pass 0 feeds the true input times, pass k the token times of pass k - 1 (shifted
  right) to every position at once, as training's own-time rows do with `loss.own_time_passes`
  = k. Greedy decoding compounds its drift over the whole string instead (the
  `teacher_forced_own_times` reading), so k at which these match it says how much of that drift
  training shows the decoder."""
  model, variables = tok.model, tok.variables
  cond = model.apply(variables, tok.encode(waves), method=models.PairAlign.condition)
  inputs = sequences.shift_right(jnp.asarray(tokens), tok.vocab)  # [B, L]
  true_in = sequences.shift_times(jnp.asarray(times))  # [B, L]
  codes = _code_positions(tokens, lengths)  # [B, L]

  @jax.jit
  def one_pass(input_times):
    return model.apply(
      variables, cond, inputs, train=False, input_times=input_times, method=models.PairAlign.score
    )  # [B, L, V], [B, L]

  out: dict[str, dict[str, float]] = {}
  input_times = true_in
  for k in range(max(passes) + 1):
    logits, token_times = one_pass(input_times)
    if k in passes:
      correct = np.asarray(logits).argmax(-1) == tokens
      out[str(k)] = {
        'accuracy': float(correct[codes].mean()),
        'time_error_seconds': float(np.abs(np.asarray(token_times) - times)[codes].mean()),
      }
    input_times = jnp.where(true_in > 0, sequences.shift_times(token_times), 0.0)
  return out


def teacher_forced_summary(
  logits: np.ndarray,
  tokens: np.ndarray,
  lengths: np.ndarray,
  runs: Sequence[np.ndarray],
  time_error: Optional[np.ndarray] = None,
) -> dict[str, Any]:
  """Accuracy (argmax = target) and NLL of every scored position (codes and the EOS), overall and
  by the target run length ('eos' for the EOS position); with `time_error` [B, L] (seconds, the
  decoder's token time minus the target's), its mean absolute value over the code positions."""
  logp = np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=-1))  # [B, L, V]
  correct: dict[str, list[float]] = {}
  nll: dict[str, list[float]] = {}
  for i, n in enumerate(lengths):
    for j in range(int(n) + 1):
      key = 'eos' if j == n else bucket(runs[i][j])
      correct.setdefault(key, []).append(float(logp[i, j].argmax() == tokens[i, j]))
      nll.setdefault(key, []).append(float(-logp[i, j, tokens[i, j]]))
  every_correct = [c for v in correct.values() for c in v]
  every_nll = [c for v in nll.values() for c in v]
  summary: dict[str, Any] = {}
  if time_error is not None:
    codes = _code_positions(tokens, lengths)  # [B, L]
    summary['time_error_seconds'] = float(np.abs(np.asarray(time_error)[codes]).mean())
  return {
    **summary,
    'accuracy': float(np.mean(every_correct)),
    'nll': float(np.mean(every_nll)),
    'positions': len(every_correct),
    'by_run_frames': {
      k: {
        'accuracy': float(np.mean(correct[k])),
        'nll': float(np.mean(nll[k])),
        'count': len(nll[k]),
      }
      for k in sorted(correct, key=_bucket_order)
    },
  }


def edits_by_run(
  hyps: Sequence[Sequence[int]], refs: Sequence[Sequence[int]], runs: Sequence[np.ndarray]
) -> dict[str, Any]:
  """A minimal alignment of each hypothesis to its reference: the share of reference tokens left
  out and substituted, by the reference run length, and inserted tokens per reference token.

  `written_repeats`: the share of written tokens equal to the one before them (a reference made of
  collapsed runs has none, so each is an error), and `inserted_repeats`: the share of inserted
  tokens that are one of such a repeated pair (a stutter rather than a token from elsewhere)."""
  if not len(hyps) == len(refs) == len(runs):
    raise ValueError(f'{len(hyps)} hypotheses, {len(refs)} references, {len(runs)} run lists')
  count: dict[str, int] = {}
  deleted: dict[str, int] = {}
  substituted: dict[str, int] = {}
  inserted = inserted_repeats = written_repeats = 0
  for hyp, ref, run in zip(hyps, refs, runs):
    ref, hyp = list(ref), list(hyp)
    repeats = [i > 0 and hyp[i] == hyp[i - 1] for i in range(len(hyp))]
    written_repeats += sum(repeats)
    # An inserted token in a repeated pair (the alignment may leave out either of the two).
    in_pair = [r or (i + 1 < len(hyp) and repeats[i + 1]) for i, r in enumerate(repeats)]
    keys = [bucket(r) for r in run[: len(ref)]]
    for k in keys:
      count[k] = count.get(k, 0) + 1
    for op in Levenshtein.editops(ref, hyp):
      if op.tag == 'delete':
        deleted[keys[op.src_pos]] = deleted.get(keys[op.src_pos], 0) + 1
      elif op.tag == 'replace':
        substituted[keys[op.src_pos]] = substituted.get(keys[op.src_pos], 0) + 1
      else:
        inserted += 1
        inserted_repeats += in_pair[op.dest_pos]
  total = sum(count.values())
  written = int(sum(len(h) for h in hyps))
  return {
    'target_tokens': total,
    'written_tokens': written,
    'deleted': sum(deleted.values()) / max(total, 1),
    'substituted': sum(substituted.values()) / max(total, 1),
    'inserted': inserted / max(total, 1),
    'written_repeats': written_repeats / max(written, 1),
    'inserted_repeats': inserted_repeats / max(inserted, 1),
    'by_run_frames': {
      k: {
        'share_of_targets': count[k] / total,
        'deleted': deleted.get(k, 0) / count[k],
        'substituted': substituted.get(k, 0) / count[k],
      }
      for k in sorted(count, key=_bucket_order)
    },
  }


def frame_agreement(own: np.ndarray, targets: np.ndarray) -> dict[str, float]:
  """Frame labels [N, T] of two labelings of the same frames (ids >= 0): the share of frames with
  equal ids, and the largest share reachable by renaming `own`'s ids one-to-one (ids left without
  a partner count as disagreeing)."""
  own, targets = np.asarray(own).reshape(-1), np.asarray(targets).reshape(-1)
  if own.shape != targets.shape:
    raise ValueError(f'{own.size} frames against {targets.size}')
  if own.size == 0:
    raise ValueError('no frames to compare')
  size = int(max(own.max(), targets.max())) + 1
  confusion = np.zeros((size, size), np.int64)  # [own id, target id] frame counts
  np.add.at(confusion, (own, targets), 1)
  rows, cols = optimize.linear_sum_assignment(confusion, maximize=True)
  return {
    'frame_agreement': float(np.trace(confusion) / own.size),
    'frame_agreement_after_renaming': float(confusion[rows, cols].sum() / own.size),
  }


def _bucket_order(key: str) -> int:
  return 10**6 if key == 'eos' else int(key.rstrip('+'))


def decoder_fit(
  tok: tokenizer_lib.Tokenizer,
  targets_tok: tokenizer_lib.Tokenizer,
  waves: np.ndarray,
  sample_rate: int,
  batch_size: int = 64,
  passes: Sequence[int] = (),
) -> dict[str, Any]:
  """The four readings of the module docstring for `tok`'s decoder against `targets_tok`'s
  code-group strings on `waves` [N, S] (segments of the checkpoint's length), and with `passes`
  the parallel own-time pass readings (`parallel_pass_readings`) on the first `batch_size`."""
  if int(tok.config.targets.get('code_groups', 0)) <= 0:
    raise ValueError('decoder_fit needs a model trained on code groups (targets.code_groups > 0)')
  waves = tok.prepare(waves, sample_rate)  # [N, segment_samples] at the model's rate
  # Frame labels first (one encoder pass each); the strings are their runs collapsed, exactly as
  # `Tokenizer.vq_group_tokenize` makes them.
  target_frames = targets_tok.vq_group_frames(waves, tok.sample_rate)  # [N, T]
  anchor = str(tok.config.targets.get('time_anchor', 'centre'))  # the times tok's decoder reads
  targets = token_strings.strings_from_frame_codes(
    target_frames, targets_tok.frame_seconds, time_anchor=anchor
  )
  own_frames = tok.vq_group_frames(waves, tok.sample_rate)  # [N, T]
  greedy = tok.tokenize(waves, tok.sample_rate)
  runs = [run_frames(t, tok.frame_seconds, anchor) for t in targets.times]
  readings = (('teacher_forced_true_times', False), ('teacher_forced_own_times', True))
  parts: dict[str, list[tuple[np.ndarray, ...]]] = {name: [] for name, _ in readings}
  for start in range(0, len(waves), batch_size):
    stop = start + batch_size
    tokens, times, lengths = target_arrays(
      targets.tokens[start:stop], targets.times[start:stop], tok.max_len, tok.vocab
    )
    h = tok.encode(waves[start:stop])  # once per batch, for both readings
    for name, own in readings:
      logits, out_times = _forced_from_h(tok, h, tokens, times, own_times=own)
      parts[name].append((logits, tokens, lengths, out_times - times))
  forced = {
    name: teacher_forced_summary(
      *(np.concatenate([p[k] for p in rows]) for k in range(3)),
      runs,
      time_error=np.concatenate([p[3] for p in rows]),
    )
    for name, rows in parts.items()
  }
  own_groups = token_strings.strings_from_frame_codes(own_frames, tok.frame_seconds).tokens
  report = {
    'segments': len(waves),
    **forced,
    'greedy': edits_by_run(greedy.tokens, targets.tokens, runs),
    'own_groups_vs_targets': {
      **metrics.edit_operations(own_groups, targets.tokens),
      'mean_normalized_edit_distance': metrics.cross_view_ned(own_groups, targets.tokens),
      **frame_agreement(own_frames, target_frames),
    },
  }
  if passes:
    rows = target_arrays(
      targets.tokens[:batch_size], targets.times[:batch_size], tok.max_len, tok.vocab
    )
    report['parallel_own_time_passes'] = parallel_pass_readings(
      tok, waves[:batch_size], rows[0], rows[1], rows[2], passes
    )
  return report


def split_segments(config, split: str, num_segments: int, seed: int = 0) -> np.ndarray:
  """`num_segments` segments [N, S] of `split`, records drawn without replacement (seeded), in
  index order; each the start of its record, as the evaluation takes them."""
  source = pipeline.make_source(config, pipeline.canonical_split(split))
  n = min(int(num_segments), len(source))
  if n < 1:
    raise ValueError(f'the {split!r} split has no records')
  picks = np.sort(np.random.default_rng(seed).choice(len(source), size=n, replace=False))
  return np.stack([pipeline.load_segment(source[int(i)], config, crop='start') for i in picks])


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string('checkpoint', None, 'Workdir or checkpoint step directory.')
  flags.DEFINE_enum('params', 'student', ['teacher', 'student'], 'Whose decoder is read.')
  flags.DEFINE_enum(
    'targets',
    'teacher',
    ['teacher', 'student'],
    "Whose code groups are the targets ('teacher': what stage 1 trains on).",
  )
  flags.DEFINE_string('split', 'validation', "The split's audio: 'validation', 'test' or 'train'.")
  flags.DEFINE_integer('num_segments', 256, 'Segments read (drawn from the split, seeded).')
  flags.DEFINE_list(
    'passes',
    ['0', '1', '2', '3', '4', '8', '16'],
    'Parallel own-time passes to read (as loss.own_time_passes trains; 64 segments); empty: none.',
  )
  flags.DEFINE_string('out', None, 'Where to write the JSON (default: print only).')
  flags.DEFINE_bool(
    'snap_times',
    False,
    "The decoder's own times fed back snapped to its own code-group runs (config.eval.snap_times): "
    'the own-times and greedy readings.',
  )
  flags.DEFINE_integer(
    'align_frames',
    0,
    "Each token placed on its own code-group run within this many frames of the decoder's time, "
    'whose time is fed back (config.eval.align_frames): the own-times and greedy readings.',
  )
  flags.mark_flags_as_required(['checkpoint'])


def print_and_write(report: dict[str, Any], out: Optional[str]) -> None:
  """Prints a diagnostic's report as JSON, and writes it to `out` too when given."""
  text = json.dumps(report, indent=1)
  if out:
    with open(out, 'w', encoding='utf-8') as f:
      f.write(text + '\n')
  print(text)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  path = os.path.abspath(FLAGS.checkpoint)
  step = int(checkpointing.step_dir(path).name)
  config = checkpointing.read_config(path, step)
  tok = tokenizer_lib.Tokenizer.from_checkpoint(
    path,
    step=step,
    use_teacher=FLAGS.params == 'teacher',
    snap_times=FLAGS.snap_times,
    align_frames=FLAGS.align_frames,
  )
  targets_tok = tokenizer_lib.Tokenizer.from_checkpoint(
    path, step=step, use_teacher=FLAGS.targets == 'teacher'
  )
  waves = split_segments(config, FLAGS.split, FLAGS.num_segments, seed=int(config.seed))
  logging.info('decoder_fit: step %d, %d segments of the %r split', step, len(waves), FLAGS.split)
  report = {
    'checkpoint': path,
    'step': step,
    'params': FLAGS.params,
    'targets': FLAGS.targets,
    'split': FLAGS.split,
    'snap_times': FLAGS.snap_times,
    'align_frames': FLAGS.align_frames,
    **decoder_fit(
      tok, targets_tok, waves, tok.sample_rate, passes=tuple(int(k) for k in FLAGS.passes)
    ),
  }
  print_and_write(report, FLAGS.out)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
