"""Evaluation with the paper's metrics (Vafaii, Galor & Yates, NeurIPS 2024), and the ``pvae-eval`` command.

All numbers use exact samples (temperature 0): integer Poisson spike counts for the P-VAE.

    pvae-eval runs/quick/best.pt --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pvae.cli import run_cli
from pvae.training.knn import KNN_BUDGETS, KNN_NEIGHBORS, knn_paper_protocol
from pvae.training.model import VAE, reconstruction_error

#: Active-latent thresholds on the mean KL per latent (the paper's Figure 5 used about 0.008 for the
#: P-VAE and 0.09 for the G-VAE on patches; docs/reproduction.md, "Numbers"). Other families use the G-VAE value.
ACTIVE_KL_THRESHOLD = {"poisson": 0.008, "gaussian": 0.09, "gaussian-relu": 0.09, "laplace": 0.09,
                       "categorical": 0.09}
#: Few-label classification (docs/reproduction.md, "Geometry"): k of the kNN and the label budgets
#: (the paper's, from :mod:`pvae.training.knn`), and pvae-eval's draws per budget (the paper: 100).
KNN_K = KNN_NEIGHBORS
KNN_LABELS = KNN_BUDGETS
KNN_REPEATS = 5


def sparsity(values: np.ndarray, axis: int) -> np.ndarray:
    """Treves-Rolls sparsity S = (1 - (sum z)^2 / (m sum z^2)) / (1 - 1/m) along ``axis``.

    A unit (or sample) with no activity at all counts as S = 1.
    """
    z = np.asarray(values, dtype=np.float64)
    m = z.shape[axis]
    if m < 2:
        raise ValueError("sparsity needs at least two values along the axis")
    total = z.sum(axis=axis)
    total_sq = (z * z).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = (1.0 - total**2 / (m * total_sq)) / (1.0 - 1.0 / m)
    return np.where(total_sq > 0, s, 1.0)


@torch.no_grad()
def evaluate_model(
    model: VAE, x: Tensor, batch_size: int = 2000, seed: int = 0,
) -> dict[str, float]:
    """mse, mse_map, kl, nelbo, sparsities, active fraction and mean rate on samples ``x`` (N, D)."""
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    mse, mse_map, kl_rows, codes, rates = [], [], [], [], []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].to(device).reshape(-1, model.cfg.input_dim)  # (B, D)
        out = model(xb, temperature=0.0, generator=gen)
        mse.append(reconstruction_error(xb, out.recon.float()))
        # mse_map decodes the posterior mean; the G-VAE+ReLU decodes mu itself, not relu(mu), as the paper does.
        code = out.posterior.params["mu"] if model.cfg.latent == "gaussian-relu" else model.latent.mean(out.posterior)
        mse_map.append(reconstruction_error(xb, model.decode(code).float()))
        kl_rows.append(out.kl)  # (B, K)
        codes.append(out.z.cpu())
        if "rate" in out.posterior.params:
            rates.append(out.posterior.params["rate"].cpu())
    kl = torch.cat(kl_rows)  # (N, K)
    # Sparsity is defined on activity magnitudes; signed codes (G-/L-VAE) use |z| (Poisson counts are >= 0).
    z = np.abs(torch.cat(codes).numpy())  # (N, K)
    threshold = ACTIVE_KL_THRESHOLD[model.cfg.latent]
    metrics: dict[str, float] = {
        "n_samples": float(x.shape[0]),
        "mse": torch.cat(mse).mean().item(),
        "mse_map": torch.cat(mse_map).mean().item(),
        "kl": kl.sum(-1).mean().item(),
    }
    metrics["nelbo"] = metrics["mse"] + metrics["kl"]
    metrics["active_fraction"] = (kl.mean(0) > threshold).float().mean().item()
    metrics["active_kl_threshold"] = threshold
    if z.shape[0] > 1:
        metrics["lifetime_sparsity"] = float(sparsity(z, axis=0).mean())
    if z.shape[1] > 1:
        metrics["population_sparsity"] = float(sparsity(z, axis=1).mean())
    if rates:
        metrics["mean_rate"] = torch.cat(rates).mean().item()
        metrics["mean_spikes_per_sample"] = float(z.sum(1).mean())
    return metrics


@torch.no_grad()
def encode_features(model: VAE, x: Tensor, batch_size: int = 2000) -> np.ndarray:
    """Classification features (log lambda for the P-VAE, mu for G/L-VAE, logits for C-VAE)."""
    device = next(model.parameters()).device
    feats = [model.latent.features(model.encode(x[i:i + batch_size].to(device))).float().cpu()
             for i in range(0, x.shape[0], batch_size)]
    return torch.cat(feats).numpy()


def knn_few_label(
    features: np.ndarray, labels: np.ndarray, budgets: Sequence[int] = KNN_LABELS,
    repeats: int = KNN_REPEATS, seed: int = 0,
) -> dict[str, dict[str, float]]:
    """pvae-eval's few-label kNN: the paper's protocol (:func:`pvae.training.knn.knn_paper_protocol`) on
    the evaluated split. The first half of the samples is the labelled pool and the second half is
    scored. N below the pool size is drawn ``repeats`` times, N equal to it uses the pool once, and a
    larger N is skipped. Returns mean, std and 95% CI half-width (Student t) per N, and the number of draws."""
    half = len(labels) // 2
    if half < 1:
        return {}
    scored = knn_paper_protocol(features, labels, budgets=budgets, repeats=repeats, seed=seed, pool_size=half)
    return {n: {"mean": r["mean"], "std": r["std"], "ci95": r["ci95"], "repeats": float(r["repeats"])}
            for n, r in scored.items()}


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="pvae-eval", description="Evaluate a pvae checkpoint on its "
                                "validation data with the paper's metrics (exact Poisson counts).")
    p.add_argument("checkpoint", nargs="?", help="checkpoint file (default: the bundled model)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--out", type=Path, help="also write the metrics JSON to this file")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--max-samples", type=int, default=20_000, help="validation samples to use")
    p.add_argument("--seed", type=int, default=0, help="seed of the exact Poisson samples")
    p.add_argument("--photos", nargs="?", const="held-out", metavar="DIR",
                   help="also score whole photos the model never trained on (mse_map against the all-zeros "
                        "predictor, per photo, with contrast-stretched and black-and-white versions): the built-in "
                        "held-out set (scikit-learn's, matplotlib's and scikit-image's clock), or every image in DIR")
    p.add_argument("--gabor", action="store_true",
                   help="also fit a 2-D Gabor to every active basis vector (linear decoders; ~20 s for K=512) and "
                        "report the Gabor-like fraction (R^2 >= 0.5, narrow envelope; training/gabor.py)")
    p.add_argument("--active", action="store_true",
                   help="also count active latents by every criterion (usage with mean and zero ablation, the paper's "
                        "Table 2 and Figure 5 rules; training/active_latents.py), next to an untrained model of the "
                        "same configuration")
    p.add_argument("--data", help="evaluate on this dataset instead of the checkpoint's own (natural patches are "
                   "then sampled with the default patch count, so every checkpoint sees the same ones)")
    return p


def evaluate_checkpoint(path: str | Path | None, device: str = "auto", max_samples: int = 20_000,
                        seed: int = 0, data: str | None = None, photos: str | None = None,
                        gabor: bool = False, active: bool = False) -> dict[str, Any]:
    from pvae.errors import ConfigError
    from pvae.training.checkpoint import build_model, default_model_path, load_checkpoint
    from pvae.training.config import TrainConfig
    from pvae.training.data import PatchConfig, load_dataset
    from pvae.training.device import resolve_device
    from pvae.training.train import load_training_data

    ckpt = load_checkpoint(path if path is not None else default_model_path())
    dev = resolve_device(device)
    model = build_model(ckpt, dev)
    stored = ckpt.data.get("preprocessing") if isinstance(ckpt.data, dict) else None
    if data is None and stored:
        # The checkpoint's own validation split, preprocessed exactly as it was in training (not with
        # today's defaults): whitening, normalisation, patch count and seed all come from the checkpoint.
        dataset = load_dataset(ckpt.train_config.data, PatchConfig.from_dict(stored))
    elif data is None:
        dataset = load_training_data(ckpt.train_config)
    else:
        # A named dataset is always read with the default preprocessing and sampling (not the
        # checkpoint's own), so that every checkpoint evaluated with the same --data sees the same samples.
        dataset = load_training_data(dataclasses.replace(ckpt.train_config, data=data,
                                                         n_patches=TrainConfig().n_patches))
    if tuple(dataset.image_shape) != tuple(ckpt.model_config.input_shape):
        raise ConfigError(f"--data: {dataset.name} holds {dataset.image_shape[0]}x{dataset.image_shape[1]} inputs, "
                          f"but the model takes {ckpt.model_config.input_shape[0]}x{ckpt.model_config.input_shape[1]}")
    val = torch.as_tensor(dataset.val[:max_samples])
    report: dict[str, Any] = {"checkpoint": str(ckpt.path), "data": dataset.name, "n_val_samples": int(val.shape[0]),
                              "model": ckpt.model_config.arch, "latent": ckpt.model_config.latent,
                              "n_latents": ckpt.model_config.n_latents}
    report["metrics"] = evaluate_model(model, val, seed=seed)
    if gabor:
        report["gabor"] = _gabor_summary(model, val)
    if active:
        from pvae.training.active_latents import active_latent_summary

        summary = active_latent_summary(model, val.to(dev), seed=seed)
        report["active"] = {"fractions": summary["fractions"], "untrained_fractions": summary["untrained_fractions"]}
    if photos is not None:
        report["photos"] = _photo_scores(model, stored, None if photos == "held-out" else photos)
    labels = dataset.val_labels
    if labels is not None:
        feats = encode_features(model, torch.as_tensor(dataset.val))
        report["knn"] = knn_few_label(feats, np.asarray(labels), seed=seed)
    return report


def _gabor_summary(model: VAE, val: Tensor) -> dict[str, Any]:
    from pvae.errors import ConfigError
    from pvae.training.gabor import fit_gabors, summarise_gabor_fits
    from pvae.training.plots import basis_vectors

    if not isinstance(model.decoder, torch.nn.Linear) or model.cfg.input_shape[0] < 4:
        raise ConfigError("--gabor: Gabor fits need a linear decoder on image patches")
    with torch.no_grad():
        tiles, kl = basis_vectors(model, val.to(next(model.parameters()).device))
    active = int((kl > ACTIVE_KL_THRESHOLD[model.cfg.latent]).sum())
    summary: dict[str, Any] = {"n_active": active, **summarise_gabor_fits(fit_gabors(tiles[:active]))}
    return summary


def _photo_scores(model: VAE, preprocessing: dict[str, Any] | None, folder: str | None) -> dict[str, Any]:
    from pvae.errors import ConfigError
    from pvae.training.data import PatchConfig
    from pvae.training.photos import evaluate_photos, held_out_photos

    if not preprocessing:
        raise ConfigError("--photos: this checkpoint was not trained on natural patches (no preprocessing to apply)")
    scores = evaluate_photos(model, PatchConfig.from_dict(preprocessing), held_out_photos(folder))
    ratios = [s["ratio"] for s in scores.values()]
    return {"source": folder or "held-out", "worst_ratio": max(ratios), "median_ratio": float(np.median(ratios)),
            "per_photo": scores}


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("pvae-eval", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    report = evaluate_checkpoint(args.checkpoint, args.device, args.max_samples, args.seed, args.data, args.photos,
                                 args.gabor, args.active)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.json:
        print(text)
    else:
        print(f"{report['checkpoint']}  ({report['model']} {report['latent']} K={report['n_latents']}, "
              f"data {report['data']})")
        for key, value in report["metrics"].items():
            print(f"  {key:24s} {value:.6g}")
        if "gabor" in report:
            g = report["gabor"]
            print(f"  gabor-like fraction      {g['fraction_gabor_like']:.3f} of {g['n_active']} active basis vectors "
                  f"(median R^2 {g['median_r2']:.3f})")
        if "active" in report:
            a = report["active"]
            for key, value in a["fractions"].items():
                untrained = a["untrained_fractions"].get(key)
                print(f"  active ({key}){'':{max(0, 15 - len(key))}s} " + ("—" if value is None else f"{value:.3f}")
                      + ("" if untrained is None else f"   (untrained: {untrained:.3f})"))
        if "photos" in report:
            print(f"  photos ({report['photos']['source']}): mse_map / all-zeros per photo")
            for name, score in report["photos"]["per_photo"].items():
                print(f"    {name:24s} {score['mse_map']:9.1f} / {score['zeros']:7.1f} = {score['ratio']:.3f}")
        for n, acc in report.get("knn", {}).items():
            print(f"  knn@{n:<20s} {acc['mean']:.4f} ± {acc['ci95']:.4f}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
