"""``pvae-report``: train the model zoo, measure the paper's claims, write a report with a verdict table.

    pvae-report --quick --out runs/report-quick          # <= 20 min on a 2-core CPU
    pvae-report --out runs/report --device cuda          # the paper's schedules (GPU)

Data flow: config (``report_config``) -> train and evaluate the patch study (P-VAE beta sweep, G/L/C-VAE
and G-VAE+ReLU baselines, LCA/ISTA sparse coding, LCA on the P-VAE's dictionary) and the labelled-image
study (few-label kNN, shattering) -> verdicts (``report_verdict``, computed from the numbers) ->
figures (``report_figures``) -> document (``report_document``). The output directory holds
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
from pvae.training.checkpoint import build_model, load_checkpoint
from pvae.training.config import ModelConfig, TrainConfig
from pvae.training.data import PatchConfig, load_dataset
from pvae.training.device import resolve_device
from pvae.training.evaluate import ACTIVE_KL_THRESHOLD, encode_features, evaluate_model, knn_few_label, sparsity
from pvae.training.gabor import GABOR_R2_THRESHOLD, fit_gabors, summarise_gabor_fits
from pvae.training.model import VAE
from pvae.training.plots import basis_vectors
from pvae.training.report_config import (
    ClassificationStudy,
    ImageStudy,
    PatchStudy,
    ReportConfig,
    deviations,
    full_config,
    quick_config,
    smoke_config,
)
from pvae.training.report_document import FORMATS, build_document, relative, render
from pvae.training.report_figures import (
    save_active_latents,
    save_basis_comparison,
    save_basis_grid,
    save_gabor_r2,
    save_knn,
    save_shattering,
    save_tradeoff,
)
from pvae.training.report_verdict import FAMILY_NAMES, compute_verdicts
from pvae.training.shattering import shattering_dimensionality
from pvae.training.sparse_coding import SparseCodingConfig, encode, evaluate_codes, lca_infer, learn_dictionary
from pvae.training.train import BEST, LAST, LOG, Trainer

__all__ = [
    "DEFAULT_THREADS",
    "RunContext",
    "amortisation_gap",
    "main",
    "match_at_sparsity",
    "ppca_active_fraction",
    "run_classification_study",
    "run_patch_study",
    "run_report",
    "slug",
    "train_vae",
]

#: torch intra-op and BLAS threads. On a shared 2-core machine, two threads that spin-wait for each other
#: are many times slower than one (measured at load ~10: a lin|lin K=512 training step took 50 ms on one
#: thread and 1.7 s on two; 30 logistic regressions took 0.28 s on one BLAS thread and 3.4 s on two).
DEFAULT_THREADS = 1
#: Temperature at the end of annealing: 0.05 for the Poisson relaxation, 0.1 for Gumbel-softmax
#: (pvae-model.md, "Relaxed Poisson sampling" and "Baselines").
END_TEMPERATURE = {"categorical": 0.1}
DEFAULT_END_TEMPERATURE = 0.05
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


@torch.no_grad()
def _evaluate_patch_model(model: VAE, val_x: torch.Tensor, n_gabor: int, seed: int) -> tuple[dict[str, Any],
                                                                                           np.ndarray]:
    metrics = evaluate_model(model, val_x, seed=seed)
    gen = torch.Generator(device=val_x.device).manual_seed(seed)
    z = model(val_x, temperature=0.0, generator=gen).z.abs().cpu().numpy()  # (N, K) exact sample magnitudes
    tiles, kl = basis_vectors(model, val_x)  # (K, h, w), largest KL first
    n_active = int((kl > ACTIVE_KL_THRESHOLD[model.cfg.latent]).sum())
    fits = fit_gabors(tiles[:min(n_gabor, n_active)])
    record = {"family": model.cfg.latent, "metrics": metrics,
              "magnitude_lifetime_sparsity": float(sparsity(z, axis=0).mean()),
              "n_active_filters": n_active, "gabor": summarise_gabor_fits(fits),
              "gabor_r2": [f.r2 for f in fits], "gabor_fits": [f.to_dict() for f in fits]}
    return record, tiles


def _patch_train_config(study: PatchStudy, family: str, beta: float, cfg: ReportConfig) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(arch="lin|lin", latent=family, n_latents=study.n_latents, init_std=study.init_std),
        data="patches", n_patches=study.n_patches, epochs=study.epochs, batch_size=study.batch_size, lr=study.lr,
        beta=beta, beta_hold_fraction=0.0,  # c = 0 for linear decoders (pvae-model.md)
        temperature_end=END_TEMPERATURE.get(family, DEFAULT_END_TEMPERATURE),
        max_val_samples=study.max_val_samples, eval_every=study.epochs, device=cfg.device, seed=cfg.seed,
    )


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
    runs = [(f"P-VAE β={b:g}", "poisson", b) for b in study.betas]
    runs += [(FAMILY_NAMES[f], f, study.reference_beta) for f in study.baselines]
    results["reference"] = f"P-VAE β={study.reference_beta:g}"
    reference_model: VAE | None = None
    for name, family, beta in runs:
        ctx.begin(f"patches: {name} (lin|lin, K={study.n_latents}, {_epochs(study.epochs)})")
        model, seconds, reused = train_vae(_patch_train_config(study, family, beta, cfg), name, ctx)
        # Gabor fits (the slow part of evaluation) for the models the claims compare: the reference P-VAE
        # and the baselines; the other betas of the sweep only need mse_map and sparsity.
        n_gabor = study.gabor_filters if family != "poisson" or name == results["reference"] else 0
        record, tiles[name] = _evaluate_patch_model(model, val_x, n_gabor, cfg.seed)
        results["models"][name] = {"beta": beta, "train_seconds": seconds, "reused": reused, **record}
        if name == results["reference"]:
            reference_model = model
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
        results["sparse_coding"][name] = {
            "method": method, "lam": lam, "train_seconds": time.perf_counter() - start,
            "metrics": evaluate_codes(xs, learned.dictionary, codes), "history": learned.history,
            "gabor": summarise_gabor_fits(fits), "gabor_r2": [f.r2 for f in fits]}
        tiles[name] = sc_tiles
    assert reference_model is not None  # PatchStudy checks that reference_beta is one of the betas
    ctx.begin(f"patches: amortisation gap (LCA on {results['reference']}'s dictionary)")
    results["amortisation"] = {"model": results["reference"], **amortisation_gap(
        reference_model, val_x[:study.amortisation_samples], study.amortisation_lambdas, study.sc_eval_iterations,
        cfg.seed)}
    results["beta_sweep"] = [
        {"beta": results["models"][n]["beta"], "model": n, "mse_map": results["models"][n]["metrics"]["mse_map"],
         "lifetime_sparsity": results["models"][n]["metrics"]["lifetime_sparsity"],
         "population_sparsity": results["models"][n]["metrics"]["population_sparsity"]}
        for n, family, _ in runs if family == "poisson"]
    return results, tiles


# ----------------------------------------------------------------------------- classification study


def run_classification_study(study: ClassificationStudy, cfg: ReportConfig, ctx: RunContext) -> dict[str, Any]:
    """Train every (dataset, K, family) model; few-label kNN and shattering on its features."""
    results: dict[str, Any] = {}
    for image_study in study.datasets:
        results[image_study.dataset] = _run_image_study(image_study, study, cfg, ctx)
    return results


def _run_image_study(image: ImageStudy, study: ClassificationStudy, cfg: ReportConfig,
                     ctx: RunContext) -> dict[str, Any]:
    data = load_dataset(image.dataset, PatchConfig())
    assert data.train_labels is not None and data.val_labels is not None  # labelled datasets only
    if image.evaluate_on == "all":
        x_eval = np.concatenate([data.train, data.val])
        y_eval = np.concatenate([data.train_labels, data.val_labels])
    else:
        x_eval, y_eval = data.val, data.val_labels
    val_x = torch.as_tensor(data.val[:MAX_IMAGE_VAL_SAMPLES]).to(ctx.device)
    out: dict[str, Any] = {"budgets": list(image.budgets), "arch": study.arch, "epochs": image.epochs,
                           "evaluate_on": image.evaluate_on, "n_eval": len(y_eval), "runs": {}}
    for k in study.n_latents:
        out["runs"][str(k)] = {}
        for family in study.families:
            name = f"{image.dataset} {FAMILY_NAMES[family]} K={k}"
            ctx.begin(f"{image.dataset}: {FAMILY_NAMES[family]} K={k} ({study.arch}, {_epochs(image.epochs)})")
            train_cfg = TrainConfig(
                model=ModelConfig(arch=study.arch, latent=family, n_latents=k, input_shape=data.image_shape),
                data=image.dataset, epochs=image.epochs, batch_size=image.batch_size, lr=image.lr,
                weight_decay=image.weight_decay, grad_clip=image.grad_clip, beta=1.0,
                beta_hold_fraction=image.beta_hold_fraction,
                temperature_end=END_TEMPERATURE.get(family, DEFAULT_END_TEMPERATURE),
                max_val_samples=min(len(data.val), MAX_IMAGE_VAL_SAMPLES), eval_every=image.epochs,
                device=cfg.device, seed=cfg.seed)
            model, seconds, reused = train_vae(train_cfg, name, ctx)
            features = encode_features(model, torch.as_tensor(x_eval))
            out["runs"][str(k)][family] = {
                "train_seconds": seconds, "reused": reused,
                "metrics": evaluate_model(model, val_x, seed=cfg.seed),
                "knn": knn_few_label(features, y_eval, image.budgets, study.knn_repeats, cfg.seed),
                "shattering": shattering_dimensionality(features, y_eval, study.shattering_max_splits,
                                                        study.shattering_max_samples, cfg.seed),
            }
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
            g = record["gabor"]
            if not g["n_fitted"]:
                return f"{name} (no Gabor fits)"
            return (f"{name}: {g['fraction_gabor_like']:.2f} Gabor-like, median R² {g['median_r2']:.2f} "
                    f"({int(g['n_fitted'])} fitted)")

        if "G-VAE" in models:
            paths["basis_compare"] = save_basis_comparison(
                [(title(ref, models[ref]), tiles[ref]), (title("G-VAE", models["G-VAE"]), tiles["G-VAE"])],
                fig_dir / "basis_pvae_vs_gvae.png")
        for name, record in list(models.items()) + list(patches["sparse_coding"].items()):
            paths[f"basis_grid/{name}"] = save_basis_grid(tiles[name], fig_dir / f"basis_{slug(name)}.png",
                                                          title(name, record))
        r2 = {n: m["gabor_r2"] for n, m in models.items() if m["gabor_r2"]}
        r2.update({n: m["gabor_r2"] for n, m in patches["sparse_coding"].items()})
        families = {n: m["family"] for n, m in models.items()}
        families.update({n: m["method"] for n, m in patches["sparse_coding"].items()})
        paths["gabor_r2"] = save_gabor_r2(r2, families, GABOR_R2_THRESHOLD, fig_dir / "gabor_r2.png")
        paths["active"] = save_active_latents(list(models), [m["metrics"]["active_fraction"] for m in models.values()],
                                              [m["family"] for m in models.values()], fig_dir / "active_latents.png")
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
        n += len(p.betas) + len(p.baselines) + len(p.sparse_coding) + 1
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
    ctx.log(f"pvae-report {__version__}: mode {cfg.mode} on {device}, {torch.get_num_threads()} torch thread(s), "
            f"load average {load_start:.1f} -> {out_dir}")
    results: dict[str, Any] = {"config": cfg.to_dict(), "deviations": deviations(cfg)}
    tiles: dict[str, np.ndarray] = {}
    if cfg.patches is not None:
        results["patches"], tiles = run_patch_study(cfg.patches, cfg, ctx)
    if cfg.classification is not None:
        results["classification"] = run_classification_study(cfg.classification, cfg, ctx)
    ctx.begin("verdicts, figures and report")
    verdicts = compute_verdicts(results)
    results["verdicts"] = [v.to_dict() for v in verdicts]
    figures = _figures(results, tiles, out_dir)
    if tiles:
        arrays: dict[str, Any] = {slug(k): v for k, v in tiles.items()}
        np.savez_compressed(out_dir / "bases.npz", **arrays)
    results["meta"] = {
        "command": command, "mode": cfg.mode, "device": str(device), "cpu_count": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__, "pvae_version": __version__,
        "load_start": load_start, "load_end": os.getloadavg()[0],
        "wall_seconds": time.perf_counter() - ctx.started,
        "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "figures": figures,
    }
    results = _clean(results)
    (out_dir / "report.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    document = render(build_document(results, verdicts, figures), fmt)
    report_path = out_dir / f"report.{fmt}"
    report_path.write_text(document)
    ctx.log(f"wrote {report_path}, {out_dir / 'report.json'} and {len(figures)} figures in "
            f"{results['meta']['wall_seconds'] / 60:.1f} min")
    for v in verdicts:
        ctx.log(f"  {v.status:>13}  {v.claim}: {v.ours}")
    return results


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                prog="pvae-report", description="Train the P-VAE and its baselines, test the "
                                "paper's claims and write a report with a computed verdict table.")
    p.add_argument("--quick", action="store_true", help="shortened schedules: <= 20 min on a 2-core CPU")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # toy sizes, for tests
    p.add_argument("--out", type=Path, help="output folder (default: runs/report-quick or runs/report)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--format", default="md", choices=FORMATS, help="report format")
    p.add_argument("--seed", type=int, default=0, help="seed of every model, draw and split")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help="torch and BLAS CPU threads (1 is fastest on a shared machine)")
    p.add_argument("--reuse", action="store_true", help="reuse finished model runs in OUT/models with the same config")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (stage lines still print)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("pvae-report", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    preset = smoke_config if args.smoke else quick_config if args.quick else full_config
    cfg = preset(device=args.device, seed=args.seed)
    out = args.out or Path("runs") / ("report-quick" if args.quick or args.smoke else "report")
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
