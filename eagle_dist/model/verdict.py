"""The one verdict on a trained model (training summary and extraction alike): structure AND
error level, one rule.

A model has **learned EAGLE** when both hold:

1. **structure** — the extraction's tests pass (its products carry EAGLE's pattern, the extracted
   iteration replayed through the kernel reproduces the model, the per-layer products have EAGLE's
   signs; :func:`eagle_dist.model.extract.extract`), and
2. **error level** — its median per-prompt test MSE is at most ``EAGLE_FACTOR`` × that of EAGLE
   with the theory constants on the same prompts (η = 1/3, γ = 1, per-prompt ρ = 1/‖A_ℓ‖²; in the
   compute-limited regime sketched EAGLE with a fixed Haar S_ℓ of width r per layer and
   ρ = 1/‖A_ℓS_ℓ‖²).

Otherwise the verdict says which part is missing: EAGLE's structure with an error between the
GD-like rule and EAGLE (partly trained), EAGLE's structure at the GD-like rule's error or worse
(not EAGLE — a 150-step model is like this), no structure (with the extraction's reasons and the
error level), not useful (median above half the zero predictor's), or blown up. Medians, not
means, set the level: the fixed per-layer constants of a trained model blow up on rare prompts
(reported as a separate instability note with the raw mean). The reference rules run on the same
prompts as the model — noisy prompts included, so one rule serves noiseless and noisy models —
through the project's kernel (:func:`eagle_dist.kernels.eagle_update`, vectorised over prompts).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch
from torch.func import vmap

from ..kernels import eagle_update
from .config import ModelConfig

#: median within this factor of EAGLE's (theory constants, same prompts) = EAGLE's error level
EAGLE_FACTOR = 1.5
#: median at or above this factor of the GD-like rule's = the GD-like rule's level
GD_FACTOR = 0.8
#: median below this share of the zero predictor's MSE = the model has learned something
USEFUL = 0.5

EAGLE_THEORY = "EAGLE theory (eta 1/3, gamma 1, per-sample rho)"
EAGLE_TRAINED = "EAGLE trained constants (eta 1, gamma 1.9, batch-max rho)"
GD_LIKE = "GD-like (eta 0, gamma 1.9, batch-max rho)"
SKETCHED_THEORY = "sketched EAGLE theory (Haar S_l of width r, eta 1/3, gamma 1, per-sample rho)"
DISTRIBUTED_THEORY = ("distributed EAGLE theory (local eta 1/3, gamma 1, rho_mu = 1/|A^mu|^2, "
                      "mean of C, D)")


def _haar_sketches(d: int, r: int, layers: int, seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    return [torch.linalg.qr(torch.randn(d, r, generator=g, dtype=torch.float64))[0]
            for _ in range(layers)]


def reference_errors(X: torch.Tensor, target: torch.Tensor, mc: ModelConfig,
                     sketch_seed: int = 0) -> Dict[str, torch.Tensor]:
    """Per-prompt 4-layer test MSE (mean over the hidden block's entries) of the reference rules
    on the prompts ``X`` (b, n + n′, d + d′): EAGLE with the theory constants, EAGLE with the
    paper's trained constants (η = 1, γ = 1.9, ρ = 1 / batch-max ‖A_ℓ‖²), a GD-like rule (η = 0,
    γ = 1.9, same ρ) and, in the compute-limited regime, sketched EAGLE with the theory constants.
    Every step is :func:`eagle_update` (per-prompt ρ: the prompt's A and B scaled by 1/‖A_ℓ S‖₂,
    C and D not, which is the same step)."""
    n, d = mc.n, mc.d
    Xd = X.double()
    A0, B0, C0 = Xd[:, :n, :d], Xd[:, n:, :d], Xd[:, :n, d:]
    rules = [(EAGLE_THEORY, 1 / 3, 1.0, False, None), (EAGLE_TRAINED, 1.0, 1.9, True, None),
             (GD_LIKE, 0.0, 1.9, True, None)]
    if mc.regime == "compute_limited":
        rules.append((SKETCHED_THEORY, 1 / 3, 1.0, False,
                      _haar_sketches(d, mc.r, mc.layers, sketch_seed)))
    out = {}
    if mc.regime == "distributed":
        out[DISTRIBUTED_THEORY] = _distributed_errors(A0, B0, C0, target, mc)
    for name, eta, gamma, batch_max, sketches in rules:
        A, B, C = A0, B0, C0
        D = torch.zeros(B0.shape[0], B0.shape[1], C0.shape[2], dtype=torch.float64)
        for l in range(mc.layers):
            S = sketches[l] if sketches is not None else None
            AS = A if S is None else A @ S
            norms = torch.linalg.matrix_norm(AS, 2)                       # (b,)
            s = (norms.max().expand_as(norms) if batch_max else norms).clamp_min(1e-300)
            step = vmap(lambda a, b_, c, d_, S=S: eagle_update(a, b_, c, d_, eta=eta, gamma=gamma,
                                                               rho=1.0, sketch=S))
            An, Bn, C, D = step(A / s[:, None, None], B / s[:, None, None], C, D)
            A, B = An * s[:, None, None], Bn * s[:, None, None]
        out[name] = (D - target.double()).pow(2).mean(dim=(1, 2))
    return out


def _local_step(A, B, C, D, *, eta: float, gamma: float):
    """One EAGLE step per prompt with ρ = 1/‖A‖₂² (A and B scaled by 1/‖A‖₂, C and D not)."""
    s = torch.linalg.matrix_norm(A, 2).clamp_min(1e-300)[:, None, None]
    step = vmap(lambda a, b_, c, d_: eagle_update(a, b_, c, d_, eta=eta, gamma=gamma, rho=1.0))
    An, Bn, Cn, Dn = step(A / s, B / s, C, D)
    return An * s, Bn * s, Cn, Dn


def _distributed_errors(A, B, C, target, mc: ModelConfig) -> torch.Tensor:
    """The paper's distributed EAGLE (Alg. 1): machine μ updates its column shard with its own
    ρ_μ = 1/‖A^μ‖₂², η = 1/3, γ = 1; C and D become the mean of the machines' C′, D′."""
    M, dl = mc.machines, mc.d // mc.machines
    shards = [(A[..., mu * dl:(mu + 1) * dl], B[..., mu * dl:(mu + 1) * dl]) for mu in range(M)]
    D = torch.zeros(B.shape[0], B.shape[1], C.shape[2], dtype=torch.float64)
    for _ in range(mc.layers):
        outs = [_local_step(Am, Bm, C, D, eta=1 / 3, gamma=1.0) for Am, Bm in shards]
        shards = [(o[0], o[1]) for o in outs]
        C, D = sum(o[2] for o in outs) / M, sum(o[3] for o in outs) / M
    return (D - target.double()).pow(2).mean(dim=(1, 2))


