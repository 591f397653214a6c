#!/usr/bin/env bash
# Distributed EAGLE with torchrun: one process per column shard (gloo on CPU, NCCL when every rank
# has a GPU; LOCAL_RANK picks the GPU). Usage:
#   bash launch/torchrun.sh [NPROC] [CONFIG] [--out DIR]                # one node
#   # several nodes: run on every node, NODE_RANK 0 .. NNODES-1, all naming node 0's address
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash launch/torchrun.sh 8 configs/distributed.yaml
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash launch/torchrun.sh 8 configs/distributed.yaml
# Multi-node runs meet through torchrun's c10d rendezvous at MASTER_ADDR:MASTER_PORT (default 29500).
# A column store (problem.source: store) must be on a path every node can read; rank 0 writes the
# results on node 0.
set -euo pipefail
NPROC=${1:-4}
CONFIG=${2:-configs/distributed.yaml}
shift $(( $# < 2 ? $# : 2 ))
if [[ "${NNODES:-1}" == "1" ]]; then
  exec torchrun --standalone --nproc_per_node="$NPROC" -m eagle_dist.distributed.torchrun --config "$CONFIG" "$@"
fi
exec torchrun --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$NPROC" \
  --rdzv-backend=c10d --rdzv-endpoint="$MASTER_ADDR:${MASTER_PORT:-29500}" \
  --rdzv-id="${RDZV_ID:-eagle_dist}" \
  -m eagle_dist.distributed.torchrun --config "$CONFIG" "$@"
