"""The transport-free half of a client: request building and stream bookkeeping, shared by the
synchronous (``Client``) and asyncio (``AsyncClient``) front ends.

``RequestFactory`` turns frames and options into ``pvae.v1`` requests. ``StreamBook`` follows one
stream: it numbers the frames, stamps their send times, and matches each response to its frame.
Responses arrive in send order (pvae.proto StreamEncode), so every frame sent before the answered
one and not yet answered was dropped; the book forgets those frames and reports the
client-measured latency of the answered one.

    >>> book = StreamBook(factory, StreamSettings(window=4), EncodeOptions(seed=1))
    >>> request = book.request(frame)            # the first one carries settings and options
    >>> result = book.result(response)           # FrameResult with latency_seconds
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from pvae.errors import ConfigError, InputError
from pvae.v1 import pvae_pb2 as pb

from .errors import FrameError, code_from_number
from .frames import (
    CHANNEL_ORDERS,
    DEFAULT_JPEG_QUALITY,
    FRAME_ENCODINGS,
    ChannelOrder,
    FrameEncoding,
    FrameLike,
    frame_to_proto,
    to_gray,
)
from .options import MAX_JPEG_QUALITY, EncodeOptions, StreamSettings
from .results import FrameResult, decode_result
from .stats import StreamStats

__all__ = ["MAX_SEQUENCE", "RequestFactory", "StreamBook"]

#: Sequence numbers are uint64 (pvae.proto StreamEncodeRequest.sequence).
MAX_SEQUENCE = 2**64 - 1


@dataclass(frozen=True)
class RequestFactory:
    """Frames and options -> request messages, with the client's defaults."""

    options: EncodeOptions = field(default_factory=EncodeOptions)
    """Options used when a call gives none."""
    frame_encoding: FrameEncoding = "raw"
    """How numpy frames travel: ``raw``, ``jpeg`` or ``png`` (see ``pvae.clients.frames``)."""
    channel_order: ChannelOrder = "bgr"
    """Channel order of colour numpy frames."""
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    """Quality of client-side JPEG compression."""
    gray: bool = False
    """Convert colour numpy frames to gray on the client (BT.601, exactly as the server would): a third
    of the bytes on the wire, same results."""

    def __post_init__(self) -> None:
        if self.frame_encoding not in FRAME_ENCODINGS:
            raise ConfigError(f"frame_encoding: must be one of {', '.join(FRAME_ENCODINGS)}, "
                              f"got {self.frame_encoding!r}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise ConfigError(f"channel_order: must be one of {', '.join(CHANNEL_ORDERS)}, got {self.channel_order!r}")
        if not 1 <= self.jpeg_quality <= MAX_JPEG_QUALITY:
            raise ConfigError(f"jpeg_quality: must be in [1, {MAX_JPEG_QUALITY}], got {self.jpeg_quality}")

    def frame(self, frame: FrameLike) -> pb.Frame:
        """One frame message."""
        if self.gray and isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] > 1:
            frame = to_gray(frame, self.channel_order)
        return frame_to_proto(frame, self.frame_encoding, self.channel_order, self.jpeg_quality)

    def encode(self, frame: FrameLike, options: EncodeOptions | None) -> pb.EncodeRequest:
        """A unary request for one frame."""
        return pb.EncodeRequest(frame=self.frame(frame), options=(options or self.options).to_proto())

    def patches(self, patches: np.ndarray, options: EncodeOptions | None) -> pb.EncodeRequest:
        """A unary request for float32 (N, P * P) model-space patches."""
        array = np.asarray(patches)
        if array.ndim != 2 or array.shape[0] < 1 or not np.issubdtype(array.dtype, np.floating):
            raise InputError(f"patches: expected a float (N, P * P) array with N >= 1, got {array.dtype} "
                             f"{array.shape}")
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        return pb.EncodeRequest(patches=pb.Patches(count=array.shape[0], data=data),
                                options=(options or self.options).to_proto())


@dataclass(eq=False)
class _Pending:
    sequence: int
    sent_at: float
    frame: np.ndarray | None


class StreamBook:
    """Numbering, timing and matching for one stream (thread-safe; see the module docstring)."""

    def __init__(self, factory: RequestFactory, settings: StreamSettings, options: EncodeOptions | None = None,
                 address: str = "", start_sequence: int = 0, keep_inputs: bool = False,
                 stats: StreamStats | None = None, decode: bool = True) -> None:
        if not 0 <= start_sequence <= MAX_SEQUENCE:
            raise ConfigError(f"start_sequence: must be in [0, 2^64 - 1], got {start_sequence}")
        self.factory = factory
        self.settings = settings
        self.options = options or factory.options
        self.address = address
        self.keep_inputs = keep_inputs
        self.decode = decode
        self.stats = stats if stats is not None else StreamStats()
        self._started = False
        self._next_sequence = start_sequence
        self._pending: deque[_Pending] = deque()
        self._lock = threading.Lock()

    def request(self, frame: FrameLike) -> pb.StreamEncodeRequest:
        """The next frame's request; the first carries the stream settings and the options."""
        message = self._message(frame)
        self._sent(message.ByteSize(), frame)
        return message

    def request_bytes(self, frame: FrameLike) -> bytes:
        """The next frame's request, serialized once (what ``pvae.clients.wire.stream_encode`` sends)."""
        data = self._message(frame).SerializeToString()
        self._sent(len(data), frame)
        return data

    def _message(self, frame: FrameLike) -> pb.StreamEncodeRequest:
        message = pb.StreamEncodeRequest(sequence=self._next_sequence, frame=self.factory.frame(frame))
        if not self._started:
            self._started = True
            message.settings.CopyFrom(self.settings.to_proto())
            message.options.CopyFrom(self.options.to_proto())
        return message

    def _sent(self, nbytes: int, frame: FrameLike) -> None:
        kept = frame if self.keep_inputs and isinstance(frame, np.ndarray) else None
        with self._lock:
            sent_at = self.stats.record_sent(nbytes)
            self._pending.append(_Pending(self._next_sequence, sent_at, kept))
        self._next_sequence = (self._next_sequence + 1) & MAX_SEQUENCE

    def in_flight(self) -> int:
        """Frames sent and not yet answered or reported dropped."""
        with self._lock:
            return len(self._pending)

    def result(self, response: pb.StreamEncodeResponse, nbytes: int | None = None) -> FrameResult:
        """Match a response (``nbytes`` on the wire; None: measured here) to its frame: drop what was
        dropped, time what was answered."""
        outcome = response.WhichOneof("outcome")
        with self._lock:
            answered: _Pending | None = None
            while self._pending and self._pending[0].sequence != response.sequence:
                self._pending.popleft()  # sent before the answered frame and unanswered: dropped
            if self._pending:
                answered = self._pending.popleft()
        received_at = self.stats.now()
        latency = received_at - answered.sent_at if answered is not None and outcome is not None else None
        frame = answered.frame if answered is not None else None
        dropped = tuple(int(s) for s in response.dropped_sequences)
        size = response.ByteSize() if nbytes is None else nbytes
        if outcome == "result":
            result = decode_result(response.result, response.sequence, int(response.dropped_count), dropped,
                                   latency, size, frame, arrays=self.decode)
        else:
            error = None
            if outcome == "error":
                error = FrameError(self.address, code_from_number(response.error.code), response.error.message,
                                   int(response.sequence))
            result = FrameResult(sequence=int(response.sequence), error=error,
                                 dropped_count=int(response.dropped_count), dropped_sequences=dropped,
                                 latency_seconds=latency, response_bytes=size, input=frame)
        self.stats.record_result(result)
        return result