def reference_iterations(X: torch.Tensor, target: torch.Tensor, model) -> Dict[str, float]:
    """Mean test MSE of each rule of :func:`reference_errors` (``model`` gives the sizes)."""
    return {k: float(v.mean()) for k, v in reference_errors(X, target, model.cfg).items()}


def eagle_reference(mc: ModelConfig) -> str:
    """The rule whose error level counts as EAGLE's for this regime."""
    return {"compute_limited": SKETCHED_THEORY, "distributed": DISTRIBUTED_THEORY}.get(
        mc.regime, EAGLE_THEORY)


@dataclass(frozen=True)
class Verdict:
    """``eagle``: structure AND error level; ``label``: one of ``eagle``, ``structure_partly``
    (structure, error between GD-like and EAGLE), ``structure_gd`` (structure, error at the
    GD-like rule's level or worse), ``no_structure``, ``not_useful``, ``blew_up``; ``text``: one
    markdown paragraph starting with the bold verdict; ``unstable``: the raw mean is above the
    zero predictor's or not finite while the median is not."""
    eagle: bool
    label: str
    text: str
    level: str
    unstable: bool = False


def _level(median: float, zero: float, eagle_ref: float, gd_ref: float) -> str:
    if not median < USEFUL * zero:
        return "not_useful"
    if median <= EAGLE_FACTOR * eagle_ref:
        return "eagle"
    if median >= GD_FACTOR * gd_ref:
        return "gd"
    return "between"


