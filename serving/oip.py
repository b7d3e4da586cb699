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

    >>> oip = InferenceServicer(encoder)          # shares the encoder servicer's pipeline and state
    >>> grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(oip, server)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

import grpc
import numpy as np

from pvae import __version__
from pvae.bundle import SAMPLER_MAX_RATE
from pvae.errors import InputError
from pvae.inference import grpc_service_pb2 as oip
from pvae.inference import grpc_service_pb2_grpc as oip_grpc
from pvae.inference import model_config_pb2 as mc
from pvae.serving.decode import ChannelOrder, check_dimensions, gray_from_colour
from pvae.serving.errors import PayloadTooLargeError, UnavailableError
from pvae.serving.metrics import rpc_labels
from pvae.serving.options import MAX_SEED, CountFormat, FloatFormat, ImageEncoding, Output, OutputSpec
from pvae.serving.pipeline import FrameJob, Job, PackedResult, PatchJob, PreprocessJob, SampleJob
from pvae.serving.servicer import EncoderServicer, cancel_code, read_failure, status_for
from pvae.serving.wire import request_bytes

__all__ = [
    "DATATYPES",
    "FLOAT_DATATYPE",
    "INFER_RESPONSE_TAG",
    "MODEL_NAMES",
    "MODEL_VERSION",
    "PLATFORM",
    "RAW_OUTPUT_TAG",
    "SERVICE_NAME",
    "UNIMPLEMENTED_RPCS",
    "DurationStat",
    "InferenceServicer",
    "ModelNotFoundError",
    "ModelSpec",
    "ModelStats",
    "TensorSpec",
    "channel_order",
    "float_format",
    "gray_frame",
    "model_config",
    "model_metadata",
    "model_parameters",
    "model_specs",
    "read_inputs",
    "requested_outputs",
    "unimplemented_rpcs",
    "varint",
]

#: The full service name, as health checks and reflection know it.
SERVICE_NAME = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
#: The only version of each model (a server serves one bundle).
MODEL_VERSION = "1"
#: Exposed models, in listing order.
MODEL_NAMES = ("pvae_rates", "pvae_counts", "pvae_frame", "pvae_preprocess")
UNARY = "ModelInfer"
STREAM = "ModelStreamInfer"
#: OIP datatype -> (numpy dtype, typed-contents field or None when only raw is accepted, config enum).
DATATYPES: dict[str, tuple[np.dtype[Any], str | None, int]] = {
    "FP32": (np.dtype("<f4"), "fp32_contents", mc.TYPE_FP32),
    "FP16": (np.dtype("<f2"), None, mc.TYPE_FP16),
    "INT64": (np.dtype("<i8"), "int64_contents", mc.TYPE_INT64),
    "INT32": (np.dtype("<i4"), "int_contents", mc.TYPE_INT32),
    "UINT8": (np.dtype("u1"), "uint_contents", mc.TYPE_UINT8),
}
#: Datatype of rates and log-rates on the wire for each float format.
FLOAT_DATATYPE = {FloatFormat.FP16: "FP16", FloatFormat.FP32: "FP32"}
#: What ModelMetadata and ModelConfig call the platform of the exposed models.
PLATFORM = "onnxruntime_onnx"
#: Request parameter that picks the precision of rates and log-rates.
FLOAT_FORMAT_PARAMETER = "float_format"
#: Request parameter that gives the channel order of a colour frame.
CHANNEL_ORDER_PARAMETER = "channel_order"
#: Channels a colour ``frame`` may have (its third dimension).
FRAME_CHANNELS = (1, 3, 4)


class ModelNotFoundError(InputError):
    """The request names a model or version this server does not serve (NOT_FOUND)."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of an exposed model, as ModelMetadata and ModelConfig describe it."""

    name: str
    datatype: str
    """OIP datatype string (FP32, FP16, INT64, INT32, UINT8); outputs FP16 may be returned as FP32."""
    shape: tuple[int, ...]
    """-1 for a dimension the request chooses."""
    optional: bool = False
    description: str = ""
    """What the tensor holds or expects (ModelConfig parameter ``input.NAME`` / ``output.NAME``)."""
    colour: bool = False
    """A frame: [H, W] gray, or also [H, W, C] with C in FRAME_CHANNELS."""


