"""The asyncio client of ``pvae.v1.Encoder``: the same API as ``Client``, with ``await``.

    >>> async with AsyncClient("127.0.0.1:50051") as client:
    ...     info = await client.info()
    ...     result = await client.encode(frame)
    ...     async for result in client.stream(frames, window=4):
    ...         print(result.sequence, result.latency_seconds)

``frames`` may be an async iterable (a camera reader task, a queue) or a plain iterable; a plain
iterable is read on the event loop, so a blocking source (``cv2.VideoCapture``) belongs in an async
generator that reads with ``asyncio.to_thread``. The channel opens on first use, inside the
running loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pvae.v1 import pvae_pb2 as pb
from pvae.v1 import pvae_pb2_grpc as pb_grpc

from . import wire
from .channel import Retry
from .client import HEALTH_REQUEST, _Base
from .errors import error_from_rpc
from .frames import FrameLike
from .options import EncodeOptions, Policy, StreamSettings
from .results import FrameResult, ServerInfo, decode_info, decode_result
from .stats import StreamStats
from .streaming import StreamBook

__all__ = ["AsyncClient", "AsyncFrameStream"]

T = TypeVar("T")


async def _aiter(frames: Iterable[FrameLike] | AsyncIterable[FrameLike]) -> AsyncIterator[FrameLike]:
    if isinstance(frames, AsyncIterable):
        async for frame in frames:
            yield frame
    else:
        for frame in frames:
            yield frame


class AsyncFrameStream(AsyncIterator[FrameResult]):
    """The results of ``AsyncClient.stream``, in the order the frames were sent.

    Iterate it to the end, or ``await close()`` it (or use ``async with``) to cancel the call.
    """

    def __init__(self, client: AsyncClient, frames: Iterable[FrameLike] | AsyncIterable[FrameLike],
                 settings: StreamSettings, book: StreamBook, timeout: float | None) -> None:
        self._client = client
        self._frames = frames
        self._settings = settings
        self._book = book
        self._timeout = timeout
        self._address = client.address
        self._call: Any = None
        self._gate: asyncio.Semaphore | None = None
        self._writer: asyncio.Task[None] | None = None
        self._source_error: BaseException | None = None
        self._done = False
        self.stats: StreamStats = book.stats
        """Live statistics of this stream."""

    async def _start(self) -> None:
        """Wait for the server, open the call and start the writer (on the first ``__anext__``)."""
        await self._client._ensure_ready()
        gate = self._client._gate_size(self._settings, await self._client.info())
        self._gate = asyncio.Semaphore(gate) if gate is not None else None
        self._call = wire.stream_encode(self._client._open())(timeout=self._timeout, metadata=self._client.metadata)
        self._writer = asyncio.create_task(self._write(self._frames), name="pvae-client-writer")

    async def _write(self, frames: Iterable[FrameLike] | AsyncIterable[FrameLike]) -> None:
        try:
            async for frame in _aiter(frames):
                if self._gate is not None:
                    await self._gate.acquire()
                await self._call.write(self._book.request_bytes(frame))
            await self._call.done_writing()
        except asyncio.CancelledError:
            raise
        except grpc.RpcError:
            return  # the call failed; the reader reports it
        except Exception as exc:  # a failing source ends the stream cleanly; __anext__ re-raises it
            self._source_error = exc
            with contextlib.suppress(grpc.RpcError):
                await self._call.done_writing()

    def __aiter__(self) -> AsyncFrameStream:
        return self

    async def __anext__(self) -> FrameResult:
        if self._done:
            raise StopAsyncIteration
        if self._call is None:
            try:
                await self._start()
            except BaseException:
                self._done = True
                raise
        try:
            response = await self._call.read()
        except grpc.RpcError as exc:
            await self._finish()
            if self._source_error is not None:
                raise self._source_error from None
            raise error_from_rpc(self._address, exc) from None
        if response is grpc.aio.EOF:
            await self._finish()
            if self._source_error is not None:
                raise self._source_error from None
            raise StopAsyncIteration
        result = self._book.result(response.message, response.nbytes)
        if self._gate is not None and not result.is_drop_report:
            self._gate.release()
        return result

    async def _finish(self) -> None:
        self._done = True
        self.stats.finish()
        if self._writer is None:
            return
        if not self._writer.done():
            self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer

    def in_flight(self) -> int:
        """Frames sent and not yet answered."""
        return self._book.in_flight()

    async def close(self) -> None:
        """Cancel the stream; idempotent."""
        if not self._done:
            if self._call is not None:
                self._call.cancel()
            await self._finish()

    async def __aenter__(self) -> AsyncFrameStream:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class AsyncClient(_Base[grpc.aio.Channel]):
    """An asyncio client of a pvae server; arguments as :class:`pvae.clients.Client`."""

    def _attach(self, channel: grpc.aio.Channel | None) -> None:
        self._channel: grpc.aio.Channel | None = channel  # None: dialled on first use, inside the running loop
        self._lock: asyncio.Lock | None = None

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = self.config.open_aio()
        return self._channel

    @property
    def _stub(self) -> pb_grpc.EncoderStub:
        return pb_grpc.EncoderStub(self._open())

    async def _retrying(self, attempt: Callable[[float | None], Awaitable[T]]) -> T:
        """``attempt(deadline)`` with UNAVAILABLE retried for RetryPolicy.timeout_s (as Client)."""
        retry = Retry(self.retry, self.address)
        while True:
            try:
                return await attempt(self.timeout)
            except grpc.RpcError as exc:
                pause = retry.after_failure(exc)
            await asyncio.sleep(pause)

    async def wait_until_ready(self, timeout: float | None = None) -> None:
        """Wait until the server's health check says SERVING (as ``Client.wait_until_ready``)."""
        retry = Retry(self.retry, self.address, timeout)
        while (pause := retry.after_health_check(await self._check_health(retry))) is not None:
            await asyncio.sleep(pause)
        self._ready = True

    async def _check_health(self, retry: Retry) -> health_pb2.HealthCheckResponse | grpc.RpcError:
        try:
            return await health_pb2_grpc.HealthStub(self._open()).Check(
                HEALTH_REQUEST, timeout=retry.attempt_timeout(), metadata=self.metadata)
        except grpc.RpcError as exc:
            return exc

    async def _ensure_ready(self) -> None:
        if not self._ready:
            await self.wait_until_ready()

    async def info(self, refresh: bool = False) -> ServerInfo:
        """Model and server metadata (cached; ``refresh=True`` asks again)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._info is None or refresh:
                stub = self._stub
                response = await self._retrying(lambda timeout: stub.Info(pb.InfoRequest(), timeout=timeout,
                                                                          metadata=self.metadata))
                self._info = decode_info(response)
            return self._info

    async def encode(self, frame: FrameLike, options: EncodeOptions | None = None) -> FrameResult:
        """Encode one frame with unary Encode."""
        return await self._encode(self.factory.encode(frame, options))

    async def encode_patches(self, patches: np.ndarray, options: EncodeOptions | None = None) -> FrameResult:
        """Encode float32 (N, P * P) model-space patches."""
        return await self._encode(self.factory.patches(patches, options))

    async def _encode(self, request: pb.EncodeRequest) -> FrameResult:
        await self._ensure_ready()
        call = wire.encode(self._open())
        started = time.perf_counter()
        sized = await self._retrying(lambda timeout: call(request, timeout=timeout, metadata=self.metadata))
        latency = time.perf_counter() - started
        return decode_result(sized.message.result, latency_seconds=latency, response_bytes=sized.nbytes)

    def stream(self, frames: Iterable[FrameLike] | AsyncIterable[FrameLike], *, window: int | None = None,
               policy: Policy = "block", options: EncodeOptions | None = None, start_sequence: int = 0,
               keep_inputs: bool = False, timeout: float | None = None,
               stats: StreamStats | None = None, decode: bool = True) -> AsyncFrameStream:
        """Stream frames (arguments as ``Client.stream``); the call opens on the first ``__anext__``.

            >>> async for result in client.stream(frames, window=4):
            ...     ...
        """
        settings = StreamSettings(window, policy)
        book = StreamBook(self.factory, settings, options, self.address, start_sequence, keep_inputs, stats, decode)
        return AsyncFrameStream(self, frames, settings, book, timeout)

    async def close(self) -> None:
        """Close the channel (when the client opened it)."""
        if self._owns_channel and self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
