"""The synchronous client of ``pvae.v1.Encoder``.

    >>> with Client("127.0.0.1:50051") as client:
    ...     print(client.info().model.n_latents)
    ...     result = client.encode(frame, EncodeOptions(seed=1))          # FrameResult
    ...     for result in client.stream(frames, window=4, policy="drop_oldest"):
    ...         print(result.sequence, result.counts.sum(), result.latency_seconds)

Before the first frame the client waits (bounded by ``RetryPolicy.timeout_s``) for the server's
health check to say SERVING, retrying ``UNAVAILABLE`` with backoff; after that, ``UNAVAILABLE``
becomes ``ServerUnavailable`` and any other failed call ``RemoteError``. A stream reads its frames
from the iterable in a gRPC thread and, under the ``block`` policy, keeps at most ``window`` frames
in flight, so the measured latency is the service's and not a queue in the transport.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pvae.errors import ConfigError
from pvae.v1 import pvae_pb2 as pb
from pvae.v1 import pvae_pb2_grpc as pb_grpc

from . import wire
from .channel import DEFAULT_TARGET, HEALTH_SERVICE, ChannelConfig, LoadBalancing, Retry, RetryPolicy, with_token
from .errors import error_from_rpc
from .frames import DEFAULT_JPEG_QUALITY, ChannelOrder, FrameEncoding, FrameLike
from .options import EncodeOptions, Policy, StreamSettings
from .results import FrameResult, ServerInfo, decode_info, decode_result
from .stats import StreamStats
from .streaming import RequestFactory, StreamBook

__all__ = ["HEALTH_SERVICE", "Client", "FrameStream"]

T = TypeVar("T")
#: The kind of channel a client holds: grpc.Channel (Client) or grpc.aio.Channel (AsyncClient).
ChannelT = TypeVar("ChannelT")
#: How often a blocked stream sender checks whether the stream was cancelled, in seconds.
GATE_POLL_SECONDS = 0.1
#: The readiness check's request.
HEALTH_REQUEST = health_pb2.HealthCheckRequest(service=HEALTH_SERVICE)


class _Base(Generic[ChannelT]):
    """What the synchronous and asyncio clients share: their arguments (see :class:`Client`) and
    state, without I/O. Each attaches its kind of channel in ``_attach``."""

    def __init__(self, target: str | Sequence[str] = DEFAULT_TARGET, *,
                 credentials: grpc.ChannelCredentials | None = None, metadata: Sequence[tuple[str, str]] = (),
                 retry: RetryPolicy | None = None, timeout: float | None = None, options: EncodeOptions | None = None,
                 frame_encoding: FrameEncoding = "raw", channel_order: ChannelOrder = "bgr",
                 jpeg_quality: int = DEFAULT_JPEG_QUALITY, gray: bool = False,
                 load_balancing: LoadBalancing = "round_robin",
                 channel_options: Sequence[tuple[str, Any]] = (), channel: ChannelT | None = None,
                 token: str | None = None) -> None:
        self.config = ChannelConfig.create(target, credentials, with_token(metadata, token), load_balancing,
                                           channel_options)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.factory = RequestFactory(options or EncodeOptions(), frame_encoding, channel_order, jpeg_quality, gray)
        self._info: ServerInfo | None = None
        self._ready = False
        self._owns_channel = channel is None
        self._attach(channel)

    def _attach(self, channel: ChannelT | None) -> None:
        """Take ``channel`` (None: the client dials ``config`` itself)."""
        raise NotImplementedError

    @property
    def address(self) -> str:
        """The target(s) this client dials, as given."""
        return self.config.address

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata sent with every call."""
        return self.config.metadata

    def _gate_size(self, settings: StreamSettings, info: ServerInfo) -> int | None:
        """Frames the sender may have in flight: the window under ``block``, unbounded under drop_oldest.

        A window above the server's limit is refused here, before the stream opens.
        """
        if settings.window is not None and settings.window > info.limits.max_window:
            raise ConfigError(f"window: the server at {self.address} allows at most "
                              f"max_window={info.limits.max_window} frames in flight, got {settings.window}")
        if settings.policy != "block":
            return None
        return settings.window or info.limits.default_window


