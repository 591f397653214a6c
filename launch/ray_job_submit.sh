#!/usr/bin/env bash
# Submit a distributed solve or a training run to a running Ray cluster, wait for it, and fetch its
# results to runs/ray_jobs/<submission id>.
#
#   RAY_ADDRESS=http://127.0.0.1:8265 bash launch/ray_job_submit.sh solve [CONFIG] [section.key=value ...]
#   RAY_ADDRESS=http://127.0.0.1:8265 bash launch/ray_job_submit.sh train [CONFIG] [section.key=value ...]
# (CONFIG: a shipped name such as distributed / unconstrained, or a YAML path inside this checkout;
#  SUBMISSION_ID and DEST override the job's id and the local results folder.)
#
# RAY_ADDRESS is the job API (the head's dashboard, port 8265; `ray dashboard CLUSTER.yaml` forwards
# it). The job's driver runs on the head with the working directory uploaded (this checkout, so the
# job runs this code) and RAY_ADDRESS set by Ray, so `--backend ray` / `parallel.backend=ray` join
# the cluster: one actor per shard or rank, on the workers' CPUs/GPUs. Results are written to a
# private temporary folder on the head and come back through the job's log, packed between two
# marker lines (nothing to mount, no SSH); the log shown here leaves the packed block out.
# Needs `ray[default]` on this machine (pip install 'eagle-dist[ray]') and on the cluster.
set -euo pipefail
KIND=${1:-solve}
shift || true
case "$KIND" in
  solve) CONFIG=${1:-distributed}; shift || true
         RUN="eagle-dist run --config $CONFIG --out \$OUT/out solve.backend=ray $*" ;;
  train) CONFIG=${1:-distributed}; shift || true
         RUN="eagle-dist train --config $CONFIG --out \$OUT/out parallel.backend=ray $*" ;;
  *) echo "usage: $0 solve|train [CONFIG] [overrides...]" >&2; exit 2 ;;
esac
: "${RAY_ADDRESS:?set RAY_ADDRESS to the job API of the cluster, e.g. http://127.0.0.1:8265}"
ID=${SUBMISSION_ID:-eagle_dist_${KIND}_$(date +%Y%m%d_%H%M%S)_$$}
DEST=${DEST:-runs/ray_jobs/$ID}
BEGIN=EAGLE_DIST_RESULTS_BEGIN
END=EAGLE_DIST_RESULTS_END
# the entrypoint: run into a private folder on the head (not the uploaded working directory, which
# Ray may unpack again for the job's workers), then pack it into the log (base64 of a gzipped tar)
# whatever the exit code, and remove it
ENTRY="OUT=\$(mktemp -d /tmp/eagle_dist_job.XXXXXX); $RUN; rc=\$?; echo $BEGIN; \
tar -C \$OUT -czf - out 2>/dev/null | base64; echo $END; rm -rf \$OUT; exit \$rc"
ray job submit --submission-id "$ID" --no-wait --working-dir . \
  --runtime-env-json '{"excludes": ["runs", "stores", ".git", "*.pt"]}' -- bash -c "$ENTRY"
# follow the job's log until it ends (the log then holds the results), then ask for its status
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
ray job logs --follow "$ID" > "$LOG" || true
sed "/^$BEGIN\$/,/^$END\$/d" "$LOG"
STATUS=$( { ray job status "$ID" 2>&1 || true; } | grep -oiE "job '$ID' (succeeded|failed|stopped)" \
         | tail -1 | awk '{print toupper($NF)}' || true)
mkdir -p "$DEST"
sed -n "/^$BEGIN\$/,/^$END\$/p" "$LOG" | sed '1d;$d' | base64 -d | tar -xzf - -C "$DEST"
echo "job $ID: $STATUS; results in $DEST/out"
[[ "$STATUS" == "SUCCEEDED" ]]
