#!/usr/bin/env bash
# Distributed EAGLE with torchrun: one process per column shard (gloo on CPU, NCCL when every rank
# has a GPU; LOCAL_RANK picks the GPU). Usage:
#   bash launch/torchrun.sh [NPROC] [CONFIG]                 # single node
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash launch/torchrun.sh 8 configs/distributed.yaml
set -euo pipefail
NPROC=${1:-4}
CONFIG=${2:-configs/distributed.yaml}
if [[ "${NNODES:-1}" == "1" ]]; then
  exec torchrun --standalone --nproc_per_node="$NPROC" -m eagle_dist.distributed.torchrun --config "$CONFIG"
fi
exec torchrun --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$NPROC" \
  --master_addr="$MASTER_ADDR" --master_port="${MASTER_PORT:-29500}" \
  -m eagle_dist.distributed.torchrun --config "$CONFIG"
