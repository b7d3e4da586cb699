"""How fast this host is, measured against the machine where the real-time targets were set.

The absolute targets of the real-time work (preprocessing <= 5 ms, the frame graph <= 8 ms, one VGA
stream >= 50 fps with p50 <= 30 ms, ...) were set on a 2-core machine where OpenCV did the training
preprocessing of one VGA frame in ``OPENCV_REFERENCE_MS``. The same OpenCV work, timed in the same run
as a benchmark, tells how much slower or faster this host is; benchmarks print their figures scaled by
it beside the figures as measured (pvae-bench-export, pvae-bench-serve).

    >>> run = opencv_preprocess(cfg); run(frame)              # (480, 640) float32 model-space frame
    >>> host_speed(cfg).factor                                # this host's time over the reference machine's
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pvae.training.data.config import PatchConfig
from pvae.training.data.preprocess import (
    LCN_EPSILON,
    UINT8_MAX,
    ZSCORE_EPSILON,
    gaussian_kernel,
    whitening_kernel,
)

__all__ = ["OPENCV_REFERENCE_MS", "HostSpeed", "host_speed", "opencv_preprocess", "vga_test_frame"]

#: OpenCV's time for the VGA preprocessing on the 2-core machine where the real-time targets were set.
OPENCV_REFERENCE_MS = 4.4
#: Calls of the probe (after WARMUP calls); the median is kept.
PROBE_CALLS = 30
PROBE_WARMUP = 3


def opencv_preprocess(cfg: PatchConfig) -> Callable[[np.ndarray], np.ndarray]:
    """``preprocess_image`` with OpenCV in float32 (the baseline of the preprocessing graph): the same
    15x15 whitening correlation (``filter2D``), the two 13x13 Gaussians (``sepFilter2D``), LCN and
    z-score, reflect-101 borders."""
    import cv2

    whiten = whitening_kernel(cfg.whiten_f0, cfg.whiten_size).astype(np.float32)
    window = gaussian_kernel(cfg.lcn_size, cfg.lcn_sigma)
    profile = (window.sum(axis=1) / window.sum()).astype(np.float32)
    border = cv2.BORDER_REFLECT_101

    def run(frame: np.ndarray) -> np.ndarray:
        scaled = frame.astype(np.float32) * np.float32(1.0 / UINT8_MAX)
        whitened = cv2.filter2D(scaled - scaled.mean(), cv2.CV_32F, whiten, borderType=border)
        centred = whitened - cv2.sepFilter2D(whitened, cv2.CV_32F, profile, profile, borderType=border)
        local_var = cv2.sepFilter2D(centred * centred, cv2.CV_32F, profile, profile, borderType=border)
        local_std = np.sqrt(np.maximum(local_var, 0.0))
        x = centred / (np.maximum(local_std, local_std.mean()) + np.float32(LCN_EPSILON))
        x = x - x.mean()
        scale = np.float32(max(float(np.sqrt(np.mean(x * x))), cfg.zscore_floor) + ZSCORE_EPSILON)
        return np.asarray(x / scale, dtype=np.float32)

    return run


def vga_test_frame(seed: int = 0) -> np.ndarray:
    """A (480, 640) uint8 frame with natural-image-like structure (smoothed noise), for timing only."""
    import cv2

    noise = np.random.default_rng(seed).integers(0, 256, (480, 640)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 3.0) * 4 - 384, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class HostSpeed:
    """OpenCV's VGA preprocessing time here, and how many times faster the reference machine is (a
    factor > 1: this host is slower)."""

    opencv_ms: float

    @property
    def factor(self) -> float:
        return self.opencv_ms / OPENCV_REFERENCE_MS

    def describe(self) -> str:
        return (f"host speed: OpenCV VGA preprocessing {self.opencv_ms:.2f} ms here, {OPENCV_REFERENCE_MS:g} ms on "
                f"the machine that set the targets (this host is {self.factor:.2f}x its time)")


def host_speed(cfg: PatchConfig, frame: np.ndarray | None = None, calls: int = PROBE_CALLS) -> HostSpeed:
    """Time ``opencv_preprocess`` on a VGA frame (OpenCV's default threads); the median call."""
    run = opencv_preprocess(cfg)
    image = vga_test_frame() if frame is None else frame
    for _ in range(PROBE_WARMUP):
        run(image)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run(image)
        times.append(time.perf_counter() - start)
    return HostSpeed(statistics.median(times) * 1e3)

