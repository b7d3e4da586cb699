"""``pvae-gpu-check`` (``make gpu-check``): every GPU path measured in one run, written to one JSON.

On a host with a CUDA device and onnxruntime-gpu it runs, each step bounded so that the whole
check stays within about 5 minutes:

0. **kernels** (runs without a GPU too): every node of every graph checked against ONNX Runtime's table
   of CUDA kernels (``pvae.bench.cuda_kernels``) for its op version and input types; a node the CUDA EP
   has no kernel for is listed, since ONNX Runtime would leave it on the CPU;
1. **placement**: each graph of the bundle (frame, preprocess, rates, sampler, decoder) in a CUDA
   session with ONNX Runtime's profiler on; every node the profile shows on another execution
   provider than CUDA is listed. A sampler whose Loop or TopK runs on the CPU is not a CUDA-side
   sampling op, so those are called out (``sampler_on_device``);
2. **sampler parity**: the sampler graph on CUDA and on the CPU, same rates (log-spaced from 1e-7
   to 200, and the model's own rates on natural-image patches) and seeds: the counts must be equal
   bit for bit;
3. **serving**: ``pvae-serve --gpu 0`` (CUDA execution provider with I/O binding) started as a
   process on loopback, fed raw VGA frames by concurrent streams (pvae.bench.loadgen) for a fixed
   time: frames/s of that one process (goal 2,000) and client-side latency;
4. **training**: ``pvae-bench-train --device cuda`` micro-benchmark (a few optimisation steps per
   sampler variant): samples/s.

Without a GPU it writes the JSON with ``"status": "skipped"``, the reason and the kernel check, and exits 0
(1 if the kernel check finds a node the CUDA EP cannot take).

    pvae-gpu-check --out runs/gpu-check.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import pvae
from pvae.bench.config import BenchConfig
from pvae.bench.cuda_kernels import CUDA_ABSENT, CUDA_INPUT_CONSTRAINTS, CUDA_KERNELS
from pvae.bench.loadgen import Tally, Tickets, stream_frames
from pvae.bench.serve import frame_message, server_processes, synthetic_frames
from pvae.bundle import Bundle, load_bundle
from pvae.cli import run_cli
from pvae.errors import PVAEError
from pvae.paths import DEFAULT_BUNDLE_RESOURCE

__all__ = ["CUDA_PROVIDER", "all_nodes", "cuda_kernel_gaps", "main", "node_placement", "sampler_parity"]

PROG = "pvae-gpu-check"
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
#: Sampler ops that must run on the device for sampling to count as on-device.
SAMPLER_DEVICE_OPS = ("Loop", "TopK")
#: The serving goal: VGA frames per second of one pvae-serve process on one GPU.
SERVING_GOAL_FPS = 2000.0
VGA = (480, 640)
#: Ops whose last input constraint repeats (variadic inputs: Concat's tensors, Loop's carried values).
VARIADIC_OPS = frozenset({"Concat", "Max", "Min", "Sum", "Mean", "Loop"})


def _ort() -> Any:
    import onnxruntime

    return onnxruntime


def skip_reason(gpu: int) -> str | None:
    """Why the check cannot run here (None: it can): what ``pvae-serve --gpu`` would say."""
    from pvae.serving.engine import resolve_device

    try:
        resolve_device("cuda", gpu)
    except PVAEError as exc:  # no onnxruntime, no CUDA execution provider, or no visible GPU
        return str(exc)
    return None


def _graph_models(bundle: Bundle) -> dict[str, bytes | str]:
    """Each graph of the bundle, as a path or (preprocess, cut from the frame graph) as model bytes."""
    import onnx

    from pvae.preprocess_graph import preprocess_model

    graphs: dict[str, bytes | str] = {name: str(bundle.graph_path(name)) for name in ("frame", "rates", "sampler",
                                                                                      "decoder")}
    policy = bundle.manifest.get("frame_policy") or {}
    shape = tuple(policy.get("patch_shape") or (bundle.patch_size, bundle.patch_size))
    graphs["preprocess"] = preprocess_model(onnx.load(str(bundle.graph_path("frame"))),
                                            (int(shape[0]), int(shape[-1]))).SerializeToString()
    return graphs


def _subgraphs(node: Any) -> list[Any]:
    """The graphs held by ``node``'s attributes (a Loop's body, an If's branches)."""
    import onnx

    graphs = []
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            graphs.append(attribute.g)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(attribute.graphs)
    return graphs


