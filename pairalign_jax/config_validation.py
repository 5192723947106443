"""Start-up validation of a run configuration.

`validate_config(config)` raises `ConfigError` with a message that names the offending key
(``config.loss.contrast_weight``) for unknown keys and impossible values, before any compile
or data read. Unknown keys are found by comparing against the tree of ``default_config.py``, so a
typo in an ablation config fails loudly instead of being ignored.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Iterable, Optional

import ml_collections

from pairalign_jax import config_lib
from pairalign_jax import default_config as default_config_lib
from pairalign_jax import models
from pairalign_jax import sequences
from pairalign_jax import units as units_lib
from pairalign_jax import vq_refit as vq_refit_lib
from pairalign_jax.data import splits as splits_lib

MESH_AXES = ('data', 'fsdp', 'tensor')
SOURCES = ('synthetic', 'librispeech', 'timit', 'folder', 'manifest')
# Keys whose value is a free-form mapping (their children are not checked against the default).
_FREE_FORM = frozenset()


class ConfigError(ValueError):
  """A configuration entry is unknown or has an impossible value."""


def default_config() -> ml_collections.ConfigDict:
  return default_config_lib.get_config()


def _walk(cfg: Any, prefix: str) -> Iterable[tuple[str, Any]]:
  for key, value in cfg.items():
    name = f'{prefix}.{key}'
    if isinstance(value, ml_collections.ConfigDict):
      yield from _walk(value, name)
    else:
      yield name, value


def _get(cfg: ml_collections.ConfigDict, dotted: str) -> Any:
  node = cfg
  for part in dotted.split('.')[1:]:
    node = node[part]
  return node


def _ref_tree(reference: ml_collections.ConfigDict) -> tuple[set[str], set[str]]:
  """(dotted leaf keys, dotted sub-dict keys) of `reference`, each starting with 'config'."""
  ref_keys = {name for name, _ in _walk(reference, 'config')}
  ref_dicts = set()

  def collect_dicts(cfg, prefix):
    for key, value in cfg.items():
      if isinstance(value, ml_collections.ConfigDict):
        ref_dicts.add(f'{prefix}.{key}')
        collect_dicts(value, f'{prefix}.{key}')

  collect_dicts(reference, 'config')
  return ref_keys, ref_dicts


def unknown_key_hint(name: str, reference: ml_collections.ConfigDict) -> Optional[str]:
  """None when the dotted `name` ('config.model.d_model') is a key or sub-config of `reference`;
  else one line naming it and the nearest valid keys (difflib) under its deepest known parent."""
  ref_keys, ref_dicts = _ref_tree(reference)
  if name in ref_keys or name in ref_dicts or any(name.startswith(f + '.') for f in _FREE_FORM):
    return None
  parent = name.rsplit('.', 1)[0]
  while parent != 'config' and parent not in ref_dicts:
    parent = parent.rsplit('.', 1)[0]
  missing = name[len(parent) + 1 :].split('.', 1)[0]
  siblings = sorted(
    {
      k[len(parent) + 1 :].split('.', 1)[0]
      for k in ref_keys | ref_dicts
      if k.startswith(parent + '.')
    }
  )
  near = difflib.get_close_matches(missing, siblings, n=3, cutoff=0.5)
  if near:
    return f'{name}: unknown config key; nearest valid keys: ' + ', '.join(
      f'{parent}.{k}' for k in near
    )
  return f'{name}: unknown config key; the keys under {parent} are: {", ".join(siblings)}'


def check_unknown_keys(
  config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict
) -> None:
  """Every key of `config` must exist in `reference` (the default config); ConfigError names each
  unknown key and its nearest valid keys (`unknown_key_hint`)."""
  hints = [
    hint
    for hint in (unknown_key_hint(name, reference) for name, _ in _walk(config, 'config'))
    if hint
  ]
  if hints:
    raise ConfigError('Unknown config key(s): ' + '; '.join(hints))


def _require(cond: bool, key: str, message: str) -> None:
  if not cond:
    raise ConfigError(f'{key}: {message}')


def _require_located_code_groups(config: ml_collections.ConfigDict, key: str) -> None:
  """`key` (a way of feeding back times on the model's own code-group runs) needs a location-aware
  decoder trained on code groups."""
  m = config.model
  _require(
    m.time_bias_frames > 0 and config.targets.code_groups > 0,
    key,
    'needs a location-aware decoder (config.model.time_bias_frames > 0) trained on code groups '
    f'(config.targets.code_groups > 0), got {m.time_bias_frames} and '
    f'{config.targets.code_groups}',
  )


def max_tokens_for_target(config: ml_collections.ConfigDict) -> int:
  """Codes a segment has at the configured target rate (rounded up)."""
  return int(math.ceil(config.length.target_rate * config.audio.segment_seconds))


def validate_config(
  config: ml_collections.ConfigDict,
  *,
  device_count: Optional[int] = None,
  reference: Optional[ml_collections.ConfigDict] = None,
) -> None:
  """Raises ConfigError naming the first key at fault.

  Args:
    config: the run configuration.
    device_count: global number of devices; when given, the mesh shape and the batch's
      divisibility by the data-parallel size are checked too.
    reference: the schema to check keys against (default: configs/default.py).
  """
  check_unknown_keys(config, reference if reference is not None else default_config())

  # Run lengths and intervals.
  for key in (
    'batch_size',
    'num_train_steps',
    'log_every_steps',
    'checkpoint_every_steps',
    'max_nonfinite_steps',
  ):
    _require(
      int(config[key]) > 0, f'config.{key}', f'must be a positive integer, got {config[key]!r}'
    )
  _require(
    int(config.eval_every_steps) >= 0,
    'config.eval_every_steps',
    'must be >= 0 (0 = only at the end)',
  )
  _require(
    isinstance(config.seed, int) and config.seed >= 0,
    'config.seed',
    f'must be an integer >= 0 (the data pipeline refuses negative seeds), got {config.seed!r}',
  )

  # Audio and front end.
  fe = config.frontend
  _require(config.audio.sample_rate > 0, 'config.audio.sample_rate', 'must be positive')
  _require(config.audio.segment_seconds > 0, 'config.audio.segment_seconds', 'must be positive')
  _require(
    fe.win_length <= fe.n_fft,
    'config.frontend.win_length',
    f'must be <= config.frontend.n_fft ({fe.n_fft}), got {fe.win_length}',
  )
  _require(
    0 < fe.hop_length <= fe.win_length, 'config.frontend.hop_length', 'must be in (0, win_length]'
  )
  _require(
    0 <= fe.fmin < fe.fmax <= config.audio.sample_rate / 2,
    'config.frontend.fmax',
    f'need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fe.fmin}, fmax={fe.fmax}',
  )
  _require(fe.log_floor > 0, 'config.frontend.log_floor', 'must be positive')
  _require(int(fe.n_mels) >= 1, 'config.frontend.n_mels', f'must be >= 1, got {fe.n_mels!r}')
  mel_frames = config_lib.mel_frames_per_segment(config)
  spec = fe.specaugment
  for key in ('freq_masks', 'time_masks'):
    _require(
      int(spec[key]) >= 0,
      f'config.frontend.specaugment.{key}',
      f'must be a count >= 0, got {spec[key]!r}',
    )
  _require(
    0 <= int(spec.freq_width) < fe.n_mels,
    'config.frontend.specaugment.freq_width',
    f'must be in [0, config.frontend.n_mels={fe.n_mels}) mel bands (a wider mask hides the '
    f'whole spectrum), got {spec.freq_width!r}',
  )
  _require(
    0 <= int(spec.time_width) < mel_frames,
    'config.frontend.specaugment.time_width',
    f'must be in [0, {mel_frames}) frames (a wider mask hides the whole segment), '
    f'got {spec.time_width!r}',
  )
  _require(
    0 <= int(fe.cepstral_coeffs) <= fe.n_mels,
    'config.frontend.cepstral_coeffs',
    f'must be in [0, config.frontend.n_mels={fe.n_mels}] (0 = off), got {fe.cepstral_coeffs}',
  )

  # Model.
  m = config.model
  _require(m.subsample in (2, 4), 'config.model.subsample', f'must be 2 or 4, got {m.subsample}')
  # Sizes first, so that d_model=-1 is blamed on d_model, not on the divisibility below.
  _require(
    int(m.d_model) > 0,
    'config.model.d_model',
    f'must be a positive integer (a multiple of config.model.num_heads={m.num_heads}), '
    f'got {m.d_model!r}',
  )
  _require(
    int(m.num_heads) > 0,
    'config.model.num_heads',
    f'must be a positive integer dividing config.model.d_model ({m.d_model}), got {m.num_heads!r}',
  )
  _require(
    m.d_model % m.num_heads == 0,
    'config.model.num_heads',
    f'must divide config.model.d_model ({m.d_model}), got {m.num_heads}',
  )
  for key in ('mlp_dim', 'enc_layers', 'dec_layers', 'codebook_size', 'code_dim', 'max_len'):
    _require(int(m[key]) > 0, f'config.model.{key}', f'must be positive, got {m[key]!r}')
  _require(m.codebook_size >= 2, 'config.model.codebook_size', 'must be >= 2')
  _require(
    m.dtype in ('float32', 'bfloat16'),
    'config.model.dtype',
    f"must be 'float32' or 'bfloat16', got {m.dtype!r}",
  )
  _require(0.0 <= m.dropout_rate < 1.0, 'config.model.dropout_rate', 'must be in [0, 1)')
  _require(
    0.0 <= m.attention_dropout_rate < 1.0,
    'config.model.attention_dropout_rate',
    f'must be in [0, 1) (1 zeroes every attention weight), got {m.attention_dropout_rate!r}',
  )
  _require(
    int(m.recon_channels) >= 1,
    'config.model.recon_channels',
    f'must be >= 1, got {m.recon_channels!r}',
  )
  _require(
    m.get('time_bias_scale', 1.0) > 0,
    'config.model.time_bias_scale',
    f'must be positive, got {m.get("time_bias_scale")!r}',
  )
  time_head = m.get('time_head', 'centroid')
  _require(
    time_head in models.TIME_HEADS,
    'config.model.time_head',
    f'must be one of {models.TIME_HEADS}, got {time_head!r}',
  )
  _require(
    time_head != 'pointer' or m.time_bias_frames > 0,
    'config.model.time_head',
    "'pointer' points at a frame relative to the input time, so it needs the location-aware "
    f'decoder (config.model.time_bias_frames > 0), got {m.time_bias_frames}',
  )
  anchor = m.get('location_anchor', 'input')
  _require(
    anchor in models.LOCATION_ANCHORS,
    'config.model.location_anchor',
    f'must be one of {models.LOCATION_ANCHORS}, got {anchor!r}',
  )
  _require(
    anchor != 'previous_layer'
    or (time_head == 'centroid' and not m.scan_layers and m.time_bias_frames > 0),
    'config.model.location_anchor',
    "'previous_layer' centres each layer's location bias on the time the layer before it found: "
    "it needs config.model.time_head='centroid', config.model.time_bias_frames > 0 and "
    f'config.model.scan_layers=False (got {time_head!r}, {m.time_bias_frames}, {m.scan_layers})',
  )
  needed = max_tokens_for_target(config) + 1  # codes + EOS
  _require(
    m.max_len >= needed,
    'config.model.max_len',
    f'L={m.max_len} is smaller than the target length: {config.length.target_rate} tokens/s x '
    f'{config.audio.segment_seconds} s needs at least {needed} steps (codes + EOS)',
  )

  # VQ.
  _require(0.0 < config.vq.ema_decay < 1.0, 'config.vq.ema_decay', 'must be in (0, 1)')
  _require(config.vq.epsilon > 0, 'config.vq.epsilon', 'must be positive')
  _require(
    0.0 <= config.data.cross_speaker_views <= 1.0,
    'config.data.cross_speaker_views',
    'is a probability and must be in [0, 1]',
  )
  _require(
    config.vq.diversity_temperature > 0, 'config.vq.diversity_temperature', 'must be positive'
  )
  _require(config.vq.dead_code_threshold >= 0, 'config.vq.dead_code_threshold', 'must be >= 0')
  # Each code's EMA count averages at least batch x encoder frames / K frames a step (one view).
  mean_count = config.batch_size * (mel_frames // m.subsample) / m.codebook_size
  _require(
    config.vq.dead_code_threshold < mean_count,
    'config.vq.dead_code_threshold',
    f'is {config.vq.dead_code_threshold}, not below the {mean_count:.3g} frames a code gets on '
    f'average per step (batch_size={config.batch_size}, codebook_size={m.codebook_size}): most '
    'codes would be re-seeded every step and the codebook would never settle',
  )

  # Loss weights and their parameters.
  for name, value in config.loss.items():
    if name.endswith('_weight'):
      _require(
        value >= 0, f'config.loss.{name}', f'loss weights must be >= 0 (0 = ablated), got {value}'
      )
  for name in ('prefix_corruption', 'corruption_delete', 'corruption_duplicate'):
    value = config.loss[name]
    _require(
      0.0 <= value < 1.0, f'config.loss.{name}', f'must be a fraction in [0, 1), got {value}'
    )
  _require(
    config.loss.code_pred_targets in units_lib.TARGETS,
    'config.loss.code_pred_targets',
    f'must be one of {units_lib.TARGETS}, got {config.loss.code_pred_targets!r}',
  )
  if config.loss.code_pred_targets == 'units':
    _require(
      2 <= config.loss.unit_clusters <= config.model.codebook_size,
      'config.loss.unit_clusters',
      f'must be in [2, config.model.codebook_size={config.model.codebook_size}] (the code head '
      f'predicts the unit ids), got {config.loss.unit_clusters}',
    )
    _require(
      1 <= config.loss.unit_coeffs <= config.frontend.n_mels,
      'config.loss.unit_coeffs',
      f'must be in [1, config.frontend.n_mels={config.frontend.n_mels}], got '
      f'{config.loss.unit_coeffs}',
    )
    _require(
      config.loss.unit_fit_recordings >= 2,
      'config.loss.unit_fit_recordings',
      f'must be >= 2, got {config.loss.unit_fit_recordings}',
    )
    _require(
      config.loss.code_pred_weight > 0,
      'config.loss.code_pred_targets',
      "is 'units' while config.loss.code_pred_weight is 0: nothing would read the units",
    )
  _require(
    config.loss.contrast_temperature > 0, 'config.loss.contrast_temperature', 'must be positive'
  )
  _require(config.loss.contrast_negatives >= 0, 'config.loss.contrast_negatives', 'must be >= 0')
  _require(
    config.loss.contrast_negatives < config.batch_size,
    'config.loss.contrast_negatives',
    f'must be < config.batch_size ({config.batch_size})',
  )
  chunk = config.loss.score_chunk_rows
  _require(
    isinstance(chunk, int) and not isinstance(chunk, bool) and chunk >= 0,
    'config.loss.score_chunk_rows',
    f'must be an integer >= 0 (0 = every scored row in one decoder call, C > 0 = at most C rows '
    f'per call), got {chunk!r}',
  )
  _require(config.loss.antibypass_margin >= 0, 'config.loss.antibypass_margin', 'must be >= 0')
  _require(config.loss.max_gap_seconds > 0, 'config.loss.max_gap_seconds', 'must be positive')
  _require(config.loss.time_jitter_seconds >= 0, 'config.loss.time_jitter_seconds', 'must be >= 0')
  _require(
    0.0 <= config.loss.own_time_prob <= 1.0,
    'config.loss.own_time_prob',
    f'must be a fraction in [0, 1], got {config.loss.own_time_prob}',
  )
  _require(
    config.loss.own_time_passes >= 1,
    'config.loss.own_time_passes',
    f'must be >= 1, got {config.loss.own_time_passes}',
  )
  _require(
    config.loss.own_time_prob == 0 or config.model.time_bias_frames > 0,
    'config.loss.own_time_prob',
    'needs the location-aware decoder (config.model.time_bias_frames > 0): only it reads input '
    'times',
  )
  _require(
    config.targets.min_run_frames == -1 or config.targets.min_run_frames >= 1,
    'config.targets.min_run_frames',
    'must be -1 (derive from the target rate) or >= 1',
  )
  _require(
    config.targets.get('time_anchor', 'centre') in sequences.TIME_ANCHORS,
    'config.targets.time_anchor',
    f'must be one of {sequences.TIME_ANCHORS}, got {config.targets.get("time_anchor")!r}',
  )
  refit = config.vq.get('refit', 'none')
  _require(
    refit in vq_refit_lib.REFITS,
    'config.vq.refit',
    f'must be one of {vq_refit_lib.REFITS}, got {refit!r}',
  )
  if refit != 'none':
    _require(
      config.schedule.freeze_encoder == 'stage1' and config.vq.freeze_after_stage0,
      'config.vq.refit',
      f"is {refit!r}, which needs config.schedule.freeze_encoder='stage1' and "
      'config.vq.freeze_after_stage0=True (the refitted quantizer must stay as fitted), got '
      f'{config.schedule.freeze_encoder!r} and {config.vq.freeze_after_stage0}',
    )
    _require(
      0 < config.schedule.stage1_start < config.num_train_steps
      or (config.schedule.stage1_start == 0 and config.init_from),
      'config.vq.refit',
      f'is {refit!r}: the refit runs at the start of stage 1 on a stage-0 encoder, so '
      f'config.schedule.stage1_start must be in (0, num_train_steps={config.num_train_steps}), '
      f"got {config.schedule.stage1_start} (0 only with config.init_from: the source's "
      'quantizer is then kept)',
    )
    _require(
      config.model.code_dim <= config.model.d_model,
      'config.vq.refit',
      f'projects the {config.model.d_model}-dim encoder frames onto their top principal '
      f'directions: config.model.code_dim must be <= config.model.d_model, got '
      f'{config.model.code_dim}',
    )
    _require(
      config.vq.refit_recordings >= 2,
      'config.vq.refit_recordings',
      f'must be >= 2, got {config.vq.refit_recordings}',
    )
  groups = config.targets.code_groups
  _require(
    groups == 0 or 2 <= groups <= config.model.codebook_size,
    'config.targets.code_groups',
    f'must be 0 (targets are codes) or in [2, model.codebook_size={config.model.codebook_size}], '
    f'got {groups}',
  )
  _require(
    groups == 0 or config.vq.freeze_after_stage0,
    'config.targets.code_groups',
    'needs config.vq.freeze_after_stage0=True (the groups are computed from the codebook, '
    'which must not change after stage 0)',
  )
  candidates = config.targets.group_candidates
  _require(
    isinstance(candidates, int) and candidates >= 1,
    'config.targets.group_candidates',
    f'must be an integer >= 1, got {candidates!r}',
  )
  if candidates > 1:
    _require(
      groups > 0,
      'config.targets.group_candidates',
      f'> 1 chooses among code groupings: needs config.targets.code_groups > 0, got {groups}',
    )
    _require(
      config.schedule.stage1_start > 0 or config.init_from,
      'config.targets.group_candidates',
      '> 1 chooses the grouping of the codebook stage 0 trained: needs '
      f'config.schedule.stage1_start > 0, got {config.schedule.stage1_start} (0 only with '
      "config.init_from: the source's grouping is then kept)",
    )
    measure = config.targets.get('group_choice', 'view_margin')
    _require(
      measure in ('view_margin', 'validation_recall'),
      'config.targets.group_choice',
      f"must be 'view_margin' or 'validation_recall', got {measure!r}",
    )
    recordings = config.targets.group_choice_recordings
    _require(
      isinstance(recordings, int) and recordings >= 2,
      'config.targets.group_choice_recordings',
      f'must be an integer >= 2 (a recording is told apart from the others), got {recordings!r}',
    )
    ratio = config.targets.group_choice_max_rate_ratio
    _require(
      0 < ratio <= 1,
      'config.targets.group_choice_max_rate_ratio',
      f"must be in (0, 1] (the groups' strings relative to the VQ strings), got {ratio!r}",
    )

  # Length control.
  _require(config.length.target_rate > 0, 'config.length.target_rate', 'must be positive')
  _require(config.length.controller_gain >= 0, 'config.length.controller_gain', 'must be >= 0')
  _require(config.length.bias_limit >= 0, 'config.length.bias_limit', 'must be >= 0')
  _require(
    0.0 <= config.length.min_termination <= 1.0,
    'config.length.min_termination',
    f'must be a fraction in [0, 1], got {config.length.min_termination}',
  )
  rows = config.length.controller_decode_rows
  _require(
    isinstance(rows, int)
    and 0 <= rows <= 2 * config.batch_size
    and (rows == 0 or (2 * config.batch_size) % rows == 0),
    'config.length.controller_decode_rows',
    f'must be 0 (every row) or divide the 2 x batch_size = {2 * config.batch_size} rows of a '
    f'step, got {rows!r}',
  )
  _require(
    rows == 0 or config.schedule.max_alpha == 0,
    'config.length.controller_decode_rows',
    f'must be 0 when schedule.max_alpha > 0 (the decodes are mixed into the targets of every '
    f'row), got {rows} with max_alpha={config.schedule.max_alpha}',
  )

  # Evaluation (keys the final evaluation reads only after training: checked here).
  from pairalign_jax.evaluation import baselines as baselines_lib
  from pairalign_jax.evaluation import retrieval as retrieval_lib

  ev = config.eval
  for key, allowed in (
    ('kmeans_pool', baselines_lib.POOLS),
    ('retrieval_ties', retrieval_lib.TIES),
  ):
    _require(
      ev.get(key, allowed[0]) in allowed,
      f'config.eval.{key}',
      f'must be one of {allowed}, got {ev.get(key)!r}',
    )
  for key in ('kmeans_train_segments', 'kmeans_max_frames'):
    if key in ev:
      _require(
        int(ev[key]) > 0, f'config.eval.{key}', f'must be a positive integer, got {ev[key]!r}'
      )
  _require(
    int(ev.kmeans_clusters) == -1 or int(ev.kmeans_clusters) >= 2,
    'config.eval.kmeans_clusters',
    f'must be -1 (model.codebook_size) or >= 2, got {ev.kmeans_clusters!r}',
  )
  _require(
    int(ev.kmeans_subsample) == -1 or 1 <= int(ev.kmeans_subsample) <= mel_frames,
    'config.eval.kmeans_subsample',
    f'must be -1 (model.subsample) or in [1, {mel_frames}] (the mel frames of a segment), '
    f'got {ev.kmeans_subsample!r}',
  )
  kmeans_k, kmeans_sub = config_lib.kmeans_baseline_size(config)
  # The MFCC k-means baselines fit 64 clusters (evaluation/baselines.py).
  needed_frames = max(kmeans_k, 64)
  _require(
    int(ev.kmeans_max_frames) >= needed_frames,
    'config.eval.kmeans_max_frames',
    f'must be >= {needed_frames} (the k-means baselines fit {kmeans_k} and 64 clusters), got '
    f'{ev.kmeans_max_frames!r}',
  )
  _require(
    int(ev.kmeans_train_segments) * (mel_frames // kmeans_sub) >= kmeans_k,
    'config.eval.kmeans_train_segments',
    f'{ev.kmeans_train_segments} segments of {mel_frames // kmeans_sub} pooled frames are fewer '
    f'frames than the {kmeans_k} clusters of the k-means baseline',
  )
  _require(
    math.isfinite(float(ev.eos_bias)),
    'config.eval.eos_bias',
    f'must be a finite number, got {ev.eos_bias!r}',
  )
  shifts = [float(x) for x in ev.sweep_shifts_ms]
  _require(
    bool(shifts) and shifts[0] == 0.0 and min(shifts) >= 0.0,
    'config.eval.sweep_shifts_ms',
    f'must start with 0 (the reference) and have no negative shift, got {tuple(shifts)}',
  )
  for key in ('queries_per_item', 'batch_size', 'sweep_items'):
    _require(int(ev[key]) > 0, f'config.eval.{key}', f'must be a positive integer, got {ev[key]!r}')
  for key, low in (('num_items', 2), ('archive_rotations', 1)):
    _require(
      int(ev[key]) >= low or int(ev[key]) == -1,
      f'config.eval.{key}',
      f'must be an integer >= {low}, or -1 (all), got {ev[key]!r}',
    )
  _require(
    ev.split in splits_lib.SPLITS + ('heldout',),
    'config.eval.split',
    f"must be 'validation' (choices), 'test' (claims; 'heldout' is its old name) or 'train' "
    f'(how well the model fits what it was trained on; neither choices nor claims), '
    f'got {ev.split!r}',
  )
  _require(
    1 <= int(ev.beam_size) <= m.codebook_size and int(ev.beam_size) == ev.beam_size,
    'config.eval.beam_size',
    f'must be an integer in [1, codebook_size={m.codebook_size}] (1 = greedy), '
    f'got {ev.beam_size!r}',
  )
  _require(
    ev.beam_length_penalty >= 0,
    'config.eval.beam_length_penalty',
    f'must be >= 0, got {ev.beam_length_penalty!r}',
  )
  if ev.get('snap_times', False):
    _require(
      int(ev.beam_size) == 1,
      'config.eval.snap_times',
      f'is for greedy decoding (config.eval.beam_size=1), got beam_size={ev.beam_size!r}',
    )
    _require_located_code_groups(config, 'config.eval.snap_times')
    _require(
      config.targets.get('time_anchor', 'centre') == 'centre',
      'config.eval.snap_times',
      "snaps the decoder's times to run centres, so it needs config.targets.time_anchor="
      f"'centre', got {config.targets.get('time_anchor')!r}",
    )

  align = ev.get('align_frames', 0)
  _require(
    isinstance(align, int) and not isinstance(align, bool) and align >= 0,
    'config.eval.align_frames',
    f'must be an integer >= 0 (encoder frames; 0 = off), got {align!r}',
  )
  if align:
    _require(
      int(ev.beam_size) == 1 and not ev.get('snap_times', False),
      'config.eval.align_frames',
      'is for greedy decoding without snapped times (config.eval.beam_size=1, '
      f'config.eval.snap_times=False), got beam_size={ev.beam_size!r}, '
      f'snap_times={ev.get("snap_times", False)!r}',
    )
    _require_located_code_groups(config, 'config.eval.align_frames')
  choose = ev.get('choose_from_runs', False)
  _require(
    isinstance(choose, bool),
    'config.eval.choose_from_runs',
    f'must be True or False, got {choose!r}',
  )
  _require(
    not choose or align > 0,
    'config.eval.choose_from_runs',
    'chooses among the runs config.eval.align_frames places tokens on: set align_frames > 0',
  )
  end = ev.get('end_at_last_run', False)
  _require(
    isinstance(end, bool), 'config.eval.end_at_last_run', f'must be True or False, got {end!r}'
  )
  _require(
    not end or align > 0,
    'config.eval.end_at_last_run',
    'ends at the last run config.eval.align_frames places tokens on: set align_frames > 0',
  )

  # Schedule.
  s = config.schedule
  _require(0 <= s.stage1_start, 'config.schedule.stage1_start', 'must be >= 0')
  _require(
    s.stage1_start <= s.stage2_start,
    'config.schedule.stage2_start',
    f'must be >= config.schedule.stage1_start ({s.stage1_start})',
  )
  _require(s.ramp_steps >= 0, 'config.schedule.ramp_steps', 'must be >= 0')
  _require(0.0 <= s.max_alpha <= 1.0, 'config.schedule.max_alpha', 'must be in [0, 1]')
  _require(0.0 <= s.ema_decay < 1.0, 'config.schedule.ema_decay', 'must be in [0, 1)')
  _require(s.ema_warmup_steps >= 0, 'config.schedule.ema_warmup_steps', 'must be >= 0')
  _require(
    s.freeze_encoder in ('never', 'stage1', 'stage2'),
    'config.schedule.freeze_encoder',
    f"must be 'never', 'stage1' or 'stage2', got {s.freeze_encoder!r}",
  )
  _require(
    not (s.freeze_encoder != 'never' and config.loss.sequence_losses_train_encoder),
    'config.schedule.freeze_encoder',
    f'is {s.freeze_encoder!r} while config.loss.sequence_losses_train_encoder is True: the '
    'sequence terms would train the encoder that this keeps frozen; set '
    'loss.sequence_losses_train_encoder=False',
  )
  _require(
    s.stage1_teacher in ('frozen', 'student'),
    'config.schedule.stage1_teacher',
    f"must be 'frozen' or 'student', got {s.stage1_teacher!r}",
  )
  _require(
    not (s.stage1_teacher == 'student' and config.loss.sequence_losses_train_encoder),
    'config.schedule.stage1_teacher',
    "is 'student' while config.loss.sequence_losses_train_encoder is True: the sequence terms "
    'would train the encoder whose codes are their own targets; set '
    'loss.sequence_losses_train_encoder=False',
  )

  # Optimizer.
  o = config.optim
  _require(o.learning_rate > 0, 'config.optim.learning_rate', 'must be positive')
  _require(o.warmup_steps >= 0, 'config.optim.warmup_steps', 'must be >= 0')
  _require(
    0 <= o.end_learning_rate_factor <= 1,
    'config.optim.end_learning_rate_factor',
    'must be in [0, 1]',
  )
  _require(o.grad_clip >= 0, 'config.optim.grad_clip', 'must be >= 0 (0 = off)')
  _require(o.weight_decay >= 0, 'config.optim.weight_decay', 'must be >= 0')
  for key in ('b1', 'b2'):
    _require(0 <= o[key] < 1, f'config.optim.{key}', f'must be in [0, 1), got {o[key]!r}')

  # Data.
  d = config.data
  _require(d.source in SOURCES, 'config.data.source', f'must be one of {SOURCES}, got {d.source!r}')
  if d.source != 'synthetic':
    _require(bool(d.path), 'config.data.path', f'is required for config.data.source={d.source!r}')
  else:
    for key in ('path', 'eval_path'):
      _require(
        not d[key],
        f'config.data.{key}',
        f"is set ({d[key]!r}) while config.data.source='synthetic', which reads no files: set "
        "config.data.source ('folder', 'manifest', 'librispeech' or 'timit') for your audio",
      )
  _require(d.worker_count >= 0, 'config.data.worker_count', 'must be >= 0')
  _require(0.0 <= d.max_bad_fraction <= 1.0, 'config.data.max_bad_fraction', 'must be in [0, 1]')
  for name, value in d.augment.items():
    if name.endswith('_prob'):
      _require(
        0.0 <= value <= 1.0, f'config.data.augment.{name}', f'must be a probability, got {value}'
      )
    elif isinstance(value, (tuple, list)):
      _require(
        len(value) == 2 and value[0] <= value[1],
        f'config.data.augment.{name}',
        f'must be a (low, high) range, got {value}',
      )

  aug = d.augment
  _require(
    aug.speed[0] > 0,
    'config.data.augment.speed',
    f'speed factors must be > 0, got the range {tuple(aug.speed)}',
  )
  _require(
    0 <= aug.max_shift_ms <= 500 * config.audio.segment_seconds,
    'config.data.augment.max_shift_ms',
    f'must be in [0, {500 * config.audio.segment_seconds:g}] ms (half the segment), got '
    f'{aug.max_shift_ms!r}',
  )
  _require(
    aug.reverb_rt60[0] > 0,
    'config.data.augment.reverb_rt60',
    f'reverberation times must be > 0 s, got the range {tuple(aug.reverb_rt60)}',
  )
  eq_top = min(aug.eq_high_hz[0], 0.95 * config.audio.sample_rate / 2)
  _require(
    aug.eq_low_hz[1] < eq_top,
    'config.data.augment.eq_low_hz',
    f'every low edge must lie below every high edge (and 0.95 x Nyquist): the highest low edge '
    f'{aug.eq_low_hz[1]} Hz is not below {eq_top:g} Hz (config.data.augment.eq_high_hz='
    f'{tuple(aug.eq_high_hz)})',
  )

  # Fine-tuning (config.init_from; the source's model is checked against this one in train.py).
  _require(
    isinstance(config.init_from, str),
    'config.init_from',
    f"must be a workdir or checkpoint step folder ('' = off), got {config.init_from!r}",
  )
  for key in ('init_from_vq_stats', 'init_from_teacher'):
    _require(
      isinstance(config[key], bool), f'config.{key}', f'must be True or False, got {config[key]!r}'
    )
  _require(
    not config.init_from
    or config.init_from_vq_stats
    or config.schedule.stage1_start > 0
    or not config.vq.freeze_after_stage0,
    'config.init_from_vq_stats',
    'is False with config.schedule.stage1_start=0 and config.vq.freeze_after_stage0: the fresh '
    'random codebook would be frozen from step 0 without ever being trained; take the '
    "source's codebook (True) or keep a stage 0",
  )

  # Checkpoints.
  _require(config.checkpoint.max_to_keep >= 1, 'config.checkpoint.max_to_keep', 'must be >= 1')
  _require(config.checkpoint.keep_period >= 0, 'config.checkpoint.keep_period', 'must be >= 0')
  period, every = int(config.checkpoint.keep_period), int(config.checkpoint_every_steps)
  _require(
    period == 0 or period % every == 0 or every % period == 0,
    'config.checkpoint.keep_period',
    f'must be a multiple of config.checkpoint_every_steps ({every}) or divide it: it keeps the '
    f'saved steps that are multiples of it, so {period} would keep only every '
    f'{math.lcm(period, every) if period > 0 else 0}th step',
  )

  # Mesh.
  shape = tuple(int(x) for x in config.mesh.shape)
  _require(
    len(shape) == len(MESH_AXES),
    'config.mesh.shape',
    f'must have {len(MESH_AXES)} entries for axes {MESH_AXES}, got {shape}',
  )
  _require(
    sum(1 for x in shape if x == -1) <= 1,
    'config.mesh.shape',
    f'at most one -1 allowed, got {shape}',
  )
  _require(
    all(x == -1 or x >= 1 for x in shape),
    'config.mesh.shape',
    f'entries must be >= 1 or -1, got {shape}',
  )
  if device_count is not None:
    resolved = resolve_mesh_shape(shape, device_count)
    data_parallel = resolved[0] * resolved[1]
    _require(
      config.batch_size % data_parallel == 0,
      'config.batch_size',
      f'{config.batch_size} is not divisible by the data-parallel size {data_parallel} '
      f'(mesh {dict(zip(MESH_AXES, resolved))})',
    )


def resolve_mesh_shape(shape, device_count: int) -> tuple[int, int, int]:
  """Replaces a -1 in `shape` by the remaining devices; checks the product."""
  shape = tuple(int(x) for x in shape)
  known = math.prod(x for x in shape if x != -1)
  if -1 in shape:
    if device_count % known:
      raise ConfigError(f'config.mesh.shape: {shape} does not divide {device_count} devices')
    shape = tuple(device_count // known if x == -1 else x for x in shape)
  if math.prod(shape) != device_count:
    raise ConfigError(
      f'config.mesh.shape: {shape} uses {math.prod(shape)} devices, '
      f'but {device_count} are available'
    )
  return shape
