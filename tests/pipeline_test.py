"""Tests for pairalign_jax/data/pipeline.py (and bad_input.SkippingSource inside it)."""

import os

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
import soundfile as sf

from configs import default as default_config
from pairalign_jax.data import bad_input
from pairalign_jax.data import folder
from pairalign_jax.data import manifest
from pairalign_jax.data import pipeline

SR = 16_000


def small_config(segment_seconds=0.25, batch_size=4, **data):
  config = default_config.get_config()
  config.seed = 3
  config.batch_size = batch_size
  config.audio.segment_seconds = segment_seconds
  config.data.read_threads = 2
  config.data.align_views_in_stage0 = False
  for k, v in data.items():
    config.data[k] = v
  return config


class ArraySource:
  """In-memory source in the record format of docs/ARCHITECTURE.md (distinct audio per item)."""

  def __init__(self, n=10, seconds=0.5):
    self.n, self.seconds = n, seconds

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    rng = np.random.default_rng(1000 + int(i))
    audio = (0.1 * rng.standard_normal(int(self.seconds * SR))).astype(np.float32)
    return {
      'audio': audio,
      'sample_rate': SR,
      'id': f'utt{i}',
      'speaker': f's{i % 3}',
      'content_id': f'c{i}',
    }


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batch_format():
  config = small_config()
  batch = next(pipeline.make_train_iterator(config, source=ArraySource()))
  assert sorted(batch) == ['bad_counts', 'cross_speaker', 'index', 'view1', 'view2']
  assert batch['view1'].shape == batch['view2'].shape == (4, 4000)
  assert batch['view1'].dtype == np.float32 and batch['index'].dtype == np.int64
  assert batch['bad_counts'].shape == (4, bad_input.NUM_REASONS)
  assert batch['bad_counts'].dtype == np.int32 and not batch['bad_counts'].any()
  assert np.isfinite(batch['view1']).all() and not np.array_equal(batch['view1'], batch['view2'])
  assert len(set(batch['index'].tolist())) == 4
  assert batch['cross_speaker'].dtype == np.int32
  assert (batch['cross_speaker'] == pipeline.VIEW2_SAME).all()


def test_same_seed_same_batches_other_seed_differs():
  config = small_config()
  a = take(pipeline.make_train_iterator(config, source=ArraySource()), 3)
  b = take(pipeline.make_train_iterator(config, source=ArraySource()), 3)
  assert_same_batches(a, b)
  config.seed = 4
  c = take(pipeline.make_train_iterator(config, source=ArraySource()), 3)
  assert not np.array_equal(a[0]['view1'], c[0]['view1'])


def test_restored_state_gives_the_same_following_batches():
  config = small_config()
  it = pipeline.make_train_iterator(config, source=ArraySource(10))
  take(it, 2)
  state = it.get_state()
  reference = take(it, 4)  # crosses the epoch boundary (2 batches per epoch)
  fresh = pipeline.make_train_iterator(config, source=ArraySource(10))
  fresh.set_state(state)
  assert_same_batches(take(fresh, 4), reference)


def test_orbax_checkpoint_manager_round_trip(tmp_path):
  config = small_config()
  it = pipeline.make_train_iterator(config, source=ArraySource(10))
  take(it, 3)
  with ocp.CheckpointManager(tmp_path / 'ckpt') as mngr:
    mngr.save(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
  reference = take(it, 3)
  fresh = pipeline.make_train_iterator(config, source=ArraySource(10))
  with ocp.CheckpointManager(tmp_path / 'ckpt') as mngr:
    assert mngr.latest_step() == 3
    mngr.restore(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(fresh)))
  assert_same_batches(take(fresh, 3), reference)


def test_epochs_cover_the_data_and_reshuffle():
  config = small_config(batch_size=5)
  it = pipeline.make_train_iterator(config, source=ArraySource(10))
  epochs = [np.concatenate([b['index'] for b in take(it, 2)]) for _ in range(3)]
  for e in epochs:
    assert sorted(e.tolist()) == list(range(10))
  assert not (np.array_equal(epochs[0], epochs[1]) and np.array_equal(epochs[1], epochs[2]))
  config.data.shuffle = False
  it = pipeline.make_train_iterator(config, source=ArraySource(10))
  assert next(it)['index'].tolist() == [0, 1, 2, 3, 4]