def all_nodes(graph: Any) -> list[Any]:
    """The nodes of ``graph`` (an ``onnx.GraphProto``) and of its subgraphs, depth first."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for sub in _subgraphs(node):
            nodes.extend(all_nodes(sub))
    return nodes


def _value_types(graph: Any, types: dict[str, str]) -> None:
    """Element type names of every typed value of ``graph`` and its subgraphs, into ``types``."""
    import onnx

    for value in (*graph.input, *graph.output, *graph.value_info):
        elem = value.type.tensor_type.elem_type
        if elem:
            types[value.name] = onnx.TensorProto.DataType.Name(elem)
    for tensor in graph.initializer:
        types[tensor.name] = onnx.TensorProto.DataType.Name(tensor.data_type)
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Constant" and attribute.name == "value":
                types[node.output[0]] = onnx.TensorProto.DataType.Name(attribute.t.data_type)
        for sub in _subgraphs(node):
            _value_types(sub, types)


def _cuda_row(op: str, version: int) -> dict[str, frozenset[str]] | None:
    """The type constraints of the CUDA kernel row of ``op`` that covers op version ``version``."""
    return next((types for since, until, types in CUDA_KERNELS.get(op, ())
                 if since <= version and (until is None or version <= until)), None)


def cuda_kernel_gaps(model: Any) -> list[str]:
    """The nodes of ``model`` (an ``onnx.ModelProto``, subgraphs included) that ONNX Runtime's CUDA EP has
    no kernel for, by ``pvae.bench.cuda_kernels``: an op it lacks, an op version outside its rows, or an
    input type outside the type constraint. Each gap is one line naming the node; [] means every node can
    run on the GPU (ONNX Runtime may still keep small shape computations on the CPU by choice)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types: dict[str, str] = {}
    _value_types(inferred.graph, types)
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)
    gaps = []
    for node in all_nodes(inferred.graph):
        if node.op_type == "Constant" and not node.domain:
            continue  # folded into an initializer when the session loads: no kernel runs
        label = f"{node.op_type} {node.name or node.output[0]!r}"
        if node.domain not in ("", "ai.onnx"):
            gaps.append(f"{label}: custom domain {node.domain!r}, no CUDA kernel")
            continue
        version = onnx.defs.get_schema(node.op_type, opset).since_version
        if node.op_type == "CastLike":
            # A function op: ONNX Runtime inlines it as a Cast to the type of its second input.
            cast = _cuda_row("Cast", version) or {}
            source, target = types.get(node.input[0]), types.get(node.input[1])
            if source not in cast.get("T1", ()) or target not in cast.get("T2", ()):
                gaps.append(f"{label}: a Cast from {source} to {target}, which the CUDA Cast kernel does not do")
            continue
        if node.op_type not in CUDA_KERNELS:
            known = "lists no CUDA kernel for it" if node.op_type in CUDA_ABSENT else "is not transcribed for it"
            gaps.append(f"{label}: pvae.bench.cuda_kernels {known}")
            continue
        row = _cuda_row(node.op_type, version)
        if row is None:
            gaps.append(f"{label}: no CUDA kernel for version {version} of {node.op_type} (opset {opset})")
            continue
        constraints = CUDA_INPUT_CONSTRAINTS[node.op_type]
        for index, name in enumerate(node.input):
            if not name:
                continue
            if index >= len(constraints) and node.op_type not in VARIADIC_OPS:
                break
            constraint = constraints[min(index, len(constraints) - 1)]
            allowed = ({constraint[len("tensor("):-1].upper()} if constraint.startswith("tensor(")
                       else row.get(constraint))
            if allowed is None:
                continue  # the table lists no types for this constraint
            found = types.get(name)
            if found is None:
                gaps.append(f"{label}: the type of input {index} ({name!r}) is unknown")
            elif found not in allowed:
                gaps.append(f"{label}: input {index} ({name!r}) is {found}; the CUDA kernel takes "
                            f"{', '.join(sorted(allowed))}")
        if node.op_type == "Cast":
            target = onnx.TensorProto.DataType.Name(next(a.i for a in node.attribute if a.name == "to"))
            if target not in row.get("T2", ()):
                gaps.append(f"{label}: casts to {target}, which the CUDA kernel does not produce")
    return gaps