@dataclass(frozen=True)
class ModelSpec:
    """One exposed model."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    description: str

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)


def model_specs(n_latents: int, patch_dim: int, patch_shape: tuple[int, int] | None = None,
                min_side: int | None = None) -> dict[str, ModelSpec]:
    """The four models for a bundle with ``n_latents`` latents and ``patch_dim``-pixel patches
    (``patch_shape`` (ph, pw) and ``min_side`` only enter the descriptions)."""
    k = n_latents
    ph, pw = patch_shape or (math.isqrt(patch_dim), patch_dim // max(math.isqrt(patch_dim), 1))
    side = min_side or max(ph, pw)
    grid = (f"R = ceil(H / {ph}) rows and C = ceil(W / {pw}) columns of {ph}x{pw} patches, row-major "
            "(patch r*C + c); the response parameters grid_rows and grid_cols hold R and C")
    floats = ('float16 by default; request parameter float_format "fp32" returns FP32, equal to the graph '
              "bit for bit")
    frame_help = (f"one uint8 frame: [H, W] grayscale, or [H, W, 3] / [H, W, 4] colour (to gray by BT.601 luma; "
                  f'request parameter channel_order "bgr", the default, or "rgb"); each side at least {side} pixels')
    frame = TensorSpec("frame", "UINT8", (-1, -1), description=frame_help, colour=True)
    rates = TensorSpec("rates", "FP16", (-1, k), description=f"Poisson firing rates per patch and latent, {floats}")
    log_rates = TensorSpec("log_rates", "FP16", (-1, k), description=f"natural log of the rates, {floats}")
    counts = TensorSpec("counts", "INT32", (-1, k),
                        description="exact Poisson spike counts, drawn with the seed the response parameter seed "
                                    "reports")
    patches_help = (f"whitened model-space patches, float32 [N, {patch_dim}] ({ph}x{pw}, flattened row by row): "
                    "not pixels. A frame's patches come from the model pvae_preprocess; raw pixels give "
                    "meaningless rates")
    specs = (
        ModelSpec("pvae_rates", (TensorSpec("patches", "FP32", (-1, patch_dim), description=patches_help),),
                  (rates, log_rates),
                  "model-space patches -> Poisson firing rates and log-rates (the deterministic rate path); "
                  "get a frame's patches from pvae_preprocess"),
        ModelSpec("pvae_counts",
                  (TensorSpec("rates", "FP32", (-1, k), description=f"Poisson means [N, {k}], finite, in "
                              f"[0, {SAMPLER_MAX_RATE:g}] (pvae_rates' rates as FP32)"),
                   TensorSpec("seed", "INT64", (1,), description=f"sampler seed 0 .. {MAX_SEED} (required): the "
                              "same rates and seed give the same counts on every device")),
                  (counts,),
                  "rates and a seed -> exact Poisson spike counts (the bundle's counter-based sampler)"),
        ModelSpec("pvae_frame",
                  (frame, TensorSpec("seed", "INT64", (1,), True, description="sampler seed 0 .. "
                                     f"{MAX_SEED} (optional: a random one is drawn and reported)")),
                  (TensorSpec(rates.name, rates.datatype, rates.shape, description=f"{rates.description}; {grid}"),
                   log_rates, counts,
                   TensorSpec("reconstruction", "UINT8", (-1, -1), description="the mean reconstruction [H, W], "
                              "model space shown as clip(round(128 + 32 x), 0, 255)")),
                  "one uint8 frame -> patch-wise rates, spike counts and the mean reconstruction"),
        ModelSpec("pvae_preprocess", (frame,),
                  (TensorSpec("patches", "FP32", (-1, patch_dim), description=f"the frame's whitened model-space "
                              f"patches, float32 [R*C, {patch_dim}]: {grid}; the input pvae_rates expects"),),
                  "one uint8 frame -> its whitened model-space patches for pvae_rates (the frame graph's own "
                  "preprocessing: /255, whitening, local contrast normalisation, z-score; reflect-padded at the "
                  "bottom and right to whole patches)"),
    )
    return {spec.name: spec for spec in specs}


def model_metadata(model: ModelSpec, platform: str = PLATFORM) -> oip.ModelMetadataResponse:
    """ModelMetadata of an exposed model."""
    tensor = oip.ModelMetadataResponse.TensorMetadata
    return oip.ModelMetadataResponse(
        name=model.name, versions=[MODEL_VERSION], platform=platform,
        inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in model.inputs],
        outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in model.outputs])


def model_config(model: ModelSpec, group: mc.ModelInstanceGroup, platform: str = PLATFORM,
                 backend: str = "onnxruntime", description: str | None = None) -> mc.ModelConfig:
    """Triton's description of an exposed model: no batch dimension (each request is one call), one
    instance ``group``, not decoupled. An empty ``backend`` leaves the field unset."""
    return mc.ModelConfig(
        name=model.name, platform=platform, backend=backend, max_batch_size=0,
        version_policy=mc.ModelVersionPolicy(latest=mc.ModelVersionPolicy.Latest(num_versions=1)),
        input=[mc.ModelInput(name=t.name, data_type=DATATYPES[t.datatype][2], dims=t.shape, optional=t.optional)
               for t in model.inputs],
        output=[mc.ModelOutput(name=t.name, data_type=DATATYPES[t.datatype][2], dims=t.shape)
                for t in model.outputs],
        instance_group=[group],
        model_transaction_policy=mc.ModelTransactionPolicy(decoupled=False),
        parameters=model_parameters(model, description))


def model_parameters(model: ModelSpec, description: str | None = None) -> dict[str, mc.ModelParameter]:
    """ModelConfig parameters that describe a model: ``description``, and ``input.NAME`` / ``output.NAME``
    for each tensor that has a description."""
    texts = {"description": model.description if description is None else description}
    texts.update({f"input.{t.name}": t.description for t in model.inputs if t.description})
    texts.update({f"output.{t.name}": t.description for t in model.outputs if t.description})
    return {key: mc.ModelParameter(string_value=text) for key, text in texts.items()}


# ----------------------------------------------------------------------------- requests


def _tensor_error(kind: str, name: str, problem: str) -> InputError:
    return InputError(f"{kind} '{name}': {problem}")


E = TypeVar("E", bound=Enum)


def _string_parameter(parameters: Any, name: str, choices: type[E], default: E) -> E:
    """The string request parameter ``name`` as a member of ``choices`` (``default`` when absent); InputError,
    naming the allowed strings, on another value."""
    if name not in parameters:
        return default
    value = parameters[name].string_param.lower()
    try:
        return choices(value)
    except ValueError:
        allowed = " or ".join(f'"{c.value}"' for c in choices)
        raise InputError(f"parameter '{name}': must be the string {allowed}, got {value!r}") from None


def float_format(parameters: Any) -> FloatFormat:
    """The request parameter ``float_format`` (FP16 when absent); InputError on another value."""
    return _string_parameter(parameters, FLOAT_FORMAT_PARAMETER, FloatFormat, FloatFormat.FP16)


def requested_outputs(request: oip.ModelInferRequest, model: ModelSpec) -> list[TensorSpec]:
    """The outputs to return, in the request's order (all of the model's when it names none); InputError on an
    unknown or repeated name."""
    if not request.outputs:
        return list(model.outputs)
    wanted: list[TensorSpec] = []
    for requested in request.outputs:
        spec = model.output(requested.name)
        if spec is None:
            names = ", ".join(t.name for t in model.outputs)
            raise _tensor_error("output", requested.name, f"model {model.name} has no such output (it has {names})")
        if spec in wanted:
            raise _tensor_error("output", requested.name, "requested twice")
        wanted.append(spec)
    return wanted


def _shape(tensor: Any, spec: TensorSpec) -> tuple[int, ...]:
    shape = tuple(int(d) for d in tensor.shape)
    expected = "[" + ", ".join(str(d) for d in spec.shape) + "]"
    declared = spec.shape
    if spec.colour and len(shape) == len(spec.shape) + 1:  # a colour frame [H, W, C]
        if shape[-1] not in FRAME_CHANNELS:
            raise _tensor_error("input", spec.name, f"shape {list(shape)}: a colour frame [H, W, C] has C = 3 or 4 "
                                "channels (or 1); send gray frames as [H, W]")
        declared = (*spec.shape, shape[-1])
    elif len(shape) != len(spec.shape):
        also = " (or [H, W, C] for colour)" if spec.colour else ""
        raise _tensor_error("input", spec.name, f"shape {list(shape)} has {len(shape)} dimensions; the model "
                            f"expects {len(spec.shape)}: {expected}{also}")
    for got, want in zip(shape, declared, strict=True):
        if got < 0:
            raise _tensor_error("input", spec.name, f"shape {list(shape)} has a negative dimension")
        if want >= 0 and got != want:
            raise _tensor_error("input", spec.name, f"shape {list(shape)} does not match the model's {expected}")
    return shape


def read_inputs(request: oip.ModelInferRequest, model: ModelSpec, max_bytes: int) -> dict[str, np.ndarray]:
    """The request's input tensors as arrays of the declared dtype and shape (InputError otherwise).

    Sizes are checked before anything is allocated: a tensor over ``max_bytes`` is refused with
    PayloadTooLargeError, whatever its dims claim.
    """
    declared = {t.name: t for t in model.inputs}
    raw = request.raw_input_contents
    n_raw = len(raw)
    if n_raw and n_raw != len(request.inputs):
        raise InputError(f"raw_input_contents: {n_raw} entries for {len(request.inputs)} inputs; send one entry "
                         "per input, in the order of the inputs (or none, with typed contents)")
    arrays: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        spec = declared.get(tensor.name)
        if spec is None:
            names = ", ".join(declared)
            raise _tensor_error("input", tensor.name, f"model {model.name} has no such input (it has {names})")
        if tensor.name in arrays:
            raise _tensor_error("input", tensor.name, "given twice")
        if tensor.datatype != spec.datatype:
            raise _tensor_error("input", spec.name, f"datatype {tensor.datatype!r} does not match the model's "
                                f"{spec.datatype}")
        shape = _shape(tensor, spec)
        dtype, contents_field, _ = DATATYPES[spec.datatype]
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if nbytes > max_bytes:
            raise PayloadTooLargeError(f"input '{spec.name}': shape {list(shape)} is {nbytes} bytes, over the "
                                       f"server's limit of {max_bytes} bytes per tensor")
        if n_raw:
            if tensor.HasField("contents"):
                raise _tensor_error("input", spec.name, "has typed contents although the request uses "
                                    "raw_input_contents; use one or the other")
            data = raw[index]
            if len(data) != nbytes:
                raise _tensor_error("input", spec.name, f"raw_input_contents[{index}] holds {len(data)} bytes; "
                                    f"shape {list(shape)} of {spec.datatype} needs {nbytes}")
            array = np.frombuffer(data, dtype=dtype).reshape(shape)
        else:
            if contents_field is None:
                raise _tensor_error("input", spec.name, f"{spec.datatype} data must be sent as raw_input_contents")
            values = getattr(tensor.contents, contents_field)
            if len(values) != count:
                raise _tensor_error("input", spec.name, f"contents.{contents_field} holds {len(values)} values; "
                                    f"shape {list(shape)} needs {count}")
            if spec.datatype == "UINT8" and count and max(values) > 255:
                raise _tensor_error("input", spec.name, "contents.uint_contents holds values above 255 for UINT8")
            array = np.array(values, dtype=dtype).reshape(shape)
        arrays[spec.name] = array
    for spec in model.inputs:
        if spec.name not in arrays and not spec.optional:
            raise _tensor_error("input", spec.name, f"missing: model {model.name} requires it")
    return arrays


def channel_order(parameters: Any) -> ChannelOrder:
    """The request parameter ``channel_order`` (BGR when absent, as in pvae.v1); InputError on another value."""
    return _string_parameter(parameters, CHANNEL_ORDER_PARAMETER, ChannelOrder, ChannelOrder.BGR)


def gray_frame(frame: np.ndarray, order: ChannelOrder) -> np.ndarray:
    """A ``frame`` input as uint8 gray (H, W): colour [H, W, C] by BT.601 luma, as pvae.v1 raw frames."""
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 1:
        return np.ascontiguousarray(frame[:, :, 0])
    return gray_from_colour(np.ascontiguousarray(frame), order)


def _rows(array: np.ndarray, name: str, max_rows: int) -> None:
    if not 1 <= array.shape[0] <= max_rows:
        raise _tensor_error("input", name, f"has {array.shape[0]} rows; the server accepts 1..{max_rows} "
                            "(max_patches)")


def _seed(arrays: dict[str, np.ndarray]) -> int | None:
    if "seed" not in arrays:
        return None
    seed = int(arrays["seed"].reshape(-1)[0])
    if seed < 0:
        raise _tensor_error("input", "seed", f"must be 0 .. {MAX_SEED}, got {seed}")
    return seed


#: Wire tags (field number << 3 | 2, length-delimited) of a response assembled by hand:
#: ModelInferResponse.raw_output_contents (6) and ModelStreamInferResponse.infer_response (2).
RAW_OUTPUT_TAG = bytes([oip.ModelInferResponse.RAW_OUTPUT_CONTENTS_FIELD_NUMBER << 3 | 2])
INFER_RESPONSE_TAG = bytes([oip.ModelStreamInferResponse.INFER_RESPONSE_FIELD_NUMBER << 3 | 2])


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# ----------------------------------------------------------------------------- statistics


@dataclass
class DurationStat:
    """A count and a total duration, as Triton's StatisticDuration reports them."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += int(seconds * 1e9)

    def message(self) -> oip.StatisticDuration:
        return oip.StatisticDuration(count=self.count, ns=self.ns)


