"""pvae-report's verdicts on hand-made numbers, and the beta trend test: each rule can fail."""

from __future__ import annotations

from typing import Any

import pytest

from pvae.training.study.report import spearman, trend_test
from pvae.training.study.verdict import (
    MANY_MORE_RATIO,
    compute_verdicts,
    verdict_active_latents,
    verdict_beta_tradeoff,
    verdict_gabor,
    verdict_knn,
    verdict_shattering,
)

PAPER_SWEEP = ((0.01, 3.35, 0.325), (0.2, 28.7, 0.402), (0.4, 52.3, 0.502), (1.0, 102.4, 0.790),
               (4.0, 234.5, 0.997))


def _model(family: str, usage: float, gabor_like: float = 0.0, encoder: str = "lin") -> dict[str, Any]:
    return {"family": family, "encoder": encoder,
            "active": {"fractions": {"usage_mean": usage, "usage": usage, "table2": usage, "kl_threshold": usage}},
            "gabor": {"fraction_gabor_like": gabor_like, "median_r2": gabor_like},
            "convergence": {"relative_change": -0.02}}


def _sweep(points: tuple[tuple[float, float, float], ...], seeds: int = 3, jitter: float = 0.0) -> list[dict[str, Any]]:
    return [{"beta": b, "seed": s, "mse_map": m + jitter * ((s * 7 + i) % 3 - 1),
             "lifetime_sparsity": sp + jitter * 0.001 * ((s * 5 + i) % 3 - 1), "nelbo": 0.0}
            for i, (b, m, sp) in enumerate(points) for s in range(seeds)]


def _results(p_use: float = 0.98, g_use: float = 0.22, l_use: float = 0.19, untrained: float = 0.0,
             p_gabor: float = 0.8, g_gabor: float = 0.1, sweep: list[dict[str, Any]] | None = None,
             knn: tuple[float, float, float] = (0.815, 0.70, 0.813),
             shatter_ci: tuple[float, float] = (0.15, 0.22)) -> dict[str, Any]:
    """A results dict in report.json's schema. knn = (P@200, G@200, G@1000); shatter_ci = paired P - G CI."""
    sweep = _sweep(PAPER_SWEEP) if sweep is None else sweep
    p200, g200, g1000 = knn
    runs = {"10": {"poisson": {"knn": {"200": {"mean": p200, "ci95": 0.01}}},
                   "gaussian": {"knn": {"200": {"mean": g200, "ci95": 0.01}, "1000": {"mean": g1000, "ci95": 0.01}}}},
            "100": {"poisson": {"shattering": {"mean": 0.95}}, "gaussian": {"shattering": {"mean": 0.76}}}}
    lo, hi = shatter_ci
    paired = {"100": {"gaussian": {"shattering": {"mean_difference": (lo + hi) / 2, "ci95_low": lo, "ci95_high": hi,
                                                  "wilcoxon_p": 1e-6, "n_a_greater": 120, "n": 126}}}}
    return {
        "patches": {
            "reference": "P-VAE exact lin|lin β=1",
            "models": {"P-VAE exact lin|lin β=1": _model("poisson", p_use, p_gabor),
                       "G-VAE lin|lin": _model("gaussian", g_use, g_gabor),
                       "L-VAE lin|lin": _model("laplace", l_use),
                       "G-VAE conv|lin": _model("gaussian", 0.01, encoder="conv")},
            "untrained": {"P-VAE": {"active": {"fractions": {"usage_mean": untrained}}},
                          "G-VAE": {"active": {"fractions": {"usage_mean": 0.0}}}},
            "beta_sweep": sweep,
            "beta_trend": {"mse_map": trend_test(sweep, "mse_map", 0, n_boot=200),
                           "lifetime_sparsity": trend_test(sweep, "lifetime_sparsity", 0, n_boot=200)},
            "ppca": {"active_fraction": 0.29},
            "sparse_coding": {"LCA λ=0.5": {"gabor": {"fraction_gabor_like": 0.9}}},
        },
        "classification": {"fashion-mnist": {"budgets": [200, 1000, 5000], "runs": runs, "paired": paired}},
    }


