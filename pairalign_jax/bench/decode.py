"""The `decode` section: greedy decoding with the KV cache against re-scoring the prefix, and
`Tokenizer.tokenize` end to end with random weights; with a checkpoint, the trained tokenizer on its
validation split and its early-exit decode against the full-length scan (package docstring)."""

from __future__ import annotations

import os
from typing import Any

from pairalign_jax import config_lib
from pairalign_jax.bench import common

IDLE_PEAK_FLOPS = 450e9  # float32 2048^3 matmul on 2 idle cores of this machine kind


def tokenize_flops(config, batch: int, decode_steps: int) -> dict[str, Any]:
  """Model FLOPs of one `Tokenizer.tokenize` call on `batch` segments whose greedy decode runs
  `decode_steps` cached steps: XLA cost analysis (no compile) of the front end + encoder + the
  decoder's condition (layers unrolled, `train_step.FLOPS_LOWERING`) plus `decode_steps` x one
  cached decoder step (`train_step.decode_step_flops`)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from pairalign_jax import frontend
  from pairalign_jax import models
  from pairalign_jax import train
  from pairalign_jax.bench import train_step

  c = common.config_overrides(config, train_step.FLOPS_LOWERING)
  model = train.make_model(c)
  fcfg = frontend.FrontendConfig.from_config(c)
  variables = jax.eval_shape(
    lambda r: nn.meta.unbox(train.init_variables(model, c, r)), jax.random.PRNGKey(0)
  )
  waves = jax.ShapeDtypeStruct((batch, config_lib.segment_samples(c)), jnp.float32)

  def encode_and_condition(v, w):
    mel = frontend.normalize(frontend.log_mel(w, fcfg))  # [B, F, M]
    h = model.apply(v, mel, method=models.PairAlign.encode)  # [B, T, d]
    return model.apply(v, h, method=models.PairAlign.condition)

  encode = common.cost_flops(jax.jit(encode_and_condition).lower(variables, waves).cost_analysis())
  step = train_step.decode_step_flops(c, batch)
  return {
    'encode_flops': encode,
    'decode_step_flops': step,
    'decode_steps': int(decode_steps),
    'flops': encode + decode_steps * step,
    'flops_method': 'XLA Lowered.cost_analysis() of the front end, encoder and decoder condition '
    '(layers unrolled) + decode_steps x one cached decoder step',
  }


def _flops_summary(flops: dict[str, Any], audio_s: float, tok_s: float, peak: float) -> dict:
  """FLOPs per second of audio, the share of this run's matmul peak the tokenizer reached, and the
  physical limit of its real-time factor at that peak (peak / FLOPs per audio second)."""
  per_audio_s = flops['flops'] / audio_s
  return {
    **flops,
    'flops_per_audio_second': per_audio_s,
    'achieved_flops_per_s': flops['flops'] / tok_s,
    'share_of_peak': flops['flops'] / tok_s / peak,
    'realtime_factor_at_peak': peak / per_audio_s,
  }


def section_decode(
  config,
  reps: int,
  *,
  batch: int = 64,
  max_len: int = 128,
  tokenize_batch: int = 64,
  peak_n: int = 2048,
  budget_s: float = 60.0,
) -> dict[str, Any]:
  """Greedy decode of `batch` rows at L = `max_len` (the `config` model, random weights), cached vs
  recomputed (the recompute baseline repeated while within `budget_s`), then `Tokenizer.tokenize`
  of `tokenize_batch` segments with the model as configured (`peak_n`: the matmul peak's size; the
  real-time factor also comes normalized to an idle machine, as in `section_trained_tokenizer`)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from pairalign_jax import decode as decode_lib
  from pairalign_jax import tokenizer as tokenizer_lib

  dcfg = common.config_overrides(config, {'model.max_len': max_len})
  model, variables = common.random_variables(dcfg)
  frames = config_lib.mel_frames_per_segment(dcfg) // dcfg.model.subsample
  h = jax.random.normal(jax.random.PRNGKey(1), (batch, frames, dcfg.model.d_model), jnp.float32)

  fns = {
    'cache': jax.jit(lambda v, x: decode_lib.greedy_decode(model, v, x, max_len=max_len).tokens),
    'recompute': jax.jit(
      lambda v, x: decode_lib.greedy_decode_recompute(model, v, x, max_len=max_len).tokens
    ),
  }
  compiled, compile_s = {}, {}
  for name, fn in fns.items():
    t0 = common.now()
    compiled[name] = fn.lower(variables, h).compile()
    compile_s[name] = common.now() - t0
  common.block(compiled['cache'](variables, h))  # warm-up
  # The recompute baseline is O(L^2) and slow: its first call is the timed one (its one-time costs
  # are small next to its length), repeated only while within budget_s; cache calls bracket it.
  times = {'cache': [], 'recompute': []}
  tokens = {}

  def timed(name):
    t0 = common.now()
    tokens[name] = np.asarray(common.block(compiled[name](variables, h)))
    times[name].append(common.now() - t0)

  timed('cache')
  for _ in range(max(1, reps // 2)):
    timed('recompute')
    timed('cache')
    if sum(times['recompute']) + times['recompute'][-1] > budget_s:
      break
  while len(times['cache']) < reps:
    timed('cache')
  speedup = common.median(times['recompute']) / common.median(times['cache'])
  equal = float(np.mean(tokens['cache'] == tokens['recompute']))

  # Tokenizer end to end: the config's model as configured, tokenize_batch waveforms of a segment.
  _, tvars = common.random_variables(config, seed=2)
  tok = tokenizer_lib.Tokenizer(config, tvars, batch_size=tokenize_batch)
  rng = np.random.default_rng(3)
  n = config_lib.segment_samples(config)
  t_axis = np.arange(n) / config.audio.sample_rate
  waves = [
    (
      0.3 * np.sin(2 * np.pi * (150 + 20 * i) * t_axis) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t_axis))
      + 0.03 * rng.standard_normal(n)
    ).astype(np.float32)
    for i in range(tokenize_batch)
  ]
  t0 = common.now()
  out = tok.tokenize(waves, config.audio.sample_rate)  # compile + first call
  tok_first = common.now() - t0
  tok_times, enc_dec_times, enc_times, peaks = [], [], [], []
  prepared = jnp.asarray(tok.prepare(waves, config.audio.sample_rate))
  common.block(tok.encode(prepared))
  peak = common.MatmulPeak(peak_n)
  for _ in range(reps):
    t0 = common.now()
    out = tok.tokenize(waves, config.audio.sample_rate)
    tok_times.append(common.now() - t0)
    t0 = common.now()
    common.block(tok.encode_decode(prepared, eos_bias=0.0))
    enc_dec_times.append(common.now() - t0)
    t0 = common.now()
    common.block(tok.encode(prepared))
    enc_times.append(common.now() - t0)
    peaks.append(peak.measure())
  audio_s = tokenize_batch * n / config.audio.sample_rate
  tok_s = common.median(tok_times)
  lengths = [len(t) for t in out.tokens]
  flops = tokenize_flops(config, tokenize_batch, _decode_steps(out, tok.max_len))
  return {
    'device': common.device_info(),
    'greedy': {
      'model': common.config_summary(dcfg),
      'batch': batch,
      'max_len': max_len,
      'params': 'random initialization (no EOS: every row decodes max_len tokens)',
      'cache_s': common.median(times['cache']),
      'cache_s_all': times['cache'],
      'recompute_s': common.median(times['recompute']),
      'recompute_s_all': times['recompute'],
      'compile_s': compile_s,
      'tokens_equal_fraction': equal,
    },
    'decode_cache_speedup': speedup,
    'tokenize': {
      'model': common.config_summary(config),
      'batch': tokenize_batch,
      'audio_seconds': audio_s,
      'params': 'random initialization (no EOS: every row decodes max_len tokens, the worst case)',
      'terminated_fraction': float(np.mean(out.terminated)),
      'mean_tokens': float(np.mean(lengths)),
      'first_call_s': tok_first,
      'tokenize_s': tok_s,
      'tokenize_s_all': tok_times,
      'encode_decode_jit_s': common.median(enc_dec_times),
      'encode_jit_s': common.median(enc_times),
      'decode_fraction': max(0.0, 1.0 - common.median(enc_times) / common.median(enc_dec_times)),
      'host_overhead_fraction': max(0.0, 1.0 - common.median(enc_dec_times) / tok_s),
      'peak_flops_per_s': common.median(peaks),
      'peak_method': f'float32 jnp.matmul {peak.n}^3, median of 3 calls after each tokenize call '
      '(how much of the machine this run had)',
    },
    'tokenize_flops': _flops_summary(flops, audio_s, tok_s, common.median(peaks)),
    'tokenize_realtime_factor': audio_s / tok_s,
    # The same rate on an idle machine: x IDLE_PEAK_FLOPS / this run's matmul peak.
    'tokenize_realtime_factor_normalized': audio_s / tok_s * IDLE_PEAK_FLOPS / common.median(peaks),
  }


