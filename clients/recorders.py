"""Recorders: the side-by-side pictures to a video file, the codes to an ``.npz`` file.

``VideoRecorder`` writes BGR pictures with ``cv2.VideoWriter`` (``mp4v`` in .mp4/.m4v/.mov,
``MJPG`` in .avi: the codecs opencv-python-headless ships); pictures of another size than the
first are scaled to it, so every frame sent becomes one video frame.

``CodeRecorder`` collects each answered frame's rates and exact spike counts and writes them as
one ``.npz``; ``load_codes`` reads it back. Frames of different sizes are fine: per-frame arrays
are concatenated along the patch axis with offsets, and counts are stored sparsely (exact):

    sequences (F,) uint64, seeds (F,) uint64, frame_shapes (F, 2) uint32 (H, W), grids (F, 2)
    uint32 (R, C), patch_offsets (F + 1,) int64, rates (sum R*C, K) float16/float32, count_rows
    (E,) int64 (patch row in rates), count_latents (E,) uint16, count_values (E,) uint32,
    dropped_sequences (D,) uint64, meta (JSON string: format, version, server, model, options).

    >>> codes = load_codes("run.npz")
    >>> codes.rates(0).shape, codes.counts(0).shape          # (R, C, K) each
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from pvae.errors import ConfigError, DataError

from .results import FrameResult

__all__ = ["CODES_FORMAT", "CodeRecorder", "Codes", "VideoRecorder", "fourcc_for", "load_codes"]

#: fourcc per video container (what the OpenCV FFmpeg build in opencv-python-headless can write).
FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}
#: Frame rate written into a video when the stream's own is unknown.
DEFAULT_VIDEO_FPS = 30.0
#: Identifies a codes file and its layout version.
CODES_FORMAT = "pvae-codes"
CODES_VERSION = 1


def fourcc_for(path: str | Path) -> str:
    """The fourcc for a video path's container; ConfigError for containers we do not write."""
    suffix = Path(path).suffix.lower()
    if suffix not in FOURCC_BY_SUFFIX:
        raise ConfigError(f"--out {path}: use one of {', '.join(FOURCC_BY_SUFFIX)} (OpenCV writes mp4v / MJPG)")
    return FOURCC_BY_SUFFIX[suffix]


