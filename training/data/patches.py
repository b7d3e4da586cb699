"""Step 2 of the data flow: image blocks and patch sampling. :func:`make_patch_split` preprocesses a
set of images (:mod:`.preprocess`), cuts them into blocks split train/validation and samples
patches inside them; pure and deterministic given the config's seed. :mod:`.cache` wraps it with
image sources and an on-disk cache."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from pvae.errors import DataError, InputError
from pvae.training.data.config import PIPELINE_VERSION, PatchConfig
from pvae.training.data.preprocess import preprocess_image

__all__ = ["PatchSplit", "block_grid", "extract_patches", "make_patch_split"]


def block_grid(height: int, width: int, *, block_size: int, border: int, patch_size: int) -> np.ndarray:
    """Tile the usable region of a height x width image (cfg.border pixels in from each edge) with
    block_size x block_size blocks, row-major. Blocks at the far edges may be smaller; those with a
    side below patch_size are dropped.

    Returns (B, 4) int64 rows (top, left, height, width); B may be 0.
    """
    rows = _block_starts_and_sizes(height, block_size, border, patch_size)
    cols = _block_starts_and_sizes(width, block_size, border, patch_size)
    grid = [(top, left, h, w) for top, h in rows for left, w in cols]
    return np.asarray(grid, dtype=np.int64).reshape(-1, 4)


def _block_starts_and_sizes(
    length: int, block_size: int, border: int, patch_size: int
) -> list[tuple[int, int]]:
    end = length - border
    spans = []
    for start in range(border, end, block_size):
        size = min(block_size, end - start)
        if size >= patch_size:
            spans.append((start, size))
    return spans


def _positions_per_block(blocks: np.ndarray, patch_size: int) -> np.ndarray:
    """Number of distinct patch top-left corners inside each (top, left, height, width) block."""
    return (blocks[:, 2] - patch_size + 1) * (blocks[:, 3] - patch_size + 1)


def extract_patches(
    image: np.ndarray,
    n: int,
    *,
    patch_size: int,
    border: int,
    rng: np.random.Generator,
    blocks: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample `n` random patch_size x patch_size patches from a (preprocessed) 2-D image.

    Each patch lies wholly inside one of `blocks` ((B, 4) rows of top, left, height, width; all
    inside the image less `border` pixels at each edge). blocks=None means one block covering that
    whole usable region. Top-left corners are drawn uniformly over every valid corner of every
    block, so blocks contribute in proportion to their area; without replacement when n is at
    most the number of corners, with replacement otherwise.

    Returns patches (n, patch_size**2) float32 (row-major flattening) and their top-left corners
    (n, 2) int64 as (row, col), in sampling order.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(f"expected a 2-D image, got shape {image.shape}")
    height, width = image.shape
    if blocks is None:
        blocks = np.array([[border, border, height - 2 * border, width - 2 * border]], dtype=np.int64)
    blocks = np.asarray(blocks, dtype=np.int64).reshape(-1, 4)
    inside = (
        (blocks[:, 0] >= border)
        & (blocks[:, 1] >= border)
        & (blocks[:, 0] + blocks[:, 2] <= height - border)
        & (blocks[:, 1] + blocks[:, 3] <= width - border)
        & (blocks[:, 2] >= patch_size)
        & (blocks[:, 3] >= patch_size)
    )
    if not inside.all() or len(blocks) == 0:
        raise InputError(
            f"no valid block: each block must hold a {patch_size}x{patch_size} patch inside the "
            f"{height}x{width} image less a {border}-pixel border"
        )
    if n < 0:
        raise InputError(f"n must be >= 0, got {n}")
    counts = _positions_per_block(blocks, patch_size)  # (B,)
    total = int(counts.sum())
    flat = rng.choice(total, size=n, replace=False) if n <= total else rng.integers(0, total, size=n)
    ends = np.cumsum(counts)  # (B,)
    block = np.searchsorted(ends, flat, side="right")  # (n,) which block each corner is in
    local = flat - (ends[block] - counts[block])  # (n,) index inside that block
    corners_per_row = blocks[block, 3] - patch_size + 1
    rows = blocks[block, 0] + local // corners_per_row
    cols = blocks[block, 1] + local % corners_per_row
    windows = np.lib.stride_tricks.sliding_window_view(image, (patch_size, patch_size))
    patches = windows[rows, cols].reshape(n, patch_size * patch_size).astype(np.float32)  # (n, D)
    return patches, np.stack([rows, cols], axis=1).astype(np.int64)


@dataclass(frozen=True, eq=False)
class PatchSplit:
    """Natural-image patches split train/validation by image block.

    Example::

        split = load_natural_patches(PatchConfig(n_patches=5_000))
        split.train.shape                     # (4000, 256)
    """

    train: np.ndarray
    """(N_train, patch_size**2) float32 training patches, in random order."""
    val: np.ndarray
    """(N_val, patch_size**2) float32 validation patches, in random order."""
    meta: dict[str, Any]
    """JSON-ready description: config, source, image names and shapes, counts, cache use."""
    blocks: np.ndarray
    """(B, 5) int64 rows (image index, top, left, height, width) of every block of every image."""
    block_is_val: np.ndarray
    """(B,) bool: True where the block belongs to the validation set."""
    train_origins: np.ndarray
    """(N_train, 3) int64 rows (image index, row, col): top-left corner of each training patch."""
    val_origins: np.ndarray
    """(N_val, 3) int64: the same for validation patches."""

    @property
    def image_shape(self) -> tuple[int, int]:
        """(patch_size, patch_size)."""
        side = int(self.meta["config"]["patch_size"])
        return (side, side)


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Split the integer `total` in proportion to `weights` (largest remainder method)."""
    if total == 0 or weights.sum() == 0:
        return np.zeros(len(weights), dtype=np.int64)
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return counts


