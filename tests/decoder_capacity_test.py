"""decoder_capacity.py: the label sampler, the frame vectors, the collapsed targets, and
a few training steps of a small decoder on the copy task."""

import numpy as np
import pytest

from configs import demo
from pairalign_jax import decoder_capacity

PROBS = (0.0, 0.5, 0.5)  # runs of 2 or 3 frames


def _runs(row):
  starts = np.concatenate([[0], np.nonzero(row[1:] != row[:-1])[0] + 1])
  return row[starts], np.diff(np.concatenate([starts, [row.size]]))


def test_sample_labels_tiles_runs_of_the_drawn_lengths():
  labels = decoder_capacity.sample_labels(np.random.default_rng(0), 8, 60, 4, PROBS)
  assert labels.shape == (8, 60) and labels.dtype == np.int32
  assert labels.min() >= 0 and labels.max() < 4
  for row in labels:
    _, lengths = _runs(row)
    # Every run but the last (cut by the segment's end) is 2 or 3 frames long: neighbours differ.
    assert set(lengths[:-1].tolist()) <= {2, 3}
  again = decoder_capacity.sample_labels(np.random.default_rng(0), 8, 60, 4, PROBS)
  np.testing.assert_array_equal(labels, again)
  with pytest.raises(ValueError, match='at least 2 labels'):
    decoder_capacity.sample_labels(np.random.default_rng(0), 1, 10, 1, PROBS)
  with pytest.raises(ValueError, match='positive sum'):
    decoder_capacity.sample_labels(np.random.default_rng(0), 1, 10, 4, (0.0, -1.0))


def test_frame_vectors_are_their_labels_rows():
  rng = np.random.default_rng(1)
  table = rng.standard_normal((3 * 2, 5)).astype(np.float32)  # 3 labels x 2 vectors each
  labels = np.array([[0, 0, 1, 2, 2]], np.int32)
  h = decoder_capacity.frame_vectors(rng, labels, table, 2, noise=0.0)
  assert h.shape == (1, 5, 5)
  for t, label in enumerate(labels[0]):
    assert any(np.array_equal(h[0, t], table[label * 2 + j]) for j in range(2))
  noisy = decoder_capacity.frame_vectors(np.random.default_rng(2), labels, table, 2, noise=1.0)
  assert not np.allclose(noisy, h)


def test_task_targets_are_the_collapsed_runs():
  config = demo.get_config()
  task = decoder_capacity.LabelTask(config, noise=0.0, codes_per_group=1, run_probs=PROBS, seed=0)
  batch = task.batch(np.random.default_rng(3), 4)
  assert batch['h'].shape == (4, task.frames, config.model.d_model)
  for i in range(4):
    n = int(batch['lengths'][i])
    assert batch['tokens'][i, n] == task.vocab.eos
    # Each token's frame vector (noise 0) is its label's row, at the token's run centre.
    frames = np.floor(batch['times'][i, :n] / task.frame_seconds).astype(int)
    for token, frame in zip(batch['tokens'][i, :n], frames):
      np.testing.assert_array_equal(batch['h'][i, frame], task.table[token])
    assert np.all(np.diff(batch['tokens'][i, :n]) != 0)  # repeats collapsed
  with pytest.raises(ValueError, match='codes_per_group'):
    decoder_capacity.LabelTask(config, noise=0.0, codes_per_group=0, run_probs=PROBS, seed=0)


def _small_config():
  config = demo.get_config()
  config.audio.segment_seconds = 1.0
  config.model.d_model, config.model.num_heads, config.model.mlp_dim = 32, 2, 64
  config.model.enc_layers, config.model.dec_layers, config.model.max_len = 1, 1, 32
  config.optim.warmup_steps = 5
  return config


def test_a_small_decoder_learns_the_copy_task():
  config = _small_config()
  report = decoder_capacity.decoder_capacity(
    config,
    steps=150,
    eval_every=75,
    batch_rows=16,
    prefix_corruption=0.3,
    input_time_jitter=0.02,
    own_time_prob=0.5,
  )
  first, last = report['curve'][0], report['curve'][-1]
  assert [p['step'] for p in report['curve']] == [75, 150]
  assert last['nats_per_token'] < first['nats_per_token']
  assert last['greedy_normalized_edit_distance'] < first['greedy_normalized_edit_distance']
  assert (
    last['greedy_aligned_normalized_edit_distance']
    < first['greedy_aligned_normalized_edit_distance']
  )
  assert 0.0 <= last['accuracy_own_times'] <= 1.0 and last['time_error_own_times_seconds'] >= 0.0
  assert last['accuracy'] > 4.0 / report['labels']  # 4x chance among the labels (0.52 here)
  assert set(report['final_accuracy_by_run_frames']) >= {'2', '3', 'EOS'}
  assert report['prefix_corruption'] == 0.3 and report['input_time_jitter'] == 0.02
  assert report['own_time_prob'] == 0.5 and report['own_time_passes'] == 3
  assert report['align_frames'] == 2
  with pytest.raises(ValueError, match='steps'):
    decoder_capacity.decoder_capacity(config, steps=0)
  with pytest.raises(ValueError, match='align_frames'):
    decoder_capacity.decoder_capacity(config, steps=1, align_frames=0)
