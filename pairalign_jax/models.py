"""PairAlign model: conv+Transformer encoder, EMA VQ head, and a cross-attention token decoder.

Flax linen, used only through ``init`` / ``apply``. Variables are
``{'params': ..., 'vq_stats': ...}``: 'params' are trained; 'vq_stats' hold the EMA codebook
statistics (``cluster_size [K]``, ``embed_sum [K, c]``, ``codebook [K, c]``) that no gradient
reaches.

Methods (call with ``model.apply(variables, ..., method=PairAlign.<name>)``)::

  encode(mel [B,F,M], train) -> H [B,T,d]                   # T = F // subsample
  quantize(H, train) -> VQOutput          # mutable=['vq_stats'] + rngs {'vq'} to update
  reconstruct(quantized [B,T,c], num_frames=None) -> mel_hat [B, num_frames or T*s, M]
  predict_codes(H) -> logits [B,T,K];   predict_length(H) -> [B]
  condition(H) -> {'k', 'v': [layers, B, heads, T, head_dim]}   # cross-attention K/V, once per H
  score(cond, inputs [B,L], train, input_times [B,L]) -> (logits [B,L,V] f32, times [B,L] seconds)
  decode_step(cond, cache, token [B], position, prev_time [B])
      -> (logits [B,V], times [B], cache with this position written)   # cache: `init_cache`

The batch axis of ``cond`` is axis 1 (layers first, then batch, heads first): use `gather_condition`
to pair conditions with other rows' token sequences (all-pairs scoring without re-projecting K/V).

Decisions the paper does not fix (docs/METHOD.md §2, §6), documented here:
- Encoder subsampling: log2(s) stride-2 ``Conv(kernel 3, 'SAME')`` + GELU over time (mel bands as
  input channels), after cropping the mel to ``T * s`` frames, so ``T = F // s`` exactly.
- Encoder positions: sinusoidal (``ModelConfig.enc_positions='learned'`` switches to a learned
  table).
- VQ: ``z = l2norm(W h)``; code = argmax ``z . e_k`` (= nearest in l2 on the unit sphere);
  commitment ``mean_frames ||z - sg(q)||^2``; EMA update (VQ-VAE-2, Laplace-smoothed counts) of the
  *sum* of the assigned vectors, codebook = l2norm(embed_sum / smoothed count). Dead codes (EMA
  count below the threshold after the update; the count is about frames per batch) are re-seeded
  from random batch vectors. Counts start at 0, so the first training step re-seeds every code
  from batch vectors (a data-dependent codebook initialization; a random codebook collapses to 2-3
  used codes).
- Token times: expected frame-centre time under the cross-attention weights, a learned softmax
  mix over layers and heads (`token_times`; uniform at init); gradients flow through the
  attention, so the timing losses train it and pick the heads that locate the token.
- Location-aware cross-attention (``time_bias_frames > 0``): every cross-attention logit gets a
  learned per-head, per-layer bias indexed by the offset, in encoder frames (rounded, clipped to
  +-time_bias_frames), between the frame and the time of the position's *input* token. In decoding
  that time is the previous step's output time; in teacher forcing, the (shifted) target times. A
  decoder without it has to infer where it is in the audio from the token prefix alone, and in short
  runs it did not: it learned a language model over the targets and ignored H (docs/results.md).
"""

from collections.abc import Mapping
import dataclasses
import functools
import math
from typing import Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pairalign_jax import code_groups as code_groups_lib
from pairalign_jax import config_lib
from pairalign_jax import units as units_lib
from pairalign_jax import vocab as vocab_lib

Array = jax.Array
_NEG_INF = -1e9
TIME_HEADS = ('centroid', 'pointer')  # ModelConfig.time_head
LOCATION_ANCHORS = ('input', 'previous_layer')  # ModelConfig.location_anchor


