"""Code groups: the frozen VQ codebook clustered into a few groups of similar codes.

Why (measured, docs/METHOD.md §11): the stage-0 codebook splits one phone into several codes that
differ by speaker and flicker from frame to frame, so the collapsed VQ string is long (about 29
tokens/s on the synthetic corpus) and two speakers' strings for one sentence are far apart
(normalized edit distance 0.77). Pruning short runs to shorten it destroys content. Mapping every
code to the group of codes near it on the unit sphere and collapsing the repeats instead shortens
the string *and* makes it more speaker-invariant: with 16 groups and runs of at least 2 frames the
targets run at 12.6 tokens/s with a better recall@1 than the full VQ string (0.97 vs 0.95).

The grouping is a pure, deterministic function of the codebook and its EMA counts (spherical
k-means, count-weighted, farthest-point initialization from the most used code), so with the
codebook frozen after stage 0 (`vq.freeze_after_stage0`) it is the same at every step and needs
no state of its own. Group ids are used as token ids in ``[0, num_groups)``; the vocabulary keeps
its K codes (the other ids simply go unused).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _farthest_point_init(codebook, counts, num_groups: int):
  """Indices [G] of initial centres: the most used live code, then repeatedly the live code
  farthest (lowest max cosine) from the centres chosen so far. A chosen code has cosine 1 to
  itself, so it is picked again only when there are fewer live codes than groups (the duplicate
  centre then ends up an empty group)."""
  live = counts > 0  # [K]
  live = jnp.where(jnp.any(live), live, True)  # no counts yet (a fresh model): every code
  first = jnp.argmax(jnp.where(live, counts, -1.0))
  chosen = jnp.zeros((num_groups,), jnp.int32).at[0].set(first)
  best_sim = codebook @ codebook[first]  # [K] max cosine to chosen

  def body(g, carry):
    chosen, best_sim = carry
    score = jnp.where(live, -best_sim, -jnp.inf)
    nxt = jnp.argmax(score)
    return chosen.at[g].set(nxt), jnp.maximum(best_sim, codebook @ codebook[nxt])

  chosen, _ = jax.lax.fori_loop(1, num_groups, body, (chosen, best_sim))
  return chosen


@functools.partial(jax.jit, static_argnames=('num_groups', 'iterations'))
def group_codebook(
  codebook: jax.Array, counts: jax.Array, *, num_groups: int, iterations: int = 30
) -> jax.Array:
  """Clusters the codes into groups; returns the group id of every code, int32 [K] in [0, G).

  Args:
    codebook: [K, c] l2-normalized code vectors.
    counts: [K] EMA usage counts (weights; codes with count 0 are dead and only assigned, never
      chosen as initial centres).
    num_groups: static G, 1 <= G <= K.
    iterations: static number of Lloyd iterations (cosine assignment, count-weighted means).
  """
  k = codebook.shape[0]
  if not 1 <= num_groups <= k:
    raise ValueError(f'num_groups must be in [1, {k}] (the codebook size), got {num_groups}')
  codebook = codebook.astype(jnp.float32)
  weights = jnp.maximum(counts.astype(jnp.float32), 0.0) + 1e-6  # [K]
  centres = codebook[_farthest_point_init(codebook, counts, num_groups)]  # [G, c]

  def lloyd(_, centres):
    assign = jnp.argmax(codebook @ centres.T, axis=1)  # [K]
    onehot = jax.nn.one_hot(assign, num_groups, dtype=jnp.float32) * weights[:, None]  # [K, G]
    sums = onehot.T @ codebook  # [G, c]
    norm = jnp.linalg.norm(sums, axis=1, keepdims=True)
    # A group that lost every code keeps its centre (it may win codes back next iteration).
    return jnp.where(norm > 0, sums / jnp.maximum(norm, 1e-12), centres)

  centres = jax.lax.fori_loop(0, iterations, lloyd, centres)
  return jnp.argmax(codebook @ centres.T, axis=1).astype(jnp.int32)  # [K]


def map_codes(codes: jax.Array, groups: jax.Array) -> jax.Array:
  """Frame codes [..., T] -> their group ids [..., T] (``groups`` from :func:`group_codebook`)."""
  return jnp.take(groups, codes, axis=0)


def groups_from_vq_stats(vq_stats, num_groups: int, iterations: int = 30) -> jax.Array:
  """:func:`group_codebook` of the codebook held in a model's 'vq_stats' collection -> [K] int32."""
  leaves = {
    jax.tree_util.keystr(path): leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(vq_stats)[0]
  }

  def find(name):
    found = [v for key, v in leaves.items() if f"['{name}']" in key]
    if len(found) != 1:
      raise ValueError(
        f"vq_stats must hold exactly one '{name}', found {len(found)} in {sorted(leaves)}"
      )
    return found[0]

  return group_codebook(
    find('codebook'), find('cluster_size'), num_groups=num_groups, iterations=iterations
  )
