"""Tests for pairalign_jax/train.py and train_state.py: one compile per stage, skipped non-finite
updates, mesh-independent steps, exact resume after preemption / SIGKILL.

Every test uses the same tiny config (d_model 32, 1+1 layers, K 16, L 12, 16 mel bands, 1 s of
synthetic speech, batch 8) and the same 8-device mesh unless it says otherwise, so the compiled
steps are shared through the persistent compilation cache (tests/conftest.py).
"""

import logging
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default as default_config
from pairalign_jax import checkpointing
from pairalign_jax import sharding
from pairalign_jax import train
from pairalign_jax import train_state as train_state_lib
from pairalign_jax.data import bad_input
from pairalign_jax.data import pipeline

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
N_STEPS, RESUME_AT = 6, 2  # checkpoints every RESUME_AT steps; the SIGKILL comes after the first
PREEMPT_AT = 3  # mid stage 1, between two periodic checkpoints
SEGMENT = 16_000


def tiny_config():
  c = default_config.get_config()
  c.batch_size = 8
  c.num_train_steps = N_STEPS
  c.log_every_steps = 1
  c.eval_every_steps = 0
  c.checkpoint_every_steps = RESUME_AT
  c.max_nonfinite_steps = 2
  c.audio.segment_seconds = 1.0
  c.length.target_rate = 10.0
  c.frontend.n_mels = 16
  c.model.update(
    d_model=32,
    num_heads=2,
    mlp_dim=64,
    enc_layers=1,
    dec_layers=1,
    codebook_size=16,
    code_dim=8,
    max_len=12,
    recon_channels=16,
    dropout_rate=0.0,
  )
  c.schedule.update(stage1_start=2, stage2_start=4, ramp_steps=2, ema_warmup_steps=1, ema_decay=0.5)
  c.optim.update(warmup_steps=1, learning_rate=1e-3)
  c.data.synthetic.update(
    num_train_speakers=4,
    num_heldout_speakers=2,
    num_train_sentences=8,
    num_heldout_sentences=4,
    train_size=64,
  )
  c.data.read_threads = 1
  c.data.prefetch_buffer_size = 1
  c.data.augment.pitch_prob = 0.0
  return c


