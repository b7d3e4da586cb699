"""pvae-report: shattering dimensionality, the computed verdicts, helpers, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from pvae.errors import ConfigError
from pvae.training.config import ModelConfig, TrainConfig
from pvae.training.report import RunContext, main, match_at_sparsity, ppca_active_fraction, slug, train_vae
from pvae.training.report_config import PatchStudy, deviations, quick_config, smoke_config
from pvae.training.report_document import Block, build_document, render_html, render_markdown
from pvae.training.report_verdict import (
    MANY_MORE_RATIO,
    compute_verdicts,
    verdict_active_latents,
    verdict_beta_tradeoff,
    verdict_gabor,
    verdict_knn,
    verdict_shattering,
)
from pvae.training.shattering import balanced_splits, shattering_dimensionality


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Small models on a shared CPU: one thread avoids spin-waiting (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):  # numpy/scipy BLAS as well
        yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- shattering


def test_balanced_splits_count_each_dichotomy_once() -> None:
    splits = balanced_splits(list(range(10)))
    assert len(splits) == math.comb(10, 5) // 2 == 126
    halves = {frozenset(s) for s in splits}
    assert len(halves) == 126
    assert all(frozenset(range(10)) - h not in halves for h in halves)  # no split next to its complement
    assert len(balanced_splits([0, 1, 2, 3])) == 3


def _clusters(n: int, dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    return np.eye(10)[labels][:, :dims] * 4 + 0.3 * rng.normal(size=(n, dims)), labels


def test_shattering_on_separable_and_structureless_features() -> None:
    features, labels = _clusters(300, 10, seed=0)  # one axis per class: every dichotomy is linearly separable
    test_features, test_labels = _clusters(300, 10, seed=5)
    full = shattering_dimensionality(features, labels, test_features, test_labels)
    assert full["n_splits"] == len(full["accuracies"]) == 126
    assert full["mean"] > 0.98
    noise = shattering_dimensionality(np.random.default_rng(1).normal(size=(300, 10)), labels,
                                      np.random.default_rng(2).normal(size=(300, 10)), test_labels)
    assert abs(noise["mean"] - 0.5) < 0.08
    # One feature, the class index: only the split {0..4} vs {5..9} is a threshold, most others are not.
    line = shattering_dimensionality(labels[:, None].astype(float), labels, test_labels[:, None].astype(float),
                                     test_labels)
    assert 0.55 < line["mean"] < 0.85


def test_shattering_subsets_are_seeded() -> None:
    features, labels = _clusters(400, 10, seed=2)
    a = shattering_dimensionality(features, labels, features, labels, max_train_samples=200, seed=3)
    b = shattering_dimensionality(features, labels, features, labels, max_train_samples=200, seed=3)
    assert a["accuracies"] == b["accuracies"] and a["n_train"] == 200 and a["n_test"] == 400
    with pytest.raises(ValueError, match="agree"):
        shattering_dimensionality(features, labels[:10], features, labels)


# ----------------------------------------------------------------------------- verdicts on hand-made numbers


def _patch_model(family: str, active: float, gabor_like: float = 0.0, beta: float = 1.0) -> dict[str, Any]:
    return {"family": family, "beta": beta, "metrics": {"active_fraction": active},
            "gabor": {"fraction_gabor_like": gabor_like, "median_r2": gabor_like}}


def _results(p_active: float = 0.98, g_active: float = 0.22, l_active: float = 0.19, p_gabor: float = 0.8,
             g_gabor: float = 0.1, sweep: tuple[tuple[float, float, float], ...] = ((0.5, 90, 0.7), (1, 100, 0.8),
                                                                                     (4, 150, 0.99)),
             knn: tuple[float, float, float] = (0.815, 0.70, 0.813), shatter: tuple[float, float] = (0.95, 0.76),
             epochs: int = 3000) -> dict[str, Any]:
    """A results dict in report.json's schema. knn = (P@200, G@200, G@1000); shatter = (P, G) at K=100."""
    p200, g200, g1000 = knn
    runs = {"10": {"poisson": {"knn": {"200": {"mean": p200, "ci95": 0.01}}},
                   "gaussian": {"knn": {"200": {"mean": g200, "ci95": 0.01}, "1000": {"mean": g1000, "ci95": 0.01}}}},
            "100": {"poisson": {"shattering": {"mean": shatter[0], "ci95": 0.005, "n_splits": 126}},
                    "gaussian": {"shattering": {"mean": shatter[1], "ci95": 0.005, "n_splits": 126}}}}
    return {
        "config": {"patches": {"epochs": epochs}},
        "patches": {
            "reference": "P-VAE β=1",
            "models": {"P-VAE β=1": _patch_model("poisson", p_active, p_gabor),
                       "G-VAE": _patch_model("gaussian", g_active, g_gabor),
                       "L-VAE": _patch_model("laplace", l_active)},
            "beta_sweep": [{"beta": b, "mse_map": m, "lifetime_sparsity": s} for b, m, s in sweep],
            "ppca": {"active_fraction": 0.5},
            "sparse_coding": {"LCA λ=0.5": {"gabor": {"fraction_gabor_like": 0.9}}},
        },
        "classification": {"fashion-mnist": {"budgets": [200, 1000, 5000], "arch": "conv|lin", "epochs": 300,
                                             "runs": runs}},
    }


