"""PNG figures: the learned basis vectors and the training curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pvae.training.model import VAE

#: Tiles per row of the basis grid, pixels of padding between tiles, and nearest-upscale factor.
GRID_COLUMNS, GRID_PAD, GRID_UPSCALE = 32, 1, 3


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