def flat(tree):
  return {
    jax.tree_util.keystr(p): np.array(x, copy=True)
    for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def state_arrays(state):
  """Everything a resumed run must reproduce, as numpy."""
  return {
    'params': flat(state.params),
    'teacher': flat(state.teacher_params),
    'opt': flat(state.opt_state),
    'vq_stats': flat(state.vq_stats),
    'eos_bias': np.asarray(state.eos_bias),
    'rng': np.asarray(state.rng),
    'step': np.asarray(state.step),
  }


def assert_states_close(got, want, atol=1e-6):
  for part in ('params', 'teacher', 'opt', 'vq_stats'):
    assert got[part].keys() == want[part].keys(), part
    for key in want[part]:
      np.testing.assert_allclose(
        got[part][key], want[part][key], atol=atol, rtol=0, err_msg=f'{part}{key}'
      )
  np.testing.assert_allclose(got['eos_bias'], want['eos_bias'], atol=atol)
  np.testing.assert_array_equal(got['rng'], want['rng'])
  np.testing.assert_array_equal(got['step'], want['step'])


def waves(seed, batch=8):
  """Deterministic two-view batch: harmonic tones with a random pitch and envelope + noise."""
  rng = np.random.default_rng(seed)
  t = np.arange(SEGMENT) / 16_000.0
  f0 = rng.uniform(100, 250, (batch, 1))
  env = np.clip(np.sin(np.pi * t[None] * rng.uniform(1, 4, (batch, 1))), 0, None)
  x = sum(np.sin(2 * np.pi * k * f0 * t[None]) / k for k in range(1, 6)) * env
  v1 = 0.3 * x + 0.01 * rng.standard_normal(x.shape)
  v2 = 0.25 * x + 0.01 * rng.standard_normal(x.shape)
  return {'view1': v1.astype(np.float32), 'view2': v2.astype(np.float32)}


def _record_device_batches(mp) -> list:
  """Patches `Trainer.device_batch` (through MonkeyPatch `mp`) to record the dataset 'index' of
  every batch the train loop feeds to the step; returns the list it appends to."""
  seen = []
  real = train.Trainer.device_batch

  def device_batch(self, local_batch):
    seen.append(np.asarray(local_batch['index']).copy())
    return real(self, local_batch)

  mp.setattr(train.Trainer, 'device_batch', device_batch)
  return seen


@pytest.fixture
def record_batches(monkeypatch):
  """Records the dataset 'index' of every batch the train loop feeds to the step."""
  return _record_device_batches(monkeypatch)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted N-step run through all three stages (and what it compiled and read)."""
  mp = pytest.MonkeyPatch()
  seen = _record_device_batches(mp)
  traces = {0: 0, 1: 0, 2: 0}
  real_train_step = train.train_step

  def counting_train_step(*args, stage, **kwargs):  # runs only when jax traces the step
    traces[stage] += 1
    return real_train_step(*args, stage=stage, **kwargs)

  mp.setattr(train, 'train_step', counting_train_step)
  try:
    workdir = str(tmp_path_factory.mktemp('reference'))
    state = train.train_and_evaluate(tiny_config(), workdir, run_evaluation=False)
  finally:
    mp.undo()
  return {'state': state_arrays(state), 'batches': seen, 'traces': traces, 'workdir': workdir}


# ------------------------------------------------------------------------------ compile per stage


def test_one_compile_per_stage(reference):
  # Steps 0-1 stage 0, 2-3 stage 1, 4-5 stage 2: each stage's step is traced exactly once.
  assert reference['traces'] == {0: 1, 1: 1, 2: 1}
  assert len(reference['batches']) == N_STEPS
  assert reference['state']['step'] == N_STEPS
  ckpt_dir = os.path.join(reference['workdir'], 'checkpoints')
  assert sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) == list(
    range(RESUME_AT, N_STEPS + 1, RESUME_AT)
  )
  # Distinct batches (the iterator moves on), all of the configured size.
  assert all(b.shape == (8,) for b in reference['batches'])
  assert len({tuple(b) for b in reference['batches']}) == N_STEPS


def test_stage_schedule_helpers():
  config = tiny_config()
  assert [train.stage_at(s, config) for s in range(N_STEPS)] == [0, 0, 1, 1, 2, 2]
  # alpha(step): 0 up to stage 2, then a linear ramp over ramp_steps up to schedule.max_alpha.
  top = float(config.schedule.max_alpha)
  assert 0 < top <= 1
  np.testing.assert_allclose(
    [float(train.teacher_alpha(s, config)) for s in (0, 3, 4, 5, 6, 9)],
    [0.0, 0.0, 0.0, 0.5 * top, top, top],
    rtol=1e-6,
  )
  # EMA decay after the student's s-th update: 0 through stage 0's last update (s = 2: the teacher
  # copies the student), 1 after the stage-1 updates (frozen teacher), then a ramp from 0 to the
  # decay over the warmup from stage 2 on.
  decays = [
    float(train_state_lib.ema_decay_at(s, start=4, decay=0.5, warmup_steps=2, frozen_from=2))
    for s in (0, 1, 2, 3, 4, 5, 6, 10)
  ]
  np.testing.assert_allclose(decays, [0.0, 0.0, 0.0, 1.0, 0.0, 0.25, 0.5, 0.5])
  assert float(
    train_state_lib.ema_decay_at(3, start=2, decay=0.9, warmup_steps=0)
  ) == pytest.approx(0.9)
  assert float(train_state_lib.ema_decay_at(1, start=2, decay=0.9, warmup_steps=0)) == 0.0
  out = train_state_lib.ema_update(
    {'w': jnp.array([1.0, 3.0])}, {'w': jnp.array([3.0, -1.0])}, 0.25
  )
  np.testing.assert_allclose(out['w'], [0.25 * 1 + 0.75 * 3, 0.25 * 3 - 0.75])


# ------------------------------------------------------------------------------ non-finite updates


def test_cut_targets_warn_once_a_run(caplog):
  config = tiny_config()
  with caplog.at_level(logging.WARNING):
    assert not train._warn_if_targets_are_cut({'targets/at_max_len': 0.01}, config, False)
    assert train._warn_if_targets_are_cut({}, config, False) is False  # stage 0: no targets
    assert train._warn_if_targets_are_cut({'targets/at_max_len': 0.25}, config, False)
    assert train._warn_if_targets_are_cut({'targets/at_max_len': 0.5}, config, True)
  (record,) = [r for r in caplog.records if 'code slots' in r.getMessage()]
  assert '25.0% of the targets fill all 11 code slots of model.max_len=12' in record.getMessage()


def _toy_state(optimizer):
  params = {'w': jnp.array([1.0, -2.0]), 'b': jnp.array(0.5)}
  return train_state_lib.TrainState(
    step=jnp.array(4, jnp.int32),
    params=params,
    teacher_params=params,
    opt_state=optimizer.init(params),
    vq_stats={'n': jnp.ones((3,))},
    eos_bias=jnp.float32(0.0),
    rng=jax.random.PRNGKey(0),
    nonfinite_steps=jnp.array(0, jnp.int32),
  )


@pytest.mark.parametrize('bad', ['loss', 'grads'])
def test_apply_update_if_finite_skips_non_finite(bad):
  optimizer = optax.adam(0.1)
  state = _toy_state(optimizer)
  good_grads = {'w': jnp.array([1.0, 1.0]), 'b': jnp.array(1.0)}
  grads = dict(good_grads, b=jnp.array(jnp.inf)) if bad == 'grads' else good_grads
  loss = jnp.float32(np.nan) if bad == 'loss' else jnp.float32(1.0)
  new_rng = jax.random.PRNGKey(7)
  skipped, finite = train_state_lib.apply_update_if_finite(
    state, grads, loss, optimizer, new_vq_stats={'n': jnp.full((3,), 9.0)}, new_rng=new_rng
  )
  assert not bool(finite)
  assert int(skipped.step) == 5 and int(skipped.nonfinite_steps) == 1
  for a, b in zip(
    jax.tree.leaves((skipped.params, skipped.opt_state, skipped.vq_stats)),
    jax.tree.leaves((state.params, state.opt_state, state.vq_stats)),
  ):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(skipped.rng, new_rng)  # the RNG still moves on
  skipped2, _ = train_state_lib.apply_update_if_finite(
    skipped, grads, loss, optimizer, new_vq_stats=skipped.vq_stats, new_rng=new_rng
  )
  assert int(skipped2.nonfinite_steps) == 2
  # A finite update applies and resets the count.
  applied, finite = train_state_lib.apply_update_if_finite(
    skipped2,
    good_grads,
    jnp.float32(1.0),
    optimizer,
    new_vq_stats={'n': jnp.full((3,), 9.0)},
    new_rng=new_rng,
  )
  assert bool(finite) and int(applied.nonfinite_steps) == 0
  np.testing.assert_allclose(applied.params['w'], [0.9, -2.1], rtol=1e-5)
  np.testing.assert_array_equal(applied.vq_stats['n'], 9.0)


def test_train_and_evaluate_raises_after_max_nonfinite_steps(tmp_path, monkeypatch):
  """A data stream of NaN audio: every update is skipped, and the loop stops at the limit."""
  config = tiny_config()
  served = []

  def nan_iterator(config, **unused):
    b = config.batch_size
    while True:
      served.append(1)
      yield {
        'view1': np.full((b, SEGMENT), np.nan, np.float32),
        'view2': np.zeros((b, SEGMENT), np.float32),
        'index': np.arange(b) + b * len(served),
        'bad_counts': np.zeros((b, len(bad_input.REASONS)), np.int32),
      }

  monkeypatch.setattr(pipeline, 'make_train_iterator', nan_iterator)
  with pytest.raises(train.NonFiniteError, match='max_nonfinite_steps=2'):
    train.train_and_evaluate(config, str(tmp_path), run_evaluation=False)
  assert len(served) == config.max_nonfinite_steps  # stopped at the limit, not later
  ckpt = os.path.join(tmp_path, 'checkpoints')
  assert not os.path.isdir(ckpt) or not [d for d in os.listdir(ckpt) if d.isdigit()]


def test_a_url_workdir_is_refused_at_start(monkeypatch):
  """gs://... is refused before anything runs (the metrics and reports are written with local
  file calls, which would fail or write a local 'gs:' folder after training)."""
  monkeypatch.setattr(train.Trainer, '__init__', lambda *a, **k: pytest.fail('built a trainer'))
  with pytest.raises(ValueError, match='gcsfuse'):
    train.train_and_evaluate(tiny_config(), 'gs://bucket/runs/x')
  assert not os.path.exists('gs:')


def test_a_periodic_evaluation_reads_a_checkpoint_of_its_own_step(tmp_path, monkeypatch):
  """`eval_every_steps` that is no multiple of `checkpoint_every_steps`: the evaluation still
  finds a checkpoint of its step (saved for it), and the final one the last step's."""
  config = tiny_config()
  config.update(num_train_steps=3, eval_every_steps=2, checkpoint_every_steps=5)
  evaluated = []

  def record(config, workdir, step):
    latest = checkpointing.committed_steps(os.path.join(workdir, 'checkpoints'))[-1]
    evaluated.append((step, latest))

  monkeypatch.setattr(train, '_evaluate', record)
  train.train_and_evaluate(config, str(tmp_path))
  assert evaluated == [(2, 2), (3, 3)]