def test_verdicts_hold_on_the_papers_numbers() -> None:
    verdicts = compute_verdicts(_results())
    assert [v.status for v in verdicts] == ["holds"] * 5
    assert all(v.reason == "" for v in verdicts)


def test_active_latents_verdict() -> None:
    assert verdict_active_latents(_results(p_active=0.5, g_active=0.25)).holds is True  # exactly 2x
    failed = verdict_active_latents(_results(p_active=0.99, g_active=0.85, epochs=15))  # PPCA predicts 0.5
    assert failed.holds is False and failed.status == "does not hold"
    assert "G-VAE's unused latents have not collapsed" in failed.reason and "15 epochs" in failed.reason
    flat = verdict_active_latents(_results(p_active=0.9, g_active=0.5))
    assert flat.holds is False and "spectrum is flat" in flat.reason and "not collapsed" not in flat.reason
    assert f"{MANY_MORE_RATIO:g}x" in failed.ours
    missing = _results()
    del missing["patches"]["models"]["L-VAE"]
    assert verdict_active_latents(missing).status == "not measured"


def test_gabor_verdict() -> None:
    not_formed = verdict_gabor(_results(p_gabor=0.3, g_gabor=0.0, epochs=15))
    assert not_formed.holds is False
    assert "not yet formed" in not_formed.reason and "sparse coding reaches 0.90" in not_formed.reason
    both = verdict_gabor(_results(p_gabor=0.9, g_gabor=0.7))
    assert both.holds is False and "G-VAE's filters fit Gabors" in both.reason


def test_beta_verdict() -> None:
    assert verdict_beta_tradeoff(_results(sweep=((1, 100, 0.9), (2, 100, 0.9)))).holds is True  # ties allowed
    broken = verdict_beta_tradeoff(_results(sweep=((0.5, 90, 0.985), (1, 100, 0.990), (2, 95, 0.989))))
    assert broken.holds is False
    assert "mse_map falls from β=1 to β=2" in broken.reason and "sparsity falls" in broken.reason
    assert "saturated" in broken.reason
    assert verdict_beta_tradeoff(_results(sweep=((1, 100, 0.9),))).status == "not measured"


def test_knn_and_shattering_verdicts() -> None:
    equal_labels_only = verdict_knn(_results(knn=(0.75, 0.70, 0.80)), "fashion-mnist")
    assert equal_labels_only.holds is False and "leads at equal labels" in equal_labels_only.reason
    worse = verdict_knn(_results(knn=(0.65, 0.70, 0.80)), "fashion-mnist")
    assert worse.holds is False and "even at equal labels" in worse.reason
    assert verdict_knn(_results(), "digits").status == "not measured"
    tie = verdict_shattering(_results(shatter=(0.80, 0.805)), "fashion-mnist")
    assert tie.holds is False and "within the 95% CIs" in tie.reason
    within_noise = verdict_shattering(_results(shatter=(0.805, 0.80)), "fashion-mnist")  # CIs: 0.005 each
    assert within_noise.holds is False and "within the 95% CIs" in within_noise.reason
    assert verdict_shattering(_results(shatter=(0.82, 0.80)), "fashion-mnist").holds is True


