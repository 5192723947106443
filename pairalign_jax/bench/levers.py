"""The levers tried on a train-step entry (`--levers`): config variants timed in this process,
interleaved with the entry as configured, and XLA flags, which XLA reads once when it starts, timed
in a fresh `python -m pairalign_jax.bench` process (compared through each process's matmul peak).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from pairalign_jax.bench import common

ONEDNN_FLAG = '--xla_cpu_experimental_onednn_fusion_type=dot'


# Every lever `lever_variants` can return (`--lever_names` picks some).
LEVER_NAMES = (
  'remat_off',
  'remat_on',
  'remat_weight_matmuls',
  'remat_matmuls',
  'unrolled_layers_no_remat',
  'unrolled_layers_remat_weight_matmuls',
  'batch_x2',
  'batch_half',
  'onednn_dot_fusion',
  'controller_decode_quarter_rows',
)


def check_lever_names(names) -> None:
  """Raises ValueError naming every one of `names` (None: all levers) not in `LEVER_NAMES`."""
  unknown = sorted(set(names or ()) - set(LEVER_NAMES))
  if unknown:
    raise ValueError(f'unknown levers {unknown}; choose from {LEVER_NAMES}')


def lever_variants(config, names=None) -> list[tuple[str, dict[str, Any], str]]:
  """(name, config overrides, extra XLA flag) of the cheap levers for `config`; `names` (None:
  all) keeps those of `LEVER_NAMES` named (an unknown name is a ValueError)."""
  check_lever_names(names)
  b = int(config.batch_size)
  # The largest number of rows that divides the 2b rows of a step and is at most a quarter of them.
  quarter = next(r for r in range(max(1, (2 * b) // 4), 0, -1) if (2 * b) % r == 0)
  remat_policies = []
  if config.model.remat:  # what remat keeps: models.REMAT_POLICIES
    remat_policies = [
      (f'remat_{policy}', {'model.remat_policy': policy}, '')
      for policy in ('weight_matmuls', 'matmuls')
      if policy != config.model.remat_policy
    ]
  variants = [
    (
      'remat_off' if config.model.remat else 'remat_on',
      {'model.remat': not config.model.remat},
      '',
    ),
    *remat_policies,
    ('unrolled_layers_no_remat', {'model.scan_layers': False, 'model.remat': False}, ''),
    # Unrolled, with remat keeping the projection and MLP matmul outputs: the memory of remat
    # (the base config's batch-32 step stays under 4 GB) at less recomputation.
    (
      'unrolled_layers_remat_weight_matmuls',
      {'model.scan_layers': False, 'model.remat': True, 'model.remat_policy': 'weight_matmuls'},
      '',
    ),
    ('batch_x2', {'batch_size': 2 * b}, ''),
    ('batch_half', {'batch_size': max(2, b // 2)}, ''),
    ('onednn_dot_fusion', {}, ONEDNN_FLAG),
    # Stage 2: the teacher decodes a quarter of the rows, for the length controller only (needs
    # schedule.max_alpha = 0, so the baseline's teacher-string mixing is off in this variant).
    (
      'controller_decode_quarter_rows',
      {'length.controller_decode_rows': quarter, 'schedule.max_alpha': 0.0},
      '',
    ),
  ]
  return [v for v in variants if names is None or v[0] in names]


def compare_to_baseline(
  got: dict[str, Any], base: dict[str, Any], lever: str, spec: str
) -> dict[str, Any]:
  """`got` (the lever's train entry) with its name and its ratios to the baseline entry `base`
  added (in place; returned)."""
  got.update(
    {
      'lever': lever,
      'entry': spec,
      'baseline_step_s': base['step_s'],
      'baseline_train_flops_ratio': base['train_flops_ratio'],
      # Both normalized by their own interleaved matmul peaks:
      'ratio_vs_baseline': got['train_flops_ratio'] / base['train_flops_ratio'],
      'examples_per_s_vs_baseline': (got['examples_per_s'] / got['peak_flops_per_s'])
      / (base['examples_per_s'] / base['peak_flops_per_s']),
    }
  )
  if got.get('interleaved_step_s_all'):
    # The baseline step timed right after each lever step (same load): the most direct ratio.
    base_s = common.median(got['interleaved_step_s_all'])
    got['flops_rate_vs_baseline_interleaved'] = (got['flops_per_step'] / got['step_s']) / (
      base['flops_per_step'] / base_s
    )
    got['examples_per_s_vs_baseline_interleaved'] = (got['examples_per_s']) / (
      base['config']['batch_size'] / base_s
    )
  return got


@dataclasses.dataclass(frozen=True)
class LeverSubprocess:
  """Runs one train entry in a fresh bench process with an XLA flag added to XLA_FLAGS, with this
  run's config files, time budget, size and compilation cache ('' = off)."""

  config_path: str
  base_config_path: str
  budget_s: float
  tiny: bool = False
  compile_cache: str = ''

  def command(self, spec: str, out: str, reps: int) -> list[str]:
    cmd = [
      sys.executable,
      '-m',
      common.MODULE,
      '--sections=train_step',
      f'--train_entries={spec}',
      f'--out={out}',
      f'--reps={reps}',
      f'--budget_s={self.budget_s}',
      f'--config={self.config_path}',
      f'--base_config={self.base_config_path}',
    ]
    if self.tiny:
      cmd.append('--tiny')
    if self.compile_cache:
      cmd.append(f'--compile_cache={self.compile_cache}')
    return cmd

  def __call__(self, spec: str, xla_flag: str, reps: int) -> dict[str, Any]:
    """-> the train entry `spec` timed with `xla_flag` (its `reps`), from the process's JSON."""
    env = dict(os.environ)
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' ' + xla_flag).strip()
    with tempfile.TemporaryDirectory() as tmp:
      out = os.path.join(tmp, 'lever.json')
      proc = subprocess.run(
        self.command(spec, out, reps),
        env=env,
        cwd=common.ROOT,
        capture_output=True,
        text=True,
        check=False,
      )
      if proc.returncode != 0:
        raise RuntimeError(f'lever subprocess failed ({proc.returncode}): {proc.stderr[-2000:]}')
      with open(out, encoding='utf-8') as f:
        return json.load(f)['train_step']['entries'][0]
