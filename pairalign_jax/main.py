"""Entry point: `python -m pairalign_jax.main --config=configs/demo.py --workdir=runs/demo`.

Any config entry can be overridden with `--config.a.b=value` (that is how ablations run, e.g.
`--config.loss.contrast_weight=0`). Training resumes from the newest checkpoint in the workdir.
An unknown override key (`--config.model.unknown_key=3`) or an impossible value
(`--config.model.d_model=-1`) stops the run at start with one line naming the key (and, for an
unknown key, the nearest valid keys), without a traceback.
"""

import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS

flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the report.')
config_flags.DEFINE_config_file(
  'config', None, 'Training configuration file (a Python file with get_config()).', lock_config=True
)
flags.mark_flags_as_required(['config', 'workdir'])

_OVERRIDE = re.compile(r'^--?(config\.[^=\s]+)')


def parse_flags(argv: list[str]) -> list[str]:
  """`app.run`'s flag parser: ml_collections raises a bare AttributeError/KeyError for an override
  of a key the config does not have; that becomes one line naming it (exit status 1)."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:
    from pairalign_jax import config_validation

    reference = config_validation.default_config()
    for arg in argv[1:]:
      match = _OVERRIDE.match(arg)
      hint = match and config_validation.unknown_key_hint(match.group(1), reference)
      if hint:
        sys.exit(f'FATAL config error: --{hint}')
    sys.exit(f'FATAL config error: a --config.* override names no config key ({e})')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  # Imported here so `--help` works without initializing JAX.
  from pairalign_jax import config_validation
  from pairalign_jax import train

  logging.info('workdir: %s', FLAGS.workdir)
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except config_validation.ConfigError as e:
    sys.exit(f'FATAL config error: {e}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
