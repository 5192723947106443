"""Shared test set-up: 8 simulated CPU devices and a persistent compilation cache.

The environment must be set before jax is imported anywhere, which is why this lives here.
"""

import os
import sys

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402

_CACHE = os.environ.get('PAIRALIGN_TEST_COMPILE_CACHE', os.path.join(ROOT, '.jax_test_cache'))
jax.config.update('jax_compilation_cache_dir', _CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
