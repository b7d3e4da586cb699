"""Exact rewrites of exported ONNX graphs that ONNX Runtime does not do itself.

Each pass replaces a chain of ops by one op that computes the same values bit for bit, and leaves a
graph without that chain unchanged. ``pvae-export`` verifies every rewritten graph against torch.

- :func:`fuse_display_quantize`: the uint8 display mapping ``clip(round(x * s) + c, 0, 255)`` (Mul,
  Round, Add, Clip, Cast: five passes over the frame) becomes one ``QuantizeLinear(x, 1 / s, c)``,
  which ONNX Runtime runs as one vectorised pass. Exact when s is a power of two (so x / (1 / s) = x * s
  in float32) and c an integer in [0, 255]; both round half to even and saturate to [0, 255].

- :func:`merge_slices`: a Slice of a Slice on other axes (how the exporter writes ``x[:, :, :h, :w]``)
  becomes one Slice, so the crop copies the data once instead of twice.

    >>> optimise(model.graph)            # {"fuse_display_quantize": 2, "merge_slices": 3}
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["fuse_display_quantize", "merge_slices", "optimise"]


#: Constant's list- and scalar-valued attributes and their element types.
_CONSTANT_LISTS = {"value_int": np.int64, "value_ints": np.int64, "value_float": np.float32, "value_floats": np.float32}


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Values of the graph's initializers and Constant nodes (tensor-valued ones only), and of CastLike
    nodes applied to a float32 constant whose value is an integer (exact in every float type; the
    exporter writes Clip bounds that way)."""
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1:
            attribute = node.attribute[0]
            if attribute.name == "value":
                values[node.output[0]] = numpy_helper.to_array(attribute.t)
            elif attribute.name in _CONSTANT_LISTS:
                dtype = _CONSTANT_LISTS[attribute.name]
                values[node.output[0]] = np.array(helper.get_attribute_value(attribute), dtype)
        elif node.op_type == "Cast" and node.input[0] in values:
            to = helper.get_attribute_value(node.attribute[0])
            values[node.output[0]] = values[node.input[0]].astype(helper.tensor_dtype_to_np_dtype(to))
        elif node.op_type == "Reshape" and node.input[0] in values and node.input[1] in values:
            value, shape = values[node.input[0]], values[node.input[1]]
            if not shape.size or (0 not in shape and (shape == -1).sum() <= 1):  # no copy-a-dim zeros
                values[node.output[0]] = value.reshape([int(d) for d in shape.reshape(-1)])
        elif node.op_type == "CastLike" and node.input[0] in values:
            value = values[node.input[0]]
            if value.dtype == np.float32 and value.size == 1 and float(value.reshape(())).is_integer():
                values[node.output[0]] = value
    return values


def _scalar(values: dict[str, np.ndarray], name: str) -> float | None:
    value = values.get(name)
    if value is None or value.size != 1 or not np.issubdtype(value.dtype, np.floating):
        return None
    return float(value.reshape(()))


def _is_power_of_two(value: float) -> bool:
    if not math.isfinite(value) or value <= 0:
        return False
    mantissa, _ = math.frexp(value)
    return mantissa == 0.5


def fuse_display_quantize(graph: onnx.GraphProto) -> int:
    """Replace each Mul(x, s) -> Round -> Add(c) -> Clip(0, 255) -> Cast(uint8) chain whose intermediate
    values have no other consumer by QuantizeLinear(x, 1 / s, uint8 c); returns the number replaced."""
    values = _constants(graph)
    producer = {out: node for node in graph.node for out in node.output}
    # CastLike's second input only lends its type: the exporter casts the Clip bounds "like" the clipped
    # value. Such a use is not counted here; instead such a CastLike must feed only the chain's Clip
    # (the "lenders" check below), and it is removed with the chain as dead code.
    uses = Counter(
        name for node in graph.node for i, name in enumerate(node.input) if not (node.op_type == "CastLike" and i == 1)
    )
    uses.update(value.name for value in graph.output)
    type_users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type == "CastLike" and len(node.input) == 2:
            type_users.setdefault(node.input[1], []).append(node)
    removed: set[int] = set()
    replacements: dict[int, onnx.NodeProto] = {}
    for cast in graph.node:
        if cast.op_type != "Cast" or helper.get_attribute_value(cast.attribute[0]) != TensorProto.UINT8:
            continue
        clip = producer.get(cast.input[0])
        if clip is None or clip.op_type != "Clip" or len(clip.input) != 3:
            continue
        if _scalar(values, clip.input[1]) != 0.0 or _scalar(values, clip.input[2]) != 255.0:
            continue
        add = producer.get(clip.input[0])
        if add is None or add.op_type != "Add":
            continue
        offsets = [(_scalar(values, b), a) for a, b in (add.input, add.input[::-1])]
        matched = [(offset, other) for offset, other in offsets if offset is not None]
        if not matched:
            continue
        offset, rounded = matched[0]
        if not (offset.is_integer() and 0 <= offset <= 255):
            continue
        round_node = producer.get(rounded)
        if round_node is None or round_node.op_type != "Round":
            continue
        mul = producer.get(round_node.input[0])
        if mul is None or mul.op_type != "Mul":
            continue
        scales = [(_scalar(values, b), a) for a, b in (mul.input, mul.input[::-1])]
        scaled = [(scale, other) for scale, other in scales if scale is not None and _is_power_of_two(scale)]
        if not scaled:
            continue
        scale, source = scaled[0]
        chain = (mul, round_node, add, clip)
        if any(uses[node.output[0]] != 1 for node in chain):
            continue  # an intermediate is used elsewhere: keep the chain
        lenders = [user for node in chain for user in type_users.get(node.output[0], [])]
        if any(uses[user.output[0]] != 1 or user.output[0] not in clip.input[1:] for user in lenders):
            continue  # a CastLike takes its type from the chain for some other consumer
        tag = cast.output[0]
        scale_name, zero_name = f"{tag}_quantize_scale", f"{tag}_quantize_zero_point"
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(1.0 / scale, dtype=np.float32), scale_name),
                numpy_helper.from_array(np.array(int(offset), dtype=np.uint8), zero_name),
            ]
        )
        replacements[id(cast)] = helper.make_node(
            "QuantizeLinear", [source, scale_name, zero_name], [tag], name=f"{cast.name or tag}_quantize"
        )
        removed.update(id(node) for node in chain)
    if not replacements:
        return 0
    _replace_nodes(graph, [replacements.get(id(node), node) for node in graph.node if id(node) not in removed])
    return len(replacements)


