"""Config files load and validate; impossible values fail with a message naming the key."""

import pytest

from configs import ablations
from configs import default
from configs import demo
from configs import librispeech
from configs import small_corpus
from configs import synthetic
from configs import synthetic_aug_only
from configs import timit
from pairalign_jax import config_validation as cv


@pytest.mark.parametrize('module', [default, demo, small_corpus, synthetic, synthetic_aug_only])
def test_shipped_configs_validate(module):
  cv.validate_config(module.get_config(), device_count=8)


def _flat(config):
  out = {}

  def walk(d, prefix):
    for key, value in d.items():
      if isinstance(value, dict):
        walk(value, prefix + key + '.')
      else:
        out[prefix + key] = value

  walk(config.to_dict(), '')
  return out


def test_synthetic_aug_only_is_synthetic_with_the_aligned_runs_overrides():
  """configs/synthetic_aug_only.py is the `aug_only_aligned` runs of launch/heldout_speech.sh:
  configs/synthetic.py with exactly their flags, nothing else."""
  base, aug_only = _flat(synthetic.get_config()), _flat(synthetic_aug_only.get_config())
  assert base.keys() == aug_only.keys()
  changed = {k: aug_only[k] for k in base if base[k] != aug_only[k]}
  assert changed == {
    'data.cross_speaker_views': 0.0,
    'data.augment.pitch_prob': 0.3,
    'loss.sequence_losses_train_encoder': False,
    'length.controller_gain': 0.0,
    'schedule.freeze_encoder': 'stage1',
    'model.decoder_reads_codes': True,
    'loss.time_jitter_seconds': 0.0,
    'loss.own_time_prob': 0.0,
    'eval.align_frames': 4,
  }


@pytest.mark.parametrize('module', [librispeech, timit])
def test_file_configs_need_a_path(module):
  config = module.get_config()
  with pytest.raises(cv.ConfigError, match=r'config\.data\.path'):
    cv.validate_config(config)
  config.data.path = '/data/x'
  cv.validate_config(config)


@pytest.mark.parametrize('name', sorted(ablations.ABLATIONS))
def test_every_ablation_validates_and_differs(name):
  config = ablations.get_config(name)
  cv.validate_config(config)
  if name != 'full':
    assert config != ablations.get_config('full')


def test_unknown_ablation():
  with pytest.raises(ValueError, match='no_such'):
    ablations.get_config('no_such')
  with pytest.raises(ValueError, match='budget'):
    ablations.get_config('no_contrast@huge')


def test_demo_budget_ablation_is_the_demo_with_one_switch():
  config = ablations.get_config('no_contrast@demo')
  cv.validate_config(config)
  assert config.num_train_steps == demo.get_config().num_train_steps
  assert (
    config.loss.contrast_weight == 0.0
    and ablations.get_config('full@demo').loss.contrast_weight > 0
  )


def _mutate(dotted, value):
  config = demo.get_config()
  node = config
  *parents, leaf = dotted.split('.')
  for p in parents:
    node = node[p]
  with config.unlocked() if hasattr(config, 'unlocked') else _null():
    node[leaf] = value
  return config


class _null:
  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False


