"""The IDX file reader (LeCun's MNIST format, gzipped): the numpy-only reader behind Fashion-MNIST in
:mod:`.datasets`, with magic number, header and size checks."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from pvae.errors import DataError

__all__ = ["IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC"]

# IDX magic numbers: two zero bytes, type code 0x08 (unsigned byte), number of dimensions.
IDX_LABELS_MAGIC = 0x00000801
IDX_IMAGES_MAGIC = 0x00000803


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """One gzipped IDX file (LeCun's MNIST format: big-endian header, then uint8 data) as uint8."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"cannot read {path}: truncated or not gzip ({error})") from error
    header = 4 + 4 * ndim  # magic, then one uint32 per dimension
    if len(raw) < header:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, shorter than the IDX header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path} has IDX magic number {found:#010x}, expected {magic:#010x}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(f"{path} holds {len(raw) - header} data bytes, expected {expected} for shape {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)

