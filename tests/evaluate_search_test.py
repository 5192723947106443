"""Spoken term detection end to end (pairalign_jax.evaluate_search, archive/std_eval.py,
archive/std_report.py) on the tiny checkpoint of tokenizer_test.py at the smallest corpus (2
archive speakers x 3 sentences, 18 s; 10 terms), and the STD corpus' word times and queries
(archive/std_corpus.py) on the same synthetic split."""

import json
import os

import numpy as np
import pytest
import tokenizer_test

from pairalign_jax import evaluate_search
from pairalign_jax.archive import std_corpus
from pairalign_jax.archive import std_report
from pairalign_jax.data import pipeline

SIZE = dict(archive_speakers=2, num_sentences=3, num_words=6, num_phrases=4)
RUN = dict(SIZE, speed_hours=0.05, speed_reps=1, seed=0)
HEADLINE = ('map', 'p_at_10', 'mtwv', 'index_tokens_per_hour', 'search_seconds_per_query_hour')
FILES = ('search_report.json', 'search_report.md', 'search_pr_curve.png', 'search_example.png')


@pytest.fixture(scope='module')
def source():
  return pipeline.make_source(tokenizer_test.tiny_config(), 'test')


@pytest.fixture(scope='module')
def corpus(source):
  return std_corpus.build_std_corpus(source, **SIZE, seed=0)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Two evaluations with the same seed (the second also writes the per-term records)."""
  workdir = tokenizer_test.tiny_workdir(tmp_path_factory)
  out = []
  for per_term in (False, True):
    outdir = str(tmp_path_factory.mktemp('search_report'))
    report = evaluate_search.evaluate_search(workdir, outdir=outdir, per_term=per_term, **RUN)
    out.append((outdir, report))
  return out


def _json(outdir, name='search_report.json'):
  with open(os.path.join(outdir, name), encoding='utf-8') as f:
    return json.load(f)


# ------------------------------------------------------------------------------- the corpus
def test_recording_word_times_are_the_utterances_shifted_by_their_offsets(source, corpus):
  sr = corpus.sample_rate
  seg = None
  for rec in corpus.recordings:
    spk = next(i for i, s in enumerate(source.speakers) if s.name == rec.speaker)
    utterances = [source[source.index_of(spk, k)] for k in range(SIZE['num_sentences'])]
    seg = len(utterances[0]['audio'])
    assert rec.wave.shape[0] == seg * len(utterances)  # every sentence once
    words, used = [], set()
    for k in range(len(utterances)):
      chunk = rec.wave[k * seg : (k + 1) * seg]
      (u,) = [u for u in utterances if np.array_equal(u['audio'], chunk)]  # which utterance
      used.add(int(u['sentence_index']))
      sentence = source.sentences[int(u['sentence_index'])]
      spans = std_corpus.word_spans(u['phone_times'], sentence.word_index)
      offset = k * seg / sr
      words += [(w.text, s + offset, e + offset) for w, (s, e) in zip(sentence.words, spans)]
    assert used == set(range(SIZE['num_sentences']))
    assert [w for w, _, _ in rec.words] == [w for w, _, _ in words]
    np.testing.assert_allclose([(s, e) for _, s, e in rec.words], [(s, e) for _, s, e in words])
    starts = [s for _, s, _ in rec.words]
    assert starts == sorted(starts) and all(0 <= s < e <= rec.seconds for _, s, e in rec.words)


def test_terms_occurrences_and_queries(source, corpus):
  recs = {r.name: r for r in corpus.recordings}
  archive_speakers = {r.speaker for r in corpus.recordings}
  assert len(archive_speakers) == SIZE['archive_speakers']
  texts = [t.text for t in corpus.terms]
  assert len(texts) == len(set(texts)) == SIZE['num_words'] + SIZE['num_phrases']
  assert sum(len(t.split()) == 2 for t in texts) == SIZE['num_phrases']
  sr = corpus.sample_rate
  for term in corpus.terms:
    assert term.query_speaker not in archive_speakers  # spoken by another speaker
    assert term.occurrences
    for name, s, e in term.occurrences:  # inside the archive, and these very words said there
      rec = recs[name]
      assert 0 <= s < e <= rec.seconds
      said = [w for w, ws, we in rec.words if s - 1e-9 <= ws and we <= e + 1e-9]
      assert ' '.join(said) == term.text
    # Every place the archive says the term is an occurrence.
    n = len(term.text.split())
    found = sum(
      ' '.join(w for w, _, _ in r.words[i : i + n]) == term.text
      for r in corpus.recordings
      for i in range(len(r.words))
    )
    assert found == len(term.occurrences)
    lo, hi = term.query_span
    assert 0 <= lo < hi <= len(term.context_wave) / sr
    assert hi - lo >= corpus.settings['min_query_seconds'] - 1e-6
    np.testing.assert_array_equal(
      term.query_wave, term.context_wave[int(round(lo * sr)) : int(round(hi * sr))]
    )


# --------------------------------------------------------------------------- the evaluation
def test_report_files_and_headline_figures(runs, corpus):
  outdir, report = runs[0]
  for name in FILES:
    assert os.path.getsize(os.path.join(outdir, name)) > 0, name
  assert not os.path.exists(os.path.join(outdir, 'search_per_term.json'))  # only on request
  with open(os.path.join(outdir, 'search_pr_curve.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  saved = _json(outdir)
  assert set(saved['tokenizers']) == {'pairalign', 'vq', 'mfcc_kmeans'}
  for name, r in saved['tokenizers'].items():
    assert set(HEADLINE) <= set(r), name
    assert 0.0 <= r['map'] <= 1.0 and 0.0 <= r['p_at_10'] <= 1.0
    lo, hi = r['map_ci95']
    assert 0.0 <= lo <= r['map'] <= hi <= 1.0
    assert r['map'] <= r['map_any_overlap'] + 1e-9  # a looser match rule finds more
    assert 0.0 <= r['mtwv'] <= 1.0  # 0: no threshold beats detecting nothing
    assert r['index_tokens_per_hour'] > 0 and r['search_seconds_per_query_hour'] > 0
    assert r['index_tokens_per_hour'] == pytest.approx(r['index_tokens'] * 3600 / 18.0)
    assert r['archive_hours_per_second'] == pytest.approx(1 / r['search_seconds_per_query_hour'])
    assert r['num_terms'] == len(r['ap']) == len(corpus.terms)
    assert r['map'] == pytest.approx(np.mean(r['ap']))
    assert all(0.0 <= ap <= 1.0 for ap in r['ap'])
    # The in-memory figures are the saved ones.
    for key in HEADLINE:
      assert r[key] == pytest.approx(report['tokenizers'][name][key]), (name, key)
  assert set(saved['comparisons']) == {'vq', 'mfcc_kmeans'}
  for name, cmp in saved['comparisons'].items():
    diff = saved['tokenizers']['pairalign']['map'] - saved['tokenizers'][name]['map']
    assert cmp['map_difference'] == pytest.approx(diff)
    lo, hi = cmp['map_difference_ci95']
    assert -1.0 <= lo <= hi <= 1.0
  assert {'index_tokens_vs_vq', 'map_vs_vq', 'map_vs_mfcc_kmeans'} <= set(saved['goals'])
  assert saved['goals']['map_vs_vq']['met'] == (saved['goals']['map_vs_vq']['value'] >= 0)
  md = open(os.path.join(outdir, 'search_report.md'), encoding='utf-8').read()
  pairalign = saved['tokenizers']['pairalign']
  assert f'| PairAlign | {pairalign["map"]:.3f} |' in md and '| MFCC k-means |' in md
  assert '![example](search_example.png)' in md


def test_report_json_is_compact_and_consistent_with_the_corpus(runs, corpus):
  outdir, _ = runs[0]
  saved = _json(outdir)
  c = saved['corpus']
  assert c['archive_seconds'] == pytest.approx(corpus.archive_seconds) == pytest.approx(18.0)
  assert c['recordings'] == len(corpus.recordings) == SIZE['archive_speakers']
  assert (c['num_words'], c['num_phrases']) == (SIZE['num_words'], SIZE['num_phrases'])
  assert c['occurrences'] == sum(len(t.occurrences) for t in corpus.terms)
  assert c['query_speakers'] == 1  # 3 speakers in the split, 2 in the archive
  for name, r in saved['tokenizers'].items():
    cols = r['per_term']  # columns, not one record per term
    assert cols['term'] == [t.text for t in corpus.terms]
    assert cols['num_true'] == [len(t.occurrences) for t in corpus.terms]
    assert all(0 <= f <= n for f, n in zip(cols['found'], cols['num_true']))
    assert len(cols['top_hit_correct']) == len(corpus.terms)
    for key in ('pr_curve', 'twv_curve'):
      lengths = {len(v) for v in r[key].values()}
      assert len(lengths) == 1 and 0 < lengths.pop() <= std_report.JSON_CURVE_POINTS, (name, key)
    assert all(0.0 <= p <= 1.0 for p in r['pr_curve']['precision'] + r['pr_curve']['recall'])
  text = open(os.path.join(outdir, 'search_report.json'), encoding='utf-8').read()
  assert '"top_hits"' not in text
  assert '"ap": [' in text  # lists of numbers on one line


def test_same_seed_same_figures_and_per_term_records(runs):
  (dir_a, _), (dir_b, _) = runs
  a, b = _json(dir_a), _json(dir_b)
  for name in a['tokenizers']:
    for key in ('map', 'p_at_10', 'mtwv', 'ap', 'index_tokens', 'per_term', 'pr_curve'):
      assert a['tokenizers'][name][key] == b['tokenizers'][name][key], (name, key)
  assert a['comparisons'] == b['comparisons']
  records = _json(dir_b, 'search_per_term.json')['tokenizers']
  for name, per_term in records.items():
    cols = b['tokenizers'][name]['per_term']
    assert [p['term'] for p in per_term] == cols['term']
    assert [p['ap'] for p in per_term] == b['tokenizers'][name]['ap']
    for p, correct in zip(per_term, cols['top_hit_correct']):
      assert len(p['top_hits']) <= 5
      assert bool(p['top_hits'] and p['top_hits'][0]['correct']) == correct
      scores = [h['score'] for h in p['top_hits']]
      assert scores == sorted(scores, reverse=True)


def test_rewriting_from_the_json_gives_the_same_report(runs, tmp_path):
  outdir, _ = runs[0]
  report = evaluate_search.rewrite_report(
    os.path.join(outdir, 'search_report.json'), outdir=str(tmp_path)
  )
  assert report['tokenizers']['pairalign']['map'] == _json(outdir)['tokenizers']['pairalign']['map']
  for name in ('search_report.json', 'search_report.md'):
    with open(os.path.join(outdir, name), encoding='utf-8') as f, open(tmp_path / name) as g:
      assert f.read() == g.read(), name
  assert (tmp_path / 'search_example.png').stat().st_size > 0
  # A compact report no longer has the per-term hits.
  with pytest.raises(ValueError, match='--per_term'):
    evaluate_search.rewrite_report(
      os.path.join(outdir, 'search_report.json'), outdir=str(tmp_path / 'again'), per_term=True
    )


def test_corpus_size_is_checked(tmp_path_factory):
  workdir = tokenizer_test.tiny_workdir(tmp_path_factory)
  with pytest.raises(ValueError, match='archive_speakers'):
    evaluate_search.evaluate_search(workdir, outdir=None, archive_speakers=3)
  with pytest.raises(ValueError, match='tokenizers'):
    evaluate_search.evaluate_search(workdir, tokenizers=('pairalign', 'hubert'))