class _Sender:
    """The request side of a stream, iterated in a gRPC thread: frames -> requests, holding back
    while the window is full. It holds no reference to its FrameStream, so an abandoned stream is
    garbage-collected, and its ``__del__`` cancels the call and releases this thread."""

    def __init__(self, frames: Iterable[FrameLike], book: StreamBook, gate: int | None) -> None:
        self.frames = frames
        self.book = book
        self.gate = threading.Semaphore(gate) if gate is not None else None
        self.stop = threading.Event()
        self.error: BaseException | None = None
        """What the frame source raised, if it failed (re-raised to the consumer)."""

    def requests(self) -> Iterator[bytes]:
        try:
            for frame in self.frames:
                if self.gate is not None:
                    while not self.gate.acquire(timeout=GATE_POLL_SECONDS):
                        if self.stop.is_set():
                            return
                if self.stop.is_set():
                    return
                yield self.book.request_bytes(frame)
        except Exception as exc:  # a failing source ends the stream cleanly; the consumer re-raises it
            self.error = exc


class FrameStream(Iterator[FrameResult]):
    """The results of ``Client.stream``, in the order the frames were sent.

    Iterate it to the end, or ``close()`` it (or use it as a context manager) to cancel the call.
    ``stats`` follows the stream live (frames, drops, latency, bytes).
    """

    def __init__(self, client: Client, frames: Iterable[FrameLike], book: StreamBook, gate: int | None,
                 timeout: float | None) -> None:
        self._address = client.address
        self._book = book
        self._sender = _Sender(frames, book, gate)
        self._done = False
        self.stats: StreamStats = book.stats
        """Live statistics of this stream."""
        self._call = client._stream_encode(self._sender.requests(), timeout=timeout, metadata=client.metadata)

    def __iter__(self) -> FrameStream:
        return self

    def __next__(self) -> FrameResult:
        if self._done:
            raise StopIteration
        try:
            response = next(self._call)
        except StopIteration:
            self._finish()
            if self._sender.error is not None:
                raise self._sender.error from None
            raise
        except grpc.RpcError as exc:
            self._finish()
            if self._sender.error is not None:
                raise self._sender.error from None
            raise error_from_rpc(self._address, exc) from None
        result = self._book.result(response.message, response.nbytes)
        if self._sender.gate is not None and not result.is_drop_report:
            self._sender.gate.release()
        return result

    def _finish(self) -> None:
        self._done = True
        self._sender.stop.set()
        self.stats.finish()

    def in_flight(self) -> int:
        """Frames sent and not yet answered."""
        return self._book.in_flight()

    def close(self) -> None:
        """Cancel the stream (frames in flight are abandoned); idempotent."""
        if not self._done:
            self._finish()
            self._call.cancel()

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        # An abandoned stream must not keep its call open and its sender thread waiting.
        if not getattr(self, "_done", True) and hasattr(self, "_call"):
            self.close()


