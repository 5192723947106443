"""Ablations of `synthetic.py`: one run per switched-off term, same seed and budget.

Pick one with a config argument: `--config=configs/ablations.py:no_contrast`; run them all with
`launch/ablations.sh WORKROOT`. `--config=configs/ablations.py` alone is the full model.
"""

from configs import synthetic

# name -> (dotted key, value) overrides applied on top of configs/synthetic.py
ABLATIONS = {
    'full': (),
    'no_contrast': (('loss.contrast_weight', 0.0),),
    'no_antibypass': (('loss.antibypass_weight', 0.0),),
    'no_prefix_corruption': (('loss.prefix_corruption', 0.0),),
    'no_cross_tf': (('loss.cross_tf_weight', 0.0), ('loss.self_tf_weight', 1.0)),
    'no_timing': (('loss.timing_weight', 0.0), ('loss.monotonic_weight', 0.0)),
    'no_coverage': (('loss.coverage_weight', 0.0),),
    'no_length_control': (('length.controller_gain', 0.0), ('loss.length_weight', 0.0)),
    # VQ targets to the end (alpha stays 0): stage 2 keeps contrast, anti-bypass and length control.
    'no_teacher': (('schedule.ramp_steps', 10**9),),
    'no_cross_speaker': (('data.cross_speaker_views', 0.0),),
    'no_run_pruning': (('targets.min_run_frames', 1),),
}


def get_config(name: str = 'full'):
  if name not in ABLATIONS:
    raise ValueError(f'Unknown ablation {name!r}; choose one of {sorted(ABLATIONS)}')
  config = synthetic.get_config()
  for dotted, value in ABLATIONS[name]:
    node = config
    *parents, leaf = dotted.split('.')
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(f'ablation {name!r} names an unknown key config.{dotted}')
    node[leaf] = value
  return config
