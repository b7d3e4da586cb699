"""The grpc.aio servicer of pvae.v1.Encoder: messages <-> pipeline data, errors <-> status codes.

It owns the per-stream machinery: one reader task admits frames into the stream's bounded
in-flight window (waiting under ``block``; under ``drop_oldest`` dropping the oldest frame that is
not being computed, or parking the newest in a one-frame slot), one task per frame decodes it and
waits for the batcher, and the handler itself writes the responses in arrival order. A bad frame
is answered in-band; a fatal problem ends the stream with a real status. When the client goes
away (cancel, deadline), the handler's ``finally`` cancels every task of the stream, and their
frames leave the batch queue at once.

    >>> servicer = EncoderServicer(pipeline, batcher, config, metrics, info)
    >>> pvae_pb2_grpc.add_EncoderServicer_to_server(servicer, server)
    >>> servicer.set_ready(True)          # after warm-up; begin_drain() on SIGTERM
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc

from pvae.errors import InputError
from pvae.serving.batcher import Batcher
from pvae.serving.config import ServeConfig
from pvae.serving.decode import FrameLimits
from pvae.serving.errors import InferenceError, OverloadedError, PayloadTooLargeError, UnavailableError
from pvae.serving.messages import (
    decode_frame,
    fill_result,
    frame_is_encoded,
    parse_options,
    parse_patches,
    parse_stream_settings,
)
from pvae.serving.metrics import Metrics, rpc_labels
from pvae.serving.options import MAX_SEED, OutputSpec, stream_frame_seed
from pvae.serving.pipeline import FrameJob, PackedResult, PatchJob, Pipeline
from pvae.serving.wire import request_bytes
from pvae.v1 import pvae_pb2 as pb
from pvae.v1 import pvae_pb2_grpc as pb_grpc

__all__ = ["MAX_REPORTED_DROPS", "EncoderServicer", "cancel_code", "read_failure", "status_for"]

#: Sequence numbers listed per drop report (pvae.proto StreamEncodeResponse.dropped_sequences).
MAX_REPORTED_DROPS = 64
ENCODE = "Encode"
STREAM = "StreamEncode"


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message for an exception raised while serving a frame."""
    if isinstance(exc, PayloadTooLargeError | OverloadedError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, InputError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, UnavailableError):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, InferenceError):
        return grpc.StatusCode.INTERNAL, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def read_failure(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status that ends a stream whose request iterator raised ``exc``: INVALID_ARGUMENT for an
    undecodable message (pvae.serving.wire; the stream's framing is lost), else the transport's code
    (e.g. RESOURCE_EXHAUSTED for a message over the size limit)."""
    if isinstance(exc, InputError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else grpc.StatusCode.INTERNAL
    return code, f"stream read failed: {exc}"


def _code_number(code: grpc.StatusCode) -> int:
    return int(code.value[0])


def cancel_code(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Why a call was cut short: its deadline passed, or the client cancelled it."""
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"


# ----------------------------------------------------------------------------- stream state


class _Signal:
    """Wake every waiter when the stream's state changes (single event loop, no lock needed)."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    async def wait(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(future)

    def notify(self) -> None:
        for future in self._waiters:
            if not future.done():
                future.set_result(None)


@dataclass(eq=False)
class _Entry:
    """One admitted frame: its task resolves to the response."""

    sequence: int
    task: asyncio.Task[pb.StreamEncodeResponse] | None = None
    job: FrameJob | None = None  # set once decoded

    @property
    def droppable(self) -> bool:
        """Not inside an inference call: dropping it now wastes no work (queued, or done but unsent)."""
        assert self.task is not None
        return self.task.done() or self.job is None or not self.job.started


@dataclass(eq=False)
class _Drops:
    """A run of dropped frames between answered ones (bounded: a count and the newest numbers)."""

    count: int = 0
    sequences: deque[int] = field(default_factory=lambda: deque(maxlen=MAX_REPORTED_DROPS))

    def absorb(self, other: _Drops) -> None:
        self.count += other.count
        self.sequences.extend(other.sequences)


@dataclass(eq=False)
class _Stream:
    window: int
    policy: str
    entries: deque[_Entry | _Drops] = field(default_factory=deque)
    in_flight: int = 0
    reader_done: bool = False
    client_done: bool = False  # the client half-closed: every frame it sent was read
    fatal: tuple[grpc.StatusCode, str] | None = None
    changed: _Signal = field(default_factory=_Signal)
    pending: _Pending | None = None  # drop_oldest: the newest frame, waiting for a slot


@dataclass(frozen=True)
class _Pending:
    """A received frame not yet admitted to the window (and everything needed to admit it)."""

    request: pb.StreamEncodeRequest
    spec: OutputSpec
    seed: int | None
    error: Exception | None


# ----------------------------------------------------------------------------- the servicer


class EncoderServicer(pb_grpc.EncoderServicer):
    """pvae.v1.Encoder on grpc.aio (see the module docstring)."""

    def __init__(self, pipeline: Pipeline, batcher: Batcher, config: ServeConfig, metrics: Metrics,
                 info: pb.InfoResponse, decode_pool: ThreadPoolExecutor | None = None) -> None:
        self.pipeline = pipeline
        self.batcher = batcher
        self.config = config
        self.metrics = metrics
        self.info = info
        self.limits = FrameLimits(
            max_height=config.max_frame_height,
            max_width=config.max_frame_width,
            max_pixels=config.max_frame_pixels,
            max_bytes=config.max_frame_bytes,
            min_side=pipeline.engine.min_frame_side,
        )
        self._decode_pool = decode_pool or ThreadPoolExecutor(config.decode_threads,
                                                              thread_name_prefix="pvae-decode")
        self._ready = False
        self._draining = False
        self._streams: set[_Stream] = set()

    # ------------------------------------------------------------------ lifecycle

    def set_ready(self, ready: bool) -> None:
        """Accept (True) or refuse with UNAVAILABLE (False) new frames."""
        self._ready = ready

    def begin_drain(self) -> None:
        """Stop admitting frames; streams finish what is in flight, then end with UNAVAILABLE."""
        self._draining = True
        self._ready = False
        for stream in self._streams:
            stream.changed.notify()

    @property
    def ready(self) -> bool:
        """Serving: warmed up and not draining."""
        return self._ready and not self._draining

    @property
    def active_streams(self) -> int:
        """Open StreamEncode calls."""
        return len(self._streams)

    def close(self) -> None:
        """Release the decode threads."""
        self._decode_pool.shutdown(wait=False, cancel_futures=True)

    def check_available(self) -> None:
        """Raise UnavailableError while warming up or draining."""
        if self._draining:
            raise UnavailableError("server is draining (shutting down); reconnect to another replica")
        if not self._ready:
            raise UnavailableError("server is warming up; retry shortly")

    # ------------------------------------------------------------------ Info

    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.InfoResponse:
        return self.info

    # ------------------------------------------------------------------ shared frame path

    async def _frame_job(self, frame: pb.Frame, spec: OutputSpec, seed: int) -> FrameJob:
        start = time.perf_counter()
        if frame_is_encoded(frame):  # JPEG/PNG decoding takes milliseconds: off the event loop
            loop = asyncio.get_running_loop()
            gray = await loop.run_in_executor(self._decode_pool, decode_frame, frame, self.limits)
        else:
            gray = decode_frame(frame, self.limits)
        job = FrameJob(gray, spec, seed)
        job.times.decode = time.perf_counter() - start
        self.metrics.observe_stage("decode", job.times.decode)
        return job

    def account(self, rpc: str, result: PackedResult) -> None:
        """Count a served frame (or request) in the metrics."""
        self.metrics.frames.labels(**rpc_labels(rpc)).inc()
        self.metrics.patches.labels(**rpc_labels(rpc)).inc(result.n_patches)
        if result.total_spikes is not None:
            self.metrics.spikes.inc(result.total_spikes)

    def check_size(self, size: int) -> None:
        """Raise PayloadTooLargeError when a response of ``size`` bytes would exceed the send limit."""
        if size > self.config.max_send_message_bytes:
            raise PayloadTooLargeError(f"the response would be {size} bytes, over the server's "
                                       f"max_send_message_bytes={self.config.max_send_message_bytes}; ask for "
                                       "fewer outputs, fp16, sparse counts or a smaller frame")

    # ------------------------------------------------------------------ Encode

    async def Encode(self, request: pb.EncodeRequest,
                     context: grpc.aio.ServicerContext[Any, Any]) -> pb.EncodeResponse | bytes:
        received = time.perf_counter()
        self.metrics.received_bytes.labels(**rpc_labels(ENCODE)).inc(request_bytes(request))
        try:
            self.check_available()
            spec, seed = parse_options(request.options if request.HasField("options") else None,
                                       self.config.default_jpeg_quality)
            seed = secrets.randbelow(MAX_SEED + 1) if seed is None else seed
            source = request.WhichOneof("input")
            job: FrameJob | PatchJob
            if source == "frame":
                job = await self._frame_job(request.frame, spec, seed)
            elif source == "patches":
                patches = parse_patches(request.patches, self.pipeline.engine.patch_dim, self.config.max_patches,
                                        self.config.max_frame_bytes)
                job = PatchJob(patches, spec, seed)
            else:
                raise InputError("input: set frame or patches")
            result = await self.batcher.submit(job, wait=False)
            response = pb.EncodeResponse()
            fill_result(response.result, result, time.perf_counter() - received)
            # Serialized once, here: the size check and the metrics need its length, and gRPC sends
            # these bytes as they are (pvae.serving.wire); ByteSize() would serialize it once more.
            wire = response.SerializeToString()
            size = len(wire)
            self.check_size(size)
        except asyncio.CancelledError:  # the client cancelled, or the deadline passed
            self.metrics.error(ENCODE, cancel_code(context))
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = status_for(exc)
            self.metrics.error(ENCODE, code.name)
            await context.abort(code, message)
        self.account(ENCODE, result)
        self.metrics.sent_bytes.labels(**rpc_labels(ENCODE)).inc(size)
        self.metrics.observe_stage("end_to_end", time.perf_counter() - received)
        return wire  # a pre-serialized EncodeResponse

    # ------------------------------------------------------------------ StreamEncode

    async def StreamEncode(self, request_iterator: AsyncIterator[pb.StreamEncodeRequest],
                           context: grpc.aio.ServicerContext[Any, Any]
                           ) -> AsyncIterator[pb.StreamEncodeResponse | bytes]:
        if self._draining or not self._ready:
            code, message = status_for(UnavailableError("server is draining" if self._draining
                                                        else "server is warming up; retry shortly"))
            self.metrics.error(STREAM, code.name)
            await context.abort(code, message)
        if len(self._streams) >= self.config.max_streams:
            self.metrics.error(STREAM, grpc.StatusCode.RESOURCE_EXHAUSTED.name)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"too many streams: the server serves at most max_streams={self.config.max_streams}")
        stream = _Stream(window=self.config.default_window, policy="block")
        self._streams.add(stream)
        self.metrics.active_streams.inc()
        reader = asyncio.create_task(self._read(request_iterator, stream), name="pvae-stream-reader")
        reader.add_done_callback(lambda _: stream.changed.notify())
        pending = _Drops()
        try:
            while True:
                head = stream.entries[0] if stream.entries else None
                if isinstance(head, _Drops):
                    pending.absorb(stream.entries.popleft())  # type: ignore[arg-type]
                    continue
                if head is not None and head.task is not None and head.task.done():
                    stream.entries.popleft()
                    self._release(stream)
                    response = head.task.result()
                    if pending.count:
                        response.dropped_count = pending.count
                        response.dropped_sequences.extend(pending.sequences)
                        pending = _Drops()
                    wire = response.SerializeToString()  # sent as is (pvae.serving.wire)
                    self.metrics.sent_bytes.labels(**rpc_labels(STREAM)).inc(len(wire))
                    yield wire  # a pre-serialized StreamEncodeResponse
                    continue
                if head is None and (stream.reader_done or stream.fatal is not None or self._draining):
                    if stream.pending is not None:  # never admitted (draining): report it dropped
                        self._mark_dropped(stream, stream.pending.request.sequence, len(stream.entries))
                        stream.pending = None
                        continue
                    break
                await stream.changed.wait()
            if pending.count:  # drops after the last answered frame (only when the stream was cut short)
                yield pb.StreamEncodeResponse(sequence=pending.sequences[-1] if pending.sequences else 0,
                                              dropped_count=pending.count,
                                              dropped_sequences=list(pending.sequences))
            if stream.fatal is not None:
                code, message = stream.fatal
                self.metrics.error(STREAM, code.name)
                await context.abort(code, message)
            if self._draining and not stream.client_done:
                self.metrics.error(STREAM, grpc.StatusCode.UNAVAILABLE.name)
                await context.abort(grpc.StatusCode.UNAVAILABLE,
                                    "server is draining (shutting down); reconnect to another replica")
        except (asyncio.CancelledError, GeneratorExit):  # the client went away, or the deadline passed
            self.metrics.error(STREAM, cancel_code(context))
            raise
        finally:
            reader.cancel()
            for entry in stream.entries:
                if isinstance(entry, _Entry) and entry.task is not None:
                    entry.task.cancel()
                    self.metrics.inflight.dec()
            stream.entries.clear()
            self._streams.discard(stream)
            self.metrics.active_streams.dec()

    def _release(self, stream: _Stream) -> None:
        """A frame left the window (answered or dropped): admit the waiting frame, if any."""
        stream.in_flight -= 1
        self.metrics.inflight.dec()
        if stream.pending is not None and stream.in_flight < stream.window and not self._draining:
            frame, stream.pending = stream.pending, None
            self._start(stream, frame)
        stream.changed.notify()

    async def _read(self, request_iterator: AsyncIterator[pb.StreamEncodeRequest], stream: _Stream) -> None:
        """Admit the stream's frames until the client half-closes, the server drains or a fatal error."""
        spec, seed = parse_options(None, self.config.default_jpeg_quality)
        first = True
        try:
            async for request in request_iterator:
                if self._draining:
                    break
                self.metrics.received_bytes.labels(**rpc_labels(STREAM)).inc(request_bytes(request))
                frame_error: Exception | None = None
                if first:
                    first = False
                    if request.HasField("settings"):
                        try:
                            stream.window, stream.policy = parse_stream_settings(
                                request.settings, self.config.default_window, self.config.max_window)
                        except InputError as exc:
                            stream.fatal = (grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                            return
                elif request.HasField("settings"):
                    frame_error = InputError("settings: may only be set on a stream's first message")
                if request.HasField("options"):
                    try:
                        spec, seed = parse_options(request.options, self.config.default_jpeg_quality)
                    except InputError as exc:  # this frame fails; the stream keeps its previous options
                        frame_error = frame_error or exc
                if not request.HasField("frame"):
                    continue
                frame = _Pending(request, spec, seed, frame_error)
                if stream.policy == "drop_oldest":
                    self._offer(stream, frame)
                    continue
                await self._wait_for_room(stream)
                if self._draining:
                    break
                self._start(stream, frame)
            else:
                stream.client_done = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a fatal read: the stream ends with this status
            stream.fatal = read_failure(exc)
        finally:
            stream.reader_done = True
            stream.changed.notify()

    async def _wait_for_room(self, stream: _Stream) -> None:
        """``block``: wait until the window has room (a result was sent); the client is slowed by flow control."""
        while stream.in_flight >= stream.window and not self._draining:
            await stream.changed.wait()

    def _offer(self, stream: _Stream, frame: _Pending) -> None:
        """``drop_oldest``: admit ``frame`` now, dropping the oldest stale frame if the window is full.

        Stale frames are those not inside an inference call: still queued, or done but unsent (the
        client reads slowly). When every frame in flight is being computed, dropping one would waste
        that work (and a fast camera would never see a result), so the new frame waits in the
        stream's single pending slot instead, replacing (dropping) any older waiting frame; it is
        admitted as soon as a result leaves the window.
        """
        if stream.pending is not None:  # the new frame is fresher than the waiting one
            self._mark_dropped(stream, stream.pending.request.sequence, len(stream.entries))
            stream.pending = None
        if stream.in_flight >= stream.window:
            victim = next((e for e in stream.entries if isinstance(e, _Entry) and e.droppable), None)
            if victim is None:
                stream.pending = frame
                stream.changed.notify()
                return
            assert victim.task is not None
            victim.task.cancel()
            index = stream.entries.index(victim)
            del stream.entries[index]
            self._mark_dropped(stream, victim.sequence, index)
            self._release(stream)
        self._start(stream, frame)

    def _start(self, stream: _Stream, frame: _Pending) -> None:
        """Admit a frame to the window: start its task (decode, batch, pack) and queue its response slot."""
        received = time.perf_counter()  # timings start once the frame is admitted to the window
        sequence = frame.request.sequence
        seed = secrets.randbelow(MAX_SEED + 1) if frame.seed is None else stream_frame_seed(frame.seed, sequence)
        entry = _Entry(sequence)
        entry.task = asyncio.create_task(self._stream_frame(frame.request, frame.spec, seed, received, frame.error,
                                                            stream.policy == "block", entry))
        entry.task.add_done_callback(lambda _: stream.changed.notify())
        stream.entries.append(entry)
        stream.in_flight += 1
        self.metrics.inflight.inc()
        stream.changed.notify()

    def _mark_dropped(self, stream: _Stream, sequence: int, index: int) -> None:
        """Record a dropped frame at ``index`` of the stream's entries, merging adjacent drop runs."""
        entries = stream.entries
        run = _Drops(count=1)
        run.sequences.append(sequence)
        before = entries[index - 1] if index > 0 else None
        after = entries[index] if index < len(entries) else None
        if isinstance(before, _Drops):
            before.absorb(run)
            if isinstance(after, _Drops):  # the drop joined two runs
                before.absorb(after)
                del entries[index]
        elif isinstance(after, _Drops):
            run.absorb(after)
            entries[index] = run
        else:
            entries.insert(index, run)
        self.metrics.dropped_frames.inc()

    async def _stream_frame(self, request: pb.StreamEncodeRequest, spec: OutputSpec, seed: int, received: float,
                            error: Exception | None, wait: bool, entry: _Entry) -> pb.StreamEncodeResponse:
        """One frame of a stream -> its response (a result or an in-band error; never raises)."""
        response = pb.StreamEncodeResponse(sequence=request.sequence)
        try:
            if error is not None:
                raise error
            job = await self._frame_job(request.frame, spec, seed)
            entry.job = job
            result = await self.batcher.submit(job, wait=wait)
            fill_result(response.result, result, time.perf_counter() - received)
            self.check_size(response.ByteSize())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code, message = status_for(exc)
            self.metrics.error(STREAM, code.name)
            response.ClearField("result")
            response.error.code = _code_number(code)
            response.error.message = message
            return response
        self.account(STREAM, result)
        self.metrics.observe_stage("end_to_end", time.perf_counter() - received)
        return response
