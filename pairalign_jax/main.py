"""Entry point: `python -m pairalign_jax.main --config=configs/demo.py --workdir=runs/demo`.

Any config entry can be overridden with `--config.a.b=value` (that is how ablations run, e.g.
`--config.loss.contrast_weight=0`). Training resumes from the newest checkpoint in the workdir.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS

flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the report.')
config_flags.DEFINE_config_file(
    'config', None, 'Training configuration file (a Python file with get_config()).',
    lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  # Imported here so `--help` works without initializing JAX.
  from pairalign_jax import train  # pylint: disable=import-outside-toplevel
  logging.info('workdir: %s', FLAGS.workdir)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