class Client(_Base[grpc.Channel]):
    """A synchronous client of a pvae server (see the module docstring).

    Args:
        target: ``host:port``, a gRPC target such as ``dns:///pvae.ns.svc:50051``, or several
            host:port targets (a sequence or a comma-separated string), balanced round-robin.
        credentials: TLS credentials (``pvae.clients.tls_credentials``); None for plaintext.
        metadata: (key, value) pairs sent with every call.
        retry: how long to retry UNAVAILABLE while the server starts.
        timeout: deadline of each unary call in seconds (None: none).
        options: default EncodeOptions of ``encode`` and ``stream``.
        frame_encoding: how numpy frames travel (``raw``, ``jpeg`` or ``png``).
        channel_order: channel order of colour numpy frames (``bgr`` as OpenCV, or ``rgb``).
        jpeg_quality: quality of client-side JPEG compression.
        gray: convert colour numpy frames to gray before sending (BT.601 as the server does; a third
            of the bytes, identical results).
        load_balancing: ``round_robin`` (default) or ``pick_first``.
        channel_options: extra gRPC channel arguments.
        channel: an already open channel to use instead of dialling (tests, custom interceptors);
            the client does not close it.
        token: a bearer token sent as ``authorization: Bearer <token>`` with every call
            (``pvae.clients.channel.read_token`` finds one in a file or ``$PVAE_TOKEN``).
    """

    def _attach(self, channel: grpc.Channel | None) -> None:
        self._channel = channel if channel is not None else self.config.open()
        self._stub = pb_grpc.EncoderStub(self._channel)
        self._stream_encode = wire.stream_encode(self._channel)
        self._encode_call = wire.encode(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing

    def _retrying(self, attempt: Callable[[float | None], T]) -> T:
        """Run ``attempt(deadline_seconds)``, retrying UNAVAILABLE with backoff for RetryPolicy.timeout_s."""
        retry = Retry(self.retry, self.address)
        while True:
            try:
                return attempt(self.timeout)
            except grpc.RpcError as exc:
                pause = retry.after_failure(exc)
            time.sleep(pause)

    def wait_until_ready(self, timeout: float | None = None) -> None:
        """Block until the server's health check says SERVING (ServerUnavailable after ``timeout``,
        default ``RetryPolicy.timeout_s``). Called before the first frame; safe to call any time."""
        retry = Retry(self.retry, self.address, timeout)
        while (pause := retry.after_health_check(self._check_health(retry))) is not None:
            time.sleep(pause)
        self._ready = True

    def _check_health(self, retry: Retry) -> health_pb2.HealthCheckResponse | grpc.RpcError:
        try:
            return self._health.Check(HEALTH_REQUEST, timeout=retry.attempt_timeout(), metadata=self.metadata)
        except grpc.RpcError as exc:
            return exc

    def _ensure_ready(self) -> None:
        if not self._ready:
            self.wait_until_ready()

    # ------------------------------------------------------------------ calls

    def info(self, refresh: bool = False) -> ServerInfo:
        """Model and server metadata (cached; ``refresh=True`` asks again)."""
        with self._lock:
            if self._info is None or refresh:
                response = self._retrying(lambda timeout: self._stub.Info(pb.InfoRequest(), timeout=timeout,
                                                                          metadata=self.metadata))
                self._info = decode_info(response)
            return self._info

    def encode(self, frame: FrameLike, options: EncodeOptions | None = None) -> FrameResult:
        """Encode one frame (numpy image, image file bytes or pvae.v1.Frame) with unary Encode."""
        request = self.factory.encode(frame, options)
        return self._encode(request)

    def encode_patches(self, patches: np.ndarray, options: EncodeOptions | None = None) -> FrameResult:
        """Encode float32 (N, P * P) model-space patches; arrays come back (N, K)."""
        return self._encode(self.factory.patches(patches, options))

    def _encode(self, request: pb.EncodeRequest) -> FrameResult:
        self._ensure_ready()
        started = time.perf_counter()
        sized = self._retrying(lambda timeout: self._encode_call(request, timeout=timeout, metadata=self.metadata))
        latency = time.perf_counter() - started
        return decode_result(sized.message.result, latency_seconds=latency, response_bytes=sized.nbytes)

    def stream(self, frames: Iterable[FrameLike], *, window: int | None = None, policy: Policy = "block",
               options: EncodeOptions | None = None, start_sequence: int = 0, keep_inputs: bool = False,
               timeout: float | None = None, stats: StreamStats | None = None, decode: bool = True) -> FrameStream:
        """Stream frames; the results come back in order (see :class:`FrameStream`).

        Args:
            frames: any iterable of frames; it is read in a gRPC thread, as fast as the window allows.
            window: frames in flight, 1 .. ServerLimits.max_window (None: the server default).
            policy: ``block`` (nothing is lost) or ``drop_oldest`` (the server drops the oldest
                unanswered frame when the window is full and reports it in the next result).
            options: EncodeOptions for every frame (default: the client's); with a seed, frame
                ``sequence`` is sampled with seed + sequence.
            start_sequence: the first frame's sequence number (then +1 per frame).
            keep_inputs: attach each numpy input frame to its result (``FrameResult.input``).
            timeout: deadline of the whole stream in seconds (None: none).
            stats: a StreamStats to update (default: a fresh one, ``FrameStream.stats``).
            decode: decode the outputs into arrays (default); False leaves them in
                ``FrameResult.message``, for callers that forward, store or only count them.
        """
        settings = StreamSettings(window, policy)
        self._ensure_ready()
        gate = self._gate_size(settings, self.info())
        book = StreamBook(self.factory, settings, options, self.address, start_sequence, keep_inputs, stats, decode)
        return FrameStream(self, frames, book, gate, timeout)

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Close the channel (when the client opened it)."""
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
