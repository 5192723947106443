#!/usr/bin/env bash
# Train on one multi-GPU node: one process drives all local GPUs (the mesh spans them).
#   launch/gpu_node.sh CONFIG WORKDIR [--config.key=value ...]
# Multi-node: run this on every node with PAIRALIGN_COORDINATOR=host0:1234,
# PAIRALIGN_NUM_PROCESSES=<nodes> and PAIRALIGN_PROCESS_ID=<0..nodes-1> set; the trainer calls
# jax.distributed.initialize() with them (see pairalign_jax/sharding.py).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG WORKDIR [--config.key=value ...]" >&2; exit 2
fi
CONFIG=$1; WORKDIR=$2; shift 2
cd "$(dirname "$0")/.."
if ! python -c 'import jax, sys; sys.exit(0 if jax.default_backend() == "gpu" else 1)' 2>/dev/null; then
  echo "No GPU backend in this environment. Install the CUDA build first:" >&2
  echo "  pip install -e . && pip install 'jax[cuda12]==0.10.2'" >&2
  exit 1
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$WORKDIR/../.jax_cache}
mkdir -p "$WORKDIR"
NGPU=$(python -c 'import jax; print(jax.local_device_count())')
echo "Training on $NGPU local GPU(s); mesh from the config (default: all devices on the data axis)."
python -m pairalign_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
  --config.model.dtype=bfloat16 "$@" 2>&1 | tee -a "$WORKDIR/train.log"
