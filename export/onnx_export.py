"""torch modules -> ONNX graphs, with dynamic axes, in one exporter run.

The dynamo exporter (``torch.onnx.export(dynamo=True)``, torch 2.13's default) rebuilds its
operator registry and runs its decompositions on every call, a fixed cost of several seconds on a
small CPU. So the three deterministic paths (and the optional fp16 rate path) are exported together
as one :class:`CombinedPaths` module with one input per path, and each graph is then cut out of the
combined model with ``onnx.utils.Extractor`` and its tensors renamed to the bundle's names. That
keeps ``pvae-export`` in the range of seconds (one export instead of three).

    >>> graphs = export_graphs(paths, opset=18)          # {"rates": ModelProto, "decoder": ..., "frame": ...}
    >>> save_graph(graphs["rates"], bundle_dir / "rates.onnx")
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx.utils
import torch
from torch import Tensor, nn

from pvae.errors import ConfigError
from pvae.export.graph_passes import optimise
from pvae.export.modules import DecoderPath, ExportPaths, FramePath, RatePath

__all__ = [
    "DEFAULT_OPSET",
    "MAX_OPSET",
    "MIN_OPSET",
    "GraphIO",
    "check_opset",
    "export_graphs",
    "save_graph",
]

#: Opset written by default. 18 is the lowest the dynamo exporter implements natively (it would
#: version-convert anything older, which may fail) and has every op the graphs and sampler use.
DEFAULT_OPSET = 18
#: Oldest opset accepted: see DEFAULT_OPSET. The sampler may raise it (sampler.MIN_OPSET).
MIN_OPSET = 18
#: Newest opset accepted: the newest the installed onnx package defines.
MAX_OPSET = int(onnx.defs.onnx_opset_version())

#: Example sizes used for tracing. Any values work (axes are dynamic); they must not be 1, which
#: torch.export would specialise, and frames are deliberately not multiples of 16 so that the pad
#: branch is traced with a symbolic (not a zero) pad.
_TRACE_BATCH = 3
_TRACE_FRAME = (2, 37, 45)
#: Upper bound of a frame side in the dynamic shape spec (torch.export wants a finite range).
MAX_FRAME_SIDE = 16384
#: The dynamo exporter's chatty loggers: a "torchvision is not installed" line per op at WARNING.
_EXPORTER_LOGGERS = ("torch.onnx._internal.exporter._registration", "torch.onnx._internal.exporter._compat")


@dataclass(frozen=True)
class GraphIO:
    """Names of one bundle graph's inputs and outputs, in order."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


#: The bundle graphs' I/O names (the contract with serving; see pvae/bundle.py).
GRAPH_IO: dict[str, GraphIO] = {
    "rates": GraphIO(("patches",), ("log_rates", "rates")),
    "decoder": GraphIO(("latents",), ("patches",)),
    "frame": GraphIO(
        ("frames",), ("preprocessed", "log_rates", "rates", "reconstruction", "preprocessed_u8", "reconstruction_u8")
    ),
    "rates_fp16": GraphIO(("patches",), ("log_rates", "rates")),
}


def check_opset(opset: int, min_opset: int = MIN_OPSET) -> int:
    """Validate a requested opset; ConfigError names the accepted range."""
    if not isinstance(opset, int) or isinstance(opset, bool):
        raise ConfigError(f"opset: expected an integer, got {opset!r}")
    if opset < min_opset:
        raise ConfigError(f"opset: {opset} is too old; the bundle's graphs need opset >= {min_opset}")
    if opset > MAX_OPSET:
        raise ConfigError(f"opset: {opset} is newer than the installed onnx supports (<= {MAX_OPSET})")
    return opset


class Fp16RatePath(nn.Module):
    """The rate path with float16 I/O and weights; the clamps and exp run in float32.

    Why: float16 halves the bytes of patches and rates (what a GPU host moves), while the soft
    clamps near 5.3 and 10 and the exp would lose most of their precision in float16.
    """

    def __init__(self, rate_path: RatePath) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(rate_path.encoder).half()
        self.rate_path = rate_path

    def forward(self, patches: Tensor) -> tuple[Tensor, Tensor]:
        x = patches.reshape(patches.shape[0], self.rate_path.input_dim)
        neg_u = -self.encoder(x).float()  # (N, K) float32 from here on
        log_rates, rates = self.rate_path.rates_from_neg_encoding(neg_u)
        return log_rates.half(), rates.half()


