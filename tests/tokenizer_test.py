"""The analysis API (pairalign_jax.tokenizer): loading, batching, input handling, length control,
scoring, VQ strings and long audio, on a tiny checkpoint written once per test session.

The checkpoint is what `train.Trainer` initializes and `checkpointing.Checkpointer` saves, with
the decoder's weights scaled up (`SHARPEN`) so that the strings depend on the audio and vary in
length, and a non-zero trained EOS bias. Front end and model differ from configs/default.py
(40 mel bands, K = 16, L = 16), so anything that read the defaults instead of the checkpoint's
config would fail. `tiny_workdir(tmp_path_factory)` builds it once for every module that asks.
(The real training loop writing a checkpoint the tokenizer loads is the slow test at the end.)
"""

import copy
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import shared_runs
import soxr

from configs import default as default_config
from pairalign_jax import checkpointing
from pairalign_jax import code_groups
from pairalign_jax import decode
from pairalign_jax import frontend
from pairalign_jax import sequences
from pairalign_jax import sharding
from pairalign_jax import token_strings
from pairalign_jax import train
from pairalign_jax.tokenizer import Tokenizer

SR = 16_000
SEG = 48_000  # 3 s
K, L = 16, 16
TRAINED_EOS_BIAS = 2.0  # stored in the newest checkpoint (step 7)
OLD_EOS_BIAS = -1.0  # stored in the older one (step 3)
SHARPEN = 3.0  # kernels/embeddings x3: input-dependent strings of varied length
STEPS = (3, 7)


# ------------------------------------------------------------------------------ the checkpoint
def tiny_config():
  c = default_config.get_config()
  c.seed = 0
  c.batch_size = 4
  c.num_train_steps = 8
  c.checkpoint.async_save = False
  c.model.update(
    d_model=32,
    num_heads=2,
    mlp_dim=64,
    enc_layers=1,
    dec_layers=1,
    codebook_size=K,
    code_dim=8,
    max_len=L,
    recon_channels=16,
    dropout_rate=0.0,
  )
  c.frontend.n_mels = 40
  c.targets.code_groups = 4
  c.length.target_rate = 4.0  # 4 tokens/s x 3 s + EOS <= L
  c.data.synthetic.update(
    num_train_speakers=2,
    num_heldout_speakers=3,
    num_train_sentences=3,
    num_heldout_sentences=3,
    train_size=16,
  )
  return c


def _sharpen(tree, scale):
  def f(path, x):
    name = jax.tree_util.keystr(path)
    return x * scale if ('kernel' in name or 'embed' in name) else x

  return jax.tree_util.tree_map_with_path(f, tree)


def build_checkpoint(workdir):
  """Writes steps 3 and 7 of the tiny model into `workdir/checkpoints`; returns the config."""
  config = tiny_config()
  trainer = train.Trainer(config, sharding.make_mesh(config, devices=jax.devices()[:1]))
  state = trainer.init_state()
  state = state.replace(
    params=_sharpen(state.params, SHARPEN), teacher_params=_sharpen(state.teacher_params, SHARPEN)
  )
  with checkpointing.Checkpointer.from_config(os.path.join(workdir, 'checkpoints'), config) as ck:
    ck.save(
      STEPS[0],
      state.replace(
        step=jnp.int32(STEPS[0]),
        eos_bias=jnp.float32(OLD_EOS_BIAS),
        teacher_params=_sharpen(state.teacher_params, 0.5),
      ),
      force=True,
    )
    # The student differs from the teacher, so the use_teacher switch is visible.
    ck.save(
      STEPS[1],
      state.replace(
        step=jnp.int32(STEPS[1]),
        eos_bias=jnp.float32(TRAINED_EOS_BIAS),
        params=_sharpen(state.params, 1.1),
      ),
      force=True,
    )
    ck.wait_until_finished()
  return config


_SHARED = {}


def tiny_workdir(tmp_path_factory) -> str:
  """The session's tiny workdir (built on first use; shared by the tokenizer/CLI/evaluate tests).

  Treat it as read-only: copy it (`shutil.copytree`) before writing calibration.json or reports.
  """
  if 'workdir' not in _SHARED:  # one build for all test workers (tests/shared_runs.py)
    _SHARED['workdir'] = shared_runs.shared_workdir(tmp_path_factory, 'tiny_run', build_checkpoint)
  return _SHARED['workdir']


