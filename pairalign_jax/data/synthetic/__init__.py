"""The built-in synthetic speech corpus: a source-filter (Klatt-style) synthesizer in numpy.

Described in docs/synthetic_corpus.md. No download, no model code: numpy and scipy.signal only.
The corpus is fully determined by `cfg.seed`; the same seed gives bit-identical audio.

Modules, one concern each (every name below is re-exported here):

* `phones`: the phone inventory (`PHONES`, `PHONE_SPECS`, `VOWELS`, `CONSONANTS`), 35 phones
  with formant targets, durations and noise classes.
* `speakers`: `Speaker` and `make_speaker` (f0, vocal-tract length, rate, voice quality).
* `lexicon`: words (`make_lexicon`, three disjoint lists) and sentences (`make_sentences`,
  `nominal_seconds`).
* `dsp`: filter primitives (the exact block-wise time-varying filter, the fast `lfilter`).
* `synthesis`: `synthesize(phones, speaker, rng, ...)`, one utterance, as a sequence of steps
  (layout, control tracks, f0, glottal source, aspiration, vocal tract, frication, output).
* `source`: `SyntheticSpeechSource`, the random-access source of the 'train', 'validation' and
  'test' splits (random streams, grids, `heldout_index`), and `benchmark`.
* `plots`: `plot_examples`, the spectrogram figure.
* `__main__`: the CLI, `python -m pairalign_jax.data.synthetic [--figure PNG] [--wav_dir DIR]
  [--bench N]`.
"""

from pairalign_jax.data.splits import SPLITS
from pairalign_jax.data.synthetic.lexicon import Lexicon
from pairalign_jax.data.synthetic.lexicon import make_lexicon
from pairalign_jax.data.synthetic.lexicon import make_sentences
from pairalign_jax.data.synthetic.lexicon import nominal_seconds
from pairalign_jax.data.synthetic.lexicon import NUM_HELDOUT_WORDS
from pairalign_jax.data.synthetic.lexicon import NUM_TRAIN_WORDS
from pairalign_jax.data.synthetic.lexicon import NUM_VALIDATION_WORDS
from pairalign_jax.data.synthetic.lexicon import Sentence
from pairalign_jax.data.synthetic.lexicon import Word
from pairalign_jax.data.synthetic.phones import CONSONANTS
from pairalign_jax.data.synthetic.phones import PHONE_SPECS
from pairalign_jax.data.synthetic.phones import PHONES
from pairalign_jax.data.synthetic.phones import PhoneSpec
from pairalign_jax.data.synthetic.phones import VOWELS
from pairalign_jax.data.synthetic.plots import plot_examples
from pairalign_jax.data.synthetic.source import benchmark
from pairalign_jax.data.synthetic.source import heldout_index
from pairalign_jax.data.synthetic.source import SyntheticSpeechSource
from pairalign_jax.data.synthetic.speakers import make_speaker
from pairalign_jax.data.synthetic.speakers import Speaker
from pairalign_jax.data.synthetic.synthesis import synthesize
from pairalign_jax.data.synthetic.synthesis import TAIL_SECONDS

# The name this constant had before the package was split (tests use it).
_TAIL_SECONDS = TAIL_SECONDS

__all__ = [
  'CONSONANTS',
  'Lexicon',
  'NUM_HELDOUT_WORDS',
  'NUM_TRAIN_WORDS',
  'NUM_VALIDATION_WORDS',
  'PHONES',
  'PHONE_SPECS',
  'PhoneSpec',
  'SPLITS',
  'Sentence',
  'Speaker',
  'SyntheticSpeechSource',
  'TAIL_SECONDS',
  'VOWELS',
  'Word',
  'benchmark',
  'heldout_index',
  'make_lexicon',
  'make_sentences',
  'make_speaker',
  'nominal_seconds',
  'plot_examples',
  'synthesize',
]
