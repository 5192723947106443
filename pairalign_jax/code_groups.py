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

Which k-means solution a run gets matters (docs/METHOD.md §11): from other initial centres the same
codebook's groups move the targets' validation recall@1 by up to 0.07 at about the same length.
With ``targets.group_candidates = N > 1`` a run therefore makes N groupings
(:func:`candidate_groupings`: this farthest-point one and N - 1 from random initial centres) and,
once at the start of stage 1, keeps the one that best tells its training recordings apart
(`code_group_choice.py`). The kept grouping is stored in 'vq_stats' ('code_groups', int32 [K];
-1 until chosen) and :func:`groups_from_vq_stats` returns it from then on.
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


def _random_init(key, counts, num_groups: int):
  """Indices [G] of initial centres: G distinct live codes drawn uniformly (every code when none
  is live yet; with fewer live codes than groups, dead ones fill the rest)."""
  live = counts > 0  # [K]
  live = jnp.where(jnp.any(live), live, True)
  # Distinct draws by sorting random keys, live codes first: no rejection loop, any K.
  order = jnp.argsort(jnp.where(live, 0.0, 1.0) + 0.5 * jax.random.uniform(key, live.shape))
  return order[:num_groups]


def _check_num_groups(codebook, num_groups: int) -> None:
  k = codebook.shape[0]
  if not 1 <= num_groups <= k:
    raise ValueError(f'num_groups must be in [1, {k}] (the codebook size), got {num_groups}')


def _lloyd(codebook, counts, centre_idx, num_groups: int, iterations: int):
  """Spherical count-weighted k-means from the codes ``centre_idx`` [G]: group ids [K] int32."""
  codebook = codebook.astype(jnp.float32)
  weights = jnp.maximum(counts.astype(jnp.float32), 0.0) + 1e-6  # [K]
  centres = codebook[centre_idx]  # [G, c]

  def lloyd(_, centres):
    assign = jnp.argmax(codebook @ centres.T, axis=1)  # [K]
    onehot = jax.nn.one_hot(assign, num_groups, dtype=jnp.float32) * weights[:, None]  # [K, G]
    sums = onehot.T @ codebook  # [G, c]
    norm = jnp.linalg.norm(sums, axis=1, keepdims=True)
    # A group that lost every code keeps its centre (it may win codes back next iteration).
    return jnp.where(norm > 0, sums / jnp.maximum(norm, 1e-12), centres)

  centres = jax.lax.fori_loop(0, iterations, lloyd, centres)
  return jnp.argmax(codebook @ centres.T, axis=1).astype(jnp.int32)  # [K]


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
  _check_num_groups(codebook, num_groups)
  init = _farthest_point_init(codebook.astype(jnp.float32), counts, num_groups)
  return _lloyd(codebook, counts, init, num_groups, iterations)


@functools.partial(jax.jit, static_argnames=('num_groups', 'num_candidates', 'iterations'))
def candidate_groupings(
  codebook: jax.Array,
  counts: jax.Array,
  key: jax.Array,
  *,
  num_groups: int,
  num_candidates: int,
  iterations: int = 30,
) -> jax.Array:
  """``num_candidates`` groupings of one codebook, int32 [N, K]: row 0 is :func:`group_codebook`
  (farthest-point initial centres), row i >= 1 the same k-means from G live codes drawn with
  ``fold_in(key, i)``. A pure function of its arguments."""
  _check_num_groups(codebook, num_groups)
  first = group_codebook(codebook, counts, num_groups=num_groups, iterations=iterations)
  if num_candidates == 1:
    return first[None]

  def from_random(i):
    init = _random_init(jax.random.fold_in(key, i), counts, num_groups)
    return _lloyd(codebook, counts, init, num_groups, iterations)

  rest = jax.vmap(from_random)(jnp.arange(1, num_candidates))  # [N - 1, K]
  return jnp.concatenate([first[None], rest], axis=0)


def map_codes(codes: jax.Array, groups: jax.Array) -> jax.Array:
  """Frame codes [..., T] -> their group ids [..., T] (``groups`` from :func:`group_codebook`)."""
  return jnp.take(groups, codes, axis=0)


CHOSEN = 'code_groups'  # the 'vq_stats' entry holding a chosen grouping (-1: not chosen yet)


def _vq_stats_leaves(vq_stats, name: str) -> list:
  return [
    leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(vq_stats)[0]
    if f"['{name}']" in jax.tree_util.keystr(path)
  ]


def vq_stats_leaf(vq_stats, name: str):
  """The one leaf called ``name`` in a 'vq_stats' collection (ValueError if not exactly one)."""
  found = _vq_stats_leaves(vq_stats, name)
  if len(found) != 1:
    names = sorted(
      jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(vq_stats)[0]
    )
    raise ValueError(f"vq_stats must hold exactly one '{name}', found {len(found)} in {names}")
  return found[0]


def groups_from_vq_stats(vq_stats, num_groups: int, iterations: int = 30) -> jax.Array:
  """The code groups of a model's 'vq_stats' collection -> [K] int32: the chosen grouping where
  one is stored ('code_groups' >= 0, `code_group_choice.py`), else :func:`group_codebook` of its
  codebook."""
  kmeans = group_codebook(
    vq_stats_leaf(vq_stats, 'codebook'),
    vq_stats_leaf(vq_stats, 'cluster_size'),
    num_groups=num_groups,
    iterations=iterations,
  )
  chosen = _vq_stats_leaves(vq_stats, CHOSEN)
  if not chosen:
    return kmeans
  chosen = vq_stats_leaf(vq_stats, CHOSEN).astype(jnp.int32)
  return jnp.where(jnp.all(chosen >= 0), chosen, kmeans)
