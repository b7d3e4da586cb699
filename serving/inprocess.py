"""An in-process server on its own event-loop thread, for tests, benchmarks and client libraries.

The grpc.aio server runs in a background thread, so synchronous code (pytest without an asyncio
plugin, a notebook, a client test) can talk to it with a plain ``grpc.insecure_channel``.

    >>> with InProcessServer(ServeConfig(port=0, metrics_port=None), bundle=bundle) as server:
    ...     channel = grpc.insecure_channel(server.address)
    ...     stub = pvae_pb2_grpc.EncoderStub(channel)
    ...     server.registry.get_sample_value("pvae_ready")
    1.0
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from pvae.bundle import Bundle
from pvae.serving.config import ServeConfig
from pvae.serving.engine import Engine
from pvae.serving.server import RunningServer, start_server

__all__ = ["InProcessServer"]

T = TypeVar("T")
#: Seconds to wait for the server thread to start or stop before giving up.
START_TIMEOUT_S = 120.0


class InProcessServer:
    """``start_server`` on a background event loop; a context manager that drains on exit."""

    def __init__(self, config: ServeConfig, bundle: Bundle | None = None, registry: CollectorRegistry | None = None,
                 warm_up: bool = True, engine: Engine | None = None, grace: float = 5.0,
                 auth_tokens: Sequence[str] | None = None) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.grace = grace
        self._bundle = bundle
        self._engine = engine
        self._warm_up = warm_up
        self._auth_tokens = auth_tokens
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pvae-inprocess-server", daemon=True)
        self.running: RunningServer | None = None

    def start(self) -> InProcessServer:
        """Start the loop thread and the server (blocks until the server listens)."""
        self._thread.start()
        self.running = self.call(start_server(self.config, self.registry, self._bundle, warm_up=self._warm_up,
                                              engine=self._engine, auth_tokens=self._auth_tokens))
        return self

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = START_TIMEOUT_S) -> T:
        """Run ``coroutine`` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    @property
    def port(self) -> int:
        """The bound gRPC port."""
        assert self.running is not None, "server not started"
        return self.running.port

    @property
    def address(self) -> str:
        """``host:port`` to dial."""
        return f"127.0.0.1:{self.port}"

    def warm_up(self) -> None:
        """Warm up and report SERVING (when started with ``warm_up=False``)."""
        assert self.running is not None
        self.call(self.running.warm_up())

    def stop(self, grace: float | None = None) -> None:
        """Drain and stop the server, then the loop thread."""
        if self.running is not None:
            self.call(self.running.stop(self.grace if grace is None else grace))
            self.running = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(START_TIMEOUT_S)
        if not self._loop.is_closed() and not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> InProcessServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
