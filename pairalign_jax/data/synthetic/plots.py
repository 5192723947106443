"""The example figure of docs/synthetic_corpus.md: log-mel spectrograms with phone labels.

Needs matplotlib and librosa, imported only when `plot_examples` runs.
"""

from typing import Any, Sequence

import numpy as np

from pairalign_jax.data.synthetic.source import SyntheticSpeechSource


def plot_examples(
  source: SyntheticSpeechSource, path: str, sentences: Sequence[int] = (0, 1)
) -> list[dict[str, Any]]:
  """Log-mel spectrograms with phone labels: sentence `sentences[0]` by the held-out speakers with
  the lowest and the highest f0, and each further sentence by the lowest-f0 speaker. Returns the
  plotted records. Needs matplotlib and librosa (imported here only)."""
  import librosa
  import librosa.display
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  if source.split == 'train':
    raise ValueError('plot_examples needs an evaluation split (same sentence, several speakers)')
  f0 = [s.f0_mean for s in source.speakers]
  low, high = int(np.argmin(f0)), int(np.argmax(f0))
  cells = [(low, sentences[0]), (high, sentences[0])] + [(low, j) for j in sentences[1:]]
  records = [source[source.index_of(s, j)] for s, j in cells]
  fig, axes = plt.subplots(len(records), 1, figsize=(14, 3.3 * len(records)), squeeze=False)
  for ax, r in zip(axes[:, 0], records):
    sr = r['sample_rate']
    mel = librosa.feature.melspectrogram(
      y=r['audio'], sr=sr, n_fft=512, win_length=400, hop_length=160, n_mels=80, fmax=sr / 2
    )
    librosa.display.specshow(
      librosa.power_to_db(mel, ref=np.max, top_db=80.0),
      sr=sr,
      hop_length=160,
      x_axis='time',
      y_axis='mel',
      fmax=sr / 2,
      ax=ax,
    )
    for k, (phone, (t0, t1)) in enumerate(zip(r['phones'], r['phone_times'])):
      ax.axvline(t0, color='w', lw=0.5, alpha=0.5)
      ax.text((t0 + t1) / 2, 5200 if k % 2 else 6400, phone, color='w', ha='center', fontsize=9)
    spk = source.speakers[r['speaker_index']]
    ax.set_title(
      f"{r['id']}  ({r['content_id']}: '{r['text']}')   f0 {spk.f0_mean:.0f} Hz, "
      f'formant scale {spk.formant_scale:.2f}, {len(r["phones"])} phones',
      fontsize=10,
    )
    ax.set_xlabel('time (s)')
  fig.tight_layout()
  fig.savefig(path, dpi=72)
  plt.close(fig)
  return records