# ----------------------------------------------------------------------------------- config
# `ModelConfig.remat_policy` -> the jax.checkpoint policy nn.remat runs the layers with.
REMAT_POLICIES = {
  'nothing': jax.checkpoint_policies.nothing_saveable,
  'weight_matmuls': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
  'matmuls': jax.checkpoint_policies.dots_saveable,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Model hyper-parameters (hashable, so it can be a jit static argument).

  Built by `from_config` (keys and defaults: `default_config.py`); no field has a default of its
  own, so there is one source of truth for a model's shape.
  """

  d_model: int
  num_heads: int
  mlp_dim: int
  enc_layers: int
  dec_layers: int
  subsample: int
  dropout_rate: float
  attention_dropout_rate: float
  codebook_size: int
  code_dim: int
  max_len: int
  scan_layers: bool
  remat: bool
  # What nn.remat keeps from the forward pass (`REMAT_POLICIES`): 'nothing' recomputes every
  # layer's forward in the backward pass (least memory); 'weight_matmuls' keeps the outputs of the
  # matmuls with a weight (projections, MLP) and recomputes attention scores and the elementwise
  # ops; 'matmuls' also keeps the attention einsums.
  remat_policy: str
  dtype: str
  recon_channels: int
  n_mels: int
  frame_seconds: float  # encoder frame duration: subsample * hop / sample_rate
  enc_positions: str  # 'sinusoidal' | 'learned'
  enc_max_frames: int  # learned encoder positions: table size (frames after subsampling)
  vq_ema_decay: float
  vq_epsilon: float
  dead_code_threshold: float
  vq_reseed: bool
  vq_diversity_temperature: float
  # 'vq_stats' also holds the chosen code grouping ('code_groups', int32 [K], -1 until chosen;
  # config.targets.group_candidates > 1, code_group_choice.py). The VQ only carries it.
  stores_code_groups: bool
  # 'vq_stats' also holds the acoustic-unit centroids [unit_clusters, unit_dim] of
  # `loss.code_pred_targets = 'units'` (pairalign_jax/units.py; zeros until fitted). 0 = none.
  unit_clusters: int
  unit_dim: int
  # Location-aware cross-attention: > 0 adds a learned per-head bias over the offset (in encoder
  # frames, clipped to +-time_bias_frames) between each frame and the time of the *input* token
  # (the previous token's time), so the decoder knows where it is in the audio. 0 = off.
  time_bias_frames: int
  # The location bias is this times its parameter (which starts as the prior divided by it): Adam
  # moves a parameter about lr per step, so a scale of 10 lets the bias sharpen 10x faster than
  # the 1 that the first runs used (whose tables stayed near their 3-frame-wide prior).
  time_bias_scale: float
  # Decoder-side encoder layers: Transformer blocks (no dropout) between H and the decoder's
  # cross-attention, trained only by the sequence terms. With `loss.sequence_losses_train_encoder
  # = False` they let the decoder adapt H to its strings while the encoder (and the VQ codes, the
  # targets) keep what stage 0 learned. 0 = none (the decoder reads H directly).
  adapter_layers: int
  # The decoder's cross-attention reads H plus a learned embedding of each frame's VQ code (the
  # model's own codes of the same H, no gradient through the assignment): the decoder is given the
  # frame labels its VQ-derived targets are made from, so it can find where one run of codes ends
  # and the next begins. False = H alone.
  decoder_reads_codes: bool
  # How the decoder places each token in the audio (the time it feeds back as the next input
  # time): 'centroid' = a learned mix of its cross-attention heads' centroids, trained by a smooth
  # L1 loss toward the target time; 'pointer' = a distribution over the encoder frames of its own
  # (the last layer's cross-attention keys, its own queries and location bias), trained by cross
  # entropy on the target token's frame, read as its most likely frame when not training.
  time_head: str
  # Where each decoder layer's location bias is centred: 'input' = every layer on the input
  # token's time; 'previous_layer' = the first layer on the input time, each later layer on the
  # time the layer before it found (its heads' centroids mixed by its time-head weights), so a
  # layer can re-find the previous token's run by its content and the next layer looks on from
  # there instead of from a fed-back time that may have drifted. Needs the centroid time head and
  # unscanned decoder layers.
  location_anchor: str

  def __post_init__(self):
    if self.d_model % self.num_heads:
      raise ValueError(
        f'model.d_model ({self.d_model}) must be divisible by model.num_heads ({self.num_heads})'
      )
    if self.subsample < 1 or self.subsample & (self.subsample - 1):
      raise ValueError(
        f'model.subsample must be a power of two (1, 2, 4, ...), got {self.subsample}'
      )
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(
        f'model.remat_policy must be one of {sorted(REMAT_POLICIES)}, got {self.remat_policy!r}'
      )
    if self.dtype not in ('float32', 'bfloat16'):
      raise ValueError(f"model.dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
    if self.enc_positions not in ('sinusoidal', 'learned'):
      raise ValueError(
        f"model.enc_positions must be 'sinusoidal' or 'learned', got {self.enc_positions!r}"
      )
    if self.codebook_size < 2:
      raise ValueError(f'model.codebook_size must be >= 2, got {self.codebook_size}')
    if self.max_len < 1:
      raise ValueError(f'model.max_len must be >= 1, got {self.max_len}')
    if self.adapter_layers < 0:
      raise ValueError(f'model.adapter_layers must be >= 0, got {self.adapter_layers}')
    if self.time_bias_frames < 0:
      raise ValueError(f'model.time_bias_frames must be >= 0, got {self.time_bias_frames}')
    if not self.time_bias_scale > 0:
      raise ValueError(f'model.time_bias_scale must be positive, got {self.time_bias_scale}')
    if self.time_head not in TIME_HEADS:
      raise ValueError(f'model.time_head must be one of {TIME_HEADS}, got {self.time_head!r}')
    if self.time_head == 'pointer' and self.time_bias_frames == 0:
      raise ValueError(
        "model.time_head='pointer' needs the location-aware decoder (model.time_bias_frames > 0): "
        'it points at a frame relative to the input time'
      )
    if self.location_anchor not in LOCATION_ANCHORS:
      raise ValueError(
        f'model.location_anchor must be one of {LOCATION_ANCHORS}, got {self.location_anchor!r}'
      )
    if self.location_anchor == 'previous_layer' and (
      self.time_head != 'centroid' or self.scan_layers or self.time_bias_frames == 0
    ):
      raise ValueError(
        "model.location_anchor='previous_layer' needs model.time_head='centroid' (each layer's "
        'time), model.time_bias_frames > 0 and model.scan_layers=False'
      )

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'ModelConfig':
    """Reads config.model, config.vq and the frame timing from config.audio / config.frontend."""
    m, vq = config.model, config.vq
    return cls(
      d_model=int(m.d_model),
      num_heads=int(m.num_heads),
      mlp_dim=int(m.mlp_dim),
      enc_layers=int(m.enc_layers),
      dec_layers=int(m.dec_layers),
      subsample=int(m.subsample),
      dropout_rate=float(m.dropout_rate),
      attention_dropout_rate=float(m.attention_dropout_rate),
      codebook_size=int(m.codebook_size),
      code_dim=int(m.code_dim),
      max_len=int(m.max_len),
      scan_layers=bool(m.scan_layers),
      remat=bool(m.remat),
      remat_policy=str(m.remat_policy),
      dtype=str(m.dtype),
      recon_channels=int(m.recon_channels),
      n_mels=int(config.frontend.n_mels),
      frame_seconds=config_lib.encoder_frame_seconds(config),
      enc_positions=str(m.enc_positions),
      enc_max_frames=max(1, config_lib.mel_frames_per_segment(config) // int(m.subsample)),
      vq_ema_decay=float(vq.ema_decay),
      vq_epsilon=float(vq.epsilon),
      dead_code_threshold=float(vq.dead_code_threshold),
      vq_reseed=bool(vq.reseed),
      vq_diversity_temperature=float(vq.diversity_temperature),
      stores_code_groups=int(config.targets.group_candidates) > 1,
      unit_clusters=int(config.loss.unit_clusters) if _predicts_units(config) else 0,
      unit_dim=2 * int(config.loss.unit_coeffs) if _predicts_units(config) else 0,
      time_bias_frames=int(m.time_bias_frames),
      time_bias_scale=float(m.time_bias_scale),
      adapter_layers=int(m.adapter_layers),
      decoder_reads_codes=bool(m.decoder_reads_codes),
      time_head=str(m.time_head),
      location_anchor=str(m.location_anchor),
    )

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def vocab_size(self) -> int:
    return vocab_lib.Vocab(self.codebook_size).size

  @property
  def activation_dtype(self):
    return jnp.bfloat16 if self.dtype == 'bfloat16' else jnp.float32


def _predicts_units(config: ml_collections.ConfigDict) -> bool:
  return config.loss.get('code_pred_targets', 'vq') == 'units'


@flax.struct.dataclass
class VQOutput:
  codes: Array  # [B, T] int32
  quantized: Array  # [B, T, c] float32, straight-through (value q, gradient of z)
  commit_loss: Array  # [] mean over frames of ||z - sg(q)||^2
  perplexity: Array  # [] exp(entropy) of the batch code histogram
  z: Array  # [B, T, c] l2-normalized projections
  reseeded: Array  # [] int32: codes re-seeded from batch vectors by this call (0 unless updating)
  diversity_loss: Array  # [] 1 - exp(H(mean soft assignment)) / K: 0 when all codes are used evenly


# ----------------------------------------------------------------------------------- helpers
def count_params(params) -> int:
  """Number of scalars in a parameter pytree (boxed with logical names or plain arrays)."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(params))))


def gather_condition(cond, idx: Array):
  """Selects rows `idx` [R] of a `condition` pytree along its batch axis (axis 1)."""
  return jax.tree.map(lambda a: jnp.take(a, idx, axis=1), cond)


def frame_centres(num_frames: int, frame_seconds: float) -> Array:
  """[T] centre time in seconds of each encoder frame: (t + 0.5) * frame_seconds."""
  return (jnp.arange(num_frames, dtype=jnp.float32) + 0.5) * frame_seconds


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
  """[length, dim] sin/cos table (Vaswani et al.), float32."""
  pos = np.arange(length, dtype=np.float64)[:, None]
  half = dim // 2
  inv = np.exp(-math.log(10_000.0) * np.arange(half, dtype=np.float64) / max(half - 1, 1))
  ang = pos * inv[None, :]
  table = np.concatenate([np.sin(ang), np.cos(ang)], axis=1)
  if dim % 2:
    table = np.pad(table, ((0, 0), (0, 1)))
  return table.astype(np.float32)


def l2_normalize(x: Array, eps: float = 1e-6) -> Array:
  return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)


def _constrain(x, names):
  return nn.with_logical_constraint(x, names)


def _dense(cfg: ModelConfig, features, names, name: str, *, axis=-1, dtype=None, bias=True):
  """DenseGeneral with float32 params and logical axis names on kernel and bias."""
  feats = features if isinstance(features, tuple) else (features,)
  n_out = len(feats)
  return nn.DenseGeneral(
    features=features,
    axis=axis,
    use_bias=bias,
    dtype=dtype or cfg.activation_dtype,
    param_dtype=jnp.float32,
    kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), names),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), names[-n_out:]),
    name=name,
  )


