"""Pack model outputs compactly: fp16 rates, sparse or dense uint8 counts, PNG/JPEG images, stats.

Arrays in, bytes out (little-endian, row-major), exactly the layouts that pvae.proto documents
(``pvae.clients.results`` reads them back).

Spike counts are never silently wrong: the sparse form is exact (counts of 255 or more are
escaped into ``large_counts``), and the dense uint8 form stores min(count, 255) and reports how
many entries saturated.

    >>> sparse = pack_sparse_counts(counts)                     # counts int32 (N, K)
    >>> len(sparse.counts) == np.count_nonzero(counts)        # one byte per event
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pvae.errors import InputError
from pvae.serving.options import FloatFormat, ImageEncoding

__all__ = [
    "U8_SATURATED",
    "CountEvents",
    "DenseCountsPacked",
    "FrameStatistics",
    "SparseCountsPacked",
    "encode_image",
    "frame_events",
    "frame_statistics",
    "pack_dense_counts",
    "pack_floats",
    "pack_sparse_counts",
]

#: The largest uint8: dense counts at or above it are stored as it and flagged (saturated).
U8_SATURATED = 255
#: Wire dtypes (pvae.proto): explicit little-endian so big-endian hosts agree.
FLOAT_DTYPES: dict[FloatFormat, np.dtype[np.floating]] = {FloatFormat.FP16: np.dtype("<f2"),
                                                          FloatFormat.FP32: np.dtype("<f4")}
OFFSET_DTYPE = np.dtype("<u4")
LATENT_DTYPE = np.dtype("<u2")
#: Latent indices are uint16 on the wire: models have at most 65536 latents (ModelConfig.n_latents).
MAX_LATENTS = 1 << 16
#: PNG zlib level for responses: 1 is ~as small as the default (3) on model output and much faster.
PNG_COMPRESSION = 1


def pack_floats(values: np.ndarray, fmt: FloatFormat) -> bytes:
    """float32 array -> fp16 or fp32 little-endian bytes (row-major)."""
    return np.ascontiguousarray(values, dtype=FLOAT_DTYPES[fmt]).tobytes()


@dataclass(frozen=True)
class SparseCountsPacked:
    """Spike events in compressed-row form (pvae.v1.SparseCounts)."""

    patch_offsets: bytes
    """uint32 (N + 1): events of patch p are [offsets[p], offsets[p + 1])."""
    latents: bytes
    """uint16 (E): latent of each event, ascending within a patch."""
    counts: bytes
    """uint8 (E): count of each event, 1..255; 255 means see ``large_counts``."""
    large_counts: tuple[int, ...]
    """Exact counts (>= 255) of the events whose count byte is 255, in event order."""


@dataclass(frozen=True)
class DenseCountsPacked:
    """Dense uint8 counts (pvae.v1.DenseCounts)."""

    counts: bytes
    """uint8 (N, K): min(count, 255)."""
    saturated: int
    """Entries whose true count is >= 255."""


@dataclass(frozen=True)
class CountEvents:
    """Nonzero counts of an (N, K) array in row-major order."""

    rows: np.ndarray  # (E,) int64 patch index
    latents: np.ndarray  # (E,) int64 latent index
    values: np.ndarray  # (E,) int32 count >= 1


def _events(counts: np.ndarray) -> CountEvents:
    flat = counts.reshape(-1)
    index = np.flatnonzero(flat)  # (E,) row-major, so sorted by patch then latent
    rows, latents = np.divmod(index, counts.shape[1])
    return CountEvents(rows, latents, flat[index])


def pack_sparse_counts(counts: np.ndarray, events: CountEvents | None = None) -> SparseCountsPacked:
    """int (N, K) counts >= 0 -> exact sparse events."""
    n_patches, n_latents = counts.shape
    if n_latents > MAX_LATENTS:
        raise InputError(f"sparse counts: {n_latents} latents do not fit uint16 latent indices")
    ev = _events(counts) if events is None else events
    per_patch = np.bincount(ev.rows, minlength=n_patches)  # (N,)
    offsets = np.zeros(n_patches + 1, dtype=OFFSET_DTYPE)
    np.cumsum(per_patch, out=offsets[1:])
    large = ev.values >= U8_SATURATED
    return SparseCountsPacked(
        patch_offsets=offsets.tobytes(),
        latents=ev.latents.astype(LATENT_DTYPE).tobytes(),
        counts=np.minimum(ev.values, U8_SATURATED).astype(np.uint8).tobytes(),
        large_counts=tuple(int(v) for v in ev.values[large]),
    )


def pack_dense_counts(counts: np.ndarray) -> DenseCountsPacked:
    """int (N, K) counts -> uint8 with saturation at 255 (flagged, never wrapped)."""
    saturated = int(np.count_nonzero(counts >= U8_SATURATED))
    return DenseCountsPacked(np.minimum(counts, U8_SATURATED).astype(np.uint8).tobytes(), saturated)


def encode_image(image: np.ndarray, encoding: ImageEncoding, jpeg_quality: int) -> bytes:
    """uint8 gray (H, W) -> raw bytes, a PNG file or a JPEG file."""
    if encoding is ImageEncoding.RAW:
        return np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    if encoding is ImageEncoding.PNG:
        ok, buffer = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    else:
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:  # OpenCV only fails here on an invalid array, which the graph never produces
        raise InputError(f"could not encode a {image.shape} image as {encoding.value}")
    return bytes(buffer)


@dataclass(frozen=True)
class FrameStatistics:
    """Per-frame spike statistics (pvae.v1.FrameStats, timings aside)."""

    total_spikes: int
    """Sum of all counts."""
    active_fraction: float
    """Fraction of (patch, latent) entries with a count >= 1."""
    population_sparsity: float
    """Mean over patches of the Treves-Rolls sparsity of the patch's K counts (the P-VAE paper's metric)."""
    mean_rate: float
    """Mean of the rates."""


def frame_statistics(counts: np.ndarray, rates: np.ndarray, events: CountEvents | None = None) -> FrameStatistics:
    """Statistics of (N, K) counts and rates.

    Population sparsity per patch is S = (1 - (sum z)^2 / (K sum z^2)) / (1 - 1/K); a patch with
    no spike counts as S = 1 (the P-VAE paper's convention). Computed from the events, so it costs
    O(spikes), not O(N K).
    """
    n_patches, n_latents = counts.shape
    ev = _events(counts) if events is None else events
    values = ev.values.astype(np.float64)
    sum_z = np.bincount(ev.rows, weights=values, minlength=n_patches)  # (N,)
    sum_z2 = np.bincount(ev.rows, weights=values * values, minlength=n_patches)  # (N,)
    if n_latents > 1:
        spiking = sum_z2 > 0
        per_patch = np.ones(n_patches, dtype=np.float64)
        per_patch[spiking] = (1.0 - sum_z[spiking] ** 2 / (n_latents * sum_z2[spiking])) / (1.0 - 1.0 / n_latents)
        sparsity = float(per_patch.mean()) if n_patches else 1.0
    else:  # with one latent the measure is undefined; call it maximally sparse
        sparsity = 1.0
    size = counts.size
    return FrameStatistics(
        total_spikes=int(values.sum()),
        active_fraction=float(len(values) / size) if size else 0.0,
        population_sparsity=sparsity,
        mean_rate=float(rates.mean(dtype=np.float64)) if size else 0.0,
    )


def frame_events(counts: np.ndarray) -> CountEvents:
    """The nonzero events of (N, K) counts, to share between packing and statistics."""
    return _events(counts)
