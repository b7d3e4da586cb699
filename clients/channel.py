"""Where and how to dial: targets, load balancing, TLS, metadata, and the start-up retry policy.

A client dials one target (``host:port``, ``dns:///name:port`` for every address a name has, e.g.
a Kubernetes headless Service, ``ipv4:a:p,b:p``, ``unix:path``) or several ``host:port`` targets,
which are resolved once and dialled as one channel. Streams are spread over the addresses with
gRPC's ``round_robin`` policy, so each new stream goes to the next replica.

``UNAVAILABLE`` at start-up (server not listening yet, or warming up) is retried with capped
exponential backoff and jitter until ``RetryPolicy.timeout_s`` has passed; then the client raises
``ServerUnavailable`` naming the address.

    >>> channel = ChannelConfig.create(["10.0.0.5:50051", "10.0.0.6:50051"])
    >>> channel.grpc_target()
    'ipv4:10.0.0.5:50051,10.0.0.6:50051'
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import grpc
from grpc_health.v1 import health_pb2

from pvae.errors import ConfigError
from pvae.v1 import pvae_pb2 as pb

from .errors import ServerUnavailable, error_from_rpc

__all__ = [
    "DEFAULT_TARGET",
    "LOAD_BALANCING",
    "TOKEN_ENV",
    "ChannelConfig",
    "LoadBalancing",
    "Metadata",
    "Retry",
    "RetryPolicy",
    "read_token",
    "tls_credentials",
    "with_token",
]

#: Environment variable a client reads its bearer token from when none is given.
TOKEN_ENV = "PVAE_TOKEN"
#: Metadata key carrying the bearer token (RFC 6750 section 2.1; gRPC keys are lower case).
AUTHORIZATION_KEY = "authorization"

#: Where ``pvae-serve`` listens by default (pvae.serving.config.ServeConfig host and port).
DEFAULT_TARGET = "127.0.0.1:50051"
#: The client accepts responses up to this size; the server enforces its own (smaller) limit
#: (ServerLimits.max_send_message_bytes, 64 MiB by default).
MAX_RECEIVE_MESSAGE_BYTES = 256 << 20
#: Reconnect quickly while a server starts: gRPC's default first backoff is 1 s (doubling to 120 s),
#: which would make start-up retries wait for the transport instead of the server.
RECONNECT_BACKOFF_MS = {"initial": 100, "min": 100, "max": 2000}

LoadBalancing = Literal["round_robin", "pick_first"]
#: gRPC load-balancing policies a client may ask for.
LOAD_BALANCING: tuple[LoadBalancing, ...] = get_args(LoadBalancing)
Metadata = tuple[tuple[str, str], ...]
#: The health-check entry of the encoder service (pvae-serve reports SERVING only after warm-up).
HEALTH_SERVICE = pb.DESCRIPTOR.services_by_name["Encoder"].full_name
#: Codes worth retrying while a server starts: not listening yet, or an attempt timed out.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
#: Codes meaning "this server has no health service": then readiness is judged by the calls themselves.
NO_HEALTH = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND)
#: Shortest deadline given to one readiness attempt, in seconds.
MIN_ATTEMPT_SECONDS = 0.05
#: Prefixes of targets that gRPC resolves itself (not plain host:port).
SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:")


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry ``UNAVAILABLE`` (server not up or not ready yet)."""

    timeout_s: float = 10.0
    """Give up (ServerUnavailable) after this many seconds; 0 tries once."""
    initial_backoff_s: float = 0.05
    """First pause between attempts."""
    max_backoff_s: float = 1.0
    """Longest pause between attempts."""
    multiplier: float = 2.0
    """Each pause is this many times the previous one (capped at max_backoff_s)."""
    jitter: float = 0.2
    """Pauses are scaled by a random factor in [1 - jitter, 1 + jitter] so clients do not retry in step."""

    def __post_init__(self) -> None:
        if self.timeout_s < 0:
            raise ConfigError(f"retry timeout_s: must be >= 0 seconds, got {self.timeout_s}")
        if not 0 < self.initial_backoff_s <= self.max_backoff_s:
            raise ConfigError(f"retry backoff: need 0 < initial_backoff_s <= max_backoff_s, got "
                              f"{self.initial_backoff_s} and {self.max_backoff_s}")
        if self.multiplier < 1:
            raise ConfigError(f"retry multiplier: must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter < 1:
            raise ConfigError(f"retry jitter: must be in [0, 1), got {self.jitter}")

    def backoffs(self, rng: random.Random | None = None) -> Iterator[float]:
        """The pauses between attempts, in seconds (endless; the caller stops at ``timeout_s``)."""
        rng = rng or random.Random()
        delay = self.initial_backoff_s
        while True:
            yield delay * rng.uniform(1 - self.jitter, 1 + self.jitter)
            delay = min(delay * self.multiplier, self.max_backoff_s)


class Retry:
    """One call (or the wait for readiness) retried under a RetryPolicy, without any I/O: the
    synchronous and the asyncio client run this same bookkeeping and differ only in how they pause.

        >>> retry = Retry(policy, address)
        >>> while True:
        ...     try:
        ...         return call()
        ...     except grpc.RpcError as exc:
        ...         time.sleep(retry.after_failure(exc))     # or: await asyncio.sleep(...)
    """

    def __init__(self, policy: RetryPolicy, address: str, limit_s: float | None = None) -> None:
        self.address = address
        self.limit_s = policy.timeout_s if limit_s is None else limit_s
        """Give up after this many seconds (the policy's timeout_s unless given)."""
        self.started = time.monotonic()
        self._backoffs = policy.backoffs()

    def remaining(self) -> float:
        """Seconds left before giving up."""
        return self.limit_s - (time.monotonic() - self.started)

    def attempt_timeout(self) -> float:
        """The deadline of the next readiness attempt: what is left, but at least MIN_ATTEMPT_SECONDS."""
        return max(self.remaining(), MIN_ATTEMPT_SECONDS)

    def pause(self, reason: str) -> float:
        """Seconds to wait before the next attempt after one that failed for ``reason``;
        ServerUnavailable, naming the reason and the time spent, once the time is up."""
        remaining = self.remaining()
        if remaining <= 0:
            elapsed = time.monotonic() - self.started
            raise ServerUnavailable(self.address, f"{reason} (gave up after {elapsed:.1f} s)") from None
        return min(next(self._backoffs), remaining)

    def after_failure(self, exc: grpc.RpcError) -> float:
        """A failed call: the pause before trying UNAVAILABLE again; any other status is raised as the
        client's error (RemoteError)."""
        error = error_from_rpc(self.address, exc)
        if not isinstance(error, ServerUnavailable):
            raise error from None
        return self.pause(error.reason)

    def after_health_check(self, outcome: health_pb2.HealthCheckResponse | grpc.RpcError) -> float | None:
        """A health check's response or error: None when the server is ready (SERVING, or it has no
        health service, so the calls themselves will tell), else the pause before checking again.
        A status that retrying cannot fix is raised as the client's error."""
        if isinstance(outcome, grpc.RpcError):
            code = outcome.code() if isinstance(outcome, grpc.Call | grpc.aio.AioRpcError) else grpc.StatusCode.UNKNOWN
            if code in NO_HEALTH:
                return None
            if code not in RETRYABLE:
                raise error_from_rpc(self.address, outcome) from None
            details = outcome.details() if isinstance(outcome, grpc.Call | grpc.aio.AioRpcError) else None
            return self.pause(details or code.name)
        if outcome.status == health_pb2.HealthCheckResponse.SERVING:
            return None
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(outcome.status)
        return self.pause(f"health check says {status} (warming up or draining)")


def _split_host_port(target: str) -> tuple[str, str]:
    if target.startswith("["):  # [v6]:port
        host, _, port = target[1:].partition("]:")
    else:
        host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"target {target!r}: expected host:port (or a gRPC URI such as dns:///name:port)")
    return host, port


