"""``pvae-bench-oip``: Triton's ``perf_analyzer`` against ``pvae-serve``'s Open Inference Protocol.

What one run does:

1. **install** ``perf_analyzer`` into a scratch prefix (default ``runs/tools/perf_analyzer``), once:
   the binary from the tritonclient 2.51.0 wheel (the only release whose binary runs on this glibc),
   ``libb64.so.0d`` from Debian's ``libb64-0d`` (``apt-get download`` + ``dpkg -x``, no root) and
   ``libcudart.so.12`` from PyPI's ``nvidia-cuda-runtime-cu12``; every step is skipped when its file
   is present, and the binary is checked with ``--version``.
2. **input**: one 1200x256 float32 array (model space), the same for ``perf_analyzer`` (a JSON
   ``--input-data`` file, base64) and for the baseline. By default whitened natural-image patches:
   the bundle's frame graph ``preprocessed`` output of a VGA frame of photographs, tiled like the
   server tiles frames; ``--input normal`` uses a seeded standard-normal array instead.
3. **in-process ONNX Runtime**: the bundle's ``rates`` graph with the server's session options
   (``pvae.serving.engine.Engine``), sequential calls on that array for 3 measurement windows: the
   baseline.
4. **server**: the real ``pvae-serve`` CLI as a subprocess on a free loopback port (CPU,
   ``--metrics-port off --warmup-sizes ""``), ready when OIP ``ServerReady`` says so; one
   ``ModelInfer`` (FP32) checks that it computes what the baseline computes; SIGTERM at the end.
5. **perf_analyzer** against ``pvae_rates`` (``--shape patches:1200,256``): unary at concurrency 1
   and 4, and ``--streaming`` at concurrency 1, each with ``-f CSV``. Any line about an error, a
   failure or an unimplemented / unsupported RPC fails the run and is reported.
6. **transport floor** (skipped with ``--no-floor``): once pvae-serve is stopped,
   ``python -m pvae.bench.oip_floor`` (pvae.bench.oip_floor: ``pvae_rates``' interface, canned zero
   outputs, no inference) on another free port, checked to answer the same request with a response
   of the same size as pvae-serve's, and perf_analyzer ``--streaming`` at concurrency 1 against it with
   the same input and flags. That row is what gRPC Python plus perf_analyzer cost for these message
   sizes with zero compute; the streaming row's p50 minus the floor's p50 is pvae-serve's compute
   plus its own overhead, printed next to the in-process p50.

It prints req/s and p50/p90/p99 (ms) of the rows, the ratio of each to the in-process req/s, the
latency decomposition, and the targets: streaming c=1 >= 350 req/s with p99 <= 5 ms, 2x Triton 2.51 +
ONNX Runtime Python backend's 176 req/s / p99 10 ms, and >= 0.85 of in-process (judged on the OIP
streaming row, never on the floor); and per mode (every OIP row) >= 0.5 of in-process, p99 <= 2x p50,
and >= 2x Triton's req/s in that mode as measured in another run (no Triton server runs here).
Progress goes to stderr, the report to stdout; ``--json`` writes every figure. The client shares
the host's cores with the server, as the targets assume.

    pvae-bench-oip                                   # or: make bench-oip
    pvae-bench-oip --window-ms 1000 --json runs/bench-oip/figures.json --plot runs/bench-oip/oip.png
    pvae-bench-oip --install-only                    # just install perf_analyzer, print its path
    pvae-bench-oip --model runs/quick/best.bundle --input normal
    pvae-bench-oip --no-floor                        # without the transport-floor row
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import grpc
import numpy as np

from pvae.bundle import Bundle
from pvae.cli import Flag, add_config_flags, flag_values, free_port, run_cli
from pvae.errors import ConfigError, MissingDependencyError, PVAEError

__all__ = [
    "FLOOR_RUN",
    "RUNS",
    "BenchOipError",
    "OipBenchConfig",
    "PerfAnalyzer",
    "RowFigures",
    "RunSpec",
    "format_report",
    "install_perf_analyzer",
    "is_installed",
    "latency_decomposition",
    "main",
    "mode_checks",
    "natural_patches",
    "normal_patches",
    "parse_perf_csv",
    "problem_lines",
    "read_input_json",
    "run_benchmark",
    "target_checks",
    "warning_lines",
    "write_input_json",
]

PROG = "pvae-bench-oip"
#: The tritonclient release whose wheel carries a perf_analyzer binary that runs on this glibc.
TRITONCLIENT_VERSION = "2.51.0"
PERF_ANALYZER_MEMBER = f"tritonclient-{TRITONCLIENT_VERSION}.data/data/bin/perf_analyzer"
#: libb64 (Debian package -> shared object perf_analyzer links against).
LIBB64_PACKAGE = "libb64-0d"
LIBB64_SONAME = "libb64.so.0d"
#: The CUDA runtime perf_analyzer links against (it is loaded, never used, without a GPU).
CUDART_REQUIREMENT = "nvidia-cuda-runtime-cu12"
CUDART_MEMBER = "nvidia/cuda_runtime/lib/libcudart.so.12"
CUDART_SONAME = "libcudart.so.12"
DEFAULT_PREFIX = Path("runs/tools/perf_analyzer")
DEFAULT_WORK_DIR = Path("runs/bench-oip")
#: The OIP model under test (pvae.serving.oip).
MODEL_NAME = "pvae_rates"
DEFAULT_PATCHES = 1200
DEFAULT_WINDOW_MS = 3000
#: perf_analyzer reports the last 3 stable windows; the baseline runs as long.
BASELINE_WINDOWS = 3
BASELINE_WARMUP_CALLS = 10
#: Seconds to wait for pvae-serve to be ready (imports, sessions, warm-up).
SERVER_START_TIMEOUT_S = 120.0
#: The transport-floor server (pvae.bench.oip_floor), run as ``python -m`` this module.
FLOOR_MODULE = "pvae.bench.oip_floor"
#: Largest relative difference tolerated between the floor's response size and pvae-serve's (same request).
MAX_RESPONSE_SIZE_DIFFERENCE = 0.01
#: The OIP targets (streaming at concurrency 1, 1200x256 inputs, 2-core CPU, client on the same cores).
TARGET_STREAM_RPS = 350.0
TARGET_STREAM_P99_MS = 5.0
TRITON_REFERENCE_RPS = 176.0
TRITON_REFERENCE_P99_MS = 10.0
TARGET_RATIO = 0.85
#: Per-mode targets: every OIP row at least this share of the in-process req/s, with p99 <= this many p50s.
MODE_TARGET_RATIO = 0.5
MODE_TARGET_P99_OVER_P50 = 2.0
#: Triton 2.51 (Python backend running ONNX Runtime) on the same 1200x256 pvae_rates requests, req/s per mode,
#: as measured in an earlier run on this kind of host (pvae-serve did 64-66 req/s in every mode then). No
#: Triton server is installed here, so this is a reference from another run, not a same-run baseline.
TRITON_MODE_REFERENCE_RPS = {"OIP unary c=1": 65.6, "OIP unary c=4": 33.5, "OIP streaming c=1": 28.8}
TRITON_MODE_TARGET = 2.0
#: Largest relative difference tolerated between the server's FP32 rates and the in-process ones
#: (same graph, same input; only kernel choice for another batch split may differ).
MAX_RELATIVE_DIFFERENCE = 1e-3
#: Lines of perf_analyzer output that mean a request, an RPC or the measurement went wrong (fatal).
PROBLEM_PATTERN = re.compile(r"\berror\b|\bfail(ed|ure|s)?\b|unimplemented|not supported|unsupported", re.IGNORECASE)
#: Other warnings (e.g. about client overhead): reported, not fatal.
WARNING_PATTERN = re.compile(r"\bwarning\b", re.IGNORECASE)
#: perf_analyzer CSV columns this benchmark reads (latencies in microseconds).
CSV_THROUGHPUT = "Inferences/Second"
CSV_PERCENTILES = {"p50_ms": "p50 latency", "p90_ms": "p90 latency", "p95_ms": "p95 latency",
                   "p99_ms": "p99 latency"}
CSV_SERVER_COLUMNS = ("Client Send", "Network+Server Send/Recv", "Server Queue", "Server Compute Input",
                      "Server Compute Infer", "Server Compute Output", "Client Recv")

Progress = Callable[[str], None]


class BenchOipError(PVAEError):
    """Installing or running perf_analyzer, or the server under test, went wrong (one line, no traceback)."""


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class RunSpec:
    """One perf_analyzer measurement."""

    name: str
    concurrency: int
    streaming: bool
    floor: bool = False
    """Against the transport-floor server (pvae.bench.oip_floor) instead of pvae-serve."""

    @property
    def slug(self) -> str:
        """File-name form of ``name``."""
        return f"{'floor_' if self.floor else ''}{'stream' if self.streaming else 'unary'}_c{self.concurrency}"


#: The three measurements the targets are set for.
RUNS = (RunSpec("OIP unary c=1", 1, False), RunSpec("OIP unary c=4", 4, False),
        RunSpec("OIP streaming c=1", 1, True))
#: The transport floor: the streaming row's flags against a server that computes nothing (not a target row).
FLOOR_RUN = RunSpec("transport floor (no compute), streaming c=1", 1, True, floor=True)


@dataclass(frozen=True)
class OipBenchConfig:
    """What to benchmark (the flags are made from the fields, the docstrings are their help)."""

    model: str | None = None
    """Bundle directory or checkpoint for pvae-serve and the baseline; default: the bundled model."""
    prefix: Path = DEFAULT_PREFIX
    """Where perf_analyzer is (or gets) installed."""
    work_dir: Path = DEFAULT_WORK_DIR
    """Where the input JSON, perf_analyzer's CSV and logs, and the server log are written."""
    patches: int = DEFAULT_PATCHES
    """Rows of the input (patches per request)."""
    window_ms: int = DEFAULT_WINDOW_MS
    """perf_analyzer --measurement-interval; the baseline runs for 3 of them."""
    max_trials: int = 10
    """perf_analyzer --max-trials (windows before it gives up on a stable measurement)."""
    input: Literal["natural", "normal"] = "natural"
    """``natural`` (whitened natural-image patches) or ``normal`` (seeded standard normal)."""
    seed: int = 0
    """Seed of the ``normal`` input."""
    server_args: tuple[str, ...] = ()
    """More pvae-serve flags (``--server-arg``, repeatable)."""
    floor: bool = True
    """Also measure the transport floor (perf_analyzer against python -m pvae.bench.oip_floor); ``--no-floor``
    turns it off."""
    plot: Path | None = None
    """Also write a PNG here: req/s of every row, and where the streaming c=1 latency goes."""

    def __post_init__(self) -> None:
        if self.patches < 1 or self.window_ms < 100 or self.max_trials < 3:
            raise ConfigError("--patches must be >= 1, --window-ms >= 100 and --max-trials >= 3")
        if self.input not in ("natural", "normal"):
            raise ConfigError(f"--input: natural or normal, got {self.input!r}")


