"""Tests for pairalign_jax.evaluation.metrics (hand-computed values)."""

import math

import numpy as np
import pytest

from pairalign_jax.evaluation import metrics


def test_tokens_per_second_and_lengths():
  seqs = [[1, 2, 3], [4], [], [5, 6]]
  assert metrics.lengths(seqs).tolist() == [3, 1, 0, 2]
  assert metrics.tokens_per_second(seqs, 2.0) == pytest.approx(6 / 8)
  assert metrics.tokens_per_second(seqs, [1.0, 1.0, 1.0, 3.0]) == pytest.approx(1.0)
  with pytest.raises(ValueError, match='positive'):
    metrics.tokens_per_second(seqs, 0.0)


def test_vocab_usage_and_perplexity():
  seqs = [[0, 1, 1], [1, 3]]
  assert metrics.vocab_usage(seqs, 8) == pytest.approx(3 / 8)
  with pytest.raises(ValueError, match='outside'):
    metrics.vocab_usage([[9]], 8)
  # Uniform over 4 symbols -> perplexity 4; one symbol -> 1.
  assert metrics.unigram_perplexity([[0, 1], [2, 3]]) == pytest.approx(4.0)
  assert metrics.unigram_perplexity([[7, 7, 7]]) == pytest.approx(1.0)
  p = np.array([1, 3, 1]) / 5  # counts of 0, 1, 3
  assert metrics.unigram_perplexity(seqs) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
  assert math.isnan(metrics.unigram_perplexity([[], []]))


def test_unique_ratio():
  seqs = [[1, 2], [1, 2], [3], [1, 2], [4]]
  assert metrics.unique_ratio(seqs) == pytest.approx(3 / 5)
  # One representative per content item (first occurrence): items a -> [1,2], b -> [1,2], c -> [4].
  cids = ['a', 'a', 'b', 'b', 'c']
  assert metrics.unique_ratio(seqs, ['a', 'b', 'b', 'a', 'c']) == pytest.approx(2 / 3)
  assert metrics.unique_ratio(seqs, cids) == pytest.approx(3 / 3)
  with pytest.raises(ValueError, match='content_ids'):
    metrics.unique_ratio(seqs, ['a'])


def test_termination_rate():
  assert metrics.termination_rate([True, False, True, True]) == pytest.approx(0.75)
  assert metrics.termination_rate(None) is None


def test_ned_values():
  assert metrics.normalized_edit_distance([1, 2, 3], [1, 2]) == pytest.approx(1 / 3)
  assert metrics.normalized_edit_distance([], []) == 0.0
  a = [[1, 2, 3, 4], [5, 6], [7]]
  b = [[1, 2, 9, 4], [5, 6], [8, 8]]
  np.testing.assert_allclose(metrics.pairwise_ned(a, b), [0.25, 0.0, 1.0], atol=1e-6)
  np.testing.assert_array_equal(metrics.pairwise_edit_distance(a, b), [1, 0, 2])
  assert metrics.cross_view_ned(a, b) == pytest.approx(1.25 / 3, abs=1e-6)
  # Token ids above 255 are not confused (rapidfuzz hashes the ints).
  assert metrics.normalized_edit_distance([256, 512], [0, 256]) == pytest.approx(1.0)


def test_edit_operations_by_kind_per_reference_token():
  refs = [[1, 2, 3, 4], [5, 6], [7]]
  hyps = [
    [1, 9, 3, 4],  # one substitution
    [5, 6, 6, 8],  # two insertions
    [],  # one deletion
  ]
  got = metrics.edit_operations(hyps, refs)
  assert got['reference_tokens'] == 7 and got['hypothesis_tokens'] == 8
  assert got['substitutions'] == pytest.approx(1 / 7)
  assert got['insertions'] == pytest.approx(2 / 7)
  assert got['deletions'] == pytest.approx(1 / 7)
  total = got['substitutions'] + got['insertions'] + got['deletions']
  assert total * 7 == pytest.approx(metrics.pairwise_edit_distance(hyps, refs).sum())
  same = metrics.edit_operations(refs, refs)
  assert same['substitutions'] == same['insertions'] == same['deletions'] == 0.0
  with pytest.raises(ValueError, match='differ in number'):
    metrics.edit_operations(hyps, refs[:2])


