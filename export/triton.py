"""A bundle as a Triton Inference Server model repository (``pvae-export --triton DIR``).

    DIR/
      .pvae-triton                  marker: this repository was written by pvae-export (safe to replace)
      pvae_rates/
        config.pbtxt                default configuration: instance_group KIND_CPU (loads on any host)
        configs/gpu.pbtxt           the same model on the GPU: instance_group KIND_GPU
        1/model.onnx                the bundle's rates.onnx, byte for byte
      pvae_decoder/...              dynamic batching over latent rows
      pvae_frame/...                dynamic batching over frames (Triton batches same-size frames only)
      pvae_sampler/...              no batching: the seed is per request (rates (N, K), seed -> counts)
      pvae_preprocess/...           frames (B, H, W) -> the patches pvae_rates takes (B, R*C, D): cut out of
                                    frame.onnx (pvae.preprocess_graph), dynamic batching over frames

Every model uses the ``onnxruntime`` backend. Start Triton with ``tritonserver --model-repository=DIR``
for CPU instances, or add ``--model-config-name=gpu`` to make it read ``<model>/configs/gpu.pbtxt``
instead of ``config.pbtxt`` (Triton's "custom model configuration"; a model without that file falls
back to ``config.pbtxt``). The default is CPU because Triton refuses to load a ``KIND_GPU`` group on a
host without a GPU, so one config with groups of both kinds would not load everywhere; ``KIND_AUTO``
would load everywhere but leave the placement implicit. The GPU group names no ``gpus``, so Triton
places one instance on every GPU it sees (restrict with ``CUDA_VISIBLE_DEVICES``). No backend
``parameters`` and no ``optimization`` block are written: the backend's defaults apply. Each config
carries descriptive ``parameters`` instead (``description``, ``input.NAME``, ``output.NAME``: what the
model and each tensor expect or hold), as the server's ModelConfig does.

How each config is made: the model's ``.onnx`` is read with ``onnx`` and its graph inputs and outputs
(initializers excluded) give the names, data types (``elem_type`` -> ``TYPE_*``) and dims
(``dim_value``, or -1 for a ``dim_param``/unknown axis). They are checked against the bundle
manifest's GraphSpec (same names in the same order, same dtypes, same ints and axis names) and any
disagreement is a ``BundleError``. A batched model (``max_batch_size`` > 0) drops the first axis, which
becomes Triton's implicit batch axis; that is allowed only when the first axis of every input and
output is dynamic and, where named, named alike (so the outputs carry the inputs' batch). A tensor
left with no dims (the sampler's scalar seed) is declared ``dims: [1]`` with ``reshape { shape: [] }``.
The sampler's ``max_batch_size`` is 0, which the text format leaves out (the proto3 default); the
backend's auto-complete would turn batching on only if every input and output had a dynamic first
axis, and the scalar seed has none.
Each config is a ``pvae.inference.model_config_pb2.ModelConfig`` (Triton's own ``model_config.proto``)
written with ``text_format.MessageToString`` and parsed back before the repository is moved into
place, so the files are valid ModelConfig text by construction.

Limit: this machine has no Triton server and no Triton onnxruntime backend, so the tests check the
configs with ``model_config.proto`` and against the graphs, but nothing here shows Triton loading
the repository. The backend's own checks at load time (for example, its comparison of the config
with the ONNX model) have not been run.

    >>> write_triton_repository(Path("runs/quick/best.bundle"), Path("triton-repo"))
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf import text_format
from google.protobuf.message import DecodeError

from pvae.bundle import Bundle, GraphSpec, TensorSpec, load_bundle
from pvae.errors import BundleError
from pvae.export.staging import staging_dir, swap_into_place
from pvae.inference import model_config_pb2 as mc
from pvae.preprocess_graph import preprocess_model

__all__ = [
    "CONFIG_FILES",
    "DERIVED_MODELS",
    "DESCRIPTIONS",
    "GPU_CONFIG_NAME",
    "MARKER",
    "MAX_QUEUE_DELAY_US",
    "TRITON_MODELS",
    "GraphTensor",
    "check_against_spec",
    "check_triton_target",
    "derived_model",
    "read_graph_io",
    "triton_config",
    "triton_configs",
    "write_triton_repository",
]

#: File that marks a directory as a pvae Triton repository (and so replaceable by a new export).
MARKER = ".pvae-triton"
#: Bundle graph -> (Triton model name, max_batch_size; 0 disables batching).
TRITON_MODELS: dict[str, tuple[str, int]] = {
    "rates": ("pvae_rates", 4800),  # 4 VGA frames of 16x16 patches
    "decoder": ("pvae_decoder", 4800),
    "frame": ("pvae_frame", 8),
    "sampler": ("pvae_sampler", 0),
}
#: Models made from a bundle graph rather than copied: Triton model name -> (source graph, max_batch_size).
DERIVED_MODELS: dict[str, tuple[str, int]] = {
    "pvae_preprocess": ("frame", 8),  # frames -> model-space patches (pvae.preprocess_graph)
}
_NOT_PIXELS = ("whitened model-space patches (z-scored, not pixels), each flattened row by row; a frame's patches "
               "come from pvae_preprocess")
#: What each model and tensor expects or holds (config ``parameters``; Triton's batch axis is the first).
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "pvae_rates": {
        "description": "model-space patches -> Poisson firing rates and log-rates (the deterministic rate path)",
        "input.patches": f"float32 [N, D]: {_NOT_PIXELS}",
        "output.log_rates": "float32 [N, K]: natural log of the rates",
        "output.rates": "float32 [N, K]: Poisson firing rates per patch and latent",
    },
    "pvae_decoder": {
        "description": "latents (spike counts or rates) -> patches in model space (the mean reconstruction)",
        "input.latents": "float32 [N, K]: spike counts or rates",
        "output.patches": "float32 [N, D]: model-space patches; display as clip(round(32 x) + 128, 0, 255)",
    },
    "pvae_frame": {
        "description": "uint8 gray frames -> per-patch rates and the mean reconstruction (preprocessing inside)",
        "input.frames": "uint8 [B, H, W]: gray frames of one size (BT.601 luma of colour), each side at least the "
                        "manifest's frame_policy.min_side",
        "output.preprocessed": "float32 [B, H, W]: the model-space frame",
        "output.log_rates": "float32 [B, R*C, K]: R = ceil(H / ph) rows, C = ceil(W / pw) columns of patches, "
                            "row-major (patch r*C + c)",
        "output.rates": "float32 [B, R*C, K]: Poisson firing rates, patches row-major",
        "output.reconstruction": "float32 [B, H, W]: the mean reconstruction, model space",
        "output.preprocessed_u8": "uint8 [B, H, W]: clip(round(32 x) + 128, 0, 255) of preprocessed",
        "output.reconstruction_u8": "uint8 [B, H, W]: clip(round(32 x) + 128, 0, 255) of reconstruction",
    },
    "pvae_sampler": {
        "description": "rates and a seed -> exact Poisson spike counts (counter-based, the same on every device)",
        "input.rates": "float32 [N, K]: Poisson means, finite, in [0, 1e6]",
        "input.seed": "int64 [1]: seed 0 .. 2^63 - 1; the same rates and seed give the same counts",
        "output.counts": "int32 [N, K]: spike counts",
    },
    "pvae_preprocess": {
        "description": "uint8 gray frames -> the whitened model-space patches pvae_rates takes (the frame graph's own "
                       "preprocessing: /255, whitening, local contrast normalisation, z-score; reflect-padded at "
                       "the bottom and right to whole patches)",
        "input.frames": "uint8 [B, H, W]: gray frames of one size (BT.601 luma of colour), each side at least the "
                        "manifest's frame_policy.min_side",
        "output.patches": "float32 [B, R*C, D]: R = ceil(H / ph) rows, C = ceil(W / pw) columns of ph x pw "
                          "patches, row-major (patch r*C + c), each flattened row by row: the input of pvae_rates",
    },
}
#: How long the dynamic batcher may hold a request to fill a batch (microseconds).
MAX_QUEUE_DELAY_US = 500
#: ``tritonserver --model-config-name`` value that selects the GPU variant.
GPU_CONFIG_NAME = "gpu"
#: Config file (relative to the model directory) -> instance group kind and count.
CONFIG_FILES: dict[str, tuple[mc.ModelInstanceGroup.Kind.ValueType, int]] = {
    "config.pbtxt": (mc.ModelInstanceGroup.KIND_CPU, 1),  # one ORT session; it threads inside
    f"configs/{GPU_CONFIG_NAME}.pbtxt": (mc.ModelInstanceGroup.KIND_GPU, 1),  # per visible GPU
}
#: ONNX elem_type -> (Triton data type, numpy dtype name used by the bundle manifest). Only the types
#: Triton's model-configuration docs list for ONNX Runtime (no bfloat16, no complex types).
_ONNX_TYPES: dict[int, tuple[mc.DataType.ValueType, str]] = {
    onnx.TensorProto.BOOL: (mc.TYPE_BOOL, "bool"),
    onnx.TensorProto.UINT8: (mc.TYPE_UINT8, "uint8"),
    onnx.TensorProto.UINT16: (mc.TYPE_UINT16, "uint16"),
    onnx.TensorProto.UINT32: (mc.TYPE_UINT32, "uint32"),
    onnx.TensorProto.UINT64: (mc.TYPE_UINT64, "uint64"),
    onnx.TensorProto.INT8: (mc.TYPE_INT8, "int8"),
    onnx.TensorProto.INT16: (mc.TYPE_INT16, "int16"),
    onnx.TensorProto.INT32: (mc.TYPE_INT32, "int32"),
    onnx.TensorProto.INT64: (mc.TYPE_INT64, "int64"),
    onnx.TensorProto.FLOAT16: (mc.TYPE_FP16, "float16"),
    onnx.TensorProto.FLOAT: (mc.TYPE_FP32, "float32"),
    onnx.TensorProto.DOUBLE: (mc.TYPE_FP64, "float64"),
    onnx.TensorProto.STRING: (mc.TYPE_STRING, "object"),
}


@dataclass(frozen=True)
class GraphTensor:
    """One graph input or output as the ONNX file declares it.

    ``shape`` holds an int per fixed axis (``dim_value``), the axis name for a named dynamic axis
    (``dim_param``) and None for an unnamed dynamic one.
    """

    name: str
    elem_type: int
    shape: tuple[int | str | None, ...]

    @property
    def dtype(self) -> str:
        """The numpy dtype name (as in the bundle manifest), or the ONNX type name when Triton has none."""
        known = _ONNX_TYPES.get(self.elem_type)
        return known[1] if known else onnx.TensorProto.DataType.Name(self.elem_type)


def _graph_tensor(path: Path, value: onnx.ValueInfoProto) -> GraphTensor:
    if value.type.WhichOneof("value") != "tensor_type":
        raise BundleError(f"{path}: graph value {value.name!r} is not a tensor; Triton needs tensors")
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        raise BundleError(f"{path}: tensor {value.name!r} has no declared rank; Triton needs one")
    shape: list[int | str | None] = []
    for dim in tensor.shape.dim:
        kind = dim.WhichOneof("value")
        shape.append(dim.dim_value if kind == "dim_value" else dim.dim_param if kind == "dim_param" else None)
    return GraphTensor(value.name, tensor.elem_type, tuple(shape))


def read_graph_io(path: Path, model: onnx.ModelProto | None = None) -> tuple[tuple[GraphTensor, ...],
                                                                              tuple[GraphTensor, ...]]:
    """The inputs (initializers excluded) and outputs of an ONNX file (or of ``model``, made from it),
    as declared in its graph."""
    if model is None:
        model = _load(path)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = tuple(_graph_tensor(path, v) for v in graph.input if v.name not in initializers)
    outputs = tuple(_graph_tensor(path, v) for v in graph.output)
    if not inputs or not outputs:
        raise BundleError(f"{path}: the ONNX graph declares no inputs or no outputs")
    return inputs, outputs


def _load(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError, ValueError) as exc:
        raise BundleError(f"{path}: not a readable ONNX model: {exc}") from None


def _describe(tensors: tuple[GraphTensor, ...] | tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"{t.name} {t.dtype} {list(t.shape)}" for t in tensors) or "none"


def _same_dims(graph_shape: tuple[int | str | None, ...], spec_shape: tuple[int | str, ...]) -> bool:
    if len(graph_shape) != len(spec_shape):
        return False
    for got, want in zip(graph_shape, spec_shape, strict=True):
        if got is None:  # an unnamed dynamic axis matches any axis name, never a fixed size
            if not isinstance(want, str):
                return False
        elif type(got) is not type(want) or got != want:
            return False
    return True


def check_against_spec(path: Path, inputs: tuple[GraphTensor, ...], outputs: tuple[GraphTensor, ...],
                       spec: GraphSpec) -> None:
    """Raise ``BundleError`` unless the graph's I/O equals the manifest's GraphSpec: names (in order),
    dtypes and shapes (equal sizes, equal axis names)."""
    for side, got, want in (("inputs", inputs, spec.inputs), ("outputs", outputs, spec.outputs)):
        same = len(got) == len(want) and all(
            g.name == w.name and g.dtype == w.dtype and _same_dims(g.shape, w.shape)
            for g, w in zip(got, want, strict=False)
        )
        if not same:
            raise BundleError(f"{path}: the graph's {side} ({_describe(got)}) disagree with the bundle "
                              f"manifest ({_describe(want)}); the bundle is inconsistent, re-export it")


def _set_tensor(entry: mc.ModelInput | mc.ModelOutput, model_name: str, tensor: GraphTensor, batched: bool) -> None:
    """Fill one config input/output from a graph tensor (the batch axis dropped when ``batched``)."""
    if tensor.elem_type not in _ONNX_TYPES:
        raise BundleError(f"{model_name}: tensor {tensor.name!r} has ONNX type {tensor.dtype}, which Triton's "
                          "onnxruntime backend does not serve")
    entry.name = tensor.name
    entry.data_type = _ONNX_TYPES[tensor.elem_type][0]
    shape = tensor.shape[1:] if batched else tensor.shape
    if shape:
        entry.dims.extend(d if isinstance(d, int) else -1 for d in shape)
    else:  # Triton wants at least one dim: [1] on the wire, reshaped away for the model
        entry.dims.append(1)
        entry.reshape.SetInParent()  # reshape { shape: [] }


def _check_batch_axis(model_name: str, tensors: tuple[GraphTensor, ...]) -> None:
    fixed = [t.name for t in tensors if not t.shape or isinstance(t.shape[0], int)]
    if fixed:
        raise BundleError(f"{model_name}: cannot batch (max_batch_size > 0): the first axis of {', '.join(fixed)} "
                          "is not dynamic, so it cannot be Triton's implicit batch axis")
    names = {t.shape[0] for t in tensors if isinstance(t.shape[0], str)}
    if len(names) > 1:
        raise BundleError(f"{model_name}: cannot batch: the first axes have different names "
                          f"({', '.join(sorted(str(n) for n in names))}), so they need not be one batch axis")


def triton_config(model_name: str, inputs: tuple[GraphTensor, ...], outputs: tuple[GraphTensor, ...],
                  max_batch_size: int, kind: mc.ModelInstanceGroup.Kind.ValueType = mc.ModelInstanceGroup.KIND_CPU,
                  count: int = 1) -> mc.ModelConfig:
    """The ModelConfig of one ONNX model for Triton's onnxruntime backend."""
    batched = max_batch_size > 0
    if batched:
        _check_batch_axis(model_name, inputs + outputs)
    config = mc.ModelConfig(
        name=model_name,
        backend="onnxruntime",
        max_batch_size=max_batch_size,
        instance_group=[mc.ModelInstanceGroup(kind=kind, count=count)],
    )
    for tensor in inputs:
        _set_tensor(config.input.add(), model_name, tensor, batched)
    for tensor in outputs:
        _set_tensor(config.output.add(), model_name, tensor, batched)
    if batched:
        config.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
    for key, text in DESCRIPTIONS.get(model_name, {}).items():
        config.parameters[key].string_value = text
    return config


