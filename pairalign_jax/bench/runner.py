"""One bench run: the sections asked for, at full or tiny sizes, into one results file (merged into
an existing one with `update`) and the printed table. Everything comes in as arguments; the CLI
(`__main__.py`) maps its flags onto `run`."""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Optional, Sequence

from pairalign_jax.bench import common
from pairalign_jax.bench import decode
from pairalign_jax.bench import input_pipeline
from pairalign_jax.bench import levers as levers_lib
from pairalign_jax.bench import report
from pairalign_jax.bench import search
from pairalign_jax.bench import train_step


def section_sizes(tiny: bool) -> dict[str, dict[str, Any]]:
  """Size arguments of each section function; {} = its defaults (the full sizes). Tiny sizes run in
  seconds (for tests/bench_test.py, which checks the schema, not the speeds)."""
  if not tiny:
    return {name: {} for name in ('train_step', 'decode', 'trained', 'input', 'search')}
  return {
    'train_step': {'peak_n': 256, 'use_entry_batch': False},  # the tiny batch everywhere
    'decode': {'batch': 4, 'max_len': 6, 'tokenize_batch': 4, 'peak_n': 256},
    'trained': {'batch': 4, 'peak_n': 256},
    'input': {'measured_batches': 2, 'flac_files': 8, 'flac_seconds': 2.0},
    'search': {
      'archive_size': 300,
      'num_queries': 30,
      'archive_hours': 0.05,
      'partial_ratio': False,
    },
  }


def run(
  *,
  config,
  base_config,
  label: str,
  base_label: str,
  out: str,
  command: str,
  sections: Sequence[str] = common.SECTIONS,
  train_entries: Optional[Sequence[str]] = None,
  levers: Sequence[str] = (),
  lever_names: Optional[Sequence[str]] = None,
  memory_entry: str = 'base:2',
  reps: int = 0,
  budget_s: float = 60.0,
  tiny: bool = False,
  checkpoint: str = '',
  update: bool = False,
  compile_cache: str = '',
  lever_subprocess=None,
) -> dict[str, Any]:
  """Runs `sections` (of common.SECTIONS) and writes `out`; -> the results written.

  `config` / `base_config` (labelled `label` / `base_label`, from their file names) are the
  benchmarked and the base-size config; `tiny` replaces both by `common.tiny_config(config)` and
  every size by the tiny ones. `reps` = 0: each section's default (2 tiny, else 3). `checkpoint`:
  a trained run for the decode section's trained-tokenizer figures. `train_entries` (None: the
  default ones), `levers`, `lever_names` (None: all), `memory_entry` (compiled, not run: its
  temporary memory; '' = none), `budget_s` and `lever_subprocess` (a `levers.LeverSubprocess`)
  go to the train_step section.
  `command` is recorded in the results."""
  common.use_compile_cache(compile_cache)
  unknown = set(sections) - set(common.SECTIONS)
  if unknown:
    raise ValueError(f'unknown sections {sorted(unknown)}; choose from {common.SECTIONS}')
  levers_lib.check_lever_names(lever_names)  # before the first compile, not after the timings
  if tiny:  # one tiny model for both labels (one compile per stage with the cache)
    config = common.tiny_config(config)
    base_config = config
  if base_label == label:
    base_label += '(base)'
  configs = {'config': (label, config), 'base': (base_label, base_config)}
  sizes = section_sizes(tiny)
  reps = reps or (2 if tiny else 3)

  t_start = common.now()
  results: dict[str, Any] = {
    'schema_version': report.SCHEMA_VERSION,
    'tiny': bool(tiny),
    'command': command,
    'started': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
    'configs': {'config': label, 'base': base_label},
    'host': common.device_info(),
    'python_version': platform.python_version(),
  }
  timers: dict[str, Any] = {}
  if 'train_step' in sections:
    results['train_step'], timers = train_step.section_train_step(
      configs,
      reps,
      entries=train_step.DEFAULT_ENTRIES if train_entries is None else train_entries,
      levers=levers,
      lever_names=lever_names,
      memory_entry=memory_entry,
      budget_s=budget_s,
      lever_subprocess=lever_subprocess,
      **sizes['train_step'],
    )
  if 'decode' in sections:
    results['decode'] = decode.section_decode(config, reps, budget_s=budget_s, **sizes['decode'])
    if checkpoint:
      results['decode']['trained'] = decode.section_trained_tokenizer(
        checkpoint, reps, **sizes['trained']
      )
  if 'input' in sections:
    timer, entry = None, ''
    ts = results.get('train_step')
    if ts:  # the config's step at its fastest stage is the one the pipeline must keep up with
      mine = [e for e in ts['entries'] if e['entry'] in timers]
      if mine:
        entry = max(mine, key=lambda e: e['examples_per_s'])['entry']
        timer = timers[entry]
    results['input'] = input_pipeline.section_input(config, timer, entry, **sizes['input'])
  if 'search' in sections:
    results['search'] = search.section_search(reps, **sizes['search'])
  results['wall_s'] = wall = common.now() - t_start

  if update and os.path.exists(out):
    results = report.merge_update(report.read_results(out), results)
  results['goals'] = report.goals_table(results)
  report.write_results(out, results)
  print(report.format_table(results))
  print(f'\nwrote {out} ({wall:.0f} s)')
  return results
