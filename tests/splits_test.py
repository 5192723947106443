"""Tests for the train / validation / test splits (pipeline.canonical_split, split_entries)."""

import os
import zlib

import numpy as np
import pytest
import soundfile as sf

from configs import default as default_config
from pairalign_jax.data import folder
from pairalign_jax.data import pipeline

SR = 16_000


def wav(path, seed):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(seed)
  sf.write(path, (0.1 * rng.standard_normal(SR // 20)).astype(np.float32), SR)  # 50 ms


def file_config(source, path, eval_path='', heldout_fraction=0.5):
  config = default_config.get_config()
  config.data.source, config.data.path, config.data.eval_path = source, str(path), str(eval_path)
  config.data.heldout_fraction = heldout_fraction
  return config


def speakers(src):
  return {e['speaker'] for e in src.entries}


def ids(src):
  return {e['id'] for e in src.entries}


def assert_speaker_disjoint_parts(parts, all_ids):
  names = list(parts)
  for i, a in enumerate(names):
    assert parts[a].entries, f'{a} is empty'
    for b in names[i + 1 :]:
      assert not speakers(parts[a]) & speakers(parts[b]), (a, b)
  assert set.union(*(ids(p) for p in parts.values())) == all_ids
  assert sum(len(p) for p in parts.values()) == len(all_ids)


def test_canonical_split():
  assert pipeline.SPLITS == ('train', 'validation', 'test')
  assert [pipeline.canonical_split(s) for s in ('train', 'validation', 'test', 'heldout')] == [
    'train',
    'validation',
    'test',
    'test',
  ]
  for bad in ('dev', 'eval', 'all', 'Train', ''):
    with pytest.raises(ValueError, match="'train', 'validation', 'test'"):
      pipeline.canonical_split(bad)
  config = file_config('folder', '/nonexistent')
  with pytest.raises(ValueError, match='validation'):
    pipeline.make_source(config, 'dev')


def test_folder_splits_are_speaker_disjoint(tmp_path):
  for s in range(24):
    for u in range(2):
      wav(str(tmp_path / f'spk{s:02d}' / f'u{u}.wav'), 10 * s + u)
  config = file_config('folder', tmp_path)
  parts = {s: pipeline.make_source(config, s) for s in pipeline.SPLITS}
  assert_speaker_disjoint_parts(parts, ids(folder.FolderSource(str(tmp_path))))
  assert ids(pipeline.make_source(config, 'heldout')) == ids(parts['test'])


def write_manifest(path, speakers_utts, seed=0):
  lines = ['path\tspeaker\ttext']
  for s, u in speakers_utts:
    rel = f'{s}/{u}.wav'
    wav(os.path.join(os.path.dirname(path), rel), seed + len(lines))
    lines.append(f'{rel}\t{s}\tsentence {u}')
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')


def test_manifest_splits_are_speaker_disjoint_with_and_without_eval_path(tmp_path):
  train_tsv, eval_tsv = str(tmp_path / 'train' / 'm.tsv'), str(tmp_path / 'eval' / 'm.tsv')
  os.makedirs(os.path.dirname(train_tsv))
  os.makedirs(os.path.dirname(eval_tsv))
  write_manifest(train_tsv, [(f's{k}', u) for k in range(20) for u in range(3)])
  write_manifest(eval_tsv, [(f'e{k}', u) for k in range(12) for u in range(2)], seed=100)
  config = file_config('manifest', train_tsv)
  parts = {s: pipeline.make_source(config, s) for s in pipeline.SPLITS}
  assert_speaker_disjoint_parts(parts, {f's{k}/{u}' for k in range(20) for u in range(3)})
  assert ids(pipeline.make_source(config, 'heldout')) == ids(parts['test'])
  # eval_path: train = all of path; validation / test = speaker-disjoint halves of eval_path.
  config.data.eval_path = eval_tsv
  parts = {s: pipeline.make_source(config, s) for s in pipeline.SPLITS}
  assert len(parts['train']) == 60
  assert not speakers(parts['validation']) & speakers(parts['test'])
  assert ids(parts['validation']) | ids(parts['test']) == {
    f'e{k}/{u}' for k in range(12) for u in range(2)
  }
  assert parts['validation'].entries and parts['test'].entries


def old_split_entries(entries, split, heldout_fraction):
  """The train/heldout rule before validation existed (reference: 'train' must not move)."""

  def pick(key):
    held = [folder._hash_fraction(e[key]) < heldout_fraction for e in entries]
    return held if 0 < sum(held) < len(entries) else None

  held = pick('speaker') or pick('id')
  if held is None:
    k = int(np.ceil(heldout_fraction * len(entries)))
    order = sorted(range(len(entries)), key=lambda i: (folder._hash_fraction(entries[i]['id']), i))
    held = [i in set(order[:k]) for i in range(len(entries))]
  want = split == 'heldout'
  return [e for e, h in zip(entries, held) if h == want]


@pytest.mark.parametrize('num_speakers,per_speaker', [(200, 2), (7, 3), (1, 5), (2, 1), (3, 1)])
@pytest.mark.parametrize('fraction', [0.05, 0.1, 0.5])
def test_train_split_is_unchanged_and_heldout_is_halved(num_speakers, per_speaker, fraction):
  entries = [
    {'id': f'{s}-{u}', 'speaker': f'speaker{s}'}
    for s in range(num_speakers)
    for u in range(per_speaker)
  ]
  assert folder._hash_fraction('abc') == (zlib.crc32(b'abc') % 10_000) / 10_000
  assert folder.split_entries(entries, 'train', fraction) == old_split_entries(
    entries, 'train', fraction
  )
  held = old_split_entries(entries, 'heldout', fraction)
  if len(held) < 2:
    with pytest.raises(ValueError, match='heldout_fraction'):
      folder.split_entries(entries, 'validation', fraction)
    return
  val = folder.split_entries(entries, 'validation', fraction)
  test = folder.split_entries(entries, 'test', fraction)
  assert val and test and sorted(map(str, val + test)) == sorted(map(str, held))
  if len({e['speaker'] for e in held}) >= 8:  # enough speakers: disjoint halves
    assert not {e['speaker'] for e in val} & {e['speaker'] for e in test}


def test_too_few_held_out_items_name_the_config_key(tmp_path):
  one = str(tmp_path / 'one.tsv')
  write_manifest(one, [('e0', 0)])
  write_manifest(str(tmp_path / 'train.tsv'), [(f's{k}', 0) for k in range(4)])
  config = file_config('manifest', tmp_path / 'train.tsv', eval_path=one)
  assert len(pipeline.make_source(config, 'train')) == 4
  for split in ('validation', 'test', 'heldout'):
    with pytest.raises(ValueError, match='config.data.eval_path'):
      pipeline.make_source(config, split)
  entries = [{'id': 'a', 'speaker': 'x'}, {'id': 'b', 'speaker': 'y'}]  # 1 held out of 2
  assert len(folder.split_entries(entries, 'train', 0.1)) == 1
  with pytest.raises(ValueError, match='config.data.heldout_fraction'):
    folder.split_entries(entries, 'test', 0.1)