def make_patch_split(
    images: Mapping[str, np.ndarray], cfg: PatchConfig, *, progress: bool = False
) -> PatchSplit:
    """Preprocess `images` (name -> 2-D grayscale, uint8 or float in [0, 1]) and sample a train/val
    patch split. Pure (no I/O) and deterministic given cfg.seed.

    Steps: cut every image into blocks (:func:`block_grid`); assign round(val_fraction * B) of all
    B blocks to validation with a seeded permutation (at least one block each way); give
    round(val_fraction * n_patches) patches to validation and the rest to training; share each
    set's patches among images in proportion to the number of patch corners in the image's blocks
    of that set; sample them with :func:`extract_patches` from the preprocessed images; shuffle.
    `meta` gets no cache fields here.
    """
    names = list(images)
    if not names:
        raise DataError("no images to cut patches from")
    shapes = [tuple(int(s) for s in np.shape(images[name])) for name in names]
    for name, shape in zip(names, shapes, strict=True):
        if len(shape) != 2 or min(shape) < cfg.min_image_size:
            raise DataError(
                f"image {name!r} has shape {shape}: need a 2-D image with sides >= {cfg.min_image_size}"
            )
    per_image = [
        block_grid(h, w, block_size=cfg.block_size, border=cfg.border, patch_size=cfg.patch_size)
        for h, w in shapes
    ]
    image_index = np.concatenate([np.full(len(b), i, dtype=np.int64) for i, b in enumerate(per_image)])
    blocks = np.column_stack([image_index, np.concatenate(per_image)])  # (B, 5)
    n_blocks = len(blocks)
    if n_blocks < 2:
        raise DataError(
            f"the images hold {n_blocks} block(s) of {cfg.block_size} pixels: need at least 2 to split "
            "train/val; use more or larger images or a smaller block_size"
        )

    rng = np.random.default_rng(cfg.seed)
    n_val_blocks = min(max(round(cfg.val_fraction * n_blocks), 1), n_blocks - 1)
    block_is_val = np.zeros(n_blocks, dtype=bool)
    block_is_val[rng.permutation(n_blocks)[:n_val_blocks]] = True

    n_val = min(max(round(cfg.val_fraction * cfg.n_patches), 1), cfg.n_patches - 1)
    set_sizes = {"train": cfg.n_patches - n_val, "val": n_val}
    positions = _positions_per_block(blocks[:, 1:], cfg.patch_size)  # (B,)
    per_set: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # set -> (in_set mask (B,), counts (I,))
    for set_name, in_set in (("train", ~block_is_val), ("val", block_is_val)):
        area = np.bincount(blocks[in_set, 0], weights=positions[in_set], minlength=len(names))  # (I,)
        per_set[set_name] = (in_set, _apportion(set_sizes[set_name], area))

    chunks: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    origin_chunks: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    with_replacement = False
    for i, name in enumerate(tqdm(names, desc="natural patches", unit="image", disable=not progress)):
        processed = preprocess_image(images[name], cfg)
        for set_name, (in_set, counts) in per_set.items():
            n_image = int(counts[i])
            if n_image == 0:
                continue
            mine = blocks[in_set & (blocks[:, 0] == i), 1:]
            with_replacement |= n_image > int(_positions_per_block(mine, cfg.patch_size).sum())
            patches, corners = extract_patches(
                processed, n_image, patch_size=cfg.patch_size, border=cfg.border, rng=rng, blocks=mine
            )
            chunks[set_name].append(patches)
            origin_chunks[set_name].append(np.column_stack([np.full(n_image, i, dtype=np.int64), corners]))

    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for set_name in ("train", "val"):
        patches = np.concatenate(chunks[set_name]) if chunks[set_name] else np.zeros((0, cfg.dim), np.float32)
        origins = (
            np.concatenate(origin_chunks[set_name]) if origin_chunks[set_name] else np.zeros((0, 3), np.int64)
        )
        order = rng.permutation(len(patches))
        arrays[set_name] = (np.ascontiguousarray(patches[order]), np.ascontiguousarray(origins[order]))

    meta: dict[str, Any] = {
        "pipeline_version": PIPELINE_VERSION,
        "config": cfg.to_dict(),
        "image_names": names,
        "image_shapes": [list(shape) for shape in shapes],
        "n_train": set_sizes["train"],
        "n_val": set_sizes["val"],
        "n_blocks": n_blocks,
        "n_val_blocks": n_val_blocks,
        "sampled_with_replacement": bool(with_replacement),
    }
    return PatchSplit(
        train=arrays["train"][0],
        val=arrays["val"][0],
        meta=meta,
        blocks=blocks,
        block_is_val=block_is_val,
        train_origins=arrays["train"][1],
        val_origins=arrays["val"][1],
    )

