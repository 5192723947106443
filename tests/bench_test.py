"""Schema test of the speed benchmark: `python -m pairalign_jax.bench --tiny` (speeds not checked).

The bench runs in a subprocess on the real CPU device (not the 8 simulated devices of conftest),
with the test suite's persistent compilation cache, so a repeat run mostly loads compiled code.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import tokenizer_test

from pairalign_jax.bench import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ('train_step', 'decode', 'input', 'search')


def _positive(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _env():
  env = dict(os.environ)
  flags = [
    f
    for f in env.get('XLA_FLAGS', '').split()
    if not f.startswith('--xla_force_host_platform_device_count')
  ]
  env['XLA_FLAGS'] = ' '.join(flags)
  env['JAX_PLATFORMS'] = 'cpu'
  return env


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  out = tmp_path_factory.mktemp('bench') / 'bench.json'
  checkpoint = tokenizer_test.tiny_workdir(tmp_path_factory)  # a trained (tiny) run
  cache = os.environ.get('PAIRALIGN_TEST_COMPILE_CACHE', os.path.join(ROOT, '.jax_test_cache'))
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'pairalign_jax.bench',
      '--tiny',
      f'--out={out}',
      f'--compile_cache={cache}',
      f'--checkpoint={checkpoint}',
    ],
    cwd=ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=900,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(out, encoding='utf-8') as f:
    return json.load(f), proc.stdout


def _check_device(section):
  dev = section['device']
  assert isinstance(dev['name'], str) and dev['name']
  assert isinstance(dev['jax_version'], str) and dev['jax_version']
  assert dev['platform'] in ('cpu', 'gpu', 'tpu', 'cuda', 'rocm')
  assert isinstance(dev['cpu_cores'], int) and dev['cpu_cores'] >= 1


def test_top_level(tiny_run):
  results, stdout = tiny_run
  assert results['schema_version'] == report.SCHEMA_VERSION
  assert results['tiny'] is True
  for name in SECTIONS:
    assert name in results, name
    _check_device(results[name])
  assert _positive(results['wall_s'])
  assert set(results['goals']) == set(report.GOALS)
  for name, goal in results['goals'].items():
    assert _positive(goal['value']), name
    assert goal['goal'] == report.GOALS[name][0]
    assert isinstance(goal['met'], bool)
    assert name in stdout  # the printed table
  trained = results['decode']['trained']
  assert trained['early_exit_tokens_equal'] is True
  assert _positive(trained['early_exit_speedup']) and _positive(trained['mean_tokens'])
  assert results['goals']['tokenize_realtime_factor_trained']['normalized'] == pytest.approx(
    trained['tokenize_realtime_factor_trained_normalized']
  )
  # Absolute rates are judged on the idle-normalized figure: RTF x idle peak / the run's peak.
  dec = results['decode']
  rtf = results['goals']['tokenize_realtime_factor']
  assert rtf['normalized'] == pytest.approx(
    dec['tokenize_realtime_factor'] * 450e9 / dec['tokenize']['peak_flops_per_s']
  )
  assert rtf['met'] == (rtf['normalized'] >= rtf['goal'])


def test_train_step(tiny_run):
  ts = tiny_run[0]['train_step']
  assert _positive(ts['peak_flops_per_s_median'])
  specs = [e['entry'] for e in ts['entries']]
  assert specs == ['config:0', 'config:2', 'base:0', 'base:2@8']
  for e in ts['entries']:
    for key in (
      'step_s',
      'examples_per_s',
      'flops_per_step',
      'achieved_flops_per_s',
      'peak_flops_per_s',
      'train_flops_ratio',
      'compile_s',
      'first_call_s',
      'flops_unrolled_lowering',
    ):
      assert _positive(e[key]), (e['entry'], key)
    assert e['stage'] in (0, 2)
    assert len(e['step_s_all']) >= 1 and all(_positive(t) for t in e['step_s_all'])
    assert isinstance(e['flops_method'], str) and 'scan_layers=False' in e['flops_method']
    assert 'score_chunk_rows=0' in e['flops_method']
    assert e['loss_finite'] is True
    assert e['config']['batch_size'] >= 1
  stage2 = [e for e in ts['entries'] if e['stage'] == 2]
  assert all(_positive(e['flops_decode_correction']) for e in stage2)
  assert ts['train_flops_ratio_entry'] == 'base:2@8'
  assert _positive(ts['train_flops_ratio'])
  # The base stage-2 step compiled (never run) for its temporary memory.
  mem = ts['memory']
  assert mem['entry'] == 'base:2' and mem['stage'] == 2
  assert _positive(mem['temp_bytes']) and mem['temp_gb'] == pytest.approx(mem['temp_bytes'] / 1e9)
  assert ts['stage2_base_temp_gb'] == mem['temp_gb']
  goal = tiny_run[0]['goals']['stage2_base_temp_gb']
  assert goal['met'] == (goal['value'] <= goal['goal'])


def test_decode(tiny_run):
  dec = tiny_run[0]['decode']
  assert _positive(dec['decode_cache_speedup'])
  assert _positive(dec['tokenize_realtime_factor'])
  g, t = dec['greedy'], dec['tokenize']
  for key in ('cache_s', 'recompute_s'):
    assert _positive(g[key])
  assert 0.0 <= g['tokens_equal_fraction'] <= 1.0
  for key in (
    'tokenize_s',
    'encode_decode_jit_s',
    'encode_jit_s',
    'audio_seconds',
    'first_call_s',
    'peak_flops_per_s',
  ):
    assert _positive(t[key]), key
  assert 0.0 <= t['terminated_fraction'] <= 1.0
  assert 0.0 <= t['host_overhead_fraction'] <= 1.0
  assert 0.0 <= t['decode_fraction'] <= 1.0
  _check_tokenize_flops(dec['tokenize_flops'], t['peak_flops_per_s'], t['audio_seconds'])
  # Random weights never write EOS: every row decodes max_len steps.
  assert dec['tokenize_flops']['decode_steps'] == t['model']['max_len']
  trained = dec['trained']
  _check_tokenize_flops(
    trained['tokenize_flops'], trained['peak_flops_per_s'], trained['audio_seconds']
  )
  assert 1 <= trained['tokenize_flops']['decode_steps'] <= trained['max_len']


def _check_tokenize_flops(f, peak, audio_s):
  for key in ('encode_flops', 'decode_step_flops', 'flops', 'share_of_peak'):
    assert _positive(f[key]), key
  assert f['flops'] == f['encode_flops'] + f['decode_steps'] * f['decode_step_flops']
  assert math.isclose(f['flops_per_audio_second'], f['flops'] / audio_s, rel_tol=1e-9)
  assert math.isclose(f['realtime_factor_at_peak'], peak / f['flops_per_audio_second'])
  assert math.isclose(f['share_of_peak'], f['achieved_flops_per_s'] / peak)


def test_tokenize_flops_grow_by_one_decode_step_per_step():
  """The tokenizer's FLOP count is the encoder's plus one cached decoder step per step run, the
  same for scanned and unrolled layers (the count is taken on unrolled ones)."""
  import train_test

  from pairalign_jax.bench import decode as bench_decode

  config = train_test.tiny_config()
  one = bench_decode.tokenize_flops(config, 4, 1)
  three = bench_decode.tokenize_flops(config, 4, 3)
  assert three['encode_flops'] == one['encode_flops'] > 0
  assert three['flops'] - one['flops'] == 2 * one['decode_step_flops']
  config.model.scan_layers = not config.model.scan_layers
  assert bench_decode.tokenize_flops(config, 4, 3)['flops'] == three['flops']


def test_input(tiny_run):
  inp = tiny_run[0]['input']
  assert set(inp['sources']) == {'synthetic', 'flac_folder'}
  for runs in inp['sources'].values():
    assert sorted(r['worker_count'] for r in runs) == [0, 2]
    for r in runs:
      assert _positive(r['examples_per_s']) and _positive(r['seconds'])
      assert r['measured_batches'] >= 1
  assert _positive(inp['train_examples_per_s'])
  assert inp['train_entry'] in ('config:0', 'config:2')
  assert _positive(inp['input_headroom'])


def test_search(tiny_run):
  se = tiny_run[0]['search']
  for key in ('project_s', 'direct_s', 'search_ratio', 'pairs_per_s_direct'):
    assert _positive(se[key]), key
  assert se['distances_identical'] is True
  assert 0.0 <= se['recall_at_1'] <= 1.0


def test_goals_table_flags_misses():
  results = {'search': {'search_ratio': 0.5}, 'decode': {'decode_cache_speedup': 6.0}}
  goals = report.goals_table(results)
  assert goals == {
    'decode_cache_speedup': {'value': 6.0, 'goal': 5.0, 'met': True},
    'search_ratio': {'value': 0.5, 'goal': 0.9, 'met': False},
  }


def test_train_step_flops_ignore_scoring_chunks():
  """The model FLOPs of a step do not depend on `loss.score_chunk_rows`: the chunks' `lax.map` body
  would be counted once, and their recomputation is not model work (the conftest's 8 devices)."""
  import train_test

  from pairalign_jax.bench import train_step as bench_train_step

  config = train_test.tiny_config()
  counts = {}
  for chunk in (0, 16):
    config.loss.score_chunk_rows = chunk
    counts[chunk], info = bench_train_step.train_step_flops(config, 1)
    assert 'score_chunk_rows=0' in info['flops_method']
  assert counts[16] == counts[0] > 0


def test_lever_names_pick_the_levers_and_refuse_unknown_ones():
  """`--lever_names` keeps the named levers in their order; the remat-policy levers apply to a
  config with remat on (and not to its own policy); an unknown name is refused before any work."""
  from configs import default as default_config
  from pairalign_jax.bench import levers as levers_lib
  from pairalign_jax.bench import runner

  config = default_config.get_config()  # remat on, policy 'nothing'
  every = [name for name, _, _ in levers_lib.lever_variants(config)]
  assert set(every) <= set(levers_lib.LEVER_NAMES)
  assert {'remat_off', 'remat_weight_matmuls', 'remat_matmuls'} <= set(every)
  assert set(every) == set(levers_lib.LEVER_NAMES) - {'remat_on'}
  unrolled = levers_lib.lever_variants(config, ['unrolled_layers_remat_weight_matmuls'])
  assert unrolled == [
    (
      'unrolled_layers_remat_weight_matmuls',
      {'model.scan_layers': False, 'model.remat': True, 'model.remat_policy': 'weight_matmuls'},
      '',
    )
  ]
  picked = levers_lib.lever_variants(config, ['remat_weight_matmuls', 'batch_x2'])
  assert picked == [
    ('remat_weight_matmuls', {'model.remat_policy': 'weight_matmuls'}, ''),
    ('batch_x2', {'batch_size': 2 * config.batch_size}, ''),
  ]
  config.model.remat_policy = 'matmuls'
  names = [name for name, _, _ in levers_lib.lever_variants(config)]
  assert 'remat_matmuls' not in names and 'remat_weight_matmuls' in names
  config.model.remat = False
  names = [name for name, _, _ in levers_lib.lever_variants(config)]
  assert 'remat_on' in names and not any(n.startswith('remat_w') for n in names)
  with pytest.raises(ValueError, match='unknown levers'):
    levers_lib.lever_variants(config, ['remat_sometimes'])
  with pytest.raises(ValueError, match='unknown levers'):
    runner.run(
      config=config,
      base_config=config,
      label='default',
      base_label='default',
      out='/nonexistent/bench.json',
      command='test',
      levers=['base:2@8'],
      lever_names=['remat_sometimes'],
    )