@pytest.mark.parametrize(
  'dotted,value,pattern',
  [
    ('loss.contrast_weight', -1.0, r'config\.loss\.contrast_weight'),
    ('loss.prefix_corruption', 1.5, r'config\.loss\.prefix_corruption'),
    ('model.max_len', 20, r'config\.model\.max_len.*target length'),
    ('model.subsample', 3, r'config\.model\.subsample'),
    ('model.num_heads', 5, r'config\.model\.num_heads'),
    ('model.dtype', 'float16', r'config\.model\.dtype'),
    ('schedule.stage2_start', 10, r'config\.schedule\.stage2_start'),
    ('data.source', 'mp3s', r'config\.data\.source'),
    ('data.augment.noise_prob', 2.0, r'config\.data\.augment\.noise_prob'),
    ('data.augment.snr_db', (30.0, 10.0), r'config\.data\.augment\.snr_db'),
    ('batch_size', 0, r'config\.batch_size'),
    ('mesh.shape', (-1, -1, 1), r'config\.mesh\.shape'),
    ('data.cross_speaker_views', 1.5, r'config\.data\.cross_speaker_views'),
    ('vq.diversity_temperature', 0.0, r'config\.vq\.diversity_temperature'),
    ('targets.code_groups', 1, r'config\.targets\.code_groups'),
    ('targets.code_groups', 100_000, r'config\.targets\.code_groups'),
    ('vq.freeze_after_stage0', False, r'config\.targets\.code_groups.*freeze_after_stage0'),
    ('loss.own_time_prob', 1.5, r'config\.loss\.own_time_prob'),
    ('loss.own_time_passes', 0, r'config\.loss\.own_time_passes'),
    ('loss.time_jitter_seconds', -0.1, r'config\.loss\.time_jitter_seconds'),
    ('length.min_termination', 1.2, r'config\.length\.min_termination'),
    ('length.controller_decode_rows', 5, r'config\.length\.controller_decode_rows.*divide'),
    ('length.controller_decode_rows', -1, r'config\.length\.controller_decode_rows'),
    ('eval.beam_size', 0, r'config\.eval\.beam_size'),
    ('eval.beam_size', 100_000, r'config\.eval\.beam_size'),
    ('eval.beam_length_penalty', -0.5, r'config\.eval\.beam_length_penalty'),
    ('eval.queries_per_item', 0, r'config\.eval\.queries_per_item'),
    ('eval.sweep_items', 0, r'config\.eval\.sweep_items'),
    ('eval.split', 'dev', r"config\.eval\.split.*'validation'.*'test'.*'train'"),
    ('eval.kmeans_pool', 'max', r"config\.eval\.kmeans_pool.*'mean', 'stack'"),
    ('eval.retrieval_ties', 'expect', r'config\.eval\.retrieval_ties.*pessimistic'),
    ('eval.kmeans_train_segments', 0, r'config\.eval\.kmeans_train_segments'),
    ('eval.kmeans_max_frames', 0, r'config\.eval\.kmeans_max_frames'),
    ('eval.sweep_shifts_ms', (), r'config\.eval\.sweep_shifts_ms'),
    ('eval.sweep_shifts_ms', (10, 20), r'config\.eval\.sweep_shifts_ms.*start with 0'),
    ('eval.sweep_shifts_ms', (0, -10), r'config\.eval\.sweep_shifts_ms'),
    # Values that used to pass here and fail hours later (at stage 1, an evaluation, a random
    # step) or quietly do something else.
    ('data.path', '/my/audio', r"config\.data\.path.*source='synthetic'.*reads no files"),
    ('data.eval_path', 'heldout.tsv', r'config\.data\.eval_path'),
    ('data.augment.speed', (-0.1, 1.05), r'config\.data\.augment\.speed.*> 0'),
    ('data.augment.max_shift_ms', -5.0, r'config\.data\.augment\.max_shift_ms'),
    ('data.augment.max_shift_ms', 3000.0, r'config\.data\.augment\.max_shift_ms.*half'),
    ('data.augment.reverb_rt60', (0.0, 0.5), r'config\.data\.augment\.reverb_rt60'),
    ('data.augment.eq_high_hz', (250.0, 7500.0), r'config\.data\.augment\.eq_low_hz.*below'),
    ('eval.kmeans_max_frames', 100, r'config\.eval\.kmeans_max_frames.*>= 256'),
    ('eval.kmeans_train_segments', 1, r'config\.eval\.kmeans_train_segments.*fewer'),
    ('eval.kmeans_clusters', 1, r'config\.eval\.kmeans_clusters'),
    ('eval.kmeans_subsample', 0, r'config\.eval\.kmeans_subsample'),
    ('eval.eos_bias', float('nan'), r'config\.eval\.eos_bias.*finite'),
    ('model.attention_dropout_rate', 1.0, r'config\.model\.attention_dropout_rate'),
    ('model.recon_channels', 0, r'config\.model\.recon_channels'),
    ('frontend.n_mels', 0, r'config\.frontend\.n_mels'),
    ('frontend.specaugment.freq_masks', -1, r'config\.frontend\.specaugment\.freq_masks'),
    ('frontend.specaugment.freq_width', 80, r'config\.frontend\.specaugment\.freq_width'),
    ('frontend.specaugment.time_width', 300, r'config\.frontend\.specaugment\.time_width'),
    ('optim.b2', 1.0, r'config\.optim\.b2'),
    ('optim.b1', -0.1, r'config\.optim\.b1'),
    ('checkpoint.keep_period', 500, r'config\.checkpoint\.keep_period.*every 3000th'),
    ('seed', -1, r'config\.seed'),
    ('vq.dead_code_threshold', 20.0, r'config\.vq\.dead_code_threshold.*re-seeded'),
  ],
)
def test_impossible_values_name_the_key(dotted, value, pattern):
  with pytest.raises(cv.ConfigError, match=pattern):
    cv.validate_config(_mutate(dotted, value))


def test_controller_decode_rows_only_without_teacher_strings():
  config = _mutate('length.controller_decode_rows', 16)
  config.schedule.max_alpha = 0.0
  cv.validate_config(config)
  config.schedule.max_alpha = 0.5
  with pytest.raises(cv.ConfigError, match=r'controller_decode_rows.*max_alpha'):
    cv.validate_config(config)


def test_own_times_need_the_location_aware_decoder():
  config = _mutate('loss.own_time_prob', 0.5)
  cv.validate_config(config)
  config.model.time_bias_frames = 0
  with pytest.raises(cv.ConfigError, match=r'config\.loss\.own_time_prob.*time_bias_frames'):
    cv.validate_config(config)
  config.loss.own_time_prob = 0.0
  cv.validate_config(config)


