"""The commands in the README and docs/ name what exists: every `python -m pairalign_jax...` module,
every `configs/NAME.py` file and every `--config.KEY=` override key (the keys of
`default_config.get_config()`, which every shipped config starts from)."""

import glob
import importlib.util
import os
import re
import shlex

from absl import flags
from ml_collections import config_flags
import pytest

from pairalign_jax import config_validation
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


def _main_commands(text):
  """The `python -m pairalign_jax.main` commands of `text`'s code blocks, as argument lists
  (lines joined at a trailing backslash, comments dropped)."""
  commands = []
  for block in re.findall(r'```(?:bash|sh)?\n(.*?)```', text, flags=re.S):
    for line in re.sub(r'\\\n\s*', ' ', block).splitlines():
      line = line.split(' #')[0].strip()
      if 'python -m pairalign_jax.main ' in line:
        commands.append(shlex.split(line.split('python -m pairalign_jax.main ', 1)[1]))
  return commands


def _config_of(argv):
  """The config `main` would run with for `argv` (its --config and --config.KEY overrides)."""
  config_args = ['main'] + [a for a in argv if a.startswith(('--config=', '--config.'))]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file(
    'config', None, 'the config', flag_values=flag_values, sys_argv=config_args
  )
  cwd = os.getcwd()
  os.chdir(ROOT)  # the docs' config paths are relative to the repository
  try:
    flag_values(config_args)
  finally:
    os.chdir(cwd)
  return flag_values.config


def test_main_commands_are_found():
  commands = _main_commands(_text('README.md'))
  assert len(commands) >= 5
  assert any('--config=configs/small_corpus.py' in c for c in commands)


@pytest.mark.parametrize('doc', DOCS)
def test_doc_main_commands_pass_the_start_checks(doc):
  """Every documented training command passes the checks `main` runs at start
  (config_validation), so a user who copies it does not stop at a ConfigError."""
  for argv in _main_commands(_text(doc)):
    config = _config_of(argv)
    try:
      config_validation.validate_config(config)
    except config_validation.ConfigError as e:
      pytest.fail(f'{doc}: {" ".join(argv)}: {e}')


def test_a_documented_command_that_fails_its_start_checks_is_caught():
  text = (
    '```bash\npython -m pairalign_jax.main --config=configs/small_corpus.py --workdir=w \\\n'
    '    --config.schedule.stage1_start=0 --config.schedule.stage2_start=0  # a comment\n```\n'
  )
  (argv,) = _main_commands(text)
  assert argv[-1] == '--config.schedule.stage2_start=0'
  with pytest.raises(config_validation.ConfigError, match='stage1_start'):
    config_validation.validate_config(_config_of(argv))
