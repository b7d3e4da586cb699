"""torch modules -> TorchScript (``torch.jit``), with torch 2.13's deprecation warnings handled.

torch 2.13 deprecates TorchScript: every ``torch.jit.script``/``trace``/``save``/``load`` call warns
``DeprecationWarning: `torch.jit.<fn>` is deprecated. Please switch to ...``. The bundle still ships
TorchScript for hosts with libtorch but no ONNX Runtime, so every jit
call here runs inside :func:`torchscript_deprecation_silenced`, which ignores exactly that message
and category (nothing else) and counts what it swallowed so the CLI can say so in its summary.

Conv encoders and decoders unpack tuples in ``forward`` (not scriptable), so the encoder and decoder
are traced first (their only dynamic axis is the batch, which tracing keeps symbolic because
``view(-1, ...)`` and ``shape[0]`` are recorded as ops) and the wrappers, which compute pads and
grids from the frame size, are scripted around them.

The TorchScript sampler draws ``torch.poisson`` (exact) from a ``torch.Generator`` seeded per call:
the same seed gives the same counts on the same device, but the stream is torch's, not the ONNX
sampler's counter-based one, so TorchScript counts differ from ONNX counts draw by draw (both are
exact Poisson; verification checks each statistically).

    >>> scripted = script_paths(model, preprocessing)
    >>> save_scripted(scripted["rates"], bundle_dir / "rates.ts")
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from pvae.export.modules import build_paths
from pvae.training.data import PatchConfig
from pvae.training.model import VAE

__all__ = [
    "TORCHSCRIPT_WARNING",
    "TorchScriptSampler",
    "WarningCount",
    "load_scripted",
    "save_scripted",
    "script_paths",
    "torchscript_deprecation_silenced",
]

#: The exact deprecation message torch 2.13 emits for each torch.jit entry point.
TORCHSCRIPT_WARNING = r"`torch\.jit\.[\w.]+` is deprecated\. Please switch to"
#: Batch used to trace conv encoders/decoders (not 1, which a trace could specialise on).
_TRACE_BATCH = 3


class WarningCount:
    """How many TorchScript deprecation warnings were silenced (reported by the CLI)."""

    def __init__(self) -> None:
        self.count = 0


#: Process-wide tally, for the export summary.
SILENCED = WarningCount()


@contextmanager
def torchscript_deprecation_silenced(tally: WarningCount = SILENCED) -> Iterator[None]:
    """Ignore (and count) torch 2.13's "`torch.jit.X` is deprecated" DeprecationWarnings only."""
    pattern = re.compile(TORCHSCRIPT_WARNING)
    with warnings.catch_warnings(record=True) as caught:
        # "always" + record: count them; every other warning is re-emitted below, untouched.
        warnings.simplefilter("always")
        yield
    for item in caught:
        if issubclass(item.category, DeprecationWarning) and pattern.search(str(item.message)):
            tally.count += 1
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno, source=item.source)


class TorchScriptSampler(nn.Module):
    """rates float32 (N, K), seed int64 [] -> counts int32 (N, K), exact Poisson from torch.poisson.

    >>> counts = TorchScriptSampler()(rates, torch.tensor(7))
    """

    def forward(self, rates: Tensor, seed: Tensor) -> Tensor:
        generator = torch.Generator(device=rates.device)
        generator.manual_seed(int(seed.item()))
        # Same sanitising rule as the ONNX sampler: NaN and non-positive rates give 0.
        clean = torch.where(rates > 0, rates, torch.zeros_like(rates))
        return torch.poisson(clean, generator=generator).to(torch.int32)


def _traced(module: nn.Module, example: Tensor) -> nn.Module:
    """Linear layers script as they are; anything else is traced on a batch of ``_TRACE_BATCH``."""
    if isinstance(module, nn.Linear):
        return module
    return torch.jit.trace(module, example)


def script_paths(model: VAE, preprocessing: PatchConfig | None) -> dict[str, torch.jit.ScriptModule]:
    """TorchScript versions of the rate path, decoder, frame path and sampler."""
    cfg = model.cfg
    # A private copy without gradients: the modules are for inference (outputs need no .detach()),
    # and the caller's model keeps its requires_grad flags.
    model = copy.deepcopy(model).eval().requires_grad_(False)
    with torchscript_deprecation_silenced(), torch.no_grad():
        encoder = _traced(model.encoder, torch.zeros(_TRACE_BATCH, cfg.input_dim))
        decoder = _traced(model.decoder, torch.zeros(_TRACE_BATCH, cfg.n_latents))
        paths = build_paths(model, preprocessing, encoder=encoder, decoder=decoder)
        return {
            "rates": torch.jit.script(paths.rates),
            "decoder": torch.jit.script(paths.decoder),
            "frame": torch.jit.script(paths.frame),
            "sampler": torch.jit.script(TorchScriptSampler()),
        }


def save_scripted(module: torch.jit.ScriptModule, path: str | Path) -> Path:
    """Write one TorchScript module (``torch.jit.save``)."""
    path = Path(path)
    with torchscript_deprecation_silenced():
        torch.jit.save(module, str(path))
    return path


def load_scripted(path: str | Path) -> torch.jit.ScriptModule:
    """Read one TorchScript module onto the CPU (``torch.jit.load``)."""
    with torchscript_deprecation_silenced():
        return torch.jit.load(str(path), map_location="cpu")
