"""Metric definitions (the P-VAE paper's metrics) against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from pvae.training.evaluate import knn_few_label, sparsity


def test_sparsity_extremes() -> None:
    one_hot = np.eye(5)
    assert sparsity(one_hot, axis=1) == pytest.approx(np.ones(5))  # each sample: one active unit
    uniform = np.full((4, 6), 3.0)
    assert sparsity(uniform, axis=0) == pytest.approx(np.zeros(6))
    silent = np.zeros((10, 3))
    assert sparsity(silent, axis=0) == pytest.approx(np.ones(3))  # never spikes -> S = 1


def test_sparsity_matches_the_formula() -> None:
    rng = np.random.default_rng(0)
    z = rng.poisson(0.3, size=(50, 7)).astype(float)
    m = z.shape[0]
    expected = (1 - z.sum(0) ** 2 / (m * (z**2).sum(0))) / (1 - 1 / m)
    got = sparsity(z, axis=0)
    mask = (z**2).sum(0) > 0
    assert got[mask] == pytest.approx(expected[mask])


def test_knn_few_label_on_separable_and_random_features() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=2000)
    separable = np.eye(4)[labels] * 10 + rng.normal(size=(2000, 4))
    noise = rng.normal(size=(2000, 4))
    good = knn_few_label(separable, labels, budgets=(200, 1000), repeats=3)
    bad = knn_few_label(noise, labels, budgets=(200,), repeats=3)
    assert set(good) == {"200", "1000"}
    assert good["200"]["mean"] > 0.95 and bad["200"]["mean"] < 0.4
    assert knn_few_label(separable, labels, budgets=(5000,)) == {}  # more labels than the pool: skipped
