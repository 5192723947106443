"""Checkpoints: Orbax `CheckpointManager` with the train state, data iterator, config and metadata.

Layout of `directory` (usually `<workdir>/checkpoints`), one folder per saved step::

  <step>/state/        the train-state pytree (StandardSave; sharded arrays, any mesh)
  <step>/data_iter/    grain iterator state, one `process_<i>-of-<n>.json` per process
  <step>/config/       the run config (`config.to_dict()`, JSON)
  <step>/meta/         optional JSON (data statistics, skipped-file counts, frontend settings)
  <step>/commit_success.txt   Orbax's commit marker, written last

`Checkpointer` is what the train loop uses (save, restore the newest intact checkpoint, preemption);
`restore_params`, `read_config`, `read_meta` and `state_metadata` read a finished run for analysis
or fine-tuning (`config.init_from`, train.py) on any mesh without the optimizer state.
`load_for_analysis` is what the Tokenizer uses: like training resume, it skips damaged newer steps
(`damage` finds a missing or truncated file in one line, before Orbax reads anything) and logs
which one it skipped and why; for an explicitly chosen step it raises `CheckpointReadError`, one
line naming the step and the file.

Torn checkpoints: Orbax writes into `<step>.orbax-checkpoint-tmp-*` and renames, so an interrupted
save leaves no `<step>` folder (such leftovers are logged and ignored). A `<step>` folder without
the commit marker, or one whose files are missing or truncated, fails to restore:
`restore_latest` logs a warning naming it, falls back to the previous step, and moves the broken
folder aside to `<step>.corrupt` so that later saves of that step are not blocked.

Preemption: `install_preemption_handler()` turns SIGTERM into a flag; `should_stop(step)` is that
flag, or JAX's multi-host preemption sync point when `jax.distributed` runs with the preemption
service (then all processes agree on the step to stop at). The loop does::

  if ckpt.should_stop(step):
    ckpt.save(step, state, data_iter, force=True)
    break
"""

from __future__ import annotations

import json
import os
import signal
import threading
from typing import Any, Iterable, Mapping, Optional, Sequence

from absl import logging
from etils import epath
import grain
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

from pairalign_jax import config_lib

STATE, DATA_ITER, CONFIG, META = 'state', 'data_iter', 'config', 'meta'
# Orbax's commit marker (orbax/checkpoint/_src/path/atomicity_types.py: COMMIT_SUCCESS_FILE); in
# Orbax 0.12 it is written into every step folder, on local disks and object stores alike.
COMMIT_MARKER = 'commit_success.txt'
TMP_SUFFIX = '.orbax-checkpoint-tmp'
CORRUPT_SUFFIX = '.corrupt'
PARAM_ITEMS = ('params', 'teacher_params', 'vq_stats', 'eos_bias')


class NoUsableCheckpointError(RuntimeError):
  """Checkpoints exist but none of them could be restored."""


class CheckpointReadError(ValueError):
  """A checkpoint step cannot be read for analysis (one line: the step and the file at fault)."""


# ------------------------------------------------------------------------------------- helpers


def _jsonable(value: Any) -> Any:
  """Plain JSON types from configs/metadata (tuples -> lists, numpy -> python)."""
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.ndarray, jax.Array)):
    return _jsonable(np.asarray(value).tolist())
  if isinstance(value, np.generic):
    return value.item()
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  return str(value)


def _tuples(value: Any) -> Any:
  """JSON lists back to the tuples the configs use."""
  if isinstance(value, Mapping):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def _config_dict(config) -> Optional[dict]:
  if config is None:
    return None
  if isinstance(config, ml_collections.ConfigDict):
    config = config.to_dict()
  return _jsonable(config)


