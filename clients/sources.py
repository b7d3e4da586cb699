"""Where frames come from: a webcam, a video file, an image folder, a URL, or the synthetic camera.

``open_source(spec)`` picks the kind from the spec and checks it at once (a camera that does not
open, an unreadable file or an empty folder raise ``SourceError`` naming it), so a bad source
fails before any connection is made. Sources yield uint8 BGR (or gray) numpy frames.

    spec                       source
    ``0``, ``1``, /dev/video0  webcam (live)
    ``synthetic``              SyntheticCamera pan over bundled natural images (endless)
    ``rtsp://...``, ``http://`` a stream OpenCV opens (live)
    a directory                its images in name order (png, jpg, bmp, tif, webp, pgm, ppm)
    an image file              that one image
    any other file             a video file OpenCV reads

``paced`` throttles any iterable to a frame rate, like a live camera; ``limited`` stops after N.

    >>> with open_source("clip.mp4") as source:
    ...     for frame in limited(paced(source, fps=30), 100): ...
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import cv2
import numpy as np

from pvae.errors import ConfigError

from .errors import SourceError
from .synthetic import DEFAULT_HEIGHT, DEFAULT_WIDTH, SyntheticCamera

__all__ = [
    "IMAGE_SUFFIXES",
    "SYNTHETIC",
    "FrameSource",
    "ImageFolderSource",
    "SyntheticSource",
    "VideoSource",
    "limited",
    "open_source",
    "paced",
    "parse_size",
    "resized",
]

T = TypeVar("T")
#: The spec of the synthetic camera.
SYNTHETIC = "synthetic"
#: Image files an image folder is made of (what cv2.imread reads).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")
#: Device paths that are cameras.
CAMERA_DEVICE_PREFIX = "/dev/video"


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own warnings (e.g. "can't open camera by index") while probing a source:
    the SourceError raised instead says it once and clearly."""
    logging = cv2.utils.logging
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(level)


class FrameSource:
    """Base class: an iterable of uint8 frames with a name; close it (or use ``with``) when done."""

    name: str = ""
    """What the source is, for messages."""
    live: bool = False
    """True for cameras and network streams: only fresh frames matter (drop_oldest suits them)."""
    fps: float | None = None
    """The source's own frame rate, when it has one."""
    frame_count: int | None = None
    """Frames in the source, when known (None: unknown or endless)."""

    def __iter__(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file."""

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class VideoSource(FrameSource):
    """A cv2.VideoCapture (camera, video file or URL); the first frame is read on opening."""

    def __init__(self, capture: cv2.VideoCapture, name: str, live: bool) -> None:
        self.capture = capture
        self.name = name
        self.live = live
        with _quiet_opencv():
            ok, first = capture.read()
        if not ok or first is None:
            capture.release()
            raise SourceError(f"{name}: opened, but no frame could be read")
        self._first: np.ndarray | None = first
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if fps > 0 else None
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 and not live else None

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        while True:
            ok, frame = self.capture.read()
            if not ok or frame is None:
                return
            yield frame

    def close(self) -> None:
        self.capture.release()


class ImageFolderSource(FrameSource):
    """The images of a folder in name order (or a single image file)."""

    def __init__(self, files: list[Path], name: str) -> None:
        if not files:
            raise SourceError(f"{name}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        self.files = files
        self.name = name
        self.frame_count = len(files)
        self._first = self._read(files[0])

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"{path}: not an image OpenCV can read")
        return image

    def __iter__(self) -> Iterator[np.ndarray]:
        yield self._first
        for path in self.files[1:]:
            yield self._read(path)


class SyntheticSource(FrameSource):
    """The endless synthetic camera (``pvae.clients.synthetic.SyntheticCamera``)."""

    def __init__(self, height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH) -> None:
        self.camera = SyntheticCamera(height, width)
        self.name = f"synthetic {width}x{height} pan over {self.camera.scene}"

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.camera)


def _open_capture(target: str | int, name: str, live: bool) -> VideoSource:
    with _quiet_opencv():
        capture = cv2.VideoCapture(target)
        opened = capture.isOpened()
    if not opened:
        capture.release()
        if isinstance(target, int):
            raise SourceError(f"camera {target}: no camera at this index ({CAMERA_DEVICE_PREFIX}{target} "
                              "cannot be opened); try another index, a video file or --source synthetic")
        raise SourceError(f"{name}: OpenCV cannot open it as a video")
    return VideoSource(capture, name, live)


def open_source(spec: str, size: tuple[int, int] | None = None) -> FrameSource:
    """Open the source named by ``spec`` (see the module docstring); SourceError if it is unusable.

    ``size`` (width, height) sets the synthetic camera's frame size (other sources: see ``resized``).
    """
    spec = spec.strip()
    if not spec:
        raise SourceError("source: empty; give a camera index, a video file, an image folder, a URL or 'synthetic'")
    if spec.lower() == SYNTHETIC:
        width, height = size if size is not None else (DEFAULT_WIDTH, DEFAULT_HEIGHT)
        return SyntheticSource(height, width)
    if spec.isdigit():
        return _open_capture(int(spec), f"camera {spec}", live=True)
    if "://" in spec:
        return _open_capture(spec, spec, live=True)
    if spec.startswith(CAMERA_DEVICE_PREFIX):
        if not Path(spec).exists():
            raise SourceError(f"{spec}: no such camera device")
        return _open_capture(spec, spec, live=True)
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return ImageFolderSource(files, str(path))
    if not path.exists():
        raise SourceError(f"{spec}: no such file or folder (and not a camera index, URL or 'synthetic')")
    if not path.is_file():
        raise SourceError(f"{spec}: not a file or folder")
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise SourceError(f"{spec}: cannot read: {exc.strerror}") from None
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFolderSource([path], str(path))
    return _open_capture(str(path), str(path), live=False)


def parse_size(text: str) -> tuple[int, int]:
    """``'320x240'`` -> (320, 240) (width, height); ConfigError otherwise."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or int(width) < 1 or int(height) < 1:
        raise ConfigError(f"size: expected WIDTHxHEIGHT such as 320x240, got {text!r}")
    return int(width), int(height)


def resized(frames: Iterable[np.ndarray], size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Frames scaled to ``size`` (width, height) where they differ (area filter when shrinking)."""
    for frame in frames:
        if (frame.shape[1], frame.shape[0]) == size:
            yield frame
            continue
        shrink = size[0] * size[1] < frame.shape[0] * frame.shape[1]
        yield cv2.resize(frame, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def paced(frames: Iterable[T], fps: float | None) -> Iterator[T]:
    """Yield at most ``fps`` items per second on a steady clock (None or 0: as fast as they come).

    Late items are not made up for with bursts: after a stall the schedule restarts from now.
    """
    if not fps:
        yield from frames
        return
    if fps < 0:
        raise ConfigError(f"fps: must be > 0, got {fps}")
    period = 1.0 / fps
    due = time.monotonic()
    for item in frames:
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        else:
            due = now  # running late: no catch-up burst
        yield item
        due += period


def limited(frames: Iterable[T], count: int | None) -> Iterator[T]:
    """The first ``count`` items (None: all)."""
    return iter(frames) if count is None else itertools.islice(frames, count)
