"""The tokenize CLI (pairalign_jax.tokenize): folders, single files and manifests to JSONL, bad
files reported and skipped, on the tiny checkpoint of tokenizer_test.py."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr
import tokenizer_test

from pairalign_jax import tokenize as cli
from pairalign_jax.data import audio_io
from pairalign_jax.tokenizer import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR = tokenizer_test.SR


@pytest.fixture(scope='session')
def workdir(tmp_path_factory):
  return tokenizer_test.tiny_workdir(tmp_path_factory)


@pytest.fixture(scope='module')
def tok(workdir):
  return Tokenizer.from_checkpoint(workdir, batch_size=4)


@pytest.fixture(scope='module')
def audio_dir(tmp_path_factory):
  """good: a.wav (2 s), sub/b.flac (5 s, 22.05 kHz stereo), c.WAV (3 s, 8 kHz);
  bad: garbage.wav, empty.flac, silent.wav, cut.flac (truncated), notes.txt (not audio)."""
  d = tmp_path_factory.mktemp('audio')
  w = tokenizer_test.make_waves(4, seed=5, seconds=5.0)
  sf.write(d / 'a.wav', w[0][: 2 * SR], SR)
  os.makedirs(d / 'sub')
  b = np.stack([w[1], w[2]], axis=1)
  sf.write(d / 'sub' / 'b.flac', soxr.resample(b, SR, 22_050).astype(np.float32), 22_050)
  sf.write(
    d / 'c.WAV',
    soxr.resample(w[3][: 3 * SR], SR, 8_000).astype(np.float32),
    8_000,
    subtype='PCM_16',
  )
  (d / 'garbage.wav').write_bytes(b'RIFF\x00\x00\x00\x00WAVEjunk' * 40)
  (d / 'empty.flac').write_bytes(b'')
  sf.write(d / 'silent.wav', np.zeros(SR, np.float32), SR)
  sf.write(d / 'full.flac', w[0][: 2 * SR], SR)
  data = (d / 'full.flac').read_bytes()
  (d / 'cut.flac').write_bytes(data[: len(data) // 2])
  os.remove(d / 'full.flac')
  (d / 'notes.txt').write_text('not audio')
  return str(d)


GOOD = {'a.wav': 2.0, os.path.join('sub', 'b.flac'): 5.0, 'c.WAV': 3.0}
BAD = {
  'garbage.wav': 'unreadable',
  'empty.flac': 'empty',
  'silent.wav': 'silent',
  'cut.flac': 'unreadable',
}


def _read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def _check_records(records, tok, hop=1.0):
  for r in records:
    assert set(r) == {'path', 'start', 'end', 'tokens', 'times', 'terminated'}
    assert len(r['tokens']) == len(r['times'])
    assert r['times'] == sorted(r['times'])  # non-decreasing
    assert (
      r['terminated'] or len(r['tokens']) == tokenizer_test.L
    )  # not terminated = cut at max_len
    assert all(isinstance(t, int) and 0 <= t < tokenizer_test.K for t in r['tokens'])
    assert all(r['start'] <= t <= r['end'] for t in r['times'])
    assert 0 < r['end'] - r['start'] <= tok.segment_samples / tok.sample_rate + 1e-6


def test_folder_with_bad_files(workdir, audio_dir, tok, tmp_path):
  out = tmp_path / 'nested' / 'out.jsonl'
  summary = cli.run(workdir, audio_dir, str(out), hop_seconds=1.0, batch_size=4, progress=False)
  assert summary['files'] == len(GOOD) + len(BAD)
  assert summary['files_ok'] == len(GOOD)
  assert summary['skipped'] == {'unreadable': 2, 'empty': 1, 'silent': 1}
  assert {
    os.path.relpath(s['path'], audio_dir): s['error'] for s in summary['skipped_files']
  } == BAD
  records = _read_jsonl(out)
  assert summary['windows'] == len(records)
  _check_records(records, tok)
  by_file = {}
  for r in records:
    by_file.setdefault(os.path.relpath(r['path'], audio_dir), []).append(r)
  assert set(by_file) == set(GOOD)
  # 2 s and 3 s: one window; 5 s at hop 1 s: windows at 0, 1, 2 s; the last one ends the file.
  assert [r['start'] for r in by_file['a.wav']] == [0.0]
  assert by_file['a.wav'][0]['end'] == pytest.approx(2.0)
  assert [r['start'] for r in by_file['c.WAV']] == [0.0]
  b = by_file[os.path.join('sub', 'b.flac')]
  assert [r['start'] for r in b] == pytest.approx([0.0, 1.0, 2.0])
  assert b[-1]['end'] == pytest.approx(5.0)
  # The lines are tokenize_long's windows of the decoded file (same resampling, same ids).
  for rel in GOOD:
    wave, sr = audio_io.read_audio(os.path.join(audio_dir, rel))
    want = tok.tokenize_long(wave, sr, hop_seconds=1.0)
    assert [r['tokens'] for r in by_file[rel]] == [w['tokens'] for w in want]
    assert [r['times'] for r in by_file[rel]] == [w['times'] for w in want]


def test_deterministic_single_file_vq_and_eos_bias(workdir, audio_dir, tok, tmp_path):
  b = os.path.join(audio_dir, 'sub', 'b.flac')
  a1, a2 = tmp_path / '1.jsonl', tmp_path / '2.jsonl'
  cli.run(workdir, b, str(a1), hop_seconds=1.0, batch_size=4, progress=False)
  cli.run(workdir, b, str(a2), hop_seconds=1.0, batch_size=2, progress=False)
  assert a1.read_text() == a2.read_text()
  short = tmp_path / 'short.jsonl'
  cli.run(workdir, b, str(short), hop_seconds=1.0, eos_bias=100.0, batch_size=4, progress=False)
  assert all(r['tokens'] == [] for r in _read_jsonl(short))
  beam = tmp_path / 'beam.jsonl'
  cli.run(workdir, b, str(beam), hop_seconds=1.0, batch_size=4, progress=False, beam_size=3)
  wave, sr = audio_io.read_audio(b)
  beam_tok = Tokenizer.from_checkpoint(workdir, batch_size=4, beam_size=3)
  assert [r['tokens'] for r in _read_jsonl(beam)] == [
    w['tokens'] for w in beam_tok.tokenize_long(wave, sr, hop_seconds=1.0)
  ]
  vq = tmp_path / 'vq.jsonl'
  summary = cli.run(workdir, b, str(vq), hop_seconds=2.0, use_vq=True, batch_size=4, progress=False)
  records = _read_jsonl(vq)
  assert summary['windows'] == len(records) == 2  # windows at 0 and 2 s
  _check_records(records, tok)
  assert all(a != c for r in records for a, c in zip(r['tokens'], r['tokens'][1:]))
  wave, sr = audio_io.read_audio(b)
  want = tok.tokenize_long(wave, sr, hop_seconds=2.0, vq=True)
  assert [r['tokens'] for r in records] == [w['tokens'] for w in want]


def test_bad_single_file_is_skipped_not_raised(workdir, audio_dir, tmp_path):
  out = tmp_path / 'bad.jsonl'
  summary = cli.run(
    workdir, os.path.join(audio_dir, 'garbage.wav'), str(out), batch_size=4, progress=False
  )
  assert summary['files'] == 1 and summary['files_ok'] == 0 and summary['windows'] == 0
  assert summary['skipped'] == {'unreadable': 1}
  assert out.read_text() == ''


@pytest.mark.parametrize('kind', ['jsonl', 'tsv'])
def test_manifest_with_regions(workdir, audio_dir, tok, tmp_path, kind):
  rows = [
    {'path': os.path.join('sub', 'b.flac'), 'start': 1.0, 'end': 4.5},  # relative path
    {'path': os.path.join(audio_dir, 'a.wav')},
    {'path': os.path.join(audio_dir, 'a.wav'), 'start': 0.5},  # the same file again
    {'path': 'missing.wav'},
    {'path': os.path.join(audio_dir, 'silent.wav')},
  ]
  manifest = os.path.join(audio_dir, f'list.{kind}')
  with open(manifest, 'w') as f:
    if kind == 'jsonl':
      f.writelines(json.dumps(r) + '\n' for r in rows)
    else:
      f.write('path\tstart\tend\n')
      f.writelines(f'{r["path"]}\t{r.get("start", "")}\t{r.get("end", "")}\n' for r in rows)
  out = tmp_path / 'm.jsonl'
  summary = cli.run(workdir, manifest, str(out), hop_seconds=1.0, batch_size=4, progress=False)
  assert (summary['files'], summary['files_ok']) == (5, 3)
  assert summary['skipped'] == {'unreadable': 1, 'silent': 1}
  records = _read_jsonl(out)
  _check_records(records, tok)
  b = [r for r in records if r['path'].endswith('b.flac')]
  # Region [1.0, 4.5): 3.5 s -> windows at 0 and 0.5 s of the region, times in file seconds.
  assert [r['start'] for r in b] == pytest.approx([1.0, 1.5])
  assert b[-1]['end'] == pytest.approx(4.5)
  wave, sr = audio_io.read_audio(os.path.join(audio_dir, 'sub', 'b.flac'), 1.0, 4.5)
  want = tok.tokenize_long(wave, sr, hop_seconds=1.0)
  assert [r['tokens'] for r in b] == [w['tokens'] for w in want]
  assert [r['times'] for r in b] == [[round(t + 1.0, 4) for t in w['times']] for w in want]
  a = [r for r in records if r['path'].endswith('a.wav')]
  assert [(r['start'], r['end']) for r in a] == [(0.0, 2.0), (0.5, 2.0)]


def test_missing_input_and_bad_hop_are_clear_errors(workdir, tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    cli.run(workdir, str(tmp_path / 'nope'), str(tmp_path / 'o.jsonl'), progress=False)
  for hop in (0.0, float('nan'), float('inf'), 3.5):
    with pytest.raises(ValueError, match='--hop_seconds must be a finite number'):
      cli.run(workdir, str(tmp_path), str(tmp_path / 'o.jsonl'), hop_seconds=hop, progress=False)


@pytest.mark.parametrize(
  'option',
  [{'eos_bias': 0.5}, {'target_rate': 10.0}, {'beam_size': 4}],
  ids=lambda o: next(iter(o)),
)
def test_vq_with_a_decoding_option_is_refused_before_any_work(workdir, audio_dir, tmp_path, option):
  out = tmp_path / 'o.jsonl'
  with pytest.raises(
    ValueError, match=f'--vq writes the collapsed VQ codes: .*--{next(iter(option))}'
  ):
    cli.run(workdir, audio_dir, str(out), use_vq=True, progress=False, **option)
  assert not out.exists()


def test_output_under_a_file_or_a_folder_is_a_clear_error(workdir, audio_dir, tmp_path):
  (tmp_path / 'file.txt').write_text('x')
  with pytest.raises(ValueError, match=r"--output .* cannot be created: .*file\.txt' is a file"):
    cli.run(workdir, audio_dir, str(tmp_path / 'file.txt' / 'sub' / 'o.jsonl'), progress=False)
  with pytest.raises(ValueError, match='--output .* is a folder'):
    cli.run(workdir, audio_dir, str(tmp_path), progress=False)


def test_report_folders_and_search_outputs_are_checked_before_any_work(tmp_path):
  """`--outdir` of evaluate_search and `--output` of search are written last: a file in the way
  or a folder without write permission is named first (nothing is loaded: the index here does
  not even exist)."""
  from pairalign_jax import search

  (tmp_path / 'file.txt').write_text('x')
  with pytest.raises(ValueError, match=r"--outdir .* cannot be created: .*file\.txt' is a file"):
    cli.check_output_folder(str(tmp_path / 'file.txt' / 'report'))
  locked = tmp_path / 'locked'
  locked.mkdir(mode=0o500)
  if not os.access(locked, os.W_OK):  # (root may write anywhere)
    with pytest.raises(ValueError, match='--outdir .* no write permission'):
      cli.check_output_folder(str(locked / 'report'))
  cli.check_output_folder(str(tmp_path / 'new' / 'report'))  # created when written
  with pytest.raises(ValueError, match='--output .* is a folder'):
    search.run(str(tmp_path / 'no_index'), 'q.wav', output=str(tmp_path))


def test_summary_counts_terminated_windows(workdir, audio_dir, tmp_path, caplog):
  b = os.path.join(audio_dir, 'sub', 'b.flac')
  for bias, share in ((100.0, 1.0), (-100.0, 0.0)):
    out = tmp_path / f'{bias}.jsonl'
    with caplog.at_level('INFO'):
      summary = cli.run(
        workdir, b, str(out), hop_seconds=1.0, eos_bias=bias, batch_size=4, progress=False
      )
    records = _read_jsonl(out)
    assert summary['windows'] == len(records) == 3
    assert summary['terminated'] == sum(r['terminated'] for r in records)
    assert summary['terminated_share'] == share
    assert all(r['terminated'] == (share == 1.0) for r in records)
  assert any('terminated by EOS: 0.0%' in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize('kind', ['jsonl', 'tsv'])
def test_malformed_manifest_lines_are_skipped_with_their_number(workdir, audio_dir, tmp_path, kind):
  a = os.path.join(audio_dir, 'a.wav')
  manifest = tmp_path / f'list.{kind}'
  if kind == 'jsonl':
    manifest.write_text(
      json.dumps({'path': a})
      + '\n{"path": oops\n'
      + json.dumps({'path': a, 'start': 1.5, 'end': 0.5})
      + '\n'
      + json.dumps({'path': a})
      + '\n'
    )
    bad = {2: 'not valid JSON', 3: 'end (0.5) must be after start'}
  else:
    manifest.write_text(f'path\tstart\tend\n{a}\t\t\n{a}\tsoon\t\n\t1\t2\n{a}\t\t\n')
    bad = {3: 'start/end must be seconds', 4: 'needs a "path"'}
  out = tmp_path / 'm.jsonl'
  summary = cli.run(workdir, str(manifest), str(out), hop_seconds=1.0, batch_size=4, progress=False)
  assert (summary['files'], summary['files_ok'], summary['windows']) == (4, 2, 2)
  assert summary['skipped'] == {cli.BAD_MANIFEST_LINE: 2}
  skips = {s['path']: s['detail'] for s in summary['skipped_files']}
  assert set(skips) == {f'{manifest}:{n}' for n in bad}
  for n, why in bad.items():
    assert why in skips[f'{manifest}:{n}']
  assert len(_read_jsonl(out)) == 2


def test_flags_are_defined_only_for_the_program():
  from absl import flags

  assert 'hop_seconds' not in flags.FLAGS  # importing the module defined nothing
  fv = flags.FlagValues()
  cli._define_flags(fv)
  fv(['tokenize', '--checkpoint=c', '--input=i', '--output=o', '--hop_seconds=0.5', '--vq'])
  assert (fv.checkpoint, fv.hop_seconds, fv.vq, fv.eos_bias, fv.batch_size) == (
    'c',
    0.5,
    True,
    None,
    64,
  )
  bad = flags.FlagValues()
  cli._define_flags(bad)
  with pytest.raises(flags.IllegalFlagValueError, match='--input'):
    bad(['tokenize', '--checkpoint=c'])


def test_command_line(workdir, audio_dir, tok, tmp_path):
  """`python -m pairalign_jax.tokenize ...` end to end: exit 0, summary on stdout, JSONL written,
  and the same ids as in this process (another process, one device instead of eight)."""
  out = tmp_path / 'cli.jsonl'
  env = dict(
    os.environ,
    JAX_PLATFORMS='cpu',
    XLA_FLAGS='',
    JAX_COMPILATION_CACHE_DIR=os.environ.get(
      'PAIRALIGN_TEST_COMPILE_CACHE', os.path.join(ROOT, '.jax_test_cache')
    ),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0.5',
    PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
  )
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'pairalign_jax.tokenize',
      f'--checkpoint={workdir}',
      f'--input={audio_dir}',
      f'--output={out}',
      '--hop_seconds=1.5',
      '--batch_size=4',
    ],
    cwd=str(tmp_path),
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert summary['files_ok'] == len(GOOD) and sum(summary['skipped'].values()) == len(BAD)
  assert 'garbage.wav' in proc.stderr  # the skip is reported in the log
  records = _read_jsonl(out)
  assert len(records) == summary['windows'] == 1 + 1 + 3  # b.flac: 0, 1.5, 2 s
  _check_records(records, tok)
  for rel in GOOD:
    wave, sr = audio_io.read_audio(os.path.join(audio_dir, rel))
    want = tok.tokenize_long(wave, sr, hop_seconds=1.5)
    got = [r for r in records if r['path'] == os.path.join(audio_dir, rel)]
    assert [r['tokens'] for r in got] == [w['tokens'] for w in want]
    for r, w in zip(got, want):
      np.testing.assert_allclose(r['times'], w['times'], atol=2e-4)
  missing = subprocess.run(
    [sys.executable, '-m', 'pairalign_jax.tokenize', f'--checkpoint={workdir}'],
    cwd=str(tmp_path),
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert missing.returncode != 0 and '--input' in missing.stderr
