"""A bundle as a Triton Inference Server model repository (``pvae-export --triton DIR``).

    DIR/
      .pvae-triton              marker: this repository was written by pvae-export (safe to replace)
      pvae_rates/config.pbtxt   pvae_rates/1/model.onnx      dynamic batching over patches
      pvae_decoder/...          dynamic batching over latent rows
      pvae_frame/...            dynamic batching over frames (Triton batches same-size frames only)
      pvae_sampler/...          no batching: the seed is per request (rates (N, K), seed -> counts)

Every model uses the ``onnxruntime`` backend. The batch axis of a batched model is Triton's implicit
first dimension, so ``dims`` list the remaining axes (-1 for dynamic ones).

    >>> write_triton_repository(Path("runs/quick/best.bundle"), Path("triton-repo"))
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from pvae.bundle import GraphSpec, TensorSpec, load_bundle
from pvae.errors import BundleError

__all__ = ["MARKER", "TRITON_MODELS", "check_triton_target", "triton_config", "write_triton_repository"]

#: File that marks a directory as a pvae Triton repository (and so replaceable by a new export).
MARKER = ".pvae-triton"
#: Bundle graph -> (Triton model name, max_batch_size; 0 disables batching).
TRITON_MODELS: dict[str, tuple[str, int]] = {
    "rates": ("pvae_rates", 4800),  # 4 VGA frames of 16x16 patches
    "decoder": ("pvae_decoder", 4800),
    "frame": ("pvae_frame", 8),
    "sampler": ("pvae_sampler", 0),
}
#: How long the dynamic batcher may hold a request to fill a batch (microseconds).
MAX_QUEUE_DELAY_US = 500
#: numpy dtype name -> Triton data type.
_TRITON_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "uint8": "TYPE_UINT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
}


def _dims(spec: TensorSpec, batched: bool) -> list[int]:
    shape = spec.shape[1:] if batched else spec.shape
    return [d if isinstance(d, int) else -1 for d in shape]


def _tensor_block(spec: TensorSpec, batched: bool) -> str:
    dims = _dims(spec, batched)
    lines = [f'    name: "{spec.name}"', f"    data_type: {_TRITON_TYPES[spec.dtype]}"]
    if dims:
        lines.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
    else:  # a scalar (the seed): Triton wants at least one dim, reshaped away for the model
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    return "  {\n" + "\n".join(lines) + "\n  }"


def triton_config(model_name: str, spec: GraphSpec, max_batch_size: int) -> str:
    """config.pbtxt text for one ONNX model."""
    batched = max_batch_size > 0
    parts = [
        f'name: "{model_name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size}",
        "input [\n" + ",\n".join(_tensor_block(t, batched) for t in spec.inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(t, batched) for t in spec.outputs) + "\n]",
    ]
    if batched:
        parts.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}\n}}")
    parts.append("instance_group [ { count: 1, kind: KIND_AUTO } ]")
    return "\n".join(parts) + "\n"


def check_triton_target(repo: Path) -> None:
    """Refuse to replace anything but an absent/empty directory or an earlier pvae repository."""
    if not repo.exists():
        return
    if repo.is_dir() and (not any(repo.iterdir()) or (repo / MARKER).is_file()):
        return
    raise BundleError(f"refusing to overwrite {repo}: not an empty directory or a pvae Triton repository")


def write_triton_repository(bundle_dir: Path, repo: Path) -> Path:
    """Write (atomically: staging directory + rename) a Triton repository for a bundle."""
    check_triton_target(repo)
    bundle = load_bundle(bundle_dir)
    try:
        repo.parent.mkdir(parents=True, exist_ok=True)
        staging = repo.parent / f".{repo.name}.partial-{secrets.token_hex(4)}"
        staging.mkdir()
    except OSError as exc:
        raise BundleError(f"cannot write the Triton repository to {repo}: {exc.strerror or exc}") from None
    try:
        (staging / MARKER).write_text(f"written by pvae-export from {bundle.root}\n")
        for graph, (model_name, max_batch) in TRITON_MODELS.items():
            version_dir = staging / model_name / "1"
            version_dir.mkdir(parents=True)
            shutil.copyfile(bundle.graph_path(graph), version_dir / "model.onnx")
            (staging / model_name / "config.pbtxt").write_text(
                triton_config(model_name, bundle.graphs[graph], max_batch)
            )
        if repo.exists():
            shutil.rmtree(repo)
        os.replace(staging, repo)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return repo
