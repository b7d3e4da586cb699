"""Frames on the way out: numpy images or image files -> ``pvae.v1.Frame`` messages.

A frame is a uint8 numpy array, (H, W) gray or (H, W, C) with C in {1, 3, 4} (BGR(A) by default,
as OpenCV returns them), or the bytes of a JPEG/PNG file, or a ready ``pvae.v1.Frame``. Arrays
travel raw (exact, no CPU spent) or compressed on the client (``png`` is lossless, ``jpeg`` is
small and lossy); the server converts colour to gray with BT.601 luma either way. (A colour
file is converted by the image decoder, whose rounding can differ by one grey level from the raw
path; ``to_gray`` on the client, or ``Client(gray=True)``, gives the raw path's exact pixels and
a third of the bytes.)

    >>> message = frame_to_proto(np.zeros((240, 320, 3), np.uint8), encoding="jpeg")
    >>> message.WhichOneof("source")
    'encoded'
"""

from __future__ import annotations

from typing import Literal, TypeAlias, get_args

import cv2
import numpy as np

from pvae.errors import ConfigError, InputError
from pvae.v1 import pvae_pb2 as pb

__all__ = [
    "CHANNEL_ORDERS",
    "DEFAULT_JPEG_QUALITY",
    "FRAME_ENCODINGS",
    "ChannelOrder",
    "FrameEncoding",
    "FrameLike",
    "frame_to_proto",
    "to_gray",
]

FrameEncoding = Literal["raw", "jpeg", "png"]
ChannelOrder = Literal["bgr", "rgb"]
#: How arrays travel: raw pixels, or a JPEG/PNG file made on the client.
FRAME_ENCODINGS: tuple[FrameEncoding, ...] = get_args(FrameEncoding)
#: Channel orders of colour arrays.
CHANNEL_ORDERS: tuple[ChannelOrder, ...] = get_args(ChannelOrder)
#: JPEG quality of client-side compression (libjpeg users' usual size/quality compromise).
DEFAULT_JPEG_QUALITY = 90
#: Channel counts pvae.proto RawFrame accepts.
ALLOWED_CHANNELS = (1, 3, 4)

#: What ``encode`` and ``stream`` accept as one frame.
FrameLike: TypeAlias = np.ndarray | bytes | pb.Frame

_ORDER_ENUM = {"bgr": pb.CHANNEL_ORDER_BGR, "rgb": pb.CHANNEL_ORDER_RGB}
_TO_BGR = {("rgb", 3): cv2.COLOR_RGB2BGR, ("rgb", 4): cv2.COLOR_RGBA2BGR, ("bgr", 4): cv2.COLOR_BGRA2BGR}
_TO_GRAY = {("bgr", 3): cv2.COLOR_BGR2GRAY, ("rgb", 3): cv2.COLOR_RGB2GRAY,
            ("bgr", 4): cv2.COLOR_BGRA2GRAY, ("rgb", 4): cv2.COLOR_RGBA2GRAY}


def _check_array(image: np.ndarray) -> np.ndarray:
    """A C-contiguous uint8 (H, W, C) view of ``image``; InputError on anything else."""
    if image.dtype != np.uint8:
        raise InputError(f"frame: dtype must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in ALLOWED_CHANNELS:
        raise InputError(f"frame: shape must be (H, W) or (H, W, C) with C in {ALLOWED_CHANNELS}, got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"frame: must not be empty, got shape {image.shape}")
    return np.ascontiguousarray(image)


def to_gray(image: np.ndarray, channel_order: ChannelOrder = "bgr") -> np.ndarray:
    """(H, W) uint8 BT.601 luma of a frame, exactly as the server (and OpenCV) computes it."""
    array = _check_array(image)
    channels = array.shape[2]
    if channels == 1:
        return array[:, :, 0]
    return cv2.cvtColor(array, _TO_GRAY[(channel_order, channels)])


def frame_to_proto(frame: FrameLike, encoding: FrameEncoding = "raw", channel_order: ChannelOrder = "bgr",
                   jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> pb.Frame:
    """One frame as a ``pvae.v1.Frame`` (see the module docstring); InputError on a bad array."""
    if encoding not in FRAME_ENCODINGS:
        raise ConfigError(f"frame encoding: must be one of {', '.join(FRAME_ENCODINGS)}, got {encoding!r}")
    if channel_order not in CHANNEL_ORDERS:
        raise ConfigError(f"channel order: must be one of {', '.join(CHANNEL_ORDERS)}, got {channel_order!r}")
    if isinstance(frame, pb.Frame):
        return frame
    if isinstance(frame, bytes | bytearray | memoryview):
        return pb.Frame(encoded=bytes(frame))
    if not isinstance(frame, np.ndarray):
        raise InputError(f"frame: expected a uint8 numpy array, image file bytes or pvae.v1.Frame, "
                         f"got {type(frame).__name__}")
    array = _check_array(frame)
    height, width, channels = array.shape
    if encoding == "raw":
        return pb.Frame(raw=pb.RawFrame(height=height, width=width, channels=channels,
                                        channel_order=_ORDER_ENUM[channel_order], data=array.tobytes()))
    if (channel_order, channels) in _TO_BGR:  # imencode wants BGR (or gray)
        array = cv2.cvtColor(array, _TO_BGR[(channel_order, channels)])
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if encoding == "jpeg" else []
    ok, data = cv2.imencode(f".{'jpg' if encoding == 'jpeg' else 'png'}", array, params)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image with 1, 3 or 4 channels
        raise InputError(f"frame: OpenCV could not encode a {array.shape} image as {encoding}")
    return pb.Frame(encoded=data.tobytes())
