"""The native exact Poisson sampler (``poisson.c``).

It draws the same counts, bit for bit, as a bundle's ``sampler.onnx`` and its numpy specification
(``pvae.export.sampler_reference``): same squares32 stream keyed by the seed, same inversion and PTRS
float64 sequences. Only the cost differs: a vectorised screen settles almost every element of a real
frame with a few float64 operations, and only the rest (large counts, a uniform within 1e-7 of a CDF
step, rates >= 10) take the scalar exact path.

    >>> sampler = load()                      # NativeUnavailable if the library is not built
    >>> counts = sampler.sample(rates, seed=7, threads=2)
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pvae.native import library, library_path

__all__ = ["Draw", "NativeSampler", "load"]

#: N*K must stay below this: the counter holds the element index in 32 bits.
MAX_ELEMENTS = 2**32
#: log k! for k < 16 and log(2 pi) / 2, computed exactly as the reference computes them (the C code takes
#: them as inputs so that its PTRS test rounds the same way).
_LOG_FACTORIALS = np.array([math.lgamma(k + 1.0) for k in range(16)], dtype=np.float64)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class Draw:
    """One call's counts and how many elements the screen left to the exact paths."""

    counts: np.ndarray
    exact_elements: int


class NativeSampler:
    """``sample(rates, seed)`` -> int32 counts of the same shape; see the module docstring."""

    def __init__(self, lib: ctypes.CDLL, path: Path) -> None:
        self._lib = lib
        self.path = path

    def derive_key(self, seed: int) -> int:
        """The admissible squares32 key of ``seed`` (as the sampler graph derives it)."""
        return int(self._lib.pvae_derive_key(_check_seed(seed)))

    def draw(self, rates: np.ndarray, seed: int, threads: int = 1) -> Draw:
        """Counts for ``rates`` (any shape, float32; other dtypes are converted) and the screen's misses."""
        flat = np.ascontiguousarray(rates, dtype=np.float32)
        if flat.size >= MAX_ELEMENTS:
            raise ValueError(f"rates has {flat.size} elements; the sampler supports fewer than {MAX_ELEMENTS}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        counts = np.empty(flat.shape, dtype=np.int32)
        exact = ctypes.c_uint64(0)
        status = self._lib.pvae_poisson(flat.ctypes.data, counts.ctypes.data, flat.size, _check_seed(seed), threads,
                                        _LOG_FACTORIALS.ctypes.data, _HALF_LOG_2PI, ctypes.byref(exact))
        if status != 0:  # only n >= 2**32, checked above
            raise ValueError(f"native sampler refused {flat.size} rates (status {status})")
        return Draw(counts, int(exact.value))

    def sample(self, rates: np.ndarray, seed: int, threads: int = 1) -> np.ndarray:
        """int32 counts ~ Poisson(rates), the same for the same seed on every host."""
        return self.draw(rates, seed, threads).counts


def _check_seed(seed: int) -> int:
    value = int(seed)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"seed must fit int64, got {seed}")
    return value


def load() -> NativeSampler:
    """The native sampler, or :class:`pvae.native.NativeUnavailable` saying why not."""
    lib = library()
    path = library_path()
    assert path is not None  # library() loaded it from there
    return NativeSampler(lib, path)