@dataclass
class ModelStats:
    """What ModelStatistics reports for one model (Triton's fields; one execution per request)."""

    last_inference_ms: int = 0
    inference_count: int = 0
    success: DurationStat = field(default_factory=DurationStat)
    fail: DurationStat = field(default_factory=DurationStat)
    queue: DurationStat = field(default_factory=DurationStat)
    compute_input: DurationStat = field(default_factory=DurationStat)
    compute_infer: DurationStat = field(default_factory=DurationStat)
    compute_output: DurationStat = field(default_factory=DurationStat)

    def succeeded(self, total_s: float, queue_s: float, input_s: float, infer_s: float, output_s: float) -> None:
        """One answered request and the seconds it spent in each of Triton's phases."""
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.inference_count += 1
        self.success.add(total_s)
        self.queue.add(queue_s)
        self.compute_input.add(input_s)
        self.compute_infer.add(infer_s)
        self.compute_output.add(output_s)

    def failed(self, total_s: float) -> None:
        """One request that got an error status."""
        self.fail.add(total_s)

    def message(self, name: str) -> oip.ModelStatistics:
        return oip.ModelStatistics(
            name=name, version=MODEL_VERSION, last_inference=self.last_inference_ms,
            inference_count=self.inference_count, execution_count=self.inference_count,
            inference_stats=oip.InferStatistics(
                success=self.success.message(), fail=self.fail.message(), queue=self.queue.message(),
                compute_input=self.compute_input.message(), compute_infer=self.compute_infer.message(),
                compute_output=self.compute_output.message()))