def _resolve(targets: Sequence[str]) -> str:
    """Several host:port targets -> one ``ipv4:``/``ipv6:`` address list (resolved now)."""
    v4: list[str] = []
    v6: list[str] = []
    for target in targets:
        host, port = _split_host_port(target)
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ServerUnavailable(target, f"cannot resolve {host!r}: {exc.strerror}") from None
        for family, *_, sockaddr in infos:
            ip = str(sockaddr[0])
            if family == socket.AF_INET and f"{ip}:{port}" not in v4:
                v4.append(f"{ip}:{port}")
            elif family == socket.AF_INET6 and f"[{ip}]:{port}" not in v6:
                v6.append(f"[{ip}]:{port}")
    # gRPC's static resolvers take one address family per target: prefer IPv4 when both appear.
    return "ipv4:" + ",".join(v4) if v4 else "ipv6:" + ",".join(v6)


def _is_ip_port(target: str) -> bool:
    try:
        host, _ = _split_host_port(target)
        ipaddress.ip_address(host)
    except (ConfigError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class ChannelConfig:
    """Everything needed to open a channel (plain data; ``open()`` and ``open_aio()`` dial)."""

    targets: tuple[str, ...]
    """One target (any gRPC target string) or several host:port targets."""
    credentials: grpc.ChannelCredentials | None = None
    """TLS credentials (``grpc.ssl_channel_credentials(...)``); None: plaintext."""
    metadata: Metadata = ()
    """(key, value) pairs sent with every call (e.g. an authorization token)."""
    load_balancing: LoadBalancing = "round_robin"
    """How calls are spread over a target's addresses."""
    options: tuple[tuple[str, Any], ...] = field(default=())
    """Extra gRPC channel arguments (they override the defaults)."""

    def __post_init__(self) -> None:
        if not self.targets or any(not t for t in self.targets):
            raise ConfigError("targets: give at least one non-empty target (host:port or dns:///name:port)")
        if len(self.targets) > 1:
            for target in self.targets:
                if target.startswith(SCHEMES):
                    raise ConfigError(f"targets: several targets must be plain host:port, got {target!r}")
                _split_host_port(target)
        if self.load_balancing not in LOAD_BALANCING:
            raise ConfigError(f"load_balancing: must be one of {', '.join(LOAD_BALANCING)}, "
                              f"got {self.load_balancing!r}")
        for pair in self.metadata:
            if len(pair) != 2 or pair[0] != pair[0].lower():
                raise ConfigError(f"metadata: keys must be lower-case (key, value) pairs, got {pair!r}")

    @classmethod
    def create(cls, target: str | Sequence[str], credentials: grpc.ChannelCredentials | None = None,
               metadata: Sequence[tuple[str, str]] = (), load_balancing: LoadBalancing = "round_robin",
               options: Sequence[tuple[str, Any]] = ()) -> ChannelConfig:
        """Build from one target, a comma-separated list, or a sequence of either (gRPC URIs such as
        ``dns:///name:port`` or ``ipv4:a:p,b:p`` are kept whole)."""
        entries = [target] if isinstance(target, str) else list(target)
        targets = tuple(part.strip() for entry in entries
                        for part in ([entry] if entry.startswith(SCHEMES) else entry.split(",")) if part.strip())
        return cls(targets, credentials, tuple((str(k), str(v)) for k, v in metadata), load_balancing,
                   tuple(options))

    @property
    def address(self) -> str:
        """The target(s) as the user gave them (used in error messages)."""
        return ",".join(self.targets)

    def grpc_target(self) -> str:
        """The single target string handed to gRPC."""
        if len(self.targets) == 1:
            return self.targets[0]
        if all(_is_ip_port(t) and ":" not in _split_host_port(t)[0] for t in self.targets):
            return "ipv4:" + ",".join(self.targets)
        return _resolve(self.targets)

    def channel_options(self) -> list[tuple[str, Any]]:
        """gRPC channel arguments: message limits, quick reconnects, the load-balancing policy."""
        defaults: dict[str, Any] = {
            "grpc.max_receive_message_length": MAX_RECEIVE_MESSAGE_BYTES,
            "grpc.max_send_message_length": -1,  # the server enforces its own limit and says so
            "grpc.initial_reconnect_backoff_ms": RECONNECT_BACKOFF_MS["initial"],
            "grpc.min_reconnect_backoff_ms": RECONNECT_BACKOFF_MS["min"],
            "grpc.max_reconnect_backoff_ms": RECONNECT_BACKOFF_MS["max"],
            "grpc.service_config": json.dumps({"loadBalancingConfig": [{self.load_balancing: {}}]}),
        }
        defaults.update(dict(self.options))
        return list(defaults.items())

    def open(self) -> grpc.Channel:
        """A synchronous channel."""
        target, options = self.grpc_target(), self.channel_options()
        if self.credentials is not None:
            return grpc.secure_channel(target, self.credentials, options=options)
        return grpc.insecure_channel(target, options=options)

    def open_aio(self) -> grpc.aio.Channel:
        """An asyncio channel (call from inside a running event loop)."""
        target, options = self.grpc_target(), self.channel_options()
        if self.credentials is not None:
            return grpc.aio.secure_channel(target, self.credentials, options=options)
        return grpc.aio.insecure_channel(target, options=options)


def tls_credentials(ca_cert: str | None = None, client_cert: str | None = None,
                    client_key: str | None = None) -> grpc.ChannelCredentials:
    """TLS credentials from PEM files (None: the system's root certificates; cert + key: mutual TLS)."""
    def read(path: str | None, what: str) -> bytes | None:
        if path is None:
            return None
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise ConfigError(f"{what} {path}: {exc.strerror}") from None

    if (client_cert is None) != (client_key is None):
        raise ConfigError("TLS: give both a client certificate and its key, or neither")
    return grpc.ssl_channel_credentials(read(ca_cert, "CA certificate"), read(client_key, "client key"),
                                        read(client_cert, "client certificate"))


def read_token(token: str | None = None, token_file: str | None = None,
               env: dict[str, str] | None = None) -> str | None:
    """The bearer token: ``token``, else the first line of ``token_file``, else ``$PVAE_TOKEN``, else None."""
    if token is not None and token_file is not None:
        raise ConfigError("token: give a token or a token file, not both")
    if token is None and token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as fh:
                lines = [line.strip() for line in fh if line.strip() and not line.lstrip().startswith("#")]
        except OSError as exc:
            raise ConfigError(f"token file {token_file}: {exc.strerror}") from None
        if not lines:
            raise ConfigError(f"token file {token_file}: holds no token")
        token = lines[0]
    if token is None:
        token = (os.environ if env is None else env).get(TOKEN_ENV) or None
    if token is not None and (not token.strip() or any(c in token for c in "\r\n")):
        raise ConfigError("token: must be one non-empty line")
    return token.strip() if token is not None else None


def with_token(metadata: Sequence[tuple[str, str]], token: str | None) -> tuple[tuple[str, str], ...]:
    """``metadata`` plus ``authorization: Bearer <token>`` (replacing any earlier authorization entry)."""
    pairs = tuple((str(k), str(v)) for k, v in metadata)
    if token is None:
        return pairs
    return (*(p for p in pairs if p[0] != AUTHORIZATION_KEY), (AUTHORIZATION_KEY, f"Bearer {token}"))