class _IteratorSnapshot:
  """The state of a grain iterator, taken when `save` is called.

  The grain checkpoint handler writes whatever `get_state()` returns; freezing it here keeps an
  async save from recording an iterator that the loop has advanced meanwhile. The file written
  is byte-identical to what grain writes for the live iterator.
  """

  def __init__(self, iterator):
    state = iterator.get_state()
    if isinstance(iterator, grain.DatasetIterator):
      state = json.dumps(state, indent=4).encode()
    elif not isinstance(state, bytes):
      raise TypeError(
        f'data_iter: unsupported iterator {type(iterator).__name__}; expected a grain '
        'DatasetIterator or DataLoaderIterator'
      )
    self._state = state

  def get_state(self) -> bytes:
    return self._state


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _all_processes(ok: bool) -> bool:
  """True when `ok` holds on every process."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.array([ok]), tiled=True)))


def _any_process(flag: bool) -> bool:
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.array([flag]), tiled=True)))


def committed_steps(directory: epath.PathLike) -> list[int]:
  """Steps under `directory` whose folder is named by the step and holds the commit marker."""
  directory = epath.Path(directory)
  if not directory.is_dir():
    return []
  return sorted(
    int(p.name)
    for p in directory.iterdir()
    if p.name.isdigit() and p.is_dir() and (p / COMMIT_MARKER).exists()
  )


def _warn_uncommitted(directory: epath.Path) -> None:
  if not directory.is_dir():
    return
  for p in sorted(directory.iterdir()):
    if TMP_SUFFIX in p.name:
      logging.warning('checkpoint: ignoring uncommitted (interrupted) checkpoint folder %s', p)


def step_dir(path: epath.PathLike, step: Optional[int] = None) -> epath.Path:
  """The folder of one saved step from a workdir, a checkpoints folder or a step folder.

  `path` may be a workdir (its `checkpoints/` subfolder is used), the checkpoints folder itself,
  or one step's folder (then `step` must be None or match). Without `step`, the newest committed.
  """
  path = epath.Path(path)
  if (path / STATE).is_dir():
    if step is not None and path.name != str(step):
      raise ValueError(f'{path} is the checkpoint of step {path.name}, not of step {step}')
    return path
  directory = path / 'checkpoints' if (path / 'checkpoints').is_dir() else path
  steps = committed_steps(directory)
  if not steps:
    raise FileNotFoundError(f'no committed checkpoint under {path} (looked in {directory})')
  if step is None:
    return directory / str(steps[-1])
  if step not in steps:
    raise FileNotFoundError(
      f'no committed checkpoint of step {step} under {directory}; have {steps}'
    )
  return directory / str(step)


def workdir_of(path: epath.PathLike) -> Optional[str]:
  """The run's workdir for a workdir, its `checkpoints/` folder or a step folder; else None."""
  path = epath.Path(path)
  if (path / 'checkpoints').is_dir():
    return str(path)
  if (path / STATE).is_dir():
    path = path.parent
  if path.name == 'checkpoints':
    return str(path.parent)
  return None


# ---------------------------------------------------------------------------------- Checkpointer