# ----------------------------------------------------------------------------- installer


@dataclass(frozen=True)
class PerfAnalyzer:
    """An installed perf_analyzer: the binary, the library directory it needs, its version line."""

    binary: Path
    lib_dir: Path
    version: str

    def env(self) -> dict[str, str]:
        """The environment to run it with (``LD_LIBRARY_PATH`` led by ``lib_dir``)."""
        old = os.environ.get("LD_LIBRARY_PATH")
        return {**os.environ, "LD_LIBRARY_PATH": f"{self.lib_dir}{os.pathsep + old if old else ''}"}


def _paths(prefix: Path) -> tuple[Path, Path, Path, Path]:
    """(binary, lib dir, libb64, libcudart) under ``prefix``."""
    lib = prefix / "lib"
    return prefix / "bin" / "perf_analyzer", lib, lib / LIBB64_SONAME, lib / CUDART_SONAME


def is_installed(prefix: Path = DEFAULT_PREFIX) -> bool:
    """Whether the binary and both libraries are in ``prefix`` (not whether they run)."""
    return all(path.is_file() for path in (_paths(prefix)[0], *_paths(prefix)[2:]))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _run_step(command: Sequence[str], what: str, cwd: Path) -> None:
    """Run an install command; BenchOipError naming ``what`` if it cannot run or fails."""
    try:
        done = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    except FileNotFoundError:
        raise BenchOipError(f"cannot get {what}: {command[0]!r} is not installed on this machine") from None
    except subprocess.TimeoutExpired:
        raise BenchOipError(f"cannot get {what}: `{' '.join(command)}` took over 10 minutes") from None
    if done.returncode != 0:
        raise BenchOipError(f"cannot get {what}: `{' '.join(command)}` failed (exit {done.returncode}): "
                            f"{_last_line(done.stderr or done.stdout)}")


