"""One rule turns frame codes into token strings: the host form (`token_strings`) used by the
tokenizer and the baselines equals the in-graph form (`sequences.collapse_runs`) of the targets."""

import dataclasses

import numpy as np
import pytest

from pairalign_jax import sequences
from pairalign_jax import token_strings
from pairalign_jax import vocab as vocab_lib
from pairalign_jax.evaluation import runner


def test_collapse_repeats():
  tokens, centres = token_strings.collapse_repeats(np.array([3, 3, 5, 5, 5, 3, 7]))
  assert tokens.tolist() == [3, 5, 3, 7]
  assert centres.tolist() == [0.5, 3.0, 5.0, 6.0]
  tokens, centres = token_strings.collapse_repeats(np.zeros([0], np.int32))
  assert tokens.size == 0 and centres.size == 0
  with pytest.raises(ValueError, match=r'codes \[T\]'):
    token_strings.collapse_repeats(np.zeros([2, 3], np.int32))


def test_strings_from_frame_codes_times_are_run_centres():
  out = token_strings.strings_from_frame_codes(np.array([[1, 1, 2, 2, 2, 1], [4] * 6]), 0.02)
  assert out.tokens == [[1, 2, 1], [4]]
  np.testing.assert_allclose(out.times[0], [0.02, 0.07, 0.11], atol=1e-7)
  np.testing.assert_allclose(out.times[1], [0.06], atol=1e-7)
  assert out.terminated.tolist() == [True, True] and out.raw_times is out.times
  with pytest.raises(ValueError, match=r'\[N, T\]'):
    token_strings.strings_from_frame_codes(np.zeros(4, np.int32), 0.02)
  with pytest.raises(ValueError, match='frame_seconds'):
    token_strings.strings_from_frame_codes(np.zeros((1, 4), np.int32), 0.0)


def test_strings_from_frame_codes_end_times_are_run_ends():
  out = token_strings.strings_from_frame_codes(
    np.array([[1, 1, 2, 2, 2, 1], [4] * 6]), 0.02, time_anchor='end'
  )
  assert out.tokens == [[1, 2, 1], [4]]
  np.testing.assert_allclose(out.times[0], [0.03, 0.09, 0.11], atol=1e-7)
  np.testing.assert_allclose(out.times[1], [0.11], atol=1e-7)
  with pytest.raises(ValueError, match='time_anchor'):
    token_strings.strings_from_frame_codes(np.zeros((1, 4), np.int32), 0.02, time_anchor='start')


@pytest.mark.parametrize('time_anchor', ['centre', 'end'])
def test_host_collapse_equals_in_graph_collapse_runs(time_anchor):
  rng = np.random.default_rng(0)
  codes = rng.integers(0, 4, size=(16, 40)).astype(np.int32)  # many short runs
  codes[3] = 2  # one run
  vocab = vocab_lib.Vocab(4)
  tokens, lengths, times, truncated = sequences.collapse_runs(
    codes, 0.02, max_len=codes.shape[1] + 1, vocab=vocab, time_anchor=time_anchor
  )
  out = token_strings.strings_from_frame_codes(codes, 0.02, time_anchor=time_anchor)
  assert not np.asarray(truncated).any()
  for i in range(codes.shape[0]):
    n = int(lengths[i])
    assert out.tokens[i] == np.asarray(tokens[i, :n]).tolist()
    np.testing.assert_allclose(out.times[i], np.asarray(times[i, :n]), atol=1e-6)


def test_one_output_type_for_tokenizer_and_evaluation():
  from pairalign_jax import tokenizer

  assert tokenizer.TokenizerOutput is token_strings.TokenizerOutput
  assert runner.TokenizerOutput is token_strings.TokenizerOutput
  fields = [f.name for f in dataclasses.fields(token_strings.TokenizerOutput)]
  assert fields == ['tokens', 'times', 'terminated', 'raw_times']
