"""Native CPU kernels (C, built at install time by ``setup.py``, loaded with ctypes).

- :mod:`pvae.native.sampler`: the exact Poisson sampler (``poisson.c``), bit-identical to a bundle's
  ``sampler.onnx``;
- :mod:`pvae.native.pack`: serving's packing kernels (``pack.c``): sparse events, row statistics, Rice
  codes and 8-bit log-rate codes, byte-identical to the numpy code in ``pvae.serving.pack``.

Both are optional: without a C compiler the install still succeeds, :func:`library` says why the
library is missing, and the callers fall back to the bundle's graph and to numpy (same results,
slower). ``PVAE_NATIVE=0`` switches them off. Every call releases the GIL.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
from functools import lru_cache
from pathlib import Path

from pvae.errors import PVAEError

__all__ = ["ABI", "ENV_SWITCH", "NativeUnavailable", "library", "library_path"]

#: Environment switch: "0" disables the native kernels.
ENV_SWITCH = "PVAE_NATIVE"
#: The C library's interface version (pvae_native_abi); a stale build with another one is not used.
ABI = 5
_HERE = Path(__file__).resolve().parent
_U64, _I64, _INT, _DOUBLE, _PTR = ctypes.c_uint64, ctypes.c_int64, ctypes.c_int, ctypes.c_double, ctypes.c_void_p
#: name: (restype, argtypes) of every exported function.
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "pvae_native_abi": (_INT, []),
    "pvae_derive_key": (_U64, [_I64]),
    "pvae_screen_exp": (_DOUBLE, [_DOUBLE]),
    "pvae_poisson": (_INT, [_PTR, _PTR, _U64, _I64, _INT, _PTR, _DOUBLE, _PTR]),
    "pvae_row_stats": (None, [_PTR, _U64, _U64, _PTR, _PTR, _PTR]),
    "pvae_sparse_events": (_U64, [_PTR, _U64, _U64, _PTR, _PTR, _PTR, _PTR, _PTR]),
    "pvae_rice_plan": (None, [_PTR, _U64, _U64, _PTR, _PTR, _PTR, _PTR]),
    "pvae_rice_write": (None, [_PTR, _U64, _U64, _PTR, _PTR, _PTR, _U64, _PTR]),
    "pvae_rate_deltas": (None, [_PTR, _U64, _U64, _PTR, _PTR, _PTR, _PTR, _PTR]),
}


class NativeUnavailable(PVAEError):
    """The native library is not built, not loadable, stale, or switched off."""


def library_path() -> Path | None:
    """The built library next to this file, if any (``_native`` plus the interpreter's extension suffix)."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = _HERE / f"_native{suffix}"
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=1)
def _load() -> ctypes.CDLL:
    path = library_path()
    if path is None:
        raise NativeUnavailable(
            "the native kernels are not built (no C compiler when pvae was installed?); "
            "reinstall with a compiler present: pip install -e . (or make setup)")
    try:
        lib = ctypes.CDLL(str(path))
        for name, (restype, argtypes) in _SIGNATURES.items():
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
    except (OSError, AttributeError) as exc:
        raise NativeUnavailable(f"cannot load {path}: {exc}; reinstall pvae") from None
    abi = int(lib.pvae_native_abi())
    if abi != ABI:
        raise NativeUnavailable(f"{path} has interface {abi}, this pvae needs {ABI}: reinstall pvae")
    return lib


def library() -> ctypes.CDLL:
    """The loaded library, or :class:`NativeUnavailable` saying why not."""
    if os.environ.get(ENV_SWITCH, "1").strip() == "0":
        raise NativeUnavailable(f"the native kernels are switched off ({ENV_SWITCH}=0)")
    return _load()
