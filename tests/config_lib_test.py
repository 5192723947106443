"""One source of truth for config: derived quantities, `upgrade` of saved configs, no defaults in
the settings dataclasses."""

import dataclasses

import ml_collections
import pytest

from configs import default as configs_default
from pairalign_jax import config_lib
from pairalign_jax import default_config
from pairalign_jax import frontend
from pairalign_jax import models
from pairalign_jax import objective
from pairalign_jax import targets


def test_configs_default_is_the_library_tree():
  assert configs_default.get_config().to_dict() == default_config.get_config().to_dict()


def test_derived_quantities():
  config = default_config.get_config()
  config.audio.sample_rate, config.audio.segment_seconds = 16_000, 3.0
  config.frontend.hop_length, config.model.subsample = 160, 2
  assert config_lib.segment_samples(config) == 48_000
  assert config_lib.mel_frame_seconds(config) == pytest.approx(0.01)
  assert config_lib.encoder_frame_seconds(config) == pytest.approx(0.02)
  assert config_lib.mel_frames_per_segment(config) == 300
  config.audio.segment_seconds = 1.00004  # rounds to 16 001 samples
  assert config_lib.segment_samples(config) == 16_001
  # Every settings object agrees with the one computation.
  config = default_config.get_config()
  assert models.ModelConfig.from_config(config).frame_seconds == pytest.approx(
    config_lib.encoder_frame_seconds(config)
  )
  assert targets.TargetSettings.from_config(config).frame_seconds == pytest.approx(
    config_lib.encoder_frame_seconds(config)
  )
  assert objective.ObjectiveSettings.from_config(config).mel_frame_seconds == pytest.approx(
    config_lib.mel_frame_seconds(config)
  )


@pytest.mark.parametrize('time_anchor', ['centre', 'end'])
def test_objective_builds_the_same_target_settings_as_the_analysis_side(time_anchor):
  """Training (ObjectiveSettings.targets) and analysis (TargetSettings.from_config) make the
  targets from equal settings, the token-time anchor included."""
  config = default_config.get_config()
  config.targets.time_anchor = time_anchor
  config.targets.min_run_frames = -1
  settings = targets.TargetSettings.from_config(config)
  assert settings.time_anchor == time_anchor
  assert objective.ObjectiveSettings.from_config(config).targets == settings


def test_settings_have_no_defaults_of_their_own():
  for cls in (
    models.ModelConfig,
    frontend.FrontendConfig,
    objective.ObjectiveSettings,
    targets.TargetSettings,
  ):
    with_default = [
      f.name
      for f in dataclasses.fields(cls)
      if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ]
    assert not with_default, (cls.__name__, with_default)


def test_upgrade_of_a_current_config_changes_nothing():
  config = default_config.get_config()
  config.model.d_model = 48
  assert config_lib.upgrade(config).to_dict() == config.to_dict()


def _without(config: ml_collections.ConfigDict, *dotted: str) -> ml_collections.ConfigDict:
  tree = config.to_dict()
  for name in dotted:
    node = tree
    *parents, leaf = name.split('.')
    for p in parents:
      node = node[p]
    del node[leaf]
  return ml_collections.ConfigDict(tree)


def test_upgrade_fills_legacy_values_and_defaults():
  config = default_config.get_config()
  config.data.synthetic.num_heldout_speakers = 5
  config.model.max_len = 40  # kept
  old = _without(
    config,
    'model.time_bias_frames',
    'model.enc_positions',
    'frontend.vtlp',  # a whole sub-config
    'data.synthetic.num_validation_speakers',
    'log_every_steps',  # no legacy value: the current default
  )
  new = config_lib.upgrade(old)
  assert new.model.time_bias_frames == 0 and new.model.enc_positions == 'sinusoidal'
  assert new.frontend.vtlp.enabled is False
  assert tuple(new.frontend.vtlp.alpha) == tuple(config.frontend.vtlp.alpha)
  assert new.data.synthetic.num_validation_speakers == 5  # the test split's size
  assert new.log_every_steps == default_config.get_config().log_every_steps
  assert new.model.max_len == 40
  assert 'time_bias_frames' not in old.model  # the input is not modified
  # What the library builds from the upgraded config is what those runs were.
  assert models.ModelConfig.from_config(new).time_bias_frames == 0
  assert frontend.FrontendConfig.from_config(new).vtlp is False


@pytest.mark.parametrize('old_value, new_value', [(True, 'stage1'), (False, 'never')])
def test_upgrade_replaces_a_retired_key(old_value, new_value):
  """A run saved with schedule.freeze_encoder_after_stage0 loads with schedule.freeze_encoder set
  to what it did, and the retired key gone (validation would call it unknown)."""
  old = _without(default_config.get_config(), 'schedule.freeze_encoder')
  old.schedule.freeze_encoder_after_stage0 = old_value
  new = config_lib.upgrade(old)
  assert new.schedule.freeze_encoder == new_value
  assert 'freeze_encoder_after_stage0' not in new.schedule
  assert old.schedule.freeze_encoder_after_stage0 is old_value  # the input is not modified


def test_legacy_keys_exist_in_the_default_tree():
  reference = default_config.get_config()
  for name in config_lib.LEGACY_VALUES:
    node = reference
    for part in name.split('.'):
      assert part in node, name
      node = node[part]