def _layer_norm(cfg: ModelConfig, name: str):
  return nn.LayerNorm(
    dtype=cfg.activation_dtype,
    param_dtype=jnp.float32,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ('embed',)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('embed',)),
    name=name,
  )


def _flat_init(init, n_in: int):
  """`init` drawn on the 2-D shape [prod(first n_in dims), prod(the rest)] and reshaped: how
  nn.DenseGeneral draws its kernel (xavier's fans are the flat ones)."""

  def fn(key, shape, dtype=jnp.float32):
    flat = (int(np.prod(shape[:n_in])), int(np.prod(shape[n_in:])))
    return jnp.reshape(init(key, flat, dtype), shape)

  return fn


class HeadsDense(nn.Module):
  """An attention projection in the heads-first layout, with nn.DenseGeneral's parameters.

  ``out=False``: x [B,L,d_in] -> [B,H,L,hd] (kernel [d_in,H,hd], bias [H,hd]);
  ``out=True``:  x [B,H,L,hd] -> [B,L,d] (kernel [H,hd,d], bias [d]).
  The parameters ('kernel', 'bias': names, shapes, float32, initial values and logical axes) are
  those of `_dense` (nn.DenseGeneral) with features ``(H, hd)`` / ``axis=(-2, -1)``, so
  checkpoints written with DenseGeneral load unchanged and compute the same function; only the
  activations are laid out heads first, so every attention einsum is a plain batched matmul over
  [B, H] (no transposes of q, k, v or of the attention output).
  """

  cfg: ModelConfig
  out: bool = False

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    h, hd = cfg.num_heads, cfg.head_dim
    if self.out:
      shape, names, n_in = (h, hd, cfg.d_model), ('heads', 'kv', 'embed'), 2
    else:
      shape, names, n_in = (x.shape[-1], h, hd), ('embed', 'heads', 'kv'), 1
    kernel = self.param(
      'kernel',
      nn.with_logical_partitioning(_flat_init(nn.initializers.xavier_uniform(), n_in), names),
      shape,
      jnp.float32,
    )
    bias = self.param(
      'bias',
      nn.with_logical_partitioning(nn.initializers.zeros_init(), names[n_in:]),
      shape[n_in:],
      jnp.float32,
    )
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=cfg.activation_dtype)
    if self.out:
      return jnp.einsum('bhlk,hkd->bld', x, kernel) + bias  # [B,L,d]
    return jnp.einsum('bld,dhk->bhlk', x, kernel) + bias[:, None, :]  # [B,H,L,hd]


def _attention_weights(
  q: Array, k: Array, mask: Optional[Array], bias: Optional[Array] = None
) -> Array:
  """q [B,H,Lq,hd], k [B,H,Lk,hd], mask broadcastable to [B,H,Lq,Lk], optional additive bias
  [B,H,Lq,Lk] -> float32 weights [B,H,Lq,Lk]."""
  scale = 1.0 / math.sqrt(q.shape[-1])
  s = jnp.einsum('bhqd,bhkd->bhqk', q, k, preferred_element_type=jnp.float32) * scale
  if bias is not None:
    s = s + bias
  if mask is not None:
    s = jnp.where(mask, s, _NEG_INF)
  return jax.nn.softmax(s, axis=-1)


class Mlp(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, train: bool):
    cfg = self.cfg
    y = _dense(cfg, cfg.mlp_dim, ('embed', 'mlp'), 'wi')(x)
    y = nn.gelu(y)
    y = nn.Dropout(cfg.dropout_rate)(y, deterministic=not train)
    return _dense(cfg, cfg.d_model, ('mlp', 'embed'), 'wo')(y)


# ----------------------------------------------------------------------------------- encoder
class EncoderLayer(nn.Module):
  """Pre-LN Transformer block (bidirectional self-attention + MLP). Scan-compatible."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, train: bool):
    cfg = self.cfg
    y = _layer_norm(cfg, 'ln_attn')(x)
    q = HeadsDense(cfg, name='query')(y)  # [B,H,T,hd]
    k = HeadsDense(cfg, name='key')(y)  # [B,H,T,hd]
    v = HeadsDense(cfg, name='value')(y)  # [B,H,T,hd]
    w = _attention_weights(q, k, None)  # [B,H,T,T]
    w = nn.Dropout(cfg.attention_dropout_rate)(w, deterministic=not train)
    o = jnp.einsum('bhqk,bhkd->bhqd', w.astype(v.dtype), v)  # [B,H,T,hd]
    o = HeadsDense(cfg, out=True, name='out')(o)  # [B,T,d]
    x = x + nn.Dropout(cfg.dropout_rate)(o, deterministic=not train)
    y = _layer_norm(cfg, 'ln_mlp')(x)
    x = x + nn.Dropout(cfg.dropout_rate)(Mlp(cfg, name='mlp')(y, train), deterministic=not train)
    return _constrain(x, ('batch', 'frames', 'embed')), None


def _remat(layer_cls, cfg: ModelConfig, static_argnums, prevent_cse: bool = True):
  """`layer_cls` under nn.remat with `cfg.remat_policy` (itself when `cfg.remat` is off)."""
  if not cfg.remat:
    return layer_cls
  return nn.remat(
    layer_cls,
    prevent_cse=prevent_cse,
    static_argnums=static_argnums,
    policy=REMAT_POLICIES[cfg.remat_policy],
  )


def _stack(layer_cls, cfg: ModelConfig, num_layers: int, name: str, in_axes, static_argnums):
  """nn.scan over `num_layers` copies of `layer_cls` (with optional nn.remat inside)."""
  cls = _remat(layer_cls, cfg, static_argnums, prevent_cse=False)
  return nn.scan(
    cls,
    variable_axes={'params': 0},
    split_rngs={'params': True, 'dropout': True},
    in_axes=in_axes,
    length=num_layers,
    metadata_params={nn.PARTITION_NAME: 'layers'},
  )(cfg, name=name)


class Encoder(nn.Module):
  """log-mel [B,F,M] -> H [B, F // subsample, d]."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, mel, train: bool):
    cfg = self.cfg
    if mel.ndim != 3 or mel.shape[-1] != cfg.n_mels:
      raise ValueError(f'mel must be [batch, frames, {cfg.n_mels}], got shape {mel.shape}')
    s = cfg.subsample
    t = mel.shape[1] // s
    if t < 1:
      raise ValueError(f'mel has {mel.shape[1]} frames, fewer than model.subsample={s}')
    x = mel[:, : t * s].astype(cfg.activation_dtype)
    x = _constrain(x, ('batch', 'frames', 'mel'))
    for i in range(int(math.log2(s))):
      x = nn.Conv(
        cfg.d_model,
        (3,),
        strides=(2,),
        padding='SAME',
        dtype=cfg.activation_dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), (None, 'channels', 'embed')
        ),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('embed',)),
        name=f'subsample_{i}',
      )(x)
      x = nn.gelu(x)
    x = _dense(cfg, cfg.d_model, ('channels', 'embed'), 'input_proj')(x)  # [B,T,d]
    if cfg.enc_positions == 'learned':
      if t > cfg.enc_max_frames:
        raise ValueError(
          f'{t} encoder frames exceed the learned position table ({cfg.enc_max_frames})'
        )
      pos = self.param(
        'pos_embed',
        nn.with_logical_partitioning(nn.initializers.normal(0.02), ('frames', 'embed')),
        (cfg.enc_max_frames, cfg.d_model),
      )
      x = x + pos[None, :t].astype(x.dtype)
    else:
      x = x + jnp.asarray(sinusoidal_positions(t, cfg.d_model), x.dtype)[None]
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)
    x = _constrain(x, ('batch', 'frames', 'embed'))
    if cfg.scan_layers:
      x, _ = _stack(EncoderLayer, cfg, cfg.enc_layers, 'layers', (nn.broadcast,), (2,))(x, train)
    else:
      layer_cls = _remat(EncoderLayer, cfg, (2,))
      for i in range(cfg.enc_layers):
        x, _ = layer_cls(cfg, name=f'layers_{i}')(x, train)
    return _layer_norm(cfg, 'ln_out')(x)


