"""LibriSpeech: set --config.data.path to a subset directory (e.g. .../LibriSpeech/train-clean-100)
and --config.data.eval_path to a held-out one (e.g. .../LibriSpeech/dev-clean)."""

from configs import default as default_lib


def get_config():
  config = default_lib.get_config()
  config.data.source = 'librispeech'
  config.data.path = ''  # required: --config.data.path=/data/LibriSpeech/train-clean-100
  config.data.eval_path = ''  # e.g. /data/LibriSpeech/dev-clean
  config.data.worker_count = 4
  config.num_train_steps = 100_000
  config.schedule.stage1_start = 5_000
  config.schedule.stage2_start = 20_000
  config.schedule.ramp_steps = 20_000
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 2_000
  return config
