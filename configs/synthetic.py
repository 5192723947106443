"""The headline run on the built-in synthetic corpus (held-out speakers and sentences).

Budget: about 60 minutes on 2 CPU cores. Its report compares PairAlign with the stage-0 VQ
tokenizer and a k-means baseline through the same evaluation code.
"""

from configs import default as default_lib


def get_config():
  config = default_lib.get_config()
  config.batch_size = 32
  config.num_train_steps = 6_000
  config.log_every_steps = 50
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 500

  config.model.d_model = 192
  config.model.num_heads = 4
  config.model.mlp_dim = 768
  config.model.enc_layers = 4
  config.model.dec_layers = 3
  config.model.codebook_size = 256
  config.model.code_dim = 32
  config.model.max_len = 64
  config.model.dropout_rate = 0.0

  config.schedule.stage1_start = 1_000
  config.schedule.stage2_start = 3_000
  config.schedule.ramp_steps = 1_500
  config.schedule.ema_warmup_steps = 300
  config.schedule.ema_decay = 0.995

  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 300

  config.eval.num_items = 100
  config.eval.queries_per_item = 3
  return config
