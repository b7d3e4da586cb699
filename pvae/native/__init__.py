"""The native exact Poisson sampler: ``poisson.c`` (built at install time) through ctypes.

It draws the same counts, bit for bit, as a bundle's ``sampler.onnx`` and its numpy specification
(``pvae.export.sampler_reference``): same squares32 stream keyed by the seed, same inversion and PTRS
float64 sequences. Only the cost differs: a vectorised screen settles almost every element of a real
frame with a few float64 operations, and only the rest (large counts, a uniform within 1e-7 of a CDF
step, rates >= 10) take the scalar exact path. The call releases the GIL.

The library is optional (``setup.py`` builds it where a C compiler exists). :func:`load` says why it
is missing; serving then samples with the bundle's graph, and the counts do not change.
``PVAE_NATIVE_SAMPLER=0`` disables it.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pvae.errors import PVAEError

__all__ = ["ENV_SWITCH", "NativeSampler", "NativeSamplerUnavailable", "load"]

#: Environment switch: "0" disables the native sampler (serving then uses the bundle's graph).
ENV_SWITCH = "PVAE_NATIVE_SAMPLER"
#: The C library's interface version (pvae_poisson_abi); a stale build with another one is not used.
ABI = 1
#: N*K must stay below this: the counter holds the element index in 32 bits.
MAX_ELEMENTS = 2**32
#: log k! for k < 16 and log(2 pi) / 2, computed exactly as the reference computes them (the C code takes
#: them as inputs so that its PTRS test rounds the same way).
_LOG_FACTORIALS = np.array([math.lgamma(k + 1.0) for k in range(16)], dtype=np.float64)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_HERE = Path(__file__).resolve().parent


class NativeSamplerUnavailable(PVAEError):
    """The native sampler library is not built, not loadable, or switched off."""


@dataclass(frozen=True)
class Draw:
    """One call's counts and how many elements the screen left to the exact paths."""

    counts: np.ndarray
    exact_elements: int


class NativeSampler:
    """``sample(rates, seed)`` -> int32 counts of the same shape; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = path
        lib = ctypes.CDLL(str(path))
        lib.pvae_poisson_abi.restype = ctypes.c_int
        lib.pvae_poisson_abi.argtypes = []
        abi = int(lib.pvae_poisson_abi())
        if abi != ABI:
            raise NativeSamplerUnavailable(f"{path} has interface {abi}, this pvae needs {ABI}: reinstall pvae")
        lib.pvae_poisson.restype = ctypes.c_int
        lib.pvae_poisson.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int64, ctypes.c_int,
                                     ctypes.c_void_p, ctypes.c_double, ctypes.c_void_p]
        lib.pvae_derive_key.restype = ctypes.c_uint64
        lib.pvae_derive_key.argtypes = [ctypes.c_int64]
        self._lib = lib

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


def library_path() -> Path | None:
    """The built library next to this file, if any (``_poisson`` plus the interpreter's extension suffix)."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = _HERE / f"_poisson{suffix}"
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=1)
def _load_cached() -> NativeSampler:
    path = library_path()
    if path is None:
        raise NativeSamplerUnavailable(
            "the native sampler is not built (no C compiler when pvae was installed?); "
            "reinstall with a compiler present: pip install -e . (or make setup)")
    try:
        return NativeSampler(path)
    except OSError as exc:
        raise NativeSamplerUnavailable(f"cannot load {path}: {exc}") from None


def load() -> NativeSampler:
    """The native sampler, or :class:`NativeSamplerUnavailable` saying why not."""
    if os.environ.get(ENV_SWITCH, "1").strip() == "0":
        raise NativeSamplerUnavailable(f"the native sampler is switched off ({ENV_SWITCH}=0)")
    return _load_cached()

