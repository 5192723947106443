"""The results file and the printed table: the goals (each a ratio of two timings from one run),
`--update` merging into an existing file, and the table `python -m pairalign_jax.bench` prints."""

from __future__ import annotations

import json
import os
from typing import Any

from pairalign_jax.bench import common

SCHEMA_VERSION = 1
GOALS = {  # name: (goal, which way)
  'train_flops_ratio': (0.5, '>='),
  'decode_cache_speedup': (5.0, '>='),
  'tokenize_realtime_factor': (500.0, '>='),
  'tokenize_realtime_factor_trained': (1000.0, '>='),
  'input_headroom': (2.0, '>='),
  'search_ratio': (0.9, '>='),
  'stage2_base_temp_gb': (4.0, '<='),
}


def merge_train_step(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
  """`--update` of the train_step section. A run with levers (e.g. `--train_entries= --levers=...`)
  adds its levers, their baseline entries and its device/peak beside the old entries; otherwise
  the new entries replace the old ones with the same spec."""
  merged = dict(old)
  for key in ('memory', 'stage2_base_temp_gb'):  # the compiled-only memory entry, when run
    if key in new:
      merged[key] = new[key]
  if new.get('levers'):
    merged['levers'] = new['levers']
    merged['levers_baseline'] = new['entries']
    merged['levers_device'] = new['device']
    merged['levers_peak_flops_per_s_median'] = new['peak_flops_per_s_median']
    return merged
  specs = {e['entry'] for e in new['entries']}
  merged['entries'] = [e for e in old['entries'] if e['entry'] not in specs] + new['entries']
  for key in (
    'device',
    'peak_method',
    'peak_flops_per_s_median',
    'train_flops_ratio',
    'train_flops_ratio_entry',
  ):
    if key in new:
      merged[key] = new[key]
  return merged


def goals_table(results: dict[str, Any]) -> dict[str, Any]:
  """{goal name: {'value', 'goal', 'met'}} for the figures present in `results`."""
  where = {
    'train_flops_ratio': 'train_step',
    'decode_cache_speedup': 'decode',
    'input_headroom': 'input',
    'search_ratio': 'search',
    'stage2_base_temp_gb': 'train_step',
  }
  out = {}
  for name, (goal, way) in GOALS.items():
    if name.startswith('tokenize_realtime_factor'):
      dec = results.get('decode', {})
      section = dec.get('trained', {}) if name.endswith('_trained') else dec
      value = section.get(name)
      normalized = section.get(name + '_normalized')
      if value is not None and normalized is not None:
        # An absolute rate: judged on the idle-normalized figure (the raw one moves with load).
        out[name] = {
          'value': float(value),
          'normalized': float(normalized),
          'goal': goal,
          'met': bool(normalized >= goal),
        }
      continue
    value = results.get(where[name], {}).get(name)
    if value is not None:
      met = value >= goal if way == '>=' else value <= goal
      out[name] = {'value': float(value), 'goal': goal, 'met': bool(met)}
  return out


def format_table(results: dict[str, Any]) -> str:
  lines = [f'{"figure":<46} {"value":>12} {"goal":>8}  met']
  for name, g in results.get('goals', {}).items():
    lines.append(f'{name:<46} {g["value"]:>12.3f} {g["goal"]:>8.2f}  {"yes" if g["met"] else "NO"}')
  ts = results.get('train_step')
  if ts:
    lines.append('')
    lines.append(
      f'{"train step":<40} {"stage":>5} {"step s":>9} {"ex/s":>8} {"GFLOP":>9} '
      f'{"GFLOP/s":>9} {"peak":>8} {"ratio":>6} {"vs base":>7}'
    )
    rows = ts['entries'] + [
      dict(e, lever='(lever baseline)') for e in ts.get('levers_baseline', [])
    ]
    for e in rows + ts.get('levers', []):
      name = (
        e['label']
        + (f'@{e["config"]["batch_size"]}' if e['stage'] else '')
        + (f' {e["lever"]}' if e.get('lever') else '')
      )
      vs = e.get('flops_rate_vs_baseline_interleaved', e.get('ratio_vs_baseline'))
      lines.append(
        f'{name:<40} {e["stage"]:>5} {e["step_s"]:>9.3f} {e["examples_per_s"]:>8.2f} '
        f'{e["flops_per_step"] / 1e9:>9.1f} {e["achieved_flops_per_s"] / 1e9:>9.1f} '
        f'{e["peak_flops_per_s"] / 1e9:>8.1f} {e["train_flops_ratio"]:>6.3f}'
        + (f' {vs:>7.2f}' if vs is not None else '')
      )
  dec = results.get('decode')
  if dec:
    g, t = dec['greedy'], dec['tokenize']
    lines.append('')
    lines.append(
      f'greedy decode B={g["batch"]} L={g["max_len"]}: cache {g["cache_s"]:.3f} s, '
      f'recompute {g["recompute_s"]:.3f} s'
    )
    lines.append(
      f'tokenize {t["batch"]} x {config_seconds(t)} s: {t["tokenize_s"]:.3f} s '
      f'(jitted encode+decode {t["encode_decode_jit_s"]:.3f} s)'
    )
    for label, part in (('random weights', dec), ('trained', dec.get('trained') or {})):
      f = part.get('tokenize_flops')
      if f:
        lines.append(
          f'tokenizer FLOPs ({label}): {f["flops_per_audio_second"] / 1e9:.2f} GFLOP per second '
          f'of audio ({f["decode_steps"]} decode steps), {f["share_of_peak"]:.3f} of the '
          f'matmul peak; at the peak {f["realtime_factor_at_peak"]:.0f}x real time'
        )
    tr = dec.get('trained')
    if tr:
      lines.append(
        f'trained tokenizer: {tr["tokenize_realtime_factor_trained"]:.0f}x real time '
        f'({tr["tokenize_realtime_factor_trained_normalized"]:.0f}x on an idle machine), '
        f'{tr["mean_tokens"]:.1f} tokens of {tr["max_len"]}; early exit '
        f'{tr["early_exit_speedup"]:.2f}x the full-length decode (same tokens: '
        f'{tr["early_exit_tokens_equal"]})'
      )
  inp = results.get('input')
  if inp:
    lines.append('')
    for name, rs in inp['sources'].items():
      for r in rs:
        lines.append(
          f'input {name:<12} workers={r["worker_count"]}: {r["examples_per_s"]:8.1f} ex/s'
        )
    if 'train_examples_per_s' in inp:
      lines.append(f'train step (fastest stage): {inp["train_examples_per_s"]:8.1f} ex/s')
  se = results.get('search')
  if se:
    lines.append('')
    lines.append(
      f'search {se["num_queries"]} x {se["archive_size"]}: project {se["project_s"]:.3f} s, '
      f'direct cdist {se["direct_s"]:.3f} s'
    )
  return '\n'.join(lines)


def config_seconds(tok: dict[str, Any]) -> str:
  return f'{tok["model"]["segment_seconds"]:g}'


def merge_update(old: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
  """`--update`: the sections in `results` replace those of `old` (the train_step section is
  merged, `merge_train_step`) and the run is listed under 'updates'; -> `old`, updated."""
  for name in common.SECTIONS:
    if name not in results:
      continue
    if name == 'train_step' and 'train_step' in old:
      results[name] = merge_train_step(old['train_step'], results[name])
    old[name] = results[name]
  old.setdefault('updates', []).append({k: results[k] for k in ('command', 'started', 'wall_s')})
  return old


def write_results(path: str, results: dict[str, Any]) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=1, sort_keys=False)
    f.write('\n')


def read_results(path: str) -> dict[str, Any]:
  with open(path, encoding='utf-8') as f:
    return json.load(f)
