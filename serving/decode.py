"""Validate and decode frames: JPEG/PNG files or raw pixels -> one uint8 grayscale (H, W) array.

Dimensions are read from the file header and checked against the limits *before* a single pixel is
decoded, so a small file that claims a huge image (a decompression bomb) costs nothing. Colour is
converted to gray with ITU-R BT.601 luma, the conversion the model's training data used (OpenCV's
``COLOR_BGR2GRAY`` and ``IMREAD_GRAYSCALE``; see ``pvae.training.data``).

Pure functions of bytes and arrays: no gRPC here. Every failure is an ``InputError`` (or its
subclass ``PayloadTooLargeError``) whose message names the field and the limit.

    >>> limits = FrameLimits(max_height=1080, max_width=1920, max_pixels=1920 * 1080,
    ...                      max_bytes=1 << 22, min_side=16)
    >>> gray = decode_encoded(open("frame.jpg", "rb").read(), limits)     # (H, W) uint8
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

from pvae.errors import InputError
from pvae.serving.errors import PayloadTooLargeError

__all__ = [
    "ChannelOrder",
    "FrameLimits",
    "ImageHeader",
    "check_dimensions",
    "decode_encoded",
    "decode_raw",
    "gray_from_colour",
    "read_image_header",
]

#: PNG file signature (PNG spec, section 5.2).
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: JPEG start-of-image marker (ITU-T T.81, B.1.1.3).
JPEG_SOI = b"\xff\xd8"
#: JPEG end-of-image marker.
JPEG_EOI = b"\xff\xd9"
#: JPEG start-of-scan marker code: entropy-coded data follows; every frame header comes before it.
JPEG_SOS = 0xDA
#: Start-of-frame marker codes that carry the image size (T.81 table B.1: SOF0-3, 5-7, 9-11, 13-15;
#: 0xC4 DHT, 0xC8 JPG and 0xCC DAC share the range but are not frame headers).
JPEG_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
#: Marker codes with no length field (T.81 B.1.1.3: TEM and RST0-7, plus SOI/EOI).
JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8), 0xD8, 0xD9})
#: Channel counts a raw frame may have: gray, colour, colour + alpha.
RAW_CHANNELS = (1, 3, 4)
#: cv2 decode flags: grayscale via BT.601 luma (libjpeg's Y for JPEG, cvtColor for PNG), 8 bits,
#: and no EXIF rotation so the decoded size is the header's size.
IMDECODE_FLAGS = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION


class ChannelOrder(Enum):
    """Order of the colour channels of a raw frame (mirrors pvae.v1.ChannelOrder)."""

    BGR = "bgr"
    RGB = "rgb"


#: cvtColor codes by (channels, order). All use BT.601 luma weights 0.299/0.587/0.114.
_GRAY_CODES = {
    (3, ChannelOrder.BGR): cv2.COLOR_BGR2GRAY,
    (3, ChannelOrder.RGB): cv2.COLOR_RGB2GRAY,
    (4, ChannelOrder.BGR): cv2.COLOR_BGRA2GRAY,
    (4, ChannelOrder.RGB): cv2.COLOR_RGBA2GRAY,
}


@dataclass(frozen=True)
class FrameLimits:
    """What a frame may be; the server builds one from its config and the model's frame policy."""

    max_height: int
    """Largest height in pixels."""
    max_width: int
    """Largest width in pixels."""
    max_pixels: int
    """Largest height * width."""
    max_bytes: int
    """Largest payload (file or raw pixel bytes)."""
    min_side: int = 1
    """Smallest height and width the model's frame graph accepts (manifest frame_policy.min_side)."""


@dataclass(frozen=True)
class ImageHeader:
    """What a JPEG/PNG header says about its image."""

    format: str
    """``"jpeg"`` or ``"png"``."""
    height: int
    """Rows in pixels."""
    width: int
    """Columns in pixels."""


def check_dimensions(height: int, width: int, limits: FrameLimits, field: str) -> None:
    """Raise InputError unless an H x W frame is within ``limits``; ``field`` names the input."""
    if height < limits.min_side or width < limits.min_side:
        raise InputError(f"{field}: frame is {height}x{width} (HxW); each side must be at least "
                         f"{limits.min_side} pixels (the model's smallest frame)")
    if height > limits.max_height or width > limits.max_width:
        raise InputError(f"{field}: frame is {height}x{width} (HxW); the server accepts at most "
                         f"{limits.max_height}x{limits.max_width}")
    if height * width > limits.max_pixels:
        raise InputError(f"{field}: frame has {height * width} pixels; the server accepts at most "
                         f"{limits.max_pixels}")


def _check_payload(size: int, limits: FrameLimits, field: str) -> None:
    if size > limits.max_bytes:
        raise PayloadTooLargeError(f"{field}: {size} bytes exceeds the server's per-frame limit of "
                                   f"{limits.max_bytes} bytes")


