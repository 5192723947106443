"""Tests for pairalign_jax.evaluation.retrieval (hand-made strings with known answers)."""

import time

import numpy as np
import pytest
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from pairalign_jax.evaluation import retrieval

ARCHIVE = [[1, 2, 3, 4], [5, 6, 7, 8], [1, 2, 3, 9], [9, 9, 9, 9]]
QUERIES = [
  [1, 2, 3, 4],  # target 0: exact match -> rank 1
  [5, 6, 7, 0],  # target 1: 0.25, all others 1.0 -> rank 1
  [1, 2, 3, 4],  # target 2: 0.25, but archive 0 is at 0 -> rank 2
  [],  # target 3: every entry at 1.0 -> a 4-way tie
]
TARGETS = [0, 1, 2, 3]


def test_distance_matrix_matches_string_mapping_and_arrays():
  d = retrieval.distance_matrix(QUERIES, ARCHIVE)
  assert d.shape == (4, 4) and d.dtype == np.float32
  assert d[2, 0] == 0.0 and d[2, 2] == pytest.approx(0.25) and d[3].tolist() == [1.0] * 4

  def as_str(seqs):
    return [''.join(chr(0x100 + t) for t in s) for s in seqs]

  np.testing.assert_array_equal(
    d, process.cdist(as_str(QUERIES), as_str(ARCHIVE), scorer=Levenshtein.normalized_distance)
  )
  np.testing.assert_array_equal(
    d, retrieval.distance_matrix([np.array(q, np.int32) for q in QUERIES], ARCHIVE)
  )


