"""Greedy and beam decoding of token strings from a condition H, with a KV cache in a JAX loop.

Layout (fast on CPU and accelerators): the cross-attention K/V are projected once per H
(`PairAlign.condition`, ``[layers, B, heads, T, head_dim]``) and split into one
``[B, heads, T, head_dim]`` per layer outside the loop; the loop runs the decoder with its layers
unrolled (`models.unrolled`: a model that scans its layers has its stacked parameters split once
per call), and the self-attention cache (`models.init_cache`) is one ``[B, heads, L, head_dim]``
per layer, heads first. Each step's `PairAlign.decode_step` writes one position into it in place
and the loop carries the updated cache, so no step copies a cache, K/V or parameters out of a
stacked array. Rows that emitted EOS are frozen: they emit PAD afterwards (and are fed PAD,
exactly as teacher forcing feeds ``shift_right(tokens)``), so the per-step logits equal the
teacher-forced `PairAlign.score` logits of the produced sequence.

Outputs follow the token-sequence convention of docs/ARCHITECTURE.md: ``tokens [B, L]`` = codes,
then EOS, then PAD; ``lengths`` = number of codes; a row with ``L`` codes has no EOS (not
terminated).
"""

from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp

from pairalign_jax import models
from pairalign_jax import sequences
from pairalign_jax import vocab as vocab_lib

Array = jax.Array


@flax.struct.dataclass
class DecodeOutput:
  tokens: Array  # [B, L] int32: codes, EOS, PAD...
  lengths: Array  # [B] int32: number of codes (no EOS)
  terminated: Array  # [B] bool: EOS emitted within L steps
  # [B, L, V] float32: raw per-step logits (before eos_bias and the BOS/PAD mask); None from
  # `beam_decode` (score the chosen strings with `forced_decode` when they are needed).
  logits: Optional[Array]
  times: Array  # [B, L] float32 seconds: cross-attention time of each token; 0 at PAD


@flax.struct.dataclass
class TokenRuns:
  """The runs of the audio's own code-group frames (`sequences.collapse_runs` of the frames the
  targets are made from), on which aligned decoding places each token (`_cached_steps`)."""

  tokens: Array  # [B, R] int32: each run's code, then EOS/PAD
  times: Array  # [B, R] float32 seconds: each run's time (the targets' time anchor)
  lengths: Array  # [B] int32: number of runs
  # seconds: how far from the decoder's own time a run of the chosen token may be
  tolerance: float = flax.struct.field(pytree_node=False)
  # choose each token among the codes of the runs it could be placed on (and EOS), where there
  # are any (`sequences.run_token_mask`); False: the decoder's own choice, only placed
  choose_from_runs: bool = flax.struct.field(pytree_node=False, default=False)
  # end the string (EOS) once a token has been placed on the audio's last run: nothing is left to
  # write (a decoder otherwise may repeat a token at the last frame until max_len)
  end_after_last_run: bool = flax.struct.field(pytree_node=False, default=False)

  def at_end(self, last_run: Array) -> Array:
    """[B] bool: the previous token was placed on the last run (or the decoder's time passed it)."""
    return last_run >= self.lengths - 1

  def place(self, token: Array, own_time: Array, last_run: Array) -> tuple[Array, Array]:
    """`sequences.align_to_runs` on these runs: (time fed back [B], run placed on [B])."""
    return sequences.align_to_runs(
      token, own_time, last_run, self.tokens, self.times, self.lengths, self.tolerance
    )

  def allowed(self, own_time: Array, last_run: Array, vocab_size: int) -> Array:
    """`sequences.run_token_mask` on these runs: [B, vocab_size] bool."""
    return sequences.run_token_mask(
      own_time, last_run, self.tokens, self.times, self.lengths, self.tolerance, vocab_size
    )


def _eos_bias_vector(eos_bias, batch: int) -> Array:
  bias = jnp.asarray(eos_bias, jnp.float32)
  if bias.ndim > 1 or (bias.ndim == 1 and bias.shape[0] not in (1, batch)):
    raise ValueError(f'eos_bias must be a scalar or [batch={batch}], got shape {bias.shape}')
  return jnp.broadcast_to(bias, (batch,))