# ----------------------------------------------------------------------------------- VQ head
class VectorQuantizer(nn.Module):
  """Projection + l2-normalized nearest-code lookup with an EMA codebook in 'vq_stats'."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, h, train: bool) -> VQOutput:
    cfg = self.cfg
    k, c = cfg.codebook_size, cfg.code_dim
    z = _dense(cfg, c, ('embed', 'code'), 'proj', dtype=jnp.float32)(h.astype(jnp.float32))
    z = l2_normalize(z)  # [B,T,c]

    def init_codebook():
      return l2_normalize(jax.random.normal(self.make_rng('params'), (k, c), jnp.float32))

    codebook = self.variable(
      'vq_stats', 'codebook', nn.with_logical_partitioning(init_codebook, ('codebook', 'code'))
    )
    # Counts start at 0: with re-seeding on, every code is dead at the first training step and is
    # re-seeded from that batch's vectors (a data-dependent initialization of the codebook).
    cluster_size = self.variable(
      'vq_stats',
      'cluster_size',
      nn.with_logical_partitioning(lambda: jnp.zeros((k,), jnp.float32), ('codebook',)),
    )
    embed_sum = self.variable(
      'vq_stats',
      'embed_sum',
      nn.with_logical_partitioning(lambda: codebook.value * 1.0, ('codebook', 'code')),
    )
    if cfg.stores_code_groups:  # carried, never read here (code_groups.groups_from_vq_stats)
      self.variable(
        'vq_stats',
        code_groups_lib.CHOSEN,
        nn.with_logical_partitioning(lambda: jnp.full((k,), -1, jnp.int32), (None,)),
      )

    if cfg.unit_clusters > 0:  # carried, never read here (objective.compute_terms)
      self.variable(
        'vq_stats',
        units_lib.UNIT_CENTROIDS,
        nn.with_logical_partitioning(
          lambda: jnp.zeros((cfg.unit_clusters, cfg.unit_dim), jnp.float32), (None, None)
        ),
      )

    e = jax.lax.stop_gradient(codebook.value)  # [K,c]
    sim = jnp.einsum('btc,kc->btk', z, e, precision=jax.lax.Precision.HIGHEST)  # [B,T,K]
    codes = jnp.argmax(sim, axis=-1).astype(jnp.int32)  # [B,T]
    q = jnp.take(e, codes, axis=0)  # [B,T,c]
    commit = jnp.mean(jnp.sum(jnp.square(z - q), axis=-1))
    quantized = z + jax.lax.stop_gradient(q - z)
    onehot = jax.nn.one_hot(codes, k, dtype=jnp.float32)  # [B,T,K]
    probs = jnp.mean(onehot, axis=(0, 1))
    perplexity = jnp.exp(-jnp.sum(probs * jnp.log(probs + 1e-10)))
    # Codebook-usage (diversity) penalty, as wav2vec 2.0's: the batch-mean soft assignment
    # softmax(z . e / temperature) should use every code; its gradient reaches z (and the encoder).
    soft = jax.nn.softmax(sim / cfg.vq_diversity_temperature, axis=-1)  # [B,T,K]
    mean_soft = jnp.mean(soft, axis=(0, 1))  # [K]
    soft_ppl = jnp.exp(-jnp.sum(mean_soft * jnp.log(mean_soft + 1e-10)))
    diversity_loss = 1.0 - soft_ppl / k

    reseeded = jnp.zeros((), jnp.int32)
    if train and self.is_mutable_collection('vq_stats') and not self.is_initializing():
      flat_z = jax.lax.stop_gradient(z).reshape(-1, c)  # [N,c]
      flat_onehot = onehot.reshape(-1, k)  # [N,K]
      new_cs, new_es, new_cb = ema_codebook_update(
        cluster_size.value,
        embed_sum.value,
        flat_onehot,
        flat_z,
        decay=cfg.vq_ema_decay,
        epsilon=cfg.vq_epsilon,
      )
      if cfg.vq_reseed and cfg.dead_code_threshold > 0:
        reseeded = jnp.sum(new_cs < cfg.dead_code_threshold).astype(jnp.int32)
        new_cs, new_es, new_cb = reseed_dead_codes(
          self.make_rng('vq'), new_cs, new_es, new_cb, flat_z, cfg.dead_code_threshold
        )
      cluster_size.value, embed_sum.value, codebook.value = new_cs, new_es, new_cb
    return VQOutput(
      codes=codes,
      quantized=quantized,
      commit_loss=commit,
      perplexity=perplexity,
      z=z,
      reseeded=reseeded,
      diversity_loss=diversity_loss,
    )


def ema_codebook_update(cluster_size, embed_sum, onehot, z, *, decay: float, epsilon: float):
  """VQ-VAE-2 EMA step. cluster_size [K], embed_sum [K,c], onehot [N,K], z [N,c].

  n_k <- decay n_k + (1 - decay) sum_i onehot_ik;
  s_k <- decay s_k + (1 - decay) sum_i onehot_ik z_i;
  smoothed n_k = (n_k + eps) / (sum n + K eps) * sum n;  codebook_k = l2norm(s_k / smoothed n_k).
  Returns (cluster_size, embed_sum, codebook).
  """
  k = cluster_size.shape[0]
  counts = jnp.sum(onehot, axis=0)  # [K]
  sums = jnp.einsum('nk,nc->kc', onehot, z, precision=jax.lax.Precision.HIGHEST)  # [K,c]
  cluster_size = decay * cluster_size + (1.0 - decay) * counts
  embed_sum = decay * embed_sum + (1.0 - decay) * sums
  total = jnp.sum(cluster_size)
  smoothed = (cluster_size + epsilon) / (total + k * epsilon) * total
  codebook = l2_normalize(embed_sum / smoothed[:, None])
  return cluster_size, embed_sum, codebook


def reseed_dead_codes(rng, cluster_size, embed_sum, codebook, z, threshold: float):
  """Codes whose EMA count is below `threshold` get a random batch vector of z [N,c].

  The EMA count of a code is about the number of frames per batch assigned to it, so `threshold`
  reads "fewer than this many frames per batch". A re-seeded code restarts at count
  `2 * threshold` (so it survives about log(2)/(1-decay) steps unused before it is re-seeded again).
  """
  dead = cluster_size < threshold  # [K]
  idx = jax.random.randint(rng, cluster_size.shape, 0, z.shape[0])
  fresh = jnp.take(z, idx, axis=0)  # [K,c]
  restart = 2.0 * threshold
  codebook = jnp.where(dead[:, None], fresh, codebook)
  embed_sum = jnp.where(dead[:, None], fresh * restart, embed_sum)
  cluster_size = jnp.where(dead, restart, cluster_size)
  return cluster_size, embed_sum, codebook


# ----------------------------------------------------------------------------------- heads
class MelDecoder(nn.Module):
  """Quantized frames [B,T,c] -> mel_hat [B, T*subsample, n_mels] (stage-0 reconstruction)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, quantized):
    cfg = self.cfg
    ch = cfg.recon_channels

    def conv(x, name):
      return nn.Conv(
        ch,
        (3,),
        padding='SAME',
        dtype=cfg.activation_dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), (None, None, 'channels')
        ),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('channels',)),
        name=name,
      )(x)

    x = _dense(cfg, ch, ('code', 'channels'), 'input_proj')(quantized)
    x = nn.gelu(conv(x, 'conv_in'))
    for i in range(int(math.log2(cfg.subsample))):
      x = jnp.repeat(x, 2, axis=1)
      x = nn.gelu(conv(x, f'up_{i}'))
    x = _dense(cfg, cfg.n_mels, ('channels', 'mel'), 'output_proj')(x)
    return x.astype(jnp.float32)