# ----------------------------------------------------------------------------- streams


_END = object()


@dataclass(eq=False)
class _OipStream:
    window: asyncio.Semaphore
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    reader: asyncio.Task[None] | None = None
    client_done: bool = False
    fatal: tuple[grpc.StatusCode, str] | None = None


# ----------------------------------------------------------------------------- the servicer


class InferenceServicer(oip_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService over the encoder servicer's pipeline (see the module docstring)."""

    def __init__(self, encoder: EncoderServicer) -> None:
        self.encoder = encoder
        self.batcher = encoder.batcher
        self.config = encoder.config
        self.metrics = encoder.metrics
        engine = encoder.pipeline.engine
        self.models = model_specs(engine.n_latents, engine.patch_dim, engine.patch_shape, engine.min_frame_side)
        self._plan = engine.plan
        self._stats = {name: ModelStats() for name in self.models}
        self._streams: set[_OipStream] = set()
        self._builders: dict[str, Callable[[dict[str, np.ndarray], OutputSpec, ChannelOrder], Job]] = {
            "pvae_rates": self._rates_job, "pvae_counts": self._counts_job, "pvae_frame": self._frame_job,
            "pvae_preprocess": self._preprocess_job}

    # ------------------------------------------------------------------ lifecycle

    @property
    def active_streams(self) -> int:
        """Open ModelStreamInfer calls."""
        return len(self._streams)

    def begin_drain(self) -> None:
        """Stop reading every stream; what was read is answered, then the stream ends UNAVAILABLE."""
        for stream in self._streams:
            if stream.reader is not None:
                stream.reader.cancel()

    # ------------------------------------------------------------------ health and metadata

    def _model(self, name: str, version: str) -> ModelSpec:
        model = self.models.get(name)
        if model is None:
            raise ModelNotFoundError(f"model '{name}' is not served here (models: {', '.join(self.models)})")
        if version not in ("", MODEL_VERSION):
            raise ModelNotFoundError(f"model '{name}' has no version '{version}' (versions: {MODEL_VERSION})")
        return model

    async def _abort(self, context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
        code, message = self.status(exc)
        await context.abort(code, message)

    @staticmethod
    def status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
        """The status code and message for an exception raised while serving a request."""
        if isinstance(exc, ModelNotFoundError):
            return grpc.StatusCode.NOT_FOUND, str(exc)
        return status_for(exc)

    async def ServerLive(self, request: oip.ServerLiveRequest,
                         context: grpc.aio.ServicerContext[Any, Any]) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(self, request: oip.ServerReadyRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=self.encoder.ready)

    async def ModelReady(self, request: oip.ModelReadyRequest,
                         context: grpc.aio.ServicerContext[Any, Any]) -> oip.ModelReadyResponse:
        # As Triton does: an unknown model is simply not ready (readiness probes need no error path).
        known = request.name in self.models and request.version in ("", MODEL_VERSION)
        return oip.ModelReadyResponse(ready=known and self.encoder.ready)

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
        state = "READY" if self.encoder.ready else "UNAVAILABLE"
        return oip.RepositoryIndexResponse(models=[
            oip.RepositoryIndexResponse.ModelIndex(name=name, version=MODEL_VERSION, state=state)
            for name in self.models])

    # ------------------------------------------------------------------ inference

    def _rates_job(self, inputs: dict[str, np.ndarray], spec: OutputSpec, order: ChannelOrder) -> Job:
        patches = inputs["patches"]
        _rows(patches, "patches", self.config.max_patches)
        if not np.isfinite(patches).all():
            raise _tensor_error("input", "patches", "contains NaN or infinite values")
        return PatchJob(patches, spec, seed=0)

    def _counts_job(self, inputs: dict[str, np.ndarray], spec: OutputSpec, order: ChannelOrder) -> Job:
        rates = inputs["rates"]
        _rows(rates, "rates", self.config.max_patches)
        if not (np.isfinite(rates).all() and (rates >= 0).all() and (rates <= SAMPLER_MAX_RATE).all()):
            raise _tensor_error("input", "rates", f"must be finite and in [0, {SAMPLER_MAX_RATE:g}] (Poisson means)")
        seed = _seed(inputs)
        assert seed is not None  # a required input (read_inputs)
        return SampleJob(rates, spec, seed)

    def _frame(self, inputs: dict[str, np.ndarray], order: ChannelOrder) -> np.ndarray:
        frame = inputs["frame"]
        check_dimensions(int(frame.shape[0]), int(frame.shape[1]), self.encoder.limits, "input 'frame'")
        return gray_frame(frame, order)

    def _frame_job(self, inputs: dict[str, np.ndarray], spec: OutputSpec, order: ChannelOrder) -> Job:
        frame = self._frame(inputs, order)
        seed = _seed(inputs)
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

        The response is assembled by hand because the outputs are megabytes: putting them into a
        message and serializing it would copy them twice more (measured: 1.0 ms of a 4 ms round
        trip at 1200 patches). The fields come in field-number order, as protobuf writes them.
        """
        received = time.perf_counter()
        stats: ModelStats | None = None
        try:
            self.metrics.received_bytes.labels(**rpc_labels(rpc)).inc(request_bytes(request))
            model = self._model(request.model_name, request.model_version)
            stats = self._stats[model.name]
            self.encoder.check_available()
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
            pieces = [head.SerializeToString()]
            for _, _, data in tensors:
                pieces += [RAW_OUTPUT_TAG + varint(len(data)), data]
            self.encoder.check_size(sum(len(piece) for piece in pieces))
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
        self.encoder.account(rpc, result)
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
            code, message = self.status(exc)
            self.metrics.error(UNARY, code.name)
            await context.abort(code, message)
            raise  # unreachable: abort raises

    # ------------------------------------------------------------------ streaming

    async def _answer(self, request: oip.ModelInferRequest) -> oip.ModelStreamInferResponse | bytes:
        """One stream request -> its response (pre-serialized), or an in-band error (never raises but
        CancelledError)."""
        try:
            pieces = await self.infer(request, STREAM, wait=True)
            size = sum(len(piece) for piece in pieces)
            wire = b"".join([INFER_RESPONSE_TAG, varint(size), *pieces])  # ModelStreamInferResponse.infer_response
            self.metrics.sent_bytes.labels(**rpc_labels(STREAM)).inc(len(wire))
            return wire
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code, message = self.status(exc)
            self.metrics.error(STREAM, code.name)
            error = self._in_band_error(request, code, message)
            self.metrics.sent_bytes.labels(**rpc_labels(STREAM)).inc(error.ByteSize())
            return error

    @staticmethod
    def _in_band_error(request: oip.ModelInferRequest, code: grpc.StatusCode,
                       message: str) -> oip.ModelStreamInferResponse:
        return oip.ModelStreamInferResponse(
            error_message=f"{code.name}: {message}",
            infer_response=oip.ModelInferResponse(model_name=request.model_name,
                                                  model_version=request.model_version, id=request.id))

    async def _read(self, requests: AsyncIterator[oip.ModelInferRequest], stream: _OipStream) -> None:
        """Admit requests into the stream's window until the client half-closes, a drain, or a fatal error."""
        request: oip.ModelInferRequest | None = None
        try:
            async for request in requests:
                await stream.window.acquire()
                stream.queue.put_nowait(asyncio.create_task(self._answer(request)))
                request = None
            stream.client_done = True
        except asyncio.CancelledError:  # draining: what was read is answered; a request held back is refused
            if request is not None:
                stream.queue.put_nowait(self._in_band_error(request, grpc.StatusCode.UNAVAILABLE,
                                                            "server is draining (shutting down)"))
            raise
        except Exception as exc:  # a fatal read: the stream ends with this status
            stream.fatal = read_failure(exc)
        finally:
            stream.queue.put_nowait(_END)

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[oip.ModelInferRequest],
                               context: grpc.aio.ServicerContext[Any, Any]
                               ) -> AsyncIterator[oip.ModelStreamInferResponse | bytes]:
        try:
            self.encoder.check_available()
        except UnavailableError as exc:
            self.metrics.error(STREAM, grpc.StatusCode.UNAVAILABLE.name)
            await self._abort(context, exc)
        if self.encoder.active_streams + self.active_streams >= self.config.max_streams:
            self.metrics.error(STREAM, grpc.StatusCode.RESOURCE_EXHAUSTED.name)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"too many streams: the server serves at most max_streams={self.config.max_streams}")
        stream = _OipStream(window=asyncio.Semaphore(self.config.default_window))
        self._streams.add(stream)
        self.metrics.active_streams.inc()
        stream.reader = asyncio.create_task(self._read(request_iterator, stream), name="pvae-oip-stream-reader")
        try:
            while True:
                item = await stream.queue.get()
                if item is _END:
                    break
                response = await item if isinstance(item, asyncio.Task) else item
                if isinstance(item, asyncio.Task):
                    stream.window.release()
                yield response
            if stream.fatal is not None:
                code, message = stream.fatal
                self.metrics.error(STREAM, code.name)
                await context.abort(code, message)
            if not stream.client_done:
                self.metrics.error(STREAM, grpc.StatusCode.UNAVAILABLE.name)
                await context.abort(grpc.StatusCode.UNAVAILABLE,
                                    "server is draining (shutting down); reconnect to another replica")
        except (asyncio.CancelledError, GeneratorExit):  # the client went away, or the deadline passed
            self.metrics.error(STREAM, cancel_code(context))
            raise
        finally:
            stream.reader.cancel()
            with contextlib.suppress(asyncio.QueueEmpty):
                while True:
                    item = stream.queue.get_nowait()
                    if isinstance(item, asyncio.Task):
                        item.cancel()
            self._streams.discard(stream)
            self.metrics.active_streams.dec()



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