def _biased(logits: Array, eos_bias: Array, vocab: vocab_lib.Vocab) -> Array:
  """The decoding rule's logits [B, V]: `eos_bias` [B] added to EOS, BOS and PAD never chosen."""
  biased = logits.at[:, vocab.eos].add(eos_bias)
  return biased.at[:, vocab.bos].set(-jnp.inf).at[:, vocab.pad].set(-jnp.inf)


def check_beam_settings(beam_size, length_penalty, codebook_size: int) -> tuple[int, float]:
  """Validates beam search settings (an integer beam in [1, codebook_size], a penalty >= 0)."""
  if (
    isinstance(beam_size, bool)
    or int(beam_size) != beam_size
    or not 1 <= beam_size <= codebook_size
  ):
    raise ValueError(
      f'beam_size must be an integer in [1, codebook_size={codebook_size}], got {beam_size!r}'
    )
  if not length_penalty >= 0:
    raise ValueError(f'length_penalty must be >= 0, got {length_penalty!r}')
  return int(beam_size), float(length_penalty)


def _choose(logits: Array, eos_bias: Array, done: Array, vocab: vocab_lib.Vocab) -> Array:
  """Greedy choice from raw logits [B, V]: EOS biased, BOS/PAD never, PAD once done. -> [B]."""
  nxt = jnp.argmax(_biased(logits, eos_bias, vocab), axis=-1).astype(jnp.int32)
  return jnp.where(done, jnp.int32(vocab.pad), nxt)


def _finish(
  tokens: Array, logits: Optional[Array], times: Array, vocab: vocab_lib.Vocab
) -> DecodeOutput:
  lengths = jnp.sum(tokens < vocab.codebook_size, axis=1).astype(jnp.int32)
  terminated = jnp.any(tokens == vocab.eos, axis=1)
  times = jnp.where(tokens == vocab.pad, 0.0, times)
  return DecodeOutput(
    tokens=tokens, lengths=lengths, terminated=terminated, logits=logits, times=times
  )


def _check(model: models.PairAlign, hcond: Array, max_len: int):
  if hcond.ndim != 3:
    raise ValueError(f'H must be [batch, frames, d_model], got shape {hcond.shape}')
  if not 1 <= max_len <= model.cfg.max_len:
    raise ValueError(f'max_len must be in [1, model.max_len={model.cfg.max_len}], got {max_len}')


