"""pvae.v1 calls that serialize each message once and know every response's size without re-serializing.

The generated stub serializes a request when it sends it, and a client that also wants the byte
count (the stream statistics, the benchmarks) would serialize it a second time with ``ByteSize()``;
the same for every response it receives. These multi-callables take requests that are already
serialized (``StreamBook.request_bytes``) and hand back each response with the length of the bytes
it was parsed from.

    >>> call = stream_encode(channel)(requests_as_bytes)
    >>> for sized in call:
    ...     sized.message.sequence, sized.nbytes
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pvae.v1 import pvae_pb2 as pb

__all__ = ["SERVICE", "Sized", "encode", "sized", "stream_encode"]

#: The service's full name, as method paths use it.
SERVICE = pb.DESCRIPTOR.services_by_name["Encoder"].full_name

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class Sized(Generic[M]):
    """A response and the number of bytes it arrived in."""

    message: M
    nbytes: int


def sized(cls: Any) -> Callable[[bytes], Sized[Any]]:
    """A response deserializer for message class ``cls`` that keeps the serialized length."""

    def parse(data: bytes) -> Sized[Any]:
        return Sized(cls.FromString(data), len(data))

    return parse


def stream_encode(channel: Any) -> Any:
    """``StreamEncode`` on ``channel`` (sync or asyncio): serialized requests in, Sized responses out."""
    return channel.stream_stream(f"/{SERVICE}/StreamEncode", request_serializer=None,
                                 response_deserializer=sized(pb.StreamEncodeResponse))


def encode(channel: Any) -> Any:
    """``Encode`` on ``channel`` (sync or asyncio): a request message in, a Sized response out."""
    return channel.unary_unary(f"/{SERVICE}/Encode", request_serializer=pb.EncodeRequest.SerializeToString,
                               response_deserializer=sized(pb.EncodeResponse))