class VideoRecorder:
    """Append BGR pictures to a video file; the writer opens on the first picture (its size is the video's)."""

    def __init__(self, path: str | Path, fps: float | None = None) -> None:
        self.path = Path(path)
        self.fourcc = fourcc_for(self.path)
        self.fps = fps if fps and fps > 0 else DEFAULT_VIDEO_FPS
        self.frames = 0
        """Pictures written so far."""
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None

    def write(self, picture: np.ndarray) -> None:
        """Append one uint8 (H, W, 3) BGR picture."""
        if self._writer is None:
            self._size = (picture.shape[1], picture.shape[0])
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*self.fourcc), self.fps, self._size)
            if not writer.isOpened():
                raise DataError(f"--out {self.path}: OpenCV cannot write {self.fourcc} video there")
            self._writer = writer
        assert self._size is not None
        if (picture.shape[1], picture.shape[0]) != self._size:
            picture = cv2.resize(picture, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(picture))
        self.frames += 1

    def close(self) -> None:
        """Finish the file (idempotent)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@dataclass(frozen=True)
class Codes:
    """A codes file in memory (see the module docstring for the arrays)."""

    sequences: np.ndarray
    seeds: np.ndarray
    frame_shapes: np.ndarray
    grids: np.ndarray
    patch_offsets: np.ndarray
    all_rates: np.ndarray
    count_rows: np.ndarray
    count_latents: np.ndarray
    count_values: np.ndarray
    dropped_sequences: np.ndarray
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def n_latents(self) -> int:
        """Latents per patch K."""
        return int(self.all_rates.shape[1])

    def rates(self, index: int) -> np.ndarray:
        """float32 (R, C, K) rates of frame ``index``."""
        rows, cols = (int(v) for v in self.grids[index])
        start, stop = self.patch_offsets[index], self.patch_offsets[index + 1]
        return self.all_rates[start:stop].astype(np.float32).reshape(rows, cols, self.n_latents)

    def counts(self, index: int) -> np.ndarray:
        """int32 (R, C, K) exact spike counts of frame ``index``."""
        rows, cols = (int(v) for v in self.grids[index])
        start, stop = int(self.patch_offsets[index]), int(self.patch_offsets[index + 1])
        dense = np.zeros((stop - start, self.n_latents), dtype=np.int32)
        lo, hi = np.searchsorted(self.count_rows, [start, stop])
        dense[self.count_rows[lo:hi] - start, self.count_latents[lo:hi].astype(np.intp)] = self.count_values[lo:hi]
        return dense.reshape(rows, cols, self.n_latents)


class CodeRecorder:
    """Collect answered frames' rates and counts; ``save()`` writes the ``.npz`` (see the module docstring)."""

    def __init__(self, path: str | Path, meta: dict[str, Any] | None = None,
                 rates_dtype: np.dtype[Any] | type = np.float16) -> None:
        self.path = Path(path)
        self.rates_dtype = np.dtype(rates_dtype)
        """Stored precision of the rates: float16 (the wire's default precision) or float32 (fp32 streams)."""
        if self.path.suffix.lower() != ".npz":
            raise ConfigError(f"--save {path}: the codes file must end in .npz")
        self.meta = dict(meta or {})
        self._sequences: list[int] = []
        self._seeds: list[int] = []
        self._shapes: list[tuple[int, int]] = []
        self._grids: list[tuple[int, int]] = []
        self._rates: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self._latents: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        self._dropped: list[int] = []
        self._patches = 0

    def __len__(self) -> int:
        return len(self._sequences)

    def add(self, result: FrameResult) -> None:
        """Record a result's codes (needs rates and counts; in-band errors and drop reports only add drops)."""
        self._dropped.extend(result.dropped_sequences)
        if not result.ok:
            return
        if result.rates is None or result.counts is None or result.rates.ndim != 3:
            raise ConfigError("codes: ask for the rates and counts outputs of frames to record them")
        n_latents = result.n_latents
        rates = result.rates.reshape(-1, n_latents)  # (R*C, K)
        counts = result.counts.reshape(-1, n_latents)
        rows, latents = np.nonzero(counts)  # row-major: sorted by patch, then latent
        self._sequences.append(result.sequence)
        self._seeds.append(result.seed or 0)
        self._shapes.append((result.height, result.width))
        self._grids.append((result.grid_rows, result.grid_cols))
        self._rates.append(rates.astype(self.rates_dtype))
        self._rows.append(rows.astype(np.int64) + self._patches)
        self._latents.append(latents.astype(np.uint16))
        self._values.append(counts[rows, latents].astype(np.uint32))
        self._patches += rates.shape[0]

    def save(self) -> Path:
        """Write the file; returns its path."""
        if not self._sequences:
            raise DataError(f"--save {self.path}: no frame was answered, nothing to save")
        n_latents = self._rates[0].shape[1]
        if any(r.shape[1] != n_latents for r in self._rates):
            raise DataError(f"--save {self.path}: frames with different numbers of latents")
        offsets = np.zeros(len(self._sequences) + 1, dtype=np.int64)
        np.cumsum([r.shape[0] for r in self._rates], out=offsets[1:])
        meta = {"format": CODES_FORMAT, "version": CODES_VERSION, **self.meta}
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            self.path,
            sequences=np.asarray(self._sequences, dtype=np.uint64),
            seeds=np.asarray(self._seeds, dtype=np.uint64),
            frame_shapes=np.asarray(self._shapes, dtype=np.uint32),
            grids=np.asarray(self._grids, dtype=np.uint32),
            patch_offsets=offsets,
            rates=np.concatenate(self._rates),
            count_rows=np.concatenate(self._rows),
            count_latents=np.concatenate(self._latents),
            count_values=np.concatenate(self._values),
            dropped_sequences=np.asarray(self._dropped, dtype=np.uint64),
            meta=np.asarray(json.dumps(meta, sort_keys=True)),
        )
        return self.path


def load_codes(path: str | Path) -> Codes:
    """Read a file written by :class:`CodeRecorder` (DataError if it is not one)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file: {exc}") from None
    try:
        meta = json.loads(str(arrays.pop("meta")))
        if meta.get("format") != CODES_FORMAT:
            raise DataError(f"{path}: not a pvae codes file (format {meta.get('format')!r})")
        return Codes(
            sequences=arrays["sequences"], seeds=arrays["seeds"], frame_shapes=arrays["frame_shapes"],
            grids=arrays["grids"], patch_offsets=arrays["patch_offsets"], all_rates=arrays["rates"],
            count_rows=arrays["count_rows"], count_latents=arrays["count_latents"],
            count_values=arrays["count_values"], dropped_sequences=arrays["dropped_sequences"], meta=meta,
        )
    except (KeyError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a pvae codes file (missing or bad {exc})") from None