def _cached_steps(
  model: models.PairAlign,
  variables: Any,
  hcond: Array,
  max_len: int,
  next_token,
  *,
  early_exit: bool = True,
  run_centres: Optional[Array] = None,
  token_runs: Optional[TokenRuns] = None,
):
  """The cached decoder run for up to `max_len` steps from BOS; `next_token(logits [B,V],
  done [B], t)` picks each step's output (greedy choice or a given token). Each step's input is
  the previous output and, for the location bias, the previous step's time; a finished row is fed
  PAD at time 0 (as `sequences.shift_times` of a finished sequence's times, which are 0 at PAD).
  With `run_centres` [B, T] (`sequences.frame_run_centres` of the model's own code-group frames)
  the time fed back is the centre of the run the previous step's time falls in
  (`sequences.snap_to_run_centres`); the returned times are the decoder's own, unsnapped.
  With `token_runs` the time fed back is that of the run the chosen token is placed on by content
  (`sequences.align_to_runs`: the nearest later run of the token's own code within `tolerance`
  seconds of the decoder's time), or the decoder's own time when there is none; again the
  returned times are the decoder's own. With `token_runs.choose_from_runs` the step's choice is
  also restricted to the codes of those runs (and EOS) where there are any: `next_token` sees
  the other logits at -1e9; the returned logits are the raw ones. With
  `token_runs.end_after_last_run`, once the previous token was placed on the last run, EOS is the
  only choice.

  With `early_exit` (default) the steps run in a `lax.while_loop` that stops once every row has
  emitted EOS: the remaining positions hold PAD, time 0 and logits 0 (the full-length `lax.scan`,
  `early_exit=False`, gives the same tokens and times and computes logits there that no scored
  position reads). A trained decoder stops near half of `max_len`, so this halves the decode.
  Returns (tokens [B, L], logits [B, L, V], times [B, L]) with the raw per-step times."""
  cfg = model.cfg
  vocab = vocab_lib.Vocab(cfg.codebook_size)
  batch = hcond.shape[0]
  cond = model.apply(variables, hcond, method=models.PairAlign.condition)  # [Ld,B,H,T,hd]
  cond = models.split_condition(cond)  # Ld x {'k','v': [B,H,T,hd]}
  step_model, step_variables = models.unrolled(model, variables)
  cache = models.init_cache(step_model.cfg, batch, max_len, cond[0]['k'].dtype)  # Ld x [B,H,L,hd]

  if run_centres is not None and token_runs is not None:
    raise ValueError('run_centres and token_runs are two ways of feeding times back: pass one')

  def step(carry, t):
    cache, token, prev_time, done, last_run = carry
    logits, time, cache = step_model.apply(
      step_variables, cond, cache, token, t, prev_time, method=models.PairAlign.decode_step
    )  # [B,V], [B], cache with position t written
    choice_logits = logits
    if token_runs is not None and token_runs.choose_from_runs:
      allowed = token_runs.allowed(time, last_run, cfg.vocab_size).at[:, vocab.eos].set(True)
      choice_logits = jnp.where(allowed, logits, -1e9)
    if token_runs is not None and token_runs.end_after_last_run:
      only_eos = jnp.full_like(choice_logits, -1e9).at[:, vocab.eos].set(0.0)
      choice_logits = jnp.where(token_runs.at_end(last_run)[:, None], only_eos, choice_logits)
    nxt = next_token(choice_logits, done, t)  # [B]
    fed_time = time
    if run_centres is not None:
      fed_time = sequences.snap_to_run_centres(time, run_centres, cfg.frame_seconds)
    if token_runs is not None:
      fed_time, last_run = token_runs.place(nxt, time, last_run)
    next_time = jnp.where(done, 0.0, fed_time)
    done = done | (nxt == vocab.eos)
    return (cache, nxt, next_time, done, last_run), (nxt, logits, time)

  init = (
    cache,
    jnp.full((batch,), vocab.bos, jnp.int32),
    jnp.zeros((batch,), jnp.float32),
    jnp.zeros((batch,), bool),
    jnp.full((batch,), -1, jnp.int32),  # the run the previous token was placed on
  )
  if not early_exit:
    _, (tokens, logits, times) = jax.lax.scan(step, init, jnp.arange(max_len))
    return tokens.T, jnp.swapaxes(logits, 0, 1), times.T

  def cond_fn(loop):
    t, (_, _, _, done, _), _ = loop
    return (t < max_len) & ~jnp.all(done)

  def body_fn(loop):
    t, carry, outs = loop
    carry, step_outs = step(carry, t)
    outs = tuple(
      jax.lax.dynamic_update_index_in_dim(buf, x.astype(buf.dtype), t, axis=0)
      for buf, x in zip(outs, step_outs)
    )
    return t + 1, carry, outs

  outs = (
    jnp.full((max_len, batch), vocab.pad, jnp.int32),  # [L, B]
    jnp.zeros((max_len, batch, cfg.vocab_size), jnp.float32),  # [L, B, V]
    jnp.zeros((max_len, batch), jnp.float32),
  )  # [L, B]
  _, _, (tokens, logits, times) = jax.lax.while_loop(cond_fn, body_fn, (jnp.int32(0), init, outs))
  return tokens.T, jnp.swapaxes(logits, 0, 1), times.T


def greedy_decode(
  model: models.PairAlign,
  variables: Any,
  hcond: Array,
  *,
  max_len: int,
  eos_bias=0.0,
  early_exit: bool = True,
  run_centres: Optional[Array] = None,
  token_runs: Optional[TokenRuns] = None,
) -> DecodeOutput:
  """Greedy decode from BOS for up to `max_len` steps with a KV cache. Jittable (max_len static).

  Args:
    model: the PairAlign module; variables: {'params', 'vq_stats'} (plain arrays).
    hcond: H [B, T, d] from `PairAlign.encode`.
    max_len: L, number of decoder steps (<= model.cfg.max_len).
    eos_bias: scalar or [B] (may be traced) added to the EOS logit before argmax.
    early_exit: stop once every row has emitted EOS (`_cached_steps`; same tokens and times).
    run_centres: [B, T] or None: feed back each step's time snapped to these run centres
      (`_cached_steps`; the tokenizer's `snap_times`).
    token_runs: TokenRuns or None: feed back the time of the run each chosen token is placed on
      (`_cached_steps`; the tokenizer's `align_frames`).
  Returns:
    DecodeOutput; `logits` are the raw decoder logits (no eos_bias, no BOS/PAD mask; 0 after the
    last step run).
  """
  _check(model, hcond, max_len)
  vocab = vocab_lib.Vocab(model.cfg.codebook_size)
  bias = _eos_bias_vector(eos_bias, hcond.shape[0])  # [B]
  tokens, logits, times = _cached_steps(
    model,
    variables,
    hcond,
    max_len,
    lambda logits, done, t: _choose(logits, bias, done, vocab),
    early_exit=early_exit,
    run_centres=run_centres,
    token_runs=token_runs,
  )
  return _finish(tokens, logits, times, vocab)


