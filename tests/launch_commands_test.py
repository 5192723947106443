"""launch/heldout_speech.sh builds, for every run it documents, training and test-split commands
that pass the start-up config checks (run through bash with `python` replaced by a recorder:
nothing is trained)."""

import os
import re
import subprocess

from docs_commands_test import _config_of
import pytest

from pairalign_jax import config_validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'launch', 'heldout_speech.sh')

# Stands in for `python`: appends its arguments (unit-separated, one call per line) to $RECORD and,
# for a training command, writes the report the script waits for before its test-split evaluation.
FAKE_PYTHON = r"""
python() {
  printf '%s\x1f' "$@" >> "$RECORD"
  printf '\n' >> "$RECORD"
  if [ "$2" = pairalign_jax.main ]; then
    for a in "$@"; do
      case "$a" in
        --workdir=*) mkdir -p "${a#--workdir=}" && touch "${a#--workdir=}/report.json" ;;
      esac
    done
  fi
}
export -f python
"""


def documented_runs():
  """Seed 0 of every RUN name in the script's header (`#   name_s{0,1,2}  ...`)."""
  with open(SCRIPT, encoding='utf-8') as f:
    header = f.read().split('\nset -euo pipefail', 1)[0]
  return sorted(set(re.findall(r'^#   ([a-z][a-z0-9_]*?_s)(?:\{0[,\d]*\}|0)\s', header, re.M)))


def recorded_calls(tmp_path, runs):
  record = tmp_path / 'calls'
  env = dict(os.environ, RECORD=str(record), ESPEAK_DIR=str(tmp_path / 'espeak'))
  env.pop('VALIDATION_ONLY', None)
  subprocess.run(
    ['bash', '-c', FAKE_PYTHON + 'bash "$0" "$@"', SCRIPT, str(tmp_path / 'root'), *runs],
    env=env,
    check=True,
    capture_output=True,
    text=True,
  )
  return [line.split('\x1f')[:-1] for line in record.read_text().splitlines()]


def test_every_documented_run_is_found():
  names = documented_runs()
  assert len(names) >= 40
  assert {'small_unitsrefit_s', 'aug_only_unitsrefit_s', 'synthetic_s', 'small_s'} <= set(names)


def test_every_documented_run_trains_and_evaluates_with_a_valid_config(tmp_path):
  runs = [name + '0' for name in documented_runs()]
  calls = recorded_calls(tmp_path, runs)
  trained = [c for c in calls if c[:2] == ['-m', 'pairalign_jax.main']]
  evaluated = [c for c in calls if c[:2] == ['-m', 'pairalign_jax.evaluate']]
  workdirs = [next(a for a in c if a.startswith('--workdir=')) for c in trained]
  # One training per run, in its own workdir.
  assert sorted(os.path.basename(w.split('=', 1)[1]) for w in workdirs) == sorted(runs)
  assert len(evaluated) == len(runs)
  failures = []
  for argv in trained + evaluated:
    try:
      config_validation.validate_config(_config_of(argv[2:]))
    except config_validation.ConfigError as e:
      failures.append(f'{" ".join(argv)}: {e}')
  assert not failures, '\n'.join(failures)
  for argv in evaluated:
    assert '--config.eval.split=test' in argv


def test_an_invalid_run_would_be_caught(tmp_path):
  """The recorder sees the overrides the script passes: a run whose overrides contradict its
  config fails the check above."""
  (argv,) = [c for c in recorded_calls(tmp_path, ['small_corpus_s0']) if 'pairalign_jax.main' in c]
  config = _config_of([*argv[2:], '--config.loss.sequence_losses_train_encoder=True'])
  with pytest.raises(config_validation.ConfigError, match='freeze_encoder'):
    config_validation.validate_config(config)
