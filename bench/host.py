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
from pathlib import Path

import numpy as np

from pvae.training.data.config import PatchConfig
from pvae.training.data.preprocess import (
    LCN_EPSILON,
    UINT8_MAX,
    ZSCORE_EPSILON,
    gaussian_kernel,
    whitening_kernel,
)

__all__ = ["OPENCV_REFERENCE_MS", "CpuTimes", "HostSpeed", "cpu_times", "host_speed", "opencv_preprocess",
           "vga_test_frame"]

#: OpenCV's time for the VGA preprocessing on the 2-core machine where the real-time targets were set.
OPENCV_REFERENCE_MS = 4.4
#: Calls of the probe (after WARMUP calls); the median is kept.
PROBE_CALLS = 30
PROBE_WARMUP = 3
#: The kernel's CPU time counters (Linux): the first line sums all CPUs.
PROC_STAT = Path("/proc/stat")


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
class CpuTimes:
    """All CPUs' time counters (clock ticks): the time stolen by the hypervisor for other guests, and all."""

    steal: int
    total: int

    def steal_since(self, before: CpuTimes) -> float | None:
        """The share of the CPU time since ``before`` that was stolen (None when no time passed)."""
        total = self.total - before.total
        return (self.steal - before.steal) / total if total > 0 else None


def cpu_times(path: Path = PROC_STAT) -> CpuTimes | None:
    """The counters now, from /proc/stat (None where there is none: not Linux)."""
    try:
        fields = path.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return CpuTimes(steal=ticks[7] if len(ticks) > 7 else 0, total=sum(ticks))


@dataclass(frozen=True)
class HostSpeed:
    """OpenCV's VGA preprocessing time here, and how many times faster the reference machine is (a
    factor > 1: this host is slower); and, where known, the share of CPU time the hypervisor gave to
    other guests meanwhile (a shared virtual machine is slow in part because of it, and unevenly so)."""

    opencv_ms: float
    steal: float | None = None

    @property
    def factor(self) -> float:
        return self.opencv_ms / OPENCV_REFERENCE_MS

    def describe(self) -> str:
        stolen = f"; {self.steal:.0%} of the CPU time stolen by the hypervisor meanwhile" if self.steal else ""
        return (f"host speed: OpenCV VGA preprocessing {self.opencv_ms:.2f} ms here, {OPENCV_REFERENCE_MS:g} ms on "
                f"the machine that set the targets (this host is {self.factor:.2f}x its time{stolen})")


def host_speed(cfg: PatchConfig, frame: np.ndarray | None = None, calls: int = PROBE_CALLS) -> HostSpeed:
    """Time ``opencv_preprocess`` on a VGA frame (OpenCV's default threads); the median call, and the CPU
    steal over the calls."""
    run = opencv_preprocess(cfg)
    image = vga_test_frame() if frame is None else frame
    for _ in range(PROBE_WARMUP):
        run(image)
    times = []
    before = cpu_times()
    for _ in range(calls):
        start = time.perf_counter()
        run(image)
        times.append(time.perf_counter() - start)
    after = cpu_times()
    steal = after.steal_since(before) if before is not None and after is not None else None
    return HostSpeed(statistics.median(times) * 1e3, steal)