def beam_decode(
  model: models.PairAlign,
  variables: Any,
  hcond: Array,
  *,
  max_len: int,
  beam_size: int,
  eos_bias=0.0,
  length_penalty: float = 0.0,
) -> DecodeOutput:
  """Beam search from BOS for `max_len` steps with a KV cache (per beam). Jittable.

  Each row keeps the `beam_size` most likely prefixes under the same choice rule as
  `greedy_decode`: log-probabilities are taken from the logits with `eos_bias` added to EOS and
  BOS/PAD excluded, so `beam_size=1` is exactly greedy decoding. A beam that emitted EOS is frozen
  (it continues with PAD at no cost, its cache rows are never read again) and keeps competing with
  the live beams. Every beam feeds its own token times back to the location bias, as in greedy
  decoding. The returned string of a row is the beam with the best
  ``score / (number of emitted tokens incl. EOS) ** length_penalty`` (0 = plain log-probability).

  Args:
    model, variables, hcond [B, T, d], max_len, eos_bias: as in `greedy_decode`.
    beam_size: K >= 1 (at most the number of codes).
    length_penalty: exponent of the length normalization of the final choice (>= 0).
  Returns:
    DecodeOutput of the chosen beams, with ``logits=None``.
  """
  _check(model, hcond, max_len)
  cfg = model.cfg
  vocab = vocab_lib.Vocab(cfg.codebook_size)
  beam_size, length_penalty = check_beam_settings(beam_size, length_penalty, cfg.codebook_size)
  batch, k, v = hcond.shape[0], beam_size, cfg.vocab_size
  rows = batch * k  # N = B * K
  bias = jnp.repeat(_eos_bias_vector(eos_bias, batch), k)  # [N]
  cond = model.apply(variables, hcond, method=models.PairAlign.condition)  # [Ld,B,H,T,hd]
  cond = models.gather_condition(cond, jnp.repeat(jnp.arange(batch), k))  # [Ld,N,H,T,hd]
  cond = models.split_condition(cond)  # Ld x {'k','v': [N,H,T,hd]}
  step_model, step_variables = models.unrolled(model, variables)
  cache = models.init_cache(step_model.cfg, rows, max_len, cond[0]['k'].dtype)  # Ld x [N,H,L,hd]
  # All beams of a row start as the same BOS prefix: only the first is live, so that the first
  # step's K best tokens fill the K beams.
  scores = jnp.tile(jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf), batch)  # [N]
  pad_only = jnp.full((v,), -jnp.inf).at[vocab.pad].set(0.0)  # [V]
  row_base = (jnp.arange(batch) * k)[:, None]  # [B, 1]

  def step(carry, t):
    cache, token, prev_time, done, scores, tokens, times = carry
    logits, time, cache = step_model.apply(
      step_variables, cond, cache, token, t, prev_time, method=models.PairAlign.decode_step
    )  # [N,V], [N], cache with position t written
    logp = jax.nn.log_softmax(_biased(logits, bias, vocab), axis=-1)  # [N,V]
    logp = jnp.where(done[:, None], pad_only[None, :], logp)
    cand = (scores[:, None] + logp).reshape(batch, k * v)  # [B, K*V]
    top, idx = jax.lax.top_k(cand, k)  # [B, K]
    parent = (row_base + idx // v).reshape(rows)  # [N] source beam
    nxt = (idx % v).astype(jnp.int32).reshape(rows)  # [N]
    cache = models.gather_cache(cache, parent)
    was_done = jnp.take(done, parent)
    step_time = jnp.where(was_done, 0.0, jnp.take(time, parent))  # [N]
    tokens = jnp.take(tokens, parent, axis=0).at[:, t].set(nxt)  # [N, L]
    times = jnp.take(times, parent, axis=0).at[:, t].set(step_time)  # [N, L]
    done = was_done | (nxt == vocab.eos)
    return (cache, nxt, step_time, done, top.reshape(rows), tokens, times), None

  init = (
    cache,
    jnp.full((rows,), vocab.bos, jnp.int32),
    jnp.zeros((rows,), jnp.float32),
    jnp.zeros((rows,), bool),
    scores,
    jnp.full((rows, max_len), vocab.pad, jnp.int32),
    jnp.zeros((rows, max_len), jnp.float32),
  )
  (_, _, _, _, scores, tokens, times), _ = jax.lax.scan(step, init, jnp.arange(max_len))
  emitted = jnp.sum(tokens != vocab.pad, axis=1).astype(jnp.float32)  # [N] codes + EOS
  ranked = (scores / jnp.maximum(emitted, 1.0) ** length_penalty).reshape(batch, k)  # [B, K]
  best = (row_base[:, 0] + jnp.argmax(ranked, axis=1)).astype(jnp.int32)  # [B]
  return _finish(jnp.take(tokens, best, axis=0), None, jnp.take(times, best, axis=0), vocab)


def forced_decode(
  model: models.PairAlign,
  variables: Any,
  hcond: Array,
  tokens: Array,
  run_centres: Optional[Array] = None,
  token_runs: Optional[TokenRuns] = None,
) -> tuple[Array, Array]:
  """Runs the cached decoder over *given* tokens [B, L] (codes, EOS, PAD), not its own choices.

  Each step's input is the previous given token and, for the location bias, the previous step's
  own output time (snapped or aligned as in `greedy_decode` with `run_centres` / `token_runs`):
  exactly what greedy decoding would have seen had it chosen these tokens. This is how a sequence
  is scored when its times are unknown (`Tokenizer.score`). Returns (logits [B, L, V] float32,
  times [B, L] seconds; 0 at PAD).
  """
  _check(model, hcond, tokens.shape[1])
  vocab = vocab_lib.Vocab(model.cfg.codebook_size)
  given = tokens.astype(jnp.int32)
  _, logits, times = _cached_steps(
    model,
    variables,
    hcond,
    tokens.shape[1],
    lambda logits, done, t: jax.lax.dynamic_index_in_dim(given, t, axis=1, keepdims=False),
    run_centres=run_centres,
    token_runs=token_runs,
  )
  return logits, jnp.where(given == vocab.pad, 0.0, times)


def greedy_decode_recompute(
  model: models.PairAlign, variables: Any, hcond: Array, *, max_len: int, eos_bias=0.0
) -> DecodeOutput:
  """Reference greedy decode without a cache: every step re-scores the whole prefix with
  `PairAlign.score` (O(L^2); a test oracle and the benchmark's baseline). Same outputs as
  `greedy_decode` up to float rounding."""
  _check(model, hcond, max_len)
  cfg = model.cfg
  vocab = vocab_lib.Vocab(cfg.codebook_size)
  batch = hcond.shape[0]
  bias = _eos_bias_vector(eos_bias, batch)
  cond = model.apply(variables, hcond, method=models.PairAlign.condition)

  def step(carry, t):
    tokens, times, done = carry  # [B,L], [B,L], [B]
    all_logits, all_times = model.apply(
      variables,
      cond,
      sequences.shift_right(tokens, vocab),
      False,
      sequences.shift_times(times),
      method=models.PairAlign.score,
    )  # [B,L,V]
    logits = jax.lax.dynamic_index_in_dim(all_logits, t, axis=1, keepdims=False)  # [B,V]
    time = jax.lax.dynamic_index_in_dim(all_times, t, axis=1, keepdims=False)  # [B]
    nxt = _choose(logits, bias, done, vocab)
    tokens = jax.lax.dynamic_update_slice_in_dim(tokens, nxt[:, None], t, axis=1)
    times = jax.lax.dynamic_update_slice_in_dim(
      times, jnp.where(done, 0.0, time)[:, None], t, axis=1
    )
    return (tokens, times, done | (nxt == vocab.eos)), (logits, time)

  init = (
    jnp.full((batch, max_len), vocab.pad, jnp.int32),
    jnp.zeros((batch, max_len), jnp.float32),
    jnp.zeros((batch,), bool),
  )
  (tokens, _, _), (logits, times) = jax.lax.scan(step, init, jnp.arange(max_len))
  return _finish(tokens, jnp.swapaxes(logits, 0, 1), times.T, vocab)
