"""Shared fixtures: a tiny trained checkpoint and its bundle (once per session), and a test server of
that bundle (once per module that asks for one; helpers.py has what else the modules share).

A module configures its ``server`` with ``SERVER_CONFIG``: a dict of ServeConfig fields laid over
``helpers.TEST_SERVER``, or a whole ServeConfig.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from helpers import BundleGraphs, serve_config

from pvae.bundle import Bundle

if TYPE_CHECKING:
    from pvae.serving.engine import Engine
    from pvae.serving.inprocess import InProcessServer


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep preprocessed-data caches out of the user's home during tests (shared across the session)."""
    os.environ.setdefault("PVAE_CACHE_DIR", str(tmp_path_factory.mktemp("pvae-cache")))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory of the `tiny` preset (lin|lin, K=64, 3 epochs on 2000 natural patches)."""
    from pvae.training.train import main

    out = tmp_path_factory.mktemp("tiny-run")
    assert main(["--preset", "tiny", "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small models and matmuls in long loops on a shared CPU: one torch and BLAS thread avoids
    spin-waiting (restored afterwards). Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):  # numpy/scipy BLAS as well
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_run: Path) -> Path:
    return tiny_run / "best.pt"


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint: Path) -> Bundle:
    """The tiny model exported once per session through the server's own ``--model CHECKPOINT`` path
    (verified ONNX export, cached under $PVAE_CACHE_DIR), shared by the serving and client tests."""
    from pvae.serving.source import resolve_bundle

    return resolve_bundle(tiny_checkpoint)


@pytest.fixture(scope="module")
def engine(tiny_bundle: Bundle) -> Engine:
    """ONNX Runtime sessions of the tiny bundle on the CPU, shared by the module's servers."""
    from pvae.serving.engine import DevicePlan, Engine

    return Engine(tiny_bundle, DevicePlan("cpu"))


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, engine: Engine) -> Iterator[InProcessServer]:
    """An in-process pvae-serve of the tiny bundle on a loopback port 0, configured by the module's
    SERVER_CONFIG (see the module docstring), without bearer tokens."""
    from pvae.serving.config import ServeConfig
    from pvae.serving.inprocess import InProcessServer

    settings = getattr(request.module, "SERVER_CONFIG", {})
    config = settings if isinstance(settings, ServeConfig) else serve_config(settings)
    with InProcessServer(config, engine=engine, auth_tokens=()) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server: InProcessServer) -> Iterator[grpc.Channel]:
    """A channel to the module's ``server`` (no client-side size limit: the server enforces its own)."""
    with grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", -1)]) as open_channel:
        yield open_channel


@pytest.fixture(scope="module")
def graphs(tiny_bundle: Bundle) -> BundleGraphs:
    """The tiny bundle's graphs run directly with ONNX Runtime: what the service must return."""
    return BundleGraphs(tiny_bundle)