def test_snap_times_needs_greedy_decoding_of_code_groups_by_a_located_decoder():
  config = _mutate('eval.snap_times', True)
  config.targets.code_groups = 16
  cv.validate_config(config)
  config.eval.beam_size = 2
  with pytest.raises(cv.ConfigError, match=r'config\.eval\.snap_times.*greedy'):
    cv.validate_config(config)
  config.eval.beam_size = 1
  config.model.time_bias_frames = 0
  config.loss.own_time_prob = 0.0
  with pytest.raises(cv.ConfigError, match=r'config\.eval\.snap_times.*time_bias_frames'):
    cv.validate_config(config)


def test_align_frames_needs_greedy_unsnapped_decoding_of_code_groups_by_a_located_decoder():
  config = _mutate('eval.align_frames', 2)
  config.targets.code_groups = 16
  cv.validate_config(config)
  config.eval.align_frames = -1
  with pytest.raises(cv.ConfigError, match=r'config\.eval\.align_frames.*integer'):
    cv.validate_config(config)
  config.eval.align_frames = 2
  config.eval.beam_size = 2
  with pytest.raises(cv.ConfigError, match=r'config\.eval\.align_frames.*greedy'):
    cv.validate_config(config)
  config.eval.beam_size = 1
  config.eval.snap_times = True
  with pytest.raises(cv.ConfigError, match=r'config\.eval\.align_frames.*snap'):
    cv.validate_config(config)
  config.eval.snap_times = False
  config.targets.code_groups = 0
  with pytest.raises(cv.ConfigError, match=r'config\.eval\.align_frames.*code_groups'):
    cv.validate_config(config)


@pytest.mark.parametrize('option', ['choose_from_runs', 'end_at_last_run'])
def test_aligned_decoding_options_need_align_frames(option):
  config = _mutate(f'eval.{option}', True)
  config.targets.code_groups = 16
  with pytest.raises(cv.ConfigError, match=rf'config\.eval\.{option}.*align_frames'):
    cv.validate_config(config)
  config.eval.align_frames = 4
  cv.validate_config(config)


def test_time_anchor_is_checked_and_excludes_snapping_to_run_centres():
  config = _mutate('targets.time_anchor', 'end')
  cv.validate_config(config)
  config.targets.code_groups = 16
  config.eval.snap_times = True
  with pytest.raises(cv.ConfigError, match=r'config\.eval\.snap_times.*time_anchor'):
    cv.validate_config(config)
  config = _mutate('targets.time_anchor', 'start')
  with pytest.raises(cv.ConfigError, match=r'config\.targets\.time_anchor.*centre.*end'):
    cv.validate_config(config)


def test_time_head_is_checked_and_the_pointer_needs_the_location_bias():
  cv.validate_config(_mutate('model.time_head', 'pointer'))
  with pytest.raises(cv.ConfigError, match=r'config\.model\.time_head.*centroid.*pointer'):
    cv.validate_config(_mutate('model.time_head', 'mode'))
  config = _mutate('model.time_head', 'pointer')
  config.model.time_bias_frames = 0
  config.loss.own_time_prob = 0.0
  with pytest.raises(cv.ConfigError, match=r'config\.model\.time_head.*time_bias_frames'):
    cv.validate_config(config)


def test_location_anchor_is_checked_and_previous_layer_needs_unscanned_centroid_layers():
  config = _mutate('model.location_anchor', 'previous_layer')
  config.model.scan_layers = False
  cv.validate_config(config)
  with pytest.raises(
    cv.ConfigError, match=r'config\.model\.location_anchor.*input.*previous_layer'
  ):
    cv.validate_config(_mutate('model.location_anchor', 'output'))
  config.model.scan_layers = True
  with pytest.raises(cv.ConfigError, match=r'config\.model\.location_anchor.*scan_layers=False'):
    cv.validate_config(config)
  config.model.scan_layers = False
  config.model.time_head = 'pointer'
  with pytest.raises(cv.ConfigError, match=r'config\.model\.location_anchor.*centroid'):
    cv.validate_config(config)


def test_batch_must_divide_data_parallel_size():
  config = demo.get_config()
  config.batch_size = 12
  config.mesh.shape = (8, 1, 1)
  with pytest.raises(cv.ConfigError, match=r'config\.batch_size.*divisible.*8'):
    cv.validate_config(config, device_count=8)
  config.mesh.shape = (4, 1, 2)
  cv.validate_config(config, device_count=8)


def test_mesh_shape_must_match_devices():
  config = demo.get_config()
  config.mesh.shape = (3, 1, 1)
  with pytest.raises(cv.ConfigError, match=r'config\.mesh\.shape'):
    cv.validate_config(config, device_count=8)
  assert cv.resolve_mesh_shape((-1, 2, 1), 8) == (4, 2, 1)


def test_unknown_keys_are_named():
  config = demo.get_config()
  config.loss.contrast_wieght = 1.0
  config.new_top_level = 3
  with pytest.raises(cv.ConfigError) as err:
    cv.validate_config(config)
  message = str(err.value)
  assert 'config.loss.contrast_wieght' in message and 'contrast_weight' in message
  assert 'config.new_top_level' in message
