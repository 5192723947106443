"""Tests for the file sources: librispeech.py, timit.py, folder.py, manifest.py (+ make_source)."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from configs import default as default_config
from pairalign_jax.data import folder
from pairalign_jax.data import librispeech
from pairalign_jax.data import manifest
from pairalign_jax.data import pipeline
from pairalign_jax.data import timit

SR = 16_000


def noise(seconds, seed, sr=SR):
  return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def write_sphere(path, wave, sr=SR):
  """NIST SPHERE as TIMIT ships it: 1024-byte NIST_1A header, 16-bit little-endian PCM."""
  pcm = np.round(np.clip(wave, -1, 1) * 32767).astype('<i2')
  header = (
    b'NIST_1A\n   1024\n'
    + b'sample_count -i %d\n' % len(pcm)
    + b'sample_rate -i %d\n' % sr
    + b'channel_count -i 1\nsample_n_bytes -i 2\n'
    + b'sample_coding -s3 pcm\nsample_byte_format -s2 01\nsample_sig_bits -i 16\n'
    + b'end_head\n'
  )
  with open(path, 'wb') as f:
    f.write(header.ljust(1024, b' ') + pcm.tobytes())


# ---------------------------------------------------------------------------- LibriSpeech
LIBRI = {  # subset -> {utterance id: transcript}
  'train-clean-100': {
    '19-198-0000': 'NORTHANGER ABBEY, CHAPTER one!',
    '19-198-0001': 'IT WAS THE  BEST OF TIMES',
    '26-495-0000': "the TUTOR'S   tale",
  },
  'dev-clean': {'84-121123-0000': 'GO DO YOU HEAR', '174-50561-0000': 'FORGOTTEN TOO'},
}


def make_librispeech(root):
  for subset, utts in LIBRI.items():
    chapters = {}
    for k, (utt, text) in enumerate(sorted(utts.items())):
      spk, chap, _ = utt.split('-')
      d = os.path.join(root, subset, spk, chap)
      os.makedirs(d, exist_ok=True)
      sf.write(os.path.join(d, utt + '.flac'), noise(0.5 + 0.25 * k, k), SR)
      chapters.setdefault(d, []).append(f'{utt} {text}')
    for d, lines in chapters.items():
      spk, chap = d.split(os.sep)[-2:]
      with open(os.path.join(d, f'{spk}-{chap}.trans.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def test_librispeech_records_and_content_id(tmp_path):
  make_librispeech(tmp_path)
  src = librispeech.LibriSpeechSource(str(tmp_path / 'train-clean-100'))
  assert len(src) == 3
  r = src[0]
  assert r['id'] == '19-198-0000' and r['speaker'] == '19' and r['sample_rate'] == SR
  assert r['text'] == 'NORTHANGER ABBEY, CHAPTER one!'
  assert r['content_id'] == 'NORTHANGER ABBEY CHAPTER ONE'
  assert src[2]['content_id'] == "THE TUTOR'S TALE"
  assert r['audio'].dtype == np.float32 and r['audio'].shape == (8000,)
  np.testing.assert_allclose(r['audio'], noise(0.5, 0), atol=1 / 16384)
  parent = librispeech.LibriSpeechSource(str(tmp_path))  # a parent of several subsets
  assert sorted(e['id'] for e in parent.entries) == sorted(
    u for utts in LIBRI.values() for u in utts
  )


def test_index_is_cached_and_rebuilt_when_files_change(tmp_path, monkeypatch):
  make_librispeech(tmp_path)
  root = str(tmp_path / 'train-clean-100')
  first = librispeech.LibriSpeechSource(root)
  caches = [n for n in os.listdir(root) if n.startswith('.pairalign_index_librispeech')]
  assert len(caches) == 1  # next to the (writable) data
  with open(os.path.join(root, caches[0])) as f:
    cached = json.load(f)
  assert cached['num_files'] == 5 and cached['entries'][0]['frames'] == 8000

  def no_scan(*args, **kwargs):
    raise AssertionError('index rebuilt although nothing changed')

  monkeypatch.setattr(folder, 'file_infos', no_scan)
  assert librispeech.LibriSpeechSource(root).entries == first.entries  # loaded from the cache
  monkeypatch.undo()
  sf.write(os.path.join(root, '26', '495', '26-495-0000.flac'), noise(2.0, 9), SR)
  assert librispeech.LibriSpeechSource(root).entries[2]['frames'] == 32000  # rebuilt
  cfg_dir = tmp_path / 'index_cache'
  librispeech.LibriSpeechSource(root, cache_dir=str(cfg_dir))
  assert len(os.listdir(cfg_dir)) == 1


# ---------------------------------------------------------------------------- TIMIT
TIMIT = [  # (split, dialect, speaker, sentence, text, words)
  ('TRAIN', 'DR1', 'FCJF0', 'SA1', 'She had your dark suit.', ['she', 'had']),
  ('TRAIN', 'DR1', 'FCJF0', 'SX123', 'A big cat sat.', ['a', 'big']),
  ('TRAIN', 'DR1', 'FCJF0', 'SI648', 'Dogs run.', ['dogs', 'run']),
  ('TRAIN', 'DR2', 'MABC0', 'SX123', 'A big cat sat.', ['a', 'big']),
  ('TEST', 'DR3', 'FDEF0', 'SX200', 'Test sentence here.', ['test', 'sentence']),
  ('TEST', 'DR4', 'MGHI0', 'SX201', 'Another test one.', ['another', 'test']),
]


def make_timit(root, lower=False):
  case = str.lower if lower else str
  for k, (split, dr, spk, sent, text, words) in enumerate(TIMIT):
    d = os.path.join(root, case(split), case(dr), case(spk))
    os.makedirs(d, exist_ok=True)
    stem = os.path.join(d, case(sent))
    n = 12_000 + 1000 * k
    write_sphere(stem + case('.WAV'), noise(n / SR, k))
    with open(stem + case('.TXT'), 'w') as f:
      f.write(f'0 {n} {text}\n')
    with open(stem + case('.PHN'), 'w') as f:
      f.write(f'0 2000 h#\n2000 5200 sh\n5200 {n} iy\n')
    with open(stem + case('.WRD'), 'w') as f:
      f.write(f'2000 5200 {words[0]}\n5200 8000 {words[1]}\n')


@pytest.mark.parametrize('lower', [False, True])
def test_timit_labels_splits_and_case(tmp_path, lower):
  make_timit(tmp_path, lower)
  train = timit.TimitSource(str(tmp_path), 'train')
  assert sorted(e['id'] for e in train.entries) == [
    'TRAIN/DR1/FCJF0/SI648',
    'TRAIN/DR1/FCJF0/SX123',
    'TRAIN/DR2/MABC0/SX123',
  ]
  r = train[[e['id'] for e in train.entries].index('TRAIN/DR2/MABC0/SX123')]
  assert r['speaker'] == 'MABC0' and r['content_id'] == 'SX123' and r['text'] == 'A big cat sat.'
  assert r['audio'].shape == (15_000,) and r['sample_rate'] == SR
  np.testing.assert_allclose(r['audio'], noise(15_000 / SR, 3), atol=1 / 16000)
  assert r['phones'] == ['h#', 'sh', 'iy']
  np.testing.assert_allclose(r['phone_times'], [[0, 0.125], [0.125, 0.325], [0.325, 0.9375]])
  assert r['phone_times'].dtype == np.float32 and r['words'] == ['a', 'big']
  np.testing.assert_allclose(r['word_times'], [[0.125, 0.325], [0.325, 0.5]])
  # Same prompt read by two speakers -> same content_id (the retrieval query).
  assert sorted(e['speaker'] for e in train.entries if e['content_id'] == 'SX123') == [
    'FCJF0',
    'MABC0',
  ]
  with_sa = timit.TimitSource(str(tmp_path), 'train', exclude_sa=False)
  assert len(with_sa) == 4
  # TEST is halved by speaker into validation / test; 'heldout' is 'test'.
  val = timit.TimitSource(str(tmp_path), 'validation')
  test = timit.TimitSource(str(tmp_path), 'test')
  assert sorted(e['id'] for e in val.entries + test.entries) == [
    'TEST/DR3/FDEF0/SX200',
    'TEST/DR4/MGHI0/SX201',
  ]
  assert len(val) == len(test) == 1
  assert timit.TimitSource(str(tmp_path), 'heldout').entries == test.entries
  direct = timit.TimitSource(str(tmp_path / ('test' if lower else 'TEST')), 'train')
  assert len(direct) == 2  # a split folder given directly: all of it
  # Parallel readings: the other speaker of SX123, never one of the same speaker.
  assert train.num_parallel_items == 2 and val.num_parallel_items == 0
  other = train.parallel_record(r, np.random.default_rng(0))
  assert other['speaker'] == 'FCJF0' and other['content_id'] == 'SX123'
  si = train[[e['id'] for e in train.entries].index('TRAIN/DR1/FCJF0/SI648')]
  assert train.parallel_record(si, np.random.default_rng(0)) is None


def test_timit_missing_split_is_named(tmp_path):
  os.makedirs(tmp_path / 'TRAIN' / 'DR1')
  with pytest.raises(FileNotFoundError, match='TEST'):
    timit.TimitSource(str(tmp_path), 'heldout')


# ---------------------------------------------------------------------------- folder
def make_folder(root, speakers=8, per_speaker=2):
  for s in range(speakers):
    d = os.path.join(root, f'spk{s}', 'session')
    os.makedirs(d, exist_ok=True)
    for u in range(per_speaker):
      sf.write(
        os.path.join(d, f'u{u}.flac' if u % 2 == 0 else f'u{u}.WAV'), noise(0.2, 100 * s + u), SR
      )
  with open(os.path.join(root, 'notes.txt'), 'w') as f:
    f.write('not audio')


def test_folder_recursive_and_split(tmp_path):
  make_folder(tmp_path, speakers=30)
  everything = folder.FolderSource(str(tmp_path))
  assert len(everything) == 60
  r = everything[0]
  assert r['id'] == os.path.join('spk0', 'session', 'u0') and r['speaker'] == 'session'
  assert r['content_id'] == r['id'] and r['audio'].shape == (3200,)
  parts = [
    folder.FolderSource(str(tmp_path), split, heldout_fraction=0.2)
    for split in ('train', 'validation', 'test')
  ]

  def ids(s):
    return {e['id'] for e in s.entries}

  assert set.union(*map(ids, parts)) == ids(everything)
  assert sum(len(p) for p in parts) == len(everything)
  assert 0 < len(parts[1]) < len(parts[0]) and 0 < len(parts[2]) < len(parts[0])
  assert everything.num_parallel_items == 0  # a file is its own content


def test_split_by_speaker_is_speaker_disjoint():
  entries = [{'id': f'{s}/{u}', 'speaker': f'speaker{s}'} for s in range(50) for u in range(3)]
  parts = [folder.split_entries(entries, split, 0.2) for split in ('train', 'validation', 'test')]
  assert sum(map(len, parts)) == 150 and all(parts)
  speakers = [{e['speaker'] for e in p} for p in parts]
  assert not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])
  assert folder.split_entries(entries, 'heldout', 0.2) == parts[2]
  with pytest.raises(ValueError, match='split'):
    folder.split_entries(entries, 'dev', 0.2)
  for split, part in zip(('validation', 'test'), parts[1:]):  # the half each speaker goes to
    assert {folder.heldout_half(e['speaker']) for e in part} == {split}


def test_folder_without_audio_is_an_error(tmp_path):
  (tmp_path / 'a.txt').write_text('x')
  with pytest.raises(FileNotFoundError, match='no audio files'):
    folder.FolderSource(str(tmp_path))


# ---------------------------------------------------------------------------- manifest
def test_manifest_tsv_and_jsonl(tmp_path):
  audio_dir = tmp_path / 'audio'
  audio_dir.mkdir()
  sf.write(audio_dir / 'a.wav', noise(2.0, 1), SR, subtype='FLOAT')
  sf.write(audio_dir / 'b.flac', noise(1.0, 2), SR)
  rows = [
    {'path': 'audio/a.wav', 'speaker': 'ann', 'text': 'Hello, world', 'start': 0.5, 'end': 1.25},
    {'path': str(audio_dir / 'b.flac'), 'speaker': '', 'text': '', 'start': '', 'end': ''},
  ]
  tsv = tmp_path / 'm.tsv'
  tsv.write_text(
    'path\tspeaker\ttext\tstart\tend\n'
    + ''.join(
      '\t'.join(str(r[k]) for k in ('path', 'speaker', 'text', 'start', 'end')) + '\n' for r in rows
    )
  )
  jsonl = tmp_path / 'm.jsonl'
  jsonl.write_text(
    ''.join(json.dumps({k: v for k, v in r.items() if v != ''}) + '\n' for r in rows)
  )
  for path in (tsv, jsonl):
    src = manifest.ManifestSource(str(path))
    assert len(src) == 2
    a, b = src[0], src[1]
    np.testing.assert_array_equal(a['audio'], noise(2.0, 1)[8000:20000])
    assert a['speaker'] == 'ann' and a['text'] == 'Hello, world'
    assert a['content_id'] == 'HELLO WORLD' and a['id'] == 'audio/a@0.5-1.25'
    assert b['speaker'] == 'unknown' and b['content_id'] == b['id'] == 'audio/b'
    assert b['audio'].shape == (16000,) and 'text' not in b


def test_manifest_errors_name_the_line(tmp_path):
  bad = tmp_path / 'm.tsv'
  bad.write_text('file\tspeaker\nx.wav\ta\n')
  with pytest.raises(ValueError, match='"path" column'):
    manifest.ManifestSource(str(bad))
  bad = tmp_path / 'm.jsonl'
  bad.write_text('{"path": "a.wav", "start": 2, "end": 1}\n')
  with pytest.raises(ValueError, match='m.jsonl:1'):
    manifest.ManifestSource(str(bad))


def test_manifest_bad_lines_are_collected_when_asked(tmp_path):
  m = tmp_path / 'm.jsonl'
  m.write_text(
    '{"path": "a.wav"}\n\nnot json\n{"text": "no path"}\n{"path": "b.wav", "start": "x"}\n'
    '{"path": "c.wav"}\n'
  )
  with pytest.raises(ValueError, match='m.jsonl:3: not valid JSON'):
    manifest.read_manifest(str(m))  # strict by default (training sources)
  bad = []
  entries = manifest.read_manifest(str(m), bad_lines=bad)
  assert [(e['line'], os.path.basename(e['path'])) for e in entries] == [(1, 'a.wav'), (6, 'c.wav')]
  assert [n for n, _ in bad] == [3, 4, 5]
  assert 'not valid JSON' in bad[0][1] and '"path"' in bad[1][1] and 'seconds' in bad[2][1]
  tsv = tmp_path / 'm.tsv'
  tsv.write_text(
    'path\tstart\na.wav\t\n"b\nc.wav"\tx\nd.wav\t1\n'
  )  # a quoted field spans lines 3-4
  bad = []
  entries = manifest.read_manifest(str(tsv), bad_lines=bad)
  assert [e['line'] for e in entries] == [2, 5] and [n for n, _ in bad] == [4]
  only_bad = tmp_path / 'bad.jsonl'
  only_bad.write_text('nope\n')
  bad = []
  assert manifest.read_manifest(str(only_bad), bad_lines=bad) == [] and len(bad) == 1


# ---------------------------------------------------------------------------- make_source
def test_make_source_selects_by_config(tmp_path):
  make_librispeech(tmp_path / 'libri')
  make_timit(tmp_path / 'timit')
  make_folder(tmp_path / 'folder', speakers=30)
  config = default_config.get_config()
  config.data.source = 'librispeech'
  config.data.path = str(tmp_path / 'libri' / 'train-clean-100')
  config.data.eval_path = str(tmp_path / 'libri' / 'dev-clean')
  assert len(pipeline.make_source(config, 'train')) == 3  # eval_path set: all of path
  evals = [pipeline.make_source(config, s).entries for s in ('validation', 'test')]
  assert sorted(e['id'] for e in evals[0] + evals[1]) == ['174-50561-0000', '84-121123-0000']
  assert len(evals[0]) == len(evals[1]) == 1  # eval_path halved by speaker
  assert pipeline.make_source(config, 'heldout').entries == evals[1]
  config.data.source, config.data.eval_path = 'timit', ''
  config.data.path = str(tmp_path / 'timit')
  assert isinstance(pipeline.make_source(config, 'train'), timit.TimitSource)
  assert len(pipeline.make_source(config, 'heldout')) == 1
  config.data.source, config.data.path = 'folder', str(tmp_path / 'folder')
  parts = [pipeline.make_source(config, s) for s in ('train', 'validation', 'test')]
  assert sum(map(len, parts)) == 60 and all(len(p) > 0 for p in parts)
  config.data.path = ''
  with pytest.raises(ValueError, match='config.data.path'):
    pipeline.make_source(config, 'train')
  config.data.source = 'youtube'
  with pytest.raises(ValueError, match='config.data.source'):
    pipeline.make_source(config, 'train')
