"""The preprocessing graph: frames -> the whitened, model-space patches the rate path takes.

It is not stored in a bundle: it is cut out of the bundle's own frame graph, so it is the very
preprocessing every frame gets, for every bundle ever exported. ``onnx.utils.Extractor`` keeps the
frame graph's nodes from ``frames`` to its ``preprocessed`` output (frames / 255, whitening, local
contrast normalisation, per-frame z-score); a few shape nodes then tile the model-space frame as the
frame graph does before its rate path (manifest ``frame_policy``): reflect-pad the bottom and right
up to whole patches, cut into R = ceil(H / ph) rows and C = ceil(W / pw) columns of ph x pw patches,
row-major (patch index r * C + c), each flattened row by row::

    frames uint8 (B, H, W)  ->  patches float32 (B, R*C, ph*pw)

So ``rates.onnx(patches[b])`` equals the frame graph's ``rates[b]`` up to float32 round-off (the two
graphs run the same rate path on the same numbers; tests/test_oip.py compares them). Serving runs it
as the Open Inference Protocol model ``pvae_preprocess``; ``pvae-export --triton`` writes it as a
Triton model of the same name. Pure ``onnx``: no torch.

    >>> model = preprocess_model(onnx.load(bundle.graph_path("frame")), (16, 16))
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.utils
from onnx import TensorProto, helper, numpy_helper

from pvae.errors import BundleError

__all__ = ["PREPROCESS_INPUT", "PREPROCESS_OUTPUT", "preprocess_model"]

#: Input of the preprocessing graph (the frame graph's input).
PREPROCESS_INPUT = "frames"
#: Output of the preprocessing graph.
PREPROCESS_OUTPUT = "patches"
#: The frame graph output that holds the model-space frame (B, H, W).
PREPROCESSED = "preprocessed"


def _const(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def preprocess_model(frame: onnx.ModelProto, patch_shape: tuple[int, int], frame_input: str = PREPROCESS_INPUT,
                     preprocessed: str = PREPROCESSED) -> onnx.ModelProto:
    """The preprocessing graph cut out of a bundle's frame graph (see the module docstring).

    Raises ``BundleError`` when the frame graph lacks ``frame_input`` or ``preprocessed``.
    """
    inputs = [value.name for value in frame.graph.input]
    outputs = [value.name for value in frame.graph.output]
    if frame_input not in inputs or preprocessed not in outputs:
        raise BundleError(f"the frame graph has no {frame_input!r} input or no {preprocessed!r} output "
                          f"(inputs {inputs}, outputs {outputs}); re-export the bundle")
    ph, pw = (int(side) for side in patch_shape)
    part = onnx.utils.Extractor(frame).extract_model([frame_input], [preprocessed])
    graph = part.graph
    prefix = "pvae_tile_"

    def name(tail: str) -> str:
        return prefix + tail

    graph.initializer.extend([
        _const(name("patch_hw"), [ph, pw]),
        _const(name("starts_hw"), [1]), _const(name("ends_hw"), [3]),
        _const(name("starts_b"), [0]), _const(name("ends_b"), [1]),
        _const(name("zero_pads"), [0, 0, 0, 0, 0, 0]),  # begins of (B, 1, H, W), ends of B and 1
        _const(name("axis1"), [1]),
        _const(name("ph"), [ph]), _const(name("pw"), [pw]),
        _const(name("index0"), [0]), _const(name("index1"), [1]),
        _const(name("rest_dims"), [-1, ph * pw]),
    ])
    graph.node.extend([
        helper.make_node("Shape", [preprocessed], [name("shape")]),  # [B, H, W]
        helper.make_node("Slice", [name("shape"), name("starts_hw"), name("ends_hw")], [name("hw")]),
        helper.make_node("Slice", [name("shape"), name("starts_b"), name("ends_b")], [name("b")]),
        # pad = (p - side % p) % p at the bottom and right: less than one patch
        helper.make_node("Mod", [name("hw"), name("patch_hw")], [name("rem")]),
        helper.make_node("Sub", [name("patch_hw"), name("rem")], [name("short")]),
        helper.make_node("Mod", [name("short"), name("patch_hw")], [name("pad_hw")]),
        helper.make_node("Concat", [name("zero_pads"), name("pad_hw")], [name("pads")], axis=0),
        helper.make_node("Unsqueeze", [preprocessed, name("axis1")], [name("x4")]),  # (B, 1, H, W)
        helper.make_node("Pad", [name("x4"), name("pads")], [name("padded")], mode="reflect"),
        helper.make_node("Add", [name("hw"), name("pad_hw")], [name("padded_hw")]),
        helper.make_node("Div", [name("padded_hw"), name("patch_hw")], [name("grid")]),  # [R, C]
        helper.make_node("Gather", [name("grid"), name("index0")], [name("rows")], axis=0),
        helper.make_node("Gather", [name("grid"), name("index1")], [name("cols")], axis=0),
        # (B, 1, R*ph, C*pw) -> (B, R, ph, C, pw) -> (B, R, C, ph, pw) -> (B, R*C, ph*pw)
        helper.make_node("Concat", [name("b"), name("rows"), name("ph"), name("cols"), name("pw")], [name("shape5")],
                         axis=0),
        helper.make_node("Reshape", [name("padded"), name("shape5")], [name("tiles")]),
        helper.make_node("Transpose", [name("tiles")], [name("ordered")], perm=[0, 1, 3, 2, 4]),
        helper.make_node("Concat", [name("b"), name("rest_dims")], [name("shape3")], axis=0),
        helper.make_node("Reshape", [name("ordered"), name("shape3")], [PREPROCESS_OUTPUT]),
    ])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(PREPROCESS_OUTPUT, TensorProto.FLOAT, ["B", "R*C", ph * pw]))
    graph.name = "pvae_preprocess"
    part.producer_name = "pvae (cut from the frame graph)"
    part.ir_version = frame.ir_version
    del part.opset_import[:]
    part.opset_import.extend(frame.opset_import)
    onnx.checker.check_model(part, full_check=True)
    return part