def triton_configs(bundle: Bundle, graph: str) -> dict[str, mc.ModelConfig]:
    """Every config file of the model that serves ``graph`` (path relative to the model directory -> config),
    from the ONNX graph itself after checking it against the manifest."""
    model_name, max_batch = TRITON_MODELS[graph]
    path = bundle.graph_path(graph)
    inputs, outputs = read_graph_io(path)
    check_against_spec(path, inputs, outputs, bundle.graphs[graph])
    return {rel: triton_config(model_name, inputs, outputs, max_batch, kind, count)
            for rel, (kind, count) in CONFIG_FILES.items()}


def derived_model(bundle: Bundle, model_name: str) -> tuple[onnx.ModelProto, dict[str, mc.ModelConfig]]:
    """A DERIVED_MODELS model: its ONNX model, made from its (manifest-checked) source graph, and its configs."""
    graph, max_batch = DERIVED_MODELS[model_name]
    path = bundle.graph_path(graph)
    source = _load(path)
    check_against_spec(path, *read_graph_io(path, source), bundle.graphs[graph])
    policy = bundle.manifest.get("frame_policy") or {}
    shape = policy.get("patch_shape") or (bundle.patch_size, bundle.patch_size)
    try:
        model = preprocess_model(source, (int(shape[0]), int(shape[-1])), bundle.graphs[graph].inputs[0].name)
    except (ValueError, onnx.checker.ValidationError) as exc:
        raise BundleError(f"{path}: cannot make {model_name} from it: {exc}") from None
    inputs, outputs = read_graph_io(path, model)
    return model, {rel: triton_config(model_name, inputs, outputs, max_batch, kind, count)
                   for rel, (kind, count) in CONFIG_FILES.items()}