def _copy_atomic(source: IO[bytes], target: Path, mode: int) -> None:
    """Copy a binary stream to ``target`` through a temporary file, so a half copy is never 'present'."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            shutil.copyfileobj(source, out)
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _find(directory: Path, pattern: str) -> Path | None:
    matches = sorted(directory.glob(pattern))
    return matches[-1] if matches else None


def _pip_download(requirement: str, pattern: str, download_dir: Path) -> Path:
    """A wheel of ``requirement`` in ``download_dir``: the one there, else ``pip download --no-deps``."""
    wheel = _find(download_dir, pattern)
    if wheel is None:
        _run_step([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                   "-d", str(download_dir), requirement], f"{requirement} (pip download)", download_dir)
        wheel = _find(download_dir, pattern)
        if wheel is None:
            raise BenchOipError(f"cannot get {requirement}: pip download left no {pattern} in {download_dir}")
    return wheel


def _extract_member(wheel: Path, member: str, target: Path, mode: int) -> None:
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
            _copy_atomic(source, target, mode)
    except KeyError:
        raise BenchOipError(f"{wheel.name} has no {member}") from None
    except zipfile.BadZipFile:
        raise BenchOipError(f"{wheel} is not a valid wheel (delete it and rerun)") from None


def _perf_analyzer_version(binary: Path, lib_dir: Path) -> str:
    """The ``--version`` line of ``binary``; BenchOipError (naming missing libraries) if it cannot run."""
    env = PerfAnalyzer(binary, lib_dir, "").env()
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, env=env, timeout=60,
                              check=False)
    except OSError as exc:
        raise BenchOipError(f"{binary} does not run: {exc}") from None
    except subprocess.TimeoutExpired:
        raise BenchOipError(f"{binary} --version did not finish in 60 s") from None
    text = (done.stdout + done.stderr).strip()
    if done.returncode != 0 or "Perf Analyzer Version" not in text:
        missing = re.findall(r"error while loading shared libraries: (\S+?):", text)
        detail = f"missing shared library {', '.join(missing)}" if missing else _last_line(text)
        raise BenchOipError(f"{binary} --version failed (exit {done.returncode}): {detail}")
    return _last_line(text)


def install_perf_analyzer(prefix: Path = DEFAULT_PREFIX, progress: Progress | None = None) -> PerfAnalyzer:
    """Install perf_analyzer and its two libraries into ``prefix`` (skipping what is there); check it runs.

    Layout: ``prefix/bin/perf_analyzer``, ``prefix/lib/{libb64.so.0d,libcudart.so.12}``, downloads in
    ``prefix/dl``.
    """
    say = progress or (lambda _line: None)
    prefix = prefix.resolve()  # the download steps run inside prefix/dl
    binary, lib_dir, libb64, libcudart = _paths(prefix)
    download_dir = prefix / "dl"
    try:
        download_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchOipError(f"cannot create {download_dir}: {exc}") from None
    if not binary.is_file():
        say(f"installing perf_analyzer from tritonclient=={TRITONCLIENT_VERSION} into {prefix}")
        wheel = _pip_download(f"tritonclient=={TRITONCLIENT_VERSION}", f"tritonclient-{TRITONCLIENT_VERSION}-*.whl",
                              download_dir)
        _extract_member(wheel, PERF_ANALYZER_MEMBER, binary, 0o755)
    if not libb64.is_file():
        say(f"installing {LIBB64_SONAME} from Debian's {LIBB64_PACKAGE}")
        deb = _find(download_dir, f"{LIBB64_PACKAGE}_*.deb")
        if deb is None:
            _run_step(["apt-get", "download", LIBB64_PACKAGE], f"{LIBB64_PACKAGE} (apt-get download)", download_dir)
            deb = _find(download_dir, f"{LIBB64_PACKAGE}_*.deb")
            if deb is None:
                raise BenchOipError(f"cannot get {LIBB64_PACKAGE}: apt-get download left no .deb in {download_dir}")
        unpacked = download_dir / f"{LIBB64_PACKAGE}.extracted"
        _run_step(["dpkg", "-x", str(deb), str(unpacked)], f"{LIBB64_PACKAGE} (dpkg -x)", download_dir)
        found = _find(unpacked, f"**/{LIBB64_SONAME}")
        if found is None:
            raise BenchOipError(f"{deb.name} has no {LIBB64_SONAME}")
        with open(found, "rb") as source:  # follows a symlink to the real file
            _copy_atomic(source, libb64, 0o644)
    if not libcudart.is_file():
        say(f"installing {CUDART_SONAME} from PyPI's {CUDART_REQUIREMENT}")
        wheel = _pip_download(CUDART_REQUIREMENT, "nvidia_cuda_runtime_cu12-*.whl", download_dir)
        _extract_member(wheel, CUDART_MEMBER, libcudart, 0o644)
    version = _perf_analyzer_version(binary, lib_dir)
    if TRITONCLIENT_VERSION not in version:
        raise BenchOipError(f"{binary} is not perf_analyzer {TRITONCLIENT_VERSION} ({version}); delete {prefix} "
                            "and rerun")
    return PerfAnalyzer(binary, lib_dir, version)


# ----------------------------------------------------------------------------- input


def normal_patches(count: int, dim: int, seed: int = 0) -> np.ndarray:
    """A seeded standard-normal float32 (count, dim) array (roughly the scale of whitened patches)."""
    return np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("the benchmark needs ONNX Runtime: pip install 'pvae[cpu]'") from None
    return onnxruntime


def _session_options(ort: Any) -> Any:
    """The server's CPU session options (``pvae.serving.engine.Engine`` with its default threads)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 0  # pvae-serve --intra-op-threads default: one per core
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _session(bundle: Bundle, graph: str) -> Any:
    ort = _ort()
    return ort.InferenceSession(str(bundle.graph_path(graph)), _session_options(ort),
                                providers=["CPUExecutionProvider"])


