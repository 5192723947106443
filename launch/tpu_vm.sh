#!/usr/bin/env bash
# Create, set up and run on a Cloud TPU VM slice, on all workers.
#
#   launch/tpu_vm.sh create  NAME ZONE ACCELERATOR   # e.g. pa-v5e v5litepod-16 ... (see below)
#   launch/tpu_vm.sh setup   NAME ZONE               # copy this repo and install it on every worker
#   launch/tpu_vm.sh mount   NAME ZONE BUCKET        # gcsfuse: gs://BUCKET at /gcs/BUCKET everywhere
#   launch/tpu_vm.sh run     NAME ZONE CONFIG WORKDIR [--config.key=value ...]
#   launch/tpu_vm.sh delete  NAME ZONE
#
# WORKDIR must be a path that every worker sees (the trainer refuses gs:// URLs: its metrics and
# reports are written with local file calls): a bucket mounted by `mount`
# (WORKDIR=/gcs/BUCKET/runs/x) or another shared filesystem (NFS, Filestore). Every worker runs the
# same command; jax.distributed.initialize() discovers the slice by itself on Cloud TPU, and each
# worker reads only its shard of the data. Preemptible/spot slices: the trainer saves on SIGTERM
# and resumes from the newest checkpoint when run again.
# Environment: TPU_VERSION (default v2-alpha-tpuv5-lite), PROJECT (default: gcloud's).
set -euo pipefail
cmd=${1:-}; shift || true
REPO_DIR=$(cd "$(dirname "$0")/.." && pwd)
TPU_VERSION=${TPU_VERSION:-v2-alpha-tpuv5-lite}
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}

case "$cmd" in
  create)
    NAME=$1; ZONE=$2; ACCEL=$3
    gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$ACCEL" \
      --version="$TPU_VERSION" $PROJECT_FLAG ${SPOT:+--spot}
    ;;
  setup)
    NAME=$1; ZONE=$2
    tar -C "$REPO_DIR" --exclude=runs --exclude=.git -czf /tmp/pairalign_jax.tgz .
    gcloud compute tpus tpu-vm scp /tmp/pairalign_jax.tgz "$NAME":~/ --zone="$ZONE" --worker=all $PROJECT_FLAG
    gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all $PROJECT_FLAG --command="
      set -e; mkdir -p ~/pairalign_jax && tar -xzf ~/pairalign_jax.tgz -C ~/pairalign_jax
      cd ~/pairalign_jax && python3 -m pip install -q -e . && python3 -m pip install -q 'jax[tpu]==0.10.2'
      python3 -c 'import jax; print(jax.process_index(), jax.device_count())'"
    ;;
  mount)
    NAME=$1; ZONE=$2; BUCKET=$3
    gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all $PROJECT_FLAG --command="
      set -e
      if ! command -v gcsfuse >/dev/null; then
        echo 'deb https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main' |
          sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
        curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add - >/dev/null
        sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse
      fi
      sudo mkdir -p /gcs/$BUCKET && sudo chown \$(id -u):\$(id -g) /gcs/$BUCKET
      mountpoint -q /gcs/$BUCKET || gcsfuse --implicit-dirs $BUCKET /gcs/$BUCKET
      echo mounted on \$(hostname)"
    ;;
  run)
    NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
    EXTRA="$*"
    gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all $PROJECT_FLAG --command="
      cd ~/pairalign_jax && export PAIRALIGN_DISTRIBUTED=1 &&
      nohup python3 -m pairalign_jax.main --config=$CONFIG --workdir=$WORKDIR \
        --config.model.dtype=bfloat16 $EXTRA > ~/train.log 2>&1 &
      echo started on \$(hostname)"
    echo "Follow worker 0 with: gcloud compute tpus tpu-vm ssh $NAME --zone=$ZONE --worker=0 --command='tail -f ~/train.log'"
    ;;
  delete)
    NAME=$1; ZONE=$2
    gcloud compute tpus tpu-vm delete "$NAME" --zone="$ZONE" --quiet $PROJECT_FLAG
    ;;
  *)
    sed -n '2,16p' "$0"; exit 2;;
esac
