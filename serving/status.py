"""The one table from the server's errors to gRPC status codes, for both wire protocols.

Every RPC of pvae.v1 and of the Open Inference Protocol turns an exception into a status here and
nowhere else: for an aborted call, for an in-band per-frame error, for a stream whose reads failed,
and for a call the client cut short.

    >>> status_for(UnavailableError("server is draining"))
    (<StatusCode.UNAVAILABLE: (14, 'unavailable')>, 'server is draining')
"""

from __future__ import annotations

from typing import Any

import grpc

from pvae.errors import InputError
from pvae.serving.errors import (
    InferenceError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    UnavailableError,
)

__all__ = ["STATUS_TABLE", "cancel_code", "code_number", "read_failure", "status_for"]

#: Exception class -> status code, most specific first (the first match wins). Anything else is
#: INTERNAL, with the exception's type in the message.
STATUS_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (ModelNotFoundError, grpc.StatusCode.NOT_FOUND),
    (PayloadTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (OverloadedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (InputError, grpc.StatusCode.INVALID_ARGUMENT),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (InferenceError, grpc.StatusCode.INTERNAL),
)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message for an exception raised while serving a frame or request."""
    for kind, code in STATUS_TABLE:
        if isinstance(exc, kind):
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def read_failure(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status that ends a stream whose request iterator raised ``exc``: the table's code for one
    of our errors (an undecodable message is INVALID_ARGUMENT: pvae.serving.wire; the stream's
    framing is lost), else the transport's code (e.g. RESOURCE_EXHAUSTED for a message over the
    size limit)."""
    if isinstance(exc, InputError):
        return status_for(exc)
    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else grpc.StatusCode.INTERNAL
    return code, f"stream read failed: {exc}"


def code_number(code: grpc.StatusCode) -> int:
    """The numeric value of a status code (what in-band errors carry)."""
    return int(code.value[0])


def cancel_code(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Why a call was cut short: its deadline passed, or the client cancelled it."""
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
