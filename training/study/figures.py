"""PNG figures of ``pvae-report``: basis grids, Gabor R^2, active latents, the beta sweep, the MSE-sparsity trade-off,
few-label kNN curves and shattering dimensionality. Pure matplotlib (Agg); arrays and dicts in, PNGs out.

    >>> save_basis_grid(tiles, Path("basis.png"), title="P-VAE β=1")     # tiles (N, h, w)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pvae.training.plots import pyplot as _pyplot
from pvae.training.plots import tile_grid
from pvae.training.study.verdict import FAMILY_NAMES

__all__ = [
    "BASIS_TILES",
    "save_active_latents",
    "save_basis_comparison",
    "save_basis_grid",
    "save_beta_sweep",
    "save_gabor_r2",
    "save_knn",
    "save_shattering",
    "save_tradeoff",
]

#: Basis vectors shown per grid (largest KL first) and tiles per row.
BASIS_TILES = 128
BASIS_COLUMNS = 16
#: Figure resolution, dots per inch.
DPI = 110
#: One colour per latent family / reference, shared by every figure.
COLOURS = {"poisson": "tab:red", "gaussian": "tab:blue", "laplace": "tab:green", "categorical": "tab:purple",
           "gaussian-relu": "tab:cyan", "lca": "tab:orange", "ista": "tab:brown", "amortisation": "black"}


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def save_basis_grid(tiles: np.ndarray, path: Path, title: str, n_tiles: int = BASIS_TILES) -> Path:
    """The first ``n_tiles`` basis vectors (N, h, w), each scaled symmetrically about 0 (gray = 0)."""
    plt = _pyplot()
    grid = tile_grid(np.asarray(tiles)[:n_tiles], columns=BASIS_COLUMNS)
    fig, ax = plt.subplots(figsize=(7, 7 * grid.shape[0] / grid.shape[1] + 0.4))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    return _save(fig, path)


def save_basis_comparison(panels: Sequence[tuple[str, np.ndarray]], path: Path, n_tiles: int = 64) -> Path:
    """Basis grids side by side, e.g. [("P-VAE ...", tiles), ("G-VAE ...", tiles)]."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5.6))
    for ax, (title, tiles) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(tile_grid(np.asarray(tiles)[:n_tiles], columns=8), cmap="gray", vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def save_gabor_r2(r2: Mapping[str, Sequence[float]], families: Mapping[str, str], threshold: float,
                  path: Path) -> Path:
    """Cumulative distribution of the Gabor-fit R^2 per model (``families`` picks the colours), with the
    Gabor-like threshold: a curve far to the right means well-fitted filters."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, values in r2.items():
        if len(values):
            xs = np.sort(np.asarray(values))
            ys = np.arange(1, len(xs) + 1) / len(xs)
            ax.step(np.concatenate([[0.0], xs, [1.0]]), np.concatenate([[0.0], ys, [1.0]]), where="post",
                    linewidth=1.8, color=COLOURS.get(families.get(name, "")), label=f"{name} (n={len(xs)})")
    ax.axvline(threshold, color="gray", linestyle="--", linewidth=1, label=f"R² = {threshold:g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("Gabor fit R² (active filters)")
    ax.set_ylabel("fraction of filters with R² ≤ x")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


#: Active-latent criteria, in the order the figure and the report show them.
ACTIVE_CRITERIA = {"usage_mean": "usage (mse_map rise, code -> its mean)", "table2": "paper Table 2 (norm / KL gap)",
                   "kl_threshold": "paper Figure 5 (KL threshold)"}


def save_active_latents(names: Sequence[str], fractions: Sequence[Mapping[str, float]],
                        untrained: Mapping[str, Mapping[str, float]], path: Path) -> Path:
    """Grouped bars: per model, the active fraction by each criterion; hatched: the same family untrained
    (a criterion an untrained model passes proves nothing)."""
    plt = _pyplot()
    labels = list(names) + [f"{n} (untrained)" for n in untrained]
    values = list(fractions) + list(untrained.values())
    width = 0.8 / len(ACTIVE_CRITERIA)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels)), 4.0))
    for j, (key, label) in enumerate(ACTIVE_CRITERIA.items()):
        xs = [i + (j - (len(ACTIVE_CRITERIA) - 1) / 2) * width for i in range(len(labels))]
        ys = [float(v.get(key, float("nan"))) for v in values]
        bars = ax.bar(xs, ys, width=width, label=label, color=f"C{j}")
        for bar, name in zip(bars, labels, strict=True):
            if name.endswith("(untrained)"):
                bar.set_hatch("//")
                bar.set_alpha(0.5)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("active fraction of K")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _sweep_means(sweep: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float], list[float]]:
    """Per beta: the mean of ``key`` over seeds and its min/max."""
    betas = sorted({float(r["beta"]) for r in sweep})
    values = [[float(r[key]) for r in sweep if float(r["beta"]) == b] for b in betas]
    return betas, [float(np.mean(v)) for v in values], [float(np.max(v) - np.min(v)) / 2 for v in values]


def save_beta_sweep(patches: Mapping[str, Any], path: Path) -> Path:
    """mse_map and lifetime sparsity against beta (mean over seeds, bars: half the seed range, dots: each
    seed), with the paper's van Hateren values overlaid."""
    plt = _pyplot()
    sweep = patches.get("beta_sweep", [])
    paper = (patches.get("beta_trend") or {}).get("paper", {})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "mse_map", "mse_map"), (axes[1], "lifetime_sparsity", "lifetime sparsity")):
        betas, means, spread = _sweep_means(sweep, key)
        ax.errorbar(betas, means, yerr=spread, marker="o", capsize=3, color=COLOURS["poisson"], label="ours")
        ax.plot([float(r["beta"]) for r in sweep], [float(r[key]) for r in sweep], ".", color=COLOURS["poisson"],
                alpha=0.4)
        if paper:
            pb = sorted(float(b) for b in paper)
            ax.plot(pb, [paper[str(b) if str(b) in paper else f"{b:g}"][key] for b in pb], "s--", color="gray",
                    label="paper (van Hateren)")
        trend = (patches.get("beta_trend") or {}).get(key, {})
        rho, ci = trend.get("rho_mean_curve"), trend.get("ci95") or [None, None]
        if rho is not None and ci[0] is not None:
            ax.set_title(f"{label}: Spearman ρ {rho:.2f} (95% CI {ci[0]:.2f}…{ci[1]:.2f})", fontsize=9)
        ax.set_xscale("log")
        ax.set_xlabel("β")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def save_tradeoff(patches: Mapping[str, Any], path: Path) -> Path:
    """mse_map against lifetime sparsity: the P-VAE beta sweep (mean over seeds), the lin-encoder VAE
    baselines, sparse coding and LCA on the P-VAE's dictionary (the gap as an arrow at matched sparsity)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    sweep = patches.get("beta_sweep", [])
    if sweep:
        betas, mse, _ = _sweep_means(sweep, "mse_map")
        _, spars, _ = _sweep_means(sweep, "lifetime_sparsity")
        ax.plot(spars, mse, "o-", color=COLOURS["poisson"], label="P-VAE β sweep")
        for b, x, y in zip(betas, spars, mse, strict=True):
            ax.annotate(f"β={b:g}", (x, y), fontsize=7, textcoords="offset points", xytext=(4, 4))
    for name, model in patches.get("models", {}).items():
        if model["family"] == "poisson" or model.get("encoder") != "lin":
            continue
        ax.plot(model["metrics"]["lifetime_sparsity"], model["metrics"]["mse_map"], "s",
                color=COLOURS.get(model["family"], "gray"), label=name)
    for name, run in patches.get("sparse_coding", {}).items():
        ax.plot(run["metrics"]["lifetime_sparsity"], run["metrics"]["mse"], "^",
                color=COLOURS.get(run["method"], "gray"), label=name)
    amort = patches.get("amortisation")
    if amort:
        points = sorted(amort["points"], key=lambda r: r["lifetime_sparsity"])
        ax.plot([r["lifetime_sparsity"] for r in points], [r["mse"] for r in points], "x--",
                color=COLOURS["amortisation"], label=f"LCA on {amort['model']}'s dictionary")
        matched = amort.get("matched")
        if matched:
            ax.annotate("", xy=(matched["lifetime_sparsity"], matched["mse"]),
                        xytext=(amort["pvae"]["lifetime_sparsity"], amort["pvae"]["mse_map"]),
                        arrowprops={"arrowstyle": "->", "color": "gray"})
    ax.set_xlabel("lifetime sparsity (exact samples; |code| for signed codes)")
    ax.set_ylabel("mse_map (sum over pixels)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def save_knn(dataset: str, study: Mapping[str, Any], path: Path) -> Path:
    """kNN accuracy against the number of labels, one panel per K, one line per family (95% CI bars)."""
    plt = _pyplot()
    ks = sorted(study["runs"], key=int)
    fig, axes = plt.subplots(1, len(ks), figsize=(4.2 * len(ks), 3.6), squeeze=False)
    for ax, k in zip(axes[0], ks, strict=True):
        for family, run in study["runs"][k].items():
            budgets = sorted(run["knn"], key=int)
            ax.errorbar([int(b) for b in budgets], [run["knn"][b]["mean"] for b in budgets],
                        yerr=[run["knn"][b]["ci95"] for b in budgets], marker="o", capsize=3,
                        color=COLOURS.get(family, "gray"), label=FAMILY_NAMES.get(family, family))
        ax.set_xscale("log")
        budgets = [int(b) for b in study["budgets"]]
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_title(f"{dataset}, K={k}", fontsize=10)
        ax.set_xlabel("labelled samples N")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("kNN accuracy (k=5)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def save_shattering(classification: Mapping[str, Any], path: Path) -> Path:
    """Mean shattering accuracy (95% CI) per dataset and K, one bar per family."""
    plt = _pyplot()
    groups = [(d, k) for d, study in classification.items() for k in sorted(study["runs"], key=int)]
    families = sorted({f for d, k in groups for f in classification[d]["runs"][k]},
                      key=lambda f: list(FAMILY_NAMES).index(f))
    width = 0.8 / max(1, len(families))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(groups)), 3.8))
    for j, family in enumerate(families):
        xs, means, cis = [], [], []
        for i, (d, k) in enumerate(groups):
            run = classification[d]["runs"][k].get(family)
            if run is not None:
                xs.append(i + (j - (len(families) - 1) / 2) * width)
                means.append(run["shattering"]["mean"])
                cis.append(run["shattering"]["ci95"])
        ax.bar(xs, means, width=width, yerr=cis, capsize=2, color=COLOURS.get(family, "gray"),
               label=FAMILY_NAMES.get(family, family))
    ax.set_xticks(range(len(groups)), [f"{d}\nK={k}" for d, k in groups], fontsize=8)
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("shattering (mean accuracy)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
