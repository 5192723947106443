"""The `input` section: steady-state examples/s of the two-view Grain training pipeline on the
synthetic source and on a folder of FLAC files, and its headroom over the train step it feeds."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Callable, Optional

from pairalign_jax.bench import common


def write_flac_folder(config, root: str, num_files: int, seconds: float) -> None:
  """`num_files` FLAC files of `seconds` (pulse-like tones with noise) in four speaker folders."""
  import numpy as np
  import soundfile as sf

  sr = int(config.audio.sample_rate)
  rng = np.random.default_rng(7)
  n = int(seconds * sr)
  t = np.arange(n) / sr
  for i in range(num_files):
    spk = os.path.join(root, f'spk{i % 4}')
    os.makedirs(spk, exist_ok=True)
    f0 = 100 + 10 * (i % 8)
    wave = (
      0.2 * np.sign(np.sin(2 * np.pi * f0 * t)) * (0.6 + 0.4 * np.sin(2 * np.pi * 2.5 * t))
      + 0.02 * rng.standard_normal(n)
    ).astype(np.float32)
    sf.write(os.path.join(spk, f'utt{i:03d}.flac'), wave, sr, subtype='PCM_16')


def pipeline_rate(config, source, workers: int, measure: int) -> dict[str, Any]:
  """Steady-state examples/s of the training iterator: batches are taken as fast as possible and
  the rate is read over the last `measure` of them, after skipping as many batches as the
  prefetch buffers can hold (they fill during start-up and would inflate the rate)."""
  from pairalign_jax.data import pipeline

  c = common.config_overrides(config, {'data.worker_count': workers})
  buffered = (int(c.data.prefetch_buffer_size) + 2) * max(1, workers)
  t0 = common.now()
  it = iter(pipeline.make_train_dataset(c, source=source))
  next(it)  # start-up (workers, first batch)
  startup = common.now() - t0
  stamps = [common.now()]
  for _ in range(buffered + measure):
    next(it)
    stamps.append(common.now())
  elapsed = stamps[-1] - stamps[-1 - measure]
  with contextlib.suppress(Exception):
    it.close()  # type: ignore[attr-defined]
  del it
  return {
    'worker_count': workers,
    'skipped_batches': buffered,
    'measured_batches': measure,
    'batch_size': int(c.batch_size),
    'startup_s': startup,
    'seconds': elapsed,
    'examples_per_s': measure * c.batch_size / elapsed,
    'examples_per_s_including_buffered': (buffered + measure)
    * c.batch_size
    / (stamps[-1] - stamps[0]),
  }


def section_input(
  config,
  train_timer: Optional[Callable[[], float]] = None,
  train_entry: str = '',
  *,
  measured_batches: int = 8,
  flac_files: int = 64,
  flac_seconds: float = 10.0,
) -> dict[str, Any]:
  """See the package docstring: `measured_batches` per rate, a folder of `flac_files` FLAC files
  of `flac_seconds`. `train_timer()` times one train step of the `config` model at its fastest
  stage (`train_entry`, compiled in the train_step section); it is timed before and after the
  pipeline measurements so that both sides of `input_headroom` see the same load."""
  from pairalign_jax.data import folder
  from pairalign_jax.data import pipeline

  c = common.config_overrides(config, {'data.align_views_in_stage0': False})
  measure = measured_batches
  train_times = [train_timer() for _ in range(2)] if train_timer else []
  results = {}
  syn = pipeline.make_source(c, 'train')
  results['synthetic'] = [pipeline_rate(c, syn, w, measure) for w in (0, 2)]
  with tempfile.TemporaryDirectory(prefix='pairalign_bench_flac_') as tmp:
    write_flac_folder(c, tmp, flac_files, flac_seconds)
    src = folder.FolderSource(tmp, 'all', cache_dir=tmp)
    cf = common.config_overrides(c, {'data.cross_speaker_views': 0.0})  # no parallel readings
    results['flac_folder'] = [pipeline_rate(cf, src, w, measure) for w in (0, 2)]
  if train_timer:
    train_times += [train_timer() for _ in range(2)]
  out = {
    'device': common.device_info(),
    'setup': 'make_train_dataset: every augmentation on (align_views_in_stage0=False), '
    f'read_threads={c.data.read_threads}, prefetch_buffer_size={c.data.prefetch_buffer_size}, '
    f'batch {c.batch_size} of two {c.audio.segment_seconds:g} s views; flac_folder: '
    f'{flac_files} files of {flac_seconds:g} s, 16-bit FLAC at {c.audio.sample_rate} Hz '
    f'(random 3 s crops); cross_speaker_views={c.data.get("cross_speaker_views", 0.0)} '
    'for the synthetic source, 0 for the folder',
    'sources': results,
  }
  if train_times:
    train_eps = c.batch_size / common.median(train_times)
    best = max(r['examples_per_s'] for r in results['synthetic'])
    out.update(
      {
        'train_step_s_all': train_times,
        'train_examples_per_s': train_eps,
        'train_entry': train_entry,
        'input_headroom': best / train_eps,
        'input_headroom_by_source': {
          name: {str(r['worker_count']): r['examples_per_s'] / train_eps for r in rs}
          for name, rs in results.items()
        },
      }
    )
  return out
