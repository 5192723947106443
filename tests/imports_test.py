"""The analysis side never loads training code (docs/ARCHITECTURE.md, dependency directions).

Loading a checkpoint to tokenize or evaluate must not pull in the training objective, the loss
terms or the training loop. Each check imports the modules in a fresh interpreter (this process
has imported everything already) and lists the project modules that got loaded.
"""

import json
import pkgutil
import subprocess
import sys

from pairalign_jax import archive
from pairalign_jax import evaluation

TRAINING_MODULES = ('pairalign_jax.objective', 'pairalign_jax.losses', 'pairalign_jax.train')

# The analysis API, the CLIs and every module of the evaluation and archive packages (found on
# disk, so a new module there is checked too).
ANALYSIS_MODULES = (
  'pairalign_jax.tokenizer',
  'pairalign_jax.tokenize',
  'pairalign_jax.evaluate',
  'pairalign_jax.index',
  'pairalign_jax.search',
  'pairalign_jax.evaluate_search',
  'pairalign_jax.evaluation',
  *(f'pairalign_jax.evaluation.{m.name}' for m in pkgutil.iter_modules(evaluation.__path__)),
  'pairalign_jax.archive',
  *(f'pairalign_jax.archive.{m.name}' for m in pkgutil.iter_modules(archive.__path__)),
)


def loaded_project_modules(*modules: str) -> list[str]:
  """Project modules in `sys.modules` after importing `modules` in a fresh interpreter."""
  code = (
    ''.join(f'import {m}; ' for m in modules)
    + 'import json, sys; '
    + 'print(json.dumps(sorted(m for m in sys.modules if m.startswith("pairalign_jax"))))'
  )
  out = subprocess.run(
    [sys.executable, '-c', code], capture_output=True, text=True, check=True, timeout=300
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_analysis_modules_load_no_training_code():
  # The tokenize CLI imports the tokenizer only when it runs; the tokenizer is in the list anyway.
  loaded = loaded_project_modules(*ANALYSIS_MODULES)
  assert set(ANALYSIS_MODULES) <= set(loaded)
  assert not set(TRAINING_MODULES) & set(loaded), loaded
  assert 'pairalign_jax.targets' in loaded  # the target strings of `Tokenizer.vq_group_tokenize`


def test_training_still_loads_them():
  # The check above is not vacuous: the training loop does load the objective and the losses.
  loaded = loaded_project_modules('pairalign_jax.train')
  assert set(TRAINING_MODULES) <= set(loaded)


def test_library_never_imports_configs():
  # configs/ import the library, never the other way round (the defaults live in
  # pairalign_jax/default_config.py). Checked on the source, so imports inside functions count.
  import ast
  import os

  root = os.path.dirname(evaluation.__path__[0])
  offenders = []
  for folder, _, files in os.walk(root):
    for name in (f for f in files if f.endswith('.py')):
      path = os.path.join(folder, name)
      with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        modules = []
        if isinstance(node, ast.Import):
          modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
          modules = [node.module]
        offenders += [f'{path}:{node.lineno}' for m in modules if m.split('.')[0] == 'configs']
  assert not offenders, offenders


def test_bench_modules_load_no_jax():
  # The bench (`python -m pairalign_jax.bench`) imports jax only inside the functions that use it:
  # importing any of its modules, the CLI included, loads no jax (nor numpy or flax).
  from pairalign_jax import bench

  modules = [f'pairalign_jax.bench.{m.name}' for m in pkgutil.iter_modules(bench.__path__)]
  assert 'pairalign_jax.bench.runner' in modules
  code = (
    ''.join(f'import {m}; ' for m in modules)
    + 'import json, sys; '
    + 'print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in '
    + '("jax", "jaxlib", "flax", "numpy"))))'
  )
  out = subprocess.run(
    [sys.executable, '-c', code], capture_output=True, text=True, check=True, timeout=300
  )
  assert json.loads(out.stdout.strip().splitlines()[-1]) == []
