"""Step 1 of the data flow: kernels, filtering and :func:`preprocess_image`, which turns one grayscale
image into a whitened, contrast-normalised, z-scored image (pure numpy; each step maps onto ONNX
Pad + Conv + elementwise ops, so export rebuilds it as a graph). Patches (:mod:`.patches`) are cut
from its output; served frames go through the same arithmetic whole."""

from __future__ import annotations

import functools

import cv2
import numpy as np

from pvae.errors import ConfigError, InputError
from pvae.training.data.config import PatchConfig

__all__ = [
    "LCN_EPSILON",
    "UINT8_MAX",
    "UINT16_MAX",
    "WHITEN_GRID_SIZE",
    "ZSCORE_EPSILON",
    "filter2d",
    "gaussian_kernel",
    "preprocess_image",
    "whitening_kernel",
    "whitening_response",
]

# Full scale of 8- and 16-bit pixel values: integer images are divided by these to land in [0, 1].
UINT8_MAX = 255.0
UINT16_MAX = 65535.0

# Added to the local-contrast divisor so that a flat image gives 0 rather than 0/0.
LCN_EPSILON = 1e-8
# Added to the per-image standard deviation in the z-score, for the same reason.
ZSCORE_EPSILON = 1e-8

# Side of the frequency grid on which R(f) is sampled before the inverse FFT. Much larger than any
# kernel we crop from it, so the sampled spectrum stands in for the continuous filter.
WHITEN_GRID_SIZE = 256


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
