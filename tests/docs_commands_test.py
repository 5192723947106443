"""The commands in the README and docs/ name what exists: every `python -m pairalign_jax...` module,
every `configs/NAME.py` file and every `--config.KEY=` override key (the keys of
`default_config.get_config()`, which every shipped config starts from)."""

import glob
import importlib.util
import os
import re

import pytest

from pairalign_jax import default_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ['README.md'] + sorted(
  os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'docs', '*.md'))
)


def _config_keys():
  keys = set()

  def walk(d, prefix):
    for key, value in d.items():
      keys.add(prefix + key)
      if isinstance(value, dict):
        walk(value, prefix + key + '.')

  walk(default_config.get_config().to_dict(), '')
  return keys


def _text(doc):
  with open(os.path.join(ROOT, doc), encoding='utf-8') as f:
    return f.read()


def test_the_docs_are_found():
  assert 'README.md' in DOCS and 'docs/METHOD.md' in DOCS and 'docs/results.md' in DOCS


def _unknown_names(text):
  """(modules, configs, config keys) that `text`'s commands name and that do not exist."""
  modules = set(re.findall(r'python -m (pairalign_jax[\w.]*\w)', text))
  configs = set(re.findall(r'configs/(\w+)\.py', text))
  keys = _config_keys()
  return (
    sorted(m for m in modules if importlib.util.find_spec(m) is None),
    sorted(c for c in configs if not os.path.exists(os.path.join(ROOT, 'configs', c + '.py'))),
    sorted(k for k in set(re.findall(r'--config\.([\w.]*\w)', text)) if k not in keys),
  )


@pytest.mark.parametrize('doc', DOCS)
def test_doc_commands_name_existing_modules_configs_and_keys(doc):
  assert _unknown_names(_text(doc)) == ([], [], []), doc


def test_unknown_names_on_hand_made_commands():
  text = (
    'python -m pairalign_jax.main --config=configs/small_corpus.py '
    '--config.loss.contrast_weight=0\n'
    'python -m pairalign_jax.mian --config=configs/small_corpse.py '
    '--config.loss.contrast_weights=0 '
    '--config.init_from=runs/x `--config.model.dec_layers=4`.'
  )
  assert _unknown_names(text) == (
    ['pairalign_jax.mian'],
    ['small_corpse'],
    ['loss.contrast_weights'],
  )
