"""``pvae-export --triton``: the Triton model repository, checked with Triton's own ``model_config.proto``.

Every ``config.pbtxt`` (and ``configs/gpu.pbtxt``) is parsed as text format into
``pvae.inference.model_config_pb2.ModelConfig`` and compared with the ONNX graph read here with
``onnx`` (names, Triton data types, dims; the batch axis dropped when batching). The expected values
come from this file's own tables, not from ``pvae.export.triton``. No Triton server or onnxruntime
backend runs here, so Triton loading the repository is not tested.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from google.protobuf import text_format

from pvae.bundle import Bundle, sha256_file
from pvae.errors import BundleError
from pvae.export.triton import (
    DERIVED_MODELS,
    MARKER,
    MAX_QUEUE_DELAY_US,
    TRITON_MODELS,
    GraphTensor,
    read_graph_io,
    triton_config,
    write_triton_repository,
)
from pvae.inference import model_config_pb2

#: The repository layout: model -> (bundle graph, max_batch_size).
EXPECTED_MODELS = {
    "pvae_rates": ("rates", 4800),
    "pvae_decoder": ("decoder", 4800),
    "pvae_frame": ("frame", 8),
    "pvae_sampler": ("sampler", 0),
}
#: Models made from a bundle graph: model -> (source graph, max_batch_size).
EXPECTED_DERIVED = {"pvae_preprocess": ("frame", 8)}
ALL_MODELS = {**EXPECTED_MODELS, **EXPECTED_DERIVED}
#: ONNX elem_type -> Triton data type name (Triton's model-configuration datatype table).
ONNX_TO_TRITON: dict[int, str] = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
}
#: Config file -> the instance group kind it must use.
VARIANTS = {"config.pbtxt": "KIND_CPU", "configs/gpu.pbtxt": "KIND_GPU"}
Kind = model_config_pb2.ModelInstanceGroup.Kind


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def onnx_io(path: Path) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    graph = onnx.load(str(path)).graph
    initializers = {i.name for i in graph.initializer}
    return [v for v in graph.input if v.name not in initializers], list(graph.output)


def onnx_dims(value: onnx.ValueInfoProto) -> list[int]:
    """Graph dims with -1 for every dynamic axis."""
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def repo(tiny_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_triton_repository(tiny_bundle.root, tmp_path_factory.mktemp("triton") / "repo")


@pytest.fixture
def bundle_copy(tiny_bundle: Bundle, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle to damage."""
    return Path(shutil.copytree(tiny_bundle.root, tmp_path / "copy.bundle"))


def reseal(bundle: Path, name: str) -> None:
    """Update the manifest checksum of ``name`` so that only the content disagrees, not the sha256."""
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][name] = sha256_file(bundle / name)
    manifest_path.write_text(json.dumps(manifest))


# ----------------------------------------------------------------------------- layout and contents


def test_layout(repo: Path) -> None:
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())
    expected = [MARKER] + [f"{m}/{rel}" for m in ALL_MODELS for rel in ("1/model.onnx", *VARIANTS)]
    assert files == sorted(expected)
    assert {name: (graph, batch) for graph, (name, batch) in TRITON_MODELS.items()} == EXPECTED_MODELS
    assert DERIVED_MODELS == EXPECTED_DERIVED
    assert leftovers(repo.parent) == []


@pytest.mark.parametrize("model", EXPECTED_MODELS)
def test_graph_bytes_are_the_bundle_graph(repo: Path, tiny_bundle: Bundle, model: str) -> None:
    graph = EXPECTED_MODELS[model][0]
    copied = hashlib.sha256((repo / model / "1" / "model.onnx").read_bytes()).hexdigest()
    assert copied == sha256_file(tiny_bundle.graph_path(graph))
    assert copied == tiny_bundle.manifest["files"][tiny_bundle.graphs[graph].file]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("model", ALL_MODELS)
