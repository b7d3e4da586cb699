"""Device placement: one ``device`` string decides where training and evaluation run."""

from __future__ import annotations

import torch

from pvae.errors import DeviceError


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda[:N]`` fails clearly when absent."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} requested but no CUDA GPU is available "
                              "(this torch build or machine has none); use --device cpu or auto")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r}: only {torch.cuda.device_count()} GPU(s) present")
        return dev
    raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
