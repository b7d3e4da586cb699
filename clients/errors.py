"""The client's exceptions: one branch of the project's tree (``pvae.errors``).

    PVAEError
    └── ClientError              anything the client library raises on purpose
        ├── ServerUnavailable    the server cannot be reached, or was not ready in time (also a ConnectionError)
        ├── RemoteError          the server failed a call with a status code (``code``, ``details``)
        │   └── FrameError       one frame of a stream failed in-band (the stream went on)
        ├── ProtocolError        a response does not match pvae.proto (lengths, shapes)
        └── SourceError          a frame source is missing, unreadable or empty (also a DataError)

Every message names what went wrong and where (the server address, the source path).

    >>> try:
    ...     Client("127.0.0.1:1", retry=RetryPolicy(timeout_s=0.5)).info()
    ... except ServerUnavailable as exc:
    ...     print(exc.address)
    127.0.0.1:1
"""

from __future__ import annotations

import grpc

from pvae.errors import DataError, PVAEError

__all__ = [
    "ClientError",
    "FrameError",
    "ProtocolError",
    "RemoteError",
    "ServerUnavailable",
    "SourceError",
    "code_from_number",
    "error_from_rpc",
]


class ClientError(PVAEError):
    """Base class of the client library's errors."""


class ServerUnavailable(ClientError, ConnectionError):
    """The server at ``address`` could not be reached, was not ready in time, or is draining."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"pvae server at {address} is unavailable: {reason}")
        self.address = address
        """The target(s) dialled, as given to the client."""
        self.reason = reason
        """What gRPC (or the health check) said."""


class RemoteError(ClientError):
    """The server answered a call with an error status."""

    def __init__(self, address: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"pvae server at {address}: {code.name}: {details}")
        self.address = address
        """The target(s) dialled."""
        self.code = code
        """The gRPC status code (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...)."""
        self.details = details
        """The server's message (it names the field and the limit)."""


class FrameError(RemoteError):
    """One frame of a stream failed in-band; found in ``FrameResult.error`` (not raised by ``stream``)."""

    def __init__(self, address: str, code: grpc.StatusCode, details: str, sequence: int) -> None:
        super().__init__(address, code, f"frame {sequence}: {details}")
        self.sequence = sequence
        """The failed frame's sequence number."""


class ProtocolError(ClientError):
    """A response that does not follow pvae.proto (a server bug or a foreign server)."""


class SourceError(ClientError, DataError):
    """A frame source (camera, video file, image folder, URL) is missing, unreadable or empty."""


def code_from_number(number: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a google.rpc.Code number (UNKNOWN for numbers gRPC does not know)."""
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


def error_from_rpc(address: str, error: grpc.RpcError) -> ClientError:
    """Map a failed call to the client's exception: UNAVAILABLE -> ServerUnavailable, else RemoteError."""
    code = error.code() if isinstance(error, grpc.Call | grpc.aio.AioRpcError) else grpc.StatusCode.UNKNOWN
    details = (error.details() if isinstance(error, grpc.Call | grpc.aio.AioRpcError) else None) or str(error)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ServerUnavailable(address, details)
    return RemoteError(address, code, details)