def make_waves(n, seed=0, seconds=3.0, sr=SR):
  """n distinct, deterministic speech-like test signals (AM harmonic tones + noise bursts)."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(round(seconds * sr))) / sr
  out = []
  for _ in range(n):
    f0 = rng.uniform(90, 250)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 6) * t + rng.uniform(0, 6))
    wave = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6)) * env
    bursts = (np.sin(2 * np.pi * rng.uniform(1, 4) * t) > 0.6) * rng.standard_normal(t.size)
    out.append((0.1 * wave + 0.05 * bursts).astype(np.float32))
  return out


@pytest.fixture(scope='session')
def workdir(tmp_path_factory):
  return tiny_workdir(tmp_path_factory)


@pytest.fixture(scope='module')
def tok(workdir):
  return Tokenizer.from_checkpoint(workdir, batch_size=4)


@pytest.fixture(scope='module')
def waves():
  return make_waves(7)


def _same_output(a, b, atol=0.0):
  assert len(a.tokens) == len(b.tokens)
  assert a.tokens == b.tokens
  np.testing.assert_array_equal(a.terminated, b.terminated)
  for x, y in zip(a.times, b.times):
    assert x.shape == y.shape
    np.testing.assert_allclose(x, y, rtol=0, atol=atol)


# ---------------------------------------------------------------------------------- loading
def test_from_checkpoint_workdir_checkpoints_folder_and_step_folder(
  workdir, tok, waves, monkeypatch
):
  ref = tok.tokenize(waves[:3])
  newest = os.path.join(workdir, 'checkpoints', str(STEPS[1]))
  monkeypatch.chdir(os.path.dirname(workdir))  # a relative path works too
  for path in (os.path.join(workdir, 'checkpoints'), newest, os.path.basename(workdir)):
    other = Tokenizer.from_checkpoint(path, batch_size=4)
    assert other.default_eos_bias == pytest.approx(TRAINED_EOS_BIAS)
    for x, y in zip(jax.tree.leaves(other.variables), jax.tree.leaves(tok.variables)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    _same_output(other.tokenize(waves[:3]), ref)
  assert tok.default_eos_bias == pytest.approx(TRAINED_EOS_BIAS)


def test_from_checkpoint_older_step_and_student_params(workdir, tok):
  old_dir = Tokenizer.from_checkpoint(os.path.join(workdir, 'checkpoints', str(STEPS[0])))
  old_arg = Tokenizer.from_checkpoint(workdir, step=STEPS[0])
  assert old_dir.default_eos_bias == old_arg.default_eos_bias == pytest.approx(OLD_EOS_BIAS)
  saved = checkpointing.restore_params(workdir, items=('params', 'teacher_params'))
  student = Tokenizer.from_checkpoint(workdir, use_teacher=False)
  for name, t in (('teacher_params', tok), ('params', student)):
    for x, y in zip(jax.tree.leaves(t.variables['params']), jax.tree.leaves(saved[name])):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  a = jax.tree.leaves(student.variables['params'])
  b = jax.tree.leaves(tok.variables['params'])
  assert any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


def test_from_checkpoint_without_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='checkpoint'):
    Tokenizer.from_checkpoint(str(tmp_path))


def test_settings_come_from_the_checkpoint_config(workdir, tok, waves):
  saved = checkpointing.read_config(workdir)
  assert tok.fcfg == frontend.FrontendConfig.from_config(saved)
  assert tok.fcfg.n_mels == 40 != default_config.get_config().frontend.n_mels
  assert (tok.vocab.codebook_size, tok.max_len, tok.sample_rate, tok.segment_samples) == (
    K,
    L,
    SR,
    SEG,
  )
  # Changing the config object after loading (before the first call) changes nothing.
  fresh = Tokenizer.from_checkpoint(workdir, batch_size=4)
  fresh.config.frontend.n_mels = 80
  fresh.config.frontend.hop_length = 320
  fresh.config.model.max_len = 4
  fresh.config.audio.sample_rate = 8000
  _same_output(fresh.tokenize(waves[:4]), tok.tokenize(waves[:4]))


# ---------------------------------------------------------------------------------- tokenize
def test_outputs_are_valid_and_depend_on_the_audio(tok, waves):
  out = tok.tokenize(waves)
  assert len(out.tokens) == len(out.times) == len(waves) and out.terminated.shape == (len(waves),)
  for seq, times, term in zip(out.tokens, out.times, out.terminated):
    assert all(isinstance(t, int) and 0 <= t < K for t in seq)
    assert len(seq) <= L and (len(seq) < L) == bool(term)
    assert times.shape == (len(seq),) and times.dtype == np.float32
    assert np.all(np.isfinite(times)) and np.all((times >= 0) & (times <= 3.0))
  # The test model is sharp enough that the strings tell the inputs apart (else the batching
  # tests below could not see a leak) and vary in length (else the EOS tests could not).
  assert len({tuple(s) for s in out.tokens}) >= 4
  assert len({len(s) for s in out.tokens}) >= 2


def test_tokenize_is_deterministic(tok, workdir, waves):
  a = tok.tokenize(waves)
  b = tok.tokenize(waves)
  _same_output(a, b)
  _same_output(Tokenizer.from_checkpoint(workdir, batch_size=4).tokenize(waves), a)


def test_batched_equals_one_by_one(tok, waves):
  batched = tok.tokenize(waves)  # 7 waves, batch 4: one full, one padded
  singles = [tok.tokenize(w) for w in waves]
  assert batched.tokens == [s.tokens[0] for s in singles]
  np.testing.assert_array_equal(batched.terminated, [s.terminated[0] for s in singles])
  for t, s in zip(batched.times, singles):
    np.testing.assert_allclose(t, s.times[0], rtol=0, atol=1e-6)
  # Other neighbours, other positions in the batch: same results.
  order = [6, 2, 5, 0, 3, 1, 4]
  permuted = tok.tokenize([waves[i] for i in order])
  assert permuted.tokens == [batched.tokens[i] for i in order]
  loud = [np.clip(w * 8, -1, 1) for w in make_waves(3, seed=9)]
  mixed = tok.tokenize([loud[0], waves[3], loud[1], loud[2]])
  assert mixed.tokens[1] == batched.tokens[3]
  np.testing.assert_allclose(mixed.times[1], batched.times[3], rtol=0, atol=1e-6)


def test_batch_size_does_not_change_results(workdir, tok, waves):
  other = Tokenizer.from_checkpoint(
    workdir, batch_size=3
  )  # another compiled shape; 3 does not divide 7
  _same_output(other.tokenize(waves), tok.tokenize(waves), atol=1e-4)


def test_input_forms_are_equivalent(tok, waves):
  ref = tok.tokenize(waves[:3])
  _same_output(tok.tokenize(np.stack(waves[:3])), ref)  # [N, S] array
  _same_output(tok.tokenize(tuple(waves[:3])), ref)  # any sequence
  _same_output(tok.tokenize(jnp.asarray(np.stack(waves[:3]))), ref)  # a jax array
  single = tok.tokenize(waves[0])  # one 1-D waveform
  assert single.tokens == ref.tokens[:1]
  stereo = np.stack([waves[0], waves[0]], axis=1)  # [n, 2], same channels
  assert tok.tokenize([stereo]).tokens == ref.tokens[:1]
  pcm = np.round(np.clip(waves[1], -1, 1) * 32767).astype(np.int16)  # int16 PCM is scaled
  np.testing.assert_allclose(tok.prepare([pcm])[0], np.clip(waves[1], -1, 1), atol=1e-4)
  u8 = np.array([0, 64, 128, 192, 255], np.uint8)  # 8-bit PCM is unsigned, centred at 128
  np.testing.assert_allclose(tok.prepare([u8])[0, :5], [-1, -0.5, 0, 0.5, 127 / 128])
  empty = tok.tokenize([])
  assert empty.tokens == [] and empty.times == [] and empty.terminated.shape == (0,)
  with pytest.raises(ValueError, match='empty audio'):  # [0, 2]: not a batch of no clips
    tok.tokenize(np.zeros((0, 2), np.float32))


@pytest.mark.parametrize('rate', [8_000, 44_100])
def test_other_sample_rates_are_resampled(tok, waves, rate):
  native = [soxr.resample(w, SR, rate).astype(np.float32) for w in waves[:3]]
  out = tok.tokenize(native, rate)
  ours = tok.tokenize([soxr.resample(w, rate, SR).astype(np.float32) for w in native], SR)
  _same_output(out, ours)
  for seq, times in zip(out.tokens, out.times):
    assert times.shape == (len(seq),) and np.all((times >= 0) & (times <= 3.0))
  assert tok.prepare(native, rate).shape == (3, SEG)


def test_short_input_is_zero_padded_at_the_end(tok, waves):
  short = waves[2][:SR]  # 1 s
  padded = np.concatenate([short, np.zeros(SEG - SR, np.float32)])
  _same_output(tok.tokenize([short]), tok.tokenize([padded]))
  np.testing.assert_array_equal(tok.prepare([short])[0], padded)


def test_longer_input_raises_and_points_to_tokenize_long(tok, waves):
  with pytest.raises(ValueError, match='tokenize_long'):
    tok.tokenize([waves[0], np.concatenate([waves[1], waves[2][:SR]])])


@pytest.mark.parametrize(
  'bad,match',
  [
    (np.full(SEG, np.nan, np.float32), 'NaN'),
    (np.concatenate([np.zeros(100, np.float32), [np.inf]]), 'NaN or inf'),
    (np.zeros(0, np.float32), 'empty'),
    (np.zeros((0, 2), np.float32), 'empty'),  # an empty stereo file as soundfile reads it
    (np.arange(100), 'int64 are not PCM'),  # a list of Python ints: not full-scale int64 PCM
    (np.zeros((2, 3, 100), np.float32), '1-D'),
    (np.array(['a', 'b']), 'numeric'),
  ],
)
def test_bad_input_is_a_clear_error(tok, waves, bad, match):
  with pytest.raises(ValueError, match=match):
    tok.tokenize([waves[0], bad])
  with pytest.raises(ValueError, match=match):
    tok.tokenize_long(bad)


def test_bad_array_shapes_and_rates(tok, workdir):
  with pytest.raises(ValueError, match='batch_size must be a positive integer'):
    Tokenizer.from_checkpoint(workdir, batch_size=0)
  with pytest.raises(ValueError, match='shape'):
    tok.tokenize(np.float32(0.5))
  with pytest.raises(ValueError, match='shape'):
    tok.tokenize(np.zeros((2, 2, SEG), np.float32))
  with pytest.raises(ValueError, match='sample_rate'):
    tok.tokenize([np.zeros(100, np.float32)], sample_rate=0)
  with pytest.raises(ValueError, match=r'below 1000 Hz.*16000, not 16'):  # kHz given
    tok.tokenize([np.zeros(100, np.float32)], sample_rate=16)
  pair = (np.full(SR, 0.1, np.float32), SR)  # what librosa.load / soundfile.read return
  for call in (tok.tokenize, tok.tokenize_long, lambda w: tok.score([3], w)):
    with pytest.raises(ValueError, match=r'\(waveform, sample_rate\) pair'):
      call(pair)


# ------------------------------------------------------------------------- decoder agreement
def _greedy(tok, waves, eos_bias):
  h = jax.jit(tok._encode)(tok.variables, jnp.asarray(tok.prepare(waves)))
  return jax.device_get(
    decode.greedy_decode(tok.model, tok.variables, h, max_len=L, eos_bias=eos_bias)
  )


def test_tokens_and_times_are_the_decoders(tok, waves):
  out = tok.tokenize(waves[:4])
  ref = _greedy(tok, waves[:4], TRAINED_EOS_BIAS)
  for i in range(4):
    n = int(ref.lengths[i])
    assert out.tokens[i] == ref.tokens[i, :n].tolist()
    np.testing.assert_allclose(out.raw_times[i], ref.times[i, :n], atol=1e-5)
    np.testing.assert_allclose(out.times[i], np.maximum.accumulate(ref.times[i, :n]), atol=1e-5)
    assert out.terminated[i] == bool(ref.terminated[i])


def test_score_is_the_sum_of_the_decoders_log_probs(tok, waves):
  out = tok.tokenize(waves[:4])
  ref = _greedy(tok, waves[:4], TRAINED_EOS_BIAS)
  logp = np.asarray(jax.nn.log_softmax(ref.logits, axis=-1))  # [B, L, V]
  checked = {True: 0, False: 0}
  for i in range(4):
    seq = out.tokens[i]
    n = len(seq)
    targets = seq + ([tok.vocab.eos] if n < L else [])  # + EOS if room
    want = float(sum(logp[i, t, y] for t, y in enumerate(targets)))
    total, mean = tok.score(seq, waves[i])
    assert total == pytest.approx(want, abs=1e-3)
    assert mean == pytest.approx(want / len(targets), abs=1e-4)
    checked[n < L] += 1
  assert checked[True] >= 1 and checked[False] >= 1  # with EOS and full length (no room for EOS)


def test_score_prefers_the_greedy_string(tok, waves):
  out = tok.tokenize(waves[:3], eos_bias=0.0)
  rng = np.random.default_rng(0)
  for i, seq in enumerate(out.tokens):
    own = tok.score(seq, waves[i])[1]
    for _ in range(3):
      other = rng.integers(0, K, size=len(seq)).tolist()
      if other != seq:
        assert tok.score(other, waves[i])[1] < own


def test_beam_tokenize_is_the_beam_decode_and_batch_independent(workdir, tok, waves):
  """`beam_size` > 1 returns `decode.beam_decode`'s strings and times, batched equals one by one,
  beam 1 is the default greedy decoding, and the constructor default is used by `tokenize`."""
  beam = tok.tokenize(waves, beam_size=3)
  wav = jnp.asarray(tok.prepare(waves[:4]))
  h = tok._encode(tok.variables, wav)
  ref = jax.device_get(
    decode.beam_decode(
      tok.model, tok.variables, h, max_len=L, beam_size=3, eos_bias=TRAINED_EOS_BIAS
    )
  )
  for i in range(4):
    n = int(ref.lengths[i])
    assert beam.tokens[i] == ref.tokens[i, :n].tolist()
    np.testing.assert_allclose(beam.times[i], ref.times[i, :n], atol=1e-5)
  singles = [tok.tokenize(w, beam_size=3) for w in waves]
  assert beam.tokens == [s.tokens[0] for s in singles]
  _same_output(tok.tokenize(waves, beam_size=1), tok.tokenize(waves))
  by_default = Tokenizer.from_checkpoint(workdir, batch_size=4, beam_size=3)
  assert by_default.beam_size == 3
  _same_output(by_default.tokenize(waves), beam)
  # The returned strings are at least as likely as the greedy ones under `score` here (beam
  # search does not promise it in general; this model is small enough that it holds).
  greedy = tok.tokenize(waves[:4])
  for i in range(4):
    if beam.terminated[i] and greedy.terminated[i]:
      assert (
        tok.score(beam.tokens[i], waves[i])[0] >= tok.score(greedy.tokens[i], waves[i])[0] - 1e-3
      )


@pytest.mark.parametrize(
  'kwargs, match',
  [
    ({'beam_size': 0}, 'beam_size'),
    ({'beam_size': K + 1}, 'beam_size'),
    ({'beam_size': 2.5}, 'beam_size'),
    ({'beam_size': 2, 'length_penalty': -1.0}, 'length_penalty'),
  ],
)
def test_bad_beam_settings_raise(tok, waves, kwargs, match):
  with pytest.raises(ValueError, match=match):
    tok.tokenize(waves[:1], **kwargs)


def _assert_greedy_and_score_with(tok, waves, fed_times):
  """`tok` tokenizes waves[:3] as greedy_decode with `fed_times(frames [3, T]) -> {decode kwarg:
  value}` (the times it feeds back, made from its own code-group frames), and scores the first
  string as forced_decode with the same."""
  out = tok.tokenize(waves[:3])
  frames = jnp.asarray(tok.vq_group_frames(waves[:3]))  # [3, T]
  kwargs = fed_times(frames)
  h = tok.encode(tok.prepare(waves[:3], SR))
  ref = decode.greedy_decode(
    tok.model, tok.variables, h, max_len=tok.max_len, eos_bias=tok.default_eos_bias, **kwargs
  )
  assert out.tokens == [list(map(int, r[:n])) for r, n in zip(np.asarray(ref.tokens), ref.lengths)]
  first_row = jax.tree.map(lambda x: x[:1], kwargs)
  logits, _ = decode.forced_decode(tok.model, tok.variables, h[:1], ref.tokens[:1], **first_row)
  n = int(ref.lengths[0])
  logp = np.asarray(jax.nn.log_softmax(logits[0], axis=-1))
  expected = sum(logp[t, int(ref.tokens[0, t])] for t in range(n + int(n < tok.max_len)))
  assert tok.score(out.tokens[0], waves[0])[0] == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_snap_times_decodes_with_the_run_centres_of_its_own_groups(workdir, waves):
  """Tokenizer(snap_times=True) is greedy_decode fed back the centres of the runs of the model's
  own code-group frames (vq_group_frames); its score is forced_decode with the same centres."""
  snap = Tokenizer.from_checkpoint(workdir, batch_size=4, snap_times=True)
  _assert_greedy_and_score_with(
    snap,
    waves,
    lambda frames: {'run_centres': sequences.frame_run_centres(frames, snap.frame_seconds)},
  )
  with pytest.raises(ValueError, match='snap_times is for greedy'):
    snap.tokenize(waves[:1], beam_size=2)
  with pytest.raises(ValueError, match='snap_times is for greedy'):
    Tokenizer.from_checkpoint(workdir, beam_size=2, snap_times=True)


def test_align_frames_decodes_on_the_runs_of_its_own_groups(workdir, waves):
  """Tokenizer(align_frames=N) is greedy_decode with the runs of the model's own code-group frames
  (vq_group_frames, collapsed) as TokenRuns, N frames of tolerance; its score is forced_decode
  with the same runs; beam search and snapped times are refused with it."""
  align = Tokenizer.from_checkpoint(workdir, batch_size=4, align_frames=2)

  def token_runs(frames):
    tokens, lengths, times, _ = sequences.collapse_runs(
      frames, align.frame_seconds, max_len=frames.shape[1] + 1, vocab=align.vocab
    )
    tolerance = 2 * align.frame_seconds
    return {
      'token_runs': decode.TokenRuns(
        tokens=tokens, times=times, lengths=lengths, tolerance=tolerance
      )
    }

  _assert_greedy_and_score_with(align, waves, token_runs)
  with pytest.raises(ValueError, match='align_frames is for greedy decoding'):
    align.tokenize(waves[:1], beam_size=2)
  with pytest.raises(ValueError, match='align_frames is for greedy'):
    Tokenizer.from_checkpoint(workdir, beam_size=2, align_frames=2)
  with pytest.raises(ValueError, match='align_frames is for greedy'):
    Tokenizer.from_checkpoint(workdir, snap_times=True, align_frames=2)
  with pytest.raises(ValueError, match='align_frames must be an integer'):
    Tokenizer.from_checkpoint(workdir, align_frames=-1)


def test_from_checkpoint_decodes_as_the_saved_config_evaluates(workdir, waves, monkeypatch):
  """Unless passed, `align_frames` comes from the saved config's eval.align_frames (what the run's
  own evaluation decoded with); a beam turns it off instead of failing."""
  assert Tokenizer.from_checkpoint(workdir, batch_size=4).align_frames == 0  # saved: 0
  load = checkpointing.load_for_analysis

  def saved_with_align_frames(path, step):
    folder, config, restored = load(path, step)
    config = config.copy_and_resolve_references()
    config.eval.align_frames = 2
    return folder, config, restored

  monkeypatch.setattr(checkpointing, 'load_for_analysis', saved_with_align_frames)
  by_config = Tokenizer.from_checkpoint(workdir, batch_size=4)
  assert by_config.align_frames == 2
  monkeypatch.undo()
  _same_output(
    by_config.tokenize(waves),
    Tokenizer.from_checkpoint(workdir, batch_size=4, align_frames=2).tokenize(waves),
  )
  monkeypatch.setattr(checkpointing, 'load_for_analysis', saved_with_align_frames)
  assert Tokenizer.from_checkpoint(workdir, align_frames=0).align_frames == 0
  beam = Tokenizer.from_checkpoint(workdir, batch_size=4, beam_size=2)
  assert beam.align_frames == 0 and beam.beam_size == 2
  assert not by_config.choose_from_runs  # saved: False


@pytest.mark.parametrize(
  'option,needs',
  [
    ('choose_from_runs', 'choose_from_runs chooses among the runs'),
    ('end_at_last_run', 'end_at_last_run ends at the last run'),
  ],
)
def test_aligned_decoding_options_come_from_the_saved_config_and_need_align_frames(
  workdir, waves, monkeypatch, option, needs
):
  load = checkpointing.load_for_analysis

  def saved_with_option(path, step):
    folder, config, restored = load(path, step)
    config = config.copy_and_resolve_references()
    config.eval.align_frames = 2
    config.eval[option] = True
    return folder, config, restored

  monkeypatch.setattr(checkpointing, 'load_for_analysis', saved_with_option)
  by_config = Tokenizer.from_checkpoint(workdir, batch_size=4)
  assert getattr(by_config, option) and by_config.align_frames == 2
  beam = Tokenizer.from_checkpoint(workdir, batch_size=4, beam_size=2)  # greedy-only: off
  assert not getattr(beam, option) and beam.align_frames == 0
  assert not getattr(Tokenizer.from_checkpoint(workdir, batch_size=4, **{option: False}), option)
  monkeypatch.undo()
  explicit = Tokenizer.from_checkpoint(workdir, batch_size=4, align_frames=2, **{option: True})
  _same_output(by_config.tokenize(waves), explicit.tokenize(waves))
  assert not getattr(Tokenizer.from_checkpoint(workdir, batch_size=4, align_frames=2), option)
  with pytest.raises(ValueError, match=needs):
    Tokenizer.from_checkpoint(workdir, align_frames=0, **{option: True})
  with pytest.raises(ValueError, match=f'{option} must be True or False'):
    Tokenizer.from_checkpoint(workdir, align_frames=2, **{option: 1})


def test_score_validates_tokens(tok, waves):
  with pytest.raises(ValueError, match='codes'):
    tok.score([1, K], waves[0])  # BOS is not a code
  with pytest.raises(ValueError, match='codes'):
    tok.score([-1], waves[0])
  with pytest.raises(ValueError, match='limit'):
    tok.score([1] * (L + 1), waves[0])
  total, mean = tok.score([], waves[0])  # just EOS
  assert total == pytest.approx(mean) and total < 0


# ---------------------------------------------------------------------------------- length control
def test_eos_bias_shortens_never_lengthens(tok, waves):
  biases = [-100.0, -2.0, 0.0, TRAINED_EOS_BIAS, 4.0, 100.0]
  lengths = np.array([[len(s) for s in tok.tokenize(waves, eos_bias=b).tokens] for b in biases])
  assert np.all(np.diff(lengths, axis=0) <= 0), lengths
  assert np.all(lengths[0] == L) and np.all(lengths[-1] == 0)
  assert lengths[0].sum() > lengths[3].sum() > lengths[-1].sum()
  assert not tok.tokenize(waves[:2], eos_bias=-100.0).terminated.any()
  assert tok.tokenize(waves[:2], eos_bias=100.0).terminated.all()
  _same_output(tok.tokenize(waves[:3]), tok.tokenize(waves[:3], eos_bias=TRAINED_EOS_BIAS))


def test_target_rate_uses_the_calibration(tok, waves):
  cal = Tokenizer(
    tok.config,
    tok.variables,
    eos_bias=TRAINED_EOS_BIAS,
    batch_size=4,
    calibration=[(4.0, 1.0), (0.0, 5.0), (2.0, 3.0)],
  )  # any order
  assert cal.eos_bias_for_rate(3.0) == pytest.approx(2.0)
  assert cal.eos_bias_for_rate(4.0) == pytest.approx(1.0)
  assert cal.eos_bias_for_rate(2.0) == pytest.approx(3.0)
  assert cal.eos_bias_for_rate(50.0) == pytest.approx(0.0)  # clamped to the table
  assert cal.eos_bias_for_rate(0.5) == pytest.approx(4.0)  # (0 is no rate: ValueError)
  _same_output(cal.tokenize(waves[:4], target_rate=4.0), cal.tokenize(waves[:4], eos_bias=1.0))
  # A measured table with a tie and noise: still the monotone inverse.
  noisy = Tokenizer(
    tok.config,
    tok.variables,
    calibration=[(0.0, 5.0), (1.0, 3.0), (2.0, 3.0), (3.0, 3.2), (4.0, 1.0)],
  )
  assert noisy.eos_bias_for_rate(4.0) == pytest.approx(0.5)
  assert noisy.eos_bias_for_rate(2.0) == pytest.approx(3.5)
  with pytest.raises(ValueError, match='calibration'):
    tok.tokenize(waves[:1], target_rate=3.0)
  with pytest.raises(ValueError, match='not both'):
    cal.tokenize(waves[:1], eos_bias=1.0, target_rate=3.0)


def test_calibration_file_is_read_from_the_workdir(workdir, tmp_path, waves):
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy)
  with open(os.path.join(copy, 'calibration.json'), 'w') as f:
    json.dump({'eos_bias_to_rate': [[0.0, 5.0], [2.0, 3.0]], 'step': STEPS[1]}, f)
  for path in (copy, os.path.join(copy, 'checkpoints', str(STEPS[1]))):
    t = Tokenizer.from_checkpoint(path, batch_size=4)
    assert t.calibration == [(0.0, 5.0), (2.0, 3.0)]
    assert t.eos_bias_for_rate(4.0) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------- VQ strings
def test_vq_tokenize(tok, waves):
  out = tok.vq_tokenize(waves)
  frame = 0.02
  for seq, times in zip(out.tokens, out.times):
    assert 1 <= len(seq) <= SEG // 320 and all(0 <= t < K for t in seq)
    assert all(a != b for a, b in zip(seq, seq[1:]))  # no consecutive repeats
    assert times.shape == (len(seq),)
    assert np.all(np.diff(times) > 0)  # run centres are ordered
    assert times[0] >= frame / 2 - 1e-6 and times[-1] <= 3.0 - frame / 2 + 1e-6
  assert out.terminated.all()
  assert len({tuple(s) for s in out.tokens}) == len(waves)
  singles = [tok.vq_tokenize(w).tokens[0] for w in waves]
  assert singles == out.tokens
  # Frame codes straight from the model, collapsed: the same strings and run-centre times.
  codes = np.asarray(tok._vq_codes(tok.variables, jnp.asarray(tok.prepare(waves[:4]))))
  for i in range(4):
    seq, centres = token_strings.collapse_repeats(codes[i])
    assert seq.tolist() == out.tokens[i]
    np.testing.assert_allclose(out.times[i], (centres + 0.5) * frame, atol=1e-6)


def test_vq_group_tokenize_is_the_stage1_target_recipe(tok, waves):
  groups_n = int(tok.config.targets.code_groups)
  min_run = int(tok.config.targets.min_run_frames)
  assert 2 <= groups_n < K and min_run >= 1
  out = tok.vq_group_tokenize(waves)
  vq = tok.vq_tokenize(waves)
  groups = code_groups.groups_from_vq_stats(tok.variables['vq_stats'], groups_n)
  codes = tok._vq_codes(tok.variables, jnp.asarray(tok.prepare(waves[:4])))
  pruned = np.asarray(sequences.prune_short_runs(code_groups.map_codes(codes, groups), min_run))
  for i, (seq, times) in enumerate(zip(out.tokens, out.times)):
    assert all(0 <= t < groups_n for t in seq) and all(a != b for a, b in zip(seq, seq[1:]))
    assert 1 <= len(seq) <= len(vq.tokens[i])  # never longer than the codes
    assert times.shape == (len(seq),) and np.all(np.diff(times) > 0)
    if i < 4:
      assert seq == token_strings.collapse_repeats(pruned[i])[0].tolist()
  no_groups = Tokenizer(_with(tok.config, code_groups=0), tok.variables)
  with pytest.raises(ValueError, match='code_groups'):
    no_groups.vq_group_tokenize(waves[:1])


def _with(config, **targets):
  config = copy.deepcopy(config)
  config.targets.update(targets)
  return config


# ---------------------------------------------------------------------------------- long audio
def test_window_starts(tok):
  assert tok.window_starts(SEG, 1.0) == [0]
  assert tok.window_starts(SR, 1.0) == [0]
  assert tok.window_starts(SEG + 1, 1.0) == [0, 1]
  assert tok.window_starts(int(7.3 * SR), 1.0) == [0, SR, 2 * SR, 3 * SR, 4 * SR, int(4.3 * SR)]
  assert tok.window_starts(6 * SR, 1.5) == [0, 24_000, 48_000]
  for bad in (0.0, -1.0, float('nan')):
    with pytest.raises(ValueError, match='hop_seconds'):
      tok.window_starts(6 * SR, bad)


def test_tokenize_long_covers_the_audio_and_is_deterministic(tok, waves):
  long = np.concatenate([waves[0], waves[1], waves[2][: int(1.3 * SR)]])  # 7.3 s
  res = tok.tokenize_long(long, hop_seconds=1.0)
  assert res == tok.tokenize_long(long, hop_seconds=1.0)
  starts = [r['start'] for r in res]
  assert starts == pytest.approx([0, 1, 2, 3, 4, 4.3])
  assert all(r['end'] - r['start'] == pytest.approx(3.0) for r in res)
  assert res[-1]['end'] == pytest.approx(7.3)
  covered = np.zeros(len(long), bool)
  for r in res:
    covered[int(round(r['start'] * SR)) : int(round(r['end'] * SR))] = True
  assert covered.all()
  # Each window is exactly what tokenize gives for that slice; times are shifted to the recording.
  windows = [long[int(round(s * SR)) : int(round(s * SR)) + SEG] for s in starts]
  direct = tok.tokenize(windows)
  for r, seq, times in zip(res, direct.tokens, direct.times):
    assert r['tokens'] == seq
    np.testing.assert_allclose(r['times'], np.round(times + r['start'], 4), atol=1.5e-4)
    assert all(r['start'] <= t <= r['end'] for t in r['times'])
  json.dumps(res)  # plain types only


def test_tokenize_long_short_audio_other_rate_and_vq(tok, waves):
  short = waves[3][: int(1.5 * SR)]
  (one,) = tok.tokenize_long(short)
  assert (one['start'], one['end']) == (0.0, pytest.approx(1.5))
  assert one['tokens'] == tok.tokenize([short]).tokens[0]
  assert all(0.0 <= t <= 1.5 for t in one['times'])  # clipped to the audio
  long = np.concatenate([waves[4], waves[5]])  # 6 s at 8 kHz
  res8 = tok.tokenize_long(soxr.resample(long, SR, 8000).astype(np.float32), 8000, hop_seconds=1.5)
  assert [r['start'] for r in res8] == pytest.approx([0.0, 1.5, 3.0])
  assert res8[-1]['end'] == pytest.approx(6.0)
  vq = tok.tokenize_long(long, hop_seconds=1.5, vq=True)
  assert [r['start'] for r in vq] == pytest.approx([0.0, 1.5, 3.0])
  assert vq[0]['tokens'] == tok.vq_tokenize([long[:SEG]]).tokens[0]
  assert all(a != b for r in vq for a, b in zip(r['tokens'], r['tokens'][1:]))


# ---------------------------------------------------------------------------------- real training
@pytest.mark.slow
def test_checkpoint_written_by_training_loads(tmp_path):
  """train_and_evaluate (stages 0-2, 8 devices) writes a checkpoint the tokenizer reads."""
  config = tiny_config()
  config.batch_size = 8
  config.num_train_steps = 4
  config.log_every_steps = 2
  config.checkpoint_every_steps = 2
  config.eval_every_steps = 0
  config.schedule.update(stage1_start=1, stage2_start=2, ramp_steps=1, ema_warmup_steps=1)
  config.optim.warmup_steps = 1
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir, run_evaluation=False)
  t = Tokenizer.from_checkpoint(workdir, batch_size=2)
  assert checkpointing.step_dir(workdir).name == '4'
  bias = float(checkpointing.restore_params(workdir, items=('eos_bias',))['eos_bias'])
  assert t.default_eos_bias == pytest.approx(bias)
  w = make_waves(3)
  out = t.tokenize(w)
  assert out.tokens == [t.tokenize(x).tokens[0] for x in w]
  assert all(times.shape == (len(s),) for s, times in zip(out.tokens, out.times))