# ----------------------------------------------------------------------------------- decoder
def location_prior_init(key, shape, dtype=jnp.float32, scale: float = 1.0):
  """Initial location bias table [2R+1, H]: a Gaussian bump over the frame offset from the input
  token's time, ``-(o - mu_h)^2 / (2 sigma^2)`` with sigma = 3 frames and the heads' centres mu_h
  spread over 2..6 frames *after* the previous token (about one token spacing at ~12 tokens/s and
  20 ms frames). A zero table is learned far too slowly (Adam moves it ~lr per step) for the
  decoder to find its place before it settles on ignoring H; the prior makes it local from step 0.
  The parameter holds the bump divided by `scale` (``model.time_bias_scale``): the bias is
  ``scale * parameter``, so it starts as the same bump whatever the scale.
  """
  del key
  size, heads = shape
  r = (size - 1) // 2
  offsets = jnp.arange(-r, r + 1, dtype=jnp.float32)[:, None]  # [2R+1, 1]
  centres = jnp.linspace(2.0, 6.0, heads) if heads > 1 else jnp.full((1,), 4.0)  # [H]
  return (-((offsets - centres[None, :]) ** 2) / (2 * 3.0**2) / scale).astype(dtype)


def _location_table(module: nn.Module, cfg: 'ModelConfig', name: str) -> Array:
  """A location bias table [2R+1, H] as the bias it adds: ``time_bias_scale * parameter``."""
  table = module.param(
    name,
    nn.with_logical_partitioning(
      functools.partial(location_prior_init, scale=cfg.time_bias_scale), (None, 'heads')
    ),
    (2 * cfg.time_bias_frames + 1, cfg.num_heads),
  )
  return cfg.time_bias_scale * table.astype(jnp.float32)


def location_bias(table: Array, in_times: Array, num_frames: int, frame_seconds: float) -> Array:
  """The learned bias of every frame for every query, by their offset in frames.

  table [2R+1, H] (offsets -R..R, clipped), in_times [B,Lq] seconds (the input token's time; no
  gradient) -> [B,H,Lq,T] float32.
  """
  r = (table.shape[0] - 1) // 2
  centres = frame_centres(num_frames, frame_seconds)  # [T]
  offset = (centres[None, None, :] - jax.lax.stop_gradient(in_times)[:, :, None]) / frame_seconds
  idx = jnp.clip(jnp.round(offset), -r, r).astype(jnp.int32) + r  # [B,Lq,T]
  return jnp.take(table.astype(jnp.float32), idx, axis=0).transpose(0, 3, 1, 2)  # [B,H,Lq,T]


def pointer_frames(target_times: Array, num_frames: int, frame_seconds: float) -> Array:
  """The frame [B,L] int32 that each target time [B,L] (seconds) falls in, clipped to the
  segment: the class of the pointer time head's cross entropy."""
  idx = jnp.floor(target_times / frame_seconds).astype(jnp.int32)
  return jnp.clip(idx, 0, num_frames - 1)


# Scale of the time-head logits: Adam moves a parameter about lr per step, and a softmax needs
# logits several units apart to pick a head, so the parameter is scaled up instead of the lr.
TIME_HEAD_LOGIT_SCALE = 5.0


def token_times(head_times: Array, time_logits: Array) -> Array:
  """Token times from every decoder layer's per-head attention centroids.

  head_times [Ld, B, H, Lq] seconds, time_logits [Ld, H] (parameters) -> [B, Lq] seconds: a
  softmax-weighted mean over all layers and heads. The timing loss learns which heads locate the
  token; the rest are free to look elsewhere (the next token, context) without pulling the time
  (measured: with a plain mean the time overshot the run centre by ~0.04 s per token, and the
  decoder's own times drifted 0.3 s within a string).
  """
  ld, h = time_logits.shape
  weights = jax.nn.softmax(
    TIME_HEAD_LOGIT_SCALE * time_logits.astype(jnp.float32).reshape(-1)
  ).reshape(ld, h)
  return jnp.einsum('lbhq,lh->bq', head_times.astype(jnp.float32), weights)


