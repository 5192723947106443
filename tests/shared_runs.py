"""Tiny training runs that several test files read, built once per test session.

Under pytest-xdist every worker is its own process and test files are spread over the workers: the
first worker to ask for a run builds it under a file lock in the session's shared temporary
folder, and the others wait for it and read the same workdir. A run whose build failed is built
again by the next test that asks (and fails that test the same way). Treat the workdirs as
read-only: copy one (`shutil.copytree`) before writing into it.
"""

import fcntl
import os
import pathlib
import shutil
from typing import Callable

from train_test import tiny_config

from pairalign_jax import checkpointing
from pairalign_jax import train

_DONE = 'BUILT'


def session_dir(tmp_path_factory) -> pathlib.Path:
  """A folder every worker of this test session sees (the workers' temporary folders share their
  parent, which is new for each session); this process's own one without xdist."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


def shared_workdir(tmp_path_factory, name: str, build: Callable[[str], None]) -> str:
  """The workdir `<session folder>/<name>`, built by `build(workdir)` by the first process to
  ask for it while the others wait."""
  root = session_dir(tmp_path_factory)
  workdir = root / name
  with open(root / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if not (workdir / _DONE).exists():
        shutil.rmtree(workdir, ignore_errors=True)  # what a failed build left
        workdir.mkdir()
        build(str(workdir))
        (workdir / _DONE).touch()
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return str(workdir)


def with_units(c):
  """`c` with small acoustic-unit targets for the stage-0 code prediction (units_test.py)."""
  c.loss.code_pred_targets = 'units'
  c.loss.unit_clusters = 8
  c.loss.unit_coeffs = 4
  c.loss.unit_fit_recordings = 8
  return c


def with_vq_refit(c):
  """`c` with the VQ stage refitted at the start of stage 1 and what that needs: the encoder
  frozen from there and the sequence terms off it (vq_refit_test.py)."""
  c.vq.refit = 'pca_kmeans'
  c.vq.refit_recordings = 8
  c.schedule.freeze_encoder = 'stage1'
  c.loss.sequence_losses_train_encoder = False
  return c


def with_grouping_choice(c):
  """`c` choosing its code grouping among 3 candidates at the start of stage 1
  (code_group_choice_test.py)."""
  c.targets.group_candidates = 3
  c.targets.group_choice_recordings = 6
  return c


def stage1_config():
  """tiny_config with the start of stage 1 of configs/small_corpus.py: acoustic-unit targets in
  stage 0, the VQ refitted to the frozen encoder and then the code grouping chosen (3 candidates)
  at stage1_start = 2; four steps, a checkpoint after every one (all kept)."""
  c = with_grouping_choice(with_vq_refit(with_units(tiny_config())))
  c.num_train_steps = 4
  c.schedule.update(stage1_start=2, stage2_start=4)
  c.checkpoint_every_steps = 1
  c.checkpoint.keep_period = 1
  return c


def stage1_run(tmp_path_factory):
  """The session's run of `stage1_config()` through steps 0-3: (config, workdir, final state,
  read back from its last checkpoint)."""
  config = stage1_config()
  workdir = shared_workdir(
    tmp_path_factory,
    'stage1_run',
    lambda w: train.train_and_evaluate(config, w, run_evaluation=False),
  )
  ckpt = checkpointing.Checkpointer.from_config(f'{workdir}/checkpoints', config)
  try:
    restored = ckpt.restore_latest(train.Trainer(config).abstract_state, None)
  finally:
    ckpt.close()
  assert restored is not None, workdir
  return config, workdir, restored[0]
