"""The `search` section: the project's retrieval (`evaluation.retrieval.evaluate_retrieval`)
against one direct `rapidfuzz.process.cdist` call on random token strings, and the archive search
speed (`archive.speed.measure_search_speed`)."""

from __future__ import annotations

from typing import Any

from pairalign_jax.bench import common


def random_strings(rng, n: int, vocab: int, lo: int, hi: int) -> list[list[int]]:
  lengths = rng.integers(lo, hi + 1, size=n)
  return [rng.integers(0, vocab, size=int(k)).tolist() for k in lengths]


def perturb(rng, seq: list[int], vocab: int, p: float) -> list[int]:
  """`seq` with random deletions, substitutions and insertions (each at rate about p / 3)."""
  out = []
  for tok in seq:
    r = rng.random()
    if r < p / 3:
      continue  # delete
    if r < 2 * p / 3:
      out.append(int(rng.integers(vocab)))  # substitute
      continue
    out.append(tok)
    if r < p:
      out.append(int(rng.integers(vocab)))  # insert
  return out or seq[:1]


def section_search(
  reps: int,
  *,
  archive_size: int = 10_000,
  num_queries: int = 1_000,
  archive_hours: float = 10.0,
  partial_ratio: bool = True,
) -> dict[str, Any]:
  """`num_queries` queries against `archive_size` random strings (project vs direct cdist, `reps`
  interleaved calls each), and the archive search over `archive_hours` of synthetic index
  (`partial_ratio`: also time rapidfuzz's substring alignment there)."""
  import numpy as np
  import rapidfuzz
  from rapidfuzz import process
  from rapidfuzz.distance import Levenshtein

  from pairalign_jax.archive import speed
  from pairalign_jax.evaluation import retrieval

  n_archive, n_queries = archive_size, num_queries
  vocab, lo, hi = 512, 20, 60  # about 38 tokens per 3 s segment at 12.7 tokens/s
  rng = np.random.default_rng(11)
  archive = random_strings(rng, n_archive, vocab, lo, hi)
  targets = rng.integers(0, n_archive, size=n_queries)
  queries = [perturb(rng, archive[t], vocab, 0.3) for t in targets]

  def project():
    return retrieval.evaluate_retrieval(queries, archive, targets)

  def direct():
    return process.cdist(queries, archive, scorer=Levenshtein.normalized_distance, workers=-1)

  result = project()
  d = direct()
  same = bool(np.allclose(retrieval.distance_matrix(queries, archive), d))
  times = {'project': [], 'direct': []}
  for i in range(reps):
    order = (
      (('project', project), ('direct', direct))
      if i % 2 == 0
      else (('direct', direct), ('project', project))
    )
    for name, fn in order:
      t0 = common.now()
      fn()
      times[name].append(common.now() - t0)
  proj, dire = common.median(times['project']), common.median(times['direct'])
  return {
    'device': common.device_info(),
    'rapidfuzz_version': rapidfuzz.__version__,
    'archive_size': n_archive,
    'num_queries': n_queries,
    'strings': f'random token lists, lengths {lo}-{hi}, vocabulary {vocab}; queries are archive '
    'strings with 30% random edits',
    'direct_call': 'rapidfuzz.process.cdist(queries, archive, '
    'scorer=Levenshtein.normalized_distance, workers=-1)',
    'project_call': 'evaluation.retrieval.evaluate_retrieval(queries, archive, targets)',
    'project_s': proj,
    'project_s_all': times['project'],
    'direct_s': dire,
    'direct_s_all': times['direct'],
    'pairs_per_s_direct': n_archive * n_queries / dire,
    'distances_identical': same,
    'recall_at_1': result.recall_at_1,
    'search_ratio': dire / proj,
    # Archive search (query by example): subsequence matching over a synthetic archive at
    # PairAlign's length (about 31 tokens per 3 s window, 5-token queries); archive/speed.py.
    'archive': speed.measure_search_speed(
      31.0, 5, hours=archive_hours, reps=reps, partial_ratio=partial_ratio
    ),
  }
