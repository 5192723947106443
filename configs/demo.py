"""The README's first command: a small model trained and evaluated on the synthetic corpus.

Budget: about 10 minutes end to end on 2 CPU cores (training, then the evaluation report).
It shows the whole pipeline and the report; the headline figures come from `synthetic.py`.
"""

from configs import default as default_lib


def get_config():
  config = default_lib.get_config()
  config.batch_size = 16
  config.num_train_steps = 1_200
  config.log_every_steps = 25
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 300

  config.model.d_model = 128
  config.model.num_heads = 4
  config.model.mlp_dim = 512
  config.model.enc_layers = 3
  config.model.dec_layers = 2
  config.model.codebook_size = 256
  config.model.code_dim = 32
  config.model.max_len = 64
  config.model.dropout_rate = 0.0

  config.schedule.stage1_start = 300
  config.schedule.stage2_start = 700
  config.schedule.ramp_steps = 300
  config.schedule.ema_warmup_steps = 100
  config.schedule.ema_decay = 0.99

  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 100

  config.data.synthetic.num_train_speakers = 32
  config.data.synthetic.num_heldout_speakers = 8
  config.data.synthetic.num_train_sentences = 200
  config.data.synthetic.num_heldout_sentences = 50
  config.data.synthetic.train_size = 50_000

  config.eval.num_items = 50
  config.eval.queries_per_item = 3
  config.eval.sweep_items = 16
  return config