# ----------------------------------------------------------------------------- helpers


def test_match_at_sparsity() -> None:
    points = [{"lifetime_sparsity": 0.8, "mse": 100.0}, {"lifetime_sparsity": 0.9, "mse": 140.0}]
    inside = match_at_sparsity(points, 0.85)
    assert inside["mse"] == pytest.approx(120.0) and inside["how"] == "interpolated"
    outside = match_at_sparsity(points, 0.99)
    assert outside["mse"] == 140.0 and outside["how"].startswith("nearest")


def test_ppca_active_fraction_counts_variances_above_the_noise() -> None:
    rng = np.random.default_rng(0)
    scales = np.array([3.0, 2.0, 1.0, 0.3, 0.2, 0.1])  # variances 9, 4, 1, 0.09, 0.04, 0.01
    x = rng.normal(size=(20_000, 6)) * scales
    assert ppca_active_fraction(x, beta=1.0, n_latents=12)["active_fraction"] == pytest.approx(3 / 12)
    assert ppca_active_fraction(x, beta=1.0, n_latents=2)["active_fraction"] == 1.0


def test_configs_and_deviations() -> None:
    assert not [d for d in deviations(quick_config()) if "epochs of" in d and "3000" not in d]
    assert any("MNIST is not available offline" in d for d in deviations(quick_config()))
    with pytest.raises(ConfigError, match="reference_beta"):
        PatchStudy(betas=(0.5, 2.0))
    assert slug("P-VAE β=1") == "p-vae-beta-1"


def test_renderers_escape() -> None:
    blocks = [Block("h1", "a <b>"), Block("table", items=("x|y",), rows=(("**ok**",),)), Block("p", "`c` & d")]
    assert "x\\|y" in render_markdown(blocks)
    page = render_html(blocks)
    assert "a &lt;b&gt;" in page and "<strong>ok</strong>" in page and "<code>c</code> &amp; d" in page


def test_train_vae_reuses_only_a_finished_run_of_the_same_config(tmp_path: Path) -> None:
    cfg = TrainConfig(model=ModelConfig(arch="lin|lin", n_latents=8, input_shape=(8, 8)), data="digits", epochs=1,
                      batch_size=200, max_val_samples=100, device="cpu")
    ctx = RunContext(out_dir=tmp_path, device=torch.device("cpu"), progress=False, reuse=True)
    first, _, reused = train_vae(cfg, "tiny P-VAE", ctx)
    assert not reused and (tmp_path / "models" / "tiny-p-vae" / "last.pt").is_file()
    again, _, reused = train_vae(cfg, "tiny P-VAE", ctx)
    assert reused and torch.equal(first.dictionary, again.dictionary)
    _, _, reused = train_vae(TrainConfig(**{**cfg.__dict__, "seed": 1}), "tiny P-VAE", ctx)
    assert not reused


# ----------------------------------------------------------------------------- end to end


def test_smoke_report_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main(["--smoke", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    results = json.loads((out / "report.json").read_text())
    assert (out / "report.md").read_text().startswith("# P-VAE against its baselines")
    figures = results["meta"]["figures"]
    assert {"basis_compare", "tradeoff", "active", "gabor_r2", "shattering", "knn/digits"} <= set(figures)
    assert all((out / path).is_file() and (out / path).stat().st_size > 0 for path in figures.values())
    # The verdicts are a function of the numbers in report.json: recomputing them gives the same table.
    assert [v.to_dict() for v in compute_verdicts(results)] == results["verdicts"]
    assert len(results["verdicts"]) == 5
    assert set(results["patches"]["models"]) == {"P-VAE β=1", "P-VAE β=2", "G-VAE", "L-VAE"}
    assert results["classification"]["digits"]["runs"]["4"]["poisson"]["shattering"]["n_splits"] == 3
    assert results["config"] == smoke_config().to_dict() | {"device": "cpu"}
    page = render_html(build_document(results, compute_verdicts(results), figures))
    assert page.count("<img") == sum(1 for k in figures if "/" not in k or k.startswith("knn/"))
