"""Transport security and access control: TLS / mutual TLS credentials and bearer-token auth.

``pvae-serve --tls-cert server.pem --tls-key server.key`` serves TLS; adding ``--tls-ca ca.pem``
requires every client to present a certificate signed by that CA (mutual TLS). Bearer tokens come
from ``--auth-token-file`` (one token a line, ``#`` comments) and/or ``$PVAE_AUTH_TOKENS`` (comma or
whitespace separated); when any is set, every call must carry ``authorization: Bearer <token>``,
except the health service (Kubernetes probes and load balancers carry no token). The Prometheus
``/metrics`` port is a separate HTTP server and is not affected.

    >>> tokens = load_tokens("/run/secrets/pvae-tokens", env={"PVAE_AUTH_TOKENS": "a,b"})
    >>> server = grpc.aio.server(interceptors=[BearerTokenInterceptor(tokens)])
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from pvae.bundle import Bundle, check_confined, manifest_file_names
from pvae.errors import ConfigError
from pvae.serving.config import ServeConfig

__all__ = [
    "AUTH_TOKENS_ENV",
    "EXEMPT_PREFIXES",
    "BearerTokenInterceptor",
    "bearer_token",
    "check_bundle_confined",
    "insecure_bind_warning",
    "load_tokens",
    "server_credentials",
]

#: Environment variable holding server tokens (comma or whitespace separated).
AUTH_TOKENS_ENV = "PVAE_AUTH_TOKENS"
#: Metadata key of the credential (RFC 6750 section 2.1; gRPC metadata keys are lower case).
AUTHORIZATION_KEY = "authorization"
#: Scheme prefix of the credential (RFC 6750 section 2.1).
BEARER_PREFIX = "Bearer "
#: Methods reachable without a token: health checks, so probes need no secret.
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
#: Shortest token accepted: 16 characters rules out guessable passwords like "secret".
MIN_TOKEN_CHARS = 16


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror}") from None


def load_tokens(token_file: str | None, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Tokens from ``token_file`` and ``$PVAE_AUTH_TOKENS`` (empty: auth off). ConfigError on a short token."""
    env = os.environ if env is None else env
    tokens: list[str] = []
    if token_file is not None:
        text = _read(token_file, "auth_token_file").decode("utf-8", errors="strict")
        tokens += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not tokens:
            raise ConfigError(f"auth_token_file {token_file}: holds no token")
    tokens += env.get(AUTH_TOKENS_ENV, "").replace(",", " ").split()
    for token in tokens:
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"auth tokens: each token must have at least {MIN_TOKEN_CHARS} characters, "
                              f"got one with {len(token)}")
    return tuple(dict.fromkeys(tokens))


def server_credentials(cert: str, key: str, ca: str | None) -> grpc.ServerCredentials:
    """TLS server credentials from PEM files; with ``ca``, clients must present a certificate it signed."""
    return grpc.ssl_server_credentials([(_read(key, "tls_key"), _read(cert, "tls_cert"))],
                                       root_certificates=_read(ca, "tls_ca") if ca is not None else None,
                                       require_client_auth=ca is not None)


def insecure_bind_warning(config: ServeConfig) -> str | None:
    """A warning when the server listens beyond loopback without TLS (None when it does not)."""
    if config.tls_cert is not None:
        return None
    host = config.host.strip("[]")
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass  # a host name: assume it is reachable from elsewhere
    return (f"listening on {config.host} without TLS: frames and tokens cross the network in clear text; "
            f"pass --tls-cert and --tls-key (and --tls-ca for mutual TLS)")


def check_bundle_confined(bundle: Bundle) -> None:
    """Refuse a bundle whose manifest names a file outside its directory (``../``, absolute paths,
    symlinks out). ``load_bundle`` already refuses such manifests; this re-checks a ``Bundle`` that
    was built another way before ONNX Runtime opens any path it names.

    Serving opens only the JSON manifest and the ONNX graphs (protobuf, no code); TorchScript and
    pickle files a bundle may carry are never loaded here.
    """
    check_confined(Path(bundle.root), manifest_file_names(bundle.manifest))


def bearer_token(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` entry, or None."""
    for key, value in metadata or ():
        if key == AUTHORIZATION_KEY and isinstance(value, str) and value.startswith(BEARER_PREFIX):
            return value[len(BEARER_PREFIX):].strip()
    return None


def _token_ok(given: str | None, tokens: Sequence[str]) -> bool:
    """Constant-time membership: every token is compared, whatever matches first."""
    if given is None:
        return False
    given_bytes = given.encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given_bytes, token.encode())
    return matched


def _deny(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that aborts with UNAUTHENTICATED."""
    async def abort(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort, **kwargs)
    return grpc.unary_unary_rpc_method_handler(abort, **kwargs)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Reject calls without a valid ``authorization: Bearer <token>`` (UNAUTHENTICATED).

    Methods under ``EXEMPT_PREFIXES`` (health) pass without a token.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens:
            raise ConfigError("auth tokens: give at least one token")
        self._tokens = tuple(tokens)
        self.rejected = 0
        """Calls refused so far (for tests and logs)."""

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
            handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        """Pass an exempt or authorised call on; swap anything else for an UNAUTHENTICATED handler."""
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        given = bearer_token(handler_call_details.invocation_metadata)
        if _token_ok(given, self._tokens):
            return handler
        self.rejected += 1
        reason = "missing" if given is None else "invalid"
        return _deny(handler, f"{reason} bearer token: send metadata 'authorization: Bearer <token>'")
