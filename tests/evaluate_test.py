"""evaluate.evaluate_workdir end to end on the tiny checkpoint of tokenizer_test.py: report files,
the documented report.json keys with finite numbers, the calibration the tokenizer then uses, and
the checkpoint's model/front end winning over the caller's config."""

import json
import logging
import math
import os
import shutil

import numpy as np
import pytest
import tokenizer_test

from configs import default as default_config
from pairalign_jax import evaluate
from pairalign_jax.evaluation import report as report_lib
from pairalign_jax.tokenizer import decoding_options
from pairalign_jax.tokenizer import Tokenizer

# vq_groups: the tiny config has targets.code_groups > 0
NAMES = ('pairalign', 'vq', 'kmeans', 'vq_groups', 'mfcc_kmeans', 'mfcc_kmeans_matched')
EVAL_SET_KEYS = {
  'split',
  'num_items',
  'num_rotations',
  'num_queries',
  'num_segments',
  'segment_seconds',
  'sample_rate',
  'sweep_items',
  'sweep_shifts_ms',
  'ties',
}
# report.py's docstring: the stable keys of every tokenizer's block.
SCALARS = (
  'tokens_per_second',
  'vocab_usage',
  'unigram_perplexity',
  'unique_ratio',
  'length_mean',
  'length_std',
  'length_min',
  'length_median',
  'length_max',
  'cross_view_ned',
  'unrelated_ned',
  'ned_gap',
  'recall_at_1',
  'recall_at_5',
  'mrr',
  'archive_tokens',
  'num_queries',
  'archive_size',
  'tokenize_seconds',
  'segments_per_second',
)
TOKENIZER_KEYS = set(SCALARS) | {
  'termination_rate',
  'recall_vs_archive_size',
  'sweep',
  'phone',
  'lengths',
  'recall_at_1_ci95',
  'num_rotations',
  'rotations',
  'per_item',
}
RECALL_KEYS = {'sizes', 'recall_at_1', 'recall_at_5', 'mrr', 'num_queries'}
SWEEP_KEYS = {
  'shifts_ms',
  'edit_distance',
  'normalized_edit_distance',
  'bigram_jaccard',
  'mean_length',
  'length_std',
  'length_range',
  'mean_edit_distance',
  'mean_normalized_edit_distance',
  'local_overlap',
  'num_items',
}
PHONE_KEYS = {'token_purity', 'phone_purity', 'nmi', 'unassigned_rate', 'num_tokens', 'num_phones'}
HEADLINE_KEYS = {
  'primary',
  'reference',
  'archive_tokens_ratio',
  'recall_at_1_difference',
  'archive_tokens_ratio_ci95',
  'recall_at_1_difference_ci95',
  'ned_to_targets',  # the tiny model has code groups, so 'vq_groups' is evaluated
  'edits_to_targets',
  'comparisons',
}
SHIFTS = (0, 40)


