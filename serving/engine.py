"""The inference engine: ONNX Runtime sessions over a bundle's graphs, on CPU or one CUDA GPU.

All model math lives in the bundle's graphs (``pvae.bundle``); the engine only feeds them:

    frame    frames uint8 (B, H, W)           -> rates, log_rates (B, R*C, K), reconstruction_u8, ...
    preprocess frames uint8 (B, H, W)         -> patches float32 (B, R*C, D)  (cut out of the frame graph)
    sampler  rates float32 (N, K), seed int64 -> counts int32 (N, K)      (one call per frame, so a
                                                 frame's counts depend only on its rates and seed)
    rates    patches float32 (N, D)           -> log_rates, rates (N, K)
    decoder  latents float32 (N, K)           -> patches float32 (N, D)

On a CPU host the counts are drawn by the native kernel (``pvae.native``) when it is built and draws
exactly the bundle graph's counts (checked at load on a probe that covers every algorithm), and by the
sampler graph otherwise: ``Engine.sampler_backend`` says which, ``Engine.sampler_note`` why.

On CUDA the frame graph's outputs are bound with I/O binding: ``rates`` stays on the GPU and each
frame's slice is bound to the sampler in place (pointer offset, no copy), and only the outputs a
request asked for come back to the host, once.

    >>> engine = Engine(load_bundle("bundle"), resolve_device("auto"))
    >>> batch = engine.run_frames(frames, ("rates", "reconstruction_u8"))   # frames (B, H, W) uint8
    >>> counts = engine.sample(batch, 0, seed=7)                            # (R*C, K) int32
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnx.utils

from pvae.bundle import Bundle, GraphSpec
from pvae.errors import BundleError, ConfigError, DeviceError, MissingDependencyError
from pvae.native import NativeUnavailable
from pvae.native import sampler as native_sampler
from pvae.preprocess_graph import PREPROCESS_OUTPUT, preprocess_model
from pvae.serving.errors import InferenceError

__all__ = [
    "CPU_PROVIDER",
    "CUDA_PROVIDER",
    "FRAME_OUTPUTS",
    "DevicePlan",
    "Engine",
    "FrameBatch",
    "HalfCaster",
    "resolve_device",
]

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
#: Output names of the frame graph that the server uses (see the pvae.bundle docstring).
FRAME_INPUT = "frames"
FRAME_OUTPUTS = ("preprocessed", "log_rates", "rates", "reconstruction", "preprocessed_u8", "reconstruction_u8")
#: Outputs of the rates graph.
RATES_OUTPUTS = ("log_rates", "rates")
#: Where NVIDIA's kernel driver lists GPUs; used by ``--device auto`` to look for one without CUDA.
NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")
#: Smallest side of the warm-up frame when the manifest has no frame policy (one 16-pixel patch
#: per side, the P-VAE's patch).
WARMUP_SIDE = 16
#: The seed of the load-time probe that compares the native sampler's counts with the bundle graph's.
PROBE_SEED = 20_261_202

Kind = Literal["cpu", "cuda"]


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("serving needs ONNX Runtime: pip install 'pvae[cpu]' (or 'pvae[gpu]' for "
                                     "onnxruntime-gpu)") from None
    return onnxruntime


@dataclass(frozen=True)
class DevicePlan:
    """Where the graphs run."""

    kind: Kind
    """``"cpu"`` or ``"cuda"``."""
    device_id: int = 0
    """CUDA device index (ignored on CPU)."""

    @property
    def provider(self) -> str:
        """The ONNX Runtime execution provider."""
        return CUDA_PROVIDER if self.kind == "cuda" else CPU_PROVIDER

    @property
    def label(self) -> str:
        """``"cpu"`` or ``"cuda:N"``."""
        return f"cuda:{self.device_id}" if self.kind == "cuda" else "cpu"


def _gpu_present() -> bool:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return NVIDIA_PROC.is_dir() and any(NVIDIA_PROC.iterdir())


def resolve_device(device: str = "auto", gpu: int | None = None) -> DevicePlan:
    """Turn ``--device``/``--gpu`` into a plan; DeviceError if CUDA is asked for and missing."""
    ort = _ort()
    available = ort.get_available_providers()
    if gpu is not None or device == "cuda":
        index = 0 if gpu is None else gpu
        if CUDA_PROVIDER not in available:
            raise DeviceError(f"--gpu {index}: this onnxruntime build has no CUDA execution provider "
                              f"(available: {', '.join(available)}); install onnxruntime-gpu with "
                              "pip install 'pvae[gpu]' (it replaces onnxruntime)")
        if not _gpu_present():
            raise DeviceError(f"--gpu {index}: no NVIDIA GPU is visible (no {NVIDIA_PROC}, or "
                              "CUDA_VISIBLE_DEVICES hides it)")
        return DevicePlan("cuda", index)
    if device == "auto" and CUDA_PROVIDER in available and _gpu_present():
        return DevicePlan("cuda", 0)
    return DevicePlan("cpu")


def _session_options(ort: Any, intra_op_threads: int) -> Any:
    """ONNX Runtime options of the engine's sessions: ``intra_op_threads`` threads that sleep when idle."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    # The inference thread runs the sessions one after another; spinning pool threads of the idle
    # sessions would steal the cores the busy one needs (a 2-core host loses ~30 % to spinning).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class HalfCaster:
    """float32 -> float16 with ONNX Runtime's vectorised Cast (about 30x numpy's ``astype`` on CPU).

    A one-node graph built in memory: a dtype conversion for packing, not model math. Rounds to
    nearest even, as numpy does.

        >>> HalfCaster()(np.ones((2, 3), np.float32)).dtype
        dtype('float16')
    """

    def __init__(self, threads: int = 1) -> None:
        import onnx
        from onnx import TensorProto, helper

        ort = _ort()
        node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT16)
        graph = helper.make_graph([node], "fp16_cast", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)])
        # Opset 13 (ONNX 1.8) is the oldest opset every supported ONNX Runtime runs with this Cast.
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(model.SerializeToString(), options, providers=[CPU_PROVIDER])

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """``values`` as float16, same shape."""
        array = np.ascontiguousarray(values, dtype=np.float32)
        return self._session.run(None, {"x": array})[0]


