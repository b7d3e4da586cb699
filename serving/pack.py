"""Pack model outputs compactly: fp16 rates, sparse or dense uint8 counts, PNG/JPEG images, stats.

The compact forms (pvae.proto RiceCodes and RateCodes): counts Golomb-Rice coded per latent (exact),
and rates as 8-bit codes on a fixed log-rate grid, Rice coded (relative error < 4.3 %).

Arrays in, bytes out (little-endian, row-major), exactly the layouts that pvae.proto documents
(``pvae.clients.results`` reads them back).

The hot paths (sparse events, row statistics, Rice and rate codes) run in C when ``pvae.native`` is
built (``native_packer``), with byte-identical output; the numpy code here is their specification and
the fallback.

Spike counts are never silently wrong: the sparse form is exact (counts of 255 or more are
escaped into ``large_counts``), and the dense uint8 form stores min(count, 255) and reports how
many entries saturated.

    >>> sparse = pack_sparse_counts(counts)                     # counts int32 (N, K)
    >>> len(sparse.counts) == np.count_nonzero(counts)        # one byte per event
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from pvae.errors import InputError
from pvae.native import NativeUnavailable
from pvae.native.pack import NativePacker, RateGrid
from pvae.native.pack import load as load_native_packer
from pvae.serving.options import FloatFormat, ImageEncoding

__all__ = [
    "RATE_CODE_LOG_MIN",
    "RATE_CODE_LOG_STEP",
    "U8_SATURATED",
    "DenseCountsPacked",
    "FrameStatistics",
    "RateCodesPacked",
    "RiceCodesPacked",
    "SparseCountsPacked",
    "encode_image",
    "frame_statistics",
    "native_packer",
    "pack_dense_counts",
    "pack_floats",
    "pack_rate_codes",
    "pack_rice_counts",
    "pack_sparse_counts",
    "rate_codes",
    "rice_encode",
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
#: The log-rate grid of FloatFormat.U8_LOG: code c in 1..255 is log-rate LOG_MIN + (c - 1) * LOG_STEP,
#: [-16, 5.336] in log-rate, i.e. rates [1.125e-7, 207.7]: the model's whole range (rates are
#: exp(log_rate) + 1.19e-7 with log_rate softly clamped below 5.3). Code 0 is a rate of 0.
RATE_CODE_LOG_MIN = -16.0
RATE_CODE_LOG_STEP = 0.084
#: Codes 1..RATE_CODE_TOP lie on the grid.
RATE_CODE_TOP = 255
#: Largest Rice parameter (pvae.proto RiceCodes.parameters).
MAX_RICE_PARAMETER = 31


def native_packer() -> NativePacker | None:
    """The C kernels, or None when they are not built or are switched off (``PVAE_NATIVE=0``)."""
    try:
        return load_native_packer()
    except NativeUnavailable:
        return None


def pack_floats(values: np.ndarray, fmt: FloatFormat) -> bytes:
    """float32 array -> fp16 or fp32 little-endian bytes (row-major)."""
    return np.ascontiguousarray(values, dtype=FLOAT_DTYPES[fmt]).tobytes()


@dataclass(frozen=True)
class RiceCodesPacked:
    """Non-negative (N, K) integers Golomb-Rice coded with one parameter per column (pvae.v1.RiceCodes)."""

    parameters: bytes
    """uint8 (K): Rice parameter k of each column, 0..31."""
    quotients: bytes
    """Bit stream (MSB first): each entry's v >> k in unary (that many 1-bits, then a 0-bit), row-major."""
    remainders: bytes
    """Bit stream (MSB first): each entry's k low bits, most significant first, row-major."""


def _rice_parameters(values: np.ndarray) -> np.ndarray:
    """Per column, the k that codes it in the fewest bits: sum(v >> k) + N (1 + k)."""
    n_rows = values.shape[0]
    top = min(int(values.max()).bit_length() if values.size else 0, MAX_RICE_PARAMETER)
    costs = np.stack([(values >> k).sum(axis=0, dtype=np.int64) + n_rows * (1 + k) for k in range(top + 1)])
    return costs.argmin(axis=0).astype(np.int64)  # (K,)