class Checkpointer:
  """Saves and restores train state + data iterator + config + metadata with Orbax.

  Multi-process safe (every process calls every method in the same order); not thread safe.
  Use as a context manager or call `close()`.
  """

  def __init__(
    self,
    directory: epath.PathLike,
    *,
    max_to_keep: Optional[int] = 3,
    keep_period: Optional[int] = None,
    async_save: bool = True,
    save_interval_steps: int = 1,
    config: Optional[ml_collections.ConfigDict] = None,
  ):
    """
    Args:
      directory: folder of the step folders (usually `<workdir>/checkpoints`); created if missing.
      max_to_keep: keep at most this many newest checkpoints (None = all).
      keep_period: also keep every checkpoint whose step is a multiple of this (None or 0 = off).
      async_save: write in a background thread (`save` returns once arrays are on the host).
      save_interval_steps: `save` without `force` only saves steps that are multiples of this.
      config: the run config, saved as JSON with every checkpoint (`read_config`).
    """
    self.directory = epath.Path(directory)
    self._config = _config_dict(config)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      keep_period=keep_period or None,
      save_interval_steps=save_interval_steps,
      enable_async_checkpointing=async_save,
      create=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._preempted = threading.Event()
    self._previous_handler = None
    _warn_uncommitted(self.directory)

  @classmethod
  def from_config(
    cls, directory: epath.PathLike, config: ml_collections.ConfigDict
  ) -> 'Checkpointer':
    """Built from `config.checkpoint` (max_to_keep, keep_period, async_save); saves `config`."""
    ck = config.checkpoint
    return cls(
      directory,
      max_to_keep=ck.max_to_keep,
      keep_period=ck.keep_period or None,
      async_save=ck.async_save,
      config=config,
    )

  # -------------------------------------------------------------------------------- saving

  def save(
    self,
    step: int,
    state: Any,
    data_iter=None,
    *,
    force: bool = False,
    meta: Optional[Mapping[str, Any]] = None,
    config: Optional[ml_collections.ConfigDict] = None,
  ) -> bool:
    """Saves `state` (and the iterator, config, meta) as checkpoint `step`.

    The iterator's position is taken now, so the loop may advance it while an async save runs.
    Returns False when nothing was saved: `step` is not a multiple of `save_interval_steps`
    (unless `force`), or it is already saved (e.g. a preemption save right after a periodic one).
    """
    step = int(step)
    if step in self._manager.all_steps():
      logging.info('checkpoint: step %d already saved', step)
      return False
    items = {STATE: ocp.args.StandardSave(state)}
    if data_iter is not None:
      items[DATA_ITER] = grain.checkpoint.CheckpointSave(_IteratorSnapshot(data_iter))
    config = _config_dict(config) if config is not None else self._config
    if config is not None:
      items[CONFIG] = ocp.args.JsonSave(config)
    if meta is not None:
      items[META] = ocp.args.JsonSave(_jsonable(meta))
    saved = self._manager.save(step, args=ocp.args.Composite(**items), force=force)
    if saved:
      logging.info('checkpoint: saving step %d to %s', step, self.directory)
    return bool(saved)

  def wait_until_finished(self) -> None:
    """Blocks until pending async saves are committed."""
    self._manager.wait_until_finished()

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  # ------------------------------------------------------------------------------ restoring

  def restore(
    self, step: int, abstract_state: Any, data_iter=None, *, state_sharding: Any = None
  ) -> Any:
    """Restores checkpoint `step` into the structure of `abstract_state`; sets `data_iter`.

    `abstract_state` leaves are arrays or `jax.ShapeDtypeStruct`s carrying their target sharding
    (e.g. from `sharding.abstract_state_and_shardings`); `state_sharding`, a matching tree of
    shardings, overrides them. The data iterator is restored in place (when given and saved).
    """
    target = abstract_state
    if state_sharding is not None:
      target = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        abstract_state,
        state_sharding,
      )
    items = {STATE: ocp.args.StandardRestore(target)}
    if data_iter is not None:
      if (self.directory / str(step) / DATA_ITER).is_dir():
        items[DATA_ITER] = grain.checkpoint.CheckpointRestore(data_iter)
      else:
        logging.warning(
          'checkpoint: step %d has no data iterator state; the iterator starts afresh', step
        )
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored[STATE]

  def restore_latest(
    self, abstract_state: Any, data_iter=None, *, state_sharding: Any = None
  ) -> Optional[tuple[Any, int]]:
    """(state, step) from the newest checkpoint that restores; None when there is none.

    A checkpoint that fails to restore (no commit marker, missing or truncated files) is logged
    with a warning naming its folder and the next older one is tried; once one restores, the
    broken newer folders are moved aside to `<step>.corrupt`.

    Raises:
      NoUsableCheckpointError: checkpoints exist but none restores (e.g. the state structure of
        the code no longer matches them); nothing is moved in that case.
    """
    self._manager.reload()
    _warn_uncommitted(self.directory)
    steps = sorted(self._manager.all_steps(), reverse=True)
    failures = []
    for step in steps:
      folder = self.directory / str(step)
      error = None
      if not (folder / COMMIT_MARKER).exists():
        error = f'no commit marker {COMMIT_MARKER}'
      else:
        try:
          state = self.restore(step, abstract_state, data_iter, state_sharding=state_sharding)
        except Exception as e:  # noqa: BLE001
          error = f'{type(e).__name__}: {e}'
      if not _all_processes(error is None):
        error = error or 'failed to restore on another process'
      if error is None:
        if failures:
          self._move_aside([s for s, _ in failures])
        logging.info('checkpoint: restored step %d from %s', step, folder)
        return state, step
      logging.warning(
        'checkpoint: %s is torn or corrupt (%s); falling back to the previous one',
        folder,
        error[:500],
      )
      failures.append((step, error))
    if failures:
      raise NoUsableCheckpointError(
        f'none of the checkpoints in {self.directory} could be restored: '
        + '; '.join(f'step {s}: {e[:200]}' for s, e in failures)
      )
    return None

  def _move_aside(self, steps: Sequence[int]) -> None:
    if jax.process_index() == 0:
      for step in steps:
        src = self.directory / str(step)
        dst = self.directory / f'{step}{CORRUPT_SUFFIX}'
        n = 1
        while dst.exists():
          dst, n = self.directory / f'{step}{CORRUPT_SUFFIX}{n}', n + 1
        if src.exists():
          src.rename(dst)
          logging.warning('checkpoint: moved corrupt checkpoint %s to %s', src, dst)
    _sync('pairalign_checkpoint_move_aside')
    self._manager.reload()

  def read_meta(self, step: Optional[int] = None) -> Optional[dict]:
    """The 'meta' JSON of `step` (default: latest), or None when it was not saved."""
    return read_meta(self.directory, step=step)

  # ----------------------------------------------------------------------------- preemption

  def install_preemption_handler(self) -> bool:
    """Turns SIGTERM into a stop request (see `should_stop`). Call from the main thread.

    Not installed when JAX's own preemption service is running (multi-process
    `jax.distributed`): it already watches SIGTERM and `should_stop` uses its sync point.
    Returns whether the Python handler was installed; `close()` restores the previous one.
    """
    if jax.process_count() > 1 and _preemption_service_running():
      logging.info('preemption: using the JAX preemption sync point (jax.distributed)')
      return False
    previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    if self._previous_handler is None:
      self._previous_handler = previous
    logging.info('preemption: SIGTERM saves a checkpoint and stops')
    return True

  def uninstall_preemption_handler(self) -> None:
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)
      self._previous_handler = None

  def _on_sigterm(self, signum, frame):
    del frame
    logging.warning('preemption: received signal %d; will checkpoint and stop', signum)
    self._preempted.set()

  def request_stop(self) -> None:
    """Asks the loop to checkpoint and stop (what SIGTERM does)."""
    self._preempted.set()

  @property
  def preempted(self) -> bool:
    """This process received SIGTERM (or `request_stop`)."""
    return self._preempted.is_set()

  def should_stop(self, step: int) -> bool:
    """Whether the loop should save now and stop. Call on every process at every step.

    Single process: the SIGTERM flag. Multi-process: JAX's preemption sync point when the
    preemption service runs (all processes return True at the same step), otherwise the flag
    of any process (one small all-gather per call).
    """
    flag = self._preempted.is_set()
    if jax.process_count() == 1:
      return flag or _reached_sync_point(step) is True
    synced = _reached_sync_point(step)
    if synced is None:
      return _any_process(flag)
    return synced

  # ----------------------------------------------------------------------------------- close

  def close(self) -> None:
    """Waits for pending saves, closes the manager and restores the previous SIGTERM handler."""
    self._manager.wait_until_finished()
    self._manager.close()
    self.uninstall_preemption_handler()

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _reached_sync_point(step: int) -> Optional[bool]:
  """JAX's preemption sync point; None when the preemption service is not running."""
  if not jax.distributed.is_initialized():
    return None
  try:
    return bool(multihost_utils.reached_preemption_sync_point(int(step)))
  except RuntimeError:  # jax_enable_preemption_service is off
    return None


