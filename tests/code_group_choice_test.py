"""Choosing the code grouping at the start of stage 1 (pairalign_jax/code_group_choice.py,
code_groups.candidate_groupings, the stored 'code_groups' of 'vq_stats',
Trainer.choose_code_groups).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import shared_runs
from train_test import tiny_config

from pairalign_jax import checkpointing
from pairalign_jax import code_group_choice
from pairalign_jax import code_groups
from pairalign_jax import config_validation
from pairalign_jax import evaluate
from pairalign_jax import sequences
from pairalign_jax import tokenizer as tokenizer_lib
from pairalign_jax import train
from pairalign_jax.data import pipeline
from pairalign_jax.evaluation import runner


# ------------------------------------------------------------------------- margin and choice
def test_collapsed_strings_merges_repeats_per_row():
  codes = np.array([[1, 1, 2, 2, 2, 1], [3, 3, 3, 3, 3, 3]])
  assert code_group_choice.collapsed_strings(codes) == [[1, 2, 1], [3]]
  with pytest.raises(ValueError, match=r'\[R, T\]'):
    code_group_choice.collapsed_strings(np.zeros(4, int))


def test_view_margin_on_hand_made_strings():
  # Own views identical, the other recording entirely different: own 0, other 1.
  assert code_group_choice.view_margin([[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [4, 5, 6]]) == 1.0
  # Recording 0: own distance 1/3 ([1,2,3] vs [1,2,9]), to recording 1's view ([4,5,6]) 1;
  # recording 1: own 0, to [1,2,9] 1. Margin = mean(1 - 1/3, 1 - 0) = 5/6.
  got = code_group_choice.view_margin([[1, 2, 3], [4, 5, 6]], [[1, 2, 9], [4, 5, 6]])
  assert got == pytest.approx(5 / 6)
  # Three recordings, all strings equal: no recording is told apart.
  assert code_group_choice.view_margin([[7]] * 3, [[7]] * 3) == 0.0
  with pytest.raises(ValueError, match='differ in number'):
    code_group_choice.view_margin([[1]], [[1], [2]])
  with pytest.raises(ValueError, match='at least 2'):
    code_group_choice.view_margin([[1]], [[1]])


def _views():
  """Two recordings x two views of frame codes over 4 codes: recording 0 alternates codes 0/1 in
  runs of 2, recording 1 codes 2/3; view B swaps 0<->1 (a 'speaker' difference)."""
  a = np.array([[0, 0, 1, 1, 0, 0, 1, 1], [2, 2, 3, 3, 2, 2, 3, 3]])
  b = np.array([[1, 1, 0, 0, 1, 1, 0, 0], [2, 2, 3, 3, 2, 2, 3, 3]])
  return a, b


def test_choose_grouping_keeps_the_largest_margin_within_the_rate_budget():
  a, b = _views()
  candidates = np.array(
    [
      [0, 0, 0, 0],  # everything one group: both recordings '0', margin 0
      [0, 0, 1, 1],  # the speaker-invariant one: '0' vs '1', margin 1
      # every code its own group: recording 0's views 0101 / 1010 are 2 edits apart (0.5),
      # margin mean(1 - 0.5, 1 - 0) = 0.75
      [0, 1, 2, 3],
    ]
  )
  kwargs = dict(min_run_frames=1, segment_seconds=1.0)
  choice = code_group_choice.choose_grouping(candidates, a, b, max_rate_ratio=1.0, **kwargs)
  np.testing.assert_allclose(choice.scores, [0.0, 1.0, 0.75])
  assert choice.measure == 'view_margin' and choice.as_dict()['view_margin'] == [0.0, 1.0, 0.75]
  np.testing.assert_allclose(choice.rates, [1.0, 1.0, 4.0])
  assert choice.vq_rate == 4.0 and choice.index == 1
  assert choice.as_dict()['chosen'] == 1 and choice.as_dict()['within_budget'] == [True] * 3
  # A budget of 1/8 of the VQ rate (0.5 tokens/s) fits nothing: the shortest (the first on ties).
  choice = code_group_choice.choose_grouping(candidates, a, b, max_rate_ratio=0.125, **kwargs)
  assert not choice.fits.any() and choice.index == 0
  # Only the per-code grouping is too long at half the VQ rate: the same choice.
  choice = code_group_choice.choose_grouping(candidates, a, b, max_rate_ratio=0.5, **kwargs)
  assert choice.fits.tolist() == [True, True, False] and choice.index == 1
  with pytest.raises(ValueError, match='both be'):
    code_group_choice.choose_grouping(candidates, a, b[:1], max_rate_ratio=1.0, **kwargs)


def test_choose_grouping_by_recall_keeps_the_grouping_whose_strings_retrieve_best():
  # Two sentences read by two speakers, each reading its own codes: sentence 0 is codes 0 / 1,
  # sentence 1 codes 2 / 3 (speaker A / B). Rows: A0, A1, B0, B1; each speaker is the archive once.
  codes = np.repeat(np.array([[0], [2], [1], [3]]), 4, axis=1)  # [4 segments, 4 frames]
  rotations = [
    runner.Rotation(np.array([0, 1]), np.array([2, 3]), np.array([0, 1])),
    runner.Rotation(np.array([2, 3]), np.array([0, 1]), np.array([0, 1])),
  ]
  candidates = np.array(
    [
      [0, 0, 0, 0],  # one string for everything: every query ties between two items, 1/2
      [0, 0, 1, 1],  # the speaker-invariant grouping: every query finds its sentence
      [0, 1, 2, 3],  # every code its own group: all strings 1 apart, 1/2 again
      [0, 1, 1, 0],  # speaker A's sentence 0 reads as speaker B's sentence 1: every query misses
    ]
  )
  kwargs = dict(min_run_frames=1, segment_seconds=1.0)
  choice = code_group_choice.choose_grouping_by_recall(
    candidates, codes, rotations, max_rate_ratio=1.0, **kwargs
  )
  np.testing.assert_allclose(choice.scores, [0.5, 1.0, 0.5, 0.0])
  np.testing.assert_allclose(choice.rates, 1.0)
  assert choice.index == 1 and choice.measure == 'validation_recall' and choice.vq_rate == 1.0
  assert choice.as_dict()['validation_recall'] == [0.5, 1.0, 0.5, 0.0]
  # Ties: the lower index (here the farthest-point slot, 0) among equal recalls.
  choice = code_group_choice.choose_grouping_by_recall(
    candidates[[0, 2]], codes, rotations, max_rate_ratio=1.0, **kwargs
  )
  assert choice.index == 0
  with pytest.raises(ValueError, match=r'\[S, T\]'):
    code_group_choice.choose_grouping_by_recall(
      candidates, codes[0], rotations, max_rate_ratio=1.0, **kwargs
    )


def test_choose_grouping_merges_short_runs_as_the_targets_do():
  a = np.array([[0, 0, 0, 1, 0, 0, 0, 0], [2, 2, 2, 2, 3, 3, 3, 3]])  # a 1-frame flicker
  candidates = np.array([[0, 1, 2, 3]])
  choice = code_group_choice.choose_grouping(
    candidates, a, a, min_run_frames=2, segment_seconds=1.0, max_rate_ratio=1.0
  )
  pruned = np.asarray(sequences.prune_short_runs(jnp.asarray(a), 2))
  want = np.mean([len(s) for s in code_group_choice.collapsed_strings(pruned)])
  assert choice.rates[0] == want == 1.5  # '0' and '2 3'


# ------------------------------------------------------------------------- candidate groupings
def test_candidate_groupings_start_with_the_farthest_point_one_and_are_reproducible():
  rng = np.random.default_rng(0)
  codebook = rng.normal(size=(32, 8))
  codebook = jnp.asarray(codebook / np.linalg.norm(codebook, axis=1, keepdims=True), jnp.float32)
  counts = jnp.asarray(rng.uniform(0, 5, 32) * (rng.uniform(size=32) > 0.3), jnp.float32)
  key = jax.random.PRNGKey(3)
  cands = code_groups.candidate_groupings(codebook, counts, key, num_groups=4, num_candidates=5)
  assert cands.shape == (5, 32) and cands.dtype == jnp.int32
  assert int(cands.min()) >= 0 and int(cands.max()) < 4
  np.testing.assert_array_equal(
    cands[0], code_groups.group_codebook(codebook, counts, num_groups=4)
  )
  again = code_groups.candidate_groupings(codebook, counts, key, num_groups=4, num_candidates=5)
  np.testing.assert_array_equal(cands, again)
  assert len({tuple(np.asarray(c)) for c in cands}) > 1  # random starts find other solutions
  one = code_groups.candidate_groupings(codebook, counts, key, num_groups=4, num_candidates=1)
  np.testing.assert_array_equal(one, cands[:1])


def test_groups_from_vq_stats_returns_a_stored_grouping_once_chosen():
  rng = np.random.default_rng(1)
  codebook = rng.normal(size=(8, 4))
  codebook = jnp.asarray(codebook / np.linalg.norm(codebook, axis=1, keepdims=True), jnp.float32)
  stats = {'vq': {'codebook': codebook, 'cluster_size': jnp.ones(8)}}
  kmeans = code_groups.group_codebook(codebook, jnp.ones(8), num_groups=3)
  unchosen = {'vq': {**stats['vq'], 'code_groups': jnp.full((8,), -1, jnp.int32)}}
  stored = jnp.asarray([2, 2, 1, 0, 1, 0, 2, 1], jnp.int32)
  chosen = {'vq': {**stats['vq'], 'code_groups': stored}}
  for fn in (
    code_groups.groups_from_vq_stats,
    jax.jit(code_groups.groups_from_vq_stats, static_argnums=1),
  ):
    np.testing.assert_array_equal(fn(stats, 3), kmeans)
    np.testing.assert_array_equal(fn(unchosen, 3), kmeans)
    np.testing.assert_array_equal(fn(chosen, 3), stored)


# ------------------------------------------------------------------------- in training
def _choice_config():
  return shared_runs.with_grouping_choice(tiny_config())


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """The session's tiny run through stages 0-1 (steps 0-3; tests/shared_runs.py) that chooses its
  grouping among 3 candidates at stage1_start = 2, after refitting its VQ stage there."""
  return shared_runs.stage1_run(tmp_path_factory)


def test_training_stores_the_chosen_grouping_at_the_start_of_stage_1(trained):
  config, workdir, state = trained
  with open(os.path.join(workdir, train.CODE_GROUPS_FILE)) as f:
    report = json.load(f)
  assert report['step'] == config.schedule.stage1_start == 2
  assert len(report['view_margin']) == len(report['tokens_per_second']) == 3
  stored = np.asarray(code_groups.vq_stats_leaf(state.vq_stats, 'code_groups'))
  assert stored.shape == (config.model.codebook_size,) and stored.min() >= 0
  assert stored.max() < config.targets.code_groups
  # The targets (and every other reader of vq_stats) use it from then on.
  np.testing.assert_array_equal(
    code_groups.groups_from_vq_stats(state.vq_stats, config.targets.code_groups), stored
  )
  # It is the candidate the report names (the codebook is frozen after stage 0, so the final
  # state's candidates are those of step 2).
  key = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x76746C), 3)[2]
  cands = code_groups.candidate_groupings(
    code_groups.vq_stats_leaf(state.vq_stats, 'codebook'),
    code_groups.vq_stats_leaf(state.vq_stats, 'cluster_size'),
    key,
    num_groups=config.targets.code_groups,
    num_candidates=3,
  )
  np.testing.assert_array_equal(cands[report['chosen']], stored)


# 'validation_recall' (slow): the test below runs that choice too, against the report's recall.
@pytest.mark.parametrize(
  'measure',
  [
    pytest.param(m, marks=pytest.mark.slow) if m == 'validation_recall' else m
    for m in code_group_choice.MEASURES
  ],
)
def test_the_choice_is_a_pure_function_of_config_and_variables(trained, measure):
  _, _, state = trained
  config = shared_runs.stage1_config()
  config.targets.group_choice = measure
  variables = {'params': state.teacher_params, 'vq_stats': state.vq_stats}
  model = train.make_model(config)
  groups, choice = code_group_choice.choose_code_groups(model, variables, config)
  again, choice_again = code_group_choice.choose_code_groups(model, variables, config)
  np.testing.assert_array_equal(groups, again)
  np.testing.assert_array_equal(choice.scores, choice_again.scores)
  assert choice.index == choice_again.index and groups.dtype == np.int32
  assert choice.measure == measure and len(choice.scores) == 3
  assert choice.as_dict()['measure'] == measure


def test_the_choice_by_validation_recall_measures_what_the_report_would(trained):
  _, _, state = trained
  config = shared_runs.stage1_config()
  config.targets.group_choice = 'validation_recall'
  variables = {'params': state.teacher_params, 'vq_stats': state.vq_stats}
  groups, choice = code_group_choice.choose_code_groups(train.make_model(config), variables, config)

  # The kept grouping's recall@1 is the one the report gives its targets (`vq_groups`) on the
  # validation split, through the tokenizer and the evaluation runner.
  def put(path, leaf):
    if code_groups.CHOSEN not in jax.tree_util.keystr(path):
      return leaf
    return jnp.asarray(groups, leaf.dtype)

  tok = tokenizer_lib.Tokenizer(
    config,
    {
      'params': state.teacher_params,
      'vq_stats': jax.tree_util.tree_map_with_path(put, state.vq_stats),
    },
  )
  eval_set = evaluate.build_split_eval_set(config, split='validation', sweep_items=1)
  report, _ = runner.evaluate_tokenizer(
    tok.vq_group_tokenize, eval_set, codebook_size=config.targets.code_groups
  )
  assert choice.scores[choice.index] == pytest.approx(report['recall_at_1'])
  assert choice.rates[choice.index] == pytest.approx(report['tokens_per_second'])


def test_a_validation_split_too_small_for_the_choice_fails_before_training(tmp_path, monkeypatch):
  config = _choice_config()
  config.targets.group_choice = 'validation_recall'
  config.eval.split = 'test'  # the report's split has records; the choice's has none
  make_source = pipeline.make_source
  monkeypatch.setattr(
    pipeline,
    'make_source',
    lambda cfg, split, **kw: [] if split == 'validation' else make_source(cfg, split, **kw),
  )
  with pytest.raises(ValueError, match="the 'validation' split .* has 0 record"):
    train.train_and_evaluate(config, str(tmp_path), run_evaluation=True)
  assert not os.path.exists(os.path.join(tmp_path, 'checkpoints'))


def test_a_loaded_tokenizer_uses_the_stored_grouping(trained):
  config, workdir, state = trained
  tok = tokenizer_lib.Tokenizer.from_checkpoint(workdir)
  waves = np.random.default_rng(0).normal(0, 0.1, (2, 16_000)).astype(np.float32)
  frames = tok.vq_group_frames(waves, 16_000)
  codes = tok._frame_codes(tok._vq_codes, waves, 16_000)
  stored = np.asarray(code_groups.vq_stats_leaf(state.vq_stats, 'code_groups'))
  want = np.asarray(
    sequences.prune_short_runs(jnp.asarray(stored[codes]), tok.config.targets.min_run_frames)
  )
  np.testing.assert_array_equal(frames, want)


def test_resume_after_the_choice_keeps_it_and_one_at_the_choice_redoes_it(trained, tmp_path):
  config, workdir, state = trained
  assert train.chooses_code_groups_at(2, config)
  assert not train.chooses_code_groups_at(1, config) and not train.chooses_code_groups_at(3, config)
  config.targets.group_candidates = 1
  assert not train.chooses_code_groups_at(2, config)
  # The checkpoint of step 2 was saved before the choice (-1), that of step 4 after it.
  config = shared_runs.stage1_config()
  trainer = train.Trainer(config)
  for step, chosen in ((2, False), (4, True)):
    restored = checkpointing.restore_params(
      checkpointing.step_dir(workdir, step),
      abstract={'vq_stats': trainer.abstract_state.vq_stats},
      items=('vq_stats',),
    )
    stored = np.asarray(code_groups.vq_stats_leaf(restored['vq_stats'], 'code_groups'))
    assert (stored.min() >= 0) == chosen, step


def test_config_validation_of_the_choice_keys():
  def check(match, **targets):
    config = _choice_config()
    config.targets.update(targets)
    with pytest.raises(config_validation.ConfigError, match=match):
      config_validation.validate_config(config)

  check('group_candidates: must be an integer >= 1', group_candidates=0)
  check('needs config.targets.code_groups > 0', code_groups=0)
  check('group_choice_recordings: must be an integer >= 2', group_choice_recordings=1)
  check(r'group_choice_max_rate_ratio: must be in \(0, 1\]', group_choice_max_rate_ratio=0.0)
  check("group_choice: must be 'view_margin' or 'validation_recall'", group_choice='recall')
  config = _choice_config()
  config.schedule.update(stage1_start=0, stage2_start=4)
  with pytest.raises(config_validation.ConfigError, match='needs config.schedule.stage1_start > 0'):
    config_validation.validate_config(config)
  config_validation.validate_config(_choice_config())