class CombinedPaths(nn.Module):
    """Every path side by side, one input each, so that one exporter run covers them all."""

    def __init__(self, rates: RatePath, decoder: DecoderPath, frame: FramePath, fp16: Fp16RatePath | None) -> None:
        super().__init__()
        self.rates = rates
        self.decoder = decoder
        self.frame = frame
        self.fp16 = fp16

    def forward(
        self, patches: Tensor, latents: Tensor, frames: Tensor, patches_fp16: Tensor | None = None
    ) -> tuple[Tensor, ...]:
        outputs = (*self.rates(patches), self.decoder(latents), *self.frame(frames))
        if self.fp16 is not None and patches_fp16 is not None:
            outputs = (*outputs, *self.fp16(patches_fp16))
        return outputs


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the dynamo exporter's known noise, precisely, for the duration of an export.

    - torch 2.13's pytree raises ``FutureWarning: isinstance(treespec, LeafSpec) is deprecated``
      from inside torch.export (not our code; nothing to change on our side).
    - its registry logs "torchvision is not installed. Skipping torchvision::nms" at WARNING.
    Anything else still surfaces (and is an error under pytest).
    """
    loggers = [logging.getLogger(name) for name in _EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
        )
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _combined_names(fp16: bool) -> tuple[list[str], list[str]]:
    """Unique input and output names of the combined model: '<graph>.<name>'."""
    graphs = ["rates", "decoder", "frame"] + (["rates_fp16"] if fp16 else [])
    inputs = [f"{g}.{n}" for g in graphs for n in GRAPH_IO[g].inputs]
    outputs = [f"{g}.{n}" for g in graphs for n in GRAPH_IO[g].outputs]
    return inputs, outputs


def _rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a tensor everywhere in a graph (node I/O, graph I/O, value_info, initializers)."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new


def _name_dims(model: onnx.ModelProto, dims: dict[str, dict[int, str]]) -> None:
    """Give dynamic axes readable names (the exporter writes sympy expressions for derived axes)."""
    for value in (*model.graph.input, *model.graph.output):
        for axis, label in dims.get(value.name, {}).items():
            dim = value.type.tensor_type.shape.dim[axis]
            dim.ClearField("dim_value")
            dim.dim_param = label


#: Readable dynamic axis names per graph tensor (these are also the manifest's shape strings).
DYNAMIC_DIMS: dict[str, dict[str, dict[int, str]]] = {
    "rates": {"patches": {0: "N"}, "log_rates": {0: "N"}, "rates": {0: "N"}},
    "rates_fp16": {"patches": {0: "N"}, "log_rates": {0: "N"}, "rates": {0: "N"}},
    "decoder": {"latents": {0: "N"}, "patches": {0: "N"}},
    "frame": {name: {0: "B", 1: "H", 2: "W"} for name in GRAPH_IO["frame"].outputs}
    | {"frames": {0: "B", 1: "H", 2: "W"}, "log_rates": {0: "B", 1: "R*C"}, "rates": {0: "B", 1: "R*C"}},
}


def export_graphs(paths: ExportPaths, opset: int = DEFAULT_OPSET, fp16: bool = False) -> dict[str, onnx.ModelProto]:
    """Export the rate path, decoder and frame path (and the fp16 rate path) as ONNX models."""
    rates = paths.rates
    combined = CombinedPaths(rates, paths.decoder, paths.frame, Fp16RatePath(rates) if fp16 else None).eval()
    n_latents = int(rates.prior_log_rate.shape[0])
    example: list[Tensor] = [
        torch.zeros(_TRACE_BATCH, rates.input_dim),
        torch.zeros(_TRACE_BATCH, n_latents),
        torch.zeros(_TRACE_FRAME, dtype=torch.uint8),
    ]
    dim = torch.export.Dim
    side = paths.policy.min_side
    shapes: list[dict[int, object]] = [
        {0: dim("n_patches", min=1)},
        {0: dim("n_latent_rows", min=1)},
        {
            0: dim("batch", min=1),
            1: dim("height", min=side, max=MAX_FRAME_SIDE),
            2: dim("width", min=side, max=MAX_FRAME_SIDE),
        },
    ]
    if fp16:
        example.append(torch.zeros(_TRACE_BATCH, rates.input_dim, dtype=torch.float16))
        shapes.append({0: dim("n_patches_fp16", min=1)})
    input_names, output_names = _combined_names(fp16)
    # optimize=False: onnxscript 0.7's rewriter matches pattern constants with math.isclose(abs_tol=1e-8),
    # so its "x + 0 -> x" rule deletes our `+ 1e-8` epsilons (LCN and z-score), and a flat frame then
    # divides 0 by 0. ONNX Runtime applies its own graph optimisations when a session loads anyway.
    with quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            combined,
            tuple(example),
            input_names=input_names,
            output_names=output_names,
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=tuple(shapes),
            verbose=False,
            external_data=False,
            optimize=False,
        )
    assert program is not None  # dynamo=True always returns the program
    full = program.model_proto
    extractor = onnx.utils.Extractor(full)
    graphs: dict[str, onnx.ModelProto] = {}
    for name in ("rates", "decoder", "frame", *(["rates_fp16"] if fp16 else [])):
        io = GRAPH_IO[name]
        part = extractor.extract_model([f"{name}.{n}" for n in io.inputs], [f"{name}.{n}" for n in io.outputs])
        for tensor in (*io.inputs, *io.outputs):
            _rename_value(part.graph, f"{name}.{tensor}", tensor)
        _name_dims(part, DYNAMIC_DIMS[name])
        optimise(part.graph)  # exact rewrites ONNX Runtime does not make (export/graph_passes.py)
        part.graph.name = f"pvae_{name}"
        part.producer_name = "pvae-export"
        part.ir_version = full.ir_version
        del part.opset_import[:]
        part.opset_import.extend(full.opset_import)
        onnx.checker.check_model(part, full_check=True)
        graphs[name] = part
    return graphs


def save_graph(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write one self-contained .onnx file (weights inline: bundles are small)."""
    path = Path(path)
    onnx.save_model(model, str(path), save_as_external_data=False)
    return path