def eval_settings(config):
  """Tiny evaluation on the validation split: 3 items read by 3 speakers, each speaker the archive
  once (2 queries per item and rotation), 1 sweep item, k-means on 3 training segments."""
  config.eval.update(
    num_items=3,
    queries_per_item=2,
    batch_size=4,
    sweep_items=1,
    sweep_shifts_ms=SHIFTS,
    kmeans_clusters=4,
    kmeans_train_segments=3,
    kmeans_max_frames=600,
    archive_rotations=-1,
    split='validation',
  )
  config.data.synthetic.update(
    num_train_speakers=2,
    num_heldout_speakers=3,
    num_train_sentences=3,
    num_heldout_sentences=3,
    num_validation_speakers=3,
    num_validation_sentences=3,
    train_size=16,
  )
  return config


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A private copy of the tiny run (evaluation writes calibration.json into it), evaluated with
  a caller config whose model and front end are configs/default.py's, not the checkpoint's."""
  src = tokenizer_test.tiny_workdir(tmp_path_factory)
  workdir = str(tmp_path_factory.mktemp('eval_run') / 'run')
  shutil.copytree(src, workdir)
  outdir = str(tmp_path_factory.mktemp('eval_out'))
  user = eval_settings(default_config.get_config())
  assert user.frontend.n_mels != tokenizer_test.tiny_config().frontend.n_mels
  report = evaluate.evaluate_workdir(workdir, config=user, outdir=outdir)
  with open(os.path.join(outdir, 'report.json')) as f:
    data = json.load(f)
  return {'workdir': workdir, 'outdir': outdir, 'report': report, 'json': data}


def _finite(x):
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def test_files_are_written(run):
  out, workdir = run['outdir'], run['workdir']
  for name in ('report.json', 'report.md') + report_lib.PLOTS + (report_lib.EXAMPLE_PLOT,):
    path = os.path.join(out, name)
    assert os.path.getsize(path) > 0, name
    if name.endswith('.png'):
      with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  # The report goes to outdir; the calibration always next to the checkpoints.
  assert os.path.exists(os.path.join(workdir, 'calibration.json'))
  assert not os.path.exists(os.path.join(out, 'calibration.json'))
  assert not os.path.exists(os.path.join(workdir, 'report.json'))
  md = open(os.path.join(out, 'report.md')).read()
  for text in (
    '## Headline',
    '| metric | PairAlign | VQ | MFCC k-means |',
    '| recall@1 |',
    '| recall@1 95% interval (items) |',
    '| against |',
    'sweep.png',
  ):
    assert text in md


def test_report_json_has_the_documented_keys_and_finite_numbers(run):
  data = run['json']
  assert {'eval_set', 'tokenizers', 'headline', 'example', 'length_control', 'checkpoint'} <= set(
    data
  )
  es = data['eval_set']
  assert set(es) == EVAL_SET_KEYS
  assert (es['num_items'], es['num_rotations'], es['num_queries'], es['num_segments']) == (
    3,
    3,
    18,
    9,
  )
  assert es['split'] == 'validation'
  assert run['report']['example']['id'].startswith('validation-spk000-')
  assert es['sweep_shifts_ms'] == list(SHIFTS) and es['segment_seconds'] == 3.0
  assert set(data['tokenizers']) == set(NAMES)
  for name in NAMES:
    block = data['tokenizers'][name]
    assert TOKENIZER_KEYS <= set(block), (name, TOKENIZER_KEYS - set(block))
    for key in SCALARS:
      assert _finite(block[key]), (name, key, block[key])
    assert len(block['lengths']) == es['num_segments']
    assert block['length_mean'] == pytest.approx(np.mean(block['lengths']))
    assert block['tokens_per_second'] == pytest.approx(np.mean(block['lengths']) / 3.0)
    assert 0 <= block['recall_at_1'] <= block['recall_at_5'] <= 1
    assert set(block['recall_vs_archive_size']) == RECALL_KEYS
    assert set(block['sweep']) == SWEEP_KEYS and block['sweep']['shifts_ms'] == list(SHIFTS)
    assert all(_finite(v) for v in block['sweep']['normalized_edit_distance'])
    assert block['phone'] is not None and PHONE_KEYS <= set(block['phone'])  # synthetic phones
  pa, vq = data['tokenizers']['pairalign'], data['tokenizers']['vq']
  assert pa['length_max'] <= tokenizer_test.L
  assert 0 <= pa['termination_rate'] <= 1 and vq['termination_rate'] == 1.0
  assert data['tokenizers']['kmeans']['termination_rate'] is None  # not a decoder
  h = data['headline']
  assert set(h) == HEADLINE_KEYS and (h['primary'], h['reference']) == ('pairalign', 'vq')
  assert h['archive_tokens_ratio'] == pytest.approx(pa['archive_tokens'] / vq['archive_tokens'])
  assert 0.0 <= h['ned_to_targets'] <= 1.0
  assert h['recall_at_1_difference'] == pytest.approx(pa['recall_at_1'] - vq['recall_at_1'])
  lo, hi = h['recall_at_1_difference_ci95']
  assert lo <= h['recall_at_1_difference'] + 1e-9 and h['recall_at_1_difference'] <= hi + 1e-9
  assert set(h['comparisons']) == set(NAMES) - {'pairalign'}
  assert h['comparisons']['vq']['archive_tokens_ratio'] == h['archive_tokens_ratio']
  mfcc = data['tokenizers']['mfcc_kmeans']
  assert mfcc['termination_rate'] is None and mfcc['vocab_usage'] <= 1.0
  assert data['tokenizers']['mfcc_kmeans_matched']['tokens_per_second'] < mfcc['tokens_per_second']
  assert data['checkpoint']['step'] == tokenizer_test.STEPS[-1]
  ex = data['example']
  assert 'log_mel' not in ex and set(ex['tokens']) == set(NAMES)
  assert all(len(ex['tokens'][n]) == len(ex['times'][n]) for n in NAMES)


def test_model_and_front_end_come_from_the_checkpoint(run):
  # The caller's config had 80 mel bands and the default model; the checkpoint's 40 were used.
  assert np.asarray(run['report']['example']['log_mel']).shape == (300, 40)
  lc = run['json']['length_control']
  assert lc['trained_eos_bias'] == pytest.approx(tokenizer_test.TRAINED_EOS_BIAS)
  assert lc['eval_eos_bias'] == pytest.approx(tokenizer_test.TRAINED_EOS_BIAS)  # eval.eos_bias 0
  assert lc['target_rate'] == pytest.approx(tokenizer_test.tiny_config().length.target_rate)


def test_calibration_is_written_and_used_by_target_rate(run):
  with open(os.path.join(run['workdir'], 'calibration.json')) as f:
    cal = json.load(f)
  assert cal['step'] == tokenizer_test.STEPS[-1] and cal['segments'] == 9
  table = [tuple(x) for x in cal['eos_bias_to_rate']]
  biases = [b for b, _ in table]
  assert biases == pytest.approx(
    [tokenizer_test.TRAINED_EOS_BIAS + o for o in evaluate.CALIBRATION_OFFSETS]
  )
  rates = np.array([r for _, r in table])
  assert (
    np.all(np.isfinite(rates)) and np.all(rates >= 0) and np.all(rates <= tokenizer_test.L / 3.0)
  )
  assert np.all(np.diff(rates) <= 1e-9)  # a larger EOS bias never lengthens
  assert rates[0] > rates[-1]  # and the table is not flat
  assert table == [tuple(x) for x in run['json']['length_control']['eos_bias_to_rate']]

  tok = Tokenizer.from_checkpoint(run['workdir'], batch_size=4)
  assert tok.calibration == sorted(table)
  waves = tokenizer_test.make_waves(4)
  for b, r in table:
    got = tok.eos_bias_for_rate(r)
    # A calibrated rate maps back to a bias measured at that rate (ties: any of them).
    assert any(abs(got - b2) < 1e-6 and r2 == r for b2, r2 in table)
  mid = 0.5 * (rates[0] + rates[-1])
  bias = tok.eos_bias_for_rate(mid)
  assert biases[0] <= bias <= biases[-1]
  a = tok.tokenize(waves, target_rate=mid)
  b = tok.tokenize(waves, eos_bias=bias)
  assert a.tokens == b.tokens
  # The calibration is also found from the step folder.
  step_tok = Tokenizer.from_checkpoint(
    os.path.join(run['workdir'], 'checkpoints', str(tokenizer_test.STEPS[-1]))
  )
  assert step_tok.calibration == tok.calibration


def test_student_evaluation_loads_the_student_and_keeps_the_teachers_calibration(
  run, tmp_path, monkeypatch
):
  cal_path = os.path.join(run['workdir'], 'calibration.json')
  with open(cal_path, 'rb') as f:
    before = f.read()
  loaded = []
  original = Tokenizer.from_checkpoint.__func__

  def spy(cls, *args, **kwargs):
    loaded.append(kwargs.get('use_teacher', True))
    return original(cls, *args, **kwargs)

  monkeypatch.setattr(Tokenizer, 'from_checkpoint', classmethod(spy))
  user = eval_settings(default_config.get_config())
  report = evaluate.evaluate_workdir(
    run['workdir'], config=user, outdir=str(tmp_path), params='student'
  )
  assert loaded == [False]
  assert report['checkpoint']['params'] == 'student'
  with open(os.path.join(tmp_path, 'report.json')) as f:
    assert json.load(f)['checkpoint']['params'] == 'student'
  with open(cal_path, 'rb') as f:
    assert f.read() == before  # the shipped (teacher) tokenizer's calibration is untouched
  assert run['json']['checkpoint']['params'] == 'teacher'
  with pytest.raises(ValueError, match="params must be 'teacher' or 'student'"):
    evaluate.evaluate_workdir(run['workdir'], config=user, outdir=str(tmp_path), params='ema')


def test_a_subset_of_tokenizers_fits_no_baseline_and_scores_as_the_full_report(
  run, tmp_path, monkeypatch
):
  """--tokenizers=pairalign,vq_groups: only those two are evaluated, no baseline is fitted, and
  their figures are the full report's; an aligned decoding setting reaches the tokenizer."""

  def not_fitted(*args, **kwargs):
    raise AssertionError('a baseline was fitted')

  monkeypatch.setattr(evaluate, 'fit_kmeans_baseline', not_fitted)
  monkeypatch.setattr(evaluate, 'fit_mfcc_baselines', not_fitted)
  workdir = str(tmp_path / 'run')  # a copy: evaluating rewrites its calibration.json
  shutil.copytree(run['workdir'], workdir)
  user = eval_settings(default_config.get_config())
  report = evaluate.evaluate_workdir(
    workdir, config=user, outdir=str(tmp_path), tokenizers=['pairalign', 'vq_groups']
  )
  assert set(report['tokenizers']) == {'pairalign', 'vq_groups'}
  for name in ('pairalign', 'vq_groups'):
    for key in ('recall_at_1', 'tokens_per_second', 'archive_tokens', 'mrr'):
      assert report['tokenizers'][name][key] == pytest.approx(run['json']['tokenizers'][name][key])
  assert report['headline']['archive_tokens_ratio'] is None  # no VQ stage to compare with
  assert report['length_control']['align_frames'] == 0
  user.eval.align_frames = 2
  aligned = evaluate.evaluate_workdir(
    workdir, config=user, outdir=str(tmp_path), tokenizers=['pairalign']
  )
  assert aligned['length_control']['align_frames'] == 2
  with pytest.raises(ValueError, match='tokenizers must be a non-empty subset'):
    evaluate.evaluate_workdir(workdir, config=user, tokenizers=['mfcc'])


