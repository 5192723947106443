"""Spoken term detection metrics (archive/std_metrics.py) on hand-made hit lists with known
values, and word times of the STD corpus (archive/std_corpus.py)."""

import numpy as np
import pytest

from pairalign_jax.archive import std_corpus
from pairalign_jax.archive import std_metrics


def test_hit_labelling_needs_half_of_the_occurrence_and_counts_it_once():
  occ = [('a', 10.0, 11.0), ('a', 20.0, 20.4), ('b', 5.0, 6.0)]
  hits = [
    ('a', 10.4, 12.0),  # covers 0.6 of the first occurrence: correct
    ('a', 10.0, 10.8),  # the same occurrence again: a false alarm
    ('a', 20.25, 21.0),  # covers 0.15 of 0.4 s (37.5%): not enough
    ('b', 5.5, 5.9),  # covers 0.4 of 1 s: not enough
    ('b', 4.0, 5.5),  # covers exactly 50%: correct
    ('c', 5.0, 6.0),  # another file
  ]
  assert std_metrics.label_hits(hits, occ).tolist() == [True, False, False, False, True, False]


def test_average_precision_and_precision_at_10():
  assert std_metrics.average_precision([True, False, True], 3) == pytest.approx((1 + 2 / 3) / 3)
  assert std_metrics.average_precision([False, False], 2) == 0.0
  assert std_metrics.average_precision([True, True], 2) == 1.0
  assert std_metrics.precision_at([True, False, True] + [False] * 20, 10) == pytest.approx(0.2)
  with pytest.raises(ValueError, match='num_true'):
    std_metrics.average_precision([True], 0)


def test_mtwv_on_a_hand_made_hit_list():
  # Two terms: term 0 occurs twice, term 1 once; T = 10 000 s; beta = 999.9.
  scores = [0.9, 0.8, 0.7, 0.6]
  correct = [True, False, True, True]
  terms = [0, 0, 1, 0]
  fa = 999.9 / (10_000 - 2)  # one false alarm of term 0
  curve = std_metrics.twv_curve(scores, correct, terms, [2, 1], 10_000.0)
  want = [
    1 - (0.5 + 1.0) / 2,  # >= 0.9: term 0 half found, term 1 missed
    1 - (0.5 + fa + 1.0) / 2,  # >= 0.8: plus a false alarm
    1 - (0.5 + fa + 0.0) / 2,  # >= 0.7: term 1 found
    1 - (0.0 + fa + 0.0) / 2,  # >= 0.6: everything found, one false alarm
  ]
  assert curve.thresholds.tolist() == scores
  assert curve.twv == pytest.approx(want)
  mtwv, threshold = curve.maximum()
  assert mtwv == pytest.approx(1 - fa / 2) == pytest.approx(0.949995, abs=1e-6)
  assert threshold == 0.6
  assert curve.at(0.75) == pytest.approx(want[1])  # hits scoring >= 0.75
  assert curve.at(0.95) == 0.0  # nothing detected
  # Equal scores are one threshold: both hits count together.
  tied = std_metrics.twv_curve([0.5, 0.5], [True, False], [0, 0], [1], 1000.0)
  assert tied.thresholds.tolist() == [0.5]
  assert tied.twv == pytest.approx([1 - (0 + 999.9 / 999) / 1])


def test_mtwv_is_zero_when_every_threshold_loses():
  # A false alarm costs beta / (T - N) = 999.9 / 99 per term: far more than a hit gains.
  curve = std_metrics.twv_curve([0.9, 0.8], [False, True], [0, 0], [1], 100.0)
  assert curve.maximum() == (0.0, float('inf'))


def test_atwv_takes_each_half_its_threshold_from_the_other():
  # Terms 0 and 2 (fold 0) and 1 and 3 (fold 1): every true hit scores 0.9, false alarms 0.5.
  scores = [0.9, 0.5, 0.9, 0.5, 0.9, 0.9]
  correct = [True, False, True, False, True, True]
  terms = [0, 0, 1, 1, 2, 3]
  out = std_metrics.atwv_two_fold(scores, correct, terms, [1, 1, 1, 1], 10_000.0)
  assert out['thresholds'] == [0.9, 0.9]
  assert out['atwv'] == pytest.approx(1.0)


def test_precision_recall_pools_terms_by_score():
  precision, recall = std_metrics.precision_recall([0.2, 0.9, 0.5], [True, True, False], 4)
  assert precision.tolist() == pytest.approx([1.0, 0.5, 2 / 3])
  assert recall.tolist() == pytest.approx([0.25, 0.25, 0.5])


def test_word_spans_and_occurrences():
  phone_times = np.array([[0.1, 0.2], [0.2, 0.3], [0.35, 0.5], [0.5, 0.6], [0.6, 0.9]])
  spans = std_corpus.word_spans(phone_times, np.array([0, 0, 1, 2, 2]))
  np.testing.assert_allclose(spans, [[0.1, 0.3], [0.35, 0.5], [0.5, 0.9]])
  words = [('ba', 0.1, 0.3), ('do', 0.35, 0.5), ('ba', 0.5, 0.9), ('do', 1.0, 1.2)]
  assert std_corpus.find_occurrences(words, ('ba', 'do'), 'r') == [
    ('r', 0.1, 0.5),
    ('r', 0.5, 1.2),
  ]
  assert std_corpus.find_occurrences(words, ('do',), 'r') == [('r', 0.35, 0.5), ('r', 1.0, 1.2)]