class FrameBatch:
    """The frame graph's outputs for one batch: host arrays, plus device-resident rates on CUDA."""

    def __init__(self, shape: tuple[int, int, int], host: dict[str, np.ndarray],
                 device_rates: Any = None, n_latents: int = 0) -> None:
        self.shape = shape
        """(B, H, W) of the input frames."""
        self.host = host
        """Host copies of the outputs that were asked for, by graph output name."""
        self.device_rates = device_rates
        """OrtValue (B, R*C, K) on the device (I/O-binding path only)."""
        self.n_latents = n_latents

    def output(self, name: str, index: int) -> np.ndarray:
        """Output ``name`` for frame ``index`` of the batch (host array)."""
        return self.host[name][index]


def _graph(bundle: Bundle, name: str) -> GraphSpec:
    if name not in bundle.graphs:
        raise BundleError(f"{bundle.root}: bundle has no {name!r} graph")
    return bundle.graphs[name]


class Engine:
    """ONNX Runtime sessions for a bundle's frame, sampler, rates and decoder graphs.

    Thread-safety: an ONNX Runtime session may be run from several threads, but the server runs
    each engine from one inference thread at a time; ``run_frames`` results are independent objects.

        >>> engine = Engine(bundle, DevicePlan("cpu"))
        >>> engine.warm_up()
    """

    def __init__(self, bundle: Bundle, plan: DevicePlan, intra_op_threads: int = 0,
                 io_binding: bool | None = None, sampler_threads: int | None = None,
                 sampler: str = "auto") -> None:
        self.bundle = bundle
        self.plan = plan
        self.io_binding = plan.kind == "cuda" if io_binding is None else io_binding
        self.n_latents = bundle.n_latents
        self.patch_size = bundle.patch_size
        ort = _ort()
        self._ort = ort
        self._options = _session_options(ort, intra_op_threads)
        # The sampler's Loops gain little from a second thread; with one, the other core is free for
        # the next frame's graph or a second frame's sampling (ServeConfig.sampler_threads).
        self._sampler_options = self._options if sampler_threads is None else _session_options(ort, sampler_threads)
        threads = intra_op_threads if sampler_threads is None else sampler_threads
        self._native_threads = threads if threads > 0 else (os.cpu_count() or 1)

        frame = _graph(bundle, "frame")
        self._frame_input = frame.inputs[0].name
        names = {t.name for t in frame.outputs}
        missing = [n for n in FRAME_OUTPUTS if n not in names]
        if missing:
            raise BundleError(f"{bundle.root}: frame graph lacks output(s) {', '.join(missing)}")
        sampler_graph = _graph(bundle, "sampler")
        self._sampler_rates = next((t.name for t in sampler_graph.inputs if t.dtype.startswith("float")), None)
        self._sampler_seed = next((t.name for t in sampler_graph.inputs if t.dtype.startswith("int")), None)
        if self._sampler_rates is None or self._sampler_seed is None or len(sampler_graph.outputs) != 1:
            raise BundleError(f"{bundle.root}: sampler graph must take (float rates, int seed) and give counts")
        self._sampler_counts = sampler_graph.outputs[0].name
        rates = _graph(bundle, "rates")
        self._rates_input = rates.inputs[0].name
        self._rates_outputs = {t.name for t in rates.outputs}
        if not {"log_rates", "rates"} <= self._rates_outputs:
            raise BundleError(f"{bundle.root}: rates graph must output log_rates and rates")
        decoder = _graph(bundle, "decoder")
        self._decoder_input = decoder.inputs[0].name
        self._decoder_output = decoder.outputs[0].name
        patch_dim = rates.inputs[0].shape[-1]
        self.patch_dim = int(patch_dim) if isinstance(patch_dim, int) else self.patch_size**2
        policy = bundle.manifest.get("frame_policy") or {}
        self.min_frame_side = int(policy.get("min_side", 1))

        self._sessions = {name: self._session(bundle.graph_path(name)) for name in ("frame", "rates", "decoder")}
        self._sessions["sampler"] = self._session(bundle.graph_path("sampler"), options=self._sampler_options)
        # frames -> model-space patches: cut out of the frame graph (pvae.preprocess_graph), so it is
        # the preprocessing every frame gets; the Open Inference Protocol serves it as pvae_preprocess.
        patch_shape = tuple(policy.get("patch_shape") or (self.patch_size, self.patch_size))
        self.patch_shape = (int(patch_shape[0]), int(patch_shape[-1]))
        frame_path = bundle.graph_path("frame")
        try:
            frame_model = onnx.load(str(frame_path))
            preprocess = preprocess_model(frame_model, self.patch_shape, self._frame_input)
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:
            raise BundleError(f"{frame_path}: cannot cut the preprocessing graph out of it: {exc}") from None
        self._sessions["preprocess"] = self._session(frame_path, preprocess.SerializeToString())
        # ONNX Runtime runs every node of a graph whatever is fetched, so a request that wants fewer outputs
        # gets a session of the frame graph cut down to them (same nodes, same kernels: the same values).
        self._graph_models = {"frame": frame_model}
        self._cut_sessions: dict[tuple[str, frozenset[str]], Any] = {
            ("frame", frozenset(FRAME_OUTPUTS)): self._sessions["frame"],
            ("rates", frozenset(RATES_OUTPUTS)): self._sessions["rates"]}
        self._cut_sessions_lock = threading.Lock()
        self._native: native_sampler.NativeSampler | None = None
        self.sampler_backend, self.sampler_note = self._choose_sampler(sampler)

    def _choose_sampler(self, wanted: str) -> tuple[str, str]:
        """("native" | "graph", why) for ``ServeConfig.sampler`` ``wanted``; ConfigError when native is
        required and cannot be had, BundleError when the bundle's graph draws other counts."""
        if wanted == "graph":
            return "graph", "asked for (--sampler graph)"
        if self.plan.kind == "cuda":
            if wanted == "native":
                raise ConfigError("--sampler native draws on the CPU; on CUDA the bundle's sampler graph samples on "
                                  "the device: use --sampler auto or graph, or --device cpu")
            return "graph", "CUDA: the sampler graph runs on the device"
        try:
            sampler = native_sampler.load()
        except NativeUnavailable as exc:
            if wanted == "native":
                raise ConfigError(f"--sampler native: {exc}") from None
            return "graph", str(exc)
        probe = _sampler_probe()
        graph_counts = self.sample_rates(probe, PROBE_SEED)
        if not np.array_equal(sampler.sample(probe, PROBE_SEED), graph_counts):
            message = (f"{self.bundle.root}: its sampler graph draws other counts than the native sampler for the "
                       "same seed (another sampler algorithm or version)")
            if wanted == "native":
                raise BundleError(f"{message}; use --sampler graph")
            return "graph", message
        self._native = sampler
        return "native", f"{sampler.path.name}, {self._native_threads} thread(s); counts equal the graph's on the probe"

    # ------------------------------------------------------------------ sessions

    def _session(self, path: Path, model: bytes | None = None, options: Any = None) -> Any:
        """A session for the graph at ``path`` (or for ``model``, a graph made from it)."""
        providers: list[Any]
        if self.plan.kind == "cuda":
            providers = [(CUDA_PROVIDER, {"device_id": self.plan.device_id}), CPU_PROVIDER]
        else:
            providers = [CPU_PROVIDER]
        try:
            session = self._ort.InferenceSession(str(path) if model is None else model,
                                                 self._options if options is None else options, providers=providers)
        except Exception as exc:  # ONNX Runtime raises its own pybind exception types
            if self.plan.kind == "cuda":
                raise DeviceError(f"--gpu {self.plan.device_id}: could not create a CUDA session for "
                                  f"{path.name}: {exc}") from None
            raise BundleError(f"{path}: ONNX Runtime cannot load this graph: {exc}") from None
        if session.get_providers()[0] != self.plan.provider:
            # ONNX Runtime falls back to the CPU silently when CUDA cannot start; refuse instead.
            raise DeviceError(f"{self.plan.label}: ONNX Runtime fell back to {session.get_providers()[0]} "
                              f"for {path.name} (is the GPU visible and are the CUDA/cuDNN libraries installed?)")
        return session

    @property
    def provider(self) -> str:
        """The execution provider every session runs on."""
        return self.plan.provider

    # ------------------------------------------------------------------ frames

    def run_frames(self, frames: np.ndarray, outputs: Sequence[str]) -> FrameBatch:
        """Run the frame graph on uint8 (B, H, W) frames; fetch the named outputs to the host.

        ``"rates"`` is always computed; with I/O binding it also stays on the device for ``sample``.
        """
        wanted = [name for name in FRAME_OUTPUTS if name in outputs]
        session = self._frame_session(wanted)
        shape = (int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2]))
        try:
            if not self.io_binding:
                fetch = wanted or ["rates"]
                values = session.run(fetch, {self._frame_input: frames})
                return FrameBatch(shape, dict(zip(fetch, values, strict=True)), n_latents=self.n_latents)
            binding = session.io_binding()
            binding.bind_cpu_input(self._frame_input, np.ascontiguousarray(frames))
            device = self.plan.kind
            binding.bind_output("rates", device, self.plan.device_id)
            host_names = [name for name in wanted if name != "rates"]
            for name in host_names:
                binding.bind_output(name, "cpu")
            session.run_with_iobinding(binding)
            values = binding.get_outputs()  # OrtValues in binding order: rates first
            host = {name: value.numpy() for name, value in zip(host_names, values[1:], strict=True)}
            if "rates" in wanted:
                host["rates"] = values[0].numpy()
            return FrameBatch(shape, host, device_rates=values[0], n_latents=self.n_latents)
        except Exception as exc:
            raise InferenceError(f"frame graph failed on a {shape} batch: {exc}") from None

    def _frame_session(self, outputs: Sequence[str]) -> Any:
        """The frame graph cut down to ``outputs`` and ``rates`` (made on first use, then kept)."""
        return self._cut_session("frame", FRAME_OUTPUTS, frozenset(outputs) | {"rates"}, self._frame_input)

    def _cut_session(self, graph: str, order: Sequence[str], keep: frozenset[str], graph_input: str) -> Any:
        """A session of bundle graph ``graph`` cut down to the outputs ``keep`` (listed in ``order``)."""
        key = (graph, keep)
        session = self._cut_sessions.get(key)
        if session is not None:
            return session
        with self._cut_sessions_lock:
            session = self._cut_sessions.get(key)
            if session is None:
                names = [name for name in order if name in keep]
                try:
                    if graph not in self._graph_models:
                        self._graph_models[graph] = onnx.load(str(self.bundle.graph_path(graph)))
                    part = onnx.utils.Extractor(self._graph_models[graph]).extract_model([graph_input], names)
                except (OSError, ValueError, KeyError, onnx.checker.ValidationError) as exc:
                    raise InferenceError(f"cannot cut the {graph} graph down to {names}: {exc}") from None
                session = self._session(self.bundle.graph_path(graph), part.SerializeToString())
                self._cut_sessions[key] = session
        return session

    def sample(self, batch: FrameBatch, index: int, seed: int) -> np.ndarray:
        """Exact Poisson counts int32 (R*C, K) for frame ``index`` of ``batch``, drawn with ``seed``."""
        if self._native is not None and batch.device_rates is None:
            return self._native.sample(batch.host["rates"][index], seed, self._native_threads)
        session = self._sessions["sampler"]
        seed_array = np.array(seed, dtype=np.int64)
        try:
            if batch.device_rates is None:
                rates = batch.host["rates"][index]  # (R*C, K), a contiguous view
                return session.run([self._sampler_counts], {self._sampler_rates: rates,
                                                            self._sampler_seed: seed_array})[0]
            rows = int(batch.device_rates.shape()[1])
            element_bytes = np.dtype(np.float32).itemsize
            pointer = batch.device_rates.data_ptr() + index * rows * self.n_latents * element_bytes
            binding = session.io_binding()
            binding.bind_input(self._sampler_rates, self.plan.kind, self.plan.device_id, np.float32,
                               [rows, self.n_latents], pointer)
            binding.bind_cpu_input(self._sampler_seed, seed_array)
            binding.bind_output(self._sampler_counts, "cpu")
            session.run_with_iobinding(binding)
            return binding.get_outputs()[0].numpy()
        except Exception as exc:
            raise InferenceError(f"sampler graph failed: {exc}") from None

    def sample_rates(self, rates: np.ndarray, seed: int) -> np.ndarray:
        """Exact Poisson counts int32 (N, K) for host rates float32 (N, K)."""
        if self._native is not None:
            return self._native.sample(rates, seed, self._native_threads)
        try:
            return self._sessions["sampler"].run(
                [self._sampler_counts],
                {self._sampler_rates: np.ascontiguousarray(rates, dtype=np.float32),
                 self._sampler_seed: np.array(seed, dtype=np.int64)})[0]
        except Exception as exc:
            raise InferenceError(f"sampler graph failed: {exc}") from None

    def run_preprocess(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames (B, H, W) -> model-space patches float32 (B, R*C, D): the frame graph's preprocessing
        and tiling, without the rate path (pvae.preprocess_graph)."""
        try:
            return self._sessions["preprocess"].run([PREPROCESS_OUTPUT], {self._frame_input: frames})[0]
        except Exception as exc:
            raise InferenceError(f"preprocessing graph failed on a {tuple(frames.shape)} batch: {exc}") from None

    # ------------------------------------------------------------------ patches

    def run_patches(self, patches: np.ndarray, outputs: Sequence[str] = RATES_OUTPUTS) -> dict[str, np.ndarray]:
        """Model-space patches float32 (N, D) -> the named outputs (``log_rates``, ``rates``), float32 (N, K).

        Only the outputs asked for are computed: the rates graph is cut down to them (``rates`` alone skips
        the log)."""
        names = [name for name in RATES_OUTPUTS if name in outputs] or ["rates"]
        session = self._cut_session("rates", RATES_OUTPUTS, frozenset(names), self._rates_input)
        try:
            values = session.run(names, {self._rates_input: patches})
        except Exception as exc:
            raise InferenceError(f"rates graph failed on {patches.shape} patches: {exc}") from None
        return dict(zip(names, values, strict=True))

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Latents float32 (N, K) (rates or counts) -> model-space patches float32 (N, D)."""
        try:
            return self._sessions["decoder"].run(
                [self._decoder_output], {self._decoder_input: np.ascontiguousarray(latents, dtype=np.float32)})[0]
        except Exception as exc:
            raise InferenceError(f"decoder graph failed on {latents.shape} latents: {exc}") from None

    # ------------------------------------------------------------------ warm-up

    def warm_up(self, sizes: Sequence[tuple[int, int]] = (),
                output_sets: Sequence[Sequence[str]] = (("rates",),)) -> None:
        """Run every graph once on a small input, and the frame graph and sampler on each (H, W) of
        ``sizes`` (first runs of a shape allocate buffers and pick kernels); the frame graph also cut down
        to each of ``output_sets`` (default: rates alone, what a request for counts and stats needs)."""
        side = max(self.min_frame_side, WARMUP_SIDE, self.patch_size)
        # Two patches per side, so the tiling path (not only the single-patch corner case) runs.
        side = self.patch_size * math.ceil(2 * side / self.patch_size)
        for height, width in ((side, side), *sizes):
            frames = np.zeros((1, max(height, self.min_frame_side), max(width, self.min_frame_side)), np.uint8)
            batch = self.run_frames(frames, FRAME_OUTPUTS)
            self.sample(batch, 0, seed=0)
            for outputs in output_sets:
                self.run_frames(frames, outputs)
            self.run_preprocess(frames)
        rates = self.run_patches(np.zeros((2, self.patch_dim), dtype=np.float32))["rates"]
        self.run_patches(np.zeros((2, self.patch_dim), dtype=np.float32), ("rates",))
        self.decode(rates)


def _sampler_probe() -> np.ndarray:
    """Rates that reach every branch of the sampler: log-uniform from 1e-7 to 250 (inversion, both sides of
    the switch at 10, PTRS), exact 0 and 10, NaN, infinities, negatives and rates above the clamp."""
    grid = np.exp(np.linspace(np.log(1e-7), np.log(250.0), 4096 - 8)).astype(np.float32)
    special = np.array([0.0, 10.0, np.nan, np.inf, -np.inf, -1.0, 2e6, 9.999999], dtype=np.float32)
    return np.concatenate([grid, special]).reshape(64, 64)
