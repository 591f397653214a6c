#!/usr/bin/env bash
# One command for the first GPU a session is lent (issue 16, item 7): under 8 minutes on one GPU.
#   bash benchmarks/gpu_check.sh            (from the repository root; writes benchmarks/results/gpu/)
# It runs, each step time-boxed so that one slow step cannot eat the others' time:
#   1. the GPU tests (python -m pytest -m gpu)
#   2. a GPU column of the SuiteSparse table (the paper's protocol, CUDA, float64)
#   3. EAGLE's fast path in float64 / float32 / TF32 on dense n = 4096 (time, error: GEMM-rate ratios)
#   4. training steps/s of the paper's recipe on the GPU
# and records nvidia-smi, torch/CUDA versions and every exit status in summary.md.
set -u
cd "$(dirname "$0")/.."
OUT=benchmarks/results/gpu
mkdir -p "$OUT"
LOG="$OUT/summary.md"
python -m pip install -q --retries 1 -e ".[all]" > "$OUT/install.log" 2>&1 || true
{
  echo "# GPU check"; echo
  echo "Command: \`bash benchmarks/gpu_check.sh\` ($(date -u +%Y-%m-%dT%H:%MZ))"; echo
  echo '```'; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -5
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  echo '```'; echo
} > "$LOG"

step() {  # step NAME SECONDS COMMAND...
  local name=$1 secs=$2; shift 2
  local t0=$(date +%s)
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "- **$name**: exit $rc in $(( $(date +%s) - t0 )) s (log: \`$name.log\`)" >> "$LOG"
  tail -n 15 "$OUT/$name.log" | sed 's/^/    /' >> "$LOG"
}

step gpu_tests 150 python -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py
step suitesparse_gpu 150 eagle-dist bench suitesparse --device cuda --matrices HB/dwt_1007,NYPA/Maragal_4,HB/illc1850 \
     --methods eagle,lstsq-gelsd,cg,lsmr --out "$OUT/suitesparse"
step precision 90 python - <<'PY'
import time, numpy as np, torch
from eagle_dist import factorize
from eagle_dist.data import controlled
n = 4096
p = controlled(n, n, 1, 1, kappa=1e4, seed=0)
ref = p.B @ np.linalg.pinv(p.A)
A = torch.tensor(p.A, device="cuda")
for name, prec, tf32 in (("float64", "float64", False), ("float32", "float32", False), ("tf32", "float32", True)):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    for rep in range(2):                                    # the first call warms cuBLAS up
        torch.cuda.synchronize(); t0 = time.perf_counter()
        f = factorize(p.A, precision=prec, device="cuda"); W, info = f.solve(p.B)
        torch.cuda.synchronize(); dt = time.perf_counter() - t0
    print(f"{name:8s} {dt:8.3f} s  lift {f.info.lift_dtype} steps {f.info.lift_steps} "
          f"status {info['status']} error {np.linalg.norm(W - ref) / np.linalg.norm(ref):.2e}")
for dt in (torch.float64, torch.float32):
    X = torch.randn(n, n, device="cuda", dtype=dt); torch.cuda.synchronize()
    t0 = time.perf_counter(); [X @ X for _ in range(10)]; torch.cuda.synchronize()
    print(f"GEMM {dt}: {10 * 2 * n**3 / (time.perf_counter() - t0) / 1e12:.1f} TFLOP/s")
PY
step training 120 eagle-dist bench train --regimes unconstrained,compute_limited,distributed \
     --steps 300 --warmup 50 --layouts 1thread --out "$OUT/train"
echo >> "$LOG"; echo "Done: $(date -u +%H:%MZ)." >> "$LOG"
cat "$LOG"
