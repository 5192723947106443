"""Archive search (pairalign_jax/archive): subsequence matching, hit times and merging, the
on-disk index (incremental add, bad files), with hand-made strings and a toy tokenizer (no
model)."""

import json
import os

import numpy as np
import pytest
from rapidfuzz.distance import Levenshtein
import soundfile as sf

from pairalign_jax.archive import build
from pairalign_jax.archive import hits as hits_lib
from pairalign_jax.archive import index_store
from pairalign_jax.archive import subsequence
from pairalign_jax.archive import tokenizers as tokenizers_lib
from pairalign_jax.archive.hits import Hit

SR = 16_000


# ------------------------------------------------------------------ subsequence matching
@pytest.mark.parametrize(
  'query, text, want',
  [
    ([1, 2, 3], [9, 9, 1, 2, 3, 9], (0, 2, 4)),  # exact occurrence inside the text
    ([1, 2, 3, 4], [5, 1, 2, 4, 6], (1, 1, 3)),  # one deletion: 1 2 _ 4
    ([1, 2, 3], [7, 1, 8, 3, 7], (1, 1, 3)),  # one substitution
    ([1, 2], [1, 2, 0, 1, 2], (0, 0, 1)),  # two exact occurrences: the leftmost end
    ([1, 2, 3], [1, 9, 1, 2, 3], (0, 2, 4)),  # the shortest of the best: not "1 9 1 2 3"
    ([1, 2, 3], [1, 2, 2, 2, 3], (1, 0, 1)),  # "1 2" and "2 3" need one edit: leftmost end
    ([4, 5], [1, 2, 3], (2, 0, 0)),  # nothing matches: one substitution + one insertion
    ([3], [], (1, -1, -1)),  # an empty text: no match
  ],
)
def test_known_best_substrings(query, text, want):
  assert subsequence.reference_alignment(query, text) == want
  assert subsequence.align(query, text) == want


def test_matches_the_reference_on_random_strings():
  rng = np.random.default_rng(0)
  for _ in range(300):
    q = rng.integers(0, 4, int(rng.integers(1, 7))).tolist()
    t = rng.integers(0, 4, int(rng.integers(0, 11))).tolist()
    assert subsequence.align(q, t) == subsequence.reference_alignment(q, t), (q, t)


def test_long_queries_use_several_words():
  rng = np.random.default_rng(1)
  for m in (63, 64, 65, 130):
    q = rng.integers(0, 5, m).tolist()
    t = rng.integers(0, 5, 40).tolist() + q[5:-3] + rng.integers(0, 5, 30).tolist()
    d, s, e = subsequence.align(q, t)
    assert Levenshtein.distance(q, t[s : e + 1]) == d  # the reported span has that distance
    # No substring is closer (column DP over the text, free start).
    col = np.arange(m + 1)
    best = m
    for c in t:
      new = np.empty_like(col)
      new[0] = 0
      for i in range(1, m + 1):
        new[i] = min(col[i] + 1, new[i - 1] + 1, col[i - 1] + (q[i - 1] != c))
      col = new
      best = min(best, int(col[m]))
    assert d == best <= 8


def test_vectorized_rows_equal_one_by_one():
  rng = np.random.default_rng(2)
  strings = [rng.integers(0, 6, int(rng.integers(0, 15))).tolist() for _ in range(40)]
  q = [1, 2, 3, 4]
  texts, lengths = subsequence.pad_strings(strings, pad=6)
  ends = subsequence.best_ends(q, texts, lengths)
  starts = subsequence.best_starts(q, texts, ends.end, ends.distance)
  for i, s in enumerate(strings):
    assert (int(ends.distance[i]), int(starts[i]), int(ends.end[i])) == subsequence.align(q, s)


def test_query_ids_absent_from_the_archive_match_nothing_whatever_their_size():
  """An id outside the archive's (a vocabulary mix-up, 10^9) is a token no text has: the same
  distances and spans as any other absent id, without a table sized by the id."""
  rng = np.random.default_rng(3)
  strings = [rng.integers(0, 6, int(rng.integers(1, 15))).tolist() for _ in range(20)]
  texts, lengths = subsequence.pad_strings(strings, pad=6)
  for absent in (7, 10**9):
    q = [1, absent, 3]
    ends = subsequence.best_ends(q, texts, lengths)
    starts = subsequence.best_starts(q, texts, ends.end, ends.distance)
    for i, s in enumerate(strings):
      got = (int(ends.distance[i]), int(starts[i]), int(ends.end[i]))
      assert got == subsequence.align([1, 7, 3], s), (absent, i)


