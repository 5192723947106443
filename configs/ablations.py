"""Ablations of `synthetic.py`: one run per switched-off term, same seed and budget (and
`teacher_strings`, which switches on the teacher's decoded targets that synthetic.py leaves off).

Pick one with a config argument: `--config=configs/ablations.py:no_contrast`; run them all with
`launch/ablations.sh WORKROOT`. `--config=configs/ablations.py` alone is the full model.
A `@demo` suffix (`configs/ablations.py:no_contrast@demo`) applies the same switch to the demo's
budget (`configs/demo.py`, 360 steps, about 7 minutes on 2 CPU cores) instead of `synthetic.py`'s:
`ABLATION_BUDGET=demo launch/ablations.sh WORKROOT`.
"""

from configs import demo
from configs import synthetic

# name -> (dotted key, value) overrides applied on top of configs/synthetic.py
ABLATIONS = {
  'full': (),
  'no_contrast': (('loss.contrast_weight', 0.0),),
  'no_antibypass': (('loss.antibypass_weight', 0.0),),
  'no_prefix_corruption': (('loss.prefix_corruption', 0.0),),
  'no_cross_tf': (('loss.cross_tf_weight', 0.0),),
  'no_self_tf': (('loss.self_tf_weight', 0.0),),  # timing then on the cross rows
  'no_code_groups': (('targets.code_groups', 0),),  # targets are the raw VQ codes
  'no_own_times': (('loss.own_time_prob', 0.0),),  # teacher forcing on true input times only
  # decoder without the location bias (and so without input times to train on)
  'no_time_bias': (('model.time_bias_frames', 0), ('loss.own_time_prob', 0.0)),
  'no_timing': (('loss.timing_weight', 0.0), ('loss.monotonic_weight', 0.0)),
  'no_coverage': (('loss.coverage_weight', 0.0),),
  'no_length_control': (('length.controller_gain', 0.0), ('loss.length_weight', 0.0)),
  # The other way round: synthetic.py trains on the EMA teacher's VQ-derived strings only
  # (schedule.max_alpha 0); this mixes in its greedy decodes, up to half of the targets.
  'teacher_strings': (('schedule.max_alpha', 0.5),),
  'no_cross_speaker': (('data.cross_speaker_views', 0.0),),
  'no_run_pruning': (('targets.min_run_frames', 1),),
}


def get_config(name: str = 'full'):
  name, _, budget = name.partition('@')
  if name not in ABLATIONS:
    raise ValueError(f'Unknown ablation {name!r}; choose one of {sorted(ABLATIONS)}')
  budgets = {'': synthetic, 'synthetic': synthetic, 'demo': demo}
  if budget not in budgets:
    raise ValueError(f"Unknown budget {budget!r} in the ablation name: '@demo' or none")
  config = budgets[budget].get_config()
  for dotted, value in ABLATIONS[name]:
    node = config
    *parents, leaf = dotted.split('.')
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(f'ablation {name!r} names an unknown key config.{dotted}')
    node[leaf] = value
  return config