# ------------------------------------------------------------------------------ meshes

MESH_STEPS = 3
# Attention key biases get an analytically zero gradient (softmax is invariant to adding q.b to
# every key), so what reaches them is float noise that Adam scales up to about +-lr per step: they
# differ between meshes at the 1e-4 level. They are checked to stay at that noise level instead.
ZERO_GRAD_LEAVES = ("['key']['bias']", "['self_key']['bias']")


def _mesh_run(shape):
  """MESH_STEPS stage-2 steps from the initial state on `shape` (fixed batches)."""
  config = tiny_config()
  config.mesh.shape = shape
  mesh = sharding.make_mesh(config, devices=jax.devices()[: int(np.prod(shape))])
  trainer = train.Trainer(config, mesh=mesh)
  state = trainer.init_state()
  losses = []
  for i in range(MESH_STEPS):
    state, metrics = trainer.run_step(state, trainer.device_batch(waves(10 + i)), 2)
    losses.append(float(jax.device_get(metrics['loss/total'])))
  return losses, state_arrays(state), state


@pytest.fixture(scope='module')
def mesh_reference():
  """The 8-way data-parallel mesh (the default one: its stage-2 step is the reference run's)."""
  losses, arrays, _ = _mesh_run((8, 1, 1))
  return losses, arrays


