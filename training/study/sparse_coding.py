"""Sparse coding, the non-amortised reference: LCA and (F)ISTA inference and dictionary learning.

Both minimise the same energy per sample x (D,) over a code a (K,) for a dictionary Phi (D, K):

    E(a) = 1/2 ||x - Phi a||^2 + lam ||a||_1          (optionally with a >= 0)

- ISTA (Daubechies et al. 2004; FISTA: Beck & Teboulle 2009): a <- T_{lam/L}(a + Phi^T (x - Phi a) / L),
  L = ||Phi||_2^2, with Nesterov momentum for FISTA.
- LCA (Rozell et al. 2008): leaky integrator neurons with internal state u and lateral inhibition,
  tau du/dt = Phi^T x - u - (Phi^T Phi - I) a,  a = T_lam(u), integrated with Euler steps dt/tau.

T is the soft threshold (one-sided, T(u) = relu(u - lam), for non-negative codes).
Dictionary learning alternates inference with a gradient step on Phi and a column-norm constraint
(Olshausen & Field 1996): Phi <- normalise_columns(Phi + lr (x - Phi a) a^T P), where P is 1/B for the
plain gradient or, by default, diag(1 / sum_b a_bk^2), a per-atom step that makes lr = 1 the exact
column-wise minimiser (as in block coordinate descent; Mairal et al. 2009) and converges in far fewer
updates.

    >>> result = learn_dictionary(x_train, SparseCodingConfig(method="lca", n_atoms=512, lam=0.5))
    >>> codes = lca_infer(x_val, result.dictionary, lam=0.5)     # (N, K)
    >>> evaluate_codes(x_val, result.dictionary, codes)["mse"]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pvae.errors import ConfigError
from pvae.training.evaluate import sparsity

__all__ = [
    "LCA_STEP_FRACTION",
    "METHODS",
    "SparseCodingConfig",
    "SparseCodingResult",
    "encode",
    "evaluate_codes",
    "ista_infer",
    "lca_infer",
    "learn_dictionary",
    "lipschitz_constant",
    "normalise_columns",
    "soft_threshold",
]

#: Inference methods: Rozell's LCA and (F)ISTA.
METHODS = ("lca", "ista")
#: LCA's Euler step dt/tau as a fraction of 1/L (L = largest eigenvalue of Phi^T Phi): the dynamics
#: are stable for dt/tau < 2/L; 1/L converges in a few hundred steps (checked against FISTA's energy).
LCA_STEP_FRACTION = 1.0
#: Power-iteration steps used to estimate L = ||Phi||_2^2.
POWER_ITERATIONS = 50
#: Added to an atom's summed squared code before dividing by it (an unused atom then barely moves).
PRECONDITIONER_FLOOR = 1e-2
#: A code entry counts as "on" when its magnitude exceeds this (for the fraction of atoms in use).
ACTIVE_CODE = 1e-6


def soft_threshold(u: Tensor, lam: float | Tensor, nonnegative: bool = False) -> Tensor:
    """T_lam(u) = sign(u) max(|u| - lam, 0); one-sided relu(u - lam) for non-negative codes."""
    if nonnegative:
        return torch.relu(u - lam)
    return torch.sign(u) * torch.relu(u.abs() - lam)


def normalise_columns(phi: Tensor) -> Tensor:
    """Phi (D, K) with every column scaled to unit Euclidean norm (zero columns stay zero)."""
    return phi / phi.norm(dim=0, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def lipschitz_constant(phi: Tensor) -> float:
    """L = ||Phi||_2^2, the largest eigenvalue of Phi^T Phi (power iteration, a tight upper side)."""
    gram = phi.T @ phi  # (K, K)
    v = torch.ones(gram.shape[0], device=phi.device, dtype=phi.dtype) / math.sqrt(gram.shape[0])
    for _ in range(POWER_ITERATIONS):
        w = gram @ v
        v = w / w.norm().clamp_min(1e-12)
    # 1% head-room: power iteration approaches L from below, and a step above 1/L can diverge.
    return float((v @ gram @ v).item()) * 1.01


@torch.no_grad()
def ista_infer(
    x: Tensor, phi: Tensor, lam: float, n_iter: int = 200, nonnegative: bool = False, fista: bool = True,
) -> Tensor:
    """(F)ISTA codes (B, K) minimising 1/2||x - Phi a||^2 + lam ||a||_1 for x (B, D), Phi (D, K)."""
    x = x.reshape(x.shape[0], -1).to(phi.dtype)
    step = 1.0 / lipschitz_constant(phi)
    a = torch.zeros(x.shape[0], phi.shape[1], device=phi.device, dtype=phi.dtype)  # (B, K)
    y, t = a, 1.0
    drive = x @ phi  # (B, K) Phi^T x
    gram = phi.T @ phi  # (K, K)
    for _ in range(n_iter):
        a_next = soft_threshold(y + step * (drive - y @ gram), lam * step, nonnegative)  # (B, K)
        if fista:
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            y = a_next + ((t - 1.0) / t_next) * (a_next - a)
            t = t_next
        else:
            y = a_next
        a = a_next
    return a


@torch.no_grad()
def lca_infer(
    x: Tensor, phi: Tensor, lam: float, n_iter: int = 300, nonnegative: bool = False,
    step: float | None = None,
) -> Tensor:
    """LCA codes (B, K) for x (B, D) on dictionary Phi (D, K), any column norms (Rozell et al. 2008).

    Used on a learned sparse-coding dictionary, and on a P-VAE's own decoder (non-negative codes, like
    its rates) to measure the amortisation gap. ``step`` is dt/tau (default LCA_STEP_FRACTION / L).
    """
    x = x.reshape(x.shape[0], -1).to(phi.dtype)
    eta = step if step is not None else LCA_STEP_FRACTION / lipschitz_constant(phi)
    drive = x @ phi  # (B, K) Phi^T x
    inhibition = phi.T @ phi - torch.eye(phi.shape[1], device=phi.device, dtype=phi.dtype)  # (K, K)
    u = torch.zeros_like(drive)  # (B, K) membrane potentials
    a = soft_threshold(u, lam, nonnegative)
    for _ in range(n_iter):
        u = u + eta * (drive - u - a @ inhibition)
        a = soft_threshold(u, lam, nonnegative)
    return a


def encode(method: str, x: Tensor, phi: Tensor, lam: float, n_iter: int, nonnegative: bool = False) -> Tensor:
    """Codes by ``method`` (lca or ista) - one entry point for dictionary learning and evaluation."""
    if method == "lca":
        return lca_infer(x, phi, lam, n_iter=n_iter, nonnegative=nonnegative)
    if method == "ista":
        return ista_infer(x, phi, lam, n_iter=n_iter, nonnegative=nonnegative)
    raise ConfigError(f"method: unknown {method!r}; choose from {', '.join(METHODS)}")


@dataclass(frozen=True)
class SparseCodingConfig:
    """Dictionary learning by alternating inference and a projected gradient step on Phi."""

    method: str = "lca"
    """Inference: lca or ista (FISTA)."""
    n_atoms: int = 512
    """K, the number of dictionary elements (the same K as the VAEs it is compared with)."""
    lam: float = 0.5
    """Sparsity weight lam of the L1 penalty (also LCA's threshold)."""
    nonnegative: bool = False
    """Restrict codes to a >= 0 (classic sparse coding is signed)."""
    epochs: int = 5
    """Passes over the training data."""
    batch_size: int = 250
    """Samples per dictionary update."""
    lr: float = 0.5
    """Step of the dictionary update before renormalising columns (see ``preconditioned``)."""
    preconditioned: bool = True
    """Scale each atom's gradient by 1 / (its summed squared code in the batch) instead of 1 / B."""
    lr_decay: float = 0.1
    """The dictionary step decays linearly to lr * lr_decay by the end of training."""
    train_iterations: int = 60
    """Inference iterations per batch while learning."""
    eval_iterations: int = 300
    """Inference iterations when evaluating codes."""
    seed: int = 0
    """Seed of the dictionary init and batch order."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method: unknown {self.method!r}; choose from {', '.join(METHODS)}")
        checks = {"n_atoms": self.n_atoms >= 1, "lam": self.lam >= 0, "epochs": self.epochs >= 1,
                  "batch_size": self.batch_size >= 1, "lr": self.lr > 0, "lr_decay": 0 < self.lr_decay <= 1,
                  "train_iterations": self.train_iterations >= 1, "eval_iterations": self.eval_iterations >= 1}
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"{name}: out of range ({getattr(self, name)!r})")


@dataclass
class SparseCodingResult:
    """A learned dictionary (D, K) with unit-norm columns, and one record per epoch."""

    config: SparseCodingConfig
    dictionary: Tensor
    history: list[dict[str, float]] = field(default_factory=list)


def learn_dictionary(
    x_train: Tensor, cfg: SparseCodingConfig, device: torch.device | str = "cpu",
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> SparseCodingResult:
    """Learn Phi (D, K) on x_train (N, D): infer codes per batch, step Phi, renormalise its columns.

    ``progress(step, total_steps, stats)`` is called after every update (for progress bars).
    """
    x_all = torch.as_tensor(x_train, dtype=torch.float32).reshape(len(x_train), -1).to(device)  # (N, D)
    gen = torch.Generator().manual_seed(cfg.seed)
    phi = normalise_columns(torch.randn(x_all.shape[1], cfg.n_atoms, generator=gen).to(device))  # (D, K)
    steps_per_epoch = max(1, x_all.shape[0] // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(cfg.epochs):
        order = torch.randperm(x_all.shape[0], generator=gen).to(device)
        sums = np.zeros(3)
        for i in range(steps_per_epoch):
            x = x_all[order[i * cfg.batch_size:(i + 1) * cfg.batch_size]]  # (B, D)
            a = encode(cfg.method, x, phi, cfg.lam, cfg.train_iterations, cfg.nonnegative)  # (B, K)
            residual = x - a @ phi.T  # (B, D)
            lr = cfg.lr * (1.0 - (1.0 - cfg.lr_decay) * step / max(1, total - 1))
            gradient = residual.T @ a  # (D, K) minus the gradient of 1/2 ||x - Phi a||^2, summed over the batch
            if cfg.preconditioned:
                # Per-atom step 1 / sum_b a_bk^2: at lr = 1 this is the exact minimiser along each column
                # (block coordinate descent, Mairal et al. 2009), so rarely used atoms learn as fast as busy ones.
                gradient = gradient / (a.pow(2).sum(0) + PRECONDITIONER_FLOOR)
            else:
                gradient = gradient / x.shape[0]
            phi = normalise_columns(phi + lr * gradient)
            step += 1
            mse = float(residual.pow(2).sum(1).mean())
            l1 = float(a.abs().sum(1).mean())
            sums += (mse, l1, float((a.abs() > ACTIVE_CODE).float().mean()))
            if progress is not None:
                progress(step, total, {"mse": mse, "l1": l1})
        mse_m, l1_m, on_m = sums / steps_per_epoch
        history.append({"epoch": float(epoch + 1), "mse": mse_m, "l1": l1_m, "fraction_on": on_m,
                        "energy": 0.5 * mse_m + cfg.lam * l1_m})
    return SparseCodingResult(config=cfg, dictionary=phi, history=history)


def evaluate_codes(x: Tensor, phi: Tensor, codes: Tensor) -> dict[str, Any]:
    """mse (sum over pixels), L1, lifetime/population sparsity of |a|, and the fraction of atoms in use.

    Sparsity uses the magnitudes |a| in the Treves-Rolls formula (:func:`pvae.training.evaluate.sparsity`), so
    signed and non-negative codes are measured alike; an atom is "in use" when it is non-zero on >= 1 sample.
    """
    x = x.reshape(x.shape[0], -1).to(phi.dtype)
    residual = x - codes @ phi.T  # (N, D)
    magnitude = codes.abs().cpu().numpy().astype(np.float64)  # (N, K)
    return {
        "n_samples": float(x.shape[0]),
        "mse": float(residual.pow(2).sum(1).mean()),
        "l1": float(codes.abs().sum(1).mean()),
        "lifetime_sparsity": float(sparsity(magnitude, axis=0).mean()),
        "population_sparsity": float(sparsity(magnitude, axis=1).mean()),
        "fraction_atoms_used": float((magnitude > ACTIVE_CODE).any(axis=0).mean()),
        "fraction_on": float((magnitude > ACTIVE_CODE).mean()),
    }