def test_config_matches_graph(repo: Path, model: str, variant: str) -> None:
    text = (repo / model / variant).read_text()
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert text == text_format.MessageToString(config)  # written by protobuf's printer, nothing hand-made
    assert config.name == model and config.backend == "onnxruntime" and not config.platform
    max_batch = ALL_MODELS[model][1]
    assert config.max_batch_size == max_batch
    batched = max_batch > 0

    inputs, outputs = onnx_io(repo / model / "1" / "model.onnx")
    for declared, values in ((config.input, inputs), (config.output, outputs)):
        assert [t.name for t in declared] == [v.name for v in values]
        for tensor, value in zip(declared, values, strict=True):
            where = f"{model}/{variant} {tensor.name}"
            expected_type = ONNX_TO_TRITON[value.type.tensor_type.elem_type]
            assert model_config_pb2.DataType.Name(tensor.data_type) == expected_type, where
            dims = onnx_dims(value)
            if batched:
                assert dims and dims[0] == -1, f"{where}: batching needs a dynamic first axis"
                dims = dims[1:]
            if dims:
                assert list(tensor.dims) == dims, where
                assert not tensor.HasField("reshape"), where
            else:  # a scalar: [1] for Triton, reshaped to [] for the model
                assert list(tensor.dims) == [1] and tensor.HasField("reshape"), where
                assert list(tensor.reshape.shape) == [], where


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("model", ALL_MODELS)
def test_batching(repo: Path, model: str, variant: str) -> None:
    config = parse(repo / model / variant)
    if ALL_MODELS[model][1] > 0:
        assert config.HasField("dynamic_batching")
        assert config.dynamic_batching.max_queue_delay_microseconds == MAX_QUEUE_DELAY_US > 0
        assert not config.HasField("sequence_batching")
    else:
        assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")


