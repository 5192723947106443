"""The analysis API: load a trained tokenizer and turn audio into token strings with times.

    tok = Tokenizer.from_checkpoint('runs/demo')          # a workdir or one checkpoint step dir
    out = tok.tokenize([wave_a, wave_b], sample_rate=16000)
    out.tokens[0], out.times[0]                           # list[int], float32 seconds per token
    tok.score(out.tokens[0], wave_a, sample_rate=16000)   # (log-likelihood, per-token mean)
    tok.vq_tokenize(...)                                  # the collapsed stage-0 VQ baseline

Guarantees (tested):
  * Batched tokenization equals one-by-one tokenization: every waveform is processed as its own
    3 s segment, batches are filled up to a fixed size with silent rows that are dropped, and
    nothing in the model mixes rows.
  * The front-end settings, vocabulary and model shape come from the config saved in the
    checkpoint, so the same audio always gives the same ids; no path is hard-coded.
  * Input handling: audio at any sample rate is resampled (soxr) to the model's rate; stereo
    ([n, channels]) is averaged to mono; a waveform shorter than the segment (3 s) is zero-padded
    at the end; a longer one raises ValueError — use `tokenize_long`, which cuts sliding windows
    of exactly one segment every `hop_seconds` (the last window is aligned to the end of the audio
    when the audio is longer than one segment; deterministic).
  * Length control: `eos_bias` (added to the EOS logit at every step; larger = shorter strings)
    or `target_rate` (tokens/s, mapped to an EOS bias through the calibration measured by the
    evaluation and stored in the workdir as calibration.json). Default: the EOS bias the length
    controller reached in training (stored in the checkpoint).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import soxr

from pairalign_jax import checkpointing
from pairalign_jax import decode
from pairalign_jax import frontend
from pairalign_jax import losses
from pairalign_jax import models
from pairalign_jax import sequences
from pairalign_jax import vocab as vocab_lib

CALIBRATION_FILE = 'calibration.json'
Waveforms = Union[np.ndarray, Sequence[np.ndarray]]


@dataclasses.dataclass
class TokenizerOutput:
  tokens: list[list[int]]          # codes only (no BOS/EOS)
  times: list[np.ndarray]          # seconds from the segment start, one per token
  terminated: np.ndarray           # [N] bool: EOS emitted before the length limit


class Tokenizer:
  """A trained PairAlign tokenizer (parameters + the config it was trained with)."""

  def __init__(self, config: ml_collections.ConfigDict, variables: dict, *, eos_bias: float = 0.0,
               calibration: Optional[list[tuple[float, float]]] = None, batch_size: int = 64):
    self.config = config
    self.model = models.PairAlign(models.ModelConfig.from_config(config))
    self.variables = variables
    self.fcfg = frontend.FrontendConfig.from_config(config)
    self.vocab = vocab_lib.Vocab(config.model.codebook_size)
    self.sample_rate = int(config.audio.sample_rate)
    self.segment_samples = int(round(config.audio.sample_rate * config.audio.segment_seconds))
    self.frame_seconds = config.frontend.hop_length * config.model.subsample / config.audio.sample_rate
    self.default_eos_bias = float(eos_bias)
    self.calibration = sorted(calibration) if calibration else None
    self.batch_size = int(batch_size)
    self._encode_decode = jax.jit(self._encode_decode_impl)
    self._vq_codes = jax.jit(self._vq_codes_impl)
    self._score = jax.jit(self._score_impl)

  # ------------------------------------------------------------------ loading
  @classmethod
  def from_checkpoint(cls, path: str, *, use_teacher: bool = True, batch_size: int = 64) -> 'Tokenizer':
    """Loads params (EMA teacher by default) onto the default device; no optimizer state needed."""
    config = checkpointing.read_config(path)
    restored = checkpointing.restore_params(path)
    params = restored['teacher_params'] if use_teacher and restored.get('teacher_params') is not None \
        else restored['params']
    variables = {'params': params, 'vq_stats': restored['vq_stats']}
    eos_bias = float(np.asarray(restored.get('eos_bias', 0.0)))
    calibration = None
    workdir = checkpointing.workdir_of(path)
    cal_path = os.path.join(workdir, CALIBRATION_FILE) if workdir else None
    if cal_path and os.path.exists(cal_path):
      with open(cal_path, encoding='utf-8') as f:
        calibration = [tuple(x) for x in json.load(f)['eos_bias_to_rate']]
    return cls(config, variables, eos_bias=eos_bias, calibration=calibration, batch_size=batch_size)

  # ------------------------------------------------------------------ input handling
  def prepare(self, waveforms: Waveforms, sample_rate: Optional[int] = None) -> np.ndarray:
    """-> float32 [N, segment_samples] at the model's rate (see the module docstring)."""
    sample_rate = self.sample_rate if sample_rate is None else int(sample_rate)
    if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
      waveforms = [waveforms]
    out = np.zeros((len(waveforms), self.segment_samples), np.float32)
    for i, wave in enumerate(waveforms):
      wave = np.asarray(wave, np.float32)
      if wave.ndim == 2:
        wave = wave.mean(axis=1) if wave.shape[1] <= 8 else wave.mean(axis=0)
      if wave.ndim != 1:
        raise ValueError(f'waveform {i}: expected 1-D mono (or [samples, channels]) audio, got {wave.shape}')
      if not np.all(np.isfinite(wave)):
        raise ValueError(f'waveform {i}: contains NaN or inf samples')
      if sample_rate != self.sample_rate:
        wave = soxr.resample(wave, sample_rate, self.sample_rate).astype(np.float32)
      if wave.shape[0] > self.segment_samples:
        raise ValueError(
            f'waveform {i}: {wave.shape[0] / self.sample_rate:.2f} s is longer than the '
            f'{self.segment_samples / self.sample_rate:.2f} s segment; use tokenize_long() for long audio')
      out[i, :wave.shape[0]] = wave
    return out

  def _batches(self, waves: np.ndarray):
    """Yields (start, fixed-size padded batch [batch_size, S], valid rows)."""
    for start in range(0, waves.shape[0], self.batch_size):
      chunk = waves[start:start + self.batch_size]
      n = chunk.shape[0]
      if n < self.batch_size:
        chunk = np.concatenate([chunk, np.zeros((self.batch_size - n, waves.shape[1]), np.float32)])
      yield start, chunk, n

  # ------------------------------------------------------------------ compiled pieces
  def _encode(self, variables, waves):
    mel = frontend.normalize(frontend.log_mel(waves, self.fcfg))                   # [B, F, M]
    return self.model.apply(variables, mel, train=False, method=models.PairAlign.encode)  # [B, T, d]

  def _encode_decode_impl(self, variables, waves, eos_bias):
    h = self._encode(variables, waves)
    out = decode.greedy_decode(self.model, variables, h, max_len=self.config.model.max_len, eos_bias=eos_bias)
    return out.tokens, out.lengths, out.terminated, out.times

  def _vq_codes_impl(self, variables, waves):
    h = self._encode(variables, waves)
    return self.model.apply(variables, h, train=False, method=models.PairAlign.quantize).codes  # [B, T]

  def _score_impl(self, variables, waves, tokens, lengths):
    h = self._encode(variables, waves)
    cond = self.model.apply(variables, h, method=models.PairAlign.condition)
    inputs = sequences.shift_right(tokens, self.vocab)
    logits, _ = self.model.apply(variables, cond, inputs, train=False, method=models.PairAlign.score)
    mask = sequences.score_mask(tokens, lengths, self.vocab)
    return losses.sequence_log_likelihood(logits, tokens, mask)

  # ------------------------------------------------------------------ public API
  def eos_bias_for_rate(self, target_rate: float) -> float:
    """Interpolates the stored (eos_bias, tokens/s) calibration to reach `target_rate`."""
    if not self.calibration:
      raise ValueError('This tokenizer has no length calibration (calibration.json, written by '
                       '`python -m pairalign_jax.evaluate`); pass eos_bias instead of target_rate.')
    biases = np.array([b for b, _ in self.calibration], np.float64)
    rates = np.array([r for _, r in self.calibration], np.float64)
    order = np.argsort(rates)   # the rate falls as the bias grows
    return float(np.interp(target_rate, rates[order], biases[order]))

  def tokenize(self, waveforms: Waveforms, sample_rate: Optional[int] = None, *,
               eos_bias: Optional[float] = None, target_rate: Optional[float] = None) -> TokenizerOutput:
    """Tokenizes each waveform (at most one segment long) into codes with per-token times."""
    if eos_bias is not None and target_rate is not None:
      raise ValueError('pass eos_bias or target_rate, not both')
    if target_rate is not None:
      eos_bias = self.eos_bias_for_rate(target_rate)
    bias = jnp.float32(self.default_eos_bias if eos_bias is None else eos_bias)
    waves = self.prepare(waveforms, sample_rate)
    tokens, times, terminated = [], [], []
    for _, batch, n in self._batches(waves):
      tok, lengths, term, tim = jax.device_get(self._encode_decode(self.variables, jnp.asarray(batch), bias))
      for row in range(n):
        length = int(lengths[row])
        tokens.append([int(t) for t in tok[row, :length]])
        times.append(np.asarray(tim[row, :length], np.float32))
        terminated.append(bool(term[row]))
    return TokenizerOutput(tokens=tokens, times=times, terminated=np.array(terminated, bool))

  def vq_tokenize(self, waveforms: Waveforms, sample_rate: Optional[int] = None) -> TokenizerOutput:
    """The stage-0 baseline: frame VQ codes with consecutive repeats collapsed (run-centre times)."""
    waves = self.prepare(waveforms, sample_rate)
    tokens, times = [], []
    for _, batch, n in self._batches(waves):
      codes = np.asarray(jax.device_get(self._vq_codes(self.variables, jnp.asarray(batch))))
      for row in range(n):
        seq, centres = collapse_codes(codes[row])
        tokens.append(seq)
        times.append(((centres + 0.5) * self.frame_seconds).astype(np.float32))
    return TokenizerOutput(tokens=tokens, times=times, terminated=np.ones(len(tokens), bool))

  def score(self, tokens: Sequence[int], waveform: np.ndarray, sample_rate: Optional[int] = None):
    """Teacher-forced log-likelihood of `tokens` (+ EOS) given the audio: (total, per-token mean)."""
    max_codes = self.config.model.max_len - 1
    if len(tokens) > max_codes:
      raise ValueError(f'{len(tokens)} tokens exceed the model limit of {max_codes}')
    if any(not self.vocab.is_code(int(t)) for t in tokens):
      raise ValueError(f'tokens must be codes in [0, {self.vocab.codebook_size})')
    waves = self.prepare([waveform], sample_rate)
    row = np.full((1, self.config.model.max_len), self.vocab.pad, np.int32)
    row[0, :len(tokens)] = tokens
    row[0, len(tokens)] = self.vocab.eos
    total, mean = self._score(self.variables, jnp.asarray(waves), jnp.asarray(row),
                              jnp.asarray([len(tokens)], jnp.int32))
    return float(total[0]), float(mean[0])

  def window_starts(self, num_samples: int, hop_seconds: float) -> list[int]:
    """Start samples of the sliding windows `tokenize_long` uses (deterministic)."""
    if hop_seconds <= 0:
      raise ValueError('hop_seconds must be positive')
    hop = int(round(hop_seconds * self.sample_rate))
    if num_samples <= self.segment_samples:
      return [0]
    starts = list(range(0, num_samples - self.segment_samples + 1, hop))
    if starts[-1] + self.segment_samples < num_samples:
      starts.append(num_samples - self.segment_samples)
    return starts

  def tokenize_long(self, waveform: np.ndarray, sample_rate: Optional[int] = None, *,
                    hop_seconds: float = 1.0, eos_bias: Optional[float] = None) -> list[dict]:
    """Sliding 3 s windows every `hop_seconds`: [{'start', 'end', 'tokens', 'times'}], times absolute."""
    sample_rate = self.sample_rate if sample_rate is None else int(sample_rate)
    wave = np.asarray(waveform, np.float32)
    if wave.ndim == 2:
      wave = wave.mean(axis=1)
    if sample_rate != self.sample_rate:
      wave = soxr.resample(wave, sample_rate, self.sample_rate).astype(np.float32)
    starts = self.window_starts(wave.shape[0], hop_seconds)
    windows = [wave[s:s + self.segment_samples] for s in starts]
    out = self.tokenize(windows, self.sample_rate, eos_bias=eos_bias)
    result = []
    for s, w, tok, tim in zip(starts, windows, out.tokens, out.times):
      t0 = s / self.sample_rate
      result.append({'start': t0, 'end': t0 + w.shape[0] / self.sample_rate, 'tokens': tok,
                     'times': [round(float(t) + t0, 4) for t in tim]})
    return result


def collapse_codes(codes: np.ndarray) -> tuple[list[int], np.ndarray]:
  """Frame codes [T] -> (codes with consecutive repeats merged, run centre frame index per token)."""
  codes = np.asarray(codes)
  if codes.size == 0:
    return [], np.zeros((0,), np.float32)
  change = np.flatnonzero(np.diff(codes)) + 1
  starts = np.concatenate([[0], change])
  ends = np.concatenate([change, [codes.size]])
  return [int(c) for c in codes[starts]], ((starts + ends - 1) / 2.0).astype(np.float32)