def _preemption_service_running() -> bool:
  return _reached_sync_point(0) is not None


# ------------------------------------------------------------------------------- analysis reads


def state_metadata(path: epath.PathLike, step: Optional[int] = None) -> Mapping[str, Any]:
  """The saved train state's fields without reading arrays: `{field: pytree of array metadata}`
  (each leaf has `.shape` and `.dtype`). `path` and `step` as in `step_dir`."""
  folder = step_dir(path, step)
  # The handler, not `StandardCheckpointer().metadata`: that also looks for a step-level
  # `state/_CHECKPOINT_METADATA`, which the manager never writes there, and warns on every load.
  try:
    metadata = ocp.StandardCheckpointHandler().metadata(folder / STATE).tree
  except (FileNotFoundError, ValueError) as e:
    raise CheckpointReadError(
      f'{folder / STATE}: cannot read the saved state metadata ({_one_line(e)})'
    ) from None
  if not isinstance(metadata, Mapping):
    raise ValueError(
      f'{folder / STATE}: saved state is a {type(metadata).__name__}, expected a '
      'dataclass/dict with named fields'
    )
  return metadata


def restore_params(
  path: epath.PathLike,
  *,
  step: Optional[int] = None,
  abstract: Optional[Mapping[str, Any]] = None,
  sharding: Optional[jax.sharding.Sharding] = None,
  items: Iterable[str] = PARAM_ITEMS,
) -> dict[str, Any]:
  """Parameter-like parts of a saved train state, without the optimizer state, on any devices.

  Args:
    path: a workdir, its `checkpoints/` folder, or one step folder (see `step_dir`).
    step: which step (default: the newest committed one).
    abstract: optional `{item: pytree of jax.ShapeDtypeStruct with sharding}` targets (e.g. to
      put params on another mesh); items not in it are built from the checkpoint's metadata.
    sharding: the sharding of every leaf built from metadata (default: replicated on the first
      local CPU device).
    items: the top-level fields of the state to read; those the state does not have are skipped.

  Returns:
    `{item: pytree}` for each requested item present in the checkpoint (e.g. 'params',
    'teacher_params', 'vq_stats', 'eos_bias'), as nested dicts of `jax.Array`.
  """
  folder = step_dir(path, step)
  metadata = state_metadata(folder)
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices(backend='cpu')[0])
  abstract = dict(abstract or {})
  target = {}
  for item in items:
    if item in abstract:
      target[item] = abstract[item]
    elif item in metadata and metadata[item] is not None:
      target[item] = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), metadata[item]
      )
  if not target:
    raise KeyError(
      f'{folder / STATE} has none of the fields {tuple(items)}; it has {sorted(metadata)}'
    )
  with ocp.PyTreeCheckpointer() as checkpointer:
    restored = checkpointer.restore(
      folder / STATE,
      args=ocp.args.PyTreeRestore(
        item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True,
      ),
    )
  logging.info('checkpoint: read %s from %s', sorted(restored), folder)
  return dict(restored)


