"""Held-out photographs: how well a model reconstructs whole photos it never trained on.

The training patches come from scikit-image's bundled photographs (``data.SKIMAGE_IMAGES``). The
photos here are none of those: scikit-learn's two sample photos (china, flower), matplotlib's
grace_hopper, and scikit-image's motion-blurred ``clock`` (excluded from training for its blur).
Each is also scored in two harsher versions that a webcam produces in bad light:

- ``-contrast``: contrast x4 about mid-grey, clipped to [0, 1] (blown highlights, crushed shadows);
- ``-bw``: thresholded at its median (a clipped, black-and-white picture).

A photo is preprocessed whole (as a served frame is), cut into non-overlapping patches away from
the preprocessing border, and scored with ``mse_map`` (the rates decoded instead of a sample) against
the all-zeros predictor (the mean patch energy). ``ratio`` = mse_map / zeros; below 1 the model
explains part of the photo, above 1 it adds more error than it removes.

    >>> scores = evaluate_photos(model, PatchConfig())      # {name: {"mse_map":..., "zeros":..., "ratio":...}}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pvae.errors import DataError
from pvae.training.data import PatchConfig, load_images, preprocess_image, to_grayscale
from pvae.training.model import VAE, reconstruction_error

__all__ = ["CONTRAST_GAIN", "evaluate_photos", "held_out_photos", "photo_patches"]

#: Gain of the "-contrast" stress version (about mid-grey), before clipping to [0, 1].
CONTRAST_GAIN = 4.0


def _base_photos() -> dict[str, np.ndarray]:
    """The held-out photographs as float32 gray in [0, 1] (bundled with installed packages)."""
    photos: dict[str, np.ndarray] = {}
    try:
        from sklearn.datasets import load_sample_image

        for name in ("china", "flower"):
            photos[name] = to_grayscale(load_sample_image(f"{name}.jpg"))
    except (ImportError, OSError) as error:
        raise DataError(f"scikit-learn's sample photos could not be loaded: {error}") from error
    try:
        import cv2
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise OSError(f"{path} is missing or unreadable")
        photos["grace_hopper"] = to_grayscale(image)
    except (ImportError, OSError, ValueError) as error:
        raise DataError(f"matplotlib's sample photo grace_hopper could not be loaded: {error}") from error
    try:
        import skimage.data

        photos["clock"] = to_grayscale(skimage.data.clock())
    except (ImportError, OSError, ValueError) as error:
        raise DataError(f"scikit-image's clock photo could not be loaded: {error}") from error
    return photos


def held_out_photos(folder: str | Path | None = None, stress: bool = True) -> dict[str, np.ndarray]:
    """name -> float32 gray photo in [0, 1]: the built-in held-out set, or every image in ``folder``;
    with ``stress``, each also as ``-contrast`` and ``-bw`` versions."""
    base = _base_photos() if folder is None else {k: to_grayscale(v) for k, v in load_images(folder).items()}
    photos: dict[str, np.ndarray] = {}
    for name, gray in base.items():
        photos[name] = gray
        if stress:
            photos[f"{name}-contrast"] = np.clip(0.5 + CONTRAST_GAIN * (gray - 0.5), 0.0, 1.0).astype(np.float32)
            photos[f"{name}-bw"] = (gray > np.median(gray)).astype(np.float32)
    return photos


def photo_patches(photo: np.ndarray, cfg: PatchConfig) -> np.ndarray:
    """A whole photo preprocessed as one frame, cut into non-overlapping patches inside the border:
    (N, patch_size**2) float32."""
    pre = preprocess_image(photo, cfg)  # (H, W)
    p, b = cfg.patch_size, cfg.border
    inner = pre[b:pre.shape[0] - b, b:pre.shape[1] - b]
    rows, cols = inner.shape[0] // p, inner.shape[1] // p
    if rows == 0 or cols == 0:
        raise DataError(f"photo of shape {photo.shape} holds no {p}x{p} patch inside its {b}-pixel border")
    tiles = inner[:rows * p, :cols * p].reshape(rows, p, cols, p).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(tiles.reshape(rows * cols, p * p))


@torch.no_grad()
def evaluate_photos(model: VAE, cfg: PatchConfig, photos: Mapping[str, np.ndarray] | None = None,
                    batch_size: int = 4096) -> dict[str, dict[str, Any]]:
    """Per photo: patches, mse_map, the zeros predictor's error and their ratio."""
    model.eval()
    device = next(model.parameters()).device
    scores: dict[str, dict[str, Any]] = {}
    for name, photo in (photos if photos is not None else held_out_photos()).items():
        x = torch.as_tensor(photo_patches(photo, cfg))
        errors = []
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(device)
            recon = model.decode(model.latent.mean(model.encode(xb))).float()
            errors.append(reconstruction_error(xb, recon).cpu())
        mse_map = torch.cat(errors).mean().item()
        zeros = x.pow(2).sum(-1).mean().item()
        scores[name] = {"shape": list(photo.shape), "patches": int(x.shape[0]), "mse_map": mse_map,
                        "zeros": zeros, "ratio": mse_map / zeros if zeros > 0 else float("nan")}
    return scores