@pytest.mark.parametrize('query', [[], [[1, 2]], [1.5, 2.0], [-1, 2]])
def test_bad_queries_are_named(query):
  with pytest.raises(ValueError, match='query'):
    subsequence.check_query(query)


# ------------------------------------------------------------------ hit times and merging
def test_span_times_are_voronoi_cells_clipped_to_the_window():
  times = [0.1, 0.3, 0.5, 0.9]
  assert hits_lib.span_times(times, 1, 2, (0.0, 3.0)) == pytest.approx((0.2, 0.7))
  # First token: half the gap to the next one on its left; last token: half the previous gap.
  assert hits_lib.span_times(times, 0, 0, (0.0, 3.0)) == pytest.approx((0.0, 0.2))
  assert hits_lib.span_times(times, 3, 3, (0.0, 3.0)) == pytest.approx((0.7, 1.1))
  assert hits_lib.span_times(times, 3, 3, (0.0, 1.0)) == pytest.approx((0.7, 1.0))  # clipped
  assert hits_lib.span_times([1.0], 0, 0, (0.0, 3.0), fallback_half=0.05) == pytest.approx(
    (0.95, 1.05)
  )
  with pytest.raises(ValueError, match='outside'):
    hits_lib.span_times(times, 2, 4, (0.0, 3.0))


def test_merge_keeps_the_best_of_overlapping_hits_per_file():
  hits = [
    Hit('a', 1.0, 2.0, 0.5, window=0),
    Hit('a', 1.5, 2.5, 0.9, window=1),  # overlaps the first: the better one stays
    Hit('a', 2.5, 3.0, 0.4, window=2),  # touches the kept one (no common span): kept
    Hit('b', 1.0, 2.0, 0.7, window=3),  # another file: kept
    Hit('a', 0.0, 1.2, 0.6, window=4),  # overlaps only the dropped first hit: kept
  ]
  merged = hits_lib.merge_hits(hits)
  assert [h.window for h in merged] == [1, 3, 4, 2]
  assert [h.window for h in hits_lib.merge_hits(hits, limit=2)] == [1, 3]


# ------------------------------------------------------------------ the index
def _windows(tokens_per_window, starts, spacing=0.1):
  """Hand-made windows: tokens at start + 0.05 + spacing * i."""
  return [
    {
      'start': s,
      'end': s + 3.0,
      'tokens': toks,
      'times': [round(s + 0.05 + spacing * i, 4) for i in range(len(toks))],
    }
    for s, toks in zip(starts, tokens_per_window)
  ]


def _toy_index(directory=None):
  index = index_store.Index.create(
    directory, tokenizer_info={'kind': 'toy'}, window_seconds=3.0, hop_seconds=1.0
  )
  # File a: the string 1 2 3 4 sits in windows 0 and 1 (the same place in the file: 1.25-1.55 s).
  index.add_file(
    'a',
    'a.wav',
    _windows(
      [[9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 1, 2, 3, 4, 8], [9, 9, 1, 2, 3, 4, 8], []], [0, 1, 2]
    ),
    duration=5.0,
  )
  # File b: 1 2 7 4 (one substitution) at 0.25-0.55 s.
  index.add_file('b', 'b.wav', _windows([[5, 5, 1, 2, 7, 4, 5]], [0.0]), duration=2.0)
  return index


