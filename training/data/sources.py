"""Where natural images come from, before any preprocessing: scikit-image's bundled photographs, an
image folder, one image or a video (sampled frames), all as grayscale (BT.601 luma). Also the cheap
fingerprint of a source (names, sizes, mtimes) that keys the patch cache in :mod:`.cache`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pvae.errors import ConfigError, DataError, InputError, MissingDependencyError
from pvae.training.data.preprocess import UINT8_MAX, UINT16_MAX, _as_unit_float

__all__ = [
    "DEFAULT_MAX_FRAMES",
    "IMAGE_EXTENSIONS",
    "LUMA_WEIGHTS_BT601",
    "SKIMAGE_IMAGES",
    "load_images",
    "load_skimage_images",
    "to_grayscale",
]

# ITU-R BT.601 luma weights for R, G, B. OpenCV uses the same weights for COLOR_BGR2GRAY and for
# cv2.imread(..., IMREAD_GRAYSCALE), so skimage images, user images and served frames all agree.
# (skimage.color.rgb2gray uses the BT.709 weights 0.2125/0.7154/0.0721 instead; we do not.)
LUMA_WEIGHTS_BT601 = (0.299, 0.587, 0.114)

# At most this many frames are sampled (evenly) from a video source.
DEFAULT_MAX_FRAMES = 100

# File suffixes (lower case) that a folder source reads as images; cv2.imread decodes all of them.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}
)

# Natural-scene photographs bundled with scikit-image (no download needed), as name -> loader.
# Excluded: text/binary/synthetic images (page, text, horse, checkerboard, binary_blobs, logo,
# colorwheel, shepp_logan_phantom), microscopy/medical/astronomy images whose statistics are not
# those of natural scenes (cell, immunohistochemistry, microaneurysms, retina, hubble_deep_field),
# a motion-blurred photo (clock), a duplicate (cat is chelsea), 25x25 faces (lfw_subset) and every
# image that skimage fetches over the network with pooch (eagle, lily, skin, brain, kidney, vortex,
# cells3d, human_mitosis, ...), since nothing may be downloaded at run time.
_SKIMAGE_LOADERS: dict[str, Callable[[Any], np.ndarray]] = {
    "astronaut": lambda data: data.astronaut(),
    "brick": lambda data: data.brick(),
    "camera": lambda data: data.camera(),
    "chelsea": lambda data: data.chelsea(),
    "coffee": lambda data: data.coffee(),
    "coins": lambda data: data.coins(),
    "grass": lambda data: data.grass(),
    "gravel": lambda data: data.gravel(),
    "moon": lambda data: data.moon(),
    "motorcycle_left": lambda data: data.stereo_motorcycle()[0],
    "rocket": lambda data: data.rocket(),
}
SKIMAGE_IMAGES: tuple[str, ...] = tuple(_SKIMAGE_LOADERS)


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """An image as 2-D float32 in [0, 1]. RGB(A) is converted with the BT.601 luma weights
    (LUMA_WEIGHTS_BT601, channels in R, G, B order; alpha ignored); uint8 / 255, uint16 / 65535,
    bool -> {0, 1}, floats are assumed to be in [0, 1] already."""
    image = np.asarray(image)
    if image.dtype == np.bool_:
        image = image.astype(np.float64)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        scale = {np.dtype(np.uint8): UINT8_MAX, np.dtype(np.uint16): UINT16_MAX}.get(image.dtype, 1.0)
        gray = image[..., :3].astype(np.float64) @ np.asarray(LUMA_WEIGHTS_BT601) / scale
    elif image.ndim == 2:
        gray = _as_unit_float(image)
    else:
        raise InputError(f"expected a 2-D gray or (H, W, 3|4) colour image, got shape {image.shape}")
    return gray.astype(np.float32)


def load_skimage_images() -> dict[str, np.ndarray]:
    """The bundled scikit-image photographs of :data:`SKIMAGE_IMAGES` as float32 gray in [0, 1]."""
    try:
        import skimage.data as skimage_data
    except ImportError as error:
        raise MissingDependencyError(
            "the default natural images come from scikit-image: pip install 'pvae[train]'"
        ) from error
    images = {}
    for name, loader in _SKIMAGE_LOADERS.items():
        try:
            images[name] = to_grayscale(loader(skimage_data))
        except (ImportError, OSError, ValueError) as error:  # a build of skimage without the file
            raise DataError(f"scikit-image's bundled image {name!r} could not be loaded: {error}") from error
    return images


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _folder_images(root: Path) -> list[Path]:
    """Image files under `root`, recursively, sorted by their path relative to root."""
    files = [
        p
        for p in root.rglob("*")
        if _is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read_gray(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)  # BT.601 luma, uint8
    if image is None:
        raise DataError(f"cannot read image {path}: unreadable or not an image")
    return image


def _frame_to_gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame
    code = cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY  # BT.601 luma
    return cv2.cvtColor(frame, code)


def _even_picks(count: int, wanted: int) -> np.ndarray:
    """Up to `wanted` evenly spaced indices in range(count), first and last included."""
    return np.unique(np.linspace(0, count - 1, min(count, wanted)).round().astype(np.int64))


def _read_video(path: Path, max_frames: int) -> dict[str, np.ndarray]:
    """Up to max_frames frames, evenly spaced over the video, as uint8 gray, named frame_NNNNNN."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise DataError(f"cannot open video {path}: unreadable or unsupported format")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        kept: list[tuple[int, np.ndarray]] = []
        if count > 0:
            wanted = set(_even_picks(count, max_frames).tolist())
            for index in range(count):
                if not capture.grab():
                    break  # the container over-reported its length
                if index in wanted:
                    ok, frame = capture.retrieve()
                    if ok and frame is not None:
                        kept.append((index, _frame_to_gray(frame)))
        else:
            # Unknown length: keep every stride-th frame, halving the kept set and doubling the
            # stride whenever it exceeds 2 * max_frames, so memory stays bounded; pick evenly after.
            stride, index = 1, 0
            while True:
                ok, frame = capture.read()
                if not ok or frame is None:
                    break
                if index % stride == 0:
                    kept.append((index, _frame_to_gray(frame)))
                    if len(kept) > 2 * max_frames:
                        kept, stride = kept[::2], stride * 2
                index += 1
            kept = [kept[i] for i in _even_picks(len(kept), max_frames)] if kept else []
    finally:
        capture.release()
    if not kept:
        raise DataError(f"no frames could be decoded from video {path}")
    return {f"frame_{index:06d}": frame for index, frame in kept}