def _png_header(data: bytes) -> ImageHeader:
    # Signature (8) + IHDR chunk: length (4) "IHDR" (4) width (4) height (4) ... (PNG spec 11.2.2).
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise InputError("frame.encoded: truncated or malformed PNG (no IHDR chunk after the signature)")
    width, height = struct.unpack(">II", data[16:24])
    return ImageHeader("png", int(height), int(width))


def _jpeg_header(data: bytes) -> ImageHeader:
    # Walk the marker segments up to the first start-of-frame (T.81 annex B). Each segment is
    # 0xFF, code, then (unless standalone) a 2-byte big-endian length that includes itself.
    pos = len(JPEG_SOI)
    size = len(data)
    while pos < size:
        if data[pos] != 0xFF:
            raise InputError(f"frame.encoded: malformed JPEG (expected a marker at byte {pos})")
        while pos < size and data[pos] == 0xFF:  # fill bytes may precede a marker code
            pos += 1
        if pos >= size:
            break
        code = data[pos]
        pos += 1
        if code in JPEG_STANDALONE_MARKERS:
            continue
        if pos + 2 > size:
            break
        (length,) = struct.unpack(">H", data[pos:pos + 2])
        if length < 2:
            raise InputError(f"frame.encoded: malformed JPEG (segment length {length} at byte {pos})")
        if code in JPEG_SOF_MARKERS:
            # length (2) precision (1) height (2) width (2) components (1)
            if pos + 7 > size:
                break
            height, width = struct.unpack(">HH", data[pos + 3:pos + 7])
            if height == 0:
                raise InputError("frame.encoded: JPEG with a deferred height (DNL marker) is not supported")
            return ImageHeader("jpeg", int(height), int(width))
        if code == JPEG_SOS:
            raise InputError("frame.encoded: malformed JPEG (scan data before any frame header)")
        pos += length
    raise InputError("frame.encoded: truncated JPEG (no frame header found)")


def read_image_header(data: bytes) -> ImageHeader:
    """Format and size of a JPEG or PNG file, from its header alone (no pixel is decoded)."""
    if data.startswith(PNG_SIGNATURE):
        return _png_header(data)
    if data.startswith(JPEG_SOI):
        return _jpeg_header(data)
    if not data:
        raise InputError("frame.encoded: empty image")
    raise InputError("frame.encoded: not a JPEG or PNG file (unknown signature); send JPEG, PNG or a raw frame")


def decode_encoded(data: bytes, limits: FrameLimits) -> np.ndarray:
    """A JPEG or PNG file -> uint8 gray (H, W). Checks size and header dims before decoding."""
    _check_payload(len(data), limits, "frame.encoded")
    header = read_image_header(data)
    check_dimensions(header.height, header.width, limits, "frame.encoded")
    if header.format == "jpeg" and data.rfind(JPEG_EOI) < 0:
        # libjpeg would pad a truncated file with gray and carry on; refuse instead.
        raise InputError("frame.encoded: truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), IMDECODE_FLAGS)
    if image is None:
        raise InputError(f"frame.encoded: could not decode the {header.format.upper()} image "
                         "(corrupt or truncated)")
    if image.shape != (header.height, header.width):
        # Internal invariant of the header parser; a mismatch means a malformed file.
        raise InputError(f"frame.encoded: decoded size {image.shape} does not match the header's "
                         f"{header.height}x{header.width}")
    return image


def decode_raw(height: int, width: int, channels: int, order: ChannelOrder, data: bytes,
               limits: FrameLimits) -> np.ndarray:
    """Raw uint8 (H, W, C) pixels -> uint8 gray (H, W); colour via BT.601 luma."""
    _check_payload(len(data), limits, "frame.raw.data")
    if channels not in RAW_CHANNELS:
        raise InputError(f"frame.raw.channels: must be 1, 3 or 4, got {channels}")
    check_dimensions(height, width, limits, "frame.raw")
    expected = height * width * channels
    if len(data) != expected:
        raise InputError(f"frame.raw.data: {len(data)} bytes, expected height*width*channels = "
                         f"{height}*{width}*{channels} = {expected}")
    pixels = np.frombuffer(data, dtype=np.uint8)
    if channels == 1:
        return pixels.reshape(height, width)
    return gray_from_colour(pixels.reshape(height, width, channels), order)


def gray_from_colour(pixels: np.ndarray, order: ChannelOrder) -> np.ndarray:
    """uint8 colour (H, W, 3 or 4) -> uint8 gray (H, W) by BT.601 luma (OpenCV's cvtColor)."""
    return cv2.cvtColor(pixels, _GRAY_CODES[(int(pixels.shape[2]), order)])