def _replace_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    """Make ``nodes`` the graph's nodes, then drop what is dead: nodes none of whose outputs is read
    (ONNX nodes have no side effects), unread initializers, and value_info of tensors no node makes."""
    while True:
        used = {name for node in nodes for name in node.input} | {value.name for value in graph.output}
        live = [node for node in nodes if any(out in used for out in node.output)]
        if len(live) == len(nodes):
            break
        nodes = live
    del graph.node[:]
    graph.node.extend(nodes)
    initializers = [init for init in graph.initializer if init.name in used]
    if len(initializers) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(initializers)
    made = {out for node in nodes for out in node.output}
    value_info = [value for value in graph.value_info if value.name in made]
    if len(value_info) != len(graph.value_info):
        del graph.value_info[:]
        graph.value_info.extend(value_info)


def merge_slices(graph: onnx.GraphProto) -> int:
    """Replace Slice(Slice(x, s1, e1, a1, t1), s2, e2, a2, t2), where the inner result has no other consumer
    and the constant axes a1, a2 are disjoint and non-negative, by one Slice over a1 + a2 (starts, ends and
    steps concatenated); returns the number merged. Needs explicit, constant axes and steps on both."""
    values = _constants(graph)
    producer = {out: node for node in graph.node for out in node.output}
    uses = Counter(name for node in graph.node for name in node.input)
    uses.update(value.name for value in graph.output)
    drop: set[int] = set()
    before: dict[int, list[onnx.NodeProto]] = {}  # Concat nodes to insert before each merged Slice
    for outer in graph.node:
        if outer.op_type != "Slice" or len(outer.input) != 5:
            continue
        inner = producer.get(outer.input[0])
        if inner is None or inner.op_type != "Slice" or len(inner.input) != 5 or id(inner) in drop:
            continue
        if uses[inner.output[0]] != 1:
            continue
        found = [values.get(node.input[i]) for i in (3, 4) for node in (inner, outer)]
        index_types = {values[node.input[1]].dtype for node in (inner, outer) if node.input[1] in values}
        constant = [value for value in found if value is not None and value.dtype == np.int64]
        if len(constant) != 4:
            continue  # axes and steps of both must be int64 constants
        axes, steps = constant[:2], constant[2:]
        if index_types != {np.dtype(np.int64)}:  # Slice's index inputs share one type per node: all int64
            continue
        both = np.concatenate([a.reshape(-1) for a in axes])
        if (both < 0).any() or len(set(both.tolist())) != both.size:
            continue
        tag = outer.output[0]
        concats = [
            helper.make_node("Concat", [inner.input[position], outer.input[position]], [f"{tag}_{what}"], axis=0,
                             name=f"{outer.name or tag}_{what}")
            for position, what in ((1, "starts"), (2, "ends"))
        ]
        before[id(outer)] = concats
        axes_name, steps_name = f"{tag}_axes", f"{tag}_steps"
        graph.initializer.extend(
            [
                numpy_helper.from_array(both.astype(np.int64), axes_name),
                numpy_helper.from_array(np.concatenate([t.reshape(-1) for t in steps]).astype(np.int64), steps_name),
            ]
        )
        outer.input[0] = inner.input[0]
        outer.input[1], outer.input[2] = (concat.output[0] for concat in concats)
        outer.input[3], outer.input[4] = axes_name, steps_name
        drop.add(id(inner))
    if before:
        nodes = [new for node in graph.node if id(node) not in drop for new in (*before.get(id(node), []), node)]
        _replace_nodes(graph, nodes)
    return len(before)


def optimise(graph: onnx.GraphProto) -> dict[str, int]:
    """Every pass of this module, in order; how many rewrites each made."""
    return {"fuse_display_quantize": fuse_display_quantize(graph), "merge_slices": merge_slices(graph)}
