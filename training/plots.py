"""PNG figures: the learned basis vectors and the training curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pvae.training.model import VAE

#: Tiles per row of the basis grid, pixels of padding between tiles, and nearest-upscale factor.
GRID_COLUMNS, GRID_PAD, GRID_UPSCALE = 32, 1, 3


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display on servers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig: Any, axes: Any, xlabel: str, path: Path) -> Path:
    """Label, legend and grid every panel of a curves figure, write it as a PNG and close it."""
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


def tile_grid(tiles: np.ndarray, columns: int = GRID_COLUMNS, pad: int = GRID_PAD) -> np.ndarray:
    """(N, h, w) float tiles -> one uint8 image, each tile scaled symmetrically around 0 (gray = 0)."""
    n, h, w = tiles.shape
    rows = int(np.ceil(n / columns))
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad), 64, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        scale = np.abs(tile).max() or 1.0
        img = np.clip(127.5 + 127.5 * tile / scale, 0, 255).astype(np.uint8)
        r, c = divmod(i, columns)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return grid


@torch.no_grad()
def basis_vectors(model: VAE, val_x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Basis vectors (K, h, w) ordered by mean KL on ``val_x`` (largest first), and those KLs.

    Linear decoders: the dictionary columns. Others: decode(e_k) - decode(0).
    """
    model.eval()
    kl = model.latent.kl(model.encode(val_x[:5000])).mean(0).float().cpu().numpy()  # (K,)
    order = np.argsort(-kl)
    h, w = model.cfg.input_shape
    if isinstance(model.decoder, torch.nn.Linear):
        phi = model.dictionary.detach().float().cpu().numpy().T  # (K, D)
    else:
        k = model.cfg.n_latents
        device = next(model.parameters()).device
        eye = torch.eye(k, device=device)
        phi = (model.decode(eye) - model.decode(torch.zeros(1, k, device=device))).float().cpu().numpy()
    return phi[order].reshape(-1, h, w), kl[order]


def save_basis_png(model: VAE, val_x: torch.Tensor, path: Path) -> Path:
    import cv2

    tiles, _ = basis_vectors(model, val_x)
    grid = tile_grid(tiles)
    grid = cv2.resize(grid, None, fx=GRID_UPSCALE, fy=GRID_UPSCALE, interpolation=cv2.INTER_NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), grid):
        raise OSError(f"could not write {path}")
    return path


def save_curves_png(history: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [h["mse"] for h in history], label="train mse (relaxed)")
    val = [h for h in history if "val_mse" in h]
    axes[0].plot([h["epoch"] for h in val], [h["val_mse"] for h in val], label="val mse (exact counts)")
    axes[0].plot([h["epoch"] for h in val], [h["val_mse_map"] for h in val], label="val mse_map")
    axes[0].set_ylabel("sum squared error")
    axes[1].plot(epochs, [h["kl"] for h in history], label="train kl")
    axes[1].plot([h["epoch"] for h in val], [h["val_kl"] for h in val], label="val kl")
    axes[1].set_ylabel("KL (nats)")
    axes[2].plot(epochs, [h["temperature"] for h in history], label="temperature")
    axes[2].plot(epochs, [h["beta"] for h in history], label="beta")
    axes[2].plot(epochs, [h["lr"] / max(1e-12, max(x["lr"] for x in history)) for h in history],
                 label="lr / peak")
    return _finish(fig, axes, "epoch", path)


def save_escape_png(runs: dict[str, Path], path: Path) -> Path:
    """Runs side by side over training steps: the median prior log-rate (with its quartiles),
    validation lifetime sparsity and mse_map, from each run's metrics.jsonl. Shows whether and when
    a run leaves its starting prior."""
    import json

    fig, axes = pyplot().subplots(1, 3, figsize=(14, 3.8))
    for label, run in runs.items():
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        prior = [r for r in rows if "prior_log_rate_median" in r]
        steps = [r["step"] for r in prior]
        line = axes[0].plot(steps, [r["prior_log_rate_median"] for r in prior], label=label)[0]
        axes[0].fill_between(steps, [r["prior_log_rate_q25"] for r in prior], [r["prior_log_rate_q75"] for r in prior],
                             color=line.get_color(), alpha=0.2)
        val = [r for r in rows if "val_mse_map" in r]
        axes[1].plot([r["step"] for r in val], [r["val_lifetime_sparsity"] for r in val], label=label)
        axes[2].plot([r["step"] for r in val], [r["val_mse_map"] for r in val], label=label)
    axes[0].set_ylabel("prior log-rate: median (quartiles shaded)")
    axes[1].set_ylabel("validation lifetime sparsity")
    axes[2].set_ylabel("validation mse_map")
    return _finish(fig, axes, "step (batches of 1000 patches)", path)


def _main(argv: list[str] | None = None) -> int:
    """python -m pvae.training.plots escape OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]"""
    import argparse

    from pvae.errors import DataError

    parser = argparse.ArgumentParser(prog="python -m pvae.training.plots", allow_abbrev=False,
                                     description="Compare training runs: prior log-rate, lifetime sparsity, mse_map.")
    parser.add_argument("figure", choices=["escape"])
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    args = parser.parse_args(argv)
    runs: dict[str, Path] = {}
    for item in args.runs:
        label, sep, folder = item.partition("=")
        if not sep or not (Path(folder) / "metrics.jsonl").is_file():
            raise DataError(f"{item}: expected LABEL=RUN_DIR with RUN_DIR/metrics.jsonl")
        runs[label] = Path(folder)
    print(save_escape_png(runs, args.out))
    return 0


if __name__ == "__main__":
    import sys

    from pvae.cli import run_cli

    sys.exit(run_cli("pvae.training.plots", lambda argv: _main(list(argv) if argv else None), sys.argv[1:]))