def test_a_beam_drops_the_greedy_only_decoding_options(caplog):
  ev = default_config.get_config().eval
  ev.update(align_frames=4, choose_from_runs=True, end_at_last_run=True)
  assert decoding_options(ev, ev.beam_size) == {
    'snap_times': False,
    'align_frames': 4,
    'choose_from_runs': True,
    'end_at_last_run': True,
  }
  ev.beam_size = 4  # e.g. configs/small_corpus.py with --config.eval.beam_size=4
  with caplog.at_level(logging.INFO):
    options = decoding_options(ev, ev.beam_size)
  assert options == {
    'snap_times': False,
    'align_frames': 0,
    'choose_from_runs': False,
    'end_at_last_run': False,
  }
  assert any('greedy-only decoding options' in r.getMessage() for r in caplog.records)


def test_eval_config_keeps_the_checkpoint_model():
  ckpt = tokenizer_test.tiny_config()
  user = eval_settings(default_config.get_config())
  user.seed = 11
  merged = evaluate._eval_config(ckpt, user)
  assert merged.model.to_dict() == ckpt.model.to_dict()
  assert merged.frontend.to_dict() == ckpt.frontend.to_dict()
  assert merged.audio.to_dict() == ckpt.audio.to_dict()
  assert merged.eval.to_dict() == user.eval.to_dict() and merged.seed == 11
  assert merged.data.synthetic.to_dict() == user.data.synthetic.to_dict()