def natural_patches(bundle: Bundle, count: int) -> np.ndarray:
    """``count`` whitened natural-image patches float32 (count, P*P), as the server makes them from frames.

    VGA frames of a camera panning over photographs (``pvae.bench.serve.synthetic_frames``: scikit-
    image's when installed, else 1/f noise), converted to gray, run through the bundle's frame graph
    (``preprocessed``: the model-space frame) and tiled into patches row-major, like the frame graph.
    """
    import cv2

    from pvae.bench.serve import VGA, synthetic_frames

    side = bundle.patch_size
    height, width = VGA[0] - VGA[0] % side, VGA[1] - VGA[1] % side
    rows, cols = height // side, width // side
    frames = synthetic_frames(math.ceil(count / (rows * cols)), height, width)
    gray = np.stack([cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) for frame in frames])
    spec = bundle.graphs["frame"]
    preprocessed = _session(bundle, "frame").run(["preprocessed"], {spec.inputs[0].name: gray})[0]
    tiles = preprocessed.reshape(len(frames), rows, side, cols, side).transpose(0, 1, 3, 2, 4)
    return np.ascontiguousarray(tiles.reshape(-1, side * side)[:count], dtype=np.float32)


def _natural_source() -> str:
    try:
        import skimage  # noqa: F401
    except ImportError:
        return "1/f-noise frames (scikit-image is not installed)"
    return "scikit-image photographs"


def write_input_json(path: Path, name: str, array: np.ndarray) -> None:
    """perf_analyzer ``--input-data`` JSON: one request whose input ``name`` is ``array`` (base64, LE, C order)."""
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    entry = {name: {"content": {"b64": base64.b64encode(data.tobytes()).decode("ascii")},
                    "shape": [int(n) for n in data.shape]}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": [entry]}))


def read_input_json(path: Path, name: str, dtype: Any = np.float32) -> np.ndarray:
    """The array ``write_input_json`` wrote for ``name`` (first request)."""
    entry = json.loads(path.read_text())["data"][0][name]
    raw = base64.b64decode(entry["content"]["b64"])
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(entry["shape"])


# ----------------------------------------------------------------------------- figures


@dataclass
class RowFigures:
    """Throughput and client-side latency of one row of the report."""

    name: str
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int | None = None
    """Requests timed (in-process only; perf_analyzer's CSV has no count)."""
    details: dict[str, float] = field(default_factory=dict)
    """perf_analyzer's CSV row (server-side breakdown in microseconds), empty for in-process."""
    warnings: list[str] = field(default_factory=list)
    """perf_analyzer's non-fatal warning lines (e.g. about client overhead)."""


def parse_perf_csv(text: str) -> list[dict[str, float]]:
    """The rows of perf_analyzer's ``-f`` CSV (header ``Concurrency,Inferences/Second,...``), as floats.

    Stops at the first blank line (``--collect-metrics`` appends a second table after one).
    """
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if CSV_THROUGHPUT in line.split(",")), None)
    if start is None:
        raise BenchOipError(f"perf_analyzer CSV has no {CSV_THROUGHPUT!r} header")
    body = []
    for line in lines[start:]:
        if not line.strip():
            break
        body.append(line)
    rows = []
    for record in csv.DictReader(io.StringIO("\n".join(body))):
        try:
            rows.append({key.strip(): float(value) for key, value in record.items() if key and value not in (None, "")})
        except ValueError as exc:
            raise BenchOipError(f"perf_analyzer CSV has a non-numeric value: {exc}") from None
    missing = [c for c in (CSV_THROUGHPUT, *CSV_PERCENTILES.values()) if rows and c not in rows[0]]
    if not rows or missing:
        raise BenchOipError(f"perf_analyzer CSV has no data row{' with ' + ', '.join(missing) if missing else ''}")
    return rows


def row_from_csv(name: str, text: str, concurrency: int) -> RowFigures:
    """The report row for ``concurrency`` in a perf_analyzer CSV (latencies usec -> ms)."""
    rows = parse_perf_csv(text)
    row = next((r for r in rows if int(r.get("Concurrency", concurrency)) == concurrency), None)
    if row is None:
        raise BenchOipError(f"perf_analyzer CSV has no row for concurrency {concurrency}")
    return RowFigures(name, row[CSV_THROUGHPUT], row["p50 latency"] / 1e3, row["p90 latency"] / 1e3,
                      row["p99 latency"] / 1e3, details=row)


def problem_lines(output: str) -> list[str]:
    """Lines of perf_analyzer's output about errors, failures or unimplemented / unsupported RPCs."""
    return [line.strip() for line in output.splitlines() if PROBLEM_PATTERN.search(line)]


def warning_lines(output: str) -> list[str]:
    """Other warning lines of perf_analyzer's output (not fatal; reported)."""
    return [line.strip() for line in output.splitlines()
            if WARNING_PATTERN.search(line) and not PROBLEM_PATTERN.search(line)]


# ----------------------------------------------------------------------------- in-process baseline


def in_process_baseline(bundle: Bundle, patches: np.ndarray, seconds: float) -> tuple[RowFigures, np.ndarray]:
    """Sequential calls of the bundle's rates graph on ``patches`` for ``seconds``: the baseline row, and
    the rates it computed (float32) to check the server against."""
    spec = bundle.graphs["rates"]
    session = _session(bundle, "rates")
    feed = {spec.inputs[0].name: patches}
    outputs = [t.name for t in spec.outputs]
    for _ in range(BASELINE_WARMUP_CALLS):
        values = session.run(outputs, feed)
    rates = values[outputs.index("rates")] if "rates" in outputs else values[-1]
    latencies = []
    start = time.perf_counter()
    end = start + seconds
    now = start
    while now < end:
        begin = time.perf_counter()
        session.run(outputs, feed)
        now = time.perf_counter()
        latencies.append(now - begin)
    elapsed = now - start
    ms = np.asarray(latencies) * 1e3
    row = RowFigures("in-process ONNX Runtime", len(latencies) / elapsed, float(np.percentile(ms, 50)),
                     float(np.percentile(ms, 90)), float(np.percentile(ms, 99)), requests=len(latencies))
    return row, rates


# ----------------------------------------------------------------------------- server


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(empty log)"


def _wait_ready(address: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float,
                what: str = "pvae-serve") -> None:
    """Poll OIP ServerReady until true; BenchOipError (naming ``what``) if the process exits or the deadline passes."""
    from pvae.inference import grpc_service_pb2 as oip
    from pvae.inference import grpc_service_pb2_grpc as oip_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        while True:
            code = process.poll()
            if code is not None:
                raise BenchOipError(f"{what} exited with code {code} before it was ready: {_tail(log)} "
                                    f"(log: {log})")
            try:
                if stub.ServerReady(oip.ServerReadyRequest(), timeout=2.0).ready:
                    return
            except grpc.RpcError:
                pass  # not listening yet, or still warming up
            if time.monotonic() > deadline:
                raise BenchOipError(f"{what} was not ready after {timeout_s:.0f} s (log: {log})")
            time.sleep(0.2)


