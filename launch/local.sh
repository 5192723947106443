#!/usr/bin/env bash
# Train locally (CPU or one GPU): launch/local.sh CONFIG WORKDIR [--config.key=value ...]
# Example: launch/local.sh configs/demo.py runs/demo --config.num_train_steps=200
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG WORKDIR [--config.key=value ...]" >&2; exit 2
fi
CONFIG=$1; WORKDIR=$2; shift 2
cd "$(dirname "$0")/.."
mkdir -p "$WORKDIR"
# Persistent compilation cache: repeat runs skip most of the compile time.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$WORKDIR/../.jax_cache}
python -m pairalign_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@" 2>&1 | tee -a "$WORKDIR/train.log"
