"""A synthetic camera: a smooth pan (with a slow zoom) over a panorama of natural images.

The panorama is stitched from images that ship inside scikit-image (``skimage.data``: astronaut,
coffee, chelsea, rocket, camera), so the demo needs no camera and no download. Without
scikit-image, a procedurally generated scene (1/f noise, the spectrum of natural images, plus
shapes) stands in. Frames are deterministic: frame ``i`` is always the same picture.

    >>> camera = SyntheticCamera(height=240, width=320)
    >>> frame = camera.frame(0)            # uint8 (240, 320, 3) BGR
    >>> frames = itertools.islice(camera, 100)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import cv2
import numpy as np

from pvae.errors import ConfigError

__all__ = [
    "DEFAULT_HEIGHT",
    "DEFAULT_WIDTH",
    "SKIMAGE_SCENE",
    "SyntheticCamera",
    "natural_panorama",
    "procedural_panorama",
]

#: Default frame size: 320 x 240 (QVGA), 15 x 20 patches of 16 pixels.
DEFAULT_HEIGHT, DEFAULT_WIDTH = 240, 320
#: Panorama height in pixels; every image is scaled to it (skimage's images are 300..512 tall).
PANORAMA_HEIGHT = 512
#: Bundled scikit-image images stitched left to right (all ship with the package; no download).
SKIMAGE_SCENE = ("astronaut", "coffee", "chelsea", "rocket", "camera")
#: Frames for one horizontal sweep there and back (20 s at 30 fps).
PAN_PERIOD_FRAMES = 600
#: Vertical drift and zoom cycle at incommensurate periods, so the path never quite repeats.
TILT_PERIOD_FRAMES = 270
ZOOM_PERIOD_FRAMES = 410
#: The view spans between 1x and this many times the output size of panorama pixels.
MAX_ZOOM_OUT = 1.6
#: Procedural scene: width in pixels and the spectral slope of its 1/f^alpha noise (natural images: ~1).
PROCEDURAL_WIDTH = 2048
SPECTRAL_SLOPE = 1.0
PROCEDURAL_SHAPES = 60
PROCEDURAL_SEED = 0


def natural_panorama(height: int = PANORAMA_HEIGHT) -> np.ndarray:
    """uint8 (height, W, 3) BGR: scikit-image's bundled natural images side by side.

    Raises ImportError when scikit-image is not installed.
    """
    from skimage import data  # optional dependency (pvae[train]); the caller falls back

    tiles = []
    for name in SKIMAGE_SCENE:
        image = np.asarray(getattr(data, name)())
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        scale = height / image.shape[0]
        width = round(image.shape[1] * scale)
        tiles.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC))
    return np.ascontiguousarray(np.hstack(tiles))


def procedural_panorama(height: int = PANORAMA_HEIGHT, width: int = PROCEDURAL_WIDTH,
                        seed: int = PROCEDURAL_SEED) -> np.ndarray:
    """uint8 (height, width, 3) BGR: coloured 1/f noise with random discs and bars (deterministic)."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0  # the mean; its amplitude is zeroed below
    channels = []
    for _ in range(3):
        spectrum = (rng.standard_normal(radius.shape) + 1j * rng.standard_normal(radius.shape)) / radius**SPECTRAL_SLOPE
        spectrum[0, 0] = 0.0
        plane = np.fft.irfft2(spectrum, s=(height, width))
        plane = (plane - plane.min()) / (np.ptp(plane) + 1e-12)
        channels.append(plane)
    scene = (np.stack(channels, axis=-1) * 255).astype(np.uint8)
    for _ in range(PROCEDURAL_SHAPES):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            cv2.circle(scene, (x, y), int(rng.integers(8, 60)), colour, -1, cv2.LINE_AA)
        else:
            w, h = int(rng.integers(10, 120)), int(rng.integers(4, 30))
            cv2.rectangle(scene, (x, y), (x + w, y + h), colour, -1, cv2.LINE_AA)
    return scene


class SyntheticCamera:
    """An endless, deterministic camera pan over a panorama (see the module docstring)."""

    def __init__(self, height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH,
                 panorama: np.ndarray | None = None) -> None:
        if height < 1 or width < 1:
            raise ConfigError(f"synthetic frame size: must be positive, got {width}x{height}")
        if panorama is None:
            try:
                panorama = natural_panorama()
                self.scene = "scikit-image natural images (" + ", ".join(SKIMAGE_SCENE) + ")"
            except ImportError:
                panorama = procedural_panorama()
                self.scene = "procedural 1/f scene (scikit-image is not installed)"
        else:
            self.scene = "custom panorama"
        # The view must fit inside the panorama at the widest zoom: upscale small panoramas.
        need = max(height * MAX_ZOOM_OUT / panorama.shape[0], width * MAX_ZOOM_OUT / panorama.shape[1], 1.0)
        if need > 1.0:
            size = (math.ceil(panorama.shape[1] * need), math.ceil(panorama.shape[0] * need))
            panorama = cv2.resize(panorama, size, interpolation=cv2.INTER_CUBIC)
        self.panorama = panorama
        self.height = height
        self.width = width

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index``: uint8 (height, width, 3) BGR."""
        pano_h, pano_w = self.panorama.shape[:2]
        zoom = 1.0 + (MAX_ZOOM_OUT - 1.0) * 0.5 * (1 - math.cos(2 * math.pi * index / ZOOM_PERIOD_FRAMES))
        view_w, view_h = self.width * zoom, self.height * zoom  # panorama pixels under the view
        pan = 0.5 * (1 - math.cos(2 * math.pi * index / PAN_PERIOD_FRAMES))  # 0 .. 1 .. 0
        tilt = 0.5 * (1 - math.cos(2 * math.pi * index / TILT_PERIOD_FRAMES))
        left = pan * (pano_w - view_w)
        top = tilt * (pano_h - view_h)
        # Output pixel (u, v) samples panorama (left + u * zoom, top + v * zoom): sub-pixel smooth.
        matrix = np.array([[zoom, 0.0, left], [0.0, zoom, top]], dtype=np.float64)
        return cv2.warpAffine(self.panorama, matrix, (self.width, self.height),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.frame(index) for index in itertools.count())