@contextlib.contextmanager
def _server_process(command: list[str], port: int, log: Path, what: str,
                    progress: Progress | None) -> Iterator[str]:
    """Run ``command`` (a server listening on loopback ``port``) until OIP-ready; yield ``host:port``; SIGTERM it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    address = f"127.0.0.1:{port}"
    try:
        if progress is not None:
            progress(f"starting {what} on {address} (pid {process.pid}, log {log})")
        _wait_ready(address, process, log, SERVER_START_TIMEOUT_S, what)
        yield address
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def serve(config: OipBenchConfig, progress: Progress | None = None) -> Iterator[str]:
    """Run the real ``pvae-serve`` CLI on a free loopback port until ready; yield ``host:port``; SIGTERM it."""
    port = free_port()
    command = [sys.executable, "-m", "pvae.serving", "--host", "127.0.0.1", "--port", str(port),
               "--metrics-port", "off", "--warmup-sizes", "", "--device", "cpu", *config.server_args]
    if config.model is not None:
        command += ["--model", config.model]
    with _server_process(command, port, config.work_dir / "server.log", "pvae-serve", progress) as address:
        yield address


def floor_command(config: OipBenchConfig, port: int) -> list[str]:
    """The command line of the transport-floor server (pvae.bench.oip_floor) for ``config``'s model."""
    command = [sys.executable, "-m", FLOOR_MODULE, "--host", "127.0.0.1", "--port", str(port)]
    return [*command, "--model", config.model] if config.model is not None else command


@contextlib.contextmanager
def serve_floor(config: OipBenchConfig, progress: Progress | None = None) -> Iterator[str]:
    """Run the transport-floor server on a free loopback port until ready; yield ``host:port``; SIGTERM it."""
    port = free_port()
    with _server_process(floor_command(config, port), port, config.work_dir / "floor.log",
                         "the transport floor", progress) as address:
        yield address


def _oip_input(address: str, count: int, dim: int) -> str:
    """The name of ``pvae_rates``' one input, after checking its datatype and shape with ModelMetadata."""
    from pvae.inference import grpc_service_pb2 as oip
    from pvae.inference import grpc_service_pb2_grpc as oip_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            meta = oip_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
                oip.ModelMetadataRequest(name=MODEL_NAME), timeout=10.0)
        except grpc.RpcError as exc:
            raise BenchOipError(f"ModelMetadata({MODEL_NAME}) failed: {exc.code().name}: {exc.details()}") from None
    if len(meta.inputs) != 1:
        raise BenchOipError(f"{MODEL_NAME} has {len(meta.inputs)} inputs; this benchmark feeds one")
    tensor = meta.inputs[0]
    shape = list(tensor.shape)
    if tensor.datatype != "FP32" or len(shape) != 2 or shape[1] not in (-1, dim):
        raise BenchOipError(f"{MODEL_NAME} input {tensor.name} is {tensor.datatype} {shape}; expected FP32 [-1, {dim}]")
    return str(tensor.name)


def _patches_request(name: str, patches: np.ndarray) -> Any:
    """A ModelInferRequest of ``pvae_rates`` carrying ``patches`` as raw FP32 input ``name``."""
    from pvae.inference import grpc_service_pb2 as oip

    request = oip.ModelInferRequest(model_name=MODEL_NAME)
    request.inputs.add(name=name, datatype="FP32", shape=list(patches.shape))
    request.raw_input_contents.append(np.ascontiguousarray(patches, dtype="<f4").tobytes())
    return request


def _model_infer(address: str, request: Any) -> Any:
    """One ModelInfer at ``address``; BenchOipError naming the status if it fails."""
    from pvae.inference import grpc_service_pb2_grpc as oip_grpc

    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    with grpc.insecure_channel(address, options=options) as channel:
        try:
            return oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30.0)
        except grpc.RpcError as exc:
            raise BenchOipError(f"ModelInfer({MODEL_NAME}) at {address} failed: {exc.code().name}: "
                                f"{exc.details()}") from None


def _check_server_rates(address: str, name: str, patches: np.ndarray, expected: np.ndarray) -> float:
    """One FP32 ModelInfer of ``patches``; the largest |server - in-process| / max |in-process| of the rates."""
    request = _patches_request(name, patches)
    request.outputs.add(name="rates")
    request.parameters["float_format"].string_param = "fp32"
    response = _model_infer(address, request)
    rates = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(expected.shape)
    scale = float(np.max(np.abs(expected))) or 1.0
    return float(np.max(np.abs(rates.astype(np.float64) - expected))) / scale


def _response_bytes(address: str, name: str, patches: np.ndarray) -> int:
    """Wire size of the ModelInferResponse to ``patches`` as perf_analyzer sends them (no outputs named: all,
    default FP16), after checking that every output is [rows, K] with as many bytes as its datatype needs."""
    request = _patches_request(name, patches)
    request.id = "bench-oip-size"
    response = _model_infer(address, request)
    itemsize = {"FP16": 2, "FP32": 4}
    shapes = [(t.name, t.datatype, list(t.shape)) for t in response.outputs]
    sizes = [len(raw) for raw in response.raw_output_contents]
    expected = [math.prod(shape) * itemsize.get(datatype, 0) for _, datatype, shape in shapes]
    if (response.id != request.id or not shapes or sizes != expected
            or any(shape[0] != patches.shape[0] for _, _, shape in shapes)):
        raise BenchOipError(f"{address} answered {MODEL_NAME} with id {response.id!r}, outputs {shapes} of "
                            f"{sizes} bytes; expected id {request.id!r} and [{patches.shape[0]}, K] outputs")
    return int(response.ByteSize())


# ----------------------------------------------------------------------------- perf_analyzer


def perf_analyzer_command(analyzer: PerfAnalyzer, address: str, spec: RunSpec, input_name: str,
                          shape: tuple[int, int], input_json: Path, csv_path: Path, config: OipBenchConfig
                          ) -> list[str]:
    """The perf_analyzer command line of one measurement."""
    command = [str(analyzer.binary), "-m", MODEL_NAME, "-u", address, "-i", "grpc",
               "--shape", f"{input_name}:{shape[0]},{shape[1]}", "--concurrency-range", str(spec.concurrency),
               "--measurement-interval", str(config.window_ms), "--max-trials", str(config.max_trials),
               "--input-data", str(input_json), "-f", str(csv_path)]
    return [*command, "--streaming"] if spec.streaming else command


