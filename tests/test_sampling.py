"""Relaxed (Algorithm 1) and exact Poisson sampling: moments, equivalence, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from pvae.training.sampling import (
    exact_poisson,
    n_exp_for_rate,
    relaxed_poisson,
    relaxed_poisson_naive,
)

N_EXP = 263  # the paper's starting truncation (quantile of Poisson(200))


def expected_relaxed_mean(rate: float, temperature: float) -> float:
    """E[z~] = lambda * int_0^inf sigmoid((1 - t)/T) dt = lambda * T * softplus(1/T) (no truncation)."""
    return rate * temperature * math.log1p(math.exp(1.0 / temperature))


def test_n_exp_matches_paper_start() -> None:
    # 263 is the (1 - 1e-5) quantile of Poisson(200).
    assert n_exp_for_rate(200.0) == 263
    assert n_exp_for_rate(1e-3) >= 1


@pytest.mark.parametrize("rate", [0.1, 1.0, 5.0])
def test_relaxed_moments_at_low_temperature(rate: float) -> None:
    n = 2_000_000 if rate < 1 else 400_000
    gen = torch.Generator().manual_seed(1)
    z = relaxed_poisson(torch.full((n,), rate), 0.05, N_EXP, gen)
    mean, var = z.mean().item(), z.var().item()
    se = math.sqrt(rate / n)
    # The model's accuracy target: within 1% of lambda; we also hold it to 5 standard errors.
    assert abs(mean - rate) < 0.01 * rate
    assert abs(mean - expected_relaxed_mean(rate, 0.05)) < 5 * se
    # Variance is a little below lambda (soft indicators shave the extremes).
    assert 0.85 * rate < var < rate * 1.005


@pytest.mark.parametrize("rate", [0.1, 1.0, 5.0])
def test_relaxed_mean_at_unit_temperature(rate: float) -> None:
    n = 400_000
    gen = torch.Generator().manual_seed(2)
    z = relaxed_poisson(torch.full((n,), rate), 1.0, N_EXP, gen)
    expected = expected_relaxed_mean(rate, 1.0)
    assert expected == pytest.approx(1.3133 * rate, rel=1e-3)  # "about 1.31 lambda"
    assert abs(z.mean().item() - expected) < 5 * z.std().item() / math.sqrt(n)


@pytest.mark.parametrize("temperature", [1.0, 0.3, 0.05])
@pytest.mark.parametrize("hard", [False, True])
def test_fast_equals_naive_on_the_same_draw(temperature: float, hard: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    rate = torch.exp(torch.empty(64, 32).uniform_(-7, 4, generator=gen))  # 1e-3 .. 55
    n_exp = n_exp_for_rate(rate.max().item())
    exps = torch.empty(n_exp, 64, 32).exponential_(generator=gen)
    r1 = rate.clone().requires_grad_(True)
    r2 = rate.clone().requires_grad_(True)
    weights = torch.randn(64, 32, generator=gen)
    fast = relaxed_poisson(r1, temperature, n_exp, straight_through=hard, exponentials=exps)
    naive = relaxed_poisson_naive(r2, temperature, n_exp, exponentials=exps)
    (fast * weights).sum().backward()
    (naive * weights).sum().backward()
    if hard:
        arrivals = torch.cumsum(exps / rate, 0)
        torch.testing.assert_close(fast, (arrivals < 1).float().sum(0))
    else:
        torch.testing.assert_close(fast, naive, atol=1e-5, rtol=1e-5)
    assert r1.grad is not None and r2.grad is not None
    torch.testing.assert_close(r1.grad, r2.grad, atol=1e-4, rtol=1e-4)


def test_fast_and_naive_have_the_same_distribution() -> None:
    rate = torch.tensor([0.05, 0.7, 3.0, 12.0]).repeat(50_000, 1)  # (50k, 4)
    fast = relaxed_poisson(rate, 0.2, 64, torch.Generator().manual_seed(4))
    naive = relaxed_poisson_naive(rate, 0.2, 64, torch.Generator().manual_seed(5))
    for col in range(4):
        a, b = fast[:, col].numpy(), naive[:, col].numpy()
        se = math.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(a.mean() - b.mean()) < 5 * se
        assert stats.ks_2samp(a, b).pvalue > 1e-4


def test_gradients_are_finite_for_extreme_rates() -> None:
    rate = torch.tensor([1.2e-7, 1e-4, 1.0, 200.0], requires_grad=True)
    z = relaxed_poisson(rate, 0.05, N_EXP, torch.Generator().manual_seed(6))
    z.sum().backward()
    assert rate.grad is not None
    assert torch.isfinite(z).all() and torch.isfinite(rate.grad).all()
    assert (rate.grad >= 0).all()  # more rate never lowers the soft count


def test_relaxed_sampler_rejects_zero_temperature() -> None:
    with pytest.raises(ValueError, match="temperature"):
        relaxed_poisson(torch.ones(3), 0.0, 10)


@pytest.mark.parametrize("rate", [0.01, 0.5, 4.0, 60.0, 200.0])
def test_exact_sampling_is_poisson(rate: float) -> None:
    n = 200_000
    z = exact_poisson(torch.full((n,), rate), torch.Generator().manual_seed(7)).numpy().astype(np.int64)
    assert np.all(z == np.round(z)) and z.min() >= 0
    se = math.sqrt(rate / n)
    assert abs(z.mean() - rate) < 5 * se
    # Variance of the sample variance for Poisson: (mu + 2 mu^2 (n/(n-1))) / n ~ (mu + 2mu^2)/n.
    assert abs(z.var() - rate) < 5 * math.sqrt((rate + 2 * rate**2) / n)
    # Chi-square goodness of fit, bins merged until each expects >= 5.
    lo, hi = int(stats.poisson.ppf(1e-6, rate)), int(stats.poisson.ppf(1 - 1e-6, rate))
    edges = list(range(lo, hi + 2))
    observed = np.histogram(z, bins=[*edges[:-1], np.inf])[0].astype(float)
    expected = np.diff(np.concatenate([[0.0], stats.poisson.cdf(np.array(edges[1:-1]) - 1, rate), [1.0]]))
    expected = expected * n
    merged_o, merged_e, acc_o, acc_e = [], [], 0.0, 0.0
    for o, e in zip(observed, expected, strict=True):
        acc_o, acc_e = acc_o + o, acc_e + e
        if acc_e >= 5:
            merged_o.append(acc_o)
            merged_e.append(acc_e)
            acc_o = acc_e = 0.0
    if acc_e > 0:
        merged_o[-1] += acc_o
        merged_e[-1] += acc_e
    if len(merged_o) > 1:
        merged_e_arr = np.array(merged_e) * (sum(merged_o) / sum(merged_e))
        assert stats.chisquare(merged_o, merged_e_arr).pvalue > 1e-4
