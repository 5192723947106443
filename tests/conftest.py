"""Shared test set-up: 8 simulated CPU devices, unoptimized XLA code generation and a persistent
compilation cache.

The environment must be set before jax is imported anywhere, which is why this lives here.
"""

import os
import sys

# The tests check behaviour, not code generation: XLA's backend optimizations off cut the suite's
# compile time (most of its time) by about a third, and XLA:CPU's older loop emitters in place of
# its fusion emitters about halve a train step's compile (the tiny stage-1 step: 64 s -> 34 s, the
# same loss to the last bit; train_stages_test.py 31% less CPU time); set XLA_FLAGS yourself to
# test with XLA's defaults.
TEST_XLA_FLAGS = (
  '--xla_force_host_platform_device_count=8'
  ' --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'
  ' --xla_cpu_use_fusion_emitters=false'
)
os.environ.setdefault('XLA_FLAGS', TEST_XLA_FLAGS)
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402

_CACHE = os.environ.get('PAIRALIGN_TEST_COMPILE_CACHE', os.path.join(ROOT, '.jax_test_cache'))
jax.config.update('jax_compilation_cache_dir', _CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)

import gc  # noqa: E402
import signal  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope='module')
def _release_compiled_programs():
  """Drops every compiled program after each test module.

  Each XLA:CPU executable keeps memory mappings of its own; the whole suite in one process held
  more than Linux's default `vm.max_map_count` (65 530), and XLA aborts the process when a mapping
  is refused. Programs a later module needs again come back from the persistent cache above."""
  yield
  jax.clear_caches()
  gc.collect()


@pytest.fixture(autouse=True)
def _restore_sigterm():
  """Puts back the SIGTERM handler after each test: `train_and_evaluate` installs a preemption
  handler that only its checkpointer's close() removes, and runs stopped early skip that."""
  old = signal.getsignal(signal.SIGTERM)
  yield
  signal.signal(signal.SIGTERM, old)


# The test files that take longest, longest first (per-test durations of the whole default run,
# 2026-12-07). pytest-xdist hands each worker whole files (`--dist loadfile`) in collection order
# (`--no-loadscope-reorder`, setup.cfg; its default order is by test count, which put the two
# train files, few tests but the longest, last and left one worker running them alone at the end).
LONGEST_FILES_FIRST = (
  'models_test.py',
  'train_test.py',
  'objective_test.py',
  'train_stages_test.py',
  'code_group_choice_test.py',
  'bench_test.py',
  'decode_test.py',
  'tokenizer_test.py',
  'init_from_test.py',
  'score_chunks_test.py',
)


def pytest_collection_modifyitems(config, items):
  """Runs the files of LONGEST_FILES_FIRST first, in that order; the others after them in their
  collection order (a stable sort: each file's tests stay together and in order)."""
  del config
  rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
