"""The README's first command: a small model trained and evaluated on the synthetic corpus.

Budget: about 10 minutes end to end on 2 CPU cores (3 compiles, 360 training steps through the
three stages, then the evaluation report on held-out speakers and sentences). It shows the whole
pipeline and the report; it is far too short for good strings: the headline figures come from
`synthetic.py` (same model size, about 7x the steps).
"""

from configs import synthetic as synthetic_lib


def get_config():
  config = synthetic_lib.get_config()
  config.num_train_steps = 360
  config.log_every_steps = 20
  config.checkpoint_every_steps = 120

  config.schedule.stage1_start = 150
  config.schedule.stage2_start = 300
  config.schedule.ramp_steps = 40
  config.schedule.ema_warmup_steps = 20

  config.optim.warmup_steps = 50

  config.eval.num_items = 30
  config.eval.queries_per_item = 3
  config.eval.sweep_items = 8
  config.eval.kmeans_train_segments = 300
  return config