def _read_json_item(folder: epath.Path, item: str) -> Optional[Any]:
  if not (folder / item).is_dir():
    return None
  with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
    return checkpointer.restore(folder / item, args=ocp.args.JsonRestore())


def read_config(path: epath.PathLike, step: Optional[int] = None) -> ml_collections.ConfigDict:
  """The run config saved with a checkpoint (workdir, checkpoints folder or step folder),
  completed by `config_lib.upgrade` when it was saved before some key existed."""
  folder = step_dir(path, step)
  config = _read_json_item(folder, CONFIG)
  if config is None:
    raise FileNotFoundError(f'{folder} has no saved config ({CONFIG}/)')
  return config_lib.upgrade(ml_collections.ConfigDict(_tuples(config)))


def read_meta(path: epath.PathLike, step: Optional[int] = None) -> Optional[dict]:
  """The 'meta' JSON saved with a checkpoint, or None when that checkpoint has none."""
  return _read_json_item(step_dir(path, step), META)


# ------------------------------------------------------------------- damaged checkpoints (analysis)


def _one_line(error: BaseException, limit: int = 300) -> str:
  """The innermost cause of `error` as one short line (TensorStore errors carry a page of spec)."""
  while error.__cause__ is not None:
    error = error.__cause__
  text = str(error).strip().split('\n', 1)[0] or type(error).__name__
  text = text.split(' [tensorstore_spec=', 1)[0]
  return text if len(text) <= limit else text[:limit] + '...'


