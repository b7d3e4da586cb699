"""Training data: natural image patches and small labelled image datasets.

The natural-patch pipeline follows the "Data" section of ``docs/pvae-model.md``::

    grayscale image in [0, 1]
      -> whitening       filter2d with a finite spatial kernel realising R(f) = f exp(-(f/f0)^4)
      -> local contrast  m = G*x, s = sqrt(G*(x - m)^2), x = (x - m) / max(s, mean(s))
      -> z-score         (x - mean) / (std + eps), over the whole image
      -> patches         random patch_size x patch_size crops, away from a `border`, inside
                         block_size x block_size blocks that are split train/val

Every step of :func:`preprocess_image` is a 2-D correlation with reflect-101 borders, an
elementwise op or a whole-image mean, so that an ONNX frame graph can rebuild it exactly from
Pad(mode="reflect") + Conv + elementwise ops + ReduceMean (numpy ``mode="reflect"``, ONNX
``mode="reflect"`` and ``cv2.BORDER_REFLECT_101`` are the same border rule). Keep the two in sync:
any change to the arithmetic here must bump :data:`PIPELINE_VERSION`.

Usage::

    cfg = PatchConfig(n_patches=20_000)
    data = load_dataset("patches", cfg)          # or "fashion-mnist", "digits", a folder, a video
    x_train = data.train                          # (N, 256) float32
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import json
import logging
import math
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from tqdm import tqdm

from pvae.errors import ConfigError, DataError, InputError, MissingDependencyError
from pvae.paths import default_cache_dir

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_FASHION_MNIST_ROOT",
    "DEFAULT_MAX_FRAMES",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "PIPELINE_VERSION",
    "SKIMAGE_IMAGES",
    "Dataset",
    "ImageDataset",
    "PatchConfig",
    "PatchSplit",
    "block_grid",
    "default_cache_dir",
    "extract_patches",
    "filter2d",
    "gaussian_kernel",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_images",
    "load_natural_patches",
    "load_skimage_images",
    "make_patch_split",
    "preprocess_image",
    "to_grayscale",
    "whitening_kernel",
    "whitening_response",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

# Bump whenever the arithmetic of preprocessing, block splitting or patch sampling changes: it is
# part of the cache key, and export/serving record it next to the preprocessing they rebuild.
PIPELINE_VERSION = 2  # 2: the z-score divides by max(std, zscore_floor)

# ITU-R BT.601 luma weights for R, G, B. OpenCV uses the same weights for COLOR_BGR2GRAY and for
# cv2.imread(..., IMREAD_GRAYSCALE), so skimage images, user images and served frames all agree.
# (skimage.color.rgb2gray uses the BT.709 weights 0.2125/0.7154/0.0721 instead; we do not.)
LUMA_WEIGHTS_BT601 = (0.299, 0.587, 0.114)

# Full scale of 8- and 16-bit pixel values: integer images are divided by these to land in [0, 1].
UINT8_MAX = 255.0
UINT16_MAX = 65535.0

# Added to the local-contrast divisor so that a flat image gives 0 rather than 0/0.
LCN_EPSILON = 1e-8
# Added to the per-image standard deviation in the z-score, for the same reason.
ZSCORE_EPSILON = 1e-8
# Default floor of the z-score's divisor. After local contrast normalisation the training photographs
# have a standard deviation of 0.51-0.84 (all above it, so their patches are unchanged), while clipped
# black-and-white pictures fall to 0.28-0.46; a plain z-score would amplify those up to 3.6x, far
# outside the training range (patch energies up to 3,400 against at most ~1,000 in training).
ZSCORE_FLOOR = 0.5

# Side of the frequency grid on which R(f) is sampled before the inverse FFT. Much larger than any
# kernel we crop from it, so the sampled spectrum stands in for the continuous filter.
WHITEN_GRID_SIZE = 256

# At most this many frames are sampled (evenly) from a video source.
DEFAULT_MAX_FRAMES = 100

# File suffixes (lower case) that a folder source reads as images; cv2.imread decodes all of them.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}
)

# Natural-scene photographs bundled with scikit-image (no download needed), as name -> loader.
# Excluded: text/binary/synthetic images (page, text, horse, checkerboard, binary_blobs, logo,
# colorwheel, shepp_logan_phantom), microscopy/medical/astronomy images whose statistics are not
# those of natural scenes (cell, immunohistochemistry, microaneurysms, retina, hubble_deep_field),
# a motion-blurred photo (clock), a duplicate (cat is chelsea), 25x25 faces (lfw_subset) and every
# image that skimage fetches over the network with pooch (eagle, lily, skin, brain, kidney, vortex,
# cells3d, human_mitosis, ...), since nothing may be downloaded at run time.
_SKIMAGE_LOADERS: dict[str, Callable[[Any], np.ndarray]] = {
    "astronaut": lambda data: data.astronaut(),
    "brick": lambda data: data.brick(),
    "camera": lambda data: data.camera(),
    "chelsea": lambda data: data.chelsea(),
    "coffee": lambda data: data.coffee(),
    "coins": lambda data: data.coins(),
    "grass": lambda data: data.grass(),
    "gravel": lambda data: data.gravel(),
    "moon": lambda data: data.moon(),
    "motorcycle_left": lambda data: data.stereo_motorcycle()[0],
    "rocket": lambda data: data.rocket(),
}
SKIMAGE_IMAGES: tuple[str, ...] = tuple(_SKIMAGE_LOADERS)

# Fashion-MNIST as installed by the Debian package dataset-fashion-mnist.
DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
_FASHION_MNIST_DEBIAN_HINT = (
    "install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
)
# (images file, labels file, number of examples) of the standard split (Xiao et al. 2017).
_FASHION_MNIST_SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}
FASHION_MNIST_SHAPE = (28, 28)
FASHION_MNIST_CLASSES = 10
# IDX magic numbers: two zero bytes, type code 0x08 (unsigned byte), number of dimensions.
IDX_LABELS_MAGIC = 0x00000801
IDX_IMAGES_MAGIC = 0x00000803

# sklearn's digits are 8x8 images with integer values 0..16.
DIGITS_SHAPE = (8, 8)
DIGITS_MAX_VALUE = 16.0
# Fraction of the digits held out as the test split.
DIGITS_TEST_FRACTION = 0.2

# Names that load_dataset understands besides a filesystem path.
DATASET_NAMES = ("patches", "fashion-mnist", "digits")

DatasetKind = Literal["patches", "images"]


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_odd(name: str, value: object, minimum: int) -> None:
    _check_int(name, value, minimum)
    assert isinstance(value, int)
    if value % 2 == 0:
        raise ConfigError(f"{name} must be odd (a centred kernel), got {value}")


def _check_float(name: str, value: object, low: float, high: float, *, inclusive_high: bool) -> None:
    number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    # NaN fails both comparisons, so wrong types and NaN are rejected with out-of-range values.
    if not (low < number < high or (inclusive_high and number == high)):
        bracket = "]" if inclusive_high else ")"
        raise ConfigError(f"{name} must be a number in ({low}, {high}{bracket}, got {value!r}")


@dataclass(frozen=True)
class PatchConfig:
    """How natural images become training patches. Plain data, validated on construction.

    Example::

        cfg = PatchConfig(n_patches=20_000, seed=1)
        same = PatchConfig.from_dict(cfg.to_dict())   # checkpoints store cfg.to_dict()
    """

    patch_size: int = 16
    """Side of a square patch in pixels; a patch is flattened to patch_size**2 values."""
    whiten_f0: float = 0.4
    """Scale f0 of the whitening filter R(f) = f exp(-(f/f0)^4), in cycles/pixel; in (0, 2]. 0.4 is
    Olshausen & Field's (1996) cut-off (200 cycles per 512-pixel picture) and the usual choice of
    whitening code; 0.5 (our first default) keeps 2x the power at Nyquist, mostly noise and JPEG
    artefacts, and measured 19 nats worse NELBO at equal steps (README, "Data")."""
    whiten_size: int = 15
    """Odd side of the spatial kernel that realises the whitening filter, in pixels."""
    lcn_size: int = 13
    """Odd side of the Gaussian window of local contrast normalisation, in pixels."""
    lcn_sigma: float = 2.0
    """Standard deviation of that Gaussian window, in pixels; > 0."""
    border: int = 4
    """Pixels at each image edge that no patch may touch (reflect-padding artefacts live there)."""
    n_patches: int = 100_000
    """Total number of patches, train plus validation; >= 2."""
    val_fraction: float = 0.2
    """Fraction of patches (and, approximately, of image blocks) held out for validation; in (0, 1)."""
    block_size: int = 64
    """Images are cut into block_size x block_size blocks, each wholly train or wholly validation;
    every patch lies inside one block, so block_size >= patch_size."""
    seed: int = 0
    """Seed of the block split and of patch sampling; >= 0."""
    zscore_floor: float = ZSCORE_FLOOR
    """The per-image z-score divides by max(std, zscore_floor): an image with little contrast after
    local normalisation (a clipped, black-and-white or mostly flat picture) is not amplified by more
    than 1/zscore_floor. 0 is a plain z-score (checkpoints made before this field existed)."""

    def __post_init__(self) -> None:
        _check_int("patch_size", self.patch_size, 2)
        _check_float("whiten_f0", self.whiten_f0, 0.0, 2.0, inclusive_high=True)
        _check_odd("whiten_size", self.whiten_size, 1)
        _check_odd("lcn_size", self.lcn_size, 1)
        _check_float("lcn_sigma", self.lcn_sigma, 0.0, float("inf"), inclusive_high=False)
        _check_int("border", self.border, 0)
        _check_int("n_patches", self.n_patches, 2)
        _check_float("val_fraction", self.val_fraction, 0.0, 1.0, inclusive_high=False)
        _check_int("block_size", self.block_size, self.patch_size)
        _check_int("seed", self.seed, 0)
        if not (isinstance(self.zscore_floor, int | float) and 0.0 <= self.zscore_floor <= 10.0):
            raise ConfigError(f"zscore_floor must be in [0, 10], got {self.zscore_floor!r}")
        # Store floats as floats, so that PatchConfig(lcn_sigma=2) and PatchConfig(lcn_sigma=2.0)
        # compare, serialise and hash (cache key) identically.
        for name in ("whiten_f0", "lcn_sigma", "val_fraction", "zscore_floor"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def dim(self) -> int:
        """Number of values in one flattened patch."""
        return self.patch_size * self.patch_size

    @property
    def min_image_size(self) -> int:
        """Smallest image side the pipeline accepts: one patch plus its borders, and more than the
        half-width of each kernel (reflect padding needs the image to be wider than the pad)."""
        half_kernel = max(self.whiten_size, self.lcn_size) // 2
        return max(self.patch_size + 2 * self.border, half_kernel + 1)

    def to_dict(self) -> dict[str, int | float]:
        """A JSON-ready dict of every field; :meth:`from_dict` inverts it exactly."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PatchConfig:
        """Rebuild a config from :meth:`to_dict` output. Unknown keys are a :class:`ConfigError`;
        missing keys take their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown PatchConfig field(s) {unknown}; known fields are {sorted(known)}")
        # Configs written before zscore_floor existed used a plain z-score: keep them exactly as they were.
        return cls(**{"zscore_floor": 0.0, **dict(data)})


# --------------------------------------------------------------------------------------------
# Kernels and filtering (pure numpy; each maps onto ONNX Pad + Conv)
# --------------------------------------------------------------------------------------------


def whitening_response(frequency: np.ndarray, f0: float) -> np.ndarray:
    """The whitening filter's gain R(f) = f exp(-(f/f0)^4) at radial frequency f (cycles/pixel).

    R rises linearly (undoing the 1/f amplitude spectrum of natural images) and is cut off above
    f0 to suppress noise; its peak is at f = f0 / 4**0.25. Olshausen & Field (1996).
    """
    f = np.asarray(frequency, dtype=np.float64)
    return f * np.exp(-((f / f0) ** 4))


def whitening_kernel(f0: float, size: int) -> np.ndarray:
    """A size x size spatial kernel (float64, odd size) whose frequency response approximates R(f).

    Construction: sample R on a WHITEN_GRID_SIZE^2 discrete frequency grid (f = |(fx, fy)|), take
    the real inverse FFT, centre it and crop the central size x size window. R is real and
    radially symmetric, so the kernel is real and point-symmetric (correlation == convolution).

    Normalisation: the mean of the cropped kernel is subtracted so that its DC gain is exactly 0
    (cropping leaks a little DC), then the kernel is scaled so that the peak of its frequency
    response magnitude is exactly 1. Local contrast normalisation follows, so the overall scale
    only matters relative to the epsilons.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size % 2 == 0:
        raise ConfigError(f"whiten_size must be an odd int >= 1, got {size!r}")
    if not f0 > 0:
        raise ConfigError(f"whiten_f0 must be > 0, got {f0!r}")
    return _whitening_kernel_cached(float(f0), size).copy()


