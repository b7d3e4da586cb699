"""Shared fixtures: a tiny trained checkpoint, made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pvae.bundle import Bundle


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


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_run: Path) -> Path:
    return tiny_run / "best.pt"


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint: Path) -> Bundle:
    """The tiny model exported once per session through the server's own ``--model CHECKPOINT`` path
    (verified ONNX export, cached under $PVAE_CACHE_DIR), shared by the serving and client tests."""
    from pvae.serving.source import resolve_bundle

    return resolve_bundle(tiny_checkpoint)
