"""Sparse coding (LCA, FISTA/ISTA, dictionary learning) on synthetic problems with a known answer."""

from __future__ import annotations

import pytest
import torch

from pvae.errors import ConfigError
from pvae.training.study.sparse_coding import (
    SparseCodingConfig,
    evaluate_codes,
    ista_infer,
    lca_infer,
    learn_dictionary,
    lipschitz_constant,
    normalise_columns,
    soft_threshold,
)

D, K, ACTIVE = 32, 64, 3


pytestmark = pytest.mark.usefixtures("one_thread")


def _problem(n: int, seed: int, nonnegative: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x = Phi a with a unit-norm random Phi (D, K) and ACTIVE non-zeros per code, magnitudes in [0.5, 1.5]."""
    gen = torch.Generator().manual_seed(seed)
    phi = normalise_columns(torch.randn(D, K, generator=gen))
    codes = torch.zeros(n, K)
    for i in range(n):
        idx = torch.randperm(K, generator=gen)[:ACTIVE]
        sign = torch.ones(ACTIVE) if nonnegative else torch.sign(torch.randn(ACTIVE, generator=gen))
        codes[i, idx] = (torch.rand(ACTIVE, generator=gen) + 0.5) * sign
    return codes @ phi.T, phi, codes


def _energy(x: torch.Tensor, phi: torch.Tensor, a: torch.Tensor, lam: float) -> float:
    return float((0.5 * (x - a @ phi.T).pow(2).sum(1) + lam * a.abs().sum(1)).mean())


def test_soft_threshold() -> None:
    u = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])
    assert soft_threshold(u, 1.0).tolist() == [-1.0, 0.0, 0.0, 0.0, 1.0]
    assert soft_threshold(u, 1.0, nonnegative=True).tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]


def test_lipschitz_constant_bounds_the_spectrum() -> None:
    _, phi, _ = _problem(1, seed=0)
    exact = float(torch.linalg.matrix_norm(phi, ord=2) ** 2)
    assert exact <= lipschitz_constant(phi) <= 1.02 * exact


@pytest.mark.parametrize("method", ["lca", "fista", "ista"])
def test_inference_recovers_the_sparse_code(method: str) -> None:
    x, phi, truth = _problem(100, seed=1)
    lam = 0.02
    if method == "lca":
        a = lca_infer(x, phi, lam, n_iter=300)
    else:
        a = ista_infer(x, phi, lam, n_iter=300 if method == "fista" else 1000, fista=method == "fista")
    support = (a.abs() > 0.05) == (truth != 0)
    assert support.float().mean() > 0.995
    assert float((a - truth).norm() / truth.norm()) < 0.1


def test_lca_and_fista_reach_the_same_minimum() -> None:
    x, phi, _ = _problem(50, seed=2)
    lam = 0.2
    e_lca = _energy(x, phi, lca_infer(x, phi, lam, n_iter=500), lam)
    e_fista = _energy(x, phi, ista_infer(x, phi, lam, n_iter=500), lam)
    assert e_lca == pytest.approx(e_fista, rel=1e-3)
    assert e_fista < _energy(x, phi, torch.zeros(50, K), lam)


def test_nonnegative_codes() -> None:
    x, phi, truth = _problem(50, seed=3, nonnegative=True)
    for a in (lca_infer(x, phi, 0.02, nonnegative=True), ista_infer(x, phi, 0.02, nonnegative=True)):
        assert float(a.min()) >= 0.0
        assert float((a - truth).norm() / truth.norm()) < 0.1


def test_dictionary_learning_recovers_the_generating_dictionary() -> None:
    x, phi, _ = _problem(2000, seed=4)
    cfg = SparseCodingConfig(method="ista", n_atoms=K, lam=0.05, epochs=10, batch_size=100, lr=1.0,
                             train_iterations=40, seed=0)
    learned = learn_dictionary(x, cfg)
    assert torch.allclose(learned.dictionary.norm(dim=0), torch.ones(K), atol=1e-5)  # column-norm constraint
    best_cosine = (phi.T @ learned.dictionary).abs().max(dim=1).values  # (K,) per true atom
    assert float((best_cosine > 0.95).float().mean()) >= 0.9
    assert learned.history[-1]["energy"] < learned.history[0]["energy"]


def test_plain_gradient_step_also_descends() -> None:
    x, _, _ = _problem(1000, seed=6)
    cfg = SparseCodingConfig(method="ista", n_atoms=K, lam=0.05, epochs=3, batch_size=50, lr=0.5,
                             preconditioned=False, train_iterations=20, seed=0)
    history = learn_dictionary(x, cfg).history
    assert history[-1]["energy"] < history[0]["energy"]


def test_evaluate_codes() -> None:
    x, phi, truth = _problem(40, seed=5)
    metrics = evaluate_codes(x, phi, truth)
    assert metrics["mse"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["l1"] == pytest.approx(float(truth.abs().sum(1).mean()))
    assert 0.9 < metrics["lifetime_sparsity"] <= 1.0
    assert metrics["fraction_on"] == pytest.approx(ACTIVE / K)


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="method"):
        SparseCodingConfig(method="omp")
    with pytest.raises(ConfigError, match="lam"):
        SparseCodingConfig(lam=-1.0)