def judge(*, median: float, mean: float, zero: float, eagle_ref: float, gd_ref: float,
          structure_reasons: Optional[Sequence[str]], noise_var: float = 0.0,
          guarded_mean: Optional[float] = None, eagle_ref_name: str = EAGLE_THEORY) -> Verdict:
    """The verdict from the model's median and mean per-prompt test MSE, the zero predictor's
    MSE, the medians of EAGLE's reference rule (``eagle_ref``) and of the GD-like rule
    (``gd_ref``) on the same prompts, and the extraction's structure reasons (empty: structure
    found; ``None``: not examined, so never ``eagle``)."""
    for name, v in (("zero", zero), ("eagle_ref", eagle_ref), ("gd_ref", gd_ref)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name}={v!r}: a positive finite reference MSE is needed")
    which = {SKETCHED_THEORY: "EAGLE (sketched, theory constants)",
             DISTRIBUTED_THEORY: "distributed EAGLE (theory constants)"}.get(
        eagle_ref_name, "EAGLE (theory constants)")
    refs = (f"{which} {eagle_ref:.3g}, the GD-like rule {gd_ref:.3g}, the zero predictor "
            f"{zero:.3g} (medians on the same prompts"
            + (f"; noisy prompts, variance {noise_var:g}: no predictor gets below ≈ {noise_var:g}"
               if noise_var > 0 else "") + ")")
    if not math.isfinite(median):
        return Verdict(False, "blew_up", "**Verdict: the run blew up** (the median test MSE is "
                       "not finite).", "blew_up", True)
    level = _level(median, zero, eagle_ref, gd_ref)
    unstable = not (math.isfinite(mean) and mean <= zero)
    err = (f"median test MSE {median:.3g} ({zero / median:.1f}x below the zero predictor) against "
           + refs)
    where = {"eagle": f"at or below EAGLE's level (within {EAGLE_FACTOR:g}x of it)",
             "between": "between the GD-like rule and EAGLE",
             "gd": f"at the GD-like rule's level or worse (at least {GD_FACTOR:g}x its median)",
             "not_useful": f"barely better than the zero predictor (median above {USEFUL:g}x "
                           "its MSE)"}[level]
    found = structure_reasons is not None and len(structure_reasons) == 0
    if found and level == "eagle":
        label, head = "eagle", ("**Verdict: EAGLE.** Its products carry EAGLE's structure, the "
                                "extracted iteration reproduces it, and its error is " + where)
    elif found and level == "between":
        label, head = "structure_partly", (
            "**Verdict: EAGLE's structure, not yet EAGLE's error (partly trained).** The "
            "products carry EAGLE's pattern and the extracted iteration reproduces the model, but "
            "its error is " + where)
    elif found:
        label, head = ("structure_gd" if level == "gd" else "not_useful"), (
            "**Verdict: not EAGLE.** The products carry EAGLE's pattern and the extracted "
            "iteration reproduces the model, but its error is " + where +
            ": the constants it learned do not yet make it a better solver than gradient descent")
    elif structure_reasons is None:
        label, head = ("no_structure" if level != "not_useful" else "not_useful"), (
            "**Verdict: not examined for EAGLE's structure;** its error is " + where)
    else:
        label, head = ("no_structure" if level != "not_useful" else "not_useful"), (
            "**Verdict: no EAGLE structure** (" + "; ".join(structure_reasons) + "). Its error "
            "is " + where)
    text = head + ": " + err + "."
    if unstable:
        text += (f" Unstable: the raw mean is {mean:.3g}" +
                 (f" (norm-guarded {guarded_mean:.3g})" if guarded_mean is not None else "") +
                 " — on a few prompts the fixed per-layer constants blow up; the median is "
                 "unaffected.")
    return Verdict(label == "eagle", label, text, level, unstable)


def verdict_for(model_cfg: ModelConfig, refs: Dict[str, torch.Tensor], *, median: float,
                mean: float, zero: float, structure_reasons: Optional[Sequence[str]],
                noise_var: float = 0.0, guarded_mean: Optional[float] = None) -> Verdict:
    """:func:`judge` with the reference medians taken from :func:`reference_errors`' output."""
    name = eagle_reference(model_cfg)
    return judge(median=median, mean=mean, zero=zero, eagle_ref=float(refs[name].median()),
                 gd_ref=float(refs[GD_LIKE].median()), structure_reasons=structure_reasons,
                 noise_var=noise_var, guarded_mean=guarded_mean, eagle_ref_name=name)


__all__ = ["Verdict", "judge", "verdict_for", "reference_errors", "reference_iterations",
           "eagle_reference", "EAGLE_FACTOR", "GD_FACTOR", "USEFUL"]