class DecoderLayer(nn.Module):
  """Pre-LN decoder block: causal self-attention, cross-attention to H, MLP.

  mode 'score': x [B,L,d]; layer_in {'k','v': [B,H,T,hd]} -> (x, {'head_times': [B,H,L],
                'time_logits': [H]}).
  mode 'step':  x [B,1,d] at position `pos`; layer_in also has 'cache_k','cache_v' [B,H,Lmax,hd]
                (positions < pos valid). This position's k/v are written into the cache at `pos`
                and the query attends to positions <= pos -> (x, {'head_times': [B,H,1],
                'time_logits': [H], 'cache_k','cache_v': the updated cache [B,H,Lmax,hd]}).
  in_times [B,Lq]: the time (seconds) of each position's input token, for the location bias
  (``cfg.time_bias_frames > 0``); unused otherwise.
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, layer_in, pos, in_times, train: bool, mode: str):
    cfg = self.cfg
    h = cfg.num_heads
    out = {}
    # Causal self-attention.
    y = _layer_norm(cfg, 'ln_self')(x)
    q = HeadsDense(cfg, name='self_query')(y)  # [B,H,Lq,hd]
    k = HeadsDense(cfg, name='self_key')(y)  # [B,H,Lq,hd]
    v = HeadsDense(cfg, name='self_value')(y)  # [B,H,Lq,hd]
    if mode == 'score':
      length = x.shape[1]
      causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
      w = _attention_weights(q, k, causal)  # [B,H,L,L]
      w = nn.Dropout(cfg.attention_dropout_rate)(w, deterministic=not train)
      o = jnp.einsum('bhqk,bhkd->bhqd', w.astype(v.dtype), v)  # [B,H,L,hd]
    elif mode == 'step':
      cache_k, cache_v = layer_in['cache_k'], layer_in['cache_v']  # [B,H,Lmax,hd]
      # One position written: in place for a per-layer cache that the caller drops (the decode
      # loops carry the returned one), so no step copies it.
      cache_k = jax.lax.dynamic_update_slice_in_dim(cache_k, k.astype(cache_k.dtype), pos, axis=2)
      cache_v = jax.lax.dynamic_update_slice_in_dim(cache_v, v.astype(cache_v.dtype), pos, axis=2)
      valid = (jnp.arange(cache_k.shape[2]) <= pos)[None, None, None, :]  # [1,1,1,Lmax]
      w = _attention_weights(q, cache_k, valid)  # [B,H,1,Lmax]
      o = jnp.einsum('bhqk,bhkd->bhqd', w.astype(cache_v.dtype), cache_v)  # [B,H,1,hd]
      out['cache_k'], out['cache_v'] = cache_k, cache_v
    else:
      raise ValueError(f"mode must be 'score' or 'step', got {mode!r}")
    o = HeadsDense(cfg, out=True, name='self_out')(o)  # [B,Lq,d]
    x = x + nn.Dropout(cfg.dropout_rate)(o, deterministic=not train)
    # Cross-attention to the condition (K/V projected once per H by `CrossKV`).
    y = _layer_norm(cfg, 'ln_cross')(x)
    q = HeadsDense(cfg, name='cross_query')(y)  # [B,H,Lq,hd]
    ck, cv = layer_in['k'], layer_in['v']  # [B,H,T,hd]
    centres = frame_centres(ck.shape[2], cfg.frame_seconds)  # [T]
    bias = None
    if cfg.time_bias_frames > 0:
      table = _location_table(self, cfg, 'time_bias')  # [2R+1, H]
      bias = location_bias(table, in_times, ck.shape[2], cfg.frame_seconds)  # [B,H,Lq,T]
    w = _attention_weights(q, ck, None, bias)  # [B,H,Lq,T]
    # Each head's attention centroid, and this layer's learned say in the token time (combined
    # over layers and heads by `token_times`; zeros = the plain mean of every head's centroid).
    if cfg.time_head == 'centroid':  # the pointer time head (`TimePointer`) reads neither
      out['head_times'] = jnp.einsum('bhqt,t->bhq', w, centres)  # [B,H,Lq]
      out['time_logits'] = self.param(
        'time_head_logits', nn.with_logical_partitioning(nn.initializers.zeros, ('heads',)), (h,)
      )  # [H]
    w = nn.Dropout(cfg.attention_dropout_rate)(w, deterministic=not train)
    o = jnp.einsum('bhqk,bhkd->bhqd', w.astype(cv.dtype), cv)  # [B,H,Lq,hd]
    o = HeadsDense(cfg, out=True, name='cross_out')(o)  # [B,Lq,d]
    x = x + nn.Dropout(cfg.dropout_rate)(o, deterministic=not train)
    # MLP.
    y = _layer_norm(cfg, 'ln_mlp')(x)
    x = x + nn.Dropout(cfg.dropout_rate)(Mlp(cfg, name='mlp')(y, train), deterministic=not train)
    return _constrain(x, ('batch', 'length', 'embed')), out


class TimePointer(nn.Module):
  """The 'pointer' time head (``cfg.time_head``): where in the audio each output token is.

  x [B,Lq,d] (the last decoder layer's output), keys [B,H,T,hd] (that layer's cross-attention
  keys), in_times [B,Lq] seconds -> log-probabilities [B,Lq,T] over the encoder frames: a mixture
  of H pointers, each a softmax over the frames of its query against the keys plus a learned bias
  over the frame's offset from the input time (initialised as the cross-attention's,
  `location_prior_init`). Trained by the cross entropy of the target token's frame, so a frame
  one off costs as much as a frame ten off, where a centroid's L1 loss shrinks with the error.
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, keys, in_times):
    cfg = self.cfg
    h, num_frames = cfg.num_heads, keys.shape[2]
    q = HeadsDense(cfg, name='query')(_layer_norm(cfg, 'ln')(x))  # [B,H,Lq,hd]
    table = _location_table(self, cfg, 'location_bias')  # [2R+1, H]
    logits = jnp.einsum('bhqd,bhtd->bhqt', q, keys.astype(q.dtype)).astype(jnp.float32)
    logits = logits / np.sqrt(cfg.head_dim) + location_bias(
      table, in_times, num_frames, cfg.frame_seconds
    )  # [B,H,Lq,T]
    return jax.nn.logsumexp(jax.nn.log_softmax(logits, axis=-1), axis=1) - np.log(h)  # [B,Lq,T]


def pointer_times(log_probs: Array, frame_seconds: float, train: bool) -> Array:
  """Token times [B,L] from the pointer's log-probabilities [B,L,T]: in training the expected
  frame centre (differentiable, for the monotonicity and coverage terms), otherwise the centre of
  the most likely frame (what decoding feeds back: a whole frame, as the targets' times are with
  `targets.time_anchor='end'`)."""
  centres = frame_centres(log_probs.shape[-1], frame_seconds)  # [T]
  if train:
    return jnp.einsum('blt,t->bl', jnp.exp(log_probs), centres)
  return jnp.take(centres, jnp.argmax(log_probs, axis=-1))