def section_trained_tokenizer(
  path: str, reps: int, *, batch: int = 64, peak_n: int = 2048
) -> dict[str, Any]:
  """`Tokenizer.tokenize` of a trained checkpoint on `batch` segments of its validation split, and
  its greedy decode with the early exit against the full-length scan (same H, interleaved calls).
  Absolute rates also come normalized to an idle machine: x IDLE_PEAK_FLOPS / this run's matmul
  peak (`peak_n`: its size)."""
  import jax
  import numpy as np

  from pairalign_jax import checkpointing
  from pairalign_jax import decode as decode_lib
  from pairalign_jax import tokenizer as tokenizer_lib
  from pairalign_jax.data import pipeline

  tok = tokenizer_lib.Tokenizer.from_checkpoint(path, batch_size=batch)
  config = checkpointing.read_config(path)
  source = pipeline.make_source(config, 'validation')
  waves = np.stack(
    [pipeline.load_segment(source[i], config, crop='start') for i in range(min(batch, len(source)))]
  )
  sr = config.audio.sample_rate
  out = tok.tokenize(waves, sr)  # compile + first call
  h = tok.encode(tok.prepare(waves, sr))
  bias = tok.default_eos_bias
  decodes = {
    early: jax.jit(
      lambda v, x, e=early: (
        decode_lib.greedy_decode(
          tok.model, v, x, max_len=tok.max_len, eos_bias=bias, early_exit=e
        ).tokens
      )
    )
    for early in (True, False)
  }
  tokens = {e: np.asarray(common.block(fn(tok.variables, h))) for e, fn in decodes.items()}
  times = {'tokenize': [], True: [], False: []}
  peak = common.MatmulPeak(peak_n)
  peaks = []
  for _ in range(reps):
    t0 = common.now()
    out = tok.tokenize(waves, sr)
    times['tokenize'].append(common.now() - t0)
    for e, fn in decodes.items():
      t0 = common.now()
      common.block(fn(tok.variables, h))
      times[e].append(common.now() - t0)
    peaks.append(peak.measure())
  audio_s = waves.shape[0] * waves.shape[1] / sr
  rtf = audio_s / common.median(times['tokenize'])
  flops = tokenize_flops(config, waves.shape[0], _decode_steps(out, tok.max_len))
  return {
    'checkpoint': os.path.abspath(path),
    'segments': int(waves.shape[0]),
    'audio_seconds': audio_s,
    'mean_tokens': float(np.mean([len(t) for t in out.tokens])),
    'max_len': tok.max_len,
    'terminated_fraction': float(np.mean(out.terminated)),
    'tokenize_s_all': times['tokenize'],
    'decode_early_exit_s': common.median(times[True]),
    'decode_full_scan_s': common.median(times[False]),
    'early_exit_speedup': common.median(times[False]) / common.median(times[True]),
    'early_exit_tokens_equal': bool(np.array_equal(tokens[True], tokens[False])),
    'peak_flops_per_s': common.median(peaks),
    'tokenize_flops': _flops_summary(
      flops, audio_s, common.median(times['tokenize']), common.median(peaks)
    ),
    'tokenize_realtime_factor_trained': rtf,
    'tokenize_realtime_factor_trained_normalized': rtf * IDLE_PEAK_FLOPS / common.median(peaks),
  }


def _decode_steps(out, max_len: int) -> int:
  """Cached decoder steps a greedy decode of `out` (a `TokenizerOutput`) ran: until every row has
  written EOS (its tokens + 1), `max_len` when a row never did."""
  if not all(out.terminated):
    return int(max_len)
  return int(min(max_len, max(len(t) for t in out.tokens) + 1))
