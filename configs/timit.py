"""TIMIT (the paper's retrieval set): --config.data.path=/data/TIMIT (holding TRAIN/ and TEST/).

Retrieval queries are other speakers reading the same sentence (content_id = sentence id);
SA sentences are excluded by default.
"""

from configs import default as default_lib


def get_config():
  config = default_lib.get_config()
  config.data.source = 'timit'
  config.data.path = ''  # required: --config.data.path=/data/TIMIT
  config.data.timit_exclude_sa = True
  config.data.worker_count = 4
  config.num_train_steps = 60_000
  config.schedule.stage1_start = 5_000
  config.schedule.stage2_start = 15_000
  config.schedule.ramp_steps = 15_000
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 2_000
  return config
