"""Serving's packing kernels in C (``pack.c``), as numpy arrays in and out.

Each function returns exactly what the numpy code of ``pvae.serving.pack`` computes (that code is
the specification, the fallback and the tests' oracle); only the cost differs. Inputs are int32
counts / float32 rates of shape (N, K), C-contiguous (other layouts are copied first).

    >>> packer = load()                       # NativeUnavailable if the library is not built
    >>> sum_z, sum_z2, nonzero = packer.row_stats(counts)
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from pvae.native import library

__all__ = ["NativePacker", "RiceStreams", "load"]

#: Largest Rice parameter (pvae.proto RiceCodes.parameters; pack.c MAX_RICE_PARAMETER).
MAX_RICE_PARAMETER = 31
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
        scratch = np.empty((MAX_RICE_PARAMETER + 1) * cols, np.int64)
        quotient_bits, remainder_bits = ctypes.c_uint64(0), ctypes.c_uint64(0)
        self._lib.pvae_rice_plan(_ptr(array), rows, cols, _ptr(parameters), ctypes.byref(quotient_bits),
                                 ctypes.byref(remainder_bits), _ptr(scratch))
        quotients = np.empty(-(-int(quotient_bits.value) // 8), np.uint8)
        remainders = np.empty(-(-int(remainder_bits.value) // 8), np.uint8)
        self._lib.pvae_rice_write(_ptr(array), rows, cols, _ptr(parameters), _ptr(quotients), _ptr(remainders))
        return RiceStreams(parameters, quotients.tobytes(), remainders.tobytes())

    def rate_deltas(self, rates: np.ndarray, log_min: float, log_step: float) -> tuple[np.ndarray, np.ndarray]:
        """float (N, K) rates -> (base uint8 (K,): each column's upper median code, zigzag(code - base) int32
        (N, K)), with code = rint((log r - log_min) / log_step) + 1 capped at 255, 0 below the grid."""
        array = np.ascontiguousarray(rates, dtype=np.float32)
        if array.ndim != 2:
            raise ValueError(f"expected an (N, K) array, got shape {array.shape}")
        rows, cols = array.shape
        base = np.empty(cols, np.uint8)
        zigzag = np.empty((rows, cols), np.int32)
        histogram = np.empty(cols * RATE_CODES, np.int64)
        self._lib.pvae_rate_deltas(_ptr(array), rows, cols, float(log_min), float(log_step), _ptr(base), _ptr(zigzag),
                                   _ptr(histogram))
        return base, zigzag


def load() -> NativePacker:
    """The native packer, or :class:`pvae.native.NativeUnavailable` saying why not."""
    return NativePacker(library())
