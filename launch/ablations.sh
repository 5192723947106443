#!/usr/bin/env bash
# Runs every ablation of configs/ablations.py (one switched-off term each, same seed and budget)
# one after another, then prints the table of their reports.
#   launch/ablations.sh WORKROOT [--config.key=value ...]
# ABLATION_BUDGET=demo runs each at the demo's budget (configs/demo.py) instead of synthetic.py's.
set -euo pipefail
ROOT=${1:?usage: $0 WORKROOT [--config.key=value ...]}; shift
cd "$(dirname "$0")/.."
NAMES=$(python -c 'from configs import ablations; print(" ".join(ablations.ABLATIONS))')
for name in $NAMES; do
  echo "=== ablation $name"
  spec=$name${ABLATION_BUDGET:+@$ABLATION_BUDGET}
  python -m pairalign_jax.main --config="configs/ablations.py:$spec" --workdir="$ROOT/$name" "$@"
done
python -m pairalign_jax.evaluation.ablation_table "$ROOT"