def test_preprocess_model_gives_the_patches_the_rate_path_takes(repo: Path, tiny_bundle: Bundle) -> None:
    """pvae_preprocess (cut out of frame.onnx) turns frames into the model-space patches of the frame
    graph: its preprocessed frame, reflect-padded and tiled row-major; pvae_rates on them gives the
    frame graph's rates (equal: the same rate path on the same numbers)."""
    import onnxruntime as ort

    def session(path: Path) -> Any:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    pre = session(repo / "pvae_preprocess" / "1" / "model.onnx")
    frame = session(tiny_bundle.graph_path("frame"))
    rates = session(repo / "pvae_rates" / "1" / "model.onnx")
    p = tiny_bundle.patch_size
    frames = np.random.default_rng(3).integers(0, 256, (2, 37, 50), dtype=np.uint8)
    (patches,) = pre.run(None, {"frames": frames})
    graph = dict(zip([o.name for o in frame.get_outputs()], frame.run(None, {"frames": frames}), strict=True))
    rows, cols = -(-37 // p), -(-50 // p)
    assert patches.shape == (2, rows * cols, p * p) and patches.dtype == np.float32
    padded = np.pad(graph["preprocessed"], ((0, 0), (0, rows * p - 37), (0, cols * p - 50)), mode="reflect")
    np.testing.assert_array_equal(patches, padded.reshape(2, rows, p, cols, p).transpose(0, 1, 3, 2, 4)
                                  .reshape(2, rows * cols, p * p))
    for b in range(2):
        np.testing.assert_allclose(rates.run(["rates"], {"patches": patches[b]})[0], graph["rates"][b], rtol=1e-6)


@pytest.mark.parametrize("model", ALL_MODELS)
def test_configs_say_what_each_tensor_expects(repo: Path, model: str) -> None:
    config = parse(repo / model / "config.pbtxt")
    texts = {key: value.string_value for key, value in config.parameters.items()}
    assert texts.get("description")
    assert {f"input.{t.name}" for t in config.input} | {f"output.{t.name}" for t in config.output} <= set(texts)
    if model == "pvae_rates":
        assert "pvae_preprocess" in texts["input.patches"] and "not pixels" in texts["input.patches"]


def test_sampler_is_per_request(repo: Path) -> None:
    config = parse(repo / "pvae_sampler" / "config.pbtxt")
    seed = next(t for t in config.input if t.name == "seed")
    assert model_config_pb2.DataType.Name(seed.data_type) == "TYPE_INT64"
    assert list(seed.dims) == [1] and seed.HasField("reshape") and list(seed.reshape.shape) == []
    assert "reshape {\n  }" in (repo / "pvae_sampler" / "config.pbtxt").read_text()


@pytest.mark.parametrize("model", ALL_MODELS)
def test_instance_groups(repo: Path, model: str) -> None:
    configs = {variant: parse(repo / model / variant) for variant in VARIANTS}
    for variant, kind in VARIANTS.items():
        groups = configs[variant].instance_group
        assert [Kind.Name(g.kind) for g in groups] == [kind], variant
        assert groups[0].count >= 1 and not groups[0].gpus  # every visible GPU / the host's CPU
    cpu, gpu = configs["config.pbtxt"], configs["configs/gpu.pbtxt"]
    del cpu.instance_group[:], gpu.instance_group[:]
    assert cpu == gpu  # the GPU variant differs in its instance group only


# ----------------------------------------------------------------------------- refusals and bad bundles


def test_refuses_foreign_directory(tiny_bundle: Bundle, tmp_path: Path) -> None:
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not a model")
    with pytest.raises(BundleError, match="refusing to overwrite"):
        write_triton_repository(tiny_bundle.root, foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["holiday.jpg"]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    with pytest.raises(BundleError, match="refusing to overwrite"):
        write_triton_repository(tiny_bundle.root, a_file)
    assert a_file.read_text() == "keep me" and leftovers(tmp_path) == []


def test_replaces_an_earlier_repository(tiny_bundle: Bundle, tmp_path: Path) -> None:
    target = tmp_path / "repo"
    write_triton_repository(tiny_bundle.root, target)
    (target / "pvae_rates" / "stale.txt").write_text("from an older export")
    write_triton_repository(tiny_bundle.root, target)
    assert not (target / "pvae_rates" / "stale.txt").exists()
    assert parse(target / "pvae_rates" / "config.pbtxt").name == "pvae_rates"
    assert leftovers(tmp_path) == []


def test_corrupted_graph(bundle_copy: Path, tmp_path: Path) -> None:
    data = bytearray((bundle_copy / "rates.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle_copy / "rates.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"checksum mismatch for rates\.onnx"):
        write_triton_repository(bundle_copy, tmp_path / "repo")
    assert not (tmp_path / "repo").exists() and leftovers(tmp_path) == []


def test_unreadable_graph_with_a_matching_checksum(bundle_copy: Path, tmp_path: Path) -> None:
    (bundle_copy / "decoder.onnx").write_bytes(b"\xff" * 64)  # not a ModelProto
    reseal(bundle_copy, "decoder.onnx")
    with pytest.raises(BundleError, match=r"decoder\.onnx"):
        write_triton_repository(bundle_copy, tmp_path / "repo")
    assert not (tmp_path / "repo").exists() and leftovers(tmp_path) == []


def test_swapped_graph_disagrees_with_manifest(bundle_copy: Path, tmp_path: Path) -> None:
    """decoder.onnx replaced by the rates graph (checksum updated): its I/O no longer matches the manifest."""
    shutil.copyfile(bundle_copy / "rates.onnx", bundle_copy / "decoder.onnx")
    reseal(bundle_copy, "decoder.onnx")
    with pytest.raises(BundleError, match=r"decoder\.onnx: the graph's inputs .*disagree with the bundle manifest"):
        write_triton_repository(bundle_copy, tmp_path / "repo")
    assert not (tmp_path / "repo").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("edit", "side"),
    [
        (lambda spec: spec["inputs"][0].update(name="pixels"), "inputs"),
        (lambda spec: spec["inputs"][0].update(dtype="float64"), "inputs"),
        (lambda spec: spec["outputs"][0].update(shape=["N", 7]), "outputs"),
        (lambda spec: spec["outputs"][0].update(shape=["M", spec["outputs"][0]["shape"][1]]), "outputs"),
        (lambda spec: spec["outputs"].pop(), "outputs"),
    ],
    ids=["name", "dtype", "size", "axis-name", "missing-output"],
)
def test_manifest_disagrees_with_graph(
    bundle_copy: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], object], side: str
) -> None:
    manifest_path = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    edit(manifest["graphs"]["rates"])
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=rf"rates\.onnx: the graph's {side} .*disagree with the bundle manifest"):
        write_triton_repository(bundle_copy, tmp_path / "repo")
    assert not (tmp_path / "repo").exists() and leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- batch axis rules


