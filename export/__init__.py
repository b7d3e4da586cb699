"""pvae.export: checkpoint -> bundle (ONNX graphs, TorchScript, manifest), verified against torch.

The stages, in data-flow order::

    modules.py      torch modules of each path: FramePreprocess, RatePath, DecoderPath, FramePath
    onnx_export.py  those modules -> ONNX (dynamo exporter, one run, dynamic axes)
    sampler_reference.py  the exact Poisson sampler's algorithm in numpy (test oracle) and its constants
    sampler.py      the same sampler as a standard-ops ONNX graph
    torchscript.py  the same modules -> TorchScript (deprecation warnings handled)
    verify.py       torch vs ONNX Runtime vs TorchScript parity; sampler statistics
    exporter.py     export_bundle(): the steps, the manifest, the atomic rename
    triton.py       optional Triton model repository
    staging.py      build a directory next to its target, then swap it in (bundle and Triton repository)
    cli.py          pvae-export (its benchmark, pvae-bench-export, is pvae.bench.export)

    >>> from pvae.export import export_bundle
    >>> export_bundle("runs/quick/best.pt", "runs/quick/best.bundle", progress=print)

The names below are imported lazily: ``import pvae.export.sampler`` (numpy + onnx; its reference is
numpy only) must not pull
in torch, because serving hosts run without it.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DEFAULT_FORMATS", "DEFAULT_OPSET", "FORMATS", "VerificationError", "default_bundle_dir", "export_bundle"]

_LAZY = {
    "DEFAULT_FORMATS": "pvae.export.exporter",
    "FORMATS": "pvae.export.exporter",
    "default_bundle_dir": "pvae.export.exporter",
    "export_bundle": "pvae.export.exporter",
    "DEFAULT_OPSET": "pvae.export.onnx_export",
    "VerificationError": "pvae.export.verify",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pvae.export' has no attribute {name!r}")