@functools.lru_cache(maxsize=16)
def _whitening_kernel_cached(f0: float, size: int) -> np.ndarray:
    grid = max(WHITEN_GRID_SIZE, 4 * size)
    freqs = np.fft.fftfreq(grid)  # cycles/pixel, in [-0.5, 0.5)
    radial = np.hypot(freqs[:, None], freqs[None, :])  # (grid, grid)
    full = np.fft.fftshift(np.fft.ifft2(whitening_response(radial, f0)).real)  # tap 0 at grid//2
    centre, half = grid // 2, size // 2
    kernel = full[centre - half : centre + half + 1, centre - half : centre + half + 1].copy()
    kernel -= kernel.mean()  # exact zero DC gain
    peak_gain = np.abs(np.fft.fft2(kernel, s=(grid, grid))).max()
    if peak_gain > 0:  # a 1x1 kernel minus its mean is 0: leave it at 0
        kernel /= peak_gain
    kernel.setflags(write=False)
    return kernel


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """A size x size Gaussian window (float64, odd size) with standard deviation sigma pixels,
    normalised to sum to 1."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size % 2 == 0:
        raise ConfigError(f"lcn_size must be an odd int >= 1, got {size!r}")
    if not sigma > 0:
        raise ConfigError(f"lcn_sigma must be > 0, got {sigma!r}")
    offsets = np.arange(size, dtype=np.float64) - size // 2
    profile = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = np.outer(profile, profile)
    return kernel / kernel.sum()


def filter2d(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D correlation of `image` with an odd-sized `kernel`, reflect-101 borders, same output size.

    out[i, j] = sum_{u, v} kernel[u, v] * padded[i + u, j + v], where `padded` is the image padded
    by kernel.shape // 2 with numpy mode="reflect" (= ONNX Pad mode="reflect" =
    cv2.BORDER_REFLECT_101). That is exactly ONNX Conv (which correlates) after that Pad.
    Computed in float64 (the kernel is not flipped: cv2.filter2D correlates too).
    """
    image = np.asarray(image, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    if image.ndim != 2 or kernel.ndim != 2:
        raise InputError(f"filter2d needs 2-D image and kernel, got shapes {image.shape} and {kernel.shape}")
    if kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise InputError(f"filter2d needs an odd-sized kernel, got shape {kernel.shape}")
    pad_rows, pad_cols = kernel.shape[0] // 2, kernel.shape[1] // 2
    if image.shape[0] <= pad_rows or image.shape[1] <= pad_cols:
        raise InputError(
            f"image of shape {image.shape} is too small for a {kernel.shape} kernel with reflect borders"
        )
    return cv2.filter2D(image, cv2.CV_64F, kernel, borderType=cv2.BORDER_REFLECT_101)


def _as_unit_float(image: np.ndarray) -> np.ndarray:
    """A 2-D image as float64 in [0, 1]: uint8 / 255, uint16 / 65535, floats unchanged."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(f"expected a 2-D grayscale image, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float64) / UINT8_MAX
    if image.dtype == np.uint16:
        return image.astype(np.float64) / UINT16_MAX
    if not np.issubdtype(image.dtype, np.floating):
        raise InputError(f"expected a uint8, uint16 or float image, got dtype {image.dtype}")
    out = image.astype(np.float64)
    if not np.isfinite(out).all():
        raise InputError("image contains NaN or infinite values")
    return out


def preprocess_image(image: np.ndarray, cfg: PatchConfig) -> np.ndarray:
    """Whiten, contrast-normalise and z-score one grayscale image; returns float32, same shape.

    `image` is 2-D: floats are taken to be in [0, 1]; uint8 is divided by 255 (uint16 by 65535).
    All arithmetic is float64 with reflect-101 borders; no border is cropped here (patch
    extraction avoids cfg.border pixels; served frames are processed whole).

    0. Centre: x = image - mean(image). The whitening kernel has zero DC gain, so this changes
       nothing mathematically; it keeps a float32 graph (and a flat image) free of cancellation
       error: a flat image maps to exact zeros.
    1. Whitening: x = filter2d(x, whitening_kernel(cfg.whiten_f0, cfg.whiten_size)).
    2. Local contrast normalisation (Jarrett et al. 2009), G = gaussian_kernel(lcn_size, lcn_sigma):
       m = G*x; s = sqrt(max(G*(x - m)^2, 0)); x = (x - m) / (max(s, mean(s)) + LCN_EPSILON),
       where mean(s) is the scalar mean of s over the image. G*(x - m)^2 (not G*x^2 - m^2) avoids
       cancellation; the max(., 0) only absorbs filtering round-off.
    3. Z-score over the image: x = (x - mean(x)) / (max(std(x), cfg.zscore_floor) + ZSCORE_EPSILON),
       std with ddof=0, i.e. sqrt(mean((x - mean(x))^2)); the floor keeps low-contrast images from
       being amplified beyond the training range.
    """
    x = _as_unit_float(image)
    if min(x.shape) < cfg.min_image_size:
        raise InputError(f"image of shape {x.shape} is smaller than the minimum side {cfg.min_image_size}")
    # 0. centre (exact no-op through the zero-DC whitening kernel, but avoids cancellation)
    x = x - x.mean()
    # 1. whitening
    x = filter2d(x, _whitening_kernel_cached(cfg.whiten_f0, cfg.whiten_size))
    # 2. local contrast normalisation
    window = gaussian_kernel(cfg.lcn_size, cfg.lcn_sigma)
    local_mean = filter2d(x, window)
    centred = x - local_mean
    local_std = np.sqrt(np.maximum(filter2d(centred * centred, window), 0.0))
    x = centred / (np.maximum(local_std, local_std.mean()) + LCN_EPSILON)
    # 3. per-image z-score
    x = x - x.mean()
    x = x / (max(float(np.sqrt(np.mean(x * x))), cfg.zscore_floor) + ZSCORE_EPSILON)
    return x.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Blocks and patches
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Image sources
# --------------------------------------------------------------------------------------------


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """An image as 2-D float32 in [0, 1]. RGB(A) is converted with the BT.601 luma weights
    (LUMA_WEIGHTS_BT601, channels in R, G, B order; alpha ignored); uint8 / 255, uint16 / 65535,
    bool -> {0, 1}, floats are assumed to be in [0, 1] already."""
    image = np.asarray(image)
    if image.dtype == np.bool_:
        image = image.astype(np.float64)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        scale = {np.dtype(np.uint8): UINT8_MAX, np.dtype(np.uint16): UINT16_MAX}.get(image.dtype, 1.0)
        gray = image[..., :3].astype(np.float64) @ np.asarray(LUMA_WEIGHTS_BT601) / scale
    elif image.ndim == 2:
        gray = _as_unit_float(image)
    else:
        raise InputError(f"expected a 2-D gray or (H, W, 3|4) colour image, got shape {image.shape}")
    return gray.astype(np.float32)


def load_skimage_images() -> dict[str, np.ndarray]:
    """The bundled scikit-image photographs of :data:`SKIMAGE_IMAGES` as float32 gray in [0, 1]."""
    try:
        import skimage.data as skimage_data
    except ImportError as error:
        raise MissingDependencyError(
            "the default natural images come from scikit-image: pip install 'pvae[train]'"
        ) from error
    images = {}
    for name, loader in _SKIMAGE_LOADERS.items():
        try:
            images[name] = to_grayscale(loader(skimage_data))
        except (ImportError, OSError, ValueError) as error:  # a build of skimage without the file
            raise DataError(f"scikit-image's bundled image {name!r} could not be loaded: {error}") from error
    return images


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _folder_images(root: Path) -> list[Path]:
    """Image files under `root`, recursively, sorted by their path relative to root."""
    files = [
        p
        for p in root.rglob("*")
        if _is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read_gray(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)  # BT.601 luma, uint8
    if image is None:
        raise DataError(f"cannot read image {path}: unreadable or not an image")
    return image


def _frame_to_gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame
    code = cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY  # BT.601 luma
    return cv2.cvtColor(frame, code)


def _even_picks(count: int, wanted: int) -> np.ndarray:
    """Up to `wanted` evenly spaced indices in range(count), first and last included."""
    return np.unique(np.linspace(0, count - 1, min(count, wanted)).round().astype(np.int64))


def _read_video(path: Path, max_frames: int) -> dict[str, np.ndarray]:
    """Up to max_frames frames, evenly spaced over the video, as uint8 gray, named frame_NNNNNN."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise DataError(f"cannot open video {path}: unreadable or unsupported format")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        kept: list[tuple[int, np.ndarray]] = []
        if count > 0:
            wanted = set(_even_picks(count, max_frames).tolist())
            for index in range(count):
                if not capture.grab():
                    break  # the container over-reported its length
                if index in wanted:
                    ok, frame = capture.retrieve()
                    if ok and frame is not None:
                        kept.append((index, _frame_to_gray(frame)))
        else:
            # Unknown length: keep every stride-th frame, halving the kept set and doubling the
            # stride whenever it exceeds 2 * max_frames, so memory stays bounded; pick evenly after.
            stride, index = 1, 0
            while True:
                ok, frame = capture.read()
                if not ok or frame is None:
                    break
                if index % stride == 0:
                    kept.append((index, _frame_to_gray(frame)))
                    if len(kept) > 2 * max_frames:
                        kept, stride = kept[::2], stride * 2
                index += 1
            kept = [kept[i] for i in _even_picks(len(kept), max_frames)] if kept else []
    finally:
        capture.release()
    if not kept:
        raise DataError(f"no frames could be decoded from video {path}")
    return {f"frame_{index:06d}": frame for index, frame in kept}


def _check_min_size(images: Mapping[str, np.ndarray], min_size: int, where: Path) -> None:
    for name, image in images.items():
        if min(image.shape[:2]) < min_size:
            raise DataError(
                f"image {name!r} in {where} is {image.shape[0]}x{image.shape[1]}: each side must be "
                f">= {min_size} (one patch plus its border, and wider than the filter kernels)"
            )


def load_images(
    path: str | Path, *, max_frames: int = DEFAULT_MAX_FRAMES, min_size: int = 1
) -> dict[str, np.ndarray]:
    """Grayscale uint8 images (as decoded by OpenCV, BT.601 luma) from a folder, an image or a video.

    - folder: every file with an image suffix (IMAGE_EXTENSIONS), recursively, hidden files
      skipped, sorted by relative path; keys are the relative POSIX paths.
    - a file with an image suffix: that one image, keyed by its file name.
    - any other file: read as a video (cv2.VideoCapture); up to max_frames frames evenly spaced
      over it, keyed frame_NNNNNN by frame index.

    Raises :class:`DataError` naming the path for a missing path, a folder without images, an
    unreadable image or video, or an image with a side below min_size.
    """
    path = Path(path).expanduser()
    if not isinstance(max_frames, int) or max_frames < 1:
        raise ConfigError(f"max_frames must be an int >= 1, got {max_frames!r}")
    if not path.exists():
        raise DataError(f"image source not found: {path} (expected an image folder or a video file)")
    if path.is_dir():
        files = _folder_images(path)
        if not files:
            suffixes = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise DataError(f"no images found in folder {path} (looked for {suffixes})")
        images = {p.relative_to(path).as_posix(): _read_gray(p) for p in files}
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        images = {path.name: _read_gray(path)}
    else:
        images = _read_video(path, max_frames)
    _check_min_size(images, min_size, path)
    return images


def _source_fingerprint(source: str | Path | None, max_frames: int) -> tuple[str, dict[str, Any]]:
    """(label, JSON-ready fingerprint) of an image source, without decoding any image: names,
    sizes and mtimes for files; the skimage version and image names for the default source."""
    if source is None:
        try:
            skimage_version = metadata.version("scikit-image")
        except metadata.PackageNotFoundError as error:
            raise MissingDependencyError(
                "the default natural images come from scikit-image: pip install 'pvae[train]'"
            ) from error
        return "skimage", {"kind": "skimage", "version": skimage_version, "images": list(SKIMAGE_IMAGES)}
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"image source not found: {path} (expected an image folder or a video file)")
    if path.is_dir():
        files = _folder_images(path)
        if not files:
            raise DataError(f"no images found in folder {path}")
        listing = [[p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
        return str(path), {"kind": "folder", "files": listing}
    stat = path.stat()
    kind = "image" if path.suffix.lower() in IMAGE_EXTENSIONS else "video"
    fingerprint: dict[str, Any] = {"kind": kind, "file": [path.name, stat.st_size, stat.st_mtime_ns]}
    if kind == "video":
        fingerprint["max_frames"] = max_frames
    return str(path), fingerprint


# --------------------------------------------------------------------------------------------
# Natural patches with an on-disk cache
# --------------------------------------------------------------------------------------------


def _cache_key(cfg: PatchConfig, fingerprint: Mapping[str, Any]) -> str:
    payload = {"pipeline_version": PIPELINE_VERSION, "config": cfg.to_dict(), "source": fingerprint}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


_CACHE_ARRAYS = ("train", "val", "blocks", "block_is_val", "train_origins", "val_origins")
# Failures that a damaged .npz can cause while loading; each means "rebuild", never "crash".
_CORRUPT_CACHE_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error)


def _read_cache(path: Path, key: str, cfg: PatchConfig) -> PatchSplit | None:
    """The cached split at `path`, or None when absent, corrupt or written for another key."""
    if not path.is_file():
        return None
    try:
        # Open the file ourselves: np.load(path) leaks its handle when the archive is damaged.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            arrays = {name: np.array(archive[name]) for name in _CACHE_ARRAYS}
            meta = json.loads(str(archive["meta"]))
        consistent = (
            meta.get("cache_key") == key
            and arrays["train"].dtype == np.float32
            and arrays["val"].dtype == np.float32
            and arrays["train"].shape == (meta["n_train"], cfg.dim)
            and arrays["val"].shape == (meta["n_val"], cfg.dim)
            and arrays["train_origins"].shape == (meta["n_train"], 3)
            and arrays["val_origins"].shape == (meta["n_val"], 3)
            and arrays["blocks"].shape == (len(arrays["block_is_val"]), 5)
            and bool(np.isfinite(arrays["train"]).all() and np.isfinite(arrays["val"]).all())
        )
    except _CORRUPT_CACHE_ERRORS as error:
        logger.warning("ignoring unreadable patch cache %s (%s); rebuilding", path, error)
        return None
    if not consistent:
        logger.warning("ignoring inconsistent patch cache %s; rebuilding", path)
        return None
    meta.update(cache_hit=True, cache_path=str(path))
    return PatchSplit(meta=meta, **arrays)


def _write_cache(path: Path, split: PatchSplit) -> None:
    """Write atomically (temp file + rename); a failure is logged, never raised."""
    temp_name: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.stem, suffix=".tmp", delete=False) as f:
            temp_name = f.name
            stored_meta = {k: v for k, v in split.meta.items() if k not in ("cache_hit", "cache_path")}
            np.savez(
                f,
                meta=np.array(json.dumps(stored_meta)),
                **{name: getattr(split, name) for name in _CACHE_ARRAYS},
            )
        os.replace(temp_name, path)
        temp_name = None
    except OSError as error:
        logger.warning("could not write patch cache %s: %s", path, error)
    finally:
        if temp_name is not None:
            Path(temp_name).unlink(missing_ok=True)


