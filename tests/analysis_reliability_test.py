"""Reliability of the analysis side: stereo arrays, damaged checkpoints, bounded
memory on long audio, length-control and input errors that name the argument, monotone times,
and the training CLI's config errors. On the tiny checkpoint of tokenizer_test.py (damaged
copies are made here)."""

import glob
import logging
import os
import shutil
import subprocess
import sys
import tracemalloc

import jax
import numpy as np
import pytest
import tokenizer_test

from pairalign_jax import checkpointing
from pairalign_jax.tokenizer import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR, SEG, STEPS = tokenizer_test.SR, tokenizer_test.SEG, tokenizer_test.STEPS


@pytest.fixture(scope='session')
def workdir(tmp_path_factory):
  return tokenizer_test.tiny_workdir(tmp_path_factory)


@pytest.fixture(scope='module')
def tok(workdir):
  return Tokenizer.from_checkpoint(workdir, batch_size=4)


@pytest.fixture(scope='module')
def waves():
  return tokenizer_test.make_waves(4)


# ------------------------------------------------------------- 1. stereo / multi-channel arrays
def test_stereo_array_is_one_clip_not_a_batch(tok, waves, caplog):
  stereo = np.stack([waves[0], waves[1]], axis=1)  # [48000, 2], as soundfile reads
  mono = (waves[0] + waves[1]) / 2
  with caplog.at_level(logging.INFO):
    out = tok.tokenize(stereo)
  assert len(out.tokens) == 1  # not 48 000 two-sample clips
  assert out.tokens == tok.tokenize(mono).tokens
  assert any('2-channel clip' in r.getMessage() for r in caplog.records)
  np.testing.assert_allclose(tok.prepare(stereo)[0], mono, atol=1e-6)
  # [batch, samples] with batch < samples stays a batch.
  assert tok.tokenize(np.stack(waves[:3])).tokens == tok.tokenize(list(waves[:3])).tokens
  # Neither a batch nor a few channels: an error saying how to pass it, before any allocation.
  with pytest.raises(ValueError, match=r'shape \(48000, 9\).*list'):
    tok.tokenize(np.zeros((SEG, 9), np.float32))
  # In a list, [n, 9] is averaged over its 9 channels (the shorter axis), as is [2, n].
  nine = np.stack([waves[2]] * 9, axis=1)
  np.testing.assert_allclose(tok.prepare([nine])[0], waves[2], atol=1e-6)
  np.testing.assert_allclose(tok.prepare([stereo.T])[0], mono, atol=1e-6)


