"""The safeguarded learned iteration (per-layer contraction checks with an EAGLE fallback), the
distributed learned kernel's local checks, and the streamed large evaluation. Planted models
(W_QK = diag(I, 0), W_VP = diag(a12 I, a13 I): one layer is A += a12·AAᵀA, C += a13·AAᵀC,
D_TF += a13·BAᵀC) make every expected step a formula; references are plain matrix algebra."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eagle_dist.model.config import load_train_config
from eagle_dist.model.data import fixed_test_set, sample_batch, step_seed
from eagle_dist.model.extract import planted_model
from eagle_dist.model.kernel import LearnedKernel, kernel_forward, local_step
from eagle_dist.model.safeguard import (Safeguard, eagle_fallback, safeguarded_forward,
                                        spectral_norm)
from eagle_dist.model.train import save_checkpoint


def cfg_of(*over):
    return load_train_config(None, list(over))


def prompts(cfg, k, seed=3):
    return fixed_test_set(cfg.model, cfg.data, k, seed, dtype=torch.float64).X


def eagle_theory(A, B, C, De):
    """One EAGLE step, η = 1/3, γ = 1, ρ = 1/‖A‖₂² (SPEC §2; D in EAGLE's sign), written out."""
    rho = 1.0 / torch.linalg.matrix_norm(A, ord=2) ** 2
    G = A.T @ A
    return (A - rho / 3 * A @ G, B - rho / 3 * B @ G, C - rho * A @ (A.T @ C),
            De + rho * B @ (A.T @ C))


def test_spectral_norm_is_the_largest_singular_value_and_flags_non_finite():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(5, 18, 12, generator=g, dtype=torch.float64)
    want = [float(np.linalg.svd(a.numpy(), compute_uv=False)[0]) for a in A]
    A[2, 0, 0] = float("nan")
    got = spectral_norm(A)
    assert got[2] == float("inf")
    np.testing.assert_allclose(got[[0, 1, 3, 4]].numpy(), np.array(want)[[0, 1, 3, 4]], rtol=1e-12)


def test_eagle_fallback_is_the_theory_step():
    g = torch.Generator().manual_seed(1)
    A, B = torch.randn(4, 18, 18, generator=g, dtype=torch.float64), torch.randn(4, 2, 18, generator=g, dtype=torch.float64)
    C, D = torch.randn(4, 18, 2, generator=g, dtype=torch.float64), torch.randn(4, 2, 2, generator=g, dtype=torch.float64)
    got = eagle_fallback(A, B, C, D)
    for i in range(4):
        for x, y in zip(got, eagle_theory(A[i], B[i], C[i], D[i])):
            assert torch.allclose(x[i], y, rtol=1e-12, atol=1e-12)


def test_contracting_steps_are_kept_bit_for_bit():
    """Steps with |a|·‖A‖² ≤ 0.72 contract A and C (EAGLE's guarantee): nothing falls back and
    the safeguarded prediction is the model's own."""
    c = cfg_of()
    m = planted_model(c, [-0.02] * 4, [-0.02] * 4).double()
    X = prompts(c, 64)
    assert float(torch.linalg.matrix_norm(X[:, :18, :18], ord=2).max()) ** 2 * 0.02 < 2
    out = safeguarded_forward(m, X)
    assert not bool(out.fallback.any())
    with torch.no_grad():
        assert torch.equal(out.prediction, m(X))


def test_a_growing_step_falls_back_to_the_eagle_step():
    """Layer 1's A step a12 = −1 grows ‖A‖₂ (σ → σ(1 − σ²), ‖A‖ ≈ 4): the EAGLE step replaces
    it; layer 2 (a C/D step only) then runs on EAGLE's state. Layer 2's A step (a12 = +0.5, a
    growth) is not checked: the readout never reads A_L."""
    c = cfg_of("model.layers=2")
    m = planted_model(c, [-1.0, 0.5], [0.0, -0.02]).double()
    X = prompts(c, 6)
    out = safeguarded_forward(m, X)
    assert out.fallback[:, 0].all() and not out.fallback[:, 1].any()
    for i in range(6):
        A, B, C = X[i, :18, :18], X[i, 18:, :18], X[i, :18, 18:]
        A1, B1, C1, De1 = eagle_theory(A, B, C, torch.zeros(2, 2, dtype=torch.float64))
        pred = De1 + 0.02 * B1 @ (A1.T @ C1)          # −(−D_TF + a13·B AᵀC), a13 = −0.02
        assert torch.allclose(out.prediction[i], pred, rtol=1e-10, atol=1e-12)


def test_a_growing_c_step_falls_back_and_every_blowing_layer_is_eagle():
    """a12 = a13 = −10 grows A and C in every layer: the safeguarded model is exactly four
    EAGLE steps with the theory constants (D from 0; the prediction is EAGLE's D)."""
    c = cfg_of()
    m = planted_model(c, [-10.0] * 4, [-10.0] * 4).double()
    X = prompts(c, 5)
    with torch.no_grad():
        assert not bool(torch.isfinite(m(X)).all()) or float(m(X).abs().max()) > 1e3
    out = safeguarded_forward(m, X)
    assert out.fallback.all()
    for i in range(5):
        blocks = (X[i, :18, :18], X[i, 18:, :18], X[i, :18, 18:], torch.zeros(2, 2, dtype=torch.float64))
        for _ in range(4):
            blocks = eagle_theory(*blocks)
        assert torch.allclose(out.prediction[i], blocks[3], rtol=1e-9, atol=1e-12)


def test_safeguard_arguments_are_checked():
    with pytest.raises(ValueError, match="growth"):
        Safeguard(growth=-0.1)
    with pytest.raises(ValueError, match="c_growth"):
        Safeguard(c_growth=-1.0)
    c = cfg_of("model.regime=distributed")
    m = planted_model(c, [-0.02] * 4, [-0.02] * 4)
    with pytest.raises(ValueError, match="kernel_forward"):
        safeguarded_forward(m, prompts(c, 2))
    with pytest.raises(TypeError, match="Safeguard"):
        LearnedKernel.from_model(m, c, safeguard="yes")


def test_kernel_local_check_falls_back_to_the_local_eagle_step():
    """Worker μ's check uses its shard and the replicated C only; a growing step becomes the
    local EAGLE step with ρ_μ = 1/‖A^μ‖₂² (the paper's distributed mode)."""
    c = cfg_of("model.regime=distributed")
    m = planted_model(c, [-1.0] * 4, [-0.01] * 4).double()
    X = prompts(c, 3)
    A, B, C = X[:, :18, 6:12], X[:, 18:, 6:12], X[:, :18, 18:]
    D = torch.zeros(3, 2, 2, dtype=torch.float64)
    head = m.layers[0].heads[1]
    (A2, B2, C2, D2), bad, _ = local_step(head, 1, c.model, A, B, C, D, safeguard=Safeguard())
    assert bad.all()
    for i in range(3):
        for x, y in zip((A2, B2, C2, D2), eagle_theory(A[i], B[i], C[i], D[i])):
            assert torch.allclose(x[i], y, rtol=1e-12, atol=1e-12)
    # a contracting step is the learned one, unchanged
    m2 = planted_model(c, [-0.01] * 4, [-0.01] * 4).double()
    out, bad, _ = local_step(m2.layers[0].heads[1], 1, c.model, A, B, C, D, safeguard=Safeguard())
    ref, _, _ = local_step(m2.layers[0].heads[1], 1, c.model, A, B, C, D)
    assert not bad.any() and all(torch.equal(x, y) for x, y in zip(out, ref))


def test_safeguarded_kernel_in_the_runtime_matches_the_batched_kernel():
    """LearnedKernel(safeguard) through solve_distributed (3 in-process workers) gives, prompt by
    prompt, what kernel_forward computes for the batch; with zero slack the all-reduced C never
    grows (every message is non-expansive, so is their mean)."""
    from eagle_dist.control import SolverOptions
    from eagle_dist.distributed.runtime import solve_distributed
    from eagle_dist.model.data import as_numpy_problem
    c = cfg_of("model.regime=distributed")
    m = planted_model(c, [-0.3, -0.3, -0.3, 0.0], [-0.2] * 4).double()
    t = fixed_test_set(c.model, c.data, 3, 11, dtype=torch.float64)
    sg = Safeguard(c_growth=0.0)
    pred, fb = kernel_forward(m, t.X, sg)
    assert fb.any() and not fb.all()
    shards = [list(range(6 * k, 6 * k + 6)) for k in range(3)]
    opts = SolverOptions(max_iter=4, tol=1e-300, record_error=False)
    for i in range(3):
        res = solve_distributed(as_numpy_problem(t, i, c.model), opts, workers=3, shards=shards,
                                kernel=LearnedKernel.from_model(m, c, sg), verify=False,
                                normalization="none")
        np.testing.assert_allclose(res.D, pred[i].numpy(), rtol=1e-12, atol=1e-14)
    # the all-reduced C, round by round
    X = t.X
    As = [X[:, :18, 6 * k:6 * k + 6] for k in range(3)]
    Bs = [X[:, 18:, 6 * k:6 * k + 6] for k in range(3)]
    C, D = X[:, :18, 18:], torch.zeros(3, 2, 2, dtype=torch.float64)
    for l, layer in enumerate(m.layers):
        msgs = []
        for mu in range(3):
            (As[mu], Bs[mu], Cm, Dm), _, _ = local_step(layer.heads[mu], mu, c.model, As[mu],
                                                        Bs[mu], C, D, safeguard=sg, last=l == 3)
            msgs.append((Cm, Dm))
        C_new = torch.stack([x[0] for x in msgs]).mean(0)
        assert bool((torch.linalg.vector_norm(C_new, dim=(1, 2))
                     <= torch.linalg.vector_norm(C, dim=(1, 2)) * (1 + 1e-12)).all())
        C, D = C_new, torch.stack([x[1] for x in msgs]).mean(0)


def test_streamed_evaluation_counts_what_it_says(tmp_path):
    """evaluate_checkpoint's per-predictor numbers, recomputed from the same fresh prompts (chunk
    i from step_seed(seed, i, stream 3), none of them a test-set prompt); blow-ups are MSE > 1."""
    from eagle_dist.model.evaluate import EVAL_STREAM, evaluate_checkpoint
    c = cfg_of("model.layers=2")
    m = planted_model(c, [-0.15, -0.02], [-0.03, -0.08])   # unstable on large-‖A‖ prompts
    path = str(tmp_path / "m.pt")
    save_checkpoint(path, m.float(), None, 0, c)
    res = evaluate_checkpoint(path, prompts=300, chunk=128, seed=5, worst=2)
    X = torch.cat([sample_batch(min(128, 300 - i), c.model, c.data, seed=step_seed(5, i // 128,
                                                                                   EVAL_STREAM)).X
                   for i in range(0, 300, 128)])
    test = fixed_test_set(c.model, c.data, 300, c.eval.test_seed).X
    assert not bool((X[:, None] == test[None]).all(-1).all(-1).any())
    with torch.no_grad():
        e = (m(X).double() - X[:, 18:, 18:].double()).pow(2).mean(dim=(1, 2))
    assert res["prompts"] == 300 and res["raw"]["blowups"] == int((e > 1).sum()) > 0
    assert res["raw"]["median"] == pytest.approx(float(np.median(e.numpy())), rel=1e-5)
    assert res["safeguarded"]["blowups"] == 0 and 0 < res["fallback_any"] < 1
    w = res["worst"]["raw"][0]
    assert w["raw"] == pytest.approx(float(e.max()), rel=1e-5) and len(w["sigma"]) == 3
    raw_traced = [b for b in res["blowups"] if b["raw"] > 1]
    assert len(raw_traced) == res["raw"]["blowups"]
    assert all(b["mechanism"] != "no growth" and b["sigma"][0] == pytest.approx(b["normA"], rel=1e-5)
               for b in raw_traced)
    json.dumps(res)


def test_blow_up_mechanism_names_the_first_growing_step():
    from eagle_dist.model.evaluate import mechanism
    assert mechanism([5, 2, 6, 1, 9], [1, 1, 1, 1, 1]) == "A grows in layer 2"
    assert mechanism([5, 2, 1, 0.5, 9], [1, 0.5, 0.4, 0.3, 30]) == "C grows in layer 4"
    assert mechanism([5, 2, 1, 0.5, 0.5], [1, 0.5, 0.4, 0.3, 0.2]) == "no growth"


def test_bench_evaluate_writes_its_table(tmp_path):
    from eagle_dist.cli import main
    c = cfg_of("model.regime=distributed", "model.layers=2")
    run = tmp_path / "runs" / "distributed-seed9"
    run.mkdir(parents=True)
    save_checkpoint(str(run / "final.pt"), planted_model(c, [-0.05, -0.01], [-0.1, -0.2]).float(),
                    None, 0, c)
    out = tmp_path / "out"
    assert main(["bench", "evaluate", "--runs", str(tmp_path / "runs"), "--prompts", "200",
                 "--chunk", "100", "--out", str(out)]) == 0
    text = (out / "evaluation.md").read_text()
    assert "distributed-seed9" in text and (out / "evaluation" / "distributed-seed9.json").exists()
    assert "kernel median" in text and (out / "evaluation.csv").exists()
    with pytest.raises(SystemExit):         # the CLI says what to pass, exit code 2
        main(["bench", "evaluate", "--runs", str(tmp_path / "nothing"), "--out", str(out)])
