"""Tests for pairalign_jax/train.py's stage machinery on real steps of the tiny train_test config:
skipped non-finite batches, the encoder frozen from a stage, the stage-1 teacher, the length
controller off, the stage-0 modules clipped apart. (Split from train_test.py so that the two files
run on two test workers.)"""

import jax
import numpy as np
import pytest
from train_test import flat
from train_test import state_arrays
from train_test import tiny_config
from train_test import waves

from pairalign_jax import config_validation
from pairalign_jax import train


def test_train_step_skips_nan_batch_and_recovers():
  """The real step: a NaN batch leaves every parameter as it was and counts the skip."""
  config = tiny_config()
  trainer = train.Trainer(config)
  state = trainer.init_state()
  nan_batch = waves(0)
  nan_batch['view1'] = np.full_like(nan_batch['view1'], np.nan)
  before = state_arrays(state)
  state, metrics = trainer.run_step(state, trainer.device_batch(nan_batch), 0)
  metrics = jax.device_get(metrics)
  assert metrics['finite'] == 0.0 and not np.isfinite(metrics['loss/total'])
  assert int(state.nonfinite_steps) == 1 and int(state.step) == 1
  after = state_arrays(state)
  for part in ('params', 'teacher', 'opt', 'vq_stats'):
    for key in before[part]:
      np.testing.assert_array_equal(after[part][key], before[part][key], err_msg=f'{part}{key}')
  state, _ = trainer.run_step(state, trainer.device_batch(nan_batch), 0)
  assert int(state.nonfinite_steps) == 2
  state, metrics = trainer.run_step(state, trainer.device_batch(waves(1)), 0)
  assert jax.device_get(metrics['finite']) == 1.0 and int(state.nonfinite_steps) == 0
  # The optimizer state moves now; its schedule count was not advanced by the skips, so this
  # first applied update still has the warmup's learning rate 0: the params move at the next one.
  opt = state_arrays(state)['opt']
  assert any(not np.array_equal(opt[k], before['opt'][k]) for k in opt)
  state, _ = trainer.run_step(state, trainer.device_batch(waves(2)), 0)
  moved = state_arrays(state)['params']
  assert any(not np.array_equal(moved[k], before['params'][k]) for k in moved)
  assert all(np.all(np.isfinite(v)) for v in moved.values())


def _after_stage0(**schedule):
  """A Trainer of tiny_config with the sequence terms off the encoder and `schedule` overrides,
  and its state after two stage-0 steps."""
  config = tiny_config()
  config.loss.sequence_losses_train_encoder = False
  config.schedule.update(schedule)
  trainer = train.Trainer(config)
  state = trainer.init_state()
  for i in range(2):
    state, _ = trainer.run_step(state, trainer.device_batch(waves(20 + i)), 0)
  return trainer, state


# 'stage1' is what configs/small_corpus.py and synthetic_aug_only.py use; 'stage2' (slow) also shows
# the encoder moving through the stage-1 steps before it, 'never' (slow) through all four.
@pytest.mark.parametrize(
  'freeze',
  [
    pytest.param('never', marks=pytest.mark.slow),
    'stage1',
    pytest.param('stage2', marks=pytest.mark.slow),
  ],
)
def test_freeze_encoder_keeps_stage0_modules(freeze):
  """schedule.freeze_encoder: from the chosen stage on, steps leave the encoder, VQ and stage-0
  heads exactly as they were (despite Adam momentum and weight decay) and the stage-0 terms at 0,
  and still train the decoder; before it (and with 'never') the encoder keeps moving."""
  trainer, state = _after_stage0(freeze_encoder=freeze)
  frozen_from = {'never': 3, 'stage1': 1, 'stage2': 2}[freeze]

  def stage0_params(state):
    return {k: v for k, v in flat(state.params).items() if k.split("'")[1] in train.STAGE0_MODULES}

  for i, stage in enumerate((1, 1, 2, 2)):
    before, decoder_before = stage0_params(state), flat(state.params)
    state, metrics = trainer.run_step(state, trainer.device_batch(waves(30 + i)), stage)
    metrics = jax.device_get(metrics)
    after = stage0_params(state)
    assert {k.split("'")[1] for k in before} >= {'encoder', 'mel_decoder', 'code_head'}
    unchanged = [np.array_equal(after[k], before[k]) for k in before]
    frozen = stage >= frozen_from
    assert all(unchanged) if frozen else not all(unchanged), (stage, freeze)
    assert (metrics['loss/code_pred'] == 0.0) == frozen
    moved = flat(state.params)
    if i > 0:  # the first stage-1 update has the decoder's Adam state fresh: it moves from the next
      assert any(not np.array_equal(moved[k], decoder_before[k]) for k in moved if "'decoder'" in k)
  assert metrics['loss/contrast'] > 0.0


def test_freeze_encoder_needs_sequence_terms_off_the_encoder():
  config = tiny_config()
  config.schedule.freeze_encoder = 'stage2'
  with pytest.raises(ValueError, match='sequence_losses_train_encoder'):
    config_validation.validate_config(config)
  config.loss.sequence_losses_train_encoder = False
  config.schedule.freeze_encoder = 'stage0'
  with pytest.raises(ValueError, match="'never', 'stage1' or 'stage2'"):
    config_validation.validate_config(config)


