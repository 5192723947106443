"""requirements.txt and setup.cfg pin the same runtime dependencies, exactly, and the test extra
pins the linter that `.ci/run` calls."""

import configparser
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pins(lines) -> dict[str, str]:
  """`name==version` lines (comments and blank lines skipped) -> {normalized name: version}."""
  pins = {}
  for line in lines:
    line = line.split('#', 1)[0].strip()
    if not line:
      continue
    assert re.fullmatch(r'[A-Za-z0-9_.\-]+==[0-9][0-9A-Za-z.]*', line), (
      f'not an exact pin: {line!r}'
    )
    name, _, version = line.partition('==')
    pins[name.strip().lower().replace('_', '-')] = version.strip()
  return pins


def _setup_cfg() -> configparser.ConfigParser:
  parser = configparser.ConfigParser()
  parser.read(os.path.join(ROOT, 'setup.cfg'), encoding='utf-8')
  return parser


def test_requirements_txt_equals_install_requires():
  with open(os.path.join(ROOT, 'requirements.txt'), encoding='utf-8') as f:
    requirements = _pins(f)
  install_requires = _pins(_setup_cfg()['options']['install_requires'].splitlines())
  assert requirements == install_requires


def test_test_extra_pins_pytest_and_ruff():
  extra = _pins(_setup_cfg()['options.extras_require']['test'].splitlines())
  assert {'pytest', 'ruff'} <= set(extra)
  with open(os.path.join(ROOT, '.ci', 'run'), encoding='utf-8') as f:
    assert 'ruff check' in f.read()


def _third_party_imports() -> set[str]:
  """Top-level names of every module the library imports that is neither stdlib nor its own."""
  import ast
  import sys

  names = set()
  for folder, _, files in os.walk(os.path.join(ROOT, 'pairalign_jax')):
    for name in files:
      if not name.endswith('.py'):
        continue
      with open(os.path.join(folder, name), encoding='utf-8') as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
          names.add(node.module.split('.')[0])
  return {n for n in names if n not in sys.stdlib_module_names and n != 'pairalign_jax'}


def test_every_imported_package_is_declared():
  from importlib import metadata

  declared = set(_pins(_setup_cfg()['options']['install_requires'].splitlines()))
  distributions = metadata.packages_distributions()
  missing = {}
  for module in sorted(_third_party_imports()):
    dists = {d.lower().replace('_', '-') for d in distributions.get(module, [module])}
    if not dists & declared:
      missing[module] = sorted(dists)
  assert not missing, f'imported but not in install_requires: {missing}'
