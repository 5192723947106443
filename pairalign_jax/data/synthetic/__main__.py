"""`python -m pairalign_jax.data.synthetic [--figure PNG] [--wav_dir DIR] [--bench N]`.

Writes the example spectrograms of docs/synthetic_corpus.md, the plotted examples as WAV files,
and times the generator on the default config's corpus.
"""

from typing import Sequence

import numpy as np

from pairalign_jax.data.synthetic.plots import plot_examples
from pairalign_jax.data.synthetic.source import benchmark
from pairalign_jax.data.synthetic.source import SyntheticSpeechSource


def main(argv: Sequence[str] | None = None) -> None:
  """`python -m pairalign_jax.data.synthetic [--figure PNG] [--wav_dir DIR] [--bench N]`."""
  import argparse

  from absl import logging

  logging.set_verbosity(logging.INFO)
  parser = argparse.ArgumentParser(
    prog='python -m pairalign_jax.data.synthetic', description=main.__doc__
  )
  parser.add_argument('--figure', default='', help='write example log-mel spectrograms here')
  parser.add_argument('--wav_dir', default='', help='write the plotted examples as WAV files here')
  parser.add_argument('--bench', type=int, default=0, help='time this many train utterances')
  args = parser.parse_args(argv)
  from pairalign_jax import default_config

  cfg = default_config.get_config()
  sr, seconds = cfg.audio.sample_rate, cfg.audio.segment_seconds
  if args.bench:
    train = SyntheticSpeechSource(
      cfg.data.synthetic, 'train', sample_rate=sr, segment_seconds=seconds
    )
    logging.info(
      'generation speed (%d utterances, one process): %s', args.bench, benchmark(train, args.bench)
    )
    times = [train[i]['phone_times'] for i in range(min(args.bench, 200))]
    rates = [len(t) / (t[-1, 1] - t[0, 0]) for t in times]
    logging.info(
      'speaking rate: mean %.2f phones/s (min %.2f, max %.2f)',
      np.mean(rates),
      np.min(rates),
      np.max(rates),
    )
  if args.figure or args.wav_dir:
    heldout = SyntheticSpeechSource(
      cfg.data.synthetic, 'heldout', sample_rate=sr, segment_seconds=seconds
    )
    records = plot_examples(heldout, args.figure) if args.figure else [heldout[0], heldout[1]]
    if args.wav_dir:
      import os

      import soundfile

      for r in records:
        soundfile.write(os.path.join(args.wav_dir, r['id'] + '.wav'), r['audio'], sr)


if __name__ == '__main__':
  main()