def _check_min_size(images: Mapping[str, np.ndarray], min_size: int, where: Path) -> None:
    for name, image in images.items():
        if min(image.shape[:2]) < min_size:
            raise DataError(
                f"image {name!r} in {where} is {image.shape[0]}x{image.shape[1]}: each side must be "
                f">= {min_size} (one patch plus its border, and wider than the filter kernels)"
            )


def load_images(
    path: str | Path, *, max_frames: int = DEFAULT_MAX_FRAMES, min_size: int = 1
) -> dict[str, np.ndarray]:
    """Grayscale uint8 images (as decoded by OpenCV, BT.601 luma) from a folder, an image or a video.

    - folder: every file with an image suffix (IMAGE_EXTENSIONS), recursively, hidden files
      skipped, sorted by relative path; keys are the relative POSIX paths.
    - a file with an image suffix: that one image, keyed by its file name.
    - any other file: read as a video (cv2.VideoCapture); up to max_frames frames evenly spaced
      over it, keyed frame_NNNNNN by frame index.

    Raises :class:`DataError` naming the path for a missing path, a folder without images, an
    unreadable image or video, or an image with a side below min_size.
    """
    path = Path(path).expanduser()
    if not isinstance(max_frames, int) or max_frames < 1:
        raise ConfigError(f"max_frames must be an int >= 1, got {max_frames!r}")
    if not path.exists():
        raise DataError(f"image source not found: {path} (expected an image folder or a video file)")
    if path.is_dir():
        files = _folder_images(path)
        if not files:
            suffixes = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise DataError(f"no images found in folder {path} (looked for {suffixes})")
        images = {p.relative_to(path).as_posix(): _read_gray(p) for p in files}
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        images = {path.name: _read_gray(path)}
    else:
        images = _read_video(path, max_frames)
    _check_min_size(images, min_size, path)
    return images


def _source_fingerprint(source: str | Path | None, max_frames: int) -> tuple[str, dict[str, Any]]:
    """(label, JSON-ready fingerprint) of an image source, without decoding any image: names,
    sizes and mtimes for files; the skimage version and image names for the default source."""
    if source is None:
        try:
            skimage_version = metadata.version("scikit-image")
        except metadata.PackageNotFoundError as error:
            raise MissingDependencyError(
                "the default natural images come from scikit-image: pip install 'pvae[train]'"
            ) from error
        return "skimage", {"kind": "skimage", "version": skimage_version, "images": list(SKIMAGE_IMAGES)}
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"image source not found: {path} (expected an image folder or a video file)")
    if path.is_dir():
        files = _folder_images(path)
        if not files:
            raise DataError(f"no images found in folder {path}")
        listing = [[p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
        return str(path), {"kind": "folder", "files": listing}
    stat = path.stat()
    kind = "image" if path.suffix.lower() in IMAGE_EXTENSIONS else "video"
    fingerprint: dict[str, Any] = {"kind": kind, "file": [path.name, stat.st_size, stat.st_mtime_ns]}
    if kind == "video":
        fingerprint["max_frames"] = max_frames
    return str(path), fingerprint

