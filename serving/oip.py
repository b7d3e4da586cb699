"""The Open Inference Protocol (KServe v2) over gRPC: ``inference.GRPCInferenceService``.

It runs on the same port as pvae.v1, so ``tritonclient.grpc``, ``perf_analyzer`` and KServe work
with ``pvae-serve`` unchanged. The bundle's graphs are exposed as four models (K = n_latents,
D = patch_size**2 = 256 for the shipped models):

    model            inputs                                 outputs
    pvae_rates       patches FP32 [-1, D] (model space)     rates FP16 [-1, K], log_rates FP16 [-1, K]
    pvae_counts      rates FP32 [-1, K], seed INT64 [1]     counts INT32 [-1, K]
    pvae_frame       frame UINT8 [-1, -1],                  rates FP16 [R*C, K], log_rates FP16 [R*C, K],
                     seed INT64 [1] (optional)              counts INT32 [R*C, K], reconstruction UINT8 [H, W]
    pvae_preprocess  frame UINT8 [-1, -1]                   patches FP32 [R*C, D] (what pvae_rates takes)

A ``frame`` may also be colour, [H, W, 3] or [H, W, 4] (request parameter ``channel_order``
"bgr", the default as in pvae.v1, or "rgb"); it is turned to gray with BT.601 luma, as pvae.v1 does.
``pvae_preprocess`` runs the frame graph's own preprocessing (pvae.preprocess_graph), so
``pvae_rates(pvae_preprocess(frame))`` is what ``pvae_frame`` and StreamEncode return for that frame.
Each model's ModelConfig carries a ``description`` parameter, and one per tensor (``input.NAME``,
``output.NAME``) saying what it expects or holds.

The wire format (README "Open Inference Protocol"):
- Inputs come as ``raw_input_contents`` (one entry per input, little-endian, C order) or as typed
  ``contents`` (``fp32_contents``, ``int64_contents``, ``uint_contents``); FP16 only raw.
- Outputs always come back as ``raw_output_contents``, one per returned output, in the order of the
  request's ``outputs`` (all of the model's outputs, in the order above, when it names none).
- Rates and log-rates are FP16 by default: half the bytes, relative error <= 2^-11. The request
  parameter ``float_format: "fp32"`` returns them as FP32, bit-equal to the bundle's graphs.
- Counts are exact Poisson draws, INT32 (no saturation). The seed (0 .. 2^63 - 1) makes them
  reproducible: the same rates and seed give the same counts on every device. ``pvae_counts``
  requires it; ``pvae_frame`` draws a random one when it is absent. Either way the response
  parameter ``seed`` reports it (``pvae_frame`` and ``pvae_preprocess`` also report the patch grid,
  ``grid_rows`` and ``grid_cols``).

Requests share everything with pvae.v1: the batcher (``pvae_frame`` frames of one size from any
caller share an inference call), the limits, the readiness and drain, and the metrics (label
``protocol="oip"``, ``rpc`` ModelInfer or ModelStreamInfer). Status codes: an unknown model or
version NOT_FOUND; a bad datatype, shape, byte length, output name or parameter INVALID_ARGUMENT,
naming the tensor; overload or an oversized payload RESOURCE_EXHAUSTED; warm-up and drain
UNAVAILABLE. ModelStreamInfer answers every request in order; a failed request is answered
in-band (``error_message``, prefixed with the status code name) and the stream goes on.

Modules: pvae.serving.oip_models (the four models, their metadata and configs),
pvae.serving.oip_tensors (request tensors and parameters), pvae.serving.oip_wire (responses
assembled from raw bytes), pvae.serving.oip_stats (ModelStatistics). ModelStreamInfer is an
adapter over the stream core (pvae.serving.streams), like pvae.v1's StreamEncode.

    >>> oip = InferenceServicer(encoder.core)     # the stream core pvae.v1 uses: one state, one drain
    >>> grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(oip, server)
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import numpy as np

from pvae import __version__
from pvae.bundle import SAMPLER_MAX_RATE
from pvae.inference import grpc_service_pb2 as oip
from pvae.inference import grpc_service_pb2_grpc as oip_grpc
from pvae.inference import model_config_pb2 as mc
from pvae.serving.decode import ChannelOrder, check_dimensions
from pvae.serving.errors import ModelNotFoundError
from pvae.serving.metrics import rpc_labels
from pvae.serving.oip_models import (
    FLOAT_DATATYPE,
    MODEL_VERSION,
    SERVICE_NAME,
    ModelSpec,
    TensorSpec,
    model_config,
    model_metadata,
    model_specs,
)
from pvae.serving.oip_stats import ModelStats
from pvae.serving.oip_tensors import (
    channel_order,
    check_rows,
    float_format,
    gray_frame,
    read_inputs,
    read_seed,
    requested_outputs,
    tensor_error,
)
from pvae.serving.oip_wire import infer_response, stream_response
from pvae.serving.options import MAX_SEED, CountFormat, FloatFormat, ImageEncoding, Output, OutputSpec
from pvae.serving.pipeline import FrameJob, Job, PackedResult, PatchJob, PreprocessJob, SampleJob
from pvae.serving.status import cancel_code, status_for
from pvae.serving.streams import Drops, Slot, Stream, StreamCore
from pvae.serving.wire import request_bytes

__all__ = ["SERVICE_NAME", "UNIMPLEMENTED_RPCS", "InferenceServicer", "unimplemented_rpcs"]

UNARY = "ModelInfer"
STREAM = "ModelStreamInfer"


class InferenceServicer(oip_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService over the stream core's pipeline (see the module docstring)."""

    def __init__(self, core: StreamCore) -> None:
        self.core = core
        self.batcher = core.batcher
        self.config = core.config
        self.metrics = core.metrics
        engine = core.pipeline.engine
        self.models = model_specs(engine.n_latents, engine.patch_dim, engine.patch_shape, engine.min_frame_side)
        self._plan = engine.plan
        self._stats = {name: ModelStats() for name in self.models}
        self._stream = _ModelStreamInfer(self)
        self._builders: dict[str, Callable[[dict[str, np.ndarray], OutputSpec, ChannelOrder], Job]] = {
            "pvae_rates": self._rates_job, "pvae_counts": self._counts_job, "pvae_frame": self._frame_job,
            "pvae_preprocess": self._preprocess_job}

    # ------------------------------------------------------------------ health and metadata

    def _model(self, name: str, version: str) -> ModelSpec:
        model = self.models.get(name)
        if model is None:
            raise ModelNotFoundError(f"model '{name}' is not served here (models: {', '.join(self.models)})")
        if version not in ("", MODEL_VERSION):
            raise ModelNotFoundError(f"model '{name}' has no version '{version}' (versions: {MODEL_VERSION})")
        return model

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
        code, message = status_for(exc)
        await context.abort(code, message)

    async def ServerLive(self, request: oip.ServerLiveRequest,
                         context: grpc.aio.ServicerContext[Any, Any]) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(self, request: oip.ServerReadyRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=self.core.ready)

    async def ModelReady(self, request: oip.ModelReadyRequest,
                         context: grpc.aio.ServicerContext[Any, Any]) -> oip.ModelReadyResponse:
        # As Triton does: an unknown model is simply not ready (readiness probes need no error path).
        known = request.name in self.models and request.version in ("", MODEL_VERSION)
        return oip.ModelReadyResponse(ready=known and self.core.ready)

    async def ServerMetadata(self, request: oip.ServerMetadataRequest,
                             context: grpc.aio.ServicerContext[Any, Any]) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(name="pvae", version=__version__,
                                          extensions=["model_configuration", "statistics", "model_repository"])

    async def ModelMetadata(self, request: oip.ModelMetadataRequest,
                            context: grpc.aio.ServicerContext[Any, Any]) -> oip.ModelMetadataResponse:
        try:
            model = self._model(request.name, request.version)
        except ModelNotFoundError as exc:
            await self._abort(context, exc)
        return model_metadata(model)

    def model_config(self, model: ModelSpec) -> mc.ModelConfig:
        """Triton's description of an exposed model, with an instance group of the serving device."""
        kind = mc.ModelInstanceGroup.KIND_GPU if self._plan.kind == "cuda" else mc.ModelInstanceGroup.KIND_CPU
        group = mc.ModelInstanceGroup(name=f"{model.name}_0", kind=kind, count=1,
                                      gpus=[self._plan.device_id] if self._plan.kind == "cuda" else [])
        return model_config(model, group)

    async def ModelConfig(self, request: oip.ModelConfigRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> oip.ModelConfigResponse:
        try:
            model = self._model(request.name, request.version)
        except ModelNotFoundError as exc:
            await self._abort(context, exc)
        return oip.ModelConfigResponse(config=self.model_config(model))

    async def ModelStatistics(self, request: oip.ModelStatisticsRequest,
                              context: grpc.aio.ServicerContext[Any, Any]) -> oip.ModelStatisticsResponse:
        if request.name:
            try:
                names = [self._model(request.name, request.version).name]
            except ModelNotFoundError as exc:
                await self._abort(context, exc)
        else:
            names = list(self.models)
        return oip.ModelStatisticsResponse(model_stats=[self._stats[name].message(name) for name in names])

    async def RepositoryIndex(self, request: oip.RepositoryIndexRequest,
                              context: grpc.aio.ServicerContext[Any, Any]) -> oip.RepositoryIndexResponse:
        state = "READY" if self.core.ready else "UNAVAILABLE"
        return oip.RepositoryIndexResponse(models=[
            oip.RepositoryIndexResponse.ModelIndex(name=name, version=MODEL_VERSION, state=state)
            for name in self.models])

    # ------------------------------------------------------------------ inference

    def _rates_job(self, inputs: dict[str, np.ndarray], spec: OutputSpec, order: ChannelOrder) -> Job:
        patches = inputs["patches"]
        check_rows(patches, "patches", self.config.max_patches)
        if not np.isfinite(patches).all():
            raise tensor_error("input", "patches", "contains NaN or infinite values")
        return PatchJob(patches, spec, seed=0)

    def _counts_job(self, inputs: dict[str, np.ndarray], spec: OutputSpec, order: ChannelOrder) -> Job:
        rates = inputs["rates"]
        check_rows(rates, "rates", self.config.max_patches)
        if not (np.isfinite(rates).all() and (rates >= 0).all() and (rates <= SAMPLER_MAX_RATE).all()):
            raise tensor_error("input", "rates", f"must be finite and in [0, {SAMPLER_MAX_RATE:g}] (Poisson means)")
        seed = read_seed(inputs)
        assert seed is not None  # a required input (read_inputs)
        return SampleJob(rates, spec, seed)

    def _frame(self, inputs: dict[str, np.ndarray], order: ChannelOrder) -> np.ndarray:
        frame = inputs["frame"]
        check_dimensions(int(frame.shape[0]), int(frame.shape[1]), self.core.limits, "input 'frame'")
        return gray_frame(frame, order)

    def _frame_job(self, inputs: dict[str, np.ndarray], spec: OutputSpec, order: ChannelOrder) -> Job:
        frame = self._frame(inputs, order)
        seed = read_seed(inputs)
        return FrameJob(frame, spec, secrets.randbelow(MAX_SEED + 1) if seed is None else seed)

    def _preprocess_job(self, inputs: dict[str, np.ndarray], spec: OutputSpec, order: ChannelOrder) -> Job:
        return PreprocessJob(self._frame(inputs, order), spec)

    @staticmethod
    def _spec(outputs: list[TensorSpec], fmt: FloatFormat) -> OutputSpec:
        wanted = {Output(t.name) for t in outputs if t.name in ("rates", "log_rates", "counts", "reconstruction")}
        return OutputSpec(frozenset(wanted), count_format=CountFormat.DENSE_I32, image_encoding=ImageEncoding.RAW,
                          float_format=fmt)

    @staticmethod
    def _output(result: PackedResult, spec: TensorSpec) -> tuple[str, list[int], bytes]:
        rows_by_k = [result.n_patches, result.n_latents]
        if spec.name in ("rates", "log_rates"):
            data = result.rates if spec.name == "rates" else result.log_rates
            datatype = FLOAT_DATATYPE[result.float_format]
        elif spec.name == "counts":
            data, datatype = result.counts_i32, "INT32"
        elif spec.name == "patches":
            assert result.patches is not None
            return "FP32", [result.n_patches, len(result.patches) // (4 * max(result.n_patches, 1))], result.patches
        else:  # reconstruction
            image = result.reconstruction
            assert image is not None
            return "UINT8", [image.height, image.width], image.data
        assert data is not None, f"the pipeline did not produce {spec.name}"
        return datatype, rows_by_k, data

    async def infer(self, request: oip.ModelInferRequest, rpc: str, wait: bool) -> list[bytes]:
        """Run one inference request: the serialized ModelInferResponse, in pieces to concatenate
        (its small fields, then each raw output with its field prefix). Raises on any problem (the
        caller turns it into a status).

        The response is assembled by hand (pvae.serving.oip_wire): the outputs are megabytes.
        """
        received = time.perf_counter()
        stats: ModelStats | None = None
        try:
            self.metrics.received_bytes.labels(**rpc_labels(rpc)).inc(request_bytes(request))
            model = self._model(request.model_name, request.model_version)
            stats = self._stats[model.name]
            self.core.check_available()
            outputs = requested_outputs(request, model)
            spec = self._spec(outputs, float_format(request.parameters))
            inputs = read_inputs(request, model, self.config.max_frame_bytes)
            job = self._builders[model.name](inputs, spec, channel_order(request.parameters))
            job.times.decode = time.perf_counter() - received
            self.metrics.observe_stage("decode", job.times.decode)
            result = await self.batcher.submit(job, wait=wait)
            built = time.perf_counter()
            head = oip.ModelInferResponse(model_name=model.name, model_version=MODEL_VERSION, id=request.id)
            tensors = [self._output(result, output) for output in outputs]
            for output, (datatype, shape, _) in zip(outputs, tensors, strict=True):
                head.outputs.add(name=output.name, datatype=datatype, shape=shape)
            if result.seed is not None:
                head.parameters["seed"].int64_param = result.seed
            if result.grid_rows:
                head.parameters["grid_rows"].int64_param = result.grid_rows
                head.parameters["grid_cols"].int64_param = result.grid_cols
            pieces = infer_response(head, [data for _, _, data in tensors])
            self.core.check_size(sum(len(piece) for piece in pieces))
        except asyncio.CancelledError:
            raise
        except Exception:
            if stats is not None:
                stats.failed(time.perf_counter() - received)
            raise
        done = time.perf_counter()
        times = result.times
        stats.succeeded(done - received, times.queue, times.decode, times.inference + times.sampling,
                        times.packing + (done - built))
        self.core.account(rpc, result)
        self.metrics.observe_stage("end_to_end", done - received)
        return pieces

    async def ModelInfer(self, request: oip.ModelInferRequest,
                         context: grpc.aio.ServicerContext[Any, Any]) -> oip.ModelInferResponse | bytes:
        try:
            wire = b"".join(await self.infer(request, UNARY, wait=False))
            self.metrics.sent_bytes.labels(**rpc_labels(UNARY)).inc(len(wire))
            return wire  # pre-serialized: pvae.serving.wire passes bytes through
        except asyncio.CancelledError:
            self.metrics.error(UNARY, cancel_code(context))
            raise
        except Exception as exc:
            code, message = status_for(exc)
            self.metrics.error(UNARY, code.name)
            await context.abort(code, message)
            raise  # unreachable: abort raises

    # ------------------------------------------------------------------ streaming

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[oip.ModelInferRequest],
                               context: grpc.aio.ServicerContext[Any, Any]
                               ) -> AsyncIterator[oip.ModelStreamInferResponse | bytes]:
        async for wire in self.core.serve(self._stream, request_iterator, context):
            yield wire  # a pre-serialized ModelStreamInferResponse (pvae.serving.wire)


class _ModelStreamInfer:
    """ModelStreamInfer's adapter over the stream core (pvae.serving.streams.StreamAdapter): every
    request is answered in order, a failed one in-band; the window always blocks (no drops)."""

    rpc = STREAM

    def __init__(self, servicer: InferenceServicer) -> None:
        self.servicer = servicer
        self.metrics = servicer.metrics

    async def items(self, requests: AsyncIterator[oip.ModelInferRequest],
                    stream: Stream[oip.ModelInferRequest]) -> AsyncIterator[oip.ModelInferRequest]:
        async for request in requests:
            yield request

    def sequence(self, item: oip.ModelInferRequest) -> int:
        return 0  # the protocol has no sequence numbers: answers come in request order

    async def answer(self, item: oip.ModelInferRequest, slot: Slot) -> bytes:
        """One stream request -> its serialized response, or an in-band error."""
        try:
            return stream_response(await self.servicer.infer(item, STREAM, wait=slot.block))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code, message = status_for(exc)
            self.metrics.error(STREAM, code.name)
            return _in_band_error(item, code, message)

    def refused(self, item: oip.ModelInferRequest) -> bytes:
        return _in_band_error(item, grpc.StatusCode.UNAVAILABLE, "server is draining (shutting down)")

    def report_drops(self, response: bytes | None, drops: Drops) -> bytes:
        raise AssertionError("ModelStreamInfer streams block; they never drop a request")


def _in_band_error(request: oip.ModelInferRequest, code: grpc.StatusCode, message: str) -> bytes:
    """A stream's answer to a failed request: ``error_message`` prefixed with the status code's name."""
    return oip.ModelStreamInferResponse(
        error_message=f"{code.name}: {message}",
        infer_response=oip.ModelInferResponse(model_name=request.model_name, model_version=request.model_version,
                                              id=request.id)).SerializeToString()


def _unimplemented(name: str) -> Callable[..., Any]:
    """An RPC of the protocol that pvae-serve does not offer: UNIMPLEMENTED with a clear message.

    The generated base class raises NotImplementedError instead, which grpc.aio logs at ERROR with a
    traceback on every call, so any client could flood the server log.
    """

    async def handler(self: InferenceServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            f"{name} is not implemented by pvae-serve (it offers health, metadata, config, statistics, "
                            "the repository index, ModelInfer and ModelStreamInfer)")

    handler.__name__ = name
    return handler


def unimplemented_rpcs(servicer: type[oip_grpc.GRPCInferenceServiceServicer]) -> list[str]:
    """The protocol's RPCs that ``servicer`` leaves to the generated base class, in the protocol's order."""
    return [name for name, member in vars(oip_grpc.GRPCInferenceServiceServicer).items()
            if callable(member) and not name.startswith("_") and name not in vars(servicer)]


#: The protocol's RPCs that pvae-serve answers UNIMPLEMENTED (model load/unload, shared memory, trace, log settings).
UNIMPLEMENTED_RPCS = tuple(unimplemented_rpcs(InferenceServicer))
for _name in UNIMPLEMENTED_RPCS:
    setattr(InferenceServicer, _name, _unimplemented(_name))
