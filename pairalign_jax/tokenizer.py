"""The analysis API: load a trained tokenizer and turn audio into token strings with times.

    tok = Tokenizer.from_checkpoint('runs/demo')          # a workdir or one checkpoint step dir
    out = tok.tokenize([wave_a, wave_b], sample_rate=16000)
    out.tokens[0], out.times[0]                           # list[int], float32 seconds per token
    out.raw_times[0]                                      # the decoder's attention times (unsorted)
    tok.score(out.tokens[0], wave_a, sample_rate=16000)   # (log-likelihood, per-token mean)
    tok.vq_tokenize(...)                                  # the collapsed stage-0 VQ baseline

Guarantees (tested):
  * Batched tokenization equals one-by-one tokenization: every waveform is processed as its own
    3 s segment, batches are filled up to a fixed size with silent rows that are dropped, and
    nothing in the model mixes rows.
  * The front-end settings, vocabulary and model shape come from the config saved in the
    checkpoint, so the same audio always gives the same ids; no path is hard-coded.
  * Input handling: `waveforms` is one 1-D waveform, a plain list of samples (one clip), a 2-D
    array or a list of waveforms. A 2-D array is a batch only when it is `[batch, samples]` with
    batch < samples; `[n, c]` with c <= 8 channels and n > c is one multi-channel clip (as
    `soundfile.read` returns a stereo file; channels averaged, logged); any other 2-D shape raises
    ValueError saying how to pass it. In a list each waveform is 1-D or one multi-channel clip
    (`[samples, channels]` or `[channels, samples]`: the shorter axis is averaged). Integer
    PCM (e.g. int16) is scaled to [-1, 1]. Audio at any sample rate (a positive whole number of
    Hz) is resampled (soxr) to the model's rate. A waveform shorter than the segment (3 s) is
    zero-padded at the end; a longer one raises ValueError — use `tokenize_long`. Empty, NaN/inf
    or wrongly shaped input raises ValueError naming the waveform. Waveforms are prepared one
    batch (`batch_size`) at a time.
  * Long audio: `tokenize_long` cuts windows of exactly one segment starting every
    `hop_seconds` (finite, > 0 and at most one segment, else ValueError naming it); when the
    audio is longer than one segment, the last window is aligned to the end of the audio, so
    every sample lies in at least one window. Audio of at most one segment is a single
    zero-padded window. Deterministic: the windows depend only on the audio length, and each
    window is tokenized exactly as `tokenize` would. Windows are views of the waveform tokenized
    one batch at a time: memory beyond the waveform is bounded by `batch_size`, not the length.
  * Length control: `eos_bias` (added to the EOS logit at every step; larger = shorter strings,
    never longer: greedy decoding stops at the first step where the biased EOS wins)
    or `target_rate` (tokens/s, mapped to an EOS bias through the calibration measured by the
    evaluation and stored in the workdir as calibration.json; rates outside the calibrated range
    get the nearest calibrated bias). Default: the EOS bias the length controller reached in
    training (stored in the checkpoint). `eos_bias` must be finite and `target_rate` finite and
    > 0 (ValueError naming the argument); a rate outside the calibration is clamped with a
    warning, logged once per tokenizer.
  * Decoding: greedy by default; `beam_size` K > 1 (constructor, `from_checkpoint` or per call)
    keeps the K most likely prefixes per segment (`decode.beam_decode`, each beam with its own
    fed-back times) and returns the most likely string (`length_penalty` > 0 divides its
    log-probability by its length to that power). With a beam, a larger EOS bias is not
    guaranteed to shorten every string (the calibration is made monotone before it is inverted).
    Greedy decoding only: `snap_times` feeds back the centre of the run of the model's own
    code-group frames that each token's time falls in; `align_frames` N > 0 places each token on
    a run of its own group within N encoder frames of its time and feeds back that run's time
    (`decode.TokenRuns`; docs/METHOD.md §6); with `choose_from_runs` as well each token is chosen
    among the codes of the runs it could be placed on (and EOS), where there are any; with
    `end_at_last_run` the string ends once a token is placed on the audio's last run. All are off
    by default in the constructor; `from_checkpoint` takes them from the saved config's
    `eval.snap_times` / `eval.align_frames` / `eval.choose_from_runs` / `eval.end_at_last_run`
    (the decoding the run was evaluated with) unless passed, or unless a beam is asked for.
  * Times: one per token, in seconds from the start of the (padded) segment; always within the
    segment and non-decreasing: `times` is the running maximum (`np.maximum.accumulate`) of the
    decoder's cross-attention times, which are only nearly ordered even for a trained model (a
    token whose attention steps back gets the time of the latest token before it).
    `raw_times` keeps the decoder's own per-token times for analysis of the attention.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional, Sequence, Union

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import soxr

from pairalign_jax import checkpointing
from pairalign_jax import config_lib
from pairalign_jax import decode
from pairalign_jax import frontend
from pairalign_jax import models
from pairalign_jax import sequences
from pairalign_jax import targets as targets_lib
from pairalign_jax import token_strings
from pairalign_jax import vocab as vocab_lib
from pairalign_jax.token_strings import TokenizerOutput  # noqa: F401  (the public output type)

CALIBRATION_FILE = 'calibration.json'
MAX_CHANNELS = 8  # a 2-D array [n, c] with c <= this and n > c is one multi-channel clip
MIN_SAMPLE_RATE = 1_000  # Hz: a lower rate is a rate given in kHz
# Integer PCM sample types -> (offset, scale) onto [-1, 1]; other integer types are refused (a
# list of Python ints is int64, whose full-scale division would make any audio silent).
INTEGER_PCM = {
  np.dtype(np.int16): (0.0, 32768.0),
  np.dtype(np.int32): (0.0, 2147483648.0),
  np.dtype(np.uint8): (128.0, 128.0),
}
Waveforms = Union[np.ndarray, Sequence[np.ndarray]]


def _check_fed_times_option(config: ml_collections.ConfigDict, option: str) -> None:
  """ValueError naming `option` (a way of feeding back times on the model's own code-group runs)
  unless the model has a location-aware decoder trained on code groups."""
  if int(config.targets.code_groups) <= 0 or int(config.model.time_bias_frames) <= 0:
    raise ValueError(
      f'{option} needs a location-aware decoder (model.time_bias_frames > 0) trained on code '
      f'groups (targets.code_groups > 0); got time_bias_frames={config.model.time_bias_frames}, '
      f'code_groups={config.targets.code_groups}'
    )


def _is_scalar(x) -> bool:
  """Whether `x` is one number (a ragged nesting such as a (waveform, rate) pair is not)."""
  return isinstance(x, (int, float, np.number)) or (isinstance(x, np.ndarray) and x.ndim == 0)


def _refuse_wave_rate_pair(x, name: str) -> None:
  """ValueError naming `name` when `x` is a (waveform, sample_rate) pair, as librosa.load and
  soundfile.read return them."""
  if isinstance(x, (list, tuple)) and len(x) == 2 and not _is_scalar(x[0]) and _is_scalar(x[1]):
    raise ValueError(
      f'{name}: got a (waveform, sample_rate) pair, as librosa.load and soundfile.read return '
      'them: pass the waveform, and the rate as sample_rate='
    )


def decoding_options(eval_config, beam_size: int) -> dict:
  """The greedy-only decoding options `eval_config` asks for (`eval.snap_times`,
  `eval.align_frames` and the two that need align_frames), as Tokenizer keyword arguments; all
  off, logged, with a beam (`beam_size` > 1), which they do not allow."""
  options = {
    'snap_times': bool(eval_config.get('snap_times', False)),
    'align_frames': int(eval_config.get('align_frames', 0)),
    'choose_from_runs': bool(eval_config.get('choose_from_runs', False)),
    'end_at_last_run': bool(eval_config.get('end_at_last_run', False)),
  }
  if int(beam_size) != 1 and any(options.values()):
    logging.info(
      'beam_size=%s: the greedy-only decoding options %s are not used',
      beam_size,
      {k: v for k, v in options.items() if v},
    )
    options = {k: type(v)() for k, v in options.items()}
  return options


class Tokenizer:
  """A trained PairAlign tokenizer (parameters + the config it was trained with)."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    variables: dict,
    *,
    eos_bias: float = 0.0,
    calibration: Optional[list[tuple[float, float]]] = None,
    batch_size: int = 64,
    beam_size: int = 1,
    length_penalty: float = 0.0,
    snap_times: bool = False,
    align_frames: int = 0,
    choose_from_runs: bool = False,
    end_at_last_run: bool = False,
  ):
    self.config = config
    self.model = models.PairAlign(models.ModelConfig.from_config(config))
    self.variables = variables
    self.fcfg = frontend.FrontendConfig.from_config(config)
    self.vocab = vocab_lib.Vocab(config.model.codebook_size)
    self.sample_rate = int(config.audio.sample_rate)
    self.segment_samples = config_lib.segment_samples(config)
    self.frame_seconds = config_lib.encoder_frame_seconds(config)
    self.max_len = int(config.model.max_len)
    self.default_eos_bias = float(eos_bias)
    self.calibration = sorted(calibration) if calibration else None
    self._clamp_logged = False  # a target_rate outside the calibration is logged once
    if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
      raise ValueError(f'batch_size must be a positive integer, got {batch_size!r}')
    self.batch_size = int(batch_size)
    self.beam_size, self.length_penalty = decode.check_beam_settings(
      beam_size, length_penalty, self.vocab.codebook_size
    )
    self.snap_times = bool(snap_times)
    if self.snap_times:
      _check_fed_times_option(config, 'snap_times')
      if self.beam_size != 1:
        raise ValueError(f'snap_times is for greedy decoding; got beam_size={self.beam_size}')
    if isinstance(align_frames, bool) or int(align_frames) != align_frames or align_frames < 0:
      raise ValueError(f'align_frames must be an integer >= 0, got {align_frames!r}')
    self.align_frames = int(align_frames)
    if self.align_frames:
      _check_fed_times_option(config, 'align_frames')
      if self.beam_size != 1 or self.snap_times:
        raise ValueError(
          'align_frames is for greedy decoding without snap_times; got '
          f'beam_size={self.beam_size}, snap_times={self.snap_times}'
        )
    if not isinstance(choose_from_runs, (bool, np.bool_)):
      raise ValueError(f'choose_from_runs must be True or False, got {choose_from_runs!r}')
    self.choose_from_runs = bool(choose_from_runs)
    if self.choose_from_runs and not self.align_frames:
      raise ValueError('choose_from_runs chooses among the runs align_frames places on: set both')
    if not isinstance(end_at_last_run, (bool, np.bool_)):
      raise ValueError(f'end_at_last_run must be True or False, got {end_at_last_run!r}')
    self.end_at_last_run = bool(end_at_last_run)
    if self.end_at_last_run and not self.align_frames:
      raise ValueError('end_at_last_run ends at the last run align_frames places on: set both')
    self._encode_decode = jax.jit(
      self._encode_decode_impl, static_argnames=('beam_size', 'length_penalty')
    )
    self._encode_jit = jax.jit(self._encode)
    self._vq_codes = jax.jit(self._vq_codes_impl)
    self._group_codes = jax.jit(
      lambda variables, waves: self._target_codes(variables, self._encode(variables, waves))
    )
    self._score = jax.jit(self._score_impl)

  # ------------------------------------------------------------------ loading
  @classmethod
  def from_checkpoint(
    cls,
    path: str,
    *,
    step: Optional[int] = None,
    use_teacher: bool = True,
    batch_size: int = 64,
    beam_size: int = 1,
    length_penalty: float = 0.0,
    snap_times: Optional[bool] = None,
    align_frames: Optional[int] = None,
    choose_from_runs: Optional[bool] = None,
    end_at_last_run: Optional[bool] = None,
  ) -> 'Tokenizer':
    """Loads params (EMA teacher by default) onto the default device; no optimizer state needed.

    `path` is a workdir, its `checkpoints/` folder or one step folder (relative or absolute);
    `step` picks a step (default: the newest committed one that loads, or the step folder's own
    step). A damaged newest step (a data file missing or truncated, `_METADATA` or the OCDBT
    manifest gone) is skipped with a warning naming it and why, as training resume does; a damaged
    explicit `step` (or step folder) raises `checkpointing.CheckpointReadError` (a ValueError),
    one line naming the step and the file (`checkpointing.load_for_analysis`).
    Model, front end and vocabulary come from the config saved with that checkpoint.
    `beam_size` / `length_penalty` / `snap_times` / `align_frames` / `choose_from_runs` /
    `end_at_last_run`: the default decoding (module docstring). `snap_times` / `align_frames` /
    `choose_from_runs` / `end_at_last_run` None: the saved config's `eval.*` keys of those names
    (what the
    run's own evaluation decoded with), except with `beam_size` > 1, which they do not allow (then
    off, logged); `choose_from_runs` / `end_at_last_run` None are off where `align_frames` is 0.
    """
    # Orbax reads a relative step folder's metadata as missing: always pass an absolute path.
    path = os.path.abspath(os.fspath(path))
    folder, config, restored = checkpointing.load_for_analysis(path, step)
    saved = decoding_options(config.eval, beam_size)
    snap_times = saved['snap_times'] if snap_times is None else snap_times
    align_frames = saved['align_frames'] if align_frames is None else align_frames
    if choose_from_runs is None:
      choose_from_runs = bool(align_frames) and saved['choose_from_runs']
    if end_at_last_run is None:
      end_at_last_run = bool(align_frames) and saved['end_at_last_run']
    params = (
      restored['teacher_params']
      if use_teacher and restored.get('teacher_params') is not None
      else restored['params']
    )
    variables = {'params': params, 'vq_stats': restored['vq_stats']}
    eos_bias = float(np.asarray(restored.get('eos_bias', 0.0)))
    calibration = None
    workdir = checkpointing.workdir_of(path)
    cal_path = os.path.join(workdir, CALIBRATION_FILE) if workdir else None
    if cal_path and os.path.exists(cal_path):
      with open(cal_path, encoding='utf-8') as f:
        stored = json.load(f)
      calibration = [tuple(x) for x in stored['eos_bias_to_rate']]
      loaded_step = folder.name
      if stored.get('step') is not None and str(stored['step']) != loaded_step:
        logging.warning(
          '%s was measured on step %s, but step %s is loaded: target_rate may be off',
          cal_path,
          stored['step'],
          loaded_step,
        )
    return cls(
      config,
      variables,
      eos_bias=eos_bias,
      calibration=calibration,
      batch_size=batch_size,
      beam_size=beam_size,
      length_penalty=length_penalty,
      snap_times=snap_times,
      align_frames=align_frames,
      choose_from_runs=choose_from_runs,
      end_at_last_run=end_at_last_run,
    )

  # ------------------------------------------------------------------ input handling
  def fingerprint(self) -> str:
    """A short hash of the variables this tokenizer decodes with (parameters and VQ state, by
    path): two tokenizers with the same fingerprint write the same strings for the same settings.
    An archive index records it, so a search with another model is refused."""
    if getattr(self, '_fingerprint', None) is None:
      digest = hashlib.sha256()
      leaves = jax.tree_util.tree_leaves_with_path(self.variables)
      for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
      self._fingerprint = digest.hexdigest()[:16]
    return self._fingerprint

  def _check_rate(self, sample_rate) -> int:
    """`sample_rate` as passed -> int Hz (None = the model's rate); ValueError naming the value."""
    if sample_rate is None:
      return self.sample_rate
    try:
      rate = float('nan') if isinstance(sample_rate, (str, bytes)) else float(sample_rate)
    except (TypeError, ValueError):
      rate = float('nan')
    if not (np.isfinite(rate) and rate >= 1 and rate == round(rate)):
      raise ValueError(
        f'sample_rate must be a positive whole number of samples per second, got {sample_rate!r}'
      )
    if rate < MIN_SAMPLE_RATE:
      raise ValueError(
        f'sample_rate={sample_rate!r} Hz is below {MIN_SAMPLE_RATE} Hz: give it in samples per '
        'second (16000, not 16)'
      )
    return int(rate)

  def _as_list(self, waveforms: Waveforms) -> Sequence:
    """The waveforms as a sequence of single waveforms, without copying audio (shape rules in the
    module docstring). A 2-D array is a batch only when it is `[batch, samples]` with
    batch < samples; `[n, c]` with c <= MAX_CHANNELS and c < n is one c-channel clip (logged)."""
    if isinstance(waveforms, (list, tuple)):
      if waveforms and all(_is_scalar(x) for x in waveforms):
        return [np.asarray(waveforms)]  # a plain list of samples: one clip
      _refuse_wave_rate_pair(waveforms, 'waveforms')
      return waveforms
    waveforms = np.asarray(waveforms)
    if waveforms.ndim == 1:
      return [waveforms]
    if waveforms.ndim == 2:
      n, c = waveforms.shape
      if n == 0 or c == 0:  # e.g. an empty stereo file as soundfile reads it: [0, 2]
        raise ValueError(f'waveforms: empty audio (an array of shape {waveforms.shape})')
      if c <= MAX_CHANNELS and n > c:
        logging.info(
          'waveforms: the [%d, %d] array is taken as one %d-channel clip of %d samples '
          '(channels averaged); pass a list for a batch',
          n,
          c,
          c,
          n,
        )
        return [waveforms]
      if n < c:
        if n <= MAX_CHANNELS:
          logging.info(
            'waveforms: the [%d, %d] array is taken as a batch of %d clips (a [channels, '
            'samples] clip is read as [samples, channels], or pass it in a list)',
            n,
            c,
            n,
          )
        return waveforms  # [batch, samples]: rows are clips
    raise ValueError(
      'waveforms: expected one 1-D waveform, a [batch, samples] array (batch < samples), one '
      f'[samples, channels] clip (channels <= {MAX_CHANNELS}) or a list of waveforms, got an '
      f'array of shape {waveforms.shape}; pass several clips as a list'
    )

  def prepare(
    self, waveforms: Waveforms, sample_rate: Optional[int] = None, *, first: int = 0
  ) -> np.ndarray:
    """-> float32 [N, segment_samples] at the model's rate (see the module docstring). Errors name
    waveform `first + i` (the calls on one batch of a longer list pass the batch's offset)."""
    sample_rate = self._check_rate(sample_rate)
    waveforms = self._as_list(waveforms)
    out = np.zeros((len(waveforms), self.segment_samples), np.float32)
    for i, wave in enumerate(waveforms, first):
      wave = self._mono(wave, f'waveform {i}')
      if sample_rate != self.sample_rate:
        wave = soxr.resample(wave, sample_rate, self.sample_rate).astype(np.float32)
      if wave.shape[0] > self.segment_samples:
        raise ValueError(
          f'waveform {i}: {wave.shape[0]} samples ({wave.shape[0] / self.sample_rate:.3f} s at '
          f'{self.sample_rate} Hz) is longer than the {self.segment_samples}-sample segment; use '
          'tokenize_long() for long audio'
        )
      out[i - first, : wave.shape[0]] = wave
    return out

  @staticmethod
  def _mono(wave, name: str) -> np.ndarray:
    """One waveform -> float32 [n] mono; ValueError for empty, non-finite or misshaped input.

    A 2-D waveform is one multi-channel clip: its channels are the shorter axis
    (`[samples, channels]` as soundfile reads it, or `[channels, samples]`), averaged."""
    _refuse_wave_rate_pair(wave, name)
    wave = np.asarray(wave)
    if wave.dtype in INTEGER_PCM:  # PCM samples: scaled to [-1, 1] (8-bit PCM is unsigned)
      offset, scale = INTEGER_PCM[wave.dtype]
      wave = (wave.astype(np.float32) - np.float32(offset)) / np.float32(scale)
    elif np.issubdtype(wave.dtype, np.integer) or wave.dtype == np.bool_:
      raise ValueError(
        f'{name}: integer samples of dtype {wave.dtype} are not PCM audio (int16, int32 or '
        'uint8 PCM, or floats in [-1, 1]; a list of Python ints becomes int64: pass '
        'np.asarray(samples, np.int16) or floats)'
      )
    elif not np.issubdtype(wave.dtype, np.floating):
      raise ValueError(f'{name}: expected numeric audio samples, got dtype {wave.dtype}')
    wave = np.asarray(wave, np.float32)
    if wave.size == 0:
      raise ValueError(f'{name}: empty waveform (no samples; shape {wave.shape})')
    if wave.ndim == 2:
      wave = wave.mean(axis=1 if wave.shape[1] <= wave.shape[0] else 0, dtype=np.float32)
    if wave.ndim != 1:
      raise ValueError(
        f'{name}: expected 1-D mono (or [samples, channels]) audio, got shape {wave.shape}'
      )
    if wave.shape[0] == 0:
      raise ValueError(f'{name}: empty waveform (no samples)')
    if not np.all(np.isfinite(wave)):
      raise ValueError(f'{name}: contains NaN or inf samples')
    return wave

  def _batches(self, waves: np.ndarray):
    """Yields (start, fixed-size padded batch [batch_size, S], valid rows)."""
    for start in range(0, waves.shape[0], self.batch_size):
      chunk = waves[start : start + self.batch_size]
      n = chunk.shape[0]
      if n < self.batch_size:
        chunk = np.concatenate([chunk, np.zeros((self.batch_size - n, waves.shape[1]), np.float32)])
      yield start, chunk, n

  # ------------------------------------------------------------------ compiled pieces
  def _encode(self, variables, waves):
    mel = frontend.normalize(frontend.log_mel(waves, self.fcfg))  # [B, F, M]
    return self.model.apply(
      variables, mel, train=False, method=models.PairAlign.encode
    )  # [B, T, d]

  def _target_codes(self, variables, h):
    """Frame codes [B, T] as the stage-1 targets were made (`targets.target_frame_codes`)."""
    codes = self.model.apply(variables, h, train=False, method=models.PairAlign.quantize).codes
    settings = targets_lib.TargetSettings.from_config(self.config)
    return targets_lib.target_frame_codes(codes, settings, variables['vq_stats'])

  def run_centres(self, variables, h):
    """[B, T] seconds: the centre of each frame's run of the model's own code-group frames (what
    `snap_times` feeds back), or None when not snapping."""
    if not self.snap_times:
      return None
    return sequences.frame_run_centres(self._target_codes(variables, h), self.frame_seconds)

  def token_runs(self, variables, h):
    """The runs of the model's own code-group frames that `align_frames` places each decoded
    token on (`decode.TokenRuns`), or None when not aligning."""
    if not self.align_frames:
      return None
    settings = targets_lib.TargetSettings.from_config(self.config)
    codes = self._target_codes(variables, h)  # [B, T]
    tokens, lengths, times, _ = sequences.collapse_runs(
      codes,
      self.frame_seconds,
      max_len=codes.shape[1] + 1,
      vocab=self.vocab,
      time_anchor=settings.time_anchor,
    )
    return decode.TokenRuns(
      tokens=tokens,
      times=times,
      lengths=lengths,
      tolerance=self.align_frames * self.frame_seconds,
      choose_from_runs=self.choose_from_runs,
      end_after_last_run=self.end_at_last_run,
    )

  def _encode_decode_impl(
    self, variables, waves, eos_bias, *, beam_size: int = 1, length_penalty: float = 0.0
  ):
    h = self._encode(variables, waves)
    if beam_size == 1:
      out = decode.greedy_decode(
        self.model,
        variables,
        h,
        max_len=self.max_len,
        eos_bias=eos_bias,
        run_centres=self.run_centres(variables, h),
        token_runs=self.token_runs(variables, h),
      )
    else:
      out = decode.beam_decode(
        self.model,
        variables,
        h,
        max_len=self.max_len,
        eos_bias=eos_bias,
        beam_size=beam_size,
        length_penalty=length_penalty,
      )
    return out.tokens, out.lengths, out.terminated, out.times

  def _vq_codes_impl(self, variables, waves):
    h = self._encode(variables, waves)
    return self.model.apply(
      variables, h, train=False, method=models.PairAlign.quantize
    ).codes  # [B, T]

  def _score_impl(self, variables, waves, tokens, lengths):
    h = self._encode(variables, waves)
    if self.model.cfg.time_bias_frames > 0:
      # The location bias needs each input token's time: the decoder's own times, step by step.
      logits, _ = decode.forced_decode(
        self.model,
        variables,
        h,
        tokens,
        run_centres=self.run_centres(variables, h),
        token_runs=self.token_runs(variables, h),
      )
    else:
      cond = self.model.apply(variables, h, method=models.PairAlign.condition)
      inputs = sequences.shift_right(tokens, self.vocab)
      logits, _ = self.model.apply(
        variables, cond, inputs, train=False, method=models.PairAlign.score
      )
    mask = sequences.score_mask(tokens, lengths, self.vocab)
    return sequences.sequence_log_likelihood(logits, tokens, mask)

  # ------------------------------------------------------------------ public API
  def eos_bias_for_rate(self, target_rate: float) -> float:
    """Interpolates the stored (eos_bias, tokens/s) calibration to reach `target_rate`.

    `target_rate` must be a finite number > 0; a rate outside the calibrated range gets the
    bias of the nearest end of the table (clamped), with a warning the first time."""
    if not self.calibration:
      raise ValueError(
        'This tokenizer has no length calibration (calibration.json, written by '
        '`python -m pairalign_jax.evaluate`); pass eos_bias instead of target_rate.'
      )
    rate = _finite(target_rate, 'target_rate', 'a finite number of tokens per second > 0')
    if not rate > 0:
      raise ValueError(
        f'target_rate must be a finite number of tokens per second > 0, got {target_rate!r}'
      )
    table = sorted(self.calibration)
    biases = np.array([b for b, _ in table], np.float64)
    # The rate never rises with the bias (module docstring); measured ties and noise are made
    # monotone so that the inverse is well defined.
    rates = np.minimum.accumulate(np.array([r for _, r in table], np.float64))
    low, high = float(rates.min()), float(rates.max())
    if not low <= rate <= high and not self._clamp_logged:
      self._clamp_logged = True
      logging.warning(
        'target_rate=%g tokens/s is outside the calibrated range [%g, %g]: using the '
        'bias of the nearest end (%g tokens/s); logged once',
        rate,
        low,
        high,
        min(max(rate, low), high),
      )
    return float(np.interp(-rate, -rates, biases))

  def tokenize(
    self,
    waveforms: Waveforms,
    sample_rate: Optional[int] = None,
    *,
    eos_bias: Optional[float] = None,
    target_rate: Optional[float] = None,
    beam_size: Optional[int] = None,
    length_penalty: Optional[float] = None,
  ) -> TokenizerOutput:
    """Tokenizes each waveform (at most one segment long) into codes with per-token times.

    Every waveform is decoded on its own (batching never changes a result), one batch of
    `batch_size` waveforms prepared at a time; `eos_bias` (a finite number) or `target_rate` (not
    both) override the trained EOS bias, `beam_size` / `length_penalty` the tokenizer's decoding
    (module docstring). `times` are the running maximum of `raw_times` (module docstring).
    """
    beam_size, length_penalty = decode.check_beam_settings(
      self.beam_size if beam_size is None else beam_size,
      self.length_penalty if length_penalty is None else length_penalty,
      self.vocab.codebook_size,
    )
    if (self.snap_times or self.align_frames) and beam_size != 1:
      option = 'snap_times' if self.snap_times else 'align_frames'
      raise ValueError(f'{option} is for greedy decoding; got beam_size={beam_size}')
    if eos_bias is not None and target_rate is not None:
      raise ValueError('pass eos_bias or target_rate, not both')
    if eos_bias is not None:
      eos_bias = _finite(eos_bias, 'eos_bias', 'a finite number (larger = shorter strings)')
    if target_rate is not None:
      eos_bias = self.eos_bias_for_rate(target_rate)
    bias = jnp.float32(self.default_eos_bias if eos_bias is None else eos_bias)
    sample_rate = self._check_rate(sample_rate)
    waveforms = self._as_list(waveforms)
    tokens, times, raw_times, terminated = [], [], [], []
    for first in range(0, len(waveforms), self.batch_size):
      waves = self.prepare(waveforms[first : first + self.batch_size], sample_rate, first=first)
      for _, batch, n in self._batches(waves):
        tok, lengths, term, tim = jax.device_get(
          self._encode_decode(
            self.variables,
            jnp.asarray(batch),
            bias,
            beam_size=beam_size,
            length_penalty=length_penalty,
          )
        )
        for row in range(n):
          length = int(lengths[row])
          tokens.append([int(t) for t in tok[row, :length]])
          raw = np.asarray(tim[row, :length], np.float32)
          raw_times.append(raw)
          times.append(np.maximum.accumulate(raw) if length else raw)
          terminated.append(bool(term[row]))
    return TokenizerOutput(
      tokens=tokens, times=times, terminated=np.array(terminated, bool), raw_times=raw_times
    )

  def encode(self, waves) -> jax.Array:
    """Encoder output H [B, T, d_model] (a device array) of prepared waveforms
    [B, segment_samples] (as `prepare` returns them): the compiled front end and encoder."""
    return self._encode_jit(self.variables, jnp.asarray(waves))

  def encode_decode(self, waves, *, eos_bias: Optional[float] = None) -> tuple[jax.Array, ...]:
    """The compiled part of `tokenize` on prepared waveforms [B, segment_samples], with the
    tokenizer's decoding settings and EOS bias (or `eos_bias`): device arrays (tokens [B, max_len],
    lengths [B], terminated [B], raw times [B, max_len]), no host post-processing. The same
    compiled program as `tokenize` for the same batch size (e.g. to time the host work apart)."""
    if eos_bias is not None:
      eos_bias = _finite(eos_bias, 'eos_bias', 'a finite number (larger = shorter strings)')
    bias = jnp.float32(self.default_eos_bias if eos_bias is None else eos_bias)
    return self._encode_decode(
      self.variables,
      jnp.asarray(waves),
      bias,
      beam_size=self.beam_size,
      length_penalty=self.length_penalty,
    )

  def vq_tokenize(self, waveforms: Waveforms, sample_rate: Optional[int] = None) -> TokenizerOutput:
    """The stage-0 baseline: frame VQ codes, consecutive repeats collapsed (run-centre times)."""
    return self._collapsed_frame_codes(self._vq_codes, waveforms, sample_rate)

  def vq_group_tokenize(
    self, waveforms: Waveforms, sample_rate: Optional[int] = None
  ) -> TokenizerOutput:
    """The stage-1 targets as a tokenizer: frame codes mapped to their code group
    (`targets.code_groups`), runs shorter than `targets.min_run_frames` merged, repeats collapsed,
    each token at its run's centre or end (`targets.time_anchor`, as the targets carry it).
    Shows how much the decoder adds to (or loses from) what it was first trained to write."""
    if int(self.config.targets.code_groups) <= 0:
      raise ValueError('vq_group_tokenize needs targets.code_groups > 0 in the model config')
    codes = self._frame_codes(self._group_codes, waveforms, sample_rate)
    anchor = str(self.config.targets.get('time_anchor', 'centre'))  # the targets' token times
    return token_strings.strings_from_frame_codes(codes, self.frame_seconds, time_anchor=anchor)

  def vq_group_frames(self, waveforms: Waveforms, sample_rate: Optional[int] = None) -> np.ndarray:
    """The frame labels `vq_group_tokenize` collapses: [N, T] int32 code-group ids, one per
    encoder frame (short runs already merged)."""
    if int(self.config.targets.code_groups) <= 0:
      raise ValueError('vq_group_frames needs targets.code_groups > 0 in the model config')
    return self._frame_codes(self._group_codes, waveforms, sample_rate)

  def _frame_codes(self, codes_fn, waveforms, sample_rate) -> np.ndarray:
    """`codes_fn(variables, waves [B, S]) -> frame codes [B, T]` over every batch: [N, T]."""
    waves = self.prepare(waveforms, sample_rate)
    rows = [
      np.asarray(jax.device_get(codes_fn(self.variables, jnp.asarray(batch))))[:n]
      for _, batch, n in self._batches(waves)
    ]
    return np.concatenate(rows) if rows else np.zeros((0, 0), np.int32)

  def _collapsed_frame_codes(self, codes_fn, waveforms, sample_rate) -> TokenizerOutput:
    """`codes_fn(variables, waves [B, S]) -> frame codes [B, T]`, repeats collapsed, run-centre
    times (`token_strings.strings_from_frame_codes`)."""
    codes = self._frame_codes(codes_fn, waveforms, sample_rate)
    return token_strings.strings_from_frame_codes(codes, self.frame_seconds)

  def score(self, tokens: Sequence[int], waveform: np.ndarray, sample_rate: Optional[int] = None):
    """Teacher-forced log-likelihood of `tokens` (+ EOS) given the audio: (total, per-token mean).
    With the location-aware decoder (`model.time_bias_frames > 0`) each input token's time is the
    decoder's own time for it (`decode.forced_decode`), as in greedy decoding.

    `total = sum_t log p(y_t | y_<t, H)` over the codes and the EOS after them (no EOS bias), the
    sum of the decoder's log-softmax at those positions; `mean = total / scored tokens`. A string
    of `max_len` codes (what an unterminated decode returns) has no room for EOS and is scored
    without it, as in training.
    """
    tokens = [int(t) for t in np.asarray(tokens, np.int64).reshape(-1)]
    if len(tokens) > self.max_len:
      raise ValueError(f'{len(tokens)} tokens exceed the model limit of {self.max_len}')
    if any(not self.vocab.is_code(t) for t in tokens):
      raise ValueError(f'tokens must be codes in [0, {self.vocab.codebook_size})')
    waves = self.prepare([waveform], sample_rate)
    row = np.full((1, self.max_len), self.vocab.pad, np.int32)
    row[0, : len(tokens)] = tokens
    if len(tokens) < self.max_len:
      row[0, len(tokens)] = self.vocab.eos
    total, mean = self._score(
      self.variables, jnp.asarray(waves), jnp.asarray(row), jnp.asarray([len(tokens)], jnp.int32)
    )
    return float(total[0]), float(mean[0])

  def window_starts(self, num_samples: int, hop_seconds: float) -> list[int]:
    """Start samples of the sliding windows `tokenize_long` uses (deterministic).

    `0, hop, 2 hop, ...` while a whole segment fits, then one window aligned to the end of the
    audio if the last one does not reach it; `[0]` for audio of at most one segment.
    """
    check_hop_seconds(hop_seconds, self.segment_samples / self.sample_rate)
    hop = max(1, int(round(hop_seconds * self.sample_rate)))
    if num_samples <= self.segment_samples:
      return [0]
    starts = list(range(0, num_samples - self.segment_samples + 1, hop))
    if starts[-1] + self.segment_samples < num_samples:
      starts.append(num_samples - self.segment_samples)
    return starts

  def tokenize_long(
    self,
    waveform: np.ndarray,
    sample_rate: Optional[int] = None,
    *,
    hop_seconds: float = 1.0,
    eos_bias: Optional[float] = None,
    target_rate: Optional[float] = None,
    vq: bool = False,
  ) -> list[dict]:
    """Sliding windows (module docstring) -> [{'start', 'end', 'tokens', 'times', 'terminated'}].

    `start`/`end` are the window's span in seconds of the recording (`end` is the end of the
    audio for a window that reaches it, so a short recording gives one window `[0, duration]`);
    `times` are absolute (window start + the token's time in the window), rounded to 0.1 ms and
    clipped to `[start, end]` (a short recording's zero padding is not part of the recording);
    `terminated`: EOS before the length limit (always True for `vq`). Each window is `tokenize`d
    (with `eos_bias` / `target_rate`), or with `vq=True` gets `vq_tokenize`'s collapsed VQ string
    (`eos_bias` / `target_rate` with `vq=True`: ValueError, they do not apply).
    `hop_seconds` must be finite, > 0 and at most the window (`check_hop_seconds`).

    Memory: windows are views of the (resampled) waveform, tokenized `batch_size` at a time, so
    beyond the waveform itself memory is bounded by the batch size whatever the audio's length.
    """
    sample_rate = self._check_rate(sample_rate)
    check_hop_seconds(hop_seconds, self.segment_samples / self.sample_rate)
    if eos_bias is not None and target_rate is not None:
      raise ValueError('pass eos_bias or target_rate, not both')
    if vq and (eos_bias is not None or target_rate is not None):
      raise ValueError(
        "eos_bias and target_rate set the length of the decoder's strings; vq=True gives the "
        'collapsed VQ codes, whose length no EOS bias changes: pass one or the other'
      )
    if target_rate is not None:
      eos_bias, target_rate = self.eos_bias_for_rate(target_rate), None
    wave = self._mono(waveform, 'waveform')
    if sample_rate != self.sample_rate:
      wave = soxr.resample(wave, sample_rate, self.sample_rate).astype(np.float32)
    starts = self.window_starts(wave.shape[0], hop_seconds)
    result = []
    for first in range(0, len(starts), self.batch_size):
      chunk = starts[first : first + self.batch_size]
      windows = [wave[s : s + self.segment_samples] for s in chunk]  # views, no copies
      if vq:
        out = self.vq_tokenize(windows, self.sample_rate)
      else:
        out = self.tokenize(windows, self.sample_rate, eos_bias=eos_bias)
      for s, w, tok, tim, term in zip(chunk, windows, out.tokens, out.times, out.terminated):
        t0 = s / self.sample_rate
        t1 = t0 + w.shape[0] / self.sample_rate
        result.append(
          {
            'start': t0,
            'end': t1,
            'tokens': list(tok),
            'times': [min(max(round(float(t) + t0, 4), t0), t1) for t in tim],
            'terminated': bool(term),
          }
        )
    return result


def check_hop_seconds(hop_seconds, window_seconds: float) -> float:
  """ValueError naming `hop_seconds` unless it is finite, > 0 and <= `window_seconds`."""
  try:
    hop = float(hop_seconds)
  except (TypeError, ValueError):
    hop = float('nan')
  if not (np.isfinite(hop) and 0 < hop <= window_seconds):
    raise ValueError(
      f'hop_seconds must be a finite number of seconds in (0, {window_seconds:g}] '
      f'(the window), got {hop_seconds!r}'
    )
  return hop


def _finite(value, name: str, valid: str) -> float:
  """`value` as a float; ValueError naming `name` and `valid` when it is not a finite number."""
  try:
    number = float('nan') if isinstance(value, (str, bytes)) else float(value)
  except (TypeError, ValueError):
    number = float('nan')
  if not np.isfinite(number):
    raise ValueError(f'{name} must be {valid}, got {value!r}')
  return number
