"""The full synthetic corpus with augmentation-only views and the small corpus's training and
decoding settings: the model to pretrain before `configs/small_corpus.py` on your own audio.

`configs/synthetic.py` (32 training speakers x 200 sentences, 50 000 draws) with views that are two
augmentations of one recording (`data.cross_speaker_views = 0`, pitch shifts on 30% of views), as
your audio has them, and what `configs/small_corpus.py` chose on the validation split for the
decoder: the sequence terms kept off the encoder, no EOS-bias length controller, the encoder
frozen from stage 1, a decoder that reads each frame's VQ code and is trained on its targets'
exact input times, and aligned decoding (`eval.align_frames = 4`). Its 16 code groups are the
farthest-point grouping (`targets.group_candidates = 1`) and strings end at `max_len` or EOS, as
the runs of docs/results.md were trained (`aug_only_aligned`, setting (b); test split, seeds
0 / 1 / 2: PairAlign recall@1 0.943 / 0.957 / 0.863 at 0.39x its VQ stage's archive). Fine-tuned
from it with `configs/small_corpus.py` as it was on 2026-12-06 (VQ-code targets, no VQ refit), the
small corpus reached 0.977 / 0.982 / 0.979 (setting (d), docs/results.md).

Then, on your audio (README, "Train on your own audio"):

  python -m pairalign_jax.main --config=configs/small_corpus.py --workdir=runs/mine_ft \\
      --config.init_from=runs/syn_aug --config.data.source=folder --config.data.path=DIR
"""

from configs import synthetic as synthetic_lib


def get_config():
  config = synthetic_lib.get_config()
  config.data.cross_speaker_views = 0.0
  config.data.augment.pitch_prob = 0.3
  config.loss.sequence_losses_train_encoder = False
  config.length.controller_gain = 0.0
  config.schedule.freeze_encoder = 'stage1'
  config.model.decoder_reads_codes = True
  config.loss.time_jitter_seconds = 0.0
  config.loss.own_time_prob = 0.0
  config.eval.align_frames = 4
  return config