def test_verdicts_hold_on_the_papers_numbers() -> None:
    verdicts = compute_verdicts(_results())
    assert [v.status for v in verdicts] == ["holds"] * 5
    assert all(v.reason == "" for v in verdicts)


def test_active_latents_verdict_uses_the_lin_models_and_the_untrained_control() -> None:
    assert verdict_active_latents(_results(p_use=0.5, g_use=0.25)).holds is True  # exactly 2x
    unpruned = verdict_active_latents(_results(p_use=1.0, g_use=1.0))
    assert unpruned.holds is False and "has not pruned its latents" in unpruned.reason
    assert "-2.0%" in unpruned.reason and f"{MANY_MORE_RATIO:g}x" in unpruned.ours
    void = verdict_active_latents(_results(untrained=0.5))
    assert void.holds is False and "passes untrained models" in void.reason
    missing = _results()
    del missing["patches"]["models"]["L-VAE lin|lin"]
    assert verdict_active_latents(missing).status == "not measured"


def test_gabor_verdict() -> None:
    not_formed = verdict_gabor(_results(p_gabor=0.3, g_gabor=0.0))
    assert not_formed.holds is False
    assert "not Gabor-like" in not_formed.reason and "sparse coding reaches 0.90" in not_formed.reason
    both = verdict_gabor(_results(p_gabor=0.9, g_gabor=0.7))
    assert both.holds is False and "G-VAE's filters fit Gabors" in both.reason


def test_trend_test_and_beta_verdict() -> None:
    assert spearman([1, 2, 3], [1, 4, 9]) == pytest.approx(1.0)
    trend = trend_test(_sweep(PAPER_SWEEP), "mse_map", 0, n_boot=100)
    assert trend["rho_mean_curve"] == pytest.approx(1.0) and trend["ci95"] == pytest.approx([1.0, 1.0])
    # Flat sparsity with seed noise: its CI includes 0, so the trade-off is not shown.
    flat = _sweep(tuple((b, m, 0.95) for b, m, _ in PAPER_SWEEP), jitter=5.0)
    broken = verdict_beta_tradeoff(_results(sweep=flat))
    assert broken.holds is False and "lifetime sparsity trend includes 0" in broken.reason
    # Consistent but weak: sparsity rises only at the top of the sweep (rho 0.2 with a CI above 0).
    weak_points = ((0.01, 3.35, 0.86), (0.2, 28.7, 0.80), (0.4, 52.3, 0.797), (0.6, 72.2, 0.798), (0.8, 88.6, 0.803),
                   (1.0, 102.4, 0.807), (1.5, 130.9, 0.816), (4.0, 234.5, 0.837))
    weak = verdict_beta_tradeoff(_results(sweep=_sweep(weak_points)))
    assert weak.holds is False and "lifetime sparsity trend is weak" in weak.reason
    two = verdict_beta_tradeoff(_results(sweep=_sweep(PAPER_SWEEP[:2])))
    assert two.status == "not measured"


def test_knn_and_shattering_verdicts() -> None:
    equal_labels_only = verdict_knn(_results(knn=(0.75, 0.70, 0.80)), "fashion-mnist")
    assert equal_labels_only.holds is False and "leads at equal labels" in equal_labels_only.reason
    worse = verdict_knn(_results(knn=(0.65, 0.70, 0.80)), "fashion-mnist")
    assert worse.holds is False and "even at equal labels" in worse.reason
    assert verdict_knn(_results(), "digits").status == "not measured"
    within_noise = verdict_shattering(_results(shatter_ci=(-0.01, 0.02)), "fashion-mnist")
    assert within_noise.holds is False and "reaches -0.010" in within_noise.reason
    assert verdict_shattering(_results(shatter_ci=(0.001, 0.02)), "fashion-mnist").holds is True