def test_known_scores_expected_ties():
  r = retrieval.evaluate_retrieval(QUERIES, ARCHIVE, TARGETS)
  tie_rr = (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4
  assert r.recall_at_1 == pytest.approx((1 + 1 + 0 + 1 / 4) / 4)
  assert r.recall_at_5 == pytest.approx(1.0)
  assert r.mrr == pytest.approx((1 + 1 + 1 / 2 + tie_rr) / 4)
  assert r.archive_tokens == 16 and r.num_queries == 4 and r.archive_size == 4


@pytest.mark.parametrize(
  'ties,r1,mrr',
  [
    ('pessimistic', 2 / 4, (1 + 1 + 1 / 2 + 1 / 4) / 4),
    ('optimistic', 3 / 4, (1 + 1 + 1 / 2 + 1) / 4),
  ],
)
def test_known_scores_other_tie_conventions(ties, r1, mrr):
  r = retrieval.evaluate_retrieval(QUERIES, ARCHIVE, TARGETS, ties=ties)
  assert r.recall_at_1 == pytest.approx(r1)
  assert r.mrr == pytest.approx(mrr)


def test_recall_at_5_with_larger_archive():
  # True item at rank 6 (five exact matches ahead of it) -> recall@5 = 0, rr = 1/6.
  archive = [[1, 2]] * 5 + [[1, 3]] + [[7, 7]] * 4
  r = retrieval.evaluate_retrieval([[1, 2]], archive, [5])
  assert (r.recall_at_1, r.recall_at_5) == (0.0, 0.0)
  assert r.mrr == pytest.approx(1 / 6)
  # A 3-way tie at ranks 4..6 around k=5: P(rank <= 5) = 2/3.
  archive = [[1, 2]] * 3 + [[1, 3]] * 3 + [[7, 7]] * 4
  r = retrieval.evaluate_retrieval([[1, 2, 4]], archive, [4])
  assert r.recall_at_5 == pytest.approx(2 / 3)
  assert r.mrr == pytest.approx((1 / 4 + 1 / 5 + 1 / 6) / 3)


def test_expected_ties_match_random_tie_breaking():
  rng = np.random.default_rng(0)
  d = rng.integers(0, 4, size=(20, 12)).astype(np.float32)  # many ties
  t = rng.integers(0, 12, size=20)
  s = retrieval.scores_from_distances(d, t)
  hits1, hits5, rr = [], [], []
  for _ in range(3000):
    key = rng.random(d.shape)
    order = np.lexsort((key, d), axis=1)  # by distance, random among ties
    rank = np.argmax(order == t[:, None], axis=1) + 1
    hits1.append(rank <= 1)
    hits5.append(rank <= 5)
    rr.append(1.0 / rank)
  assert s['recall_at_1'] == pytest.approx(np.mean(hits1), abs=0.01)
  assert s['recall_at_5'] == pytest.approx(np.mean(hits5), abs=0.01)
  assert s['mrr'] == pytest.approx(np.mean(rr), abs=0.01)
  # Pessimistic = stable sort with the true item after its ties.
  key = (np.arange(12)[None] == t[:, None]).astype(np.float32)
  order = np.lexsort((key, d), axis=1)
  rank = np.argmax(order == t[:, None], axis=1) + 1
  p = retrieval.scores_from_distances(d, t, ties='pessimistic')
  assert p['recall_at_1'] == pytest.approx(np.mean(rank <= 1))
  assert p['mrr'] == pytest.approx(np.mean(1.0 / rank))


def test_collapsed_tokenizer_scores_chance():
  archive = [[3]] * 50
  r = retrieval.evaluate_retrieval([[3]] * 10, archive, list(range(10)))
  assert r.recall_at_1 == pytest.approx(1 / 50)
  assert r.recall_at_5 == pytest.approx(5 / 50)


def test_recall_vs_archive_size():
  d = retrieval.distance_matrix(QUERIES, ARCHIVE)
  c = retrieval.recall_vs_archive_size(d, TARGETS, [1, 2, 4], repeats=20, seed=0)
  assert c['sizes'] == [1, 2, 4]
  full = retrieval.scores_from_distances(d, TARGETS)
  assert c['recall_at_1'][2] == pytest.approx(full['recall_at_1'])
  assert c['num_queries'][2] == 4
  assert c['recall_at_1'][0] == 1.0  # alone in the archive: always found
  assert 0 < c['num_queries'][1] <= 40
  # Queries 0, 1 are first against any partner; 2 loses only against archive 0; 3 is a 2-way tie.
  assert full['recall_at_1'] <= c['recall_at_1'][1] <= 1.0
  with pytest.raises(ValueError, match='archive size'):
    retrieval.recall_vs_archive_size(d, TARGETS, [5])


def test_bad_inputs():
  with pytest.raises(ValueError, match='targets'):
    retrieval.evaluate_retrieval(QUERIES, ARCHIVE, [0, 1, 2])
  with pytest.raises(ValueError, match='archive indices'):
    retrieval.evaluate_retrieval(QUERIES, ARCHIVE, [0, 1, 2, 4])
  with pytest.raises(ValueError, match='ties'):
    retrieval.evaluate_retrieval(QUERIES, ARCHIVE, TARGETS, ties='random')
  with pytest.raises(ValueError, match='empty archive'):
    retrieval.evaluate_retrieval(QUERIES, [], TARGETS)


def _random_strings(rng, n, k=512, mean_len=35):
  return [
    rng.integers(0, k, size=int(rng.integers(mean_len - 10, mean_len + 11))).tolist()
    for _ in range(n)
  ]


@pytest.mark.slow
def test_benchmark_overhead_over_cdist():
  """evaluate_retrieval on 10 000 x 1 000 strings costs about one cdist call."""
  rng = np.random.default_rng(0)
  archive, queries = _random_strings(rng, 10_000), _random_strings(rng, 1_000)
  targets = rng.integers(0, 10_000, size=1_000)
  best_direct, best_ours = np.inf, np.inf
  for _ in range(3):
    t = time.perf_counter()
    process.cdist(queries, archive, scorer=Levenshtein.normalized_distance, workers=-1)
    best_direct = min(best_direct, time.perf_counter() - t)
    t = time.perf_counter()
    retrieval.evaluate_retrieval(queries, archive, targets)
    best_ours = min(best_ours, time.perf_counter() - t)
  assert best_direct / best_ours >= 0.8, (best_direct, best_ours)