def test_training_stops_at_start_when_the_evaluation_split_is_too_small(tmp_path):
  soundfile = pytest.importorskip('soundfile')
  from pairalign_jax import train

  data = tmp_path / 'audio'
  for i in range(3):  # three speakers, one file each: the held-out half-splits are too small
    (data / f'spk{i}').mkdir(parents=True)
    soundfile.write(str(data / f'spk{i}' / 'a.wav'), 0.1 * np.ones(8000, np.float32), 16000)
  config = tokenizer_test.tiny_config()
  config.data.source = 'folder'
  config.data.path = str(data)
  config.data.heldout_fraction = 0.3
  config.batch_size = 8  # the tests' 8 host devices
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError, match='heldout_fraction|eval_path'):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()  # nothing trained, nothing written


def test_an_evaluation_split_of_one_shared_text_is_refused_at_start(tmp_path):
  """A manifest whose evaluation rows all carry one text (one content item): no archive of two
  items can be built, which the start-up check says before any training."""
  soundfile = pytest.importorskip('soundfile')
  rows = ['path\tspeaker\ttext']
  for i in range(4):
    path = tmp_path / f'{i}.wav'
    soundfile.write(str(path), 0.1 * np.sin(np.arange(8000) * (0.1 + 0.01 * i)), 16000)
    rows.append(f'{path}\tspk{i}\tthe same sentence')
  manifest = tmp_path / 'eval.tsv'
  manifest.write_text('\n'.join(rows) + '\n')
  config = tokenizer_test.tiny_config()
  config.data.source = 'manifest'
  config.data.eval_path = str(manifest)
  with pytest.raises(ValueError, match='1 content item'):
    evaluate.check_evaluation_source(config, 'test')
  manifest.write_text(manifest.read_text().replace('the same sentence\n', 'a sentence\n', 2))
  evaluate.check_evaluation_source(config, 'test')  # two items, each read twice


def test_train_split_evaluates_the_training_recordings(run, tmp_path):
  # The fit diagnostic: the archive and queries are training recordings (a speaker x sentence
  # grid), every speaker the archive once, as on the held-out splits.
  user = eval_settings(default_config.get_config())
  user.eval.split = 'train'
  user.data.synthetic.update(train_grid=True, num_train_speakers=3, num_train_sentences=3)
  report = evaluate.evaluate_workdir(run['workdir'], config=user, outdir=str(tmp_path))
  es = report['eval_set']
  assert es['split'] == 'train'
  assert (es['num_items'], es['num_rotations'], es['num_queries']) == (3, 3, 18)
  assert report['example']['id'].startswith('train-spk000-')
  user.eval.split = 'dev'
  with pytest.raises(ValueError, match="split must be one of .*'dev'"):
    evaluate.evaluate_workdir(run['workdir'], config=user, outdir=str(tmp_path))
