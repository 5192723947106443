"""Quantities derived from a run config, computed in one place, and `upgrade` for saved configs.

    samples = config_lib.segment_samples(config)          # samples per training segment
    config = config_lib.upgrade(checkpointing_config)     # done by checkpointing.read_config

The keys and their defaults are `default_config.get_config()` (the one source of truth). The
settings dataclasses (`models.ModelConfig`, `frontend.FrontendConfig`,
`objective.ObjectiveSettings`, `targets.TargetSettings`) are built only through their
`from_config`, which read keys directly: a config saved by an older version is completed by
`upgrade` when it is read, not by fallbacks scattered through the code.
"""

from __future__ import annotations

from typing import Any, Callable, Union

from absl import logging
import ml_collections

from pairalign_jax import default_config

# Keys added after runs were saved without them, and the value that reproduces those runs (a
# value, or a function of the saved config). A missing key not listed here takes the default.
LEGACY_VALUES: dict[str, Union[Any, Callable[[ml_collections.ConfigDict], Any]]] = {
  'model.enc_positions': 'sinusoidal',
  'model.time_bias_frames': 0,
  'model.adapter_layers': 0,  # the location-aware decoder came later
  'model.decoder_reads_codes': False,
  'model.time_head': 'centroid',
  'model.location_anchor': 'input',
  'model.time_bias_scale': 1.0,
  'optim.clip_stage0_apart': False,
  'vq.diversity_temperature': 0.1,
  'targets.code_groups': 0,  # targets were the codes themselves
  'targets.time_anchor': 'centre',
  'frontend.vtlp.enabled': False,
  'loss.sequence_losses_train_encoder': True,
  'loss.score_chunk_rows': 0,  # every row scored in one decoder call
  'eval.beam_size': 1,  # greedy decoding
  'eval.beam_length_penalty': 0.0,
  'eval.align_frames': 0,  # the decoder's own times fed back
  'data.synthetic.num_validation_speakers': lambda c: c.data.synthetic.num_heldout_speakers,
  'data.synthetic.num_validation_sentences': lambda c: c.data.synthetic.num_heldout_sentences,
  # Replaced the boolean schedule.freeze_encoder_after_stage0 (RETIRED_KEYS).
  'schedule.freeze_encoder': lambda c: (
    'stage1' if c.schedule.get('freeze_encoder_after_stage0', False) else 'never'
  ),
}
# Keys that saved configs may have and the current tree no longer does: `upgrade` drops them after
# their LEGACY_VALUES replacement has read them.
RETIRED_KEYS = ('schedule.freeze_encoder_after_stage0',)


def segment_samples(config: ml_collections.ConfigDict) -> int:
  """Samples in one training / tokenization segment: round(sample_rate * segment_seconds)."""
  return int(round(float(config.audio.sample_rate) * float(config.audio.segment_seconds)))


def mel_frame_seconds(config: ml_collections.ConfigDict) -> float:
  """The front end's hop in seconds (one log-mel frame)."""
  return int(config.frontend.hop_length) / int(config.audio.sample_rate)


def encoder_frame_seconds(config: ml_collections.ConfigDict) -> float:
  """One encoder frame (after `model.subsample`) in seconds: the VQ codes' frame."""
  return int(config.model.subsample) * mel_frame_seconds(config)


def mel_frames_per_segment(config: ml_collections.ConfigDict) -> int:
  """Log-mel frames in one segment (the front end's centred STFT adds none: floor(S / hop))."""
  return segment_samples(config) // int(config.frontend.hop_length)


def kmeans_baseline_size(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(clusters, frames pooled per k-means frame) of the log-mel k-means baseline: `eval.kmeans_*`,
  -1 resolved to `model.codebook_size` / `model.subsample`."""
  k, sub = int(config.eval.kmeans_clusters), int(config.eval.kmeans_subsample)
  return (
    k if k > 0 else int(config.model.codebook_size),
    sub if sub > 0 else int(config.model.subsample),
  )


def _missing_leaves(
  reference: ml_collections.ConfigDict, config: ml_collections.ConfigDict, prefix: str = ''
) -> list[str]:
  """Dotted keys of `reference` that `config` lacks (a missing sub-dict counts leaf by leaf)."""
  missing = []
  for key, value in reference.items():
    name = f'{prefix}{key}'
    present = key in config
    if isinstance(value, ml_collections.ConfigDict):
      sub = config[key] if present else ml_collections.ConfigDict()
      missing += _missing_leaves(value, sub, name + '.')
    elif not present:
      missing.append(name)
  return missing


def _set(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  node = config
  parts = dotted.split('.')
  for part in parts[:-1]:
    if part not in node:
      node[part] = ml_collections.ConfigDict()
    node = node[part]
  node[parts[-1]] = value


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node


def upgrade(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of a saved `config` with every key of the current default tree present.

  A key the config lacks gets its `LEGACY_VALUES` entry (what runs saved before the key existed
  did) or, if none, the current default; the filled keys are logged once. Keys the config has are
  never changed; `RETIRED_KEYS` are dropped (their replacement read them), and other keys the
  default no longer has are kept (validation reports them).
  """
  reference = default_config.get_config()
  upgraded = ml_collections.ConfigDict(config.to_dict())
  missing = _missing_leaves(reference, upgraded)
  if not missing:
    return upgraded
  for name in missing:
    _set(upgraded, name, _get(reference, name))
  for name in missing:
    if name in LEGACY_VALUES:
      legacy = LEGACY_VALUES[name]
      _set(upgraded, name, legacy(upgraded) if callable(legacy) else legacy)
  for name in RETIRED_KEYS:
    parent, leaf = name.rsplit('.', 1)
    node = _get(upgraded, parent)
    if leaf in node:
      del node[leaf]
  logging.info(
    'config saved by an older version: %d keys filled (%s)',
    len(missing),
    ', '.join(f'{n}={_get(upgraded, n)!r}' for n in missing[:12])
    + (', ...' if len(missing) > 12 else ''),
  )
  return upgraded
