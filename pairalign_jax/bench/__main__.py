"""`python -m pairalign_jax.bench [--config=configs/demo.py] [--out=bench.json] [--tiny] ...`: the
flags (defined only when run as a program) mapped onto `runner.run` (package docstring)."""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from pairalign_jax.bench import common
from pairalign_jax.bench import levers as levers_lib
from pairalign_jax.bench import runner
from pairalign_jax.bench import train_step

if common.ROOT not in sys.path:  # configs/*.py import `configs.default`
  sys.path.insert(0, common.ROOT)

DEFAULT_COMPILE_CACHE = os.path.join(
  os.path.expanduser('~'), '.cache', 'pairalign_jax', 'bench_xla_cache'
)

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  'config',
  os.path.join(common.ROOT, 'configs', 'demo.py'),
  'Config of the benchmarked model (train step, decode, tokenizer, input pipeline).',
  lock_config=False,
)
config_flags.DEFINE_config_file(
  'base_config',
  os.path.join(common.ROOT, 'configs', 'default.py'),
  'The base-size config (train-step entries labelled by its file name).',
  lock_config=False,
)
flags.DEFINE_string('out', 'bench.json', 'Where to write the JSON results.')
flags.DEFINE_bool(
  'tiny',
  False,
  'Tiny sizes everywhere (seconds; for the schema test). The '
  'base entries then use the tiny --config too.',
)
flags.DEFINE_list('sections', list(common.SECTIONS), f'Sections to run, of {common.SECTIONS}.')
flags.DEFINE_list(
  'train_entries',
  list(train_step.DEFAULT_ENTRIES),
  "Train-step entries 'config|base:stage[@batch]'. The base config's stage 2 runs at "
  'batch 8 by default: at its own batch 32 the step needs 16 GB of temporary '
  'buffers (XLA memory_analysis), more than a small shared machine has.',
)
flags.DEFINE_list('levers', [], "Train-step entries ('base:0', ...) on which to try the levers.")
flags.DEFINE_list(
  'lever_names',
  None,
  f'The levers to try on each --levers entry, of {levers_lib.LEVER_NAMES} (default: every one '
  'that applies to the entry).',
)
flags.DEFINE_string(
  'memory_entry',
  'base:2',
  'A train-step entry compiled but not run, for its temporary memory (XLA memory_analysis; '
  "'base:2' = the base config's stage 2 at its own batch with every in-batch negative: "
  "stage2_base_temp_gb); '' = none.",
)
flags.DEFINE_integer('reps', 0, 'Timed repetitions per measurement (0 = the section default).')
flags.DEFINE_float(
  'budget_s',
  60.0,
  'Stop repeating a timing once its calls have taken this long '
  '(at least one timed call is always made).',
)
flags.DEFINE_string(
  'compile_cache', DEFAULT_COMPILE_CACHE, "JAX persistent compilation cache directory ('' = off)."
)
flags.DEFINE_bool('update', False, 'Merge the sections run into an existing --out file.')
flags.DEFINE_string(
  'checkpoint',
  '',
  'A trained run (workdir or step folder): the decode section then also times '
  '`Tokenizer.tokenize` on 64 x 3 s of its validation split (tokenize_realtime_factor_trained) '
  'and the early-exit decode against the full-length one.',
)


def _label(flag_name: str) -> str:
  return os.path.splitext(os.path.basename(FLAGS[flag_name].config_filename))[0]


def main(argv):
  del argv
  unknown = set(FLAGS.sections) - set(common.SECTIONS)
  if unknown:
    raise app.UsageError(f'unknown sections {sorted(unknown)}; choose from {common.SECTIONS}')
  runner.run(
    config=FLAGS.config,
    base_config=FLAGS.base_config,
    label=_label('config'),
    base_label=_label('base_config'),
    out=FLAGS.out,
    command=' '.join([os.path.basename(sys.executable), '-m', common.MODULE] + sys.argv[1:]),
    sections=FLAGS.sections,
    train_entries=FLAGS.train_entries,
    levers=FLAGS.levers,
    lever_names=FLAGS.lever_names,
    memory_entry=FLAGS.memory_entry,
    reps=FLAGS.reps,
    budget_s=FLAGS.budget_s,
    tiny=FLAGS.tiny,
    checkpoint=FLAGS.checkpoint,
    update=FLAGS.update,
    compile_cache=FLAGS.compile_cache,
    lever_subprocess=levers_lib.LeverSubprocess(
      config_path=FLAGS['config'].config_filename,
      base_config_path=FLAGS['base_config'].config_filename,
      budget_s=FLAGS.budget_s,
      tiny=FLAGS.tiny,
      compile_cache=FLAGS.compile_cache,
    ),
  )


if __name__ == '__main__':
  app.run(main)
