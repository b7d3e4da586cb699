"""Serving's packing kernels in C (``pack.c``), as numpy arrays in and out.

Each function returns exactly what the numpy code of ``pvae.serving.pack`` computes (that code is
the specification, the fallback and the tests' oracle); only the cost differs. Inputs are int32
counts / float32 rates of shape (N, K), C-contiguous (other layouts are copied first).

    >>> packer = load()                       # NativeUnavailable if the library is not built
    >>> sum_z, sum_z2, nonzero = packer.row_stats(counts)
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pvae.native import library

__all__ = ["NativePacker", "RateGrid", "RiceStreams", "load"]

#: Largest Rice parameter (pvae.proto RiceCodes.parameters; pack.c MAX_RICE_PARAMETER).
MAX_RICE_PARAMETER = 31
#: Bytes the Rice writer may store past the end of a stream (pack.c RICE_SLACK).
RICE_SLACK = 8
#: Codes per column of the rate-code histogram (pack.c RATE_CODE_TOP + 1).
RATE_CODES = 256


@dataclass(frozen=True)
class RiceStreams:
    """Rice codes of an (N, K) array: per-column parameters and the two MSB-first bit streams."""

    parameters: np.ndarray
    """uint8 (K,)."""
    quotients: bytes
    remainders: bytes


def _ints(values: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(values, dtype=np.int32)
    if array.ndim != 2:
        raise ValueError(f"expected an (N, K) array, got shape {array.shape}")
    return array


def _ptr(array: np.ndarray) -> int:
    return int(array.ctypes.data)


class NativePacker:
    """The kernels of ``pack.c``; see the module docstring."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib

    def row_stats(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: sum z, sum z^2 and the number of non-zero entries (int64 each)."""
        values = _ints(counts)
        rows, cols = values.shape
        sum_z, sum_z2, nonzero = (np.empty(rows, np.int64) for _ in range(3))
        self._lib.pvae_row_stats(_ptr(values), rows, cols, _ptr(sum_z), _ptr(sum_z2), _ptr(nonzero))
        return sum_z, sum_z2, nonzero

    def sparse_events(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The non-zero entries, row-major: latents uint16, min(count, 255) uint8, the counts >= 255 in event
        order (int64), and each row's number of events (int64). Columns must fit uint16."""
        values = _ints(counts)
        rows, cols = values.shape
        if cols > 1 << 16:
            raise ValueError(f"{cols} latents do not fit uint16 latent indices")
        latents = np.empty(values.size, np.uint16)
        small = np.empty(values.size, np.uint8)
        large = np.empty(values.size, np.int64)
        per_row = np.empty(rows, np.int64)
        n_large = ctypes.c_uint64(0)
        events = int(self._lib.pvae_sparse_events(_ptr(values), rows, cols, _ptr(latents), _ptr(small), _ptr(large),
                                                  ctypes.byref(n_large), _ptr(per_row)))
        return latents[:events], small[:events], large[: int(n_large.value)], per_row

    def rice(self, values: np.ndarray) -> RiceStreams:
        """Golomb-Rice codes of non-negative int32 (N, K) values, the cheapest parameter per column."""
        array = _ints(values)
        rows, cols = array.shape
        if array.size and int(array.min()) < 0:
            raise ValueError("Rice codes take values >= 0")
        parameters = np.empty(cols, np.uint8)
        # (MAX_RICE_PARAMETER + 1) * cols int64 column sums, then cols int32 block sums (pack.c).
        scratch = np.empty((MAX_RICE_PARAMETER + 1) * cols + cols // 2 + 1, np.int64)
        quotient_bits, remainder_bits = ctypes.c_uint64(0), ctypes.c_uint64(0)
        self._lib.pvae_rice_plan(_ptr(array), rows, cols, _ptr(parameters), ctypes.byref(quotient_bits),
                                 ctypes.byref(remainder_bits), _ptr(scratch))
        q_bytes, r_bytes = -(-int(quotient_bits.value) // 8), -(-int(remainder_bits.value) // 8)
        quotients = np.empty(q_bytes + RICE_SLACK, np.uint8)  # the writer stores whole 8-byte words
        remainders = np.empty(r_bytes + RICE_SLACK, np.uint8)
        coded = np.empty(cols, np.uint32)
        self._lib.pvae_rice_write(_ptr(array), rows, cols, _ptr(parameters), _ptr(quotients), _ptr(remainders),
                                  int(quotient_bits.value), _ptr(coded))
        return RiceStreams(parameters, quotients[:q_bytes].tobytes(), remainders[:r_bytes].tobytes())

    def rate_deltas(self, rates: np.ndarray, grid: RateGrid) -> tuple[np.ndarray, np.ndarray]:
        """float32 (N, K) rates -> (base uint8 (K,): each column's upper median code, zigzag(code - base) int32
        (N, K)), with the codes of ``grid`` (see :class:`RateGrid`)."""
        array = np.ascontiguousarray(rates, dtype=np.float32)
        if array.ndim != 2:
            raise ValueError(f"expected an (N, K) array, got shape {array.shape}")
        rows, cols = array.shape
        base = np.empty(cols, np.uint8)
        zigzag = np.empty((rows, cols), np.int32)
        if rows >= 1 << 31:
            raise ValueError(f"{rows} rows: the per-column code counts are int32")
        histogram = np.empty(cols * RATE_CODES, np.int32)
        self._lib.pvae_rate_deltas(_ptr(array), rows, cols, _ptr(grid.thresholds), _ptr(grid.table), _ptr(base),
                                   _ptr(zigzag), _ptr(histogram))
        return base, zigzag


@dataclass(frozen=True)
class RateGrid:
    """A monotone float32 -> code map (0..255) as pack.c reads it, built from the map itself.

    ``thresholds[c]`` (c = 1..255) is the smallest float32 whose code is >= c (``thresholds[256]`` is NaN);
    ``table[b]`` is the code of the smallest float32 whose top 16 bits are b. Valid when every 16-bit
    bucket of positive floats holds at most one threshold, which :meth:`from_codes` checks.
    """

    thresholds: np.ndarray
    """float32 (257,)."""
    table: np.ndarray
    """uint8 (65536,)."""

    @classmethod
    def from_codes(cls, codes: Callable[[np.ndarray], np.ndarray]) -> RateGrid:
        """The grid of ``codes`` (float32 array -> uint8 codes, non-decreasing in the value for values >= 0,
        0 for negatives and NaN)."""
        top = RATE_CODES - 1
        lo = np.zeros(top, np.int64)  # bit patterns of non-negative float32: value order = integer order
        hi = np.full(top, np.float32(np.inf).view(np.uint32), np.int64)
        wanted = np.arange(1, top + 1)
        if np.any(codes(hi.astype(np.uint32).view(np.float32)).astype(np.int64) < wanted):
            raise ValueError("the code map never reaches its top code")
        while np.any(lo < hi):  # smallest pattern whose code is >= c
            mid = (lo + hi) // 2
            reached = codes(mid.astype(np.uint32).view(np.float32)).astype(np.int64) >= wanted
            hi, lo = np.where(reached, mid, hi), np.where(reached, lo, mid + 1)
        thresholds = np.concatenate([[np.nan], lo.astype(np.uint32).view(np.float32), [np.nan]]).astype(np.float32)
        starts = (np.arange(1 << 16, dtype=np.uint64) << np.uint64(16)).astype(np.uint32).view(np.float32)
        with np.errstate(invalid="ignore"):
            table = codes(starts).astype(np.uint8)
        positive = table[: 0x7F80]  # buckets of finite non-negative floats, in value order
        if np.any(np.diff(positive.astype(np.int64)) > 1):
            raise ValueError("a 16-bit bucket holds more than one code threshold")
        return cls(thresholds, table)


def load() -> NativePacker:
    """The native packer, or :class:`pvae.native.NativeUnavailable` saying why not."""
    return NativePacker(library())