def test_search_finds_matches_with_times_and_merges_windows():
  index = _toy_index()
  hits = index.search([1, 2, 3, 4], top_k=5)
  # a: found in windows 0 and 1, merged into one hit; b: one edit (score 1 - 1/4).
  assert [(h.file, h.distance) for h in hits[:2]] == [('a.wav', 0), ('b.wav', 1)]
  a, b = hits[0], hits[1]
  assert a.score == 1.0 and b.score == pytest.approx(0.75)
  assert (a.start, a.end) == pytest.approx((1.2, 1.6))  # tokens at 1.25 .. 1.55, +- half 0.1
  assert (b.start, b.end) == pytest.approx((0.2, 0.6))
  assert a.window == 0  # ties between windows go to the first
  assert all(h.score <= b.score for h in hits[2:])
  assert len({(h.file, h.start) for h in hits}) == len(hits)
  assert index.search([1, 2, 3, 4], top_k=1) == hits[:1]
  everything = index.search_tokens([1, 2, 3, 4], None)
  assert everything[:2] == hits[:2]  # the empty window gives no hit
  assert len(everything) <= 3
  assert index.tokens_per_hour() == pytest.approx(31 / (7.0 / 3600))
  with pytest.raises(ValueError, match='top_k'):
    index.search([1, 2], top_k=0)
  with pytest.raises(ValueError, match='tokenizer'):
    index.search(np.zeros(SR // 2, np.float32))  # a waveform needs a tokenizer


def test_index_on_disk_reopens_and_adds(tmp_path):
  d = str(tmp_path / 'idx')
  index = _toy_index(d)
  index.flush()
  want = [h.to_dict() for h in index.search([1, 2, 3, 4], top_k=3)]
  again = index_store.Index.open(d)
  assert [h.to_dict() for h in again.search([1, 2, 3, 4], top_k=3)] == want
  assert again.has('a') and again.has('b') and not again.has('c')
  again.add_file('c', 'c.wav', _windows([[1, 2, 3, 4]], [0.0]), duration=1.0)
  again.flush()
  third = index_store.Index.open(d)
  assert [f['key'] for f in third.files] == ['a', 'b', 'c']
  assert third.manifest['shards'] == ['00000', '00001']
  assert sorted(h.file for h in third.search([1, 2, 3, 4], top_k=3) if h.score == 1.0) == [
    'a.wav',
    'c.wav',
  ]
  with open(os.path.join(d, index_store.MANIFEST)) as f:
    assert json.load(f)['files'][2]['windows'] == 1
  arrays = np.load(os.path.join(d, 'shards', '00000', 'tokens.npy'))
  assert arrays.dtype == np.uint16 and arrays.size == 31
  with pytest.raises(ValueError, match='already'):
    third.add_file('a', 'a.wav', [], duration=1.0)
  with pytest.raises(ValueError, match='exists already'):
    index_store.Index.create(d, tokenizer_info={}, window_seconds=3.0, hop_seconds=1.0)
  with pytest.raises(ValueError, match='no archive index'):
    index_store.Index.open(str(tmp_path))


# ------------------------------------------------------------------ streaming files in
class _EnergyTokens:
  """A toy segment tokenizer: one token per 100 ms, the frame's RMS level in 8 steps."""

  def __call__(self, waves, sample_rate):
    frames = waves.reshape(waves.shape[0], -1, sample_rate // 10)  # [N, 30, 1600]
    level = np.sqrt((frames**2).mean(-1))
    tokens = np.minimum((level * 40).astype(int), 7)
    times = np.tile((np.arange(frames.shape[1]) + 0.5) * 0.1, (waves.shape[0], 1))

    class Out:
      pass

    out = Out()
    out.tokens, out.times = tokens.tolist(), list(times)
    return out


def _toy_tokenizer(hop=1.0):
  return tokenizers_lib.from_segment_fn(
    'toy', _EnergyTokens(), sample_rate=SR, window_seconds=3.0, hop_seconds=hop
  )


def _tone(seconds, seed):
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * SR)) / SR
  env = np.repeat(rng.uniform(0.01, 0.19, int(np.ceil(seconds * 10))), SR // 10)[: t.size]
  return (env * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_segment_windows_follow_tokenize_long_rules():
  st = _toy_tokenizer()
  wave = _tone(5.5, 0)
  windows = st.windows(wave, SR)
  assert [w['start'] for w in windows] == [0.0, 1.0, 2.0, 2.5]  # last aligned to the end
  assert windows[-1]['end'] == pytest.approx(5.5)
  assert all(w['start'] <= t <= w['end'] for w in windows for t in w['times'])
  assert tokenizers_lib.window_starts(100, 200, 10) == [0]
  short = st.windows(wave[:SR], SR)
  assert len(short) == 1 and short[0]['end'] == pytest.approx(1.0)
  assert max(short[0]['times']) <= 1.0  # padding tokens are clipped to the recording
  tokens, times = st.clip(wave[: SR // 2], SR)
  assert len(tokens) == 5 and np.all(times <= 0.5)  # the padding's tokens are dropped
  with pytest.raises(ValueError, match='longer than one'):
    st.clip(wave, SR)


def test_index_items_incremental_and_bad_files(tmp_path):
  audio = tmp_path / 'audio'
  os.makedirs(audio / 'sub')
  sf.write(audio / 'a.wav', _tone(4.0, 1), SR)
  sf.write(audio / 'sub' / 'b.flac', _tone(6.0, 2), SR)
  (audio / 'garbage.wav').write_bytes(b'RIFF\x00\x00\x00\x00WAVEjunk' * 40)
  sf.write(audio / 'silent.wav', np.zeros(SR, np.float32), SR)
  from pairalign_jax import tokenize as tokenize_cli

  st = _toy_tokenizer()
  d = str(tmp_path / 'index')
  index = index_store.Index.open_or_create(d, st)
  first = build.index_items(index, st, tokenize_cli.list_inputs(str(audio)), progress=False)
  assert first['indexed'] == 2 and first['already_indexed'] == 0
  assert first['skipped'] == {'unreadable': 1, 'silent': 1}
  assert first['audio_seconds'] == pytest.approx(10.0)
  assert first['windows'] == 2 + 4  # 4 s: windows at 0, 1 s; 6 s: at 0, 1, 2, 3 s
  reopened = index_store.Index.open(d)
  assert {os.path.basename(f['path']) for f in reopened.files} == {'a.wav', 'b.flac'}
  assert {os.path.basename(v['path']) for v in reopened.manifest['bad_files'].values()} == {
    'garbage.wav',
    'silent.wav',
  }
  # A query cut from b.flac is found there, at its place.
  b_wave, _ = sf.read(audio / 'sub' / 'b.flac', dtype='float32')
  want = index.search_tokens(st.clip(b_wave[int(3.2 * SR) : int(4.4 * SR)], SR)[0], 1)[0]
  assert want.file.endswith('b.flac') and want.score == 1.0
  assert want.start == pytest.approx(3.2, abs=0.06) and want.end == pytest.approx(4.4, abs=0.06)

  sf.write(audio / 'c.wav', _tone(2.0, 3), SR)  # a new file; the others are skipped
  index = index_store.Index.open_or_create(d, st)
  second = build.index_items(index, st, tokenize_cli.list_inputs(str(audio)), progress=False)
  assert second['indexed'] == 1 and second['already_indexed'] == 2
  assert second['skipped'] == {'unreadable': 1, 'silent': 1}  # tried again, reported again
  final = index_store.Index.open(d)
  assert len(final.files) == 3 and final.num_windows == 7
  assert len(final.manifest['shards']) == 2
  with pytest.raises(ValueError, match='hop_seconds'):
    index_store.Index.open_or_create(d, _toy_tokenizer(hop=0.5))


def test_an_index_keeps_the_files_done_before_a_hard_failure(tmp_path):
  """A failure that is no bad file (here the tokenizer raising, as an out-of-memory or Ctrl-C
  would) still writes the files indexed before it; a rerun goes on from there."""
  audio = tmp_path / 'audio'
  os.makedirs(audio)
  for i, name in enumerate(('a.wav', 'b.wav', 'c.wav')):
    sf.write(audio / name, _tone(2.0, i), SR)
  from pairalign_jax import tokenize as tokenize_cli

  st = _toy_tokenizer()
  good_windows, calls = st.windows, []

  def failing_windows(wave, sr):
    calls.append(1)
    if len(calls) == 3:
      raise RuntimeError('out of memory')
    return good_windows(wave, sr)

  st.windows = failing_windows
  d = str(tmp_path / 'index')
  items = tokenize_cli.list_inputs(str(audio))
  with pytest.raises(RuntimeError, match='out of memory'):
    build.index_items(index_store.Index.open_or_create(d, st), st, items, progress=False)
  assert len(index_store.Index.open(d).files) == 2
  st.windows = good_windows
  again = build.index_items(index_store.Index.open_or_create(d, st), st, items, progress=False)
  assert again['indexed'] == 1 and again['already_indexed'] == 2
