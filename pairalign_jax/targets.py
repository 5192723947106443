"""VQ-derived target strings: frame codes -> code groups -> short runs merged -> repeats collapsed.

The stage-1 targets (and the VQ-derived part of the stage-2 targets) of docs/METHOD.md
"Targets and code groups", made from the EMA teacher's frame codes:

  1. with ``code_groups = G > 0``, every code is mapped to its group, one of G groups of similar
     codes of the frozen codebook (`code_groups.py`); token ids are then group ids in ``[0, G)``;
  2. runs of a repeated code (group) shorter than ``min_run_frames`` encoder frames are merged
     into a neighbour (`sequences.prune_short_runs`);
  3. consecutive repeats collapse into one token whose time is the run centre, or with
     ``time_anchor = 'end'`` the run's end (`sequences.collapse_runs`).

Training (`objective.py`, `train.py`) and analysis (`Tokenizer.vq_group_tokenize`, which shows
the targets as a tokenizer) both build the strings here, so the analysis side needs none of the
training objective. Pure functions over arrays, jittable (the settings are static).
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections

from pairalign_jax import code_groups as code_groups_lib
from pairalign_jax import config_lib
from pairalign_jax import sequences
from pairalign_jax import vocab as vocab_lib


@dataclasses.dataclass(frozen=True)
class TargetSettings:
  """What target construction reads from the config (hashable: a static jit argument)."""

  codebook_size: int  # K: the ids of raw codes
  max_len: int  # L: at most L - 1 target codes + EOS
  frame_seconds: float  # encoder frame (after subsampling)
  min_run_frames: int  # runs shorter than this many frames are merged (1 = none)
  code_groups: int  # 0: targets are codes; G > 0: codes mapped to G groups
  time_anchor: str  # a token's time: its run's 'centre' or 'end' (sequences.TIME_ANCHORS)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'TargetSettings':
    """Reads config.targets, config.model and the frame timing; resolves ``min_run_frames = -1``
    from ``config.length.target_rate`` (`sequences.min_run_frames_for_rate`)."""
    frame_seconds = config_lib.encoder_frame_seconds(config)
    min_run = int(config.targets.min_run_frames)
    if min_run < 0:
      min_run = sequences.min_run_frames_for_rate(config.length.target_rate, frame_seconds)
    return cls(
      codebook_size=int(config.model.codebook_size),
      max_len=int(config.model.max_len),
      frame_seconds=frame_seconds,
      min_run_frames=min_run,
      code_groups=int(config.targets.code_groups),
      time_anchor=str(config.targets.get('time_anchor', 'centre')),
    )


@dataclasses.dataclass
class Targets:
  """A batch of target sequences for both views, stacked as [y1; y2] along the batch."""

  tokens: jax.Array  # [2B, L] int32
  lengths: jax.Array  # [2B] int32
  times: jax.Array  # [2B, L] seconds


def target_frame_codes(codes, settings: TargetSettings, vq_stats=None):
  """VQ frame codes [N, T] -> the frame codes the targets collapse (stop-gradient): mapped to their
  code group when ``settings.code_groups > 0`` (groups of the codebook in ``vq_stats``), then runs
  shorter than ``settings.min_run_frames`` merged into a neighbour. [N, T] int32."""
  codes = jax.lax.stop_gradient(codes)
  if settings.code_groups > 0:
    if vq_stats is None:
      raise ValueError(
        'target_frame_codes: targets.code_groups > 0 needs the vq_stats holding the codebook'
      )
    codes = code_groups_lib.map_codes(
      codes, code_groups_lib.groups_from_vq_stats(vq_stats, settings.code_groups)
    )
  return sequences.prune_short_runs(codes, settings.min_run_frames)


def vq_targets(codes, settings: TargetSettings, vq_stats=None) -> Targets:
  """VQ codes [N, T] -> target sequences: :func:`target_frame_codes`, repeats collapsed."""
  vocab = vocab_lib.Vocab(settings.codebook_size)
  tokens, lengths, times, _ = sequences.collapse_runs(
    target_frame_codes(codes, settings, vq_stats),
    settings.frame_seconds,
    max_len=settings.max_len,
    vocab=vocab,
    time_anchor=settings.time_anchor,
  )
  return Targets(tokens=tokens, lengths=lengths, times=times)