def test_hosts_get_disjoint_equal_shards():
  config = small_config(batch_size=4)
  src = ArraySource(11)  # 11 // 2 = 5 per host -> 2 batches of 2 each
  per_host = [
    list(
      pipeline.make_train_dataset(
        config, process_index=p, process_count=2, source=src, num_epochs=1
      )
    )
    for p in range(2)
  ]
  assert [len(h) for h in per_host] == [2, 2]
  assert all(b['view1'].shape == (2, 4000) for h in per_host for b in h)
  seen = [set(np.concatenate([b['index'] for b in h]).tolist()) for h in per_host]
  assert len(seen[0]) == len(seen[1]) == 4 and not seen[0] & seen[1]
  with pytest.raises(ValueError, match='divisible'):
    pipeline.make_train_dataset(config, process_count=3, source=src)
  with pytest.raises(ValueError, match='fewer than the per-host batch'):
    pipeline.make_train_dataset(small_config(batch_size=8), process_count=2, source=ArraySource(6))


def test_stage0_views_share_the_time_axis():
  config = small_config(align_views_in_stage0=True)
  for k in config.data.augment:
    if k.endswith('_prob') and k != 'coloured_noise_prob':
      config.data.augment[k] = 0.0
  config.data.augment.speed_prob = config.data.augment.shift_prob = 1.0
  config.schedule.stage1_start = 2
  batches = take(pipeline.make_train_iterator(config, source=ArraySource(12)), 3)
  for b in batches[:2]:  # steps 0, 1: no speed, no shift -> identical views
    np.testing.assert_array_equal(b['view1'], b['view2'])
  assert not np.array_equal(batches[2]['view1'], batches[2]['view2'])


# ---------------------------------------------------------------------------- bad input
def tone(seconds, freq=440.0, sr=SR, amp=0.3):
  t = np.arange(int(round(seconds * sr))) / sr
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_sphere(path, wave, sr=SR, magic=b'NIST_1A'):
  pcm = np.round(np.clip(wave, -1, 1) * 32767).astype('<i2')
  header = (
    magic
    + b'\n   1024\n'
    + b'sample_count -i %d\n' % len(pcm)
    + b'sample_rate -i %d\n' % sr
    + b'channel_count -i 1\nsample_n_bytes -i 2\n'
    + b'sample_coding -s3 pcm\nsample_byte_format -s2 01\nend_head\n'
  )
  with open(path, 'wb') as f:
    f.write(header.ljust(1024, b' ') + pcm.tobytes())


BAD = {
  'trunc.flac': 'unreadable',
  'wrong_header.wav': 'unreadable',
  'empty.flac': 'empty',
  'nan.wav': 'nonfinite',
  'zeros.flac': 'silent',
}
FIXABLE = ('stereo.wav', 'rate8k.wav', 'rate44k.flac', 'short1s.flac')


