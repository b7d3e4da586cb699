"""The grpc.aio servicer of pvae.v1.Encoder: messages <-> pipeline data, errors <-> status codes.

``Encode`` decodes one frame (or takes a batch of patches), waits for the batcher and answers.
``StreamEncode`` is an adapter over the stream core (pvae.serving.streams), which owns admission,
the in-order window with ``block`` and ``drop_oldest``, the drain and the accounting: this module
only parses the stream's settings and options, computes a frame's response (a bad frame is
answered in-band) and reports drops on the next response. Status codes come from
pvae.serving.status.

    >>> servicer = EncoderServicer(pipeline, batcher, config, metrics, info)
    >>> pvae_pb2_grpc.add_EncoderServicer_to_server(servicer, server)
    >>> servicer.set_ready(True)          # after warm-up; begin_drain() on SIGTERM
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from pvae.errors import InputError
from pvae.serving.batcher import Batcher
from pvae.serving.config import ServeConfig
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
from pvae.serving.status import cancel_code, code_number, status_for
from pvae.serving.streams import Drops, Slot, Stream, StreamCore
from pvae.serving.wire import request_bytes
from pvae.v1 import pvae_pb2 as pb
from pvae.v1 import pvae_pb2_grpc as pb_grpc

__all__ = ["EncoderServicer"]

ENCODE = "Encode"
STREAM = "StreamEncode"


@dataclass(frozen=True)
class _Frame:
    """A stream's frame as read: the request, the options in force for it, and a per-frame error."""

    request: pb.StreamEncodeRequest
    spec: OutputSpec
    seed: int | None
    error: Exception | None


class EncoderServicer(pb_grpc.EncoderServicer):
    """pvae.v1.Encoder on grpc.aio (see the module docstring)."""

    def __init__(self, pipeline: Pipeline, batcher: Batcher, config: ServeConfig, metrics: Metrics,
                 info: pb.InfoResponse, decode_pool: ThreadPoolExecutor | None = None,
                 core: StreamCore | None = None) -> None:
        self.core = core or StreamCore(pipeline, batcher, config, metrics)
        self.pipeline = pipeline
        self.batcher = batcher
        self.config = config
        self.metrics = metrics
        self.info = info
        self.limits = self.core.limits
        self._decode_pool = decode_pool or ThreadPoolExecutor(config.decode_threads,
                                                              thread_name_prefix="pvae-decode")
        self._stream = _StreamEncode(self)

    # ------------------------------------------------------------------ lifecycle (the core's)

    def set_ready(self, ready: bool) -> None:
        """Accept (True) or refuse with UNAVAILABLE (False) new frames."""
        self.core.set_ready(ready)

    def begin_drain(self) -> None:
        """Stop admitting frames, on both protocols; streams finish what is in flight, then end with UNAVAILABLE."""
        self.core.begin_drain()

    @property
    def ready(self) -> bool:
        """Serving: warmed up and not draining."""
        return self.core.ready

    @property
    def active_streams(self) -> int:
        """Open streams (both protocols)."""
        return self.core.active_streams

    def close(self) -> None:
        """Release the decode threads."""
        self._decode_pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ Info

    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.InfoResponse:
        return self.info

    # ------------------------------------------------------------------ shared frame path

    async def frame_job(self, frame: pb.Frame, spec: OutputSpec, seed: int) -> FrameJob:
        """Decode a pvae.v1 frame into a job (JPEG/PNG decoding off the event loop)."""
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

    def finish(self, rpc: str, result: PackedResult, received: float) -> None:
        """Account a served request (received at ``received``, perf_counter seconds)."""
        self.core.account(rpc, result)
        self.metrics.observe_stage("end_to_end", time.perf_counter() - received)

    # ------------------------------------------------------------------ Encode

    async def Encode(self, request: pb.EncodeRequest,
                     context: grpc.aio.ServicerContext[Any, Any]) -> pb.EncodeResponse | bytes:
        received = time.perf_counter()
        self.metrics.received_bytes.labels(**rpc_labels(ENCODE)).inc(request_bytes(request))
        try:
            self.core.check_available()
            spec, seed = parse_options(request.options if request.HasField("options") else None,
                                       self.config.default_jpeg_quality)
            seed = secrets.randbelow(MAX_SEED + 1) if seed is None else seed
            source = request.WhichOneof("input")
            job: FrameJob | PatchJob
            if source == "frame":
                job = await self.frame_job(request.frame, spec, seed)
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
            self.core.check_size(len(wire))
        except asyncio.CancelledError:  # the client cancelled, or the deadline passed
            self.metrics.error(ENCODE, cancel_code(context))
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = status_for(exc)
            self.metrics.error(ENCODE, code.name)
            await context.abort(code, message)
        self.finish(ENCODE, result, received)
        self.metrics.sent_bytes.labels(**rpc_labels(ENCODE)).inc(len(wire))
        return wire  # a pre-serialized EncodeResponse

    # ------------------------------------------------------------------ StreamEncode

    async def StreamEncode(self, request_iterator: AsyncIterator[pb.StreamEncodeRequest],
                           context: grpc.aio.ServicerContext[Any, Any]
                           ) -> AsyncIterator[pb.StreamEncodeResponse | bytes]:
        async for wire in self.core.serve(self._stream, request_iterator, context):
            yield wire  # a pre-serialized StreamEncodeResponse (pvae.serving.wire)