def test_paired_ned_stats_gap_and_content_skip():
  a = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
  b = [[1, 2, 3], [4, 5, 0], [7, 8, 9]]
  s = metrics.paired_ned_stats(a, b)
  assert s['same'] == pytest.approx((0 + 1 / 3 + 0) / 3, abs=1e-6)
  assert s['unrelated'] == pytest.approx(1.0)
  assert s['gap'] == pytest.approx(s['unrelated'] - s['same'])
  # Rolled pairs sharing a content id are dropped: only (a0, b1) remains unrelated.
  s = metrics.paired_ned_stats([[1], [2], [3]], [[1], [2], [1]], ['x', 'y', 'y'])
  assert s['unrelated'] == pytest.approx(1.0)
  s = metrics.paired_ned_stats([[1], [1], [3]], [[1], [1], [1]], ['x', 'x', 'y'])
  # Rolled pairs: (a0,b1) same id -> skipped; (a1,b2) 'x' vs 'y' -> NED([1],[1]) = 0; (a2,b0) -> 1.
  assert s['unrelated'] == pytest.approx(0.5)
  with pytest.raises(ValueError, match='at least 2'):
    metrics.paired_ned_stats([[1]], [[1]])


def test_length_stats():
  s = metrics.length_stats([[1], [1, 2, 3], [], [1, 2]])
  assert s == {
    'mean': 1.5,
    'std': pytest.approx(np.std([1, 3, 0, 2])),
    'min': 0.0,
    'median': 1.5,
    'max': 3.0,
  }


def test_as_strings_rejects_bad_input():
  assert metrics.as_strings([np.array([1, 2]), [3]]) == [[1, 2], [3]]
  with pytest.raises(ValueError, match=r'seqs\[1\]'):
    metrics.as_strings([[1], [[1, 2]]])
  with pytest.raises(ValueError, match='integers'):
    metrics.as_strings([[1.5]])


def test_assign_phones_intervals():
  labels = ['a', 'b', 'c']
  pt = np.array([[0.0, 0.1], [0.1, 0.25], [0.3, 0.5]])
  got = metrics.assign_phones(np.array([0.05, 0.1, 0.27, 0.3, 0.6, -0.1]), labels, pt)
  assert got == ['a', 'b', None, 'c', None, None]


def test_phone_purity_hand_computed():
  # Utterance 1: phones a [0, 1), b [1, 2). Utterance 2: a [0, 1), c [1, 2).
  phones = [['a', 'b'], ['a', 'c']]
  ptimes = [np.array([[0, 1], [1, 2]], np.float32), np.array([[0, 1], [1, 2]], np.float32)]
  tokens = [[5, 5, 6, 9], [5, 6, 6]]
  times = [np.array([0.2, 0.7, 1.5, 2.5]), np.array([0.5, 0.6, 1.2])]
  # Assigned: (5,a) (5,a) (6,b) [9 unassigned] (5,a) (6,a) (6,c)  -> 6 tokens.
  r = metrics.phone_purity(tokens, times, phones, ptimes)
  assert r['num_tokens'] == 6
  assert r['unassigned_rate'] == pytest.approx(1 / 7)
  # token 5: a=3 -> 3; token 6: a=1, b=1, c=1 -> 1.  (3 + 1) / 6
  assert r['token_purity'] == pytest.approx(4 / 6)
  # phone a: 5=3, 6=1 -> 3; b: 6 -> 1; c: 6 -> 1.  (3 + 1 + 1) / 6
  assert r['phone_purity'] == pytest.approx(5 / 6)
  assert 0.0 < r['nmi'] < 1.0
  # A one-to-one code is perfectly pure with NMI 1.
  r = metrics.phone_purity(
    [[1, 2, 1]],
    [np.array([0.5, 1.5, 2.5])],
    [['x', 'y', 'x']],
    [np.array([[0, 1], [1, 2], [2, 3]])],
  )
  assert r['token_purity'] == r['phone_purity'] == pytest.approx(1.0)
  assert r['nmi'] == pytest.approx(1.0)
  with pytest.raises(ValueError, match='times'):
    metrics.phone_purity([[1, 2]], [np.array([0.5])], [['x']], [np.array([[0, 1]])])