class CrossKV(nn.Module):
  """One decoder layer's cross-attention keys/values: H [B,T,d] -> {'k','v': [B,H,T,hd]}."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, hcond, _):
    k = HeadsDense(self.cfg, name='key')(hcond)  # [B,H,T,hd]
    v = HeadsDense(self.cfg, name='value')(hcond)  # [B,H,T,hd]
    return hcond, {'k': k, 'v': v}


class Decoder(nn.Module):
  """Token decoder with cross-attention; see `PairAlign.condition/score/decode_step`."""

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.embed = nn.Embed(
      cfg.vocab_size,
      cfg.d_model,
      dtype=cfg.activation_dtype,
      param_dtype=jnp.float32,
      embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ('vocab', 'embed')),
    )
    self.pos_embed = self.param(
      'pos_embed',
      nn.with_logical_partitioning(nn.initializers.normal(0.02), ('length', 'embed')),
      (cfg.max_len, cfg.d_model),
    )
    if cfg.scan_layers:
      self.layers = _stack(
        DecoderLayer,
        cfg,
        cfg.dec_layers,
        'layers',
        (0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
        (5, 6),
      )
      self.cross_kv = nn.scan(
        CrossKV,
        variable_axes={'params': 0},
        split_rngs={'params': True},
        in_axes=(nn.broadcast,),
        length=cfg.dec_layers,
        metadata_params={nn.PARTITION_NAME: 'layers'},
      )(cfg)
    else:
      layer_cls = _remat(DecoderLayer, cfg, (5, 6))
      self.layers = [layer_cls(cfg) for _ in range(cfg.dec_layers)]
      self.cross_kv = [CrossKV(cfg) for _ in range(cfg.dec_layers)]
    if cfg.adapter_layers and cfg.scan_layers:
      self.adapter = _stack(EncoderLayer, cfg, cfg.adapter_layers, 'adapter', (nn.broadcast,), (2,))
    elif cfg.adapter_layers:
      adapter_cls = _remat(EncoderLayer, cfg, (2,))
      self.adapter = [adapter_cls(cfg) for _ in range(cfg.adapter_layers)]
    if cfg.adapter_layers:
      self.adapter_ln = _layer_norm(cfg, 'adapter_ln')
    self.dropout = nn.Dropout(cfg.dropout_rate)
    self.ln_out = _layer_norm(cfg, 'ln_out')
    self.logits_proj = _dense(cfg, cfg.vocab_size, ('embed', 'vocab'), 'logits')
    if cfg.time_head == 'pointer':
      self.time_pointer = TimePointer(cfg)

  def condition(self, hcond):
    hcond = hcond.astype(self.cfg.activation_dtype)
    if self.cfg.adapter_layers:  # [B,T,d] -> [B,T,d]: the decoder-side encoder layers
      if self.cfg.scan_layers:
        hcond, _ = self.adapter(hcond, False)
      else:
        for layer in self.adapter:
          hcond, _ = layer(hcond, False)
      hcond = self.adapter_ln(hcond)
    if self.cfg.scan_layers:
      _, kv = self.cross_kv(hcond, None)
    else:
      kvs = [m(hcond, None)[1] for m in self.cross_kv]
      kv = jax.tree.map(lambda *a: jnp.stack(a), *kvs)
    return kv  # [Ld,B,H,T,hd]

  def _run_layers(self, x, layer_in, pos, in_times, train, mode):
    """scan_layers: layer_in and the outputs are stacked [Ld, ...] (the scan slices and stacks
    them); otherwise layer_in is a sequence of per-layer dicts and so are the outputs."""
    if self.cfg.scan_layers:
      return self.layers(x, layer_in, pos, in_times, train, mode)
    outs = []
    layer_times = in_times  # [B,Lq]: where this layer's location bias is centred
    for layer, one_in in zip(self.layers, layer_in, strict=True):
      x, o = layer(x, one_in, pos, layer_times, train, mode)
      outs.append(o)
      if self.cfg.location_anchor == 'previous_layer':
        layer_times = token_times(o['head_times'][None], o['time_logits'][None])  # [B,Lq]
    return x, tuple(outs)

  def _layer_times(self, outs, stacked: bool):
    """Token times [B,Lq] from the layers' outputs (stacked by the scan, or one per layer)."""
    if not stacked:
      outs = {n: jnp.stack([o[n] for o in outs]) for n in ('head_times', 'time_logits')}
    return token_times(outs['head_times'], outs['time_logits'])

  def _per_layer(self, cond, stacked: bool):
    """The condition {'k','v': [Ld,B,H,T,hd]} as layers read it: as is for the scan, else one
    {'k','v': [B,H,T,hd]} per layer (`split_condition`, unless it already is)."""
    if stacked:
      if not isinstance(cond, dict):
        raise ValueError('model.scan_layers=True: cond must be the stacked {"k", "v"} condition')
      return cond
    return cond if isinstance(cond, (tuple, list)) else split_condition(cond)

  def _logits(self, x):
    return self.logits_proj(self.ln_out(x)).astype(jnp.float32)

  def _times(self, x, outs, layer_cond, in_times, train):
    """Token times [B,Lq] and, with the pointer time head, its log-probabilities [B,Lq,T]
    (else None). layer_cond: the condition as the layers read it (stacked or one per layer)."""
    if self.cfg.time_head == 'centroid':
      return self._layer_times(outs, self.cfg.scan_layers), None
    keys = layer_cond['k'][-1] if isinstance(layer_cond, dict) else layer_cond[-1]['k']
    log_probs = self.time_pointer(x, keys, in_times)  # [B,Lq,T]
    return pointer_times(log_probs, self.cfg.frame_seconds, train), log_probs

  def _input_times(self, in_times, shape):
    if self.cfg.time_bias_frames == 0:
      return jnp.zeros(shape, jnp.float32)  # unused
    if in_times is None:
      raise ValueError(
        'model.time_bias_frames > 0: the decoder needs the time of every input token '
        '(input_times / prev_time; sequences.shift_times of the target times)'
      )
    if in_times.shape != shape:
      raise ValueError(f'input times must have shape {shape}, got {in_times.shape}')
    return in_times.astype(jnp.float32)

  def score(self, cond, inputs, train: bool, input_times=None, target_times=None):
    cfg = self.cfg
    if inputs.ndim != 2:
      raise ValueError(f'inputs must be [batch, length] int32, got shape {inputs.shape}')
    length = inputs.shape[1]
    if length > cfg.max_len:
      raise ValueError(f'inputs have length {length} > model.max_len={cfg.max_len}')
    if cond['k'].shape[1] != inputs.shape[0]:
      raise ValueError(
        f'cond batch ({cond["k"].shape[1]}) != inputs batch ({inputs.shape[0]}); '
        'gather the condition with gather_condition'
      )
    in_times = self._input_times(input_times, inputs.shape)
    x = self.embed(inputs) + self.pos_embed[None, :length].astype(cfg.activation_dtype)
    x = self.dropout(x, deterministic=not train)
    x = _constrain(x, ('batch', 'length', 'embed'))
    layer_cond = self._per_layer(cond, self.cfg.scan_layers)
    x, outs = self._run_layers(x, layer_cond, None, in_times, train, 'score')
    times, log_probs = self._times(x, outs, layer_cond, in_times, train)  # [B,L], [B,L,T]
    if target_times is None:
      return self._logits(x), times  # [B,L,V], [B,L]
    if log_probs is None:
      raise ValueError("target_times: the time cross entropy needs model.time_head='pointer'")
    if target_times.shape != inputs.shape:
      raise ValueError(f'target_times must have shape {inputs.shape}, got {target_times.shape}')
    frames = pointer_frames(target_times, log_probs.shape[-1], cfg.frame_seconds)  # [B,L]
    time_nll = -jnp.take_along_axis(log_probs, frames[..., None], axis=-1)[..., 0]  # [B,L]
    return self._logits(x), times, time_nll

  def decode_step(self, cond, cache, token, position, prev_time=None):
    cfg = self.cfg
    in_times = self._input_times(
      None if prev_time is None else prev_time[:, None], (token.shape[0], 1)
    )
    x = self.embed(token[:, None])  # [B,1,d]
    pos = jax.lax.dynamic_slice_in_dim(self.pos_embed, position, 1, axis=0)  # [1,d]
    x = x + pos[None].astype(cfg.activation_dtype)
    if cfg.scan_layers:  # stacked: cond {'k','v': [Ld,B,H,T,hd]}, cache [Ld,B,H,Lmax,hd]
      layer_in = {'k': cond['k'], 'v': cond['v'], 'cache_k': cache['k'], 'cache_v': cache['v']}
    else:  # per layer: ({'k','v': [B,H,Lmax,hd]}, ...)
      if isinstance(cache, dict) or len(cache) != cfg.dec_layers:
        raise ValueError(
          f'model.scan_layers=False: the cache must be one dict per layer ({cfg.dec_layers}), '
          'as init_cache builds it'
        )
      layer_in = tuple(
        {**one, 'cache_k': c['k'], 'cache_v': c['v']}
        for one, c in zip(self._per_layer(cond, False), cache, strict=True)
      )
    x, outs = self._run_layers(x, layer_in, position, in_times, False, 'step')
    logits = self._logits(x)[:, 0]  # [B,V]
    times = self._times(x, outs, layer_in, in_times, False)[0][:, 0]  # [B]
    if cfg.scan_layers:
      return logits, times, {'k': outs['cache_k'], 'v': outs['cache_v']}
    return logits, times, tuple({'k': o['cache_k'], 'v': o['cache_v']} for o in outs)


