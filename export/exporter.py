"""Checkpoint -> verified bundle directory: the steps of ``pvae-export`` behind one function.

    >>> export_bundle("runs/quick/best.pt", "runs/quick/best.bundle")     # -> Path of the bundle
    >>> load_bundle("runs/quick/best.bundle").graph_path("frame")

Steps (each reported through ``progress``): load the checkpoint, export the ONNX graphs, build
the sampler, script the TorchScript modules, verify, write the manifest, re-read the bundle with
the serving loader, and move it into place.

Atomicity: everything is written into a hidden ``.<name>.partial-*`` directory next to the target
and renamed onto the target only after verification and the loader's own checks passed, so a
failure at any step (or Ctrl-C) never leaves a complete-looking bundle; the manifest, which the
loader needs, is the last file written. An existing target is replaced only when it is a pvae
bundle or an empty directory; anything else there is refused.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnx
from onnx import helper

from pvae import __version__
from pvae.bundle import FORMAT, FORMAT_VERSION, MANIFEST, GraphSpec, TensorSpec, load_bundle, sha256_file
from pvae.errors import BundleError, CheckpointError, ConfigError
from pvae.export import sampler as sampler_module
from pvae.export.modules import DISPLAY_OFFSET, DISPLAY_SCALE, build_paths
from pvae.export.onnx_export import DEFAULT_OPSET, MIN_OPSET, check_opset, export_graphs, save_graph
from pvae.export.staging import staging_dir, swap_into_place
from pvae.export.torchscript import SILENCED, save_scripted, script_paths
from pvae.export.triton import check_triton_target, write_triton_repository
from pvae.export.verify import verify_bundle
from pvae.training.checkpoint import build_model, load_checkpoint
from pvae.training.data import PIPELINE_VERSION, PatchConfig

__all__ = [
    "DEFAULT_FORMATS",
    "FORMATS",
    "ProgressCallback",
    "default_bundle_dir",
    "export_bundle",
    "parse_formats",
]

#: Output formats: ONNX (required: serving reads it) and TorchScript (optional).
FORMATS = ("onnx", "torchscript")
DEFAULT_FORMATS = FORMATS
#: Suffix of the default bundle directory, next to the checkpoint: runs/x/best.pt -> runs/x/best.bundle.
BUNDLE_SUFFIX = ".bundle"
#: Called with one line per step ("[3/8] TorchScript modules").
ProgressCallback = Callable[[str], None]

#: File names inside a bundle.
GRAPH_FILES = {
    "rates": "rates.onnx",
    "decoder": "decoder.onnx",
    "sampler": "sampler.onnx",
    "frame": "frame.onnx",
    "rates_fp16": "rates_fp16.onnx",
}
TORCHSCRIPT_FILES = {"rates": "rates.ts", "decoder": "decoder.ts", "frame": "frame.ts", "sampler": "sampler.ts"}

#: The sampler's own minimum opset raises ours if it is newer.
_MIN_OPSET = max(MIN_OPSET, int(sampler_module.DEFAULT_OPSET))


def default_bundle_dir(ckpt_path: str | Path) -> Path:
    """``<checkpoint stem>.bundle`` next to the checkpoint."""
    path = Path(ckpt_path)
    return path.with_name(path.stem + BUNDLE_SUFFIX)


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """ "onnx,torchscript" or a sequence -> a validated tuple; ONNX is always required."""
    items = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats)]
    items = [f for f in items if f]
    unknown = [f for f in items if f not in FORMATS]
    if unknown:
        raise ConfigError(f"formats: unknown {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    if "onnx" not in items:
        raise ConfigError("formats: 'onnx' is required (serving and the manifest's graphs are ONNX)")
    return tuple(f for f in FORMATS if f in items)


# ----------------------------------------------------------------------------- output directory


def _is_replaceable(target: Path) -> bool:
    """A target we may replace: absent, an empty directory, or a pvae bundle. A directory whose
    manifest.json is unreadable counts as a damaged bundle (serving's cache re-exports over those);
    a readable manifest of another format does not."""
    if not target.exists():
        return True
    if not target.is_dir():
        return False
    if not any(target.iterdir()):
        return True
    try:
        manifest = json.loads((target / MANIFEST).read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return True
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def _check_target(target: Path) -> None:
    if not _is_replaceable(target):
        kind = "a file" if target.is_file() else "a directory that is not a pvae bundle"
        raise BundleError(f"refusing to overwrite {target}: it is {kind} (choose another -o)")


# ----------------------------------------------------------------------------- manifest


def _tensor_specs(values: Sequence[onnx.ValueInfoProto]) -> tuple[TensorSpec, ...]:
    specs = []
    for value in values:
        tensor = value.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        shape = tuple(d.dim_param if d.dim_param else int(d.dim_value) for d in tensor.shape.dim)
        specs.append(TensorSpec(value.name, dtype, shape))
    return tuple(specs)


def _graph_spec(path: Path) -> GraphSpec:
    model = onnx.load(str(path), load_external_data=False)
    return GraphSpec(path.name, _tensor_specs(model.graph.input), _tensor_specs(model.graph.output))


def _json_ready(obj: Any) -> Any:
    """Checkpoint data as JSON (tuples -> lists, numpy/torch scalars -> numbers)."""
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


# ----------------------------------------------------------------------------- export


class _Steps:
    """Numbered progress lines and per-step wall times."""

    def __init__(self, total: int, progress: ProgressCallback | None) -> None:
        self.total, self.index, self.progress = total, 0, progress
        self.timings: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def start(self, name: str) -> None:
        self.finish()
        self.index += 1
        if self.progress is not None:
            self.progress(f"[{self.index}/{self.total}] {name}")
        self._current = (name, time.perf_counter())

    def finish(self) -> None:
        if self._current is not None:
            name, started = self._current
            self.timings[name] = round(time.perf_counter() - started, 4)
            self._current = None


def _load_preprocessing(ckpt_data: dict[str, Any], path: Path) -> PatchConfig | None:
    raw = ckpt_data.get("preprocessing")
    if raw is None:
        return None
    try:
        return PatchConfig.from_dict(raw)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad preprocessing parameters: {exc}") from None


def export_bundle(
    ckpt_path: str | Path,
    out_dir: str | Path | None = None,
    formats: str | Sequence[str] = DEFAULT_FORMATS,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    progress: ProgressCallback | None = None,
    fp16: bool = False,
    triton_dir: str | Path | None = None,
) -> Path:
    """Export a checkpoint to a verified bundle directory and return its path.

    Args:
        ckpt_path: a pvae checkpoint (``CheckpointError`` when missing, corrupt or foreign).
        out_dir: the bundle directory; default ``<checkpoint stem>.bundle`` next to the checkpoint.
            An existing pvae bundle (or empty directory) there is replaced; anything else is refused.
        formats: "onnx" (required) and optionally "torchscript".
        opset: ai.onnx opset of the graphs (>= 18).
        verify: run the parity and sampler checks (the export fails if a gate is exceeded).
        progress: called with one line per step.
        fp16: also write ``rates_fp16.onnx`` (float16 I/O and weights, float32 clamps).
        triton_dir: also write a Triton Inference Server model repository there.
    """
    started = time.perf_counter()
    ckpt_path = Path(ckpt_path)
    fmt = parse_formats(formats)
    opset = check_opset(opset, _MIN_OPSET)
    target = Path(out_dir) if out_dir is not None else default_bundle_dir(ckpt_path)
    total = 6 + ("torchscript" in fmt) + verify + (triton_dir is not None)
    steps = _Steps(total, progress)
    silenced_before = SILENCED.count

    steps.start(f"load checkpoint {ckpt_path}")
    ckpt = load_checkpoint(ckpt_path)
    model = build_model(ckpt)
    preprocessing = _load_preprocessing(ckpt.data, ckpt_path)
    height, width = ckpt.model_config.input_shape
    if height != width:
        raise CheckpointError(f"{ckpt_path}: input shape {height}x{width} is not square; bundles hold square patches")
    paths = build_paths(model, preprocessing)  # refuses non-Poisson families / unknown architectures
    _check_target(target)
    if triton_dir is not None:
        check_triton_target(Path(triton_dir))

    with staging_dir(target, "bundle") as staging:
        steps.start("ONNX graphs: rates, decoder, frame" + (", rates_fp16" if fp16 else ""))
        graphs = export_graphs(paths, opset=opset, fp16=fp16)
        for name, graph in graphs.items():
            save_graph(graph, staging / GRAPH_FILES[name])

        steps.start("ONNX sampler (exact Poisson, counter-based RNG)")
        save_graph(sampler_module.build_sampler_model(opset=opset), staging / GRAPH_FILES["sampler"])
        graph_files = {name: GRAPH_FILES[name] for name in (*graphs, "sampler")}

        ts_files: dict[str, str] = {}
        if "torchscript" in fmt:
            steps.start("TorchScript modules: rates, decoder, frame, sampler")
            for name, module in script_paths(model, preprocessing).items():
                save_scripted(module, staging / TORCHSCRIPT_FILES[name])
                ts_files[name] = TORCHSCRIPT_FILES[name]

        verification: dict[str, Any] = {"skipped": True}
        if verify:
            steps.start("verify: torch vs ONNX Runtime" + (" vs TorchScript" if ts_files else "") + ", sampler")
            verification = verify_bundle(staging, model, preprocessing, paths.policy, fmt, graph_files, ts_files)
            verification["skipped"] = False

        steps.start("manifest (sha256 of every file)")
        steps.finish()
        files = sorted(p.name for p in staging.iterdir())
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "source_checkpoint": {
                "path": ckpt_path.name,  # the file name only: no host paths in shipped bundles
                "sha256": sha256_file(ckpt_path),
                "step": ckpt.step,
                "epoch": ckpt.epoch,
            },
            "model_config": _json_ready(ckpt.model_config.__dict__),
            "data": _json_ready(ckpt.data),
            "preprocessing": preprocessing.to_dict() if preprocessing is not None else None,
            "pipeline_version": PIPELINE_VERSION,
            "patch_size": int(height),
            "n_latents": int(ckpt.model_config.n_latents),
            "opset": opset,
            "frame_policy": paths.policy.to_dict(),
            "display": {
                "offset": DISPLAY_OFFSET,
                "scale": DISPLAY_SCALE,
                "formula": "u8 = clip(round(scale * x) + offset, 0, 255), round half to even (ONNX QuantizeLinear)",
            },
            "graphs": {name: _graph_spec(staging / file).to_dict() for name, file in graph_files.items()},
            "torchscript": {name: {"file": file} for name, file in ts_files.items()},
            "sampler": {
                "graph": GRAPH_FILES["sampler"],
                "algorithm": "counter-based squares32 RNG keyed by the seed; inversion below "
                f"{sampler_module.SWITCH_RATE:g}, PTRS (Hoermann 1993) above; exact Poisson",
                "max_rate": sampler_module.MAX_RATE,
                "reference": "pvae.export.sampler.poisson_reference (numpy, bit-identical)",
                "torchscript": "torch.poisson with a torch.Generator seeded per call: exact Poisson and "
                "reproducible per seed, but a different stream from the ONNX sampler",
            },
            "files": {name: sha256_file(staging / name) for name in files},
            "verification": verification,
            "export": {
                "formats": list(fmt),
                "fp16": fp16,
                "timings_s": steps.timings,
                "duration_s": round(time.perf_counter() - started, 3),
                "torchscript_deprecation_warnings_silenced": SILENCED.count - silenced_before,
            },
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

        steps.start("re-read the bundle with the serving loader")
        load_bundle(staging)  # the one loader serving uses: checksums, schema, required graphs
        steps.start(f"move into place: {target}")
        _check_target(target)  # still absent, empty or a bundle
        swap_into_place(staging, target, "bundle")

    if triton_dir is not None:
        steps.start(f"Triton model repository: {triton_dir}")
        write_triton_repository(target, Path(triton_dir))
    steps.finish()
    return target