@pytest.mark.parametrize(
  'shape',
  [
    (2, 2, 2),
    pytest.param((1, 1, 1), marks=pytest.mark.slow),
    pytest.param((2, 4, 1), marks=pytest.mark.slow),
  ],
)
def test_real_train_step_is_mesh_independent(mesh_reference, shape):
  ref_losses, ref = mesh_reference
  losses, got, state = _mesh_run(shape)
  assert all(np.isfinite(ref_losses)) and ref_losses[0] != ref_losses[-1]
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-5)
  noise_leaves = 0
  for part in ('params', 'teacher', 'vq_stats'):
    for key in ref[part]:
      if key.endswith(ZERO_GRAD_LEAVES):
        noise_leaves += 1
        lr_noise = 2 * MESH_STEPS * tiny_config().optim.learning_rate
        assert (
          np.max(np.abs(got[part][key])) <= lr_noise and np.max(np.abs(ref[part][key])) <= lr_noise
        )
        continue
      np.testing.assert_allclose(
        got[part][key], ref[part][key], rtol=1e-4, atol=1e-5, err_msg=f'{part}{key}'
      )
  assert noise_leaves >= 3
  np.testing.assert_allclose(got['eos_bias'], ref['eos_bias'], atol=1e-6)
  np.testing.assert_array_equal(got['rng'], ref['rng'])
  # The parameters are laid out on the mesh (FSDP shards 'embed', tensor shards 'mlp').
  _, fsdp, tensor = shape
  kernel = state.params['decoder']['layers']['mlp']['wi']['kernel']  # [layers, embed, mlp]
  assert kernel.addressable_shards[0].data.shape == (1, 32 // fsdp, 64 // tensor)


# ------------------------------------------------------------------------------ exact resume


@pytest.mark.slow  # the SIGKILL test below covers exact resume in the default run
def test_resume_after_preemption_is_exact(reference, record_batches, tmp_path, monkeypatch):
  """Stopped (preemption path: save + exit) at step PREEMPT_AT, then resumed in the same workdir."""
  workdir = str(tmp_path)
  real_should_stop = checkpointing.Checkpointer.should_stop
  monkeypatch.setattr(
    checkpointing.Checkpointer,
    'should_stop',
    lambda self, step: step == PREEMPT_AT or real_should_stop(self, step),
  )
  first = train.train_and_evaluate(tiny_config(), workdir, run_evaluation=False)
  assert int(first.step) == PREEMPT_AT and len(record_batches) == PREEMPT_AT
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(PREEMPT_AT)))  # the forced save
  monkeypatch.setattr(checkpointing.Checkpointer, 'should_stop', real_should_stop)
  final = train.train_and_evaluate(tiny_config(), workdir, run_evaluation=False)
  assert_states_close(state_arrays(final), reference['state'])
  assert len(record_batches) == N_STEPS
  for got, want in zip(record_batches, reference['batches']):
    np.testing.assert_array_equal(got, want)


