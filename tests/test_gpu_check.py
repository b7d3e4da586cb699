"""pvae-gpu-check: it skips cleanly without a GPU, and its placement and parity steps measure what they say.

On a CPU-only host the CUDA steps cannot run, so the placement and parity steps are run with the
CPU as "the device": every node must be found on it, and two sessions must agree bit for bit.
That exercises the profiler parsing and the comparison; the GPU test runs the real thing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pvae.bench import gpu_check
from pvae.bundle import Bundle


def test_skips_cleanly_without_a_gpu(tmp_path: Path) -> None:
    if gpu_check.skip_reason(0) is None:
        pytest.skip("a CUDA device is present: the gpu-marked test runs the check")
    out = tmp_path / "gpu-check.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["status"] == "skipped" and report["reason"]


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
