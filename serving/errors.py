"""Serving's own errors, under the project's tree (``pvae.errors``), and their gRPC status codes.

    PVAEError
    ├── InputError                  bad shape, size, options or undecodable image -> INVALID_ARGUMENT
    │   ├── PayloadTooLargeError    a frame or message beyond a size limit        -> RESOURCE_EXHAUSTED
    │   └── ModelNotFoundError      an OIP request names a model or version not served -> NOT_FOUND
    └── ServingError
        ├── OverloadedError         queues full, too many streams                   -> RESOURCE_EXHAUSTED
        ├── UnavailableError        warming up or draining                          -> UNAVAILABLE
        └── InferenceError          ONNX Runtime failed on a batch                  -> INTERNAL

The compute modules raise these; pvae.serving.status alone turns them into status codes.
"""

from __future__ import annotations

from pvae.errors import InputError, PVAEError

__all__ = [
    "InferenceError",
    "ModelNotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "ServingError",
    "UnavailableError",
]


class ServingError(PVAEError):
    """Base class of the server's own failures (not the client's input)."""


class PayloadTooLargeError(InputError):
    """A frame payload or a response is larger than the configured limit."""


class ModelNotFoundError(InputError):
    """The request names a model or version this server does not serve."""


class OverloadedError(ServingError):
    """The server cannot take more work right now (a bounded queue is full)."""


class UnavailableError(ServingError):
    """The server is not ready yet, or is draining."""


class InferenceError(ServingError):
    """ONNX Runtime failed while running a graph."""