def _unreadable_array(state_dir: epath.Path, items: Sequence[str]) -> Optional[str]:
  """Reads every array of `items` in an OCDBT state folder with TensorStore, synchronously; returns
  one line naming the first array that does not read (a data file missing or truncated), or None.

  Orbax reads the same arrays asynchronously; when one of them fails, the reads still in flight
  report into a closed event loop (pages of "Event loop is closed"), so damage is found here first.
  """
  path = os.fspath(state_dir)
  base = (path if '://' in path else 'file://' + path).rstrip('/') + '/'
  kvstore = ts.KvStore.open({'driver': 'ocdbt', 'base': base}).result()
  arrays = []
  for key in kvstore.list().result():
    key = key.decode()
    for suffix, driver in (('/.zarray', 'zarr'), ('/zarr.json', 'zarr3')):
      if key.endswith(suffix) and key.split('/', 1)[0].split('.', 1)[0] in items:
        arrays.append((key[: -len(suffix)], driver))
  pending = [
    (
      name,
      ts.open({'driver': driver, 'kvstore': {'driver': 'ocdbt', 'base': base, 'path': name + '/'}}),
    )
    for name, driver in sorted(arrays)
  ]
  for name, opening in pending:
    try:
      array = opening.result()
      data = array.read().result()
      del data
    except Exception as e:  # noqa: BLE001
      return (
        f'array {name!r} does not read (a data file under {state_dir} is missing or '
        f'truncated: {_one_line(e)})'
      )
  return None


def damage(folder: epath.PathLike, items: Iterable[str] = PARAM_ITEMS) -> Optional[str]:
  """Why one step folder cannot be read for analysis, in one line naming the file; None if it reads.

  Checks the commit marker, the saved config, the state's `_METADATA` and OCDBT manifest, and
  reads the arrays of `items` (`_unreadable_array`).
  """
  folder = epath.Path(folder)
  state = folder / STATE
  required = [folder / COMMIT_MARKER, folder / CONFIG, state, state / '_METADATA']
  if state.is_dir() and any(p.name.startswith('ocdbt.process_') for p in state.iterdir()):
    required.append(state / 'manifest.ocdbt')
  for p in required:
    if not p.exists():
      return f'{p} is missing'
  try:
    return _unreadable_array(state, tuple(items))
  except Exception as e:  # noqa: BLE001
    return f'{state} does not open ({_one_line(e)})'


def _candidate_steps(path: epath.PathLike, step: Optional[int]) -> tuple[list[epath.Path], bool]:
  """(step folders to try, newest first; whether the step was chosen explicitly)."""
  path = epath.Path(path)
  if step is not None or (path / STATE).is_dir():
    return [step_dir(path, step)], True
  directory = path / 'checkpoints' if (path / 'checkpoints').is_dir() else path
  steps = committed_steps(directory)
  if not steps:
    raise FileNotFoundError(f'no committed checkpoint under {path} (looked in {directory})')
  return [directory / str(s) for s in reversed(steps)], False


def load_for_analysis(
  path: epath.PathLike, step: Optional[int] = None, items: Iterable[str] = PARAM_ITEMS
) -> tuple[epath.Path, ml_collections.ConfigDict, dict[str, Any]]:
  """(step folder, saved config, `restore_params` items) of a workdir / checkpoints folder / step.

  Without `step` (and for a workdir or checkpoints folder) the newest committed step that reads:
  a damaged newer step is skipped with a warning naming it and the reason, as training resume does
  (`Checkpointer.restore_latest`; nothing is moved here). With `step`, or a step folder, that step
  or `CheckpointReadError` (one line: the step, the missing or damaged file). When no step reads:
  `CheckpointReadError` listing each step's reason.
  """
  items = tuple(items)
  folders, explicit = _candidate_steps(path, step)
  failures = []
  for folder in folders:
    problem = damage(folder, items)
    if problem is None:
      try:
        config = read_config(folder)
        restored = restore_params(folder, items=items)
      except Exception as e:  # noqa: BLE001
        problem = _one_line(e)
    if problem is None:
      if failures:
        logging.warning(
          'checkpoint: loaded step %s from %s instead of the newest step',
          folder.name,
          folder.parent,
        )
      return folder, config, restored
    if explicit:
      raise CheckpointReadError(f'checkpoint step {folder.name} cannot be loaded: {problem}')
    logging.warning(
      'checkpoint: skipping step %s, it cannot be loaded: %s; trying the previous step',
      folder.name,
      problem,
    )
    failures.append(f'step {folder.name}: {problem}')
  raise CheckpointReadError(f'no checkpoint under {path} can be loaded: ' + '; '.join(failures))