def kernel_check(bundle: Bundle) -> dict[str, Any]:
    """``cuda_kernel_gaps`` of every graph of ``bundle``: {graph: [gaps]}, and ``all_on_cuda``."""
    import onnx

    report: dict[str, Any] = {}
    for name, model in _graph_models(bundle).items():
        proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model)
        report[name] = cuda_kernel_gaps(proto)
    report["all_on_cuda"] = not any(report.values())
    return report


def _feeds(session: Any, bundle: Bundle, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A plausible input for every input of ``session`` (a VGA frame, 1200 patches, rates, a seed)."""
    n = (VGA[0] // bundle.patch_size) * (VGA[1] // bundle.patch_size)
    feeds: dict[str, np.ndarray] = {}
    for item in session.get_inputs():
        if item.type == "tensor(uint8)":
            feeds[item.name] = rng.integers(0, 256, size=(1, *VGA), dtype=np.uint8)
        elif item.type == "tensor(int64)":
            feeds[item.name] = np.array(7, dtype=np.int64)
        else:
            width = item.shape[-1] if isinstance(item.shape[-1], int) else bundle.n_latents
            values = rng.gamma(0.5, 0.5, size=(n, width)) if "rate" in item.name else rng.normal(size=(n, width))
            feeds[item.name] = values.astype(np.float32)
    return feeds


def _providers(gpu: int | None) -> list[Any]:
    """The session providers for CUDA device ``gpu`` (None: the CPU alone, for tests without a GPU)."""
    return [CPU_PROVIDER] if gpu is None else [(CUDA_PROVIDER, {"device_id": gpu}), CPU_PROVIDER]


def node_placement(bundle: Bundle, gpu: int | None, rng: np.random.Generator) -> dict[str, Any]:
    """Per graph: how many nodes ran on the device (CUDA ``gpu``; None: the CPU) and which ran elsewhere."""
    device = CPU_PROVIDER if gpu is None else CUDA_PROVIDER
    ort = _ort()
    placement: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in _graph_models(bundle).items():
            options = ort.SessionOptions()
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(tmp, name)
            session = ort.InferenceSession(model, options, providers=_providers(gpu))
            session.run(None, _feeds(session, bundle, rng))
            events = json.loads(Path(session.end_profiling()).read_text())
            providers: dict[str, tuple[str, str]] = {}
            for event in events:
                args = event.get("args") or {}
                if event.get("cat") == "Node" and "provider" in args:
                    node = str(event["name"]).removesuffix("_kernel_time")
                    providers[node] = (str(args.get("op_name", "?")), str(args["provider"]))
            elsewhere = Counter(f"{op} on {provider}" for op, provider in providers.values()
                                if provider != device)
            placement[name] = {"nodes": len(providers),
                               "on_device": sum(provider == device for _, provider in providers.values()),
                               "elsewhere": dict(sorted(elsewhere.items()))}
    sampler_off = [key for key in placement["sampler"]["elsewhere"] if key.split(" on ")[0] in SAMPLER_DEVICE_OPS]
    placement["sampler_on_device"] = not sampler_off
    return placement


def sampler_parity(bundle: Bundle, gpu: int | None, rng: np.random.Generator, seeds: Sequence[int] = (0, 1, 2**40 + 7)
                   ) -> dict[str, Any]:
    """Counts of the sampler graph on CUDA ``gpu`` (None: a second CPU session) against the CPU, same
    rates and seeds: equal bit for bit?"""
    ort = _ort()
    path = str(bundle.graph_path("sampler"))
    cpu = ort.InferenceSession(path, providers=[CPU_PROVIDER])
    cuda = ort.InferenceSession(path, providers=_providers(gpu))
    rates_session = ort.InferenceSession(str(bundle.graph_path("rates")), providers=[CPU_PROVIDER])
    patches = rng.normal(size=(1200, bundle.patch_size ** 2)).astype(np.float32)
    model_rates = rates_session.run(["rates"], {rates_session.get_inputs()[0].name: patches})[0]
    ladder = np.geomspace(1e-7, 200.0, 1200 * bundle.n_latents).astype(np.float32).reshape(1200, -1)
    rates_name, seed_name = (item.name for item in cpu.get_inputs())
    cases: list[dict[str, Any]] = []
    for label, rates in (("model rates", model_rates), ("1e-7..200 ladder", ladder)):
        for seed in seeds:
            feeds = {rates_name: np.ascontiguousarray(rates, dtype=np.float32), seed_name: np.array(seed, np.int64)}
            started = time.perf_counter()
            on_cpu = cpu.run(None, feeds)[0]
            cpu_s = time.perf_counter() - started
            cuda.run(None, feeds)  # first call per shape pays for allocations
            started = time.perf_counter()
            on_cuda = cuda.run(None, feeds)[0]
            cuda_s = time.perf_counter() - started
            cases.append({"rates": label, "seed": seed, "elements": int(on_cpu.size),
                          "mismatches": int(np.count_nonzero(on_cpu != on_cuda)),
                          "cpu_ms": round(cpu_s * 1e3, 3), "cuda_ms": round(cuda_s * 1e3, 3)})
    return {"equal": all(case["mismatches"] == 0 for case in cases), "cases": cases}


async def _drive(address: str, streams: int, window: int, seconds: float) -> tuple[Tally, float]:
    from pvae.clients import AsyncClient, EncodeOptions

    frames = [frame_message(image, "raw") for image in synthetic_frames(16, *VGA)]
    options = EncodeOptions(outputs=("counts", "stats"))
    clients = [AsyncClient(address, options=options) for _ in range(streams)]
    try:
        warm = Tally()
        await asyncio.gather(*(stream_frames(c, frames, Tickets(budget=2 * window), warm, window=window)
                               for c in clients))
        tally = Tally()
        tickets = Tickets(duration_s=seconds)
        started = time.perf_counter()
        await asyncio.gather(*(stream_frames(c, frames, tickets, tally, window=window, offset=1000 * i,
                                             label=f"stream {i}") for i, c in enumerate(clients)))
        return tally, time.perf_counter() - started
    finally:
        for client in clients:
            await client.close()


def serving_throughput(bundle: Bundle, gpu: int | None, streams: int, window: int, seconds: float) -> dict[str, Any]:
    """VGA frames/s of one ``pvae-serve --gpu`` process (None: on the CPU), raw frames in, sparse counts
    and stats out."""
    config = BenchConfig(model=str(bundle.root), gpu=gpu, device="cpu" if gpu is None else "cuda", window=window,
                         extra_server_args=("--max-batch-frames", "16", "--max-queue-frames", "256"))
    with server_processes(config, bundle.root) as port:
        tally, elapsed = asyncio.run(_drive(f"127.0.0.1:{port}", streams, window, seconds))
    fps = tally.answered / elapsed if elapsed > 0 else 0.0
    return {"streams": streams, "window": window, "seconds": round(elapsed, 2), "frames": tally.answered,
            "fps": round(fps, 1), "goal_fps": SERVING_GOAL_FPS, "goal_met": fps >= SERVING_GOAL_FPS,
            "p50_ms": round(tally.percentile_ms(50), 2), "p99_ms": round(tally.percentile_ms(99), 2),
            "failed": tally.failed, "stream_errors": tally.stream_errors[:5]}


def training_throughput(gpu: int, steps: int) -> dict[str, Any]:
    """``pvae-bench-train`` on CUDA: samples/s per sampler variant (fresh weights, T = 1)."""
    command = [sys.executable, "-m", "pvae.bench.train", "--device", f"cuda:{gpu}", "--steps", str(steps),
               "--temperatures", "1.0", "--weights", "init", "--real-epochs", "0", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=150, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]}
    rows = json.loads(done.stdout)
    return {"steps": steps, "rows": [{key: row.get(key) for key in ("variant", "samples_per_second", "peak_mib",
                                                                     "device")} for row in rows]}


def _commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parent)
    return done.stdout.strip() or None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Run every GPU path once (placement, sampler parity on "
                                "CUDA, pvae-serve --gpu throughput, training throughput) and write one JSON; "
                                "skips cleanly without a GPU.")
    p.add_argument("--out", type=Path, default=Path("runs/gpu-check.json"), help="the JSON to write")
    p.add_argument("--model", type=Path, default=None, help="bundle directory (default: the bundled model)")
    p.add_argument("--gpu", type=int, default=0, help="CUDA device index")
    p.add_argument("--streams", type=int, default=8, help="concurrent VGA streams in the serving step")
    p.add_argument("--window", type=int, default=8, help="in-flight frames per stream")
    p.add_argument("--seconds", type=float, default=30.0, help="timed seconds of the serving step")
    p.add_argument("--train-steps", type=int, default=20, help="optimisation steps per training variant")
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    report: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "commit": _commit(),
                              "host": platform.node(), "gpu": args.gpu}
    bundle = load_bundle(args.model or Path(pvae.__file__).parent / DEFAULT_BUNDLE_RESOURCE)
    print(f"{PROG}: [0] kernels (every node against ONNX Runtime's CUDA kernel table) ...", file=sys.stderr)
    report["kernels"] = kernel_check(bundle)
    print(json.dumps(report["kernels"]), file=sys.stderr, flush=True)
    reason = skip_reason(args.gpu)
    if reason is not None:
        report.update(status="skipped", reason=reason)
        print(f"{PROG}: skipped: {reason}", file=sys.stderr)
    else:
        rng = np.random.default_rng(0)
        steps = [("placement", lambda: node_placement(bundle, args.gpu, rng)),
                 ("sampler_parity", lambda: sampler_parity(bundle, args.gpu, rng)),
                 ("serving", lambda: serving_throughput(bundle, args.gpu, args.streams, args.window, args.seconds)),
                 ("training", lambda: training_throughput(args.gpu, args.train_steps))]
        report["status"] = "ran"
        for index, (name, step) in enumerate(steps, 1):
            print(f"{PROG}: [{index}/{len(steps)}] {name} ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            try:
                report[name] = step()
            except (PVAEError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
                report[name] = {"error": f"{type(exc).__name__}: {exc}"}
                report["status"] = "failed"
            report[name]["seconds_taken"] = round(time.perf_counter() - started, 1)
            print(json.dumps(report[name]), file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{PROG}: wrote {args.out} (status {report['status']})", file=sys.stderr)
    if not report["kernels"]["all_on_cuda"]:
        print(f"{PROG}: some nodes have no CUDA kernel (see \"kernels\" in {args.out})", file=sys.stderr)
        return 1
    return 0 if report["status"] != "failed" else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``pvae-gpu-check``."""
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
