"""The transport floor of the Open Inference Protocol: a ``pvae_rates`` look-alike that computes nothing.

This is a measuring instrument for ``pvae-bench-oip``, not a server for users. It serves
``inference.GRPCInferenceService`` with one model whose name, input and outputs are those of
``pvae-serve``'s ``pvae_rates`` for a bundle (input ``patches`` FP32 [-1, D]; outputs ``rates`` and
``log_rates`` FP16 [-1, K]), and answers every ModelInfer / ModelStreamInfer with zeros of the right
shapes, datatypes and byte sizes, echoing the request ``id``. Nothing is computed: no ONNX Runtime,
no batcher, no pvae.v1 machinery, no metrics. What a client such as ``perf_analyzer`` measures
against it is therefore the *transport floor* for these message sizes: what gRPC Python (server
side) plus the client cost to move a 1200x256 FP32 request in and a 2 x 1200xK FP16 response out,
on this host. ``pvae-serve``'s latency minus this floor is its compute plus its own overhead.

To be a floor and not a straw man, it does what any OIP server must do and nothing more, the way
``pvae-serve`` does it: the request is parsed by protobuf (its ``id``, model, input shape and byte
length are checked); the response is assembled from a serialized head and the canned output bytes
and handed to gRPC as bytes (no second serialization of megabytes); glibc malloc is tuned
(``pvae.serving.memory.tune_malloc``); the message-size limits are ``pvae-serve``'s defaults.
Streams are answered in order, errors in-band, like ``pvae-serve``. ModelStatistics counts
requests and durations honestly (compute infer is zero: there is none). The request parameter
``float_format: "fp32"`` returns FP32 zeros, as ``pvae-serve`` returns FP32 rates.

    python -m pvae.bench.oip_floor --port 8011                  # K of the bundled default model
    python -m pvae.bench.oip_floor --port 8011 --model runs/quick/best.bundle

It prints nothing while it runs (errors go to stderr); SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

from pvae import __version__
from pvae.cli import run_cli
from pvae.errors import ConfigError, InputError
from pvae.inference import grpc_service_pb2 as oip
from pvae.inference import grpc_service_pb2_grpc, model_config_pb2
from pvae.serving.config import ServeConfig
from pvae.serving.memory import tune_malloc
from pvae.serving.oip_models import (
    DATATYPES,
    FLOAT_DATATYPE,
    MODEL_VERSION,
    SERVICE_NAME,
    ModelSpec,
    model_config,
    model_metadata,
    model_specs,
)
from pvae.serving.oip_stats import ModelStats
from pvae.serving.oip_tensors import float_format, requested_outputs
from pvae.serving.oip_wire import INFER_RESPONSE_TAG, RAW_OUTPUT_TAG, varint
from pvae.serving.wire import passing_bytes

__all__ = ["MODEL_NAME", "PLATFORM", "FloorServicer", "floor_model", "main", "start_floor"]

PROG = "pvae-oip-floor"
#: The mirrored model.
MODEL_NAME = "pvae_rates"
#: What ModelMetadata and ModelConfig call the platform: says plainly that nothing runs behind it.
PLATFORM = "pvae_oip_floor"
#: pvae-serve's defaults: gRPC message limits and the most rows one request may carry.
_SERVE_DEFAULTS = ServeConfig()
_INFER_METHODS = (f"/{SERVICE_NAME}/ModelInfer", f"/{SERVICE_NAME}/ModelStreamInfer")


class _Refused(Exception):
    """A request the floor does not answer with outputs: a status code and a message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def floor_model(n_latents: int, patch_dim: int) -> ModelSpec:
    """The spec of ``pvae_rates`` for a bundle of ``n_latents`` latents and ``patch_dim``-pixel patches."""
    return model_specs(n_latents, patch_dim)[MODEL_NAME]


# ----------------------------------------------------------------------------- the servicer


class FloorServicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` for one canned model (see the module docstring).

    ModelInfer and ModelStreamInfer return serialized messages as ``bytes``: serve it with
    ``start_floor``, whose interceptor lets them through.
    """

    def __init__(self, model: ModelSpec, max_rows: int = _SERVE_DEFAULTS.max_patches,
                 max_send_bytes: int = _SERVE_DEFAULTS.max_send_message_bytes) -> None:
        (self.input,) = model.inputs
        self.model = model
        self.max_rows = max_rows
        self.max_send_bytes = max_send_bytes
        self.stats = ModelStats()
        self._zeros = bytes(0)

    # ------------------------------------------------------------------ health and metadata

    def _known(self, name: str, version: str) -> bool:
        return name == self.model.name and version in ("", MODEL_VERSION)

    async def _check_model(self, name: str, version: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if not self._known(name, version):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"model '{name}' version '{version}' is not served here "
                                f"(the transport floor serves {self.model.name}, version {MODEL_VERSION})")

    async def ServerLive(self, request: oip.ServerLiveRequest,
                         context: grpc.aio.ServicerContext[Any, Any]) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(self, request: oip.ServerReadyRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: oip.ModelReadyRequest,
                         context: grpc.aio.ServicerContext[Any, Any]) -> oip.ModelReadyResponse:
        return oip.ModelReadyResponse(ready=self._known(request.name, request.version))

    async def ServerMetadata(self, request: oip.ServerMetadataRequest,
                             context: grpc.aio.ServicerContext[Any, Any]) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(name=PLATFORM, version=__version__,
                                          extensions=["model_configuration", "statistics"])

    async def ModelMetadata(self, request: oip.ModelMetadataRequest,
                            context: grpc.aio.ServicerContext[Any, Any]) -> oip.ModelMetadataResponse:
        await self._check_model(request.name, request.version, context)
        return model_metadata(self.model, PLATFORM)

    def model_config(self) -> model_config_pb2.ModelConfig:
        """The model as Triton describes one: no batch dimension, one CPU instance, not decoupled."""
        group = model_config_pb2.ModelInstanceGroup(name=f"{self.model.name}_0", count=1,
                                                    kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
        return model_config(self.model, group, PLATFORM, backend="",
                            description="transport floor: canned zero outputs, no inference")

    async def ModelConfig(self, request: oip.ModelConfigRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> oip.ModelConfigResponse:
        await self._check_model(request.name, request.version, context)
        return oip.ModelConfigResponse(config=self.model_config())

    async def ModelStatistics(self, request: oip.ModelStatisticsRequest,
                              context: grpc.aio.ServicerContext[Any, Any]) -> oip.ModelStatisticsResponse:
        if request.name:
            await self._check_model(request.name, request.version, context)
        return oip.ModelStatisticsResponse(model_stats=[self.stats.message(self.model.name)])

    # ------------------------------------------------------------------ inference

    def _rows(self, request: oip.ModelInferRequest) -> int:
        """The request's row count, after the checks any server makes before computing (_Refused otherwise)."""
        if not self._known(request.model_name, request.model_version):
            raise _Refused(grpc.StatusCode.NOT_FOUND, f"model '{request.model_name}' version "
                           f"'{request.model_version}' is not served here")
        spec = self.input
        if len(request.inputs) != 1 or request.inputs[0].name != spec.name:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"model {self.model.name} takes one input, "
                           f"'{spec.name}'")
        tensor = request.inputs[0]
        shape = [int(d) for d in tensor.shape]
        if tensor.datatype != spec.datatype or len(shape) != 2 or shape[1] != spec.shape[1]:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"input '{spec.name}': {tensor.datatype} {shape} does "
                           f"not match {spec.datatype} {list(spec.shape)}")
        rows = shape[0]
        if not 1 <= rows <= self.max_rows:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"input '{spec.name}': {rows} rows; 1..{self.max_rows}")
        count = rows * shape[1]
        if request.raw_input_contents:
            size = len(request.raw_input_contents[0])
            if len(request.raw_input_contents) != 1 or size != count * DATATYPES[spec.datatype][0].itemsize:
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"input '{spec.name}': raw_input_contents do not "
                               f"hold one {spec.datatype} tensor of shape {shape}")
        elif len(tensor.contents.fp32_contents) != count:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"input '{spec.name}': contents.fp32_contents hold "
                           f"{len(tensor.contents.fp32_contents)} values; shape {shape} needs {count}")
        return rows

    def _zeros_of(self, size: int) -> memoryview:
        """``size`` zero bytes, from one buffer that grows to the largest output asked for."""
        if len(self._zeros) < size:
            self._zeros = bytes(size)
        return memoryview(self._zeros)[:size]

    def infer(self, request: oip.ModelInferRequest) -> list[bytes | memoryview]:
        """The serialized ModelInferResponse of ``request``, in pieces to concatenate; _Refused on a bad request."""
        received = time.perf_counter_ns()
        try:
            rows = self._rows(request)
            try:
                datatype = FLOAT_DATATYPE[float_format(request.parameters)]
                names = [t.name for t in requested_outputs(request, self.model)]
            except InputError as exc:
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
            k = self.model.outputs[0].shape[1]
            size = rows * k * DATATYPES[datatype][0].itemsize
            if len(names) * size > self.max_send_bytes:
                raise _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, f"the response would be over "
                               f"{self.max_send_bytes} bytes")
            parsed = time.perf_counter_ns()
            head = oip.ModelInferResponse(model_name=self.model.name, model_version=MODEL_VERSION, id=request.id)
            for name in names:
                head.outputs.add(name=name, datatype=datatype, shape=[rows, k])
            zeros = self._zeros_of(size)
            pieces: list[bytes | memoryview] = [head.SerializeToString()]
            for _ in names:
                pieces += [RAW_OUTPUT_TAG + varint(size), zeros]
        except _Refused:
            self.stats.failed((time.perf_counter_ns() - received) / 1e9)
            raise
        done = time.perf_counter_ns()
        # parsing and checking the request is 'compute input', assembling the answer 'compute output'
        self.stats.succeeded((done - received) / 1e9, 0.0, (parsed - received) / 1e9, 0.0, (done - parsed) / 1e9)
        return pieces

    async def ModelInfer(self, request: oip.ModelInferRequest,
                         context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            return b"".join(self.infer(request))
        except _Refused as exc:
            await context.abort(exc.code, str(exc))
            raise  # unreachable: abort raises

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[oip.ModelInferRequest],
                               context: grpc.aio.ServicerContext[Any, Any]
                               ) -> AsyncIterator[oip.ModelStreamInferResponse | bytes]:
        async for request in request_iterator:
            try:
                pieces = self.infer(request)
            except _Refused as exc:
                yield oip.ModelStreamInferResponse(
                    error_message=f"{exc.code.name}: {exc}",
                    infer_response=oip.ModelInferResponse(model_name=request.model_name,
                                                          model_version=request.model_version, id=request.id))
                continue
            size = sum(len(piece) for piece in pieces)
            yield b"".join([INFER_RESPONSE_TAG, varint(size), *pieces])


# ----------------------------------------------------------------------------- server


class _PreSerialized(grpc.aio.ServerInterceptor):
    """Let ModelInfer and ModelStreamInfer return serialized responses (bytes) as pvae-serve's do."""

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
            handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        """The handler of an infer method with a serializer that passes bytes through; others unchanged."""
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method not in _INFER_METHODS:
            return handler
        serialize = passing_bytes(handler.response_serializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(handler.unary_unary, handler.request_deserializer, serialize)
        return grpc.stream_stream_rpc_method_handler(handler.stream_stream, handler.request_deserializer, serialize)


async def start_floor(model: ModelSpec, host: str = "127.0.0.1", port: int = 0) -> tuple[grpc.aio.Server, int]:
    """Start the floor server for ``model`` on ``host:port`` (0: a free port); the server and its bound port."""
    server = grpc.aio.server(interceptors=[_PreSerialized()], options=[
        ("grpc.max_receive_message_length", _SERVE_DEFAULTS.max_receive_message_bytes),
        ("grpc.max_send_message_length", _SERVE_DEFAULTS.max_send_message_bytes),
    ])
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FloorServicer(model), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"--port: cannot listen on {address}: {exc}") from None
    await server.start()
    return server, bound


async def _serve(model: ModelSpec, host: str, port: int) -> None:
    tune_malloc()
    server, _ = await start_floor(model, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="python -m pvae.bench.oip_floor",
                                     description="The OIP transport floor: pvae_rates' interface, canned zero "
                                     "outputs, no inference (a measuring instrument for pvae-bench-oip).")
    parser.add_argument("--port", type=int, required=True, help="gRPC port")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--model", default=None,
                        help="bundle directory or checkpoint whose pvae_rates to mirror (default: the bundled model)")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port: must be in [1, 65535], got {args.port}")
    from pvae.serving.source import resolve_bundle

    bundle = resolve_bundle(args.model)
    last = bundle.graphs["rates"].inputs[0].shape[-1]
    patch_dim = int(last) if isinstance(last, int) else bundle.patch_size**2
    asyncio.run(_serve(floor_model(bundle.n_latents, patch_dim), args.host, args.port))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pvae.bench.oip_floor``."""
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