# ----------------------------------------------------------------------------------- PairAlign
class PairAlign(nn.Module):
  """Encoder + VQ head + reconstruction/code/length heads + token decoder (see module docstring)."""

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.encoder = Encoder(cfg)
    self.vq = VectorQuantizer(cfg)
    self.mel_decoder = MelDecoder(cfg)
    self.code_head = _dense(cfg, cfg.codebook_size, ('embed', 'codebook'), 'code_head')
    self.length_hidden = _dense(cfg, cfg.d_model, ('embed', 'mlp'), 'length_hidden')
    self.length_out = _dense(cfg, 1, ('mlp', None), 'length_out', dtype=jnp.float32)
    self.decoder = Decoder(cfg)
    if cfg.decoder_reads_codes:
      # Unit scale, as H's features after the encoder's final layer norm.
      self.code_embed = nn.Embed(
        cfg.codebook_size,
        cfg.d_model,
        dtype=cfg.activation_dtype,
        param_dtype=jnp.float32,
        embedding_init=nn.with_logical_partitioning(
          nn.initializers.normal(1.0), ('codebook', 'embed')
        ),
      )

  def encode(self, mel, train: bool = False):
    """mel [B,F,M] -> H [B, F // subsample, d] (activation dtype)."""
    return self.encoder(mel, train)

  def quantize(self, hcond, train: bool = False) -> VQOutput:
    """H [B,T,d] -> VQOutput. EMA update (and dead-code re-seeding with rng 'vq') only when
    train=True and 'vq_stats' is mutable."""
    return self.vq(hcond, train)

  def reconstruct(self, quantized, num_frames: Optional[int] = None):
    """quantized [B,T,c] -> mel_hat [B, T*subsample, M] float32; edge-padded to `num_frames` if
    given (the encoder ignores the last F - T*subsample frames)."""
    mel_hat = self.mel_decoder(quantized)
    if num_frames is not None and num_frames != mel_hat.shape[1]:
      if num_frames < mel_hat.shape[1]:
        mel_hat = mel_hat[:, :num_frames]
      else:
        mel_hat = jnp.pad(
          mel_hat, ((0, 0), (0, num_frames - mel_hat.shape[1]), (0, 0)), mode='edge'
        )
    return mel_hat

  def predict_codes(self, hcond):
    """H [B,T,d] -> code logits [B,T,K] float32 (cross-view code prediction)."""
    return self.code_head(hcond).astype(jnp.float32)

  def predict_length(self, hcond):
    """H [B,T,d] -> predicted number of codes [B] float32 (mean-pooled H -> MLP)."""
    pooled = jnp.mean(hcond.astype(jnp.float32), axis=1)
    return self.length_out(nn.gelu(self.length_hidden(pooled)).astype(jnp.float32))[:, 0]

  def condition(self, hcond):
    """H [B,T,d] -> {'k','v': [dec_layers, B, heads, T, head_dim]} (batch axis 1). With
    `cfg.decoder_reads_codes` the memory is H + code_embed(codes of H) (the VQ head's codes, read
    without updating the codebook; `variables` must then hold 'vq_stats')."""
    return self.decoder.condition(self.decoder_memory(hcond))

  def decoder_memory(self, hcond):
    """H [B,T,d] -> what the decoder's cross-attention reads [B,T,d]: H, or H + the embedding of
    each frame's VQ code (`cfg.decoder_reads_codes`)."""
    if not self.cfg.decoder_reads_codes:
      return hcond
    codes = self.vq(jax.lax.stop_gradient(hcond), False).codes  # [B,T]
    return hcond + self.code_embed(codes).astype(hcond.dtype)

  def score(self, cond, inputs, train: bool = False, input_times=None):
    """Teacher forcing: inputs [B,L] = [BOS, y_1 .. y_{L-1}] -> (logits [B,L,V] float32,
    times [B,L] seconds). `cond` may be gathered (gather_condition) to any batch B.
    input_times [B,L]: time of each input token (0 at BOS; `sequences.shift_times` of the target
    times); required when `cfg.time_bias_frames > 0`, ignored otherwise."""
    return self.decoder.score(cond, inputs, train, input_times)

  def score_with_time_nll(self, cond, inputs, train: bool, input_times, target_times):
    """`score` plus the pointer time head's cross entropy: target_times [B,L] seconds (each
    output token's target time; PAD positions are for the caller to mask) -> (logits [B,L,V],
    times [B,L], time_nll [B,L] = -log p(the frame each target time falls in)). Needs
    ``cfg.time_head = 'pointer'``."""
    return self.decoder.score(cond, inputs, train, input_times, target_times)

  def decode_step(self, cond, cache, token, position, prev_time=None):
    """One cached decoder step (no dropout). cache (`init_cache`: stacked
    {'k','v': [layers,B,heads,Lmax,hd]} with scan_layers, else one {'k','v': [B,heads,Lmax,hd]}
    per layer) valid at positions < position; token [B] is the input at `position`, prev_time [B]
    its time (required when `cfg.time_bias_frames > 0`). Returns (logits [B,V] float32,
    times [B], the cache with this position's K/V written at `position`). Carry the returned
    cache (the one passed in is dead) and XLA updates it in place. A decode loop should step
    `unrolled(model, variables)` with `split_condition(cond)` (decode.py does): a scanned model
    slices every layer's cache, K/V and parameters out of the stacked arrays each step and stacks
    the written caches again; cond may be split already when scan_layers is False."""
    return self.decoder.decode_step(cond, cache, token, position, prev_time)

  def __call__(self, mel, tokens, train: bool = False):
    """Touches every submodule (for init): returns a dict of all head outputs."""
    hcond = self.encode(mel, train)
    vq = self.quantize(hcond, train)
    mel_hat = self.reconstruct(vq.quantized, mel.shape[1])
    logits, times = self.score(
      self.condition(hcond), tokens, train, jnp.zeros(tokens.shape, jnp.float32)
    )
    return {
      'h': hcond,
      'vq': vq,
      'mel_hat': mel_hat,
      'code_logits': self.predict_codes(hcond),
      'length': self.predict_length(hcond),
      'logits': logits,
      'times': times,
    }


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=None):
  """Zero self-attention KV cache for `PairAlign.decode_step`. With ``cfg.scan_layers`` stacked
  for the scan over layers: {'k','v': [dec_layers, batch, heads, max_len, head_dim]}; otherwise
  one {'k','v': [batch, heads, max_len, head_dim]} per layer (a tuple), so that a step neither
  slices a layer's cache out of a stacked array nor writes it back."""
  dtype = dtype or cfg.activation_dtype
  shape = (batch, cfg.num_heads, max_len, cfg.head_dim)
  if cfg.scan_layers:
    shape = (cfg.dec_layers, *shape)
    return {'k': jnp.zeros(shape, dtype), 'v': jnp.zeros(shape, dtype)}
  return tuple(
    {'k': jnp.zeros(shape, dtype), 'v': jnp.zeros(shape, dtype)} for _ in range(cfg.dec_layers)
  )


def gather_cache(cache, idx: Array):
  """Selects rows `idx` [R] of an `init_cache` cache (either layout) along its batch axis."""
  # Every cache array ends [batch, heads, max_len, head_dim] (stacked ones have layers first).
  return jax.tree.map(lambda a: jnp.take(a, idx, axis=a.ndim - 4), cache)


def split_condition(cond):
  """The stacked condition {'k','v': [Ld,B,H,T,hd]} as one {'k','v': [B,H,T,hd]} per layer, as
  `decode_step` of an unrolled model (``scan_layers=False``) reads it. Split it once, outside a
  decode loop: XLA does not move the slices out of the loop by itself."""
  return tuple({'k': cond['k'][i], 'v': cond['v'][i]} for i in range(cond['k'].shape[0]))


# Scanned submodules ('layers' of the encoder and decoder, the decoder's 'cross_kv' and 'adapter')
# and their unrolled names: '<name>_<i>'.
_SCANNED = ('layers', 'cross_kv', 'adapter')


def unstack_layers(params):
  """Parameters of a ``scan_layers=True`` model (stacked along axis 0 under `_SCANNED` names) as
  those of the same model with ``scan_layers=False`` ('<name>_<i>' per layer): same function."""
  out = {}
  for key, val in params.items():
    if key in _SCANNED:
      for i in range(jax.tree.leaves(val)[0].shape[0]):
        out[f'{key}_{i}'] = jax.tree.map(lambda a, i=i: a[i], val)
    elif isinstance(val, Mapping):
      out[key] = unstack_layers(val)
    else:
      out[key] = val
  return out


def unrolled(model: 'PairAlign', variables):
  """(model, variables) with the layers unrolled (``scan_layers=False``, no remat): the same
  function. A decode loop runs fastest this way: no step slices a layer's parameters, cache or
  cross-attention K/V out of a stacked array (the scan does, every step), and the per-layer caches
  are written in place. Inside jit the parameter slices are made once per call."""
  if not model.cfg.scan_layers:
    return model, variables
  cfg = dataclasses.replace(model.cfg, scan_layers=False, remat=False)
  return PairAlign(cfg), {**variables, 'params': unstack_layers(variables['params'])}