def _config_text(path: Path, config: mc.ModelConfig) -> str:
    """The text format of a config, parsed back to make sure it reads as the same ModelConfig."""
    text = text_format.MessageToString(config)
    parsed = text_format.Parse(text, mc.ModelConfig())
    if parsed != config:  # pragma: no cover - a protobuf round-trip bug, not a user error
        raise BundleError(f"{path}: the written model config does not parse back to itself")
    return text


def check_triton_target(repo: Path) -> None:
    """Refuse to replace anything but an absent/empty directory or an earlier pvae repository."""
    if not repo.exists():
        return
    if repo.is_dir() and (not any(repo.iterdir()) or (repo / MARKER).is_file()):
        return
    raise BundleError(f"refusing to overwrite {repo}: not an empty directory or a pvae Triton repository")


def write_triton_repository(bundle_dir: Path, repo: Path) -> Path:
    """Write a Triton repository for a bundle: built in a staging directory next to ``repo`` and renamed
    into place; an earlier pvae repository there is moved aside first and deleted after. Nothing is
    written when a graph disagrees with the manifest (``BundleError``)."""
    check_triton_target(repo)
    bundle = load_bundle(bundle_dir)
    configs = {graph: triton_configs(bundle, graph) for graph in TRITON_MODELS}  # every check before any write
    derived = {name: derived_model(bundle, name) for name in DERIVED_MODELS}
    try:
        with staging_dir(repo, "Triton repository") as staging:
            (staging / MARKER).write_text(f"written by pvae-export from {bundle.root}\n")
            for graph, (model_name, _) in TRITON_MODELS.items():
                model_dir = staging / model_name
                (model_dir / "1").mkdir(parents=True)
                shutil.copyfile(bundle.graph_path(graph), model_dir / "1" / "model.onnx")
                for rel, config in configs[graph].items():
                    (model_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                    (model_dir / rel).write_text(_config_text(model_dir / rel, config))
            for model_name, (model, model_configs) in derived.items():
                model_dir = staging / model_name
                (model_dir / "1").mkdir(parents=True)
                (model_dir / "1" / "model.onnx").write_bytes(model.SerializeToString())
                for rel, config in model_configs.items():
                    (model_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                    (model_dir / rel).write_text(_config_text(model_dir / rel, config))
            check_triton_target(repo)  # still absent, empty or ours
            swap_into_place(staging, repo, "Triton repository")
    except OSError as exc:
        raise BundleError(f"cannot write the Triton repository to {repo}: {exc.strerror or exc}") from None
    return repo