_CHILD = r"""
import os, sys, time
import numpy as np
sys.path[:0] = [{root!r}, {here!r}]
import jax
jax.config.update('jax_compilation_cache_dir', {cache!r})
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
import train_test
from pairalign_jax import checkpointing, train

real_save = checkpointing.Checkpointer.save
def save(self, step, *args, **kwargs):
  out = real_save(self, step, *args, **kwargs)
  if step == {kill_at}:
    self.wait_until_finished()
    open({marker!r}, 'w').write('saved')
    time.sleep(3600)                     # the parent SIGKILLs us here
  return out
checkpointing.Checkpointer.save = save

real_batch = train.Trainer.device_batch
def device_batch(self, local_batch):
  with open({batches!r}, 'a') as f:
    f.write(' '.join(str(int(i)) for i in local_batch['index']) + '\n')
  return real_batch(self, local_batch)
train.Trainer.device_batch = device_batch
train.train_and_evaluate(train_test.tiny_config(), {workdir!r}, run_evaluation=False)
"""


def test_resume_after_sigkill_is_exact(reference, record_batches, tmp_path):
  """A run SIGKILLed (in another process) after checkpoint RESUME_AT, resumed here."""
  workdir, marker, batches = tmp_path / 'run', tmp_path / 'saved', tmp_path / 'batches.txt'
  cache = jax.config.jax_compilation_cache_dir
  script = tmp_path / 'child.py'
  script.write_text(
    _CHILD.format(
      root=ROOT,
      here=HERE,
      cache=cache,
      kill_at=RESUME_AT,
      marker=str(marker),
      batches=str(batches),
      workdir=str(workdir),
    )
  )
  # The XLA flags of this process (tests/conftest.py): the child's steps are then the reference's.
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  log = open(tmp_path / 'child.log', 'w+')
  proc = subprocess.Popen(
    [sys.executable, str(script)], env=env, stdout=log, stderr=subprocess.STDOUT
  )
  try:
    deadline = time.time() + 900
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
      time.sleep(0.2)
    alive = proc.poll() is None
    if alive:
      os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  log.seek(0)
  assert marker.exists() and alive, log.read()[-3000:]
  assert proc.returncode == -signal.SIGKILL
  assert (workdir / 'checkpoints' / str(RESUME_AT)).is_dir()
  assert not [d for d in os.listdir(workdir / 'checkpoints') if d.isdigit() and int(d) > RESUME_AT]

  final = train.train_and_evaluate(tiny_config(), str(workdir), run_evaluation=False)
  assert_states_close(state_arrays(final), reference['state'])
  child_batches = [np.array(line.split(), np.int64) for line in batches.read_text().splitlines()]
  assert len(child_batches) == RESUME_AT and len(record_batches) == N_STEPS - RESUME_AT
  for got, want in zip(child_batches + record_batches, reference['batches']):
    np.testing.assert_array_equal(got, want)
