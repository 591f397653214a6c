#!/usr/bin/env bash
# Submit a distributed solve to a running Ray cluster. The job's driver connects to the cluster
# (RAY_ADDRESS is set by Ray inside jobs), starts one actor per shard (num_gpus=1 each when the
# cluster has >= M GPUs) and the actors form a torch.distributed group (NCCL on GPUs, gloo on CPUs).
#   RAY_ADDRESS=http://<head>:8265 bash launch/ray_job_submit.sh [CONFIG]
set -euo pipefail
CONFIG=${1:-configs/distributed.yaml}
exec ray job submit --working-dir . -- \
  eagle-dist run --config "$CONFIG" --out /tmp/eagle_dist_run