# 'student' (slow): no shipped config uses it.
@pytest.mark.parametrize(
  'stage1_teacher', ['frozen', pytest.param('student', marks=pytest.mark.slow)]
)
def test_stage1_teacher_is_frozen_or_follows_the_student(stage1_teacher):
  """schedule.stage1_teacher: 'frozen' keeps the teacher at the end of stage 0 through stage 1;
  'student' makes it a copy of the student after every stage-1 update (targets read the current
  encoder)."""
  trainer, state = _after_stage0(stage1_teacher=stage1_teacher)
  stage0_student, stage0_teacher = flat(state.params), flat(state.teacher_params)
  # The teacher ends stage 0 equal to the student, its last stage-0 update included: with
  # schedule.freeze_encoder='stage1' the targets are the codes of the encoder the decoder reads.
  for key in stage0_teacher:
    np.testing.assert_array_equal(stage0_teacher[key], stage0_student[key], err_msg=key)
  # One stage-1 step: tiny_config's stage 2 starts at step 4 (the teacher's EMA follows the step).
  state, metrics = trainer.run_step(state, trainer.device_batch(waves(60)), 1)
  student, teacher = flat(state.params), flat(state.teacher_params)
  assert any(not np.array_equal(student[k], stage0_student[k]) for k in student)
  want = student if stage1_teacher == 'student' else stage0_teacher
  for key in teacher:
    np.testing.assert_array_equal(teacher[key], want[key], err_msg=key)
  assert np.isfinite(float(jax.device_get(metrics['loss/total'])))


def test_stage1_teacher_student_needs_sequence_terms_off_the_encoder():
  config = tiny_config()
  config.schedule.stage1_teacher = 'student'
  assert config.loss.sequence_losses_train_encoder
  with pytest.raises(ValueError, match='stage1_teacher.*sequence_losses_train_encoder'):
    config_validation.validate_config(config)
  config.loss.sequence_losses_train_encoder = False
  config.schedule.stage1_teacher = 'ema'
  with pytest.raises(ValueError, match="'frozen' or 'student'"):
    config_validation.validate_config(config)


def test_length_controller_off_changes_only_the_eos_bias():
  """With schedule.max_alpha = 0 the stage-2 teacher decodes feed only the length controller, so
  training with length.controller_gain = 0 (which skips the decodes) gives the parameters of a
  run with the controller on, and the EOS bias stays 0: evaluating the latter at bias 0 is
  evaluating the former."""
  results = {}
  for gain in (0.5, 0.0):
    config = tiny_config()
    config.schedule.max_alpha = 0.0
    config.length.controller_gain = gain
    trainer = train.Trainer(config)
    state = trainer.init_state()
    for i, stage in enumerate((0, 2, 2)):  # the second stage-2 step reads the first one's bias
      state, metrics = trainer.run_step(state, trainer.device_batch(waves(40 + i)), stage)
    results[gain] = (state_arrays(state), jax.device_get(metrics))
  (on, metrics_on), (off, metrics_off) = results[0.5], results[0.0]
  assert float(on['eos_bias']) != 0.0 and float(off['eos_bias']) == 0.0
  key = 'teacher/tokens_per_second'
  assert key in metrics_on and key not in metrics_off
  for group in ('params', 'teacher', 'opt', 'vq_stats'):
    for key in on[group]:
      np.testing.assert_allclose(off[group][key], on[group][key], rtol=1e-5, atol=1e-6, err_msg=key)


# Slow: clip_stage0_apart is off by default and in every shipped config. apart=False is the
# control: one global norm, and the same two runs then train different encoders.
@pytest.mark.slow
@pytest.mark.parametrize('apart', [True, False])
def test_clipping_the_stage0_modules_apart_keeps_the_encoder_free_of_the_decoder(apart):
  """optim.clip_stage0_apart with loss.sequence_losses_train_encoder=False: two runs whose decoder
  terms differ (self teacher forcing weighted 1 or 3) train the same encoder, VQ and stage-0 heads
  through stage 1, where one global norm (a tight clip, so that it always clips) lets the
  decoder's gradient scale the encoder's updates. The decoders differ either way."""
  finals = {}
  for self_tf in (1.0, 3.0):
    config = tiny_config()
    config.loss.sequence_losses_train_encoder = False
    config.loss.self_tf_weight = self_tf
    config.optim.grad_clip = 0.01
    config.optim.clip_stage0_apart = apart
    trainer = train.Trainer(config)
    state = trainer.init_state()
    initial = flat(state.params)
    for i, stage in enumerate((0, 1, 1)):
      state, _ = trainer.run_step(state, trainer.device_batch(waves(60 + i)), stage)
    finals[self_tf] = flat(state.params)

  def is_stage0(key):  # keystr paths: "['encoder']['layers']..."
    return any(key.startswith(f"['{m}']") for m in train.STAGE0_MODULES)

  a, b = finals[1.0], finals[3.0]
  encoder = [k for k in a if is_stage0(k)]
  decoder = [k for k in a if not is_stage0(k)]
  assert encoder and decoder and a.keys() == b.keys()
  assert any(not np.allclose(a[k], initial[k]) for k in encoder)  # the encoder did train
  assert all(np.array_equal(a[k], b[k]) for k in encoder) == apart
  assert any(not np.allclose(a[k], b[k]) for k in decoder)
