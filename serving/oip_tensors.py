"""Open Inference Protocol requests -> arrays: input tensors, requested outputs and parameters.

Every check names the tensor or parameter at fault and raises InputError (INVALID_ARGUMENT), or
PayloadTooLargeError before anything is allocated for a tensor over the size limit.

    >>> inputs = read_inputs(request, model_specs(512, 256)["pvae_rates"], max_bytes=1 << 24)
    >>> inputs["patches"].shape
    (1200, 256)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import Enum
from typing import Any, TypeVar

import numpy as np

from pvae.errors import InputError
from pvae.inference import grpc_service_pb2 as oip
from pvae.serving.decode import ChannelOrder, gray_from_colour
from pvae.serving.errors import PayloadTooLargeError
from pvae.serving.oip_models import DATATYPES, FLOAT_DATATYPE, FRAME_CHANNELS, ModelSpec, TensorSpec
from pvae.serving.options import MAX_SEED, FloatFormat

__all__ = [
    "CHANNEL_ORDER_PARAMETER",
    "FLOAT_FORMAT_PARAMETER",
    "channel_order",
    "check_rows",
    "float_format",
    "gray_frame",
    "read_inputs",
    "read_seed",
    "requested_outputs",
    "tensor_error",
]

#: Request parameter that picks the precision of rates and log-rates.
FLOAT_FORMAT_PARAMETER = "float_format"
#: Request parameter that gives the channel order of a colour frame.
CHANNEL_ORDER_PARAMETER = "channel_order"


def tensor_error(kind: str, name: str, problem: str) -> InputError:
    return InputError(f"{kind} '{name}': {problem}")


E = TypeVar("E", bound=Enum)


def _string_parameter(parameters: Any, name: str, choices: Iterable[E], default: E) -> E:
    """The string request parameter ``name`` as one of ``choices`` (``default`` when absent); InputError,
    naming the allowed strings, on another value."""
    if name not in parameters:
        return default
    value = parameters[name].string_param.lower()
    allowed = {choice.value: choice for choice in choices}
    if value not in allowed:
        names = " or ".join(f'"{v}"' for v in allowed)
        raise InputError(f"parameter '{name}': must be the string {names}, got {value!r}")
    return allowed[value]


def float_format(parameters: Any) -> FloatFormat:
    """The request parameter ``float_format`` (FP16 when absent): the float formats OIP has a datatype for
    (pvae.v1's compact u8log codes are not a tensor); InputError on another value."""
    return _string_parameter(parameters, FLOAT_FORMAT_PARAMETER, FLOAT_DATATYPE, FloatFormat.FP16)


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
            raise tensor_error("output", requested.name, f"model {model.name} has no such output (it has {names})")
        if spec in wanted:
            raise tensor_error("output", requested.name, "requested twice")
        wanted.append(spec)
    return wanted


def _shape(tensor: Any, spec: TensorSpec) -> tuple[int, ...]:
    shape = tuple(int(d) for d in tensor.shape)
    expected = "[" + ", ".join(str(d) for d in spec.shape) + "]"
    declared = spec.shape
    if spec.colour and len(shape) == len(spec.shape) + 1:  # a colour frame [H, W, C]
        if shape[-1] not in FRAME_CHANNELS:
            raise tensor_error("input", spec.name, f"shape {list(shape)}: a colour frame [H, W, C] has C = 3 or 4 "
                                "channels (or 1); send gray frames as [H, W]")
        declared = (*spec.shape, shape[-1])
    elif len(shape) != len(spec.shape):
        also = " (or [H, W, C] for colour)" if spec.colour else ""
        raise tensor_error("input", spec.name, f"shape {list(shape)} has {len(shape)} dimensions; the model "
                            f"expects {len(spec.shape)}: {expected}{also}")
    for got, want in zip(shape, declared, strict=True):
        if got < 0:
            raise tensor_error("input", spec.name, f"shape {list(shape)} has a negative dimension")
        if want >= 0 and got != want:
            raise tensor_error("input", spec.name, f"shape {list(shape)} does not match the model's {expected}")
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
            raise tensor_error("input", tensor.name, f"model {model.name} has no such input (it has {names})")
        if tensor.name in arrays:
            raise tensor_error("input", tensor.name, "given twice")
        if tensor.datatype != spec.datatype:
            raise tensor_error("input", spec.name, f"datatype {tensor.datatype!r} does not match the model's "
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
                raise tensor_error("input", spec.name, "has typed contents although the request uses "
                                    "raw_input_contents; use one or the other")
            data = raw[index]
            if len(data) != nbytes:
                raise tensor_error("input", spec.name, f"raw_input_contents[{index}] holds {len(data)} bytes; "
                                    f"shape {list(shape)} of {spec.datatype} needs {nbytes}")
            array = np.frombuffer(data, dtype=dtype).reshape(shape)
        else:
            if contents_field is None:
                raise tensor_error("input", spec.name, f"{spec.datatype} data must be sent as raw_input_contents")
            values = getattr(tensor.contents, contents_field)
            if len(values) != count:
                raise tensor_error("input", spec.name, f"contents.{contents_field} holds {len(values)} values; "
                                    f"shape {list(shape)} needs {count}")
            if spec.datatype == "UINT8" and count and max(values) > 255:
                raise tensor_error("input", spec.name, "contents.uint_contents holds values above 255 for UINT8")
            array = np.array(values, dtype=dtype).reshape(shape)
        arrays[spec.name] = array
    for spec in model.inputs:
        if spec.name not in arrays and not spec.optional:
            raise tensor_error("input", spec.name, f"missing: model {model.name} requires it")
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


def check_rows(array: np.ndarray, name: str, max_rows: int) -> None:
    if not 1 <= array.shape[0] <= max_rows:
        raise tensor_error("input", name, f"has {array.shape[0]} rows; the server accepts 1..{max_rows} "
                            "(max_patches)")


def read_seed(arrays: dict[str, np.ndarray]) -> int | None:
    if "seed" not in arrays:
        return None
    seed = int(arrays["seed"].reshape(-1)[0])
    if seed < 0:
        raise tensor_error("input", "seed", f"must be 0 .. {MAX_SEED}, got {seed}")
    return seed