def run_perf_analyzer(analyzer: PerfAnalyzer, address: str, spec: RunSpec, input_name: str,
                      shape: tuple[int, int], input_json: Path, config: OipBenchConfig) -> RowFigures:
    """One measurement; BenchOipError (naming the offending lines) on a non-zero exit or any problem line."""
    csv_path = config.work_dir / f"perf_{spec.slug}.csv"
    log = config.work_dir / f"perf_{spec.slug}.log"
    csv_path.unlink(missing_ok=True)
    command = perf_analyzer_command(analyzer, address, spec, input_name, shape, input_json, csv_path, config)
    timeout = config.max_trials * config.window_ms / 1e3 * 2 + 120
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=analyzer.env(), timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise BenchOipError(f"perf_analyzer ({spec.name}) did not finish in {timeout:.0f} s") from None
    output = done.stdout + done.stderr
    log.write_text(f"$ {' '.join(command)}\n{output}")
    problems = problem_lines(output)
    if done.returncode != 0 or problems:
        shown = "; ".join(problems[:3]) if problems else _last_line(output)
        raise BenchOipError(f"perf_analyzer ({spec.name}) exit {done.returncode}: {shown} (full output: {log})")
    if not csv_path.is_file():
        raise BenchOipError(f"perf_analyzer ({spec.name}) wrote no CSV (full output: {log})")
    row = row_from_csv(spec.name, csv_path.read_text(), spec.concurrency)
    row.warnings = warning_lines(output)
    return row


# ----------------------------------------------------------------------------- benchmark and report