def load_natural_patches(
    cfg: PatchConfig,
    source: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    *,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> PatchSplit:
    """Natural-image patches split train/val by block (see :func:`make_patch_split`), cached.

    source=None uses scikit-image's bundled photographs (:data:`SKIMAGE_IMAGES`); otherwise a
    folder of images, one image or a video (:func:`load_images`). The result is cached as .npz
    under cache_dir (default :func:`default_cache_dir`), keyed by a sha256 of PIPELINE_VERSION,
    cfg.to_dict() and a fingerprint of the source (file names, sizes and mtimes; or the skimage
    version and image names). A corrupt or foreign cache file is ignored and rewritten.
    meta["cache_hit"] says whether the cache answered and meta["cache_path"] where it lives.
    """
    label, fingerprint = _source_fingerprint(source, max_frames)
    key = _cache_key(cfg, fingerprint)
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = directory / f"natural-patches-{key[:32]}.npz"
    cached = _read_cache(path, key, cfg)
    if cached is not None:
        return cached

    if source is None:
        images = load_skimage_images()
    else:
        images = load_images(source, max_frames=max_frames, min_size=cfg.min_image_size)
    split = make_patch_split(images, cfg, progress=progress)
    split.meta.update(source=label, source_kind=fingerprint["kind"], cache_key=key)
    _write_cache(path, split)
    split.meta.update(cache_hit=False, cache_path=str(path))
    return split


# --------------------------------------------------------------------------------------------
# Labelled image datasets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image dataset with a train/test split, images flattened row-major.

    Example::

        data = load_digits()
        data.x_train.shape, data.image_shape        # (1437, 64), (8, 8)
    """

    x_train: np.ndarray
    """(N_train, H*W) float32 in [0, 1]."""
    y_train: np.ndarray
    """(N_train,) int64 class labels."""
    x_test: np.ndarray
    """(N_test, H*W) float32 in [0, 1]."""
    y_test: np.ndarray
    """(N_test,) int64 class labels."""
    image_shape: tuple[int, int]
    """(H, W) of one image."""
    name: str
    """Dataset name, e.g. "fashion-mnist"."""


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """One gzipped IDX file (LeCun's MNIST format: big-endian header, then uint8 data) as uint8."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"cannot read {path}: truncated or not gzip ({error})") from error
    header = 4 + 4 * ndim  # magic, then one uint32 per dimension
    if len(raw) < header:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, shorter than the IDX header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path} has IDX magic number {found:#010x}, expected {magic:#010x}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(f"{path} holds {len(raw) - header} data bytes, expected {expected} for shape {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_fashion_mnist(root: str | Path = DEFAULT_FASHION_MNIST_ROOT) -> ImageDataset:
    """Fashion-MNIST (Xiao et al. 2017) from its four gzipped IDX files under `root`: 60000 train
    and 10000 test 28x28 images scaled to [0, 1], labels 0..9. Read with numpy only; magic
    numbers, shapes, sizes and label range are checked (a bad file is a :class:`DataError`)."""
    root = Path(root).expanduser()
    names = [name for images, labels, _ in _FASHION_MNIST_SPLITS.values() for name in (images, labels)]
    missing = [name for name in names if not (root / name).is_file()]
    if missing:
        raise DataError(
            f"Fashion-MNIST not found at {root} (missing {', '.join(missing)}): {_FASHION_MNIST_DEBIAN_HINT}"
        )
    arrays: dict[str, np.ndarray] = {}
    for split, (images_file, labels_file, count) in _FASHION_MNIST_SPLITS.items():
        labels = _read_idx(root / labels_file, IDX_LABELS_MAGIC, 1)
        images = _read_idx(root / images_file, IDX_IMAGES_MAGIC, 3)
        if labels.shape != (count,) or images.shape != (count, *FASHION_MNIST_SHAPE):
            raise DataError(
                f"Fashion-MNIST {split} split at {root} has images {images.shape} and labels {labels.shape}, "
                f"expected ({count}, 28, 28) and ({count},)"
            )
        if labels.max() >= FASHION_MNIST_CLASSES:
            raise DataError(f"{root / labels_file} has label {labels.max()}, expected 0..9")
        arrays[f"x_{split}"] = (images.reshape(count, -1) / np.float32(UINT8_MAX)).astype(np.float32)
        arrays[f"y_{split}"] = labels.astype(np.int64)
    return ImageDataset(image_shape=FASHION_MNIST_SHAPE, name="fashion-mnist", **arrays)


def load_digits(seed: int = 0) -> ImageDataset:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16 scaled to [0, 1]), split
    80/20 train/test, stratified by class, with `seed` fixing the split."""
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise MissingDependencyError(
            "the digits dataset comes from scikit-learn: pip install 'pvae[train]'"
        ) from error
    bunch = sklearn_load_digits()
    x = (bunch.data / DIGITS_MAX_VALUE).astype(np.float32)  # (1797, 64)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, random_state=seed, stratify=y
    )
    return ImageDataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        image_shape=DIGITS_SHAPE,
        name="digits",
    )


# --------------------------------------------------------------------------------------------
# One entry point for the training loop
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """What the training loop consumes: flattened train/val arrays and the image shape.

    Example::

        data = load_dataset("digits", PatchConfig())
        data.train.shape, data.image_shape          # (1437, 64), (8, 8)
    """

    train: np.ndarray
    """(N_train, D) float32 training inputs."""
    val: np.ndarray
    """(N_val, D) float32 validation inputs (the test split for labelled datasets)."""
    image_shape: tuple[int, int]
    """(H, W) with H * W == D."""
    name: str
    """The name load_dataset was called with ("patches", "digits", a path, ...)."""
    kind: DatasetKind
    """"patches" (natural-image patches, z-scored) or "images" (labelled images in [0, 1])."""
    train_labels: np.ndarray | None = None
    """(N_train,) int64 labels, or None for patches."""
    val_labels: np.ndarray | None = None
    """(N_val,) int64 labels, or None for patches."""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Provenance (for patches: :attr:`PatchSplit.meta`)."""

    @property
    def dim(self) -> int:
        """Number of values in one input."""
        return self.image_shape[0] * self.image_shape[1]


def _from_patches(split: PatchSplit, name: str) -> Dataset:
    return Dataset(
        train=split.train,
        val=split.val,
        image_shape=split.image_shape,
        name=name,
        kind="patches",
        meta=split.meta,
    )


def _from_images(data: ImageDataset) -> Dataset:
    return Dataset(
        train=data.x_train,
        val=data.x_test,
        image_shape=data.image_shape,
        name=data.name,
        kind="images",
        train_labels=data.y_train,
        val_labels=data.y_test,
        meta={"name": data.name, "n_train": len(data.x_train), "n_val": len(data.x_test)},
    )


def load_dataset(
    name: str,
    cfg: PatchConfig,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    fashion_mnist_root: str | Path = DEFAULT_FASHION_MNIST_ROOT,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> Dataset:
    """Load a training dataset by name.

    - "patches": natural patches from scikit-image's bundled photographs (cfg applies).
    - "fashion-mnist": :func:`load_fashion_mnist` (val = the standard test split).
    - "digits": :func:`load_digits` with cfg.seed fixing the split (val = the test split).
    - anything else is a path to an image folder, an image or a video: natural patches from it.
    """
    if name == "patches":
        return _from_patches(load_natural_patches(cfg, None, cache_dir, progress), name)
    if name == "fashion-mnist":
        return _from_images(load_fashion_mnist(fashion_mnist_root))
    if name == "digits":
        return _from_images(load_digits(cfg.seed))
    if not Path(name).expanduser().exists():
        raise DataError(
            f"unknown dataset {name!r}: expected one of {', '.join(DATASET_NAMES)} "
            "or an existing image folder / video path"
        )
    split = load_natural_patches(cfg, name, cache_dir, progress, max_frames=max_frames)
    return _from_patches(split, name)