# ------------------------------------------------------------------ 2. damaged checkpoints
def _damaged_copy(workdir, tmp_path, how):
  copy = str(tmp_path / f'run_{how}')
  shutil.copytree(workdir, copy)
  state = os.path.join(copy, 'checkpoints', str(STEPS[1]), 'state')
  if how == 'truncated':
    for f in glob.glob(os.path.join(state, 'ocdbt.process_0', 'd', '*')):
      with open(f, 'rb') as fh:
        data = fh.read()
      with open(f, 'wb') as fh:
        fh.write(data[: len(data) // 2])
  elif how == 'deleted':
    for f in glob.glob(os.path.join(state, 'ocdbt.process_0', 'd', '*')):
      os.remove(f)
  else:  # '_METADATA', 'manifest.ocdbt'
    os.remove(os.path.join(state, how))
  return copy


@pytest.mark.parametrize(
  'how, names',
  [
    ('truncated', 'truncated'),
    ('deleted', 'missing'),
    ('_METADATA', '_METADATA'),
    ('manifest.ocdbt', 'manifest.ocdbt'),
  ],
)
def test_damaged_newest_step_falls_back_and_explicit_step_is_one_line(
  workdir, tmp_path, caplog, how, names
):
  copy = _damaged_copy(workdir, tmp_path, how)
  with caplog.at_level(logging.WARNING):
    t = Tokenizer.from_checkpoint(copy, batch_size=4)
  assert t.default_eos_bias == pytest.approx(tokenizer_test.OLD_EOS_BIAS)  # step 3 was loaded
  skipped = [r.getMessage() for r in caplog.records if 'skipping step' in r.getMessage()]
  assert len(skipped) == 1 and f'step {STEPS[1]}' in skipped[0] and names in skipped[0]
  with pytest.raises(ValueError, match=f'step {STEPS[1]} cannot be loaded') as info:
    Tokenizer.from_checkpoint(copy, step=STEPS[1])
  message = str(info.value)
  assert '\n' not in message and len(message) < 600 and names in message
  assert 'TensorStore(' not in message and info.value.__cause__ is None
  with pytest.raises(checkpointing.CheckpointReadError, match=f'step {STEPS[1]}'):
    Tokenizer.from_checkpoint(os.path.join(copy, 'checkpoints', str(STEPS[1])))


def test_no_step_loads_is_one_error_listing_each(workdir, tmp_path):
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy)
  for s in STEPS:
    os.remove(os.path.join(copy, 'checkpoints', str(s), 'state', '_METADATA'))
  with pytest.raises(checkpointing.CheckpointReadError, match='step 7: .*; step 3: '):
    Tokenizer.from_checkpoint(copy)


def test_healthy_load_logs_no_missing_metadata_warning(workdir, caplog):
  with caplog.at_level(logging.INFO):
    Tokenizer.from_checkpoint(workdir, batch_size=4)
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [
    r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
  ]


# ------------------------------------------------------------- 3. long audio: bounded memory, hop
def _peak_mib(fn):
  tracemalloc.start()
  try:
    fn()
    return tracemalloc.get_traced_memory()[1] / 2**20
  finally:
    tracemalloc.stop()


def test_tokenize_long_memory_is_bounded_by_the_batch(workdir):
  """numpy allocations (traced) beyond the input for 1 min vs 20 min of audio: the windows are
  tokenized one batch at a time (all at once, 20 min at hop 1 s would be ~230 MB more)."""
  t = Tokenizer.from_checkpoint(workdir, batch_size=64)
  rng = np.random.default_rng(0)
  peaks = {}
  for minutes in (1, 20):
    wave = (0.1 * rng.standard_normal(minutes * 60 * SR)).astype(np.float32)
    res = []
    peaks[minutes] = _peak_mib(lambda: res.extend(t.tokenize_long(wave, hop_seconds=1.0, vq=True)))
    assert len(res) == minutes * 60 - 2
  assert peaks[20] - peaks[1] < 50, peaks


@pytest.mark.parametrize('hop', [0.0, -1.0, float('nan'), float('inf'), 3.5, 1e9])
def test_bad_hop_seconds_is_named(tok, waves, hop):
  with pytest.raises(ValueError, match=r'hop_seconds must be .*\(0, 3\]'):
    tok.tokenize_long(np.concatenate(waves), hop_seconds=hop)


# ------------------------------------------------------------------ 4. length-control arguments
def test_eos_bias_and_target_rate_are_checked(tok, waves, caplog):
  for bad in (float('nan'), float('inf'), '1'):
    with pytest.raises(ValueError, match='eos_bias must be a finite number'):
      tok.tokenize(waves[:1], eos_bias=bad)
  cal = Tokenizer(tok.config, tok.variables, batch_size=4, calibration=[(0.0, 5.0), (4.0, 1.0)])
  for bad in (0.0, -2.0, float('nan'), float('inf')):
    with pytest.raises(
      ValueError, match=r'target_rate must be a finite number of tokens per second > 0'
    ):
      cal.tokenize(waves[:1], target_rate=bad)
  with caplog.at_level(logging.WARNING):
    cal.tokenize(waves[:1], target_rate=1000.0)
    cal.tokenize(waves[:1], target_rate=1000.0)
    cal.tokenize_long(np.concatenate(waves), target_rate=0.01)
  clamped = [r for r in caplog.records if 'outside the calibrated range' in r.getMessage()]
  assert len(clamped) == 1 and '[1, 5]' in clamped[0].getMessage()
  for option in ({'eos_bias': 0.5}, {'target_rate': 3.0}):  # no length to set on VQ codes
    with pytest.raises(ValueError, match='vq=True gives the collapsed VQ codes'):
      cal.tokenize_long(np.concatenate(waves), vq=True, **option)


# ------------------------------------------------------------------ 6. monotone times
def test_times_are_the_running_maximum_of_the_raw_times(tok, waves):
  """The raw times are the decoder's; with a damped cross-attention they step back, and the
  output times stay non-decreasing (the running maximum)."""
  out = tok.tokenize(waves)
  ref = tokenizer_test._greedy(tok, waves, tokenizer_test.TRAINED_EOS_BIAS)
  for i, (times, raw) in enumerate(zip(out.times, out.raw_times)):
    n = len(out.tokens[i])
    np.testing.assert_allclose(raw, ref.times[i, :n], atol=1e-5)
    np.testing.assert_array_equal(times, np.maximum.accumulate(raw) if n else raw)
    assert np.all(np.diff(times) >= 0)
  # A model whose raw times do go backwards (random-ish decoder weights): still monotone output.
  shaken = jax.tree_util.tree_map_with_path(
    lambda p, x: x * 4.0 if 'cross' in jax.tree_util.keystr(p) else x, tok.variables
  )
  other = Tokenizer(tok.config, shaken, eos_bias=-100.0, batch_size=4)
  out = other.tokenize(tokenizer_test.make_waves(8, seed=3))
  assert any(np.any(np.diff(r) < 0) for r in out.raw_times)  # the test can fail
  assert all(np.all(np.diff(t) >= 0) for t in out.times)
  assert all(np.all(t >= r) for t, r in zip(out.times, out.raw_times))
  for r in other.tokenize_long(np.concatenate(tokenizer_test.make_waves(3, seed=4))):
    assert r['times'] == sorted(r['times'])


# ------------------------------------------------------------------ 9. inputs named as passed
def test_plain_list_of_floats_is_one_clip(tok, waves):
  out = tok.tokenize([float(x) for x in waves[0]])
  assert out.tokens == tok.tokenize(waves[0]).tokens


@pytest.mark.parametrize('rate', [0.5, float('nan'), 0, -16000, 'fast', 22050.5])
def test_bad_sample_rate_is_named_as_passed(tok, waves, rate):
  with pytest.raises(ValueError, match=f'sample_rate must be .*got {rate!r}'):
    tok.tokenize(waves[:1], sample_rate=rate)
  with pytest.raises(ValueError, match=f'sample_rate must be .*got {rate!r}'):
    tok.tokenize_long(waves[0], sample_rate=rate)


# ------------------------------------------------------------------ 8. training CLI config errors
def _main(tmp_path, *overrides):
  env = dict(
    os.environ,
    JAX_PLATFORMS='cpu',
    XLA_FLAGS='',
    PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
  )
  return subprocess.run(
    [
      sys.executable,
      '-m',
      'pairalign_jax.main',
      '--config=configs/default.py',
      f'--workdir={tmp_path / "wd"}',
      *overrides,
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


def test_main_unknown_override_key_is_one_line(tmp_path):
  proc = _main(tmp_path, '--config.model.d_modle=3')
  assert proc.returncode == 1
  assert 'Traceback' not in proc.stderr
  line = proc.stderr.strip().splitlines()[-1]
  assert 'config.model.d_modle' in line and 'nearest valid keys: config.model.d_model' in line
  proc = _main(tmp_path, '--config.model.unknown_key=3')
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr
  assert (
    'config.model.unknown_key: unknown config key' in proc.stderr and 'num_heads' in proc.stderr
  )


def test_main_bad_d_model_names_d_model(tmp_path):
  proc = _main(tmp_path, '--config.model.d_model=-1')
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr
  assert 'config.model.d_model: must be a positive integer' in proc.stderr.strip().splitlines()[-1]
