"""Malformed protobuf on the wire gets INVALID_ARGUMENT, not gRPC's generic INTERNAL.

gRPC Python answers a request it cannot deserialize with ``INTERNAL: Exception deserializing
request!``, which reads like a server bug. This interceptor swaps the deserializer of each
pvae.v1 and Open Inference Protocol method for a tolerant one that returns a ``MalformedMessage``
marker, and the wrapped method answers the marker with INVALID_ARGUMENT naming the message type (a
stream is closed with that status, since its framing can no longer be trusted).

Two more things ride on the same wrapping, both for megabyte messages: the deserializer records
the request's wire size (``request_bytes``: protobuf's upb ``ByteSize()`` would serialize the whole
message again to tell), and the serializer passes ``bytes`` through, so a handler may return a
response it assembled itself.

Streaming methods are driven from here too (``write_responses``): each response is written with
``context.write``, so a client that vanishes while a response is being sent ends its stream as
cancelled (no ERROR line, no traceback), on both protocols alike.

    >>> server = grpc.aio.server(interceptors=[MalformedMessageInterceptor()])
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from pvae.errors import InputError

__all__ = ["SERVICE_PREFIX", "MalformedMessage", "MalformedMessageError", "MalformedMessageInterceptor",
           "passing_bytes", "request_bytes", "write_responses"]

#: Methods this interceptor guards: pvae.v1 and the Open Inference Protocol (health and reflection keep gRPC's own).
SERVICE_PREFIX = ("/pvae.v1.", "/inference.GRPCInferenceService/")


@dataclass(frozen=True)
class MalformedMessage:
    """What the tolerant deserializer returns for bytes that are not a valid message."""

    method: str
    """The full method name."""
    size: int
    """Length of the undecodable message, bytes."""
    reason: str
    """The protobuf parser's complaint."""

    def describe(self) -> str:
        """The INVALID_ARGUMENT message."""
        return (f"{self.method}: request message of {self.size} bytes is not valid protobuf for this method "
                f"({self.reason})")


#: Wire size of the request message last deserialized in this context (-1: unknown). gRPC runs a
#: method's deserializer in the task that receives the message: the unary handler's own task, or
#: the task that iterates a stream's requests (tasks it starts afterwards inherit the value).
_REQUEST_BYTES: ContextVar[int] = ContextVar("pvae_request_bytes", default=-1)


def request_bytes(message: Any) -> int:
    """The wire size of ``message``, the request being handled: the size the deserializer saw,
    else ``ByteSize()`` (which, in protobuf's upb backend, serializes the whole message)."""
    size = _REQUEST_BYTES.get()
    return size if size >= 0 else int(message.ByteSize())


class MalformedMessageError(InputError):
    """Raised inside a stream's request iterator when a message was undecodable."""


def _tolerant(deserializer: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        _REQUEST_BYTES.set(len(data))
        if deserializer is None:
            return data
        try:
            return deserializer(data)
        except (DecodeError, ValueError, RuntimeError) as exc:  # upb raises DecodeError; be lenient about kind
            return MalformedMessage(method, len(data), str(exc) or type(exc).__name__)
    return deserialize


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, MalformedMessage):
            raise MalformedMessageError(request.describe())
        yield request


def passing_bytes(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """A response serializer that sends ``bytes`` as they are: a handler may return a message it
    serialized itself (pvae.serving.oip assembles megabyte responses without copying them twice)."""
    if serializer is None:
        return None

    def serialize(response: Any) -> bytes:
        return response if isinstance(response, bytes) else serializer(response)

    return serialize


async def write_responses(responses: AsyncGenerator[Any, None], context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Send a streaming handler's responses with ``context.write``; a client that vanished mid-write
    ends the call as cancelled.

    When the connection goes away while a response is being sent, gRPC core fails the write
    (``ExecuteBatchError``, a ``grpc.aio.InternalError``). If the handler yields its responses to
    grpc.aio, that failure surfaces inside grpc.aio, which logs it at ERROR with a traceback unless
    it has already seen the client's close, a race that megabyte responses lose often. Writing here
    instead, the failure is the stream's own: the handler's generator is closed (its cleanup runs
    and counts the stream CANCELLED, as on any disconnect) and the call ends with CancelledError,
    which grpc.aio logs at DEBUG only.
    """
    try:
        async for response in responses:
            await context.write(response)
    except grpc.aio.InternalError:  # the transport is gone: the client disconnected
        raise asyncio.CancelledError from None
    finally:  # now, not when the generator is collected: the stream's cleanup and metrics run at once
        await responses.aclose()


def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    deserializer = _tolerant(handler.request_deserializer, method)
    serializer = passing_bytes(handler.response_serializer)
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, MalformedMessage):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.describe())
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, request_deserializer=deserializer,
                                                   response_serializer=serializer)
    if handler.stream_stream is not None:
        streaming = handler.stream_stream

        async def stream_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await write_responses(streaming(_checked(requests), context), context)

        return grpc.stream_stream_rpc_method_handler(stream_stream, request_deserializer=deserializer,
                                                     response_serializer=serializer)
    return handler  # the guarded services have no other shapes; leave anything new to gRPC's default


class MalformedMessageInterceptor(grpc.aio.ServerInterceptor):
    """Give the guarded methods a tolerant deserializer (see the module docstring)."""

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
            handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        """Wrap the handler of a guarded method; pass anything else through."""
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(SERVICE_PREFIX):
            return handler
        return _wrap(handler, method)