def _remainder_bits(values: np.ndarray, parameters: np.ndarray) -> np.ndarray:
    """uint8 (N, S) bits: each entry's k low bits, most significant first, row-major (S = sum(k))."""
    total = int(parameters.sum())
    start = np.cumsum(parameters) - parameters  # (K,) first bit of each column within a row
    column = np.repeat(np.arange(len(parameters)), parameters)  # (S,)
    shift = parameters[column] - 1 - (np.arange(total) - start[column])  # (S,) MSB first
    return ((values[:, column] >> shift.astype(values.dtype)) & 1).astype(np.uint8)


def rice_encode(values: np.ndarray) -> RiceCodesPacked:
    """int (N, K) values >= 0 -> Rice codes with the cheapest parameter per column (vectorised)."""
    values = np.asarray(values)
    packer = native_packer()
    if packer is not None and values.dtype == np.int32 and values.ndim == 2:  # counts and rate-code deltas
        streams = packer.rice(values)
        return RiceCodesPacked(streams.parameters.tobytes(), streams.quotients, streams.remainders)
    if values.size and int(values.max()) >= 1 << 31:
        values = values.astype(np.int64)
    elif values.dtype != np.int32:
        values = values.astype(np.int32)  # half the memory traffic of int64
    parameters = _rice_parameters(values)  # (K,)
    ends = np.cumsum(((values >> parameters) + 1).reshape(-1), dtype=np.int64)  # (E,) one past each entry's 0-bit
    unary = np.ones(int(ends[-1]) if ends.size else 0, dtype=np.uint8)
    unary[ends - 1] = 0
    remainders = b""
    if parameters.any():
        remainders = np.packbits(_remainder_bits(values, parameters).reshape(-1)).tobytes()
    return RiceCodesPacked(parameters.astype(np.uint8).tobytes(), np.packbits(unary).tobytes(), remainders)


def pack_rice_counts(counts: np.ndarray) -> RiceCodesPacked:
    """int (N, K) counts >= 0 -> exact Rice codes (pvae.v1 COUNT_FORMAT_RICE)."""
    return rice_encode(counts)


def rate_codes(rates: np.ndarray) -> np.ndarray:
    """Rates -> uint8 codes on the log grid: round((log r - LOG_MIN) / LOG_STEP) + 1, at most 255; 0 for
    rates below exp(LOG_MIN - LOG_STEP / 2) (zero, below the model's floor, or not a number)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        index = np.rint((np.log(np.asarray(rates, dtype=np.float64)) - RATE_CODE_LOG_MIN) / RATE_CODE_LOG_STEP)
        codes = np.where(index >= 0, np.minimum(index, RATE_CODE_TOP - 1) + 1, 0)
    return codes.astype(np.uint8)


@lru_cache(maxsize=1)
def _rate_grid() -> RateGrid:
    """:func:`rate_codes` as thresholds and a bucket table, for the native kernel (which takes no log)."""
    return RateGrid.from_codes(rate_codes)


@dataclass(frozen=True)
class RateCodesPacked:
    """Rates and log-rates as Rice-coded log-grid codes (pvae.v1.RateCodes)."""

    base: bytes
    """uint8 (K): each latent's median code (the upper one); the Rice-coded values are zigzag(code - base)."""
    codes: RiceCodesPacked
    rates: bool
    """The request asked for the rates."""
    log_rates: bool
    """The request asked for the log-rates."""
    log_min: float = RATE_CODE_LOG_MIN
    log_step: float = RATE_CODE_LOG_STEP


