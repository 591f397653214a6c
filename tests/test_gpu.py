"""CUDA paths (marker ``gpu``): deselected by the default command (``-m "not slow and not gpu"``);
run them on a GPU machine with ``python -m pytest -m gpu``. Each test compares the GPU result with
the float64 NumPy reference, as the CPU tables do."""
import numpy as np
import pytest
import torch

from eagle_dist import solve
from eagle_dist.data import controlled
from eagle_dist.distributed import alpha_problem

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA device (run with -m gpu on a GPU machine)")]


def _ref_error(p, D):
    ref = p.B.astype(np.float64) @ np.linalg.pinv(p.A.astype(np.float64)) @ p.C.astype(np.float64)
    return np.linalg.norm(D - ref) / np.linalg.norm(ref)


@pytest.mark.parametrize("dtype,bound", [("float64", 1e-10), ("float32", 1e-3)])
def test_eagle_on_cuda_matches_reference_and_cpu(dtype, bound):
    p = controlled(500, 500, 2, 2, kappa=1e3, seed=0)
    gpu = solve(p, "eagle", device="auto", dtype=dtype, tol=1e-12 if dtype == "float64" else 1e-6)
    assert gpu.info["device"].startswith("cuda")                    # auto picked the GPU
    assert gpu.converged and _ref_error(p, gpu.D) <= bound
    cpu = solve(p, "eagle", device="cpu", dtype=dtype, tol=1e-12 if dtype == "float64" else 1e-6)
    assert abs(gpu.iterations - cpu.iterations) <= 2


@pytest.mark.parametrize("kind", ["orthonormal", "sample"])
def test_sketched_eagle_on_cuda(kind):
    p = controlled(128, 128, 2, 2, kappa=10, seed=0)
    res = solve(p, "eagle", device="cuda", sketch_size=32, sketch_kind=kind, target_error=1e-6,
                max_iter=5000)
    assert res.converged and _ref_error(p, res.D) <= 1e-6


@pytest.mark.parametrize("method", ["cg", "lsmr", "lstsq", "pinv"])
def test_baselines_on_cuda(method):
    p = controlled(200, 200, 2, 2, kappa=1e2, seed=1)
    res = solve(p, method, device="cuda", tol=1e-12, max_iter=20000)
    assert res.converged and _ref_error(p, res.D) <= 1e-8
    if method == "lsmr":
        try:
            import cupy  # noqa: F401
            assert res.info["krylov_backend"] == "cupy"
        except ImportError:
            assert res.info["krylov_backend"] == "scipy"


def test_distributed_inprocess_on_cuda():
    p, shards = alpha_problem(200, 200, 4, alpha=1.0, kappa_max=1e3, d_query=1, seed=0)
    res = solve(p, "eagle", workers=4, shards=shards, device="cuda", target_error=1e-8,
                max_iter=200)
    assert res.converged and res.info["device"].startswith("cuda") and res.rounds <= 35


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL test needs >= 2 GPUs")
def test_torch_backend_uses_nccl_with_one_gpu_per_rank():
    p, shards = alpha_problem(200, 200, 2, alpha=1.0, kappa_max=1e3, d_query=1, seed=0)
    res = solve(p, "eagle", workers=2, shards=shards, backend="torch", target_error=1e-8,
                max_iter=200)
    assert res.backend == "torch/nccl" and res.converged
    ref = solve(p, "eagle", workers=2, shards=shards, device="cpu", target_error=1e-8, max_iter=200)
    assert res.rounds == ref.rounds


@pytest.mark.parametrize("method", ["eagle", "cg", "lsmr"])
def test_target_residual_on_cuda(method):
    from eagle_dist import Problem
    A = controlled(200, 200, 1, 1, kappa=1e3, seed=2).A
    W = np.random.default_rng(2).standard_normal((1, 200))
    p = Problem.from_arrays(A, W @ A, np.eye(200))
    res = solve(p, method, device="cuda", target_residual=1e-8, max_iter=20000)
    assert res.converged
    assert np.linalg.norm(res.D @ A - p.B) <= 1e-8 * np.linalg.norm(p.B)


def test_distributed_cg_on_cuda():
    p = controlled(60, 120, 2, 2, kappa=1e2, seed=0)
    res = solve(p, "cg", workers=2, device="cuda", tol=1e-10, max_iter=5000)
    assert res.converged and res.info["device"].startswith("cuda") and _ref_error(p, res.D) <= 1e-7


def test_bench_suitesparse_quick_uses_the_gpu(tmp_path):
    from eagle_dist.bench.report import read_csv
    from eagle_dist.bench.suitesparse import suitesparse_sweep
    suitesparse_sweep(str(tmp_path), quick=True, cache_dir=str(tmp_path / "cache"),
                      progress=False)
    rows = {r["method"]: r for r in read_csv(tmp_path / "suitesparse_summary.csv")
            if float(r["tolerance"]) == 1e-3}
    for m in ("eagle", "cg", "lstsq-gelsd", "lstsq-gelsy"):
        assert "cuda" in rows[m]["backend"] and rows[m]["status"] == "converged", rows[m]
    try:
        import cupy  # noqa: F401
        assert rows["lsmr"]["backend"].startswith("cupy")
    except ImportError:
        assert rows["lsmr"]["backend"].startswith("scipy")


def test_training_on_cuda_matches_cpu():
    """The transformer's forward on CUDA equals the CPU forward on the same batch to rounding,
    and a short training run on the device (batches drawn there) lowers the loss."""
    from eagle_dist.model.config import load_train_config
    from eagle_dist.model.data import step_batch
    from eagle_dist.model.train import train_loop
    from eagle_dist.model.transformer import LinearTransformer
    c = load_train_config(None, ["run.dtype=float64", "model.init_std=0.1"])
    m = LinearTransformer(c.model, seed=0).double()
    X = step_batch(0, c.model, c.data, seed=0, size=64, dtype=torch.float64).X
    cpu = m(X)
    gpu = m.to("cuda")(X.to("cuda")).cpu()
    assert torch.allclose(cpu, gpu, rtol=1e-10, atol=1e-12)
    res = train_loop(load_train_config(None, ["optim.steps=50", "optim.batch=256", "eval.test_size=256",
                                              "eval.every=50", "run.device=cuda"]), write=False)
    assert res.test["finite"] and res.losses[-1] < res.losses[0]
