"""pvae-gpu-check: it skips cleanly without a GPU, and its placement and parity steps measure what they say.

On a CPU-only host the CUDA steps cannot run, so the placement and parity steps are run with the
CPU as "the device": every node must be found on it, and two sessions must agree bit for bit.
That exercises the profiler parsing and the comparison; the GPU test runs the real thing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pvae.bench import gpu_check
from pvae.bundle import Bundle, load_bundle
from pvae.export.sampler import build_sampler_model
from pvae.paths import DEFAULT_BUNDLE_RESOURCE


def test_skips_cleanly_without_a_gpu(tmp_path: Path) -> None:
    if gpu_check.skip_reason(0) is None:
        pytest.skip("a CUDA device is present: the gpu-marked test runs the check")
    out = tmp_path / "gpu-check.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["status"] == "skipped" and report["reason"]
    assert report["kernels"]["all_on_cuda"]  # the static kernel check runs without a GPU
    assert set(report["kernels"]) == {"frame", "preprocess", "rates", "sampler", "decoder", "all_on_cuda"}


def test_every_node_of_the_bundles_has_a_cuda_kernel(tiny_bundle: Bundle) -> None:
    import pvae

    default = load_bundle(Path(pvae.__file__).parent / DEFAULT_BUNDLE_RESOURCE)
    for bundle in (tiny_bundle, default):
        report = gpu_check.kernel_check(bundle)
        assert report["all_on_cuda"], report


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], opset: int = 18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_kernel_gaps_name_the_node_and_the_reason() -> None:
    def value(name: str, dtype: int) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, dtype, [4])

    # Where has no uint64 CUDA kernel; the same node on float is fine.
    where = [helper.make_node("Where", ["c", "a", "b"], ["y"], name="pick")]
    gaps = gpu_check.cuda_kernel_gaps(_model(where, [value("c", TensorProto.BOOL), value("a", TensorProto.UINT64),
                                                     value("b", TensorProto.UINT64)]))
    assert len(gaps) == 2 and gaps[0].startswith("Where 'pick': input 1 ('a') is UINT64")
    assert gpu_check.cuda_kernel_gaps(_model(where, [value("c", TensorProto.BOOL), value("a", TensorProto.FLOAT),
                                                     value("b", TensorProto.FLOAT)])) == []
    # Clip on int32: the CUDA kernel takes int64 and int8, not int32.
    clip = [helper.make_node("Clip", ["a"], ["y"], name="clamp")]
    assert gpu_check.cuda_kernel_gaps(_model(clip, [value("a", TensorProto.INT32)])) == [
        "Clip 'clamp': input 0 ('a') is INT32; the CUDA kernel takes "
        "DOUBLE, FLOAT, FLOAT16, INT64, INT8, UINT64, UINT8"]
    # An op with no CUDA kernel, and an op the table does not hold.
    shift = [helper.make_node("BitShift", ["a", "a"], ["y"], name="shift", direction="RIGHT")]
    assert gpu_check.cuda_kernel_gaps(_model(shift, [value("a", TensorProto.UINT64)])) == [
        "BitShift 'shift': pvae.bench.cuda_kernels lists no CUDA kernel for it"]
    cos = [helper.make_node("Cos", ["a"], ["y"], name="cos")]
    assert "not transcribed" in gpu_check.cuda_kernel_gaps(_model(cos, [value("a", TensorProto.FLOAT)]))[0]


def test_kernel_gaps_look_inside_loop_bodies() -> None:
    sampler_shift = gpu_check.cuda_kernel_gaps(build_sampler_model(shift="bitshift"))
    assert sampler_shift and all(gap.startswith("BitShift ") for gap in sampler_shift)
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("BitShift", ["v_in", "v_in"], ["v_out"], name="inner", direction="LEFT")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.UINT32, [4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.UINT32, [4])])
    loop = helper.make_node("Loop", ["n", "", "v"], ["y"], name="loop", body=body)
    inputs = [helper.make_tensor_value_info("n", TensorProto.INT64, []),
              helper.make_tensor_value_info("v", TensorProto.UINT32, [4])]
    gaps = gpu_check.cuda_kernel_gaps(_model([loop], inputs))
    assert gaps == ["BitShift 'inner': pvae.bench.cuda_kernels lists no CUDA kernel for it"]


def test_placement_lists_every_node_of_every_graph(tiny_bundle: Bundle) -> None:
    placement = gpu_check.node_placement(tiny_bundle, None, np.random.default_rng(0))
    for name in ("frame", "preprocess", "rates", "sampler", "decoder"):
        graph = placement[name]
        assert graph["nodes"] > 0 and graph["on_device"] == graph["nodes"] and graph["elsewhere"] == {}, name
    assert placement["sampler"]["nodes"] > placement["rates"]["nodes"]  # the Loop bodies' nodes are counted
    assert placement["sampler_on_device"]


def test_sampler_parity_compares_counts_element_by_element(tiny_bundle: Bundle) -> None:
    parity = gpu_check.sampler_parity(tiny_bundle, None, np.random.default_rng(0), seeds=(3,))
    assert parity["equal"]
    assert {case["rates"] for case in parity["cases"]} == {"model rates", "1e-7..200 ladder"}
    assert all(case["elements"] == 1200 * tiny_bundle.n_latents for case in parity["cases"])


@pytest.mark.gpu
def test_gpu_check_runs_on_a_gpu(tmp_path: Path) -> None:
    if gpu_check.skip_reason(0) is not None:
        pytest.skip(str(gpu_check.skip_reason(0)))
    out = tmp_path / "gpu-check.json"
    assert gpu_check.main(["--out", str(out), "--seconds", "5", "--train-steps", "3"]) == 0
    report = json.loads(out.read_text())
    assert report["status"] == "ran"
    assert report["sampler_parity"]["equal"]
    assert report["placement"]["sampler_on_device"], report["placement"]["sampler"]
    assert report["serving"]["frames"] > 0