def pack_rate_codes(rates: np.ndarray, want_rates: bool, want_log_rates: bool) -> RateCodesPacked:
    """float (N, K) rates -> one payload for rates and log-rates (FloatFormat.U8_LOG)."""
    packer = native_packer()
    if packer is not None and rates.dtype == np.float32 and rates.ndim == 2:
        base_codes, deltas = packer.rate_deltas(rates, _rate_grid())
        return RateCodesPacked(base_codes.tobytes(), rice_encode(deltas), want_rates, want_log_rates)
    codes = rate_codes(rates).astype(np.int32)  # (N, K)
    n_rows, n_cols = codes.shape
    # Each column's upper median (sorted index N // 2) from its histogram: faster than a partition.
    offsets = np.arange(n_cols, dtype=np.int32) * (RATE_CODE_TOP + 1)
    histogram = np.bincount((codes + offsets).reshape(-1), minlength=n_cols * (RATE_CODE_TOP + 1))
    below = np.cumsum(histogram.reshape(n_cols, RATE_CODE_TOP + 1), axis=1) <= n_rows // 2
    base = below.sum(axis=1, dtype=np.int32) if n_rows else np.zeros(n_cols, np.int32)  # (K,)
    delta = codes - base  # (N, K), -255..255
    zigzag = np.where(delta >= 0, 2 * delta, -2 * delta - 1)
    return RateCodesPacked(base.astype(np.uint8).tobytes(), rice_encode(zigzag), want_rates, want_log_rates)


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


def pack_sparse_counts(counts: np.ndarray) -> SparseCountsPacked:
    """int (N, K) counts >= 0 -> exact sparse events."""
    n_patches, n_latents = counts.shape
    if n_latents > MAX_LATENTS:
        raise InputError(f"sparse counts: {n_latents} latents do not fit uint16 latent indices")
    packer = native_packer()
    if packer is not None and counts.dtype == np.int32:
        latents, small, large_values, per_row = packer.sparse_events(counts)
        offsets = np.zeros(n_patches + 1, dtype=OFFSET_DTYPE)
        np.cumsum(per_row, out=offsets[1:])
        return SparseCountsPacked(offsets.tobytes(), latents.astype(LATENT_DTYPE, copy=False).tobytes(),
                                  small.tobytes(), tuple(int(v) for v in large_values))
    flat = counts.reshape(-1)
    index = np.flatnonzero(flat)  # (E,) row-major: by patch, then latent
    values = flat[index]
    per_patch = np.count_nonzero(counts, axis=1)  # (N,)
    offsets = np.zeros(n_patches + 1, dtype=OFFSET_DTYPE)
    np.cumsum(per_patch, out=offsets[1:])
    large = values >= U8_SATURATED
    return SparseCountsPacked(
        patch_offsets=offsets.tobytes(),
        latents=(index % n_latents).astype(LATENT_DTYPE).tobytes(),
        counts=np.minimum(values, U8_SATURATED).astype(np.uint8).tobytes(),
        large_counts=tuple(int(v) for v in values[large]),
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


def frame_statistics(counts: np.ndarray, rates: np.ndarray) -> FrameStatistics:
    """Statistics of (N, K) counts and rates.

    Population sparsity per patch is S = (1 - (sum z)^2 / (K sum z^2)) / (1 - 1/K); a patch with
    no spike counts as S = 1 (the P-VAE paper's convention). Row sums over the dense counts, in
    int64 (a count's square can pass int32): cheaper than finding the nonzero events first.
    """
    n_patches, n_latents = counts.shape
    size = counts.size
    packer = native_packer()
    if packer is not None and counts.dtype == np.int32:
        sums, squares, nonzero = packer.row_stats(counts)
        sum_z, sum_z2, active = sums.astype(np.float64), squares.astype(np.float64), int(nonzero.sum())
    else:
        sum_z = counts.sum(axis=1, dtype=np.int64).astype(np.float64)  # (N,)
        sum_z2 = np.einsum("ij,ij->i", counts, counts, dtype=np.int64).astype(np.float64)  # (N,)
        active = int(np.count_nonzero(counts))
    if n_latents > 1:
        spiking = sum_z2 > 0
        per_patch = np.ones(n_patches, dtype=np.float64)
        per_patch[spiking] = (1.0 - sum_z[spiking] ** 2 / (n_latents * sum_z2[spiking])) / (1.0 - 1.0 / n_latents)
        sparsity = float(per_patch.mean()) if n_patches else 1.0
    else:  # with one latent the measure is undefined; call it maximally sparse
        sparsity = 1.0
    return FrameStatistics(
        total_spikes=int(sum_z.sum()),
        active_fraction=active / size if size else 0.0,
        population_sparsity=sparsity,
        mean_rate=float(rates.mean(dtype=np.float64)) if size else 0.0,
    )
