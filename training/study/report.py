"""``pvae-report``: train the model zoo, measure the paper's claims, write a report with a verdict table.

    pvae-report --quick                    # < 10 min on a 2-core CPU (indicative numbers)
    pvae-report --cpu                      # every protocol, <= 90 min on a 2-core CPU -> runs/report-cpu
    pvae-report --full --device cuda       # the paper's budgets (GPU)

Data flow: config (:mod:`.config`) -> train and evaluate the patch study (the P-VAE beta sweep over seeds
with a rank-correlation trend test, Table 4 for every loss, family and encoder, active latents by the
paper's criteria and by usage with untrained controls, Gabor fits, LCA/ISTA, LCA on the P-VAE's dictionary)
and the geometry study (nonlinear encoders; few-label kNN with the paper's pool/evaluation split,
shattering over every class split, both compared paired) -> verdicts (:mod:`.verdict`, computed from the numbers) ->
figures (:mod:`.figures`) -> document (:mod:`.document`). The output directory holds
``report.md`` (or ``report.html``), ``report.json`` (every number, the config and the verdicts),
``figures/*.png``, ``bases.npz`` (every basis shown) and ``models/*`` (the trained checkpoints).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pvae import __version__
from pvae.cli import run_cli
from pvae.errors import CheckpointError, ConfigError
from pvae.training.active_latents import active_latent_summary
from pvae.training.checkpoint import build_model, load_checkpoint
from pvae.training.config import PAPER_ERA_SCHEDULE, ModelConfig, TrainConfig
from pvae.training.data import PatchConfig, load_dataset
from pvae.training.device import resolve_device
from pvae.training.evaluate import encode_features, evaluate_model
from pvae.training.gabor import GABOR_R2_THRESHOLD, fit_gabors, summarise_gabor_fits
from pvae.training.knn import knn_paper_protocol
from pvae.training.model import VAE
from pvae.training.study.config import (
    PRESETS,
    ClassificationStudy,
    ImageStudy,
    PatchStudy,
    ReportConfig,
    deviations,
)
from pvae.training.study.document import (
    FORMATS,
    VERDICTS_BEGIN,
    VERDICTS_END,
    build_document,
    relative,
    render,
    replace_verdict_block,
)
from pvae.training.study.figures import (
    save_active_latents,
    save_basis_comparison,
    save_basis_grid,
    save_beta_sweep,
    save_gabor_r2,
    save_knn,
    save_shattering,
    save_tradeoff,
)
from pvae.training.study.geometry import paired_comparison
from pvae.training.study.shattering import shattering_dimensionality
from pvae.training.study.sparse_coding import SparseCodingConfig, encode, evaluate_codes, lca_infer, learn_dictionary
from pvae.training.study.verdict import FAMILY_NAMES, compute_verdicts
from pvae.training.train import BEST, LAST, LOG, Trainer

__all__ = [
    "DEFAULT_THREADS",
    "RunContext",
    "amortisation_gap",
    "main",
    "match_at_sparsity",
    "ppca_active_fraction",
    "render_report",
    "run_classification_study",
    "run_patch_study",
    "run_report",
    "slug",
    "train_vae",
    "write_report",
]

#: torch intra-op and BLAS threads. On a shared 2-core machine, two threads that spin-wait for each other
#: are many times slower than one (measured at load ~10: a lin|lin K=512 training step took 50 ms on one
#: thread and 1.7 s on two; 30 logistic regressions took 0.28 s on one BLAS thread and 3.4 s on two).
DEFAULT_THREADS = 1
#: Temperature at the end of annealing: 0.05 for the Poisson relaxation, 0.1 for Gumbel-softmax
#: (Vafaii, Galor & Yates, NeurIPS 2024: Algorithm 1's relaxed Poisson sampling, and the C-VAE baseline).
END_TEMPERATURE = {"categorical": 0.1}
DEFAULT_END_TEMPERATURE = 0.05
#: The basis tiles of every model shown, by slug (``--render`` reads them back).
BASES = "bases.npz"
#: Validation samples used when evaluating a classification model's reconstruction metrics.
MAX_IMAGE_VAL_SAMPLES = 10_000


@dataclass
class RunContext:
    """Where and how a report run trains: output folder, device, progress, and the stage counter.

        ctx = RunContext(out_dir=Path("runs/r"), device=torch.device("cpu"), total_stages=3)
        ctx.begin("patches: P-VAE β=1")      # prints "[1/3] 00:00 patches: P-VAE β=1" to stderr
    """

    out_dir: Path
    device: torch.device
    progress: bool = True
    reuse: bool = False
    total_stages: int = 0
    stage: int = 0
    started: float = 0.0
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)

    def begin(self, what: str) -> None:
        """Announce the next stage: ``[i/n] mm:ss what``."""
        self.stage += 1
        minutes, seconds = divmod(int(time.perf_counter() - self.started), 60)
        self.log(f"[{self.stage}/{self.total_stages}] {minutes:02d}:{seconds:02d} {what}")


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def slug(name: str) -> str:
    """A file-name-safe form of a model name ("P-VAE β=1" -> "p-vae-beta-1")."""
    return re.sub(r"[^a-z0-9.]+", "-", name.lower().replace("β", "beta").replace("λ", "lam")).strip("-")


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become None, numpy scalars become Python numbers, tuples become lists."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ----------------------------------------------------------------------------- training


def train_vae(cfg: TrainConfig, name: str, ctx: RunContext) -> tuple[VAE, float, bool]:
    """Train one VAE into ``models/<slug>`` (or reuse a finished run of the same config with --reuse).

    Returns the model (eval mode), the training seconds and whether it was reused.
    """
    run_dir = ctx.out_dir / "models" / slug(name)
    if ctx.reuse and (run_dir / LAST).exists():
        try:
            ckpt = load_checkpoint(run_dir / LAST, map_location=ctx.device)
        except CheckpointError:
            ckpt = None
        if ckpt is not None and replace(ckpt.train_config, device=cfg.device) == cfg and ckpt.epoch == cfg.epochs:
            return build_model(ckpt, ctx.device), float(ckpt.metrics.get("train_seconds", 0.0)), True
    for stale in (LAST, BEST, LOG):  # a fresh run: never append to an older run's log
        (run_dir / stale).unlink(missing_ok=True)
    start = time.perf_counter()
    trainer = Trainer(cfg, run_dir, progress=ctx.progress)
    trainer.run()
    return trainer.model.eval(), time.perf_counter() - start, False


def ppca_active_fraction(train: np.ndarray, beta: float, n_latents: int) -> dict[str, float]:
    """Latents a converged linear G-VAE keeps: it is probabilistic PCA (Tipping & Bishop 1999) with noise
    variance beta/2 (loss = SSE + beta KL is a Gaussian likelihood with sigma^2 = beta/2), which keeps the
    principal directions whose variance exceeds the noise."""
    eigenvalues = np.linalg.eigvalsh(np.cov(np.asarray(train, dtype=np.float64), rowvar=False))
    noise = beta / 2.0
    above = int((eigenvalues > noise).sum())
    return {"noise_variance": noise, "components_above": float(above),
            "active_fraction": min(above, n_latents) / n_latents}


def match_at_sparsity(points: Sequence[Mapping[str, float]], target: float) -> dict[str, Any]:
    """The mse of a (lifetime_sparsity, mse) curve at ``target`` sparsity: linear interpolation between the
    bracketing points, else the nearest point (flagged)."""
    pts = sorted(points, key=lambda p: p["lifetime_sparsity"])
    for a, b in itertools.pairwise(pts):
        if a["lifetime_sparsity"] <= target <= b["lifetime_sparsity"]:
            span = b["lifetime_sparsity"] - a["lifetime_sparsity"]
            w = (target - a["lifetime_sparsity"]) / span if span > 0 else 0.0
            return {"mse": a["mse"] + w * (b["mse"] - a["mse"]), "lifetime_sparsity": target,
                    "how": "interpolated"}
    nearest = min(pts, key=lambda p: abs(p["lifetime_sparsity"] - target))
    return {"mse": nearest["mse"], "lifetime_sparsity": nearest["lifetime_sparsity"],
            "how": "nearest LCA point; the P-VAE lies outside the LCA range"}


@torch.no_grad()
def amortisation_gap(model: VAE, x: torch.Tensor, fractions: Sequence[float], n_iter: int,
                     seed: int) -> dict[str, Any]:
    """LCA (non-negative, like the P-VAE's rates) on the P-VAE's own dictionary against its encoder.

    Thresholds are ``fractions`` of the median over samples of max_k (Phi^T x)_k (above it most codes are
    empty). The gap is the encoder's mse_map minus LCA's mse at the encoder's lifetime sparsity.
    """
    phi = model.dictionary.detach().float()  # (D, K)
    x = x.reshape(x.shape[0], -1).to(phi.device)
    scale = float((x @ phi).max(dim=1).values.median())
    points = []
    for fraction in fractions:
        lam = fraction * scale
        codes = lca_infer(x, phi, lam, n_iter=n_iter, nonnegative=True)
        points.append({"fraction": fraction, "lam": lam, **evaluate_codes(x, phi, codes)})
    pvae = evaluate_model(model, x, seed=seed)
    matched = match_at_sparsity(points, pvae["lifetime_sparsity"])
    gap = pvae["mse_map"] - matched["mse"]
    return {"points": points, "lam_scale": scale, "n_iterations": n_iter,
            "pvae": {"mse_map": pvae["mse_map"], "lifetime_sparsity": pvae["lifetime_sparsity"]},
            "matched": matched, "gap": gap, "relative_gap": gap / pvae["mse_map"]}


# ----------------------------------------------------------------------------- patch study


#: Paper values the report prints beside ours (reproduction.md, van Hateren, lin|lin and conv|lin).
PAPER_TABLE4 = {  # NELBO, (lin, conv) encoder
    ("poisson", "exact"): (168.0, 162.4), ("poisson", "mc"): (167.2, 163.4), ("poisson", "st"): (179.3, 179.4),
    ("gaussian", "mc"): (160.3, 154.4), ("laplace", "mc"): (167.3, 159.2), ("categorical", "mc"): (170.5, 171.9),
}
PAPER_COMPONENTS = {"poisson": (137.7, 102.4, 29.5), "gaussian": (122.7, 82.3, 37.6), "laplace": (126.9, 91.2, 40.4),
                    "categorical": (165.0, 157.6, 5.5)}  # mse, mse_map, KL (lin|lin)
PAPER_SWEEP = {0.01: (3.35, 0.325), 0.2: (28.7, 0.402), 0.4: (52.3, 0.502), 0.6: (72.2, 0.608), 0.8: (88.6, 0.708),
               1.0: (102.4, 0.790), 1.5: (130.9, 0.912), 4.0: (234.5, 0.997)}  # beta: (mse_map, lifetime)
PAPER_SPARSE_CODING = {"lca": (50.2, 0.917), "ista": (86.9, 0.961)}  # best settings: mse, lifetime
PAPER_ACTIVE_TABLE2 = {"poisson": (0.984, 0.819), "laplace": (0.188, 0.222), "gaussian": (0.218, 0.246)}
#: Bootstrap resamples of the trend test.
TREND_BOOTSTRAP = 2000


def _patch_train_config(study: PatchStudy, family: str, beta: float, encoder: str, loss: str, seed: int,
                        cfg: ReportConfig) -> TrainConfig:
    """The paper-era recipe (reproduction.md) scaled to ``epochs``: warm-up, oscillating cosine, clip 500
    (x3 in warm-up), beta and temperature annealed over the first half, no beta hold (linear decoder)."""
    epochs = study.epochs if family == "poisson" else study.baseline_epochs
    if encoder != "lin":
        epochs = study.conv_epochs
    prior = study.prior_log_rate_init if family == "poisson" else None
    model = ModelConfig(arch=f"{encoder}|lin", latent=family, n_latents=study.n_latents, init_std=study.init_std,
                        prior_log_rate_init=prior, conv_channels=study.conv_channels)
    # The paper warms up for 5 of 3000 epochs; short runs warm up for one epoch (half of a 1-epoch run).
    schedule = {**PAPER_ERA_SCHEDULE, "warmup_epochs": min(5.0, max(1.0, epochs / 30), epochs / 2)}
    return TrainConfig(
        model=model, data="patches", n_patches=study.n_patches, epochs=epochs, batch_size=study.batch_size,
        lr=study.lr, beta=beta, beta_hold_fraction=0.0, loss="exact" if loss == "exact" else "mc",
        straight_through=loss == "st", temperature_end=END_TEMPERATURE.get(family, DEFAULT_END_TEMPERATURE),
        max_val_samples=study.max_val_samples, eval_every=epochs, device=cfg.device, seed=seed, **schedule,
    )


def _model_name(family: str, encoder: str, loss: str, beta: float | None = None, seed: int | None = None) -> str:
    name = FAMILY_NAMES[family]
    if family == "poisson":
        name += f" {loss}"
    name += f" {encoder}|lin"
    if beta is not None:
        name += f" β={beta:g}"
    if seed is not None:
        name += f" seed {seed}"
    return name


@torch.no_grad()
def _evaluate_patch_model(model: VAE, val_x: torch.Tensor, n_gabor: int, seed: int) -> tuple[dict[str, Any],
                                                                                           np.ndarray | None]:
    """Metrics, active latents by every criterion, and (n_gabor > 0) Gabor fits of the most used filters."""
    metrics = evaluate_model(model, val_x, seed=seed)
    active = active_latent_summary(model, val_x, untrained_reference=False, seed=seed)
    record: dict[str, Any] = {"family": model.cfg.latent, "encoder": model.cfg.encoder, "metrics": metrics,
                              "active": active}
    if n_gabor <= 0:
        return record, None
    usage = np.asarray(active["usage_rises"], dtype=np.float64)
    order = np.argsort(-usage)
    h, w = model.cfg.input_shape
    tiles = model.dictionary.detach().float().cpu().numpy().T[order].reshape(-1, h, w)  # (K, h, w), most used first
    n_used = int(np.sum(usage > float(active["usage"]["threshold"])))
    fits = fit_gabors(tiles[:min(n_gabor, n_used)])
    record.update(gabor=summarise_gabor_fits(fits), gabor_r2=[f.r2 for f in fits])
    return record, tiles


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def trend_test(sweep: Sequence[Mapping[str, Any]], key: str, seed: int, n_boot: int = TREND_BOOTSTRAP
               ) -> dict[str, Any]:
    """Rank correlation of ``key`` with beta: per seed, and a bootstrap 95% CI over seeds (each resample
    draws, for every beta, one of that beta's seeds; with one seed per beta the CI is a point)."""
    betas = sorted({float(r["beta"]) for r in sweep})
    by_beta = {b: [float(r[key]) for r in sweep if float(r["beta"]) == b] for b in betas}
    seeds = sorted({int(r["seed"]) for r in sweep})
    per_seed = {}
    for s in seeds:
        pts = sorted((float(r["beta"]), float(r[key])) for r in sweep if int(r["seed"]) == s)
        per_seed[str(s)] = spearman([p[0] for p in pts], [p[1] for p in pts])
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        values = [by_beta[b][int(rng.integers(len(by_beta[b])))] for b in betas]
        boot.append(spearman(betas, values))
    arr = np.asarray([b for b in boot if not math.isnan(b)])
    mean_by_beta = [float(np.mean(by_beta[b])) for b in betas]
    return {"rho_mean_curve": spearman(betas, mean_by_beta), "rho_per_seed": per_seed,
            "ci95": [float(np.percentile(arr, 2.5)), float(np.percentile(arr, 97.5))] if len(arr) else [None, None],
            "n_boot": n_boot}


def run_patch_study(study: PatchStudy, cfg: ReportConfig, ctx: RunContext) -> tuple[dict[str, Any],
                                                                                 dict[str, np.ndarray]]:
    """Train and evaluate every patch model; returns the results and the basis tiles per model."""
    data = load_dataset("patches", PatchConfig(n_patches=study.n_patches))
    h, w = data.image_shape
    train_x = torch.as_tensor(data.train)
    val_x = torch.as_tensor(data.val[:study.max_val_samples]).to(ctx.device)
    results: dict[str, Any] = {"n_train": len(data.train), "n_val": int(val_x.shape[0]),
                               "gabor_filters": study.gabor_filters, "models": {}, "sparse_coding": {},
                               "ppca": ppca_active_fraction(data.train, study.reference_beta, study.n_latents)}
    tiles: dict[str, np.ndarray] = {}
    ref = study.reference_beta

    def train_and_evaluate(family: str, encoder: str, loss: str, beta: float, seed: int, name: str,
                           n_gabor: int) -> tuple[VAE, dict[str, Any]]:
        train_cfg = _patch_train_config(study, family, beta, encoder, loss, seed, cfg)
        ctx.begin(f"patches: {name} (K={study.n_latents}, {_epochs(train_cfg.epochs)})")
        model, seconds, reused = train_vae(train_cfg, name, ctx)
        record, model_tiles = _evaluate_patch_model(model, val_x, n_gabor, seed)
        record.update(beta=beta, loss=loss, seed=seed, epochs=train_cfg.epochs, train_seconds=seconds,
                      reused=reused, convergence=_convergence(ctx.out_dir / "models" / slug(name)))
        if model_tiles is not None:
            tiles[name] = model_tiles
        return model, record

    # The beta sweep: lin|lin P-VAEs, every beta x seed.
    sweep: list[dict[str, Any]] = []
    reference_model: VAE | None = None
    reference_name = _model_name("poisson", "lin", study.sweep_loss, ref)
    for beta in study.betas:
        for i in range(study.seeds):
            seed = cfg.seed + i
            is_reference = beta == ref and i == 0
            name = reference_name if is_reference else _model_name("poisson", "lin", study.sweep_loss, beta, seed)
            model, record = train_and_evaluate("poisson", "lin", study.sweep_loss, beta, seed, name,
                                               study.gabor_filters if is_reference else 0)
            m = record["metrics"]
            sweep.append({"beta": beta, "seed": seed, "model": name, "mse_map": m["mse_map"], "nelbo": m["nelbo"],
                          "lifetime_sparsity": m["lifetime_sparsity"], "population_sparsity": m["population_sparsity"]})
            if is_reference:
                reference_model = model
                results["models"][name] = record
    results["reference"] = reference_name
    results["beta_sweep"] = sweep
    results["beta_trend"] = {"mse_map": trend_test(sweep, "mse_map", cfg.seed),
                             "lifetime_sparsity": trend_test(sweep, "lifetime_sparsity", cfg.seed),
                             "paper": {str(b): {"mse_map": v[0], "lifetime_sparsity": v[1]}
                                       for b, v in PAPER_SWEEP.items()}}

    # Table 4: every loss and family, lin and conv encoders, at the reference beta.
    table4 = []
    for encoder in study.encoders:
        col = 0 if encoder == "lin" else 1
        runs = [("poisson", loss) for loss in study.losses] + [(f, "mc") for f in study.baselines]
        for family, loss in runs:
            name = _model_name(family, encoder, loss, ref if family == "poisson" else None)
            if name != reference_name:
                n_gabor = study.gabor_filters if encoder == "lin" and family != "poisson" else 0
                _, record = train_and_evaluate(family, encoder, loss, ref, cfg.seed, name, n_gabor)
                results["models"][name] = record
            m = results["models"][name]["metrics"]
            paper = PAPER_TABLE4.get((family, loss))
            table4.append({"model": name, "family": family, "loss": loss, "encoder": encoder, "nelbo": m["nelbo"],
                           "mse": m["mse"], "mse_map": m["mse_map"], "kl": m["kl"],
                           "paper_nelbo": paper[col] if paper else None,
                           "epochs": results["models"][name]["epochs"]})
    results["table4"] = table4
    results["paper"] = {"components": {f: dict(zip(("mse", "mse_map", "kl"), v, strict=True))
                                       for f, v in PAPER_COMPONENTS.items()},
                        "active_table2": {f: {"lin": v[0], "conv": v[1]} for f, v in PAPER_ACTIVE_TABLE2.items()},
                        "sparse_coding": {k: {"mse": v[0], "lifetime_sparsity": v[1]}
                                          for k, v in PAPER_SPARSE_CODING.items()}}

    # Controls: every family untrained (fresh init), scored by the same active-latent criteria.
    controls = {}
    for family in ("poisson", *study.baselines):
        torch.manual_seed(cfg.seed)
        fresh = VAE(_patch_train_config(study, family, ref, "lin", "mc", cfg.seed, cfg).model).to(ctx.device).eval()
        controls[FAMILY_NAMES[family]] = {"family": family, "active": active_latent_summary(
            fresh, val_x, untrained_reference=False, seed=cfg.seed)}
    results["untrained"] = controls

    for method, lam in study.sparse_coding:
        name = f"{method.upper()} λ={lam:g}"
        ctx.begin(f"patches: sparse coding {name} (K={study.n_latents}, {_epochs(study.sc_epochs)})")
        sc_cfg = SparseCodingConfig(method=method, n_atoms=study.n_latents, lam=lam, epochs=study.sc_epochs,
                                    batch_size=study.sc_batch_size, lr=study.sc_lr,
                                    train_iterations=study.sc_train_iterations,
                                    eval_iterations=study.sc_eval_iterations, seed=cfg.seed)
        start = time.perf_counter()
        bar = tqdm(total=1, desc=name, unit="step", file=sys.stderr, mininterval=0.5, disable=not ctx.progress)

        def advance(step: int, total: int, stats: dict[str, float], bar: tqdm = bar) -> None:
            bar.total = total
            bar.update(1)
            bar.set_postfix(mse=f"{stats['mse']:.1f}", l1=f"{stats['l1']:.1f}", refresh=False)

        learned = learn_dictionary(train_x, sc_cfg, ctx.device, progress=advance)
        bar.close()
        xs = val_x[:study.amortisation_samples]
        codes = encode(method, xs, learned.dictionary, lam, study.sc_eval_iterations)
        usage = codes.abs().mean(0)  # (K,)
        order = torch.argsort(usage, descending=True)
        sc_tiles = learned.dictionary.T[order].reshape(-1, h, w).cpu().numpy()
        fits = fit_gabors(sc_tiles[:min(study.gabor_filters, int((usage > 0).sum()))])
        paper = PAPER_SPARSE_CODING[method]
        results["sparse_coding"][name] = {
            "method": method, "lam": lam, "train_seconds": time.perf_counter() - start,
            "metrics": evaluate_codes(xs, learned.dictionary, codes), "history": learned.history,
            "paper": {"mse": paper[0], "lifetime_sparsity": paper[1]},
            "gabor": summarise_gabor_fits(fits), "gabor_r2": [f.r2 for f in fits]}
        tiles[name] = sc_tiles
    assert reference_model is not None  # PatchStudy checks that reference_beta is one of the betas
    ctx.begin(f"patches: LCA on {reference_name}'s dictionary")
    results["amortisation"] = {"model": reference_name, **amortisation_gap(
        reference_model, val_x[:study.amortisation_samples], study.amortisation_lambdas, study.sc_eval_iterations,
        cfg.seed)}
    return results, tiles


def _convergence(run_dir: Path) -> dict[str, Any]:
    """How much the training loss still moved at the end: the relative change of the mean epoch loss from
    the second-last tenth of training to the last tenth (from the run's metrics.jsonl)."""
    path = run_dir / LOG
    if not path.exists():
        return {}
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    losses = [float(r["loss"]) for r in records if "loss" in r]
    n = len(losses)
    tenth = max(1, n // 10)
    if n < 2 * tenth or n < 2:
        return {"epochs_logged": n}
    last, before = float(np.mean(losses[-tenth:])), float(np.mean(losses[-2 * tenth:-tenth]))
    return {"epochs_logged": n, "loss_last_tenth": last, "loss_previous_tenth": before,
            "relative_change": (last - before) / abs(before) if before else None}


# ----------------------------------------------------------------------------- classification study


def run_classification_study(study: ClassificationStudy, cfg: ReportConfig, ctx: RunContext) -> dict[str, Any]:
    """Train every (dataset, K, family) model; few-label kNN and shattering on its features, compared paired."""
    results: dict[str, Any] = {}
    for image_study in study.datasets:
        results[image_study.dataset] = _run_image_study(image_study, study, cfg, ctx)
    return results


def _knn_split(image: ImageStudy, n_test: int, n_all: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool and evaluation indices: Fashion-MNIST the paper's (first ``pool_size`` test images, then the
    rest); digits (test split too small) a seeded permutation of all images, cut at ``pool_size``."""
    if image.dataset == "digits":
        order = np.random.default_rng(seed).permutation(n_all)
        return order[:image.pool_size], order[image.pool_size:]
    return np.arange(image.pool_size), np.arange(image.pool_size, n_test)


def _run_image_study(image: ImageStudy, study: ClassificationStudy, cfg: ReportConfig,
                     ctx: RunContext) -> dict[str, Any]:
    data = load_dataset(image.dataset, PatchConfig())
    assert data.train_labels is not None and data.val_labels is not None  # labelled datasets only
    x_train, y_train = torch.as_tensor(data.train), np.asarray(data.train_labels)
    x_test, y_test = torch.as_tensor(data.val), np.asarray(data.val_labels)
    if image.dataset == "digits":  # kNN on all images (the VAEs saw the training images, never a label)
        x_knn, y_knn = torch.cat([x_train, x_test]), np.concatenate([y_train, y_test])
    else:
        x_knn, y_knn = x_test, y_test
    pool, held = _knn_split(image, len(y_test), len(y_knn), cfg.seed)
    val_x = x_test[:MAX_IMAGE_VAL_SAMPLES].to(ctx.device)
    out: dict[str, Any] = {"budgets": list(image.budgets), "arch": study.arch, "epochs": image.epochs,
                           "conv_channels": list(study.conv_channels), "n_pool": len(pool), "n_eval": len(held),
                           "n_train": len(y_train), "n_test": len(y_test), "runs": {}, "paired": {}}
    for k in study.n_latents:
        runs: dict[str, Any] = {}
        knn_accs: dict[str, dict[str, list[float]]] = {}
        shatter_accs: dict[str, list[float]] = {}
        for family in study.families:
            name = f"{image.dataset} {FAMILY_NAMES[family]} K={k}"
            ctx.begin(f"{image.dataset}: {FAMILY_NAMES[family]} K={k} ({study.arch}, {_epochs(image.epochs)})")
            train_cfg = TrainConfig(
                model=ModelConfig(arch=study.arch, latent=family, n_latents=k, input_shape=data.image_shape,
                                  conv_channels=study.conv_channels,
                                  prior_log_rate_init=study.prior_log_rate_init if family == "poisson" else None),
                data=image.dataset, epochs=image.epochs, batch_size=image.batch_size, lr=image.lr,
                weight_decay=image.weight_decay, grad_clip=image.grad_clip, beta=1.0,
                beta_hold_fraction=image.beta_hold_fraction,
                temperature_end=END_TEMPERATURE.get(family, DEFAULT_END_TEMPERATURE),
                max_val_samples=min(len(data.val), MAX_IMAGE_VAL_SAMPLES), eval_every=image.epochs,
                device=cfg.device, seed=cfg.seed)
            model, seconds, reused = train_vae(train_cfg, name, ctx)
            f_knn = encode_features(model, x_knn)
            knn = knn_paper_protocol(f_knn, y_knn, budgets=image.budgets, repeats=study.knn_repeats, seed=cfg.seed,
                                     pool_indices=pool, eval_indices=held)
            shattering = shattering_dimensionality(encode_features(model, x_train), y_train,
                                                   encode_features(model, x_test), y_test,
                                                   max_train_samples=image.shattering_train_samples, seed=cfg.seed)
            knn_accs[family] = {str(n): list(v["accuracies"]) for n, v in knn.items()}
            shatter_accs[family] = list(shattering["accuracies"])
            runs[family] = {"train_seconds": seconds, "reused": reused,
                            "metrics": evaluate_model(model, val_x, seed=cfg.seed), "knn": knn,
                            "shattering": {k_: v for k_, v in shattering.items() if k_ != "splits"}}
        paired: dict[str, Any] = {}
        for other in (f for f in study.families if f != "poisson"):
            paired[other] = {
                "shattering": paired_comparison(shatter_accs["poisson"], shatter_accs[other]),
                "knn": {n: paired_comparison(knn_accs["poisson"][n], knn_accs[other][n])
                        for n in knn_accs["poisson"] if n in knn_accs[other] and len(knn_accs["poisson"][n]) > 1}}
        out["runs"][str(k)] = runs
        out["paired"][str(k)] = paired
    return out


# ----------------------------------------------------------------------------- figures and report


def _figures(results: Mapping[str, Any], tiles: Mapping[str, np.ndarray], out_dir: Path) -> dict[str, str]:
    fig_dir = out_dir / "figures"
    paths: dict[str, Path] = {}
    patches = results.get("patches")
    if patches:
        models = patches["models"]
        ref = patches["reference"]

        def title(name: str, record: Mapping[str, Any]) -> str:
            g = record.get("gabor") or {}
            if not g.get("n_fitted"):
                return f"{name} (no Gabor fits)"
            return (f"{name}: {g['fraction_gabor_like']:.2f} Gabor-like, median R² {g['median_r2']:.2f} "
                    f"({int(g['n_fitted'])} fitted)")

        gvae = "G-VAE lin|lin"
        if gvae in tiles and ref in tiles:
            paths["basis_compare"] = save_basis_comparison(
                [(title(ref, models[ref]), tiles[ref]), (title(gvae, models[gvae]), tiles[gvae])],
                fig_dir / "basis_pvae_vs_gvae.png")
        records = {**models, **patches["sparse_coding"]}
        for name, model_tiles in tiles.items():
            paths[f"basis_grid/{name}"] = save_basis_grid(model_tiles, fig_dir / f"basis_{slug(name)}.png",
                                                          title(name, records[name]))
        r2 = {n: m["gabor_r2"] for n, m in records.items() if m.get("gabor_r2")}
        families = {n: m.get("family") or m["method"] for n, m in records.items()}
        if r2:
            paths["gabor_r2"] = save_gabor_r2(r2, families, GABOR_R2_THRESHOLD, fig_dir / "gabor_r2.png")
        lin = [(n, m) for n, m in models.items() if m["encoder"] == "lin"]
        paths["active"] = save_active_latents(
            [n for n, _ in lin], [m["active"]["fractions"] for _, m in lin],
            {n: c["active"]["fractions"] for n, c in patches["untrained"].items()}, fig_dir / "active_latents.png")
        paths["beta_sweep"] = save_beta_sweep(patches, fig_dir / "beta_sweep.png")
        paths["tradeoff"] = save_tradeoff(patches, fig_dir / "mse_vs_sparsity.png")
    classification = results.get("classification")
    if classification:
        for dataset, study in classification.items():
            paths[f"knn/{dataset}"] = save_knn(dataset, study, fig_dir / f"knn_{slug(dataset)}.png")
        paths["shattering"] = save_shattering(classification, fig_dir / "shattering.png")
    return {k: relative(v, out_dir) for k, v in paths.items()}


def _count_stages(cfg: ReportConfig) -> int:
    n = 1  # figures and report
    if cfg.patches is not None:
        p = cfg.patches
        n += len(p.betas) * p.seeds + len(p.sparse_coding) + 1
        n += len(p.encoders) * (len(p.losses) + len(p.baselines)) - 1  # the reference model is the sweep's
    if cfg.classification is not None:
        c = cfg.classification
        n += len(c.datasets) * len(c.n_latents) * len(c.families)
    return n


def run_report(cfg: ReportConfig, out_dir: Path, fmt: str = "md", progress: bool = True, reuse: bool = False,
               command: str = "pvae-report", log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every study of ``cfg`` and write the report into ``out_dir``; returns the results dict."""
    if fmt not in FORMATS:
        raise ValueError(f"format: unknown {fmt!r}; choose from {FORMATS}")
    device = resolve_device(cfg.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(out_dir=out_dir, device=device, progress=progress, reuse=reuse,
                     total_stages=_count_stages(cfg), started=time.perf_counter())
    if log is not None:
        ctx.log = log
    load_start = os.getloadavg()[0]
    commit = git_commit()  # the code that runs: read at the start, not after hours of edits to the tree
    ctx.log(f"pvae-report {__version__}: mode {cfg.mode} on {device}, {torch.get_num_threads()} torch thread(s), "
            f"load average {load_start:.1f} -> {out_dir}")
    results: dict[str, Any] = {"config": cfg.to_dict(), "deviations": deviations(cfg)}
    tiles: dict[str, np.ndarray] = {}
    if cfg.patches is not None:
        results["patches"], tiles = run_patch_study(cfg.patches, cfg, ctx)
    if cfg.classification is not None:
        results["classification"] = run_classification_study(cfg.classification, cfg, ctx)
    ctx.begin("verdicts, figures and report")
    if tiles:
        arrays: dict[str, Any] = {slug(k): v for k, v in tiles.items()}
        np.savez_compressed(out_dir / BASES, **arrays)
    results["meta"] = {
        "command": command, "mode": cfg.mode, "device": str(device), "cpu_count": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__, "pvae_version": __version__,
        "commit": commit, "load_start": load_start, "load_end": os.getloadavg()[0],
        "wall_seconds": time.perf_counter() - ctx.started,
        "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return write_report(results, tiles, out_dir, fmt, ctx.log)


def write_report(results: dict[str, Any], tiles: Mapping[str, np.ndarray], out_dir: Path, fmt: str,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """Verdicts, figures, ``report.json`` and the document from measured results (the last stage of a run,
    and all of ``--render``)."""
    results = _clean(results)
    verdicts = compute_verdicts(results)
    results["verdicts"] = [v.to_dict() for v in verdicts]
    figures = _figures(results, tiles, out_dir)
    results["meta"]["figures"] = figures
    (out_dir / "report.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    report_path = out_dir / f"report.{fmt}"
    report_path.write_text(render(build_document(results, verdicts, figures), fmt))
    log(f"wrote {report_path}, {out_dir / 'report.json'} and {len(figures)} figures; the run took "
        f"{results['meta']['wall_seconds'] / 60:.1f} min")
    for v in verdicts:
        log(f"  {v.status:>13}  {v.claim}: {v.ours}")
    return results


def render_report(out_dir: Path, fmt: str = "md", log: Callable[[str], None] | None = None,
                  doc: Path | None = None) -> dict[str, Any]:
    """Recompute the verdicts, figures and document of a finished run from its ``report.json`` and
    ``bases.npz`` with this version's code, without training anything (``pvae-report --render DIR``);
    with ``doc``, also write the verdict table between the markers of that Markdown page."""
    page = None
    if doc is not None:
        try:
            page = doc.read_text()
        except OSError as exc:
            raise ConfigError(f"--doc: cannot read {doc}: {exc.strerror or exc}") from None
        if VERDICTS_BEGIN not in page or VERDICTS_END not in page:
            raise ConfigError(f"--doc: {doc} has no verdict markers ({VERDICTS_BEGIN} ... {VERDICTS_END})")
    path = out_dir / "report.json"
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--render: {path} does not exist (run pvae-report first)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--render: cannot read {path}: {exc}") from None
    if not isinstance(results, dict) or "meta" not in results:
        raise ConfigError(f"--render: {path} is not a pvae-report result (no 'meta')")
    tiles: dict[str, np.ndarray] = {}
    if (out_dir / BASES).exists():
        with np.load(out_dir / BASES) as arrays:
            patches = results.get("patches") or {}
            for name in [*patches.get("models", {}), *patches.get("sparse_coding", {})]:
                if slug(name) in arrays:
                    tiles[name] = arrays[slug(name)]
    results["meta"]["rendered"] = {"pvae_version": __version__, "commit": git_commit(),
                                   "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}
    results = write_report(results, tiles, out_dir, fmt,
                           log or (lambda line: print(line, file=sys.stderr, flush=True)))
    if doc is not None and page is not None:
        verdicts = compute_verdicts(results)
        doc.write_text(replace_verdict_block(page, results, verdicts))
    return results


def git_commit() -> str | None:
    """The commit of the source tree this package runs from, if it is a git checkout (else None)."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                prog="pvae-report", description="Train the P-VAE and its baselines, test the "
                                "paper's claims with the paper's protocols and write a report with a computed "
                                "verdict table.")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--quick", action="store_const", dest="preset", const="quick",
                        help="small budgets: under 10 min on a 2-core CPU (indicative numbers)")
    budget.add_argument("--cpu", action="store_const", dest="preset", const="cpu",
                        help="every protocol, budgets sized to <= 90 min on a 2-core CPU (one thread)")
    budget.add_argument("--full", action="store_const", dest="preset", const="full",
                        help="the paper's budgets: a GPU job (the default)")
    budget.add_argument("--smoke", action="store_const", dest="preset", const="smoke",
                        help=argparse.SUPPRESS)  # toy sizes, for tests
    budget.add_argument("--render", type=Path, metavar="DIR",
                        help="recompute the verdicts, figures and document of a finished run in DIR from its "
                        "report.json (no training)")
    p.add_argument("--doc", type=Path, metavar="FILE",
                   help="with --render: write the verdict table between the verdict markers of this Markdown page")
    p.add_argument("--out", type=Path, help="output folder (default: runs/report-<preset>)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: cpu for --quick/--cpu, "
                   "auto for --full)")
    p.add_argument("--format", default="md", choices=FORMATS, help="report format")
    p.add_argument("--seed", type=int, default=0, help="seed of the first model of every kind")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help="torch and BLAS CPU threads (1 is fastest on a shared machine)")
    p.add_argument("--reuse", action="store_true", help="reuse finished model runs in OUT/models with the same config")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (stage lines still print)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("pvae-report", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.doc is not None and args.render is None:
        raise ConfigError("--doc: only with --render DIR")
    if args.render is not None:
        render_report(args.render, fmt=args.format, doc=args.doc)
        return 0
    name = args.preset or "full"
    preset = PRESETS[name]
    cfg = preset(seed=args.seed) if args.device is None else preset(device=args.device, seed=args.seed)
    out = args.out or Path("runs") / f"report-{name}"
    if args.threads < 1:
        raise ConfigError(f"--threads: must be >= 1, got {args.threads}")
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    torch.set_num_threads(args.threads)
    words = list(sys.argv[1:] if argv is None else argv)
    with threadpool_limits(args.threads):  # numpy/scipy BLAS (logistic regressions, kNN, Gabor fits) too
        run_report(cfg, out, fmt=args.format, progress=not args.no_progress, reuse=args.reuse,
                   command=" ".join(["pvae-report", *words]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