class _StreamEncode:
    """StreamEncode's adapter over the stream core (pvae.serving.streams.StreamAdapter)."""

    rpc = STREAM

    def __init__(self, servicer: EncoderServicer) -> None:
        self.servicer = servicer
        self.config = servicer.config
        self.metrics = servicer.metrics

    async def items(self, requests: AsyncIterator[pb.StreamEncodeRequest],
                    stream: Stream[_Frame]) -> AsyncIterator[_Frame]:
        """The stream's frames, each with the options in force; bad settings on the first message end the stream."""
        spec, seed = parse_options(None, self.config.default_jpeg_quality)
        first = True
        async for request in requests:
            self.metrics.received_bytes.labels(**rpc_labels(STREAM)).inc(request_bytes(request))
            frame_error: Exception | None = None
            if first:
                first = False
                if request.HasField("settings"):  # InputError here ends the stream INVALID_ARGUMENT
                    stream.configure(*parse_stream_settings(request.settings, self.config.default_window,
                                                            self.config.max_window))
            elif request.HasField("settings"):
                frame_error = InputError("settings: may only be set on a stream's first message")
            if request.HasField("options"):
                try:
                    spec, seed = parse_options(request.options, self.config.default_jpeg_quality)
                except InputError as exc:  # this frame fails; the stream keeps its previous options
                    frame_error = frame_error or exc
            if request.HasField("frame"):
                yield _Frame(request, spec, seed, frame_error)

    def sequence(self, item: _Frame) -> int:
        return int(item.request.sequence)

    async def answer(self, item: _Frame, slot: Slot) -> bytes:
        """One frame of a stream -> its serialized response (a result or an in-band error)."""
        received = time.perf_counter()  # timings start once the frame is admitted to the window
        sequence = item.request.sequence
        seed = secrets.randbelow(MAX_SEED + 1) if item.seed is None else stream_frame_seed(item.seed, sequence)
        response = pb.StreamEncodeResponse(sequence=sequence)
        try:
            if item.error is not None:
                raise item.error
            job = await self.servicer.frame_job(item.request.frame, item.spec, seed)
            slot.job = job
            result = await self.servicer.batcher.submit(job, wait=slot.block)
            fill_result(response.result, result, time.perf_counter() - received)
            wire = response.SerializeToString()  # once: sent as is (pvae.serving.wire)
            self.servicer.core.check_size(len(wire))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code, message = status_for(exc)
            self.metrics.error(STREAM, code.name)
            error = pb.StreamEncodeResponse(sequence=sequence)
            error.error.code = code_number(code)
            error.error.message = message
            return error.SerializeToString()
        self.servicer.finish(STREAM, result, received)
        return wire

    def refused(self, item: _Frame) -> bytes | None:
        return None  # read as the server began to drain: reported as dropped

    def report_drops(self, response: bytes | None, drops: Drops) -> bytes:
        """Drops ride on the next response: serialized messages concatenate as a merge, so the
        report's fields are appended to the response's bytes instead of serializing it again."""
        report = pb.StreamEncodeResponse(dropped_count=drops.count, dropped_sequences=list(drops.sequences))
        if response is None:
            report.sequence = drops.sequences[-1] if drops.sequences else 0
            return report.SerializeToString()
        return response + report.SerializeToString()
