"""`configs/small_corpus.py` on speech it was not developed on: the eSpeak NG corpus.

Every setting of `configs/small_corpus.py` was chosen on the synthetic corpus' validation split.
This config changes only the data: English sentences read by eSpeak NG voices
(`pairalign_jax/data/espeak_corpus.py`), 9 training voices x 64 sentences with every recording a
different sentence (576 recordings, no parallel readings), evaluated on voices and sentences never
heard in training ('validation' and 'test': 6 voices each, 50 sentences each, all read by every
voice of the split). Build the corpus first (about a minute; `apt-get install espeak-ng`):

  python -m pairalign_jax.data.espeak_corpus --out=data/espeak
  python -m pairalign_jax.main --config=configs/espeak_small_corpus.py --workdir=runs/espeak

`--config.data.path` / `--config.data.eval_path` point elsewhere; `--config.init_from=RUN` starts
from a run of `configs/synthetic_aug_only.py`, as setting (d) of docs/results.md does.
The last two settings of `configs/small_corpus.py` (acoustic-unit targets in stage 0, the VQ
stage refitted to the encoder at stage 1) were chosen on this corpus' validation split; test,
seeds 0-2: PairAlign recall@1 0.966 against 0.963 for an MFCC k-means at 3x the tokens
(docs/results.md, "Refitting the VQ stage to the encoder"). Without them
(`--config.loss.code_pred_targets=vq --config.vq.refit=none`) it read 0.880 (seed 0).
"""

from configs import small_corpus as small_corpus_lib

CORPUS_DIR = 'data/espeak'


def get_config():
  config = small_corpus_lib.get_config()
  config.data.source = 'manifest'
  config.data.path = f'{CORPUS_DIR}/train.tsv'
  config.data.eval_path = f'{CORPUS_DIR}/heldout.tsv'
  return config
