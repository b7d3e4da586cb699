"""The one checkpoint format and its one loader.

A checkpoint is a single ``torch.save`` file holding only tensors and plain data, so it loads with
``torch.load(weights_only=True)``: no pickled code is ever executed. It describes itself:

    format, format_version, package_version, created (UTC ISO time)
    model_config      ModelConfig as a dict: rebuilds the network without the training code
    train_config      TrainConfig as a dict
    data              dataset name, image shape, preprocessing parameters (PatchConfig dict or None)
    model_state       weights
    optimizer_state, scheduler_state, rng_state (optional: stripped from shipped models)
    step, epoch, metrics

    >>> ckpt = load_checkpoint("runs/quick/best.pt")       # raises CheckpointError on bad files
    >>> model = build_model(ckpt)                           # VAE in eval mode
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from pvae import __version__
from pvae.errors import CheckpointError, ConfigError
from pvae.paths import DEFAULT_MODEL_RESOURCE
from pvae.training.config import ModelConfig, TrainConfig, config_from_dict, config_to_dict
from pvae.training.model import VAE

FORMAT = "pvae-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    model_config: ModelConfig
    train_config: TrainConfig
    data: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    step: int = 0
    epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None
    rng_state: torch.Tensor | None = None
    package_version: str = __version__
    created: str = ""
    path: Path | None = None

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": self.package_version,
            "created": self.created or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "model_config": config_to_dict(self.model_config),
            "train_config": config_to_dict(self.train_config),
            "data": self.data,
            "model_state": self.model_state,
            "optimizer_state": self.optimizer_state,
            "scheduler_state": self.scheduler_state,
            "rng_state": self.rng_state,
            "step": self.step,
            "epoch": self.epoch,
            "metrics": self.metrics,
        }


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write atomically (temporary file + rename): a crash never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(ckpt.to_payload(), fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load and validate a checkpoint. Never executes pickled code (``weights_only=True``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint is not a file: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"refused to load {path}: it contains pickled objects other than tensors and plain data "
                "(a foreign or unsafe file); pvae never executes code from checkpoints"
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt): {exc}") from None
    except Exception as exc:  # any failure to parse untrusted bytes means a corrupt file (KeyError, EOFError, ...)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt): {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pvae checkpoint (no '{FORMAT}' format marker)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is not supported "
                              f"(this pvae reads version {FORMAT_VERSION})")
    try:
        model_config = config_from_dict(ModelConfig, payload["model_config"])
        train_config = config_from_dict(TrainConfig, payload["train_config"])
        ckpt = Checkpoint(
            model_config=model_config,
            train_config=train_config,
            data=dict(payload["data"]),
            model_state=dict(payload["model_state"]),
            step=int(payload.get("step", 0)),
            epoch=int(payload.get("epoch", 0)),
            metrics=dict(payload.get("metrics") or {}),
            optimizer_state=payload.get("optimizer_state"),
            scheduler_state=payload.get("scheduler_state"),
            rng_state=payload.get("rng_state"),
            package_version=str(payload.get("package_version", "?")),
            created=str(payload.get("created", "")),
            path=path,
        )
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: malformed pvae checkpoint: {exc}") from None
    return ckpt


def build_model(ckpt: Checkpoint, device: str | torch.device = "cpu") -> VAE:
    """The network described by a checkpoint, with its weights, in eval mode."""
    model = VAE(ckpt.model_config)
    try:
        model.load_state_dict(ckpt.model_state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{ckpt.path}: weights do not match the stored model config: {first}") from None
    return model.to(device).eval()


def slim_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Copy a checkpoint without optimiser, scheduler and RNG state (for shipping a model)."""
    ckpt = load_checkpoint(src)
    ckpt.optimizer_state = ckpt.scheduler_state = ckpt.rng_state = None
    ckpt.metrics.pop("trainer_state", None)
    return save_checkpoint(ckpt, dst)


def default_model_path() -> Path:
    """Path of the checkpoint shipped inside the package (``pvae/models/default.pt``)."""
    path = Path(str(resources.files("pvae") / DEFAULT_MODEL_RESOURCE))
    if not path.is_file():
        raise CheckpointError(f"the bundled default model is missing ({path}); run `make model`")
    return path


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m pvae.training.checkpoint slim SRC DST``: strip training state for shipping."""
    import argparse

    from pvae.cli import run_cli

    def run(args_in: Sequence[str] | None) -> int:
        p = argparse.ArgumentParser(allow_abbrev=False, prog="pvae.training.checkpoint")
        sub = p.add_subparsers(dest="cmd", required=True)
        slim = sub.add_parser("slim", allow_abbrev=False,
                              help="copy a checkpoint without optimiser/scheduler/RNG state")
        slim.add_argument("src", type=Path)
        slim.add_argument("dst", type=Path)
        args = p.parse_args(args_in)
        out = slim_checkpoint(args.src, args.dst)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
        return 0

    return run_cli("pvae.training.checkpoint", run, argv)


if __name__ == "__main__":
    raise SystemExit(_main())