def test_batching_needs_a_dynamic_first_axis() -> None:
    fixed = (GraphTensor("patches", onnx.TensorProto.FLOAT, (4, 256)),)
    out = (GraphTensor("rates", onnx.TensorProto.FLOAT, ("N", 8)),)
    with pytest.raises(BundleError, match="first axis of patches is not dynamic"):
        triton_config("m", fixed, out, max_batch_size=8)
    scalar = (GraphTensor("seed", onnx.TensorProto.INT64, ()),)
    with pytest.raises(BundleError, match="first axis of seed is not dynamic"):
        triton_config("m", scalar, out, max_batch_size=8)
    unrelated = (GraphTensor("patches", onnx.TensorProto.FLOAT, ("B", 256)),)
    with pytest.raises(BundleError, match="different names"):
        triton_config("m", unrelated, out, max_batch_size=8)
    # without batching the same tensors are fine, fixed axes stay in dims
    config = triton_config("m", fixed, out, max_batch_size=0)
    assert list(config.input[0].dims) == [4, 256] and list(config.output[0].dims) == [-1, 8]
    assert not config.HasField("dynamic_batching")


def test_unnamed_dynamic_axes_batch() -> None:
    inputs = (GraphTensor("x", onnx.TensorProto.UINT8, (None, None, 3)),)
    outputs = (GraphTensor("y", onnx.TensorProto.FLOAT16, ("N",)),)
    config = triton_config("m", inputs, outputs, max_batch_size=2)
    assert list(config.input[0].dims) == [-1, 3] and config.input[0].data_type == model_config_pb2.TYPE_UINT8
    assert list(config.output[0].dims) == [1] and config.output[0].HasField("reshape")  # (N,) -> [1], reshape []
    assert config.output[0].data_type == model_config_pb2.TYPE_FP16


def test_unsupported_type_is_refused() -> None:
    bf16 = (GraphTensor("x", onnx.TensorProto.BFLOAT16, ("N", 4)),)
    with pytest.raises(BundleError, match="BFLOAT16"):
        triton_config("m", bf16, bf16, max_batch_size=0)


def test_initializers_listed_as_inputs_are_not_inputs(tmp_path: Path) -> None:
    """Old-IR graphs list their weights in graph.input too; Triton must not see them as model inputs."""
    weight = onnx.numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), "weight")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "weight"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4]),
         onnx.helper.make_tensor_value_info("weight", onnx.TensorProto.FLOAT, [4, 2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 2])],
        initializer=[weight],
    )
    path = tmp_path / "m.onnx"
    onnx.save(onnx.helper.make_model(graph, ir_version=3, opset_imports=[onnx.helper.make_opsetid("", 9)]), path)
    inputs, outputs = read_graph_io(path)
    assert inputs == (GraphTensor("x", onnx.TensorProto.FLOAT, ("N", 4)),)
    assert outputs == (GraphTensor("y", onnx.TensorProto.FLOAT, ("N", 2)),)
