"""export/graph_passes.py: each rewrite fires on its pattern, computes the same values bit for bit, and
leaves graphs it must not touch unchanged."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pvae.export.graph_passes import fuse_display_quantize, merge_slices, optimise


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def _display_graph(scale: float = 32.0, offset: float = 128.0, extra_use: bool = False) -> onnx.ModelProto:
    """x -> Mul(scale) -> Round -> Add(offset) -> Clip(CastLike 0, CastLike 255) -> Cast(uint8), the way
    the dynamo exporter writes ``to_display_u8``; ``extra_use`` also outputs the rounded values."""
    nodes = [
        _const("s", np.array(scale, np.float32)),
        _const("c", np.array(offset, np.float32)),
        _const("lo", np.array(0.0, np.float32)),
        _const("hi", np.array(255.0, np.float32)),
        helper.make_node("Mul", ["x", "s"], ["scaled"]),
        helper.make_node("Round", ["scaled"], ["rounded"]),
        helper.make_node("Add", ["rounded", "c"], ["shifted"]),
        helper.make_node("CastLike", ["lo", "shifted"], ["lo_like"]),
        helper.make_node("CastLike", ["hi", "shifted"], ["hi_like"]),
        helper.make_node("Clip", ["shifted", "lo_like", "hi_like"], ["clipped"]),
        helper.make_node("Cast", ["clipped"], ["y"], to=TensorProto.UINT8),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.UINT8, ["n"])]
    if extra_use:
        outputs.append(helper.make_tensor_value_info("rounded", TensorProto.FLOAT, ["n"]))
    graph = helper.make_graph(nodes, "display", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])], outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, **inputs: np.ndarray) -> list[np.ndarray]:
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def _ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def _display_inputs() -> np.ndarray:
    rng = np.random.default_rng(0)
    ties = (np.arange(-300, 300) + 0.5) / 32  # x * 32 lands exactly on .5: round half to even decides
    near = np.nextafter(ties, np.inf).astype(np.float32)
    wide = rng.normal(0, 3, 20000)  # saturates at both ends (|x| > 4)
    return np.concatenate([ties, near, wide, [0.0, -0.0, 1e-30, 100.0, -100.0]]).astype(np.float32)


def test_display_chain_becomes_one_quantize_with_the_same_bytes() -> None:
    model = _display_graph()
    x = _display_inputs()
    (before,) = _run(model, x=x)
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    assert fuse_display_quantize(fused.graph) == 1
    assert _ops(fused) == ["QuantizeLinear"]  # the chain, its constants and the CastLikes are all gone
    (after,) = _run(fused, x=x)
    assert after.dtype == np.uint8 and np.array_equal(after, before)
    assert before.min() == 0 and before.max() == 255  # both saturation ends were exercised


@pytest.mark.parametrize("scale", [30.0, 0.0, -32.0])
def test_display_chain_with_a_scale_that_is_not_a_power_of_two_is_left(scale: float) -> None:
    model = _display_graph(scale=scale)
    assert fuse_display_quantize(model.graph) == 0
    assert "Round" in _ops(model)


def test_display_chain_with_a_non_integer_offset_is_left() -> None:
    model = _display_graph(offset=127.5)
    assert fuse_display_quantize(model.graph) == 0


def test_display_chain_whose_intermediate_is_used_elsewhere_is_left() -> None:
    model = _display_graph(extra_use=True)
    assert fuse_display_quantize(model.graph) == 0
    assert _ops(model).count("Round") == 1


def _crop_graph(inner_axis: int, outer_axis: int) -> onnx.ModelProto:
    """y = x[..., :h, :w] as two Slices with ends computed from another input's shape (dynamic)."""
    nodes = [
        helper.make_node("Shape", ["like"], ["like_shape"]),
        _const("zero", np.array([0], np.int64)),
        _const("one", np.array([1], np.int64)),
        _const("axis_a", np.array([inner_axis], np.int64)),
        _const("axis_b", np.array([outer_axis], np.int64)),
        _const("i2", np.array([2], np.int64)),
        _const("i3", np.array([3], np.int64)),
        helper.make_node("Gather", ["like_shape", "i2"], ["h"], axis=0),
        helper.make_node("Gather", ["like_shape", "i3"], ["w"], axis=0),
        helper.make_node("Slice", ["x", "zero", "h", "axis_a", "one"], ["rows"]),
        helper.make_node("Slice", ["rows", "zero", "w", "axis_b", "one"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "crop",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "H", "W"]),
            helper.make_tensor_value_info("like", TensorProto.FLOAT, [1, 1, "h", "w"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, "h", "w"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_crop_on_two_axes_becomes_one_slice() -> None:
    model = _crop_graph(2, 3)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 1, 12, 20)).astype(np.float32)
    like = np.zeros((1, 1, 9, 17), np.float32)
    (before,) = _run(model, x=x, like=like)
    assert merge_slices(model.graph) == 1
    assert _ops(model).count("Slice") == 1
    (after,) = _run(model, x=x, like=like)
    assert after.shape == (1, 1, 9, 17) and np.array_equal(after, before)


def test_two_slices_of_one_axis_are_left() -> None:
    model = _crop_graph(3, 3)  # composing two slices of one axis is not concatenating them
    assert merge_slices(model.graph) == 0
    assert _ops(model).count("Slice") == 2


def test_optimise_reports_each_pass() -> None:
    model = _display_graph()
    assert optimise(model.graph) == {"fuse_display_quantize": 1, "merge_slices": 0}