def make_bad_folder(root):
  """12 files: 3 good, 4 fixable (stereo, 8 kHz, 44.1 kHz, 1 s), 5 bad (BAD)."""
  for i in range(3):
    sf.write(os.path.join(root, f'good{i}.flac'), tone(3.5, 300 + 100 * i), SR)
  sf.write(os.path.join(root, 'stereo.wav'), np.stack([tone(3.2), tone(3.2, 880)], 1), SR)
  sf.write(os.path.join(root, 'rate8k.wav'), tone(3.2, 1000, sr=8000), 8000)
  sf.write(os.path.join(root, 'rate44k.flac'), tone(3.2, 1000, sr=44100), 44100)
  sf.write(os.path.join(root, 'short1s.flac'), tone(1.0, 500), SR)
  sf.write(os.path.join(root, 'ok.flac'), tone(3.0), SR)
  data = open(os.path.join(root, 'ok.flac'), 'rb').read()
  os.remove(os.path.join(root, 'ok.flac'))
  with open(os.path.join(root, 'trunc.flac'), 'wb') as f:
    f.write(data[: len(data) // 3])
  write_sphere(os.path.join(root, 'wrong_header.wav'), tone(3.2), magic=b'NIST_9Z')
  open(os.path.join(root, 'empty.flac'), 'wb').close()
  nan = tone(3.2)
  nan[1000:1010] = np.nan
  sf.write(os.path.join(root, 'nan.wav'), nan, SR, subtype='FLOAT')
  sf.write(os.path.join(root, 'zeros.flac'), np.zeros(3 * SR, np.float32), SR)


def test_bad_input_counted_by_reason_and_fixable_files_used(tmp_path):
  make_bad_folder(tmp_path)
  src = folder.FolderSource(str(tmp_path))
  assert len(src) == 12
  stats = bad_input.BadInputStats()
  good = dict(pipeline.eval_records(src, stats=stats))
  assert stats.as_dict() == {
    'reads': 12,
    'bad': 5,
    'bad_fraction': 5 / 12,
    'bad/unreadable': 2,
    'bad/empty': 1,
    'bad/nonfinite': 1,
    'bad/silent': 1,
    'bad/truncated': 0,
  }
  assert {src.entries[i]['path'] for i in good} == {f'good{i}.flac' for i in range(3)} | set(
    FIXABLE
  )
  assert {(os.path.basename(p), r) for p, r, _, _ in stats.worst_files()} == set(BAD.items())
  config = small_config(segment_seconds=3.0)
  by_name = {src.entries[i]['path']: r for i, r in good.items()}
  for name in FIXABLE:
    seg = pipeline.load_segment(by_name[name], config, crop='center')
    assert seg.shape == (48000,) and seg.dtype == np.float32 and np.isfinite(seg).all()
  short = pipeline.load_segment(by_name['short1s.flac'], config)
  np.testing.assert_allclose(short[:SR], tone(1.0, 500), atol=1 / 16384)
  assert not short[SR:].any()  # zero-padded at the end
  for name in ('rate8k.wav', 'rate44k.flac'):  # resampled, pitch kept
    seg = pipeline.load_segment(by_name[name], config)
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    assert abs(np.argmax(spectrum) * SR / len(seg) - 1000) < 2
  stereo = pipeline.load_segment(by_name['stereo.wav'], config, crop='start')
  np.testing.assert_allclose(stereo, (tone(3.0) + tone(3.0, 880)) / 2, atol=1e-4)


def test_bad_items_never_reach_a_batch(tmp_path):
  make_bad_folder(tmp_path)
  src = folder.FolderSource(str(tmp_path))
  bad_indices = {i for i, e in enumerate(src.entries) if e['path'] in BAD}
  config = small_config(segment_seconds=3.0, max_bad_fraction=0.9)
  it = pipeline.make_train_iterator(config, source=src)
  main_stats = bad_input.BadInputStats(0.9)
  used = []
  for batch in take(it, 6):  # 2 epochs of 12 items
    main_stats.update_from_batch(batch)
    used += batch['index'].tolist()
    assert batch['view1'].shape == (4, 48000)
    for v in (batch['view1'], batch['view2']):
      assert np.isfinite(v).all() and (np.abs(v).max(axis=1) > 0).all()
  assert not set(used) & bad_indices
  assert set(used) == set(range(12)) - bad_indices  # every good file is used
  counts = main_stats.as_dict()
  assert counts['reads'] == 24 + counts['bad']
  for reason in set(BAD.values()):  # each bad file met every epoch
    assert counts[f'bad/{reason}'] >= 2 * list(BAD.values()).count(reason)


def test_too_many_bad_files_stop_with_their_names(tmp_path):
  make_bad_folder(tmp_path)
  config = small_config(max_bad_fraction=0.1, bad_min_reads=6)
  with pytest.raises(bad_input.BadInputError) as info:
    take(pipeline.make_train_iterator(config, source=folder.FolderSource(str(tmp_path))), 6)
  msg = str(info.value)
  assert 'max_bad_fraction' in msg
  assert any(f'{name}: {reason}' in msg for name, reason in BAD.items())


def test_skipping_source_replacement_is_deterministic():
  class Bad(ArraySource):
    def __getitem__(self, i):
      if i in (2, 3, 9):
        raise bad_input.BadAudioError(f'/x/{i}.wav', 'unreadable')
      record = super().__getitem__(i)
      if i == 5:
        record['audio'][:] = 0.0
      return record

  src = bad_input.SkippingSource(Bad(10))
  got = [src[i]['_source_index'] for i in range(10)]
  assert got == [0, 1, 4, 4, 4, 6, 6, 7, 8, 0]
  assert src[3]['_bad_counts'].tolist() == [1, 0, 0, 0, 0]
  assert src[5]['_bad_counts'].tolist() == [0, 0, 0, 1, 0]
  assert pipeline.data_stats(src)['bad/silent'] == 2


@pytest.mark.parametrize('workers', [2])
def test_worker_count_does_not_change_the_batches(tmp_path, workers):
  make_bad_folder(tmp_path)
  config = small_config(max_bad_fraction=0.9)
  src = folder.FolderSource(str(tmp_path))
  reference = take(pipeline.make_train_iterator(config, source=src), 4)
  config.data.worker_count = workers
  it = pipeline.make_train_iterator(config, source=src)
  assert_same_batches(take(it, 4), reference)


def test_synthetic_source_is_selected_and_batched():
  synthetic = pytest.importorskip('pairalign_jax.data.synthetic')
  config = small_config(segment_seconds=3.0, batch_size=2)
  config.data.source = 'synthetic'
  src = pipeline.make_source(config, 'train')
  assert isinstance(src, synthetic.SyntheticSpeechSource)
  assert isinstance(pipeline.make_source(config, 'heldout'), synthetic.SyntheticSpeechSource)
  batch = next(pipeline.make_train_iterator(config, source=src))
  assert batch['view1'].shape == (2, 48000) and np.isfinite(batch['view1']).all()


def test_cross_speaker_views_pair_two_speakers_from_stage_1():
  pytest.importorskip('pairalign_jax.data.synthetic')
  config = small_config(
    segment_seconds=1.0,
    batch_size=2,
    source='synthetic',
    cross_speaker_views=1.0,
    align_views_in_stage0=True,
  )
  config.schedule.stage1_start = 1  # step 0 aligned (same recording), then cross-speaker
  for k in (
    'gain_prob',
    'noise_prob',
    'reverb_prob',
    'eq_prob',
    'pitch_prob',
    'speed_prob',
    'shift_prob',
  ):
    config.data.augment[k] = 0.0  # views = the raw readings
  batches = take(pipeline.make_train_iterator(config), 2)
  np.testing.assert_array_equal(batches[0]['view1'], batches[0]['view2'])  # stage 0: one recording
  src = pipeline.make_source(config, 'train')
  for row in range(2):
    record = src[int(batches[1]['index'][row])]
    own = pipeline.fit_audio(record['audio'], SR, SR, SR, crop='start')
    np.testing.assert_array_equal(batches[1]['view1'][row], own)
    assert not np.allclose(batches[1]['view2'][row], own)  # another speaker's reading
  assert_same_batches(batches, take(pipeline.make_train_iterator(config), 2))


def no_augmentation(config):
  for k in config.data.augment:
    if k.endswith('_prob'):
      config.data.augment[k] = 0.0  # views = the raw readings
  return config


def test_cross_speaker_views_from_a_manifest_with_shared_text(tmp_path):
  # ann and bob read the same text (different constant levels); cat's texts have no other reader.
  levels = {'ann.wav': 0.1, 'bob.wav': 0.4, 'cat1.wav': 0.7, 'cat2.wav': -0.2}
  for name, level in levels.items():
    sf.write(tmp_path / name, np.full(SR // 2, level, np.float32), SR, subtype='FLOAT')
  (tmp_path / 'm.tsv').write_text(
    'path\tspeaker\ttext\n'
    'ann.wav\tann\tHello world\n'
    'bob.wav\tbob\thello, WORLD!\n'
    'cat1.wav\tcat\tsomething\n'
    'cat2.wav\tcat\tsomething\n'
  )
  config = no_augmentation(
    small_config(
      batch_size=4, source='manifest', path=str(tmp_path / 'm.tsv'), cross_speaker_views=1.0
    )
  )
  src = manifest.ManifestSource(str(tmp_path / 'm.tsv'))
  assert src.num_parallel_items == 2
  ann = src[0]
  assert src.parallel_record(ann, np.random.default_rng(0))['speaker'] == 'bob'
  assert src.parallel_record(src[2], np.random.default_rng(0)) is None  # cat2 is cat too
  batches = take(pipeline.make_train_iterator(config, source=src), 3)
  for batch in batches:
    for row in range(4):
      name = os.path.basename(src.entries[int(batch['index'][row])]['path'])
      np.testing.assert_allclose(batch['view1'][row], levels[name], atol=1e-6)
      if name in ('ann.wav', 'bob.wav'):  # view 2 = the other speaker's reading
        other = 'bob.wav' if name == 'ann.wav' else 'ann.wav'
        assert batch['cross_speaker'][row] == pipeline.VIEW2_OTHER_SPEAKER
        np.testing.assert_allclose(batch['view2'][row, : SR // 2], levels[other], atol=1e-6)
      else:  # no other reader: the same recording
        assert batch['cross_speaker'][row] == pipeline.VIEW2_FALLBACK
        np.testing.assert_array_equal(batch['view2'][row], batch['view1'][row])
  assert_same_batches(batches, take(pipeline.make_train_iterator(config, source=src), 3))


def test_bad_parallel_reading_falls_back_and_is_counted(tmp_path):
  sf.write(tmp_path / 'ann.wav', tone(0.5), SR)
  sf.write(tmp_path / 'bob.wav', np.zeros(SR // 2, np.float32), SR)  # silent: bad
  (tmp_path / 'm.jsonl').write_text(
    '{"path": "ann.wav", "speaker": "ann", "text": "hi"}\n'
    '{"path": "bob.wav", "speaker": "bob", "text": "hi"}\n'
  )
  config = no_augmentation(
    small_config(batch_size=2, cross_speaker_views=1.0, max_bad_fraction=1.0)
  )
  batch = next(
    pipeline.make_train_iterator(config, source=manifest.ManifestSource(str(tmp_path / 'm.jsonl')))
  )
  assert batch['index'].tolist() == [0, 0]  # bob -> ann
  assert (batch['cross_speaker'] == pipeline.VIEW2_FALLBACK).all()
  silent = bad_input.REASONS.index('silent')
  # bob itself is skipped (replaced by ann) and ann's parallel reading (bob) is bad too.
  assert batch['bad_counts'][:, silent].sum() == 3


def test_source_without_parallel_readings_warns_instead_of_refusing(tmp_path, monkeypatch):
  for s in range(4):
    os.makedirs(tmp_path / f'spk{s}')
    sf.write(tmp_path / f'spk{s}' / 'u.wav', tone(0.5, 200 + 100 * s), SR)
  warnings = []
  monkeypatch.setattr(pipeline.logging, 'warning', lambda msg, *a, **k: warnings.append(msg % a))
  config = small_config(batch_size=2, cross_speaker_views=0.5)
  for src in (folder.FolderSource(str(tmp_path)), ArraySource()):
    warnings.clear()
    batches = take(pipeline.make_train_iterator(config, source=src), 2)
    assert len(warnings) == 1 and 'cross_speaker_views=0.5' in warnings[0]
    assert repr(src) in warnings[0]
    assert all((b['cross_speaker'] == pipeline.VIEW2_SAME).all() for b in batches)
    # Augmentation-only views: exactly the batches of cross_speaker_views=0.
    assert_same_batches(
      batches, take(pipeline.make_train_iterator(small_config(batch_size=2), source=src), 2)
    )
  config.data.source, config.data.path = 'folder', str(tmp_path)
  warnings.clear()
  pipeline.make_train_dataset(config)  # make_source path, as main does
  assert len(warnings) == 1