def run_benchmark(config: OipBenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Install, build the input, run the baseline, the three perf_analyzer runs against pvae-serve and (unless
    ``config.floor`` is off) the transport floor's; return the figures."""
    from pvae.serving.source import resolve_bundle

    say = progress or (lambda _line: None)
    analyzer = install_perf_analyzer(config.prefix, say)
    say(f"{analyzer.version} at {analyzer.binary}")
    bundle = resolve_bundle(config.model)
    rates_spec = bundle.graphs["rates"]
    last = rates_spec.inputs[0].shape[-1]
    dim = int(last) if isinstance(last, int) else bundle.patch_size**2
    if config.input == "natural":
        patches = natural_patches(bundle, config.patches)
        description = (f"whitened natural-image patches (frame graph 'preprocessed' of VGA frames of "
                       f"{_natural_source()}, tiled {bundle.patch_size}x{bundle.patch_size})")
    else:
        patches = normal_patches(config.patches, dim, config.seed)
        description = f"seeded standard normal (numpy default_rng({config.seed}))"
    if patches.shape != (config.patches, dim) or not np.isfinite(patches).all():
        raise BenchOipError(f"input is {patches.shape} (finite: {bool(np.isfinite(patches).all())}); "
                            f"expected finite ({config.patches}, {dim})")
    say(f"input: {config.patches}x{dim} float32, {description}; mean {patches.mean():.3f}, std {patches.std():.3f}")
    load_before = os.getloadavg()[0]
    baseline_s = BASELINE_WINDOWS * config.window_ms / 1e3
    say(f"in-process ONNX Runtime on the rates graph for {baseline_s:.0f} s")
    baseline, expected_rates = in_process_baseline(bundle, patches, baseline_s)
    say(f"  {baseline.requests_per_s:.1f} req/s, p50 {baseline.p50_ms:.2f} ms, p99 {baseline.p99_ms:.2f} ms")
    rows: list[RowFigures] = []
    commands: dict[str, list[str]] = {}
    input_json = config.work_dir / "input.json"
    shape = (config.patches, dim)

    def measure(spec: RunSpec, address: str, input_name: str) -> RowFigures:
        say(f"perf_analyzer {spec.name}: windows of {config.window_ms} ms until stable "
            f"(at most {config.max_trials})")
        row = run_perf_analyzer(analyzer, address, spec, input_name, shape, input_json, config)
        commands[spec.name] = perf_analyzer_command(analyzer, address, spec, input_name, shape, input_json,
                                                    config.work_dir / f"perf_{spec.slug}.csv", config)
        say(f"  {row.requests_per_s:.1f} req/s, p50 {row.p50_ms:.2f} ms, p99 {row.p99_ms:.2f} ms")
        return row

    with serve(config, say) as address:
        input_name = _oip_input(address, config.patches, dim)
        difference = _check_server_rates(address, input_name, patches, expected_rates)
        say(f"server rates (FP32) vs in-process: max relative difference {difference:.2e}")
        if difference > MAX_RELATIVE_DIFFERENCE:
            raise BenchOipError(f"pvae-serve's {MODEL_NAME} rates differ from the in-process rates graph by "
                                f"{difference:.2e} (relative; limit {MAX_RELATIVE_DIFFERENCE:.0e})")
        served_bytes = _response_bytes(address, input_name, patches)
        write_input_json(input_json, input_name, patches)
        rows += [measure(spec, address, input_name) for spec in RUNS]
    floor: RowFigures | None = None
    floor_bytes: int | None = None
    floor_server: list[str] | None = None
    floor_error: str | None = None
    if config.floor:  # after pvae-serve has stopped: the floor gets the cores to itself, as the server did
        with serve_floor(config, say) as address:
            floor_input = _oip_input(address, config.patches, dim)
            if floor_input != input_name:
                raise BenchOipError(f"the transport floor's {MODEL_NAME} input is {floor_input!r}, pvae-serve's "
                                    f"{input_name!r}")
            floor_bytes = _response_bytes(address, input_name, patches)
            say(f"transport floor: response of {floor_bytes} bytes, pvae-serve's {served_bytes} bytes")
            if abs(floor_bytes - served_bytes) > MAX_RESPONSE_SIZE_DIFFERENCE * served_bytes:
                raise BenchOipError(f"the transport floor answers with {floor_bytes} bytes, pvae-serve with "
                                    f"{served_bytes}: the floor would not measure the same messages")
            try:  # the floor only explains the rows above: an unstable floor must not throw them away
                floor = measure(FLOOR_RUN, address, input_name)
            except BenchOipError as exc:
                floor_error = str(exc)
                say(f"transport floor not measured ({floor_error}); the OIP rows stand without it")
            floor_server = floor_command(config, int(address.rsplit(":", 1)[1]))
    load_after = os.getloadavg()[0]
    oip_rows = [asdict(row) for row in rows]
    floor_row = asdict(floor) if floor is not None else None
    return {
        "config": {**{k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
                   "model_resolved": str(bundle.root), "n_latents": bundle.n_latents, "cpu_count": os.cpu_count(),
                   "load_average_1m_before": load_before, "load_average_1m_after": load_after},
        "perf_analyzer": {"version": analyzer.version, "binary": str(analyzer.binary), "commands": commands},
        "input": {"shape": [config.patches, dim], "dtype": "float32", "kind": config.input,
                  "description": description, "mean": float(patches.mean()), "std": float(patches.std())},
        "server_check_max_relative_difference": difference,
        "response_bytes": {"pvae_serve": served_bytes, "floor": floor_bytes},
        "in_process": asdict(baseline),
        "oip": oip_rows,
        "floor": floor_row,
        "floor_error": floor_error,
        "floor_server_command": floor_server,
        "latency_decomposition": latency_decomposition(asdict(baseline), oip_rows, floor_row),
        "targets": [asdict(check) for check in target_checks(asdict(baseline), oip_rows)],
        "mode_targets": [asdict(check) for check in mode_checks(asdict(baseline), oip_rows)],
    }


@dataclass(frozen=True)
class TargetCheck:
    """One target line: what, whether it is met, and the figure behind it."""

    label: str
    met: bool
    figure: str
    """The figure as printed."""
    value: float
    """The figure judged (req/s, ms or a ratio)."""


def target_checks(baseline: dict[str, Any], oip_rows: Sequence[dict[str, Any]]) -> list[TargetCheck]:
    """The targets, judged on the streaming c=1 row (and the in-process row for the ratio)."""
    stream = next((r for r in oip_rows if r["name"] == RUNS[2].name), None)
    if stream is None:
        return []
    rps, p99 = float(stream["requests_per_s"]), float(stream["p99_ms"])
    ratio = rps / float(baseline["requests_per_s"])
    return [
        TargetCheck(f"streaming c=1 >= {TARGET_STREAM_RPS:.0f} req/s", rps >= TARGET_STREAM_RPS, f"{rps:.1f} req/s",
                    rps),
        TargetCheck(f"streaming c=1 p99 <= {TARGET_STREAM_P99_MS:g} ms", p99 <= TARGET_STREAM_P99_MS, f"{p99:.2f} ms",
                    p99),
        TargetCheck(f"streaming c=1 at least Triton 2.51 + ORT Python backend ({TRITON_REFERENCE_RPS:.0f} req/s, "
                    f"p99 {TRITON_REFERENCE_P99_MS:g} ms)",
                    rps >= TRITON_REFERENCE_RPS and p99 <= TRITON_REFERENCE_P99_MS,
                    f"{rps / TRITON_REFERENCE_RPS:.2f}x its req/s, p99 {p99:.2f} ms", rps / TRITON_REFERENCE_RPS),
        TargetCheck(f"streaming c=1 / in-process req/s >= {TARGET_RATIO:.2f}", ratio >= TARGET_RATIO, f"{ratio:.2f}",
                    ratio),
    ]


def mode_checks(baseline: dict[str, Any], oip_rows: Sequence[dict[str, Any]]) -> list[TargetCheck]:
    """Per OIP row: req/s >= MODE_TARGET_RATIO of in-process, p99 <= MODE_TARGET_P99_OVER_P50 x p50, and
    >= TRITON_MODE_TARGET x Triton's req/s in that mode (a reference from another run)."""
    base = float(baseline["requests_per_s"])
    checks: list[TargetCheck] = []
    for row in oip_rows:
        name, rps = row["name"], float(row["requests_per_s"])
        ratio = rps / base
        checks.append(TargetCheck(f"{name} / in-process req/s >= {MODE_TARGET_RATIO:g}", ratio >= MODE_TARGET_RATIO,
                                  f"{ratio:.2f}", ratio))
        spread = float(row["p99_ms"]) / max(float(row["p50_ms"]), 1e-9)
        checks.append(TargetCheck(f"{name} p99 <= {MODE_TARGET_P99_OVER_P50:g} x p50",
                                  spread <= MODE_TARGET_P99_OVER_P50, f"{spread:.2f}x", spread))
        triton = TRITON_MODE_REFERENCE_RPS.get(name)
        if triton is not None:
            times = rps / triton
            checks.append(TargetCheck(f"{name} >= {TRITON_MODE_TARGET:g}x Triton's {triton:g} req/s (another run)",
                                      times >= TRITON_MODE_TARGET, f"{times:.2f}x", times))
    return checks


def latency_decomposition(baseline: dict[str, Any], oip_rows: Sequence[dict[str, Any]],
                          floor: dict[str, Any] | None) -> dict[str, float] | None:
    """The streaming c=1 p50 split into the transport floor's p50 and the rest (server compute + overhead),
    next to the in-process p50; None without a floor row or a streaming row. Medians do not add exactly: the
    split is an estimate."""
    stream = next((r for r in oip_rows if r["name"] == RUNS[2].name), None)
    if stream is None or floor is None:
        return None
    rest = float(stream["p50_ms"]) - float(floor["p50_ms"])
    return {"streaming_p50_ms": float(stream["p50_ms"]), "floor_p50_ms": float(floor["p50_ms"]),
            "compute_and_overhead_ms": rest, "in_process_p50_ms": float(baseline["p50_ms"]),
            "beyond_in_process_ms": rest - float(baseline["p50_ms"])}


def format_report(figures: dict[str, Any]) -> str:
    """The table of the rows (in-process, OIP, transport floor), the server-side breakdown, the streaming
    latency decomposition and the target lines."""
    base = figures["in_process"]
    floor = figures.get("floor")
    measured = [*figures["oip"], *([floor] if floor else [])]
    rows = [base, *measured]
    width = max(24, *(len(row["name"]) for row in rows))
    cfg = figures["config"]
    inp = figures["input"]
    lines = [f"{MODEL_NAME}: {inp['shape'][0]}x{inp['shape'][1]} float32 per request, {inp['description']}; "
             f"{cfg['cpu_count']} CPUs, client and server on the same cores; {figures['perf_analyzer']['version']}, "
             f"window {cfg['window_ms']} ms",
             "",
             f"{'run':<{width}} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'vs in-process':>14}"]
    for row in rows:
        ratio = row["requests_per_s"] / base["requests_per_s"]
        lines.append(f"{row['name']:<{width}} {row['requests_per_s']:>8.1f} {row['p50_ms']:>8.2f} "
                     f"{row['p90_ms']:>8.2f} {row['p99_ms']:>8.2f} {ratio:>14.2f}")
    lines += ["", "server side (perf_analyzer, mean us): queue / compute input / infer / output; network+server"]
    side = max(22, *(len(row["name"]) for row in measured))
    for row in measured:
        d = row["details"]
        parts = " / ".join(f"{d.get(c, float('nan')):.0f}" for c in CSV_SERVER_COLUMNS[2:6])
        lines.append(f"  {row['name']:<{side}} {parts}; {d.get('Network+Server Send/Recv', float('nan')):.0f}")
    split = latency_decomposition(base, figures["oip"], floor)
    if split is not None:
        sizes = figures.get("response_bytes") or {}
        lines += ["", "streaming c=1 latency (p50), decomposed:",
                  f"  {split['streaming_p50_ms']:>8.2f} ms  {RUNS[2].name}",
                  f"- {split['floor_p50_ms']:>8.2f} ms  transport floor (gRPC Python + perf_analyzer for these message "
                  "sizes, zero compute)",
                  f"= {split['compute_and_overhead_ms']:>8.2f} ms  server compute + overhead, vs in-process ONNX "
                  f"Runtime p50 {split['in_process_p50_ms']:.2f} ms ({split['beyond_in_process_ms']:+.2f} ms)"]
        if sizes.get("floor") is not None:
            lines.append(f"(transport floor: python -m {FLOOR_MODULE}, pvae_rates' interface with canned zero "
                         f"outputs; response {sizes['floor']} bytes, pvae-serve's {sizes['pvae_serve']})")
    if figures.get("floor_error"):
        lines += ["", f"transport floor: not measured ({figures['floor_error']})"]
    warned = [(row["name"], line) for row in measured for line in row.get("warnings", [])]
    if warned:
        lines += ["", "perf_analyzer warnings (not fatal):", *(f"  {name}: {line}" for name, line in warned)]
    lines += ["", "targets:"]
    for check in [*figures["targets"], *figures.get("mode_targets", [])]:
        lines.append(f"  {check['label']}: {'met' if check['met'] else 'MISSED'} ({check['figure']})")
    lines.append(f"(server FP32 rates vs in-process: max relative difference "
                 f"{figures['server_check_max_relative_difference']:.1e}; 1-min load average "
                 f"{cfg['load_average_1m_before']:.2f} before, {cfg['load_average_1m_after']:.2f} after; "
                 f"model {cfg['model_resolved']}, K={cfg['n_latents']})")
    return "\n".join(lines)


def write_plot(figures: dict[str, Any], path: Path) -> Path:
    """A PNG of the run: req/s of every row (left), and the streaming c=1 mean latency split into the
    transport floor and perf_analyzer's server-side phases (right)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on servers and CI
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError("--plot needs matplotlib: pip install 'pvae[train]' (or matplotlib)") from exc
    rows = [figures["in_process"], *figures["oip"], *([figures["floor"]] if figures.get("floor") else [])]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    names = [row["name"] for row in rows]
    colours = ["gray", *["C0"] * len(figures["oip"]), "C2"][:len(rows)]
    left.barh(names, [row["requests_per_s"] for row in rows], color=colours)
    left.axvline(TARGET_STREAM_RPS, color="C3", linestyle="--", label=f"target {TARGET_STREAM_RPS:g} req/s")
    left.axvline(TRITON_REFERENCE_RPS, color="C1", linestyle=":",
                 label=f"Triton 2.51 + ORT Python backend {TRITON_REFERENCE_RPS:g}")
    left.invert_yaxis()
    left.set(xlabel="requests/s", title="pvae_rates, 1200x256 per request")
    left.legend(loc="lower right", fontsize=8)
    left.grid(axis="x", alpha=0.3)
    streaming = next(row for row in figures["oip"] if row["name"] == "OIP streaming c=1")
    details = streaming.get("details") or {}
    parts = [("server: input", details.get("Server Compute Input", 0.0)),
             ("server: rates graph", details.get("Server Compute Infer", 0.0)),
             ("server: FP16 + response", details.get("Server Compute Output", 0.0)),
             ("server: queue", details.get("Server Queue", 0.0))]
    floor = figures.get("floor")
    if floor is not None:
        parts.insert(0, ("transport floor (p50)", floor["p50_ms"] * 1e3))
    bottom = 0.0
    for index, (label, micros) in enumerate(parts):
        right.bar(["streaming c=1"], [micros / 1e3], bottom=bottom, label=label, color=f"C{index + 2}")
        bottom += micros / 1e3
    right.bar(["in-process"], [figures["in_process"]["p50_ms"]], color="gray", label="in-process ONNX Runtime (p50)")
    right.axhline(streaming["p50_ms"], color="black", linestyle="--",
                  label=f"measured p50 {streaming['p50_ms']:.1f} ms")
    right.set(ylabel="ms", title="where a request's time goes")
    right.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _parse(argv: Sequence[str] | None) -> tuple[OipBenchConfig, Path | None, bool]:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     prog=PROG, description=__doc__.splitlines()[0] if __doc__ else "",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_flags(parser, OipBenchConfig, flags={
        "server_args": Flag(name="--server-arg", repeat=True),
        "floor": Flag(negatable=False),
    })
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument("--install-only", action="store_true", help="install perf_analyzer, print its path, exit")
    args = parser.parse_args(argv)
    return OipBenchConfig(**flag_values(OipBenchConfig, args)), args.json, args.install_only


def _main(argv: Sequence[str] | None) -> int:
    config, json_path, install_only = _parse(argv)

    def progress(line: str) -> None:
        print(f"{PROG}: {line}", file=sys.stderr, flush=True)

    if install_only:
        analyzer = install_perf_analyzer(config.prefix, progress)
        print(f"{analyzer.binary} ({analyzer.version}); run it with LD_LIBRARY_PATH={analyzer.lib_dir}")
        return 0
    figures = run_benchmark(config, progress)
    print(format_report(figures))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(figures, indent=2))
    if config.plot is not None:
        progress(f"wrote {write_plot(figures, config.plot)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``pvae-bench-oip``."""
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
