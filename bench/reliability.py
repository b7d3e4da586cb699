"""``pvae-reliability``: load, soak, faults and hostile input against a loopback server, as one table.

The scenarios live here so the test suite (tests/test_faults.py, tests/test_soak.py) and the
command run the same code. The command starts an in-process server on a loopback port (the
SIGTERM and corrupt-bundle scenarios start ``pvae-serve`` subprocesses), then prints:

- load held: streams, frames/s, latency p50/p99 under a fixed-time run of many concurrent streams
  with mixed frame sizes, half ``block`` and half ``drop_oldest``;
- frame accounting: sent = answered + failed-in-band + dropped-and-reported, lost = the rest
  (must be 0), and nothing dropped under ``block``;
- faults injected and survived (each followed by a recovery check without restart);
- hostile cases tried (a seeded corpus of corrupt files, absurd sizes and malformed protobuf)
  and the statuses they got;
- with ``--soak``: at least 100k frames and the process RSS growth;
- port conflicts: a second ``pvae-serve`` on the running server's gRPC port, then on its metrics
  port, must be one error line and exit code 2;
- log flood: ``pvae-serve`` gets ``--flood-requests`` (1,000) unimplemented RPCs, then as many
  malformed requests (the hostile corpus), and the bytes it logs per 1,000 are reported; the
  rate limit (pvae.serving.logs) must hold every kind of line to its burst per interval.

    pvae-reliability                       # quick: about a minute on two cores
    pvae-reliability --soak --soak-frames 100000
    python -m pvae.bench.reliability --model runs/quick/best.bundle
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from pvae.bench.loadgen import Tally, Tickets, stream_frames
from pvae.bundle import Bundle
from pvae.cli import Flag, add_config_flags, flag_values, run_cli
from pvae.clients import AsyncClient
from pvae.errors import ConfigError
from pvae.serving.config import ServeConfig
from pvae.serving.engine import DevicePlan, Engine
from pvae.serving.errors import InferenceError
from pvae.serving.inprocess import InProcessServer
from pvae.serving.source import resolve_bundle
from pvae.v1 import pvae_pb2 as pb
from pvae.v1 import pvae_pb2_grpc as pb_grpc

__all__ = [
    "FLOOD_KINDS",
    "FaultOutcome",
    "FuzzTally",
    "LoadResult",
    "LogFlood",
    "corrupt_bundle_at_start",
    "fault_scenarios",
    "log_flood",
    "main",
    "port_conflicts",
    "reliability_config",
    "run_faults",
    "run_fuzz",
    "run_load",
    "sigterm_with_streams_in_flight",
    "unimplemented_methods",
]

#: Frame sizes (H, W) the load mixes: small enough for two CPU cores, all multiples of the 16-px patch.
LOAD_SIZES: tuple[tuple[int, int], ...] = ((32, 48), (48, 64), (64, 96), (96, 128))
#: Concurrent streams of the quick load run (the service is held to at least 32).
DEFAULT_STREAMS = 32
#: Seconds of the quick load run.
DEFAULT_DURATION_S = 10.0
#: Frames the soak sends at least (long enough for a leak of even 1 KiB a frame to show).
DEFAULT_SOAK_FRAMES = 100_000
#: Hostile cases of the quick fuzz corpus.
DEFAULT_FUZZ_CASES = 400
#: In-flight window of the load streams.
LOAD_WINDOW = 4
#: Send rate of the live-camera (drop_oldest) load streams, frames per second (a common webcam rate).
LIVE_FPS = 30.0
#: Deadline of one probe call, seconds.
PROBE_TIMEOUT_S = 15.0
#: How long the server gets to be back to idle after a fault, seconds.
RECOVERY_TIMEOUT_S = 15.0
#: Seconds a subprocess server may take to start (imports and ONNX Runtime sessions).
SUBPROCESS_START_S = 90.0
#: Statuses a hostile request may get (NOT_FOUND: an Open Inference Protocol request naming an unknown model).
PRECISE_CODES = frozenset({grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                           grpc.StatusCode.NOT_FOUND})
#: The Open Inference Protocol's unary inference method.
OIP_INFER = "/inference.GRPCInferenceService/ModelInfer"
#: Bytes in a kibibyte (/proc reports RSS in kB).
KIB = 1024


def reliability_config(**overrides: Any) -> ServeConfig:
    """The server the scenarios run against: loopback, port 0, CPU, no metrics HTTP, short grace."""
    base: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "metrics_port": None, "device": "cpu",
                            "warmup_sizes": (), "max_batch_delay_s": 0.002, "drain_grace_s": 3.0,
                            "max_streams": 128, "max_queue_frames": 256, "max_frame_height": 1024,
                            "max_frame_width": 1024, "max_frame_pixels": 1024 * 1024, "max_frame_bytes": 4 << 20,
                            "max_receive_message_bytes": 8 << 20}
    base.update(overrides)
    return ServeConfig(**base)


def rss_bytes() -> int:
    """This process's resident set size (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * KIB
    except OSError:
        pass
    return 0


def _frame(height: int, width: int, seed: int) -> pb.Frame:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    return pb.Frame(raw=pb.RawFrame(height=height, width=width, channels=1, data=pixels.tobytes()))


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return float(registry.get_sample_value(name, labels) or 0.0)


# ----------------------------------------------------------------------------- load and soak


@dataclass
class LoadResult:
    """Counts and timings of one load run (client side, plus the server's drop counter)."""

    streams: int
    seconds: float = 0.0
    block: Tally = field(default_factory=Tally)
    """The ``block`` streams (closed loop: the server may drop none of their frames)."""
    live: Tally = field(default_factory=Tally)
    """The ``drop_oldest`` streams (a live camera's rate: the server drops what it cannot keep up with)."""
    server_dropped: int = 0
    """The server's pvae_dropped_frames_total increase over the run."""
    rss_start: int = 0
    rss_end: int = 0

    @property
    def total(self) -> Tally:
        """All streams."""
        return self.block + self.live

    @property
    def sent(self) -> int:
        return self.total.sent

    @property
    def answered(self) -> int:
        return self.total.answered

    @property
    def failed(self) -> int:
        """Frames answered in-band with an error status."""
        return self.total.failures

    @property
    def failed_codes(self) -> dict[str, int]:
        """In-band error statuses by name."""
        return self.total.failed

    @property
    def dropped(self) -> int:
        """Frames the server dropped (drop_oldest) and reported."""
        return self.total.dropped

    @property
    def stream_errors(self) -> list[str]:
        return self.total.stream_errors

    @property
    def latencies_s(self) -> list[float]:
        return self.total.latencies_s

    @property
    def block_sent(self) -> int:
        return self.block.sent

    @property
    def block_answered(self) -> int:
        return self.block.answered

    @property
    def block_dropped(self) -> int:
        return self.block.dropped

    @property
    def lost(self) -> int:
        """Frames neither answered, failed in-band nor reported dropped (must be 0)."""
        return self.sent - self.answered - self.failed - self.dropped

    @property
    def frames_per_s(self) -> float:
        """Answered frames per second."""
        return self.answered / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        """Latency percentile ``q`` (0..100) in milliseconds, send to answer."""
        return self.total.percentile_ms(q)


async def _load(address: str, streams: int, duration_s: float, max_frames: int | None,
                credentials: grpc.ChannelCredentials | None, result: LoadResult) -> None:
    """``streams`` load streams on one client (one channel), sharing one frame budget and deadline.

    Stream ``i`` sends ``LOAD_SIZES[i % 4]`` frames. Even streams use ``block`` and are closed-loop
    (at most LOAD_WINDOW frames unanswered, as the client library gates them); odd streams use
    ``drop_oldest`` and send like a live camera at LIVE_FPS whatever the server manages, so under
    overload the server drops (and reports) their frames.
    """
    async with AsyncClient(address, credentials=credentials) as client:
        tickets = Tickets(max_frames, duration_s)
        started = time.monotonic()

        def one_stream(index: int) -> Any:
            height, width = LOAD_SIZES[index % len(LOAD_SIZES)]
            frames = [_frame(height, width, seed) for seed in range(4)]
            closed_loop = index % 2 == 0
            return stream_frames(client, frames, tickets, result.block if closed_loop else result.live,
                                 window=LOAD_WINDOW,
                                 policy="block" if closed_loop else "drop_oldest",
                                 pace_fps=None if closed_loop else LIVE_FPS, label=f"stream {index}")

        await asyncio.gather(*(one_stream(i) for i in range(streams)))
        result.seconds = time.monotonic() - started


def run_load(address: str, registry: CollectorRegistry | None = None, streams: int = DEFAULT_STREAMS,
             duration_s: float = DEFAULT_DURATION_S, max_frames: int | None = None,
             credentials: grpc.ChannelCredentials | None = None) -> LoadResult:
    """``streams`` concurrent streams of mixed sizes for ``duration_s`` (or until ``max_frames`` are sent).

    Even-numbered streams use ``block``, odd ones ``drop_oldest``; all share one channel. With
    ``registry`` (an in-process server's), the server's drop counter is read too.
    """
    result = LoadResult(streams=streams, rss_start=rss_bytes())
    dropped_before = _sample(registry, "pvae_dropped_frames_total") if registry is not None else 0.0
    asyncio.run(_load(address, streams, duration_s, max_frames, credentials, result))
    result.rss_end = rss_bytes()
    if registry is not None:
        result.server_dropped = int(_sample(registry, "pvae_dropped_frames_total") - dropped_before)
    return result


# ----------------------------------------------------------------------------- recovery probe


def server_is_idle(registry: CollectorRegistry, timeout: float = RECOVERY_TIMEOUT_S) -> bool:
    """Wait until no stream, in-flight frame or queued frame is left on the server."""
    deadline = time.monotonic() + timeout
    names = ("pvae_active_streams", "pvae_inflight_frames", "pvae_queue_depth_frames")
    while time.monotonic() < deadline:
        if all(_sample(registry, name) == 0 for name in names):
            return True
        time.sleep(0.02)
    return False


def serves_normally(channel: grpc.Channel, frames: int = 3) -> bool:
    """Health is SERVING and a fresh stream gets every frame answered, in order."""
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=PROBE_TIMEOUT_S)
    if health.status != health_pb2.HealthCheckResponse.SERVING:
        return False
    requests = [pb.StreamEncodeRequest(sequence=s, frame=_frame(32, 48, s)) for s in range(frames)]
    responses = list(pb_grpc.EncoderStub(channel).StreamEncode(iter(requests), timeout=PROBE_TIMEOUT_S))
    return [r.sequence for r in responses if r.HasField("result")] == list(range(frames))


# ----------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class FaultOutcome:
    """One injected fault: did the server survive it and recover without a restart?"""

    name: str
    survived: bool
    detail: str


def _endless(frame: pb.Frame, stop: threading.Event) -> Iterator[pb.StreamEncodeRequest]:
    sequence = 0
    while not stop.is_set():
        yield pb.StreamEncodeRequest(sequence=sequence, frame=frame)
        sequence += 1


def _outcome(name: str, server: InProcessServer, channel: grpc.Channel, ok: bool, detail: str) -> FaultOutcome:
    idle = server_is_idle(server.registry)
    normal = serves_normally(channel)
    survived = ok and idle and normal
    if not survived:
        detail += f" [scenario ok={ok}, idle afterwards={idle}, serves afterwards={normal}]"
    return FaultOutcome(name, survived, detail)


def fault_disconnect(server: InProcessServer, channel: grpc.Channel) -> FaultOutcome:
    """A client that vanishes mid-stream (its connection closes under the server)."""
    stop = threading.Event()
    doomed = grpc.insecure_channel(server.address)
    call = pb_grpc.EncoderStub(doomed).StreamEncode(_endless(_frame(64, 96, 1), stop))
    got = [next(call).sequence for _ in range(3)]
    doomed.close()  # no half-close, no cancel: the transport just goes away
    stop.set()
    return _outcome("client disconnects mid-stream", server, channel, got == [0, 1, 2],
                    "3 frames answered, then the connection closed")


def fault_stall(server: InProcessServer, channel: grpc.Channel) -> FaultOutcome:
    """A client that keeps sending but never reads: its window and flow control bound what the
    server holds, and other clients are served meanwhile."""
    stop = threading.Event()
    stalled = grpc.insecure_channel(server.address)
    call = pb_grpc.EncoderStub(stalled).StreamEncode(_endless(_frame(256, 320, 2), stop))
    time.sleep(1.5)  # the server answers until HTTP/2 flow control stops it, then waits
    inflight = _sample(server.registry, "pvae_inflight_frames")
    others_ok = serves_normally(channel)
    call.cancel()
    stop.set()
    stalled.close()
    bounded = inflight <= server.config.max_window
    return _outcome("client stalls (never reads)", server, channel, others_ok and bounded,
                    f"in flight while stalled: {inflight:.0f} (window cap {server.config.max_window}); "
                    f"other clients served: {others_ok}")


def fault_cancel(server: InProcessServer, channel: grpc.Channel) -> FaultOutcome:
    """A client that cancels its stream."""
    stop = threading.Event()
    call = pb_grpc.EncoderStub(channel).StreamEncode(_endless(_frame(48, 64, 3), stop))
    first = next(call).sequence
    call.cancel()
    stop.set()
    return _outcome("client cancels its stream", server, channel, first == 0 and call.code() ==
                    grpc.StatusCode.CANCELLED, "cancelled after the first answer")


def fault_deadline(server: InProcessServer, channel: grpc.Channel) -> FaultOutcome:
    """A stream whose deadline passes while frames are in flight."""
    stop = threading.Event()
    call = pb_grpc.EncoderStub(channel).StreamEncode(_endless(_frame(48, 64, 4), stop), timeout=0.5)
    code = grpc.StatusCode.OK
    try:
        for _ in call:
            pass
    except grpc.RpcError as exc:
        code = exc.code()
    stop.set()
    return _outcome("stream deadline expires", server, channel, code == grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"status {code.name}")


def fault_inference_error(server: InProcessServer, channel: grpc.Channel) -> FaultOutcome:
    """ONNX Runtime fails on one batch: only that batch's frames fail, each with INTERNAL."""
    assert server.running is not None
    engine = server.running.engine
    original = engine.run_frames
    calls = [0]
    failing_call = 2

    def flaky(frames: np.ndarray, outputs: Sequence[str]) -> Any:
        calls[0] += 1
        if calls[0] == failing_call:
            raise InferenceError(f"injected fault on a {frames.shape} batch")
        return original(frames, outputs)

    engine.run_frames = flaky
    try:
        total = 12
        requests = [pb.StreamEncodeRequest(sequence=s, frame=_frame(48, 64, s)) for s in range(total)]
        responses = list(pb_grpc.EncoderStub(channel).StreamEncode(iter(requests), timeout=PROBE_TIMEOUT_S))
    finally:
        del engine.run_frames  # back to the class's method
    failed = [r for r in responses if r.HasField("error")]
    ok = ([r.sequence for r in responses] == list(range(total)) and 1 <= len(failed) <= server.config.max_batch_frames
          and all(r.error.code == grpc.StatusCode.INTERNAL.value[0] and "injected" in r.error.message for r in failed)
          and responses[-1].HasField("result"))
    return _outcome("inference error on one batch", server, channel, ok,
                    f"{len(failed)} of {total} frames failed in-band (one batch), the stream went on")


def fault_malformed_stream(server: InProcessServer, channel: grpc.Channel) -> FaultOutcome:
    """An undecodable protobuf message in the middle of a stream."""
    call = channel.stream_stream("/pvae.v1.Encoder/StreamEncode", request_serializer=None,
                                 response_deserializer=pb.StreamEncodeResponse.FromString)
    good = pb.StreamEncodeRequest(sequence=0, frame=_frame(32, 48, 5)).SerializeToString()
    code = grpc.StatusCode.OK
    try:
        list(call(iter([good, b"\x0a\xff\xff\xff\xff\x0f"]), timeout=PROBE_TIMEOUT_S))
    except grpc.RpcError as exc:
        code = exc.code()
    return _outcome("malformed protobuf mid-stream", server, channel, code == grpc.StatusCode.INVALID_ARGUMENT,
                    f"stream closed with {code.name}")


#: In-process fault scenarios, in the order the report runs them.
fault_scenarios: tuple[Callable[[InProcessServer, grpc.Channel], FaultOutcome], ...] = (
    fault_disconnect, fault_stall, fault_cancel, fault_deadline, fault_inference_error, fault_malformed_stream)


def run_faults(server: InProcessServer) -> list[FaultOutcome]:
    """Every in-process fault scenario against ``server``, one after another (no restarts)."""
    with grpc.insecure_channel(server.address) as channel:
        return [scenario(server, channel) for scenario in fault_scenarios]


def _serve_command(bundle_root: Path, *extra: str, port: int = 0, metrics_port: int | None = None) -> list[str]:
    return [sys.executable, "-m", "pvae.serving", "--model", str(bundle_root), "--port", str(port), "--metrics-port",
            "off" if metrics_port is None else str(metrics_port), "--device", "cpu", "--warmup-sizes", "32x48", *extra]


def sigterm_with_streams_in_flight(bundle_root: Path, streams: int = 4, grace_s: float = 5.0) -> FaultOutcome:
    """``pvae-serve`` gets SIGTERM while streams run: health flips to NOT_SERVING, every admitted
    frame is answered, streams end with UNAVAILABLE, and the process exits 0 within the grace."""
    name = "SIGTERM with streams in flight"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(_serve_command(bundle_root, "--drain-grace-s", str(grace_s)), stderr=subprocess.PIPE,
                          text=True, env=env) as process:
        try:
            assert process.stderr is not None
            port = None
            started = time.monotonic()
            for line in process.stderr:
                match = re.search(r" on 127\.0\.0\.1:(\d+)", line)
                if match:
                    port = int(match.group(1))
                    break
                if time.monotonic() - started > SUBPROCESS_START_S:
                    break
            if port is None:
                return FaultOutcome(name, False, "the server did not report its port")
            return _sigterm_scenario(process, port, streams, grace_s)
        finally:
            if process.poll() is None:
                process.kill()


def _sigterm_scenario(process: subprocess.Popen[str], port: int, streams: int, grace_s: float) -> FaultOutcome:
    name = "SIGTERM with streams in flight"
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        statuses: list[int] = []
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)

        def follow() -> None:
            try:
                for response in watch:
                    statuses.append(int(response.status))
                    if statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING and len(statuses) > 1:
                        watch.cancel()  # seen the flip; an open watch would hold the drain to its grace
            except grpc.RpcError:
                pass

        watcher = threading.Thread(target=follow, daemon=True)
        watcher.start()
        stop = threading.Event()
        stub = pb_grpc.EncoderStub(channel)
        calls = [stub.StreamEncode(_endless(_frame(48, 64, i), stop)) for i in range(streams)]
        answered = [0] * streams
        codes: list[grpc.StatusCode | None] = [None] * streams

        def drain(i: int) -> None:
            try:
                for response in calls[i]:
                    answered[i] += response.HasField("result")
                codes[i] = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                codes[i] = exc.code()

        readers = [threading.Thread(target=drain, args=(i,), daemon=True) for i in range(streams)]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + SUBPROCESS_START_S
        while min(answered) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(grace_s + RECOVERY_TIMEOUT_S)
        took = time.monotonic() - signalled
        stop.set()
        for reader in readers:
            reader.join(PROBE_TIMEOUT_S)
        watcher.join(PROBE_TIMEOUT_S)
        flipped = (health_pb2.HealthCheckResponse.SERVING in statuses
                   and statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING)
        drained = all(c == grpc.StatusCode.UNAVAILABLE for c in codes)
        ok = code == 0 and flipped and drained and took <= grace_s + 1.0 and min(answered) >= 3
        return FaultOutcome(name, ok, f"{streams} streams ({sum(answered)} frames answered) ended "
                                      f"{sorted({c.name for c in codes if c is not None})}; health "
                                      f"{'SERVING -> NOT_SERVING' if flipped else statuses}; exit {code} "
                                      f"after {took:.2f} s (grace {grace_s:.0f} s)")
    finally:
        channel.close()


def corrupt_bundle_at_start(bundle_root: Path) -> FaultOutcome:
    """``pvae-serve`` on a bundle with a truncated graph: a one-line error naming the file, exit 2."""
    name = "corrupt bundle at start"
    with tempfile.TemporaryDirectory(prefix="pvae-corrupt-") as scratch:
        copy = Path(scratch) / "bundle"
        shutil.copytree(bundle_root, copy)
        graph = copy / "frame.onnx"
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
        done = subprocess.run(_serve_command(copy), capture_output=True, text=True, timeout=SUBPROCESS_START_S)
    error = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    ok = done.returncode == 2 and error.startswith("pvae-serve: error:") and "frame.onnx" in error
    return FaultOutcome(name, ok, f"exit {done.returncode}: {error[:100]}")


def port_conflicts(bundle_root: Path, grpc_port: int, metrics_port: int) -> list[FaultOutcome]:
    """A second ``pvae-serve`` on the gRPC port, then on the metrics port, of a running server: each
    must be refused with one error line (no traceback) and exit code 2, and the first server is untouched."""
    outcomes = []
    for what, port, metrics, field_name in (("gRPC", grpc_port, None, "port"),
                                            ("metrics", 0, metrics_port, "metrics_port")):
        busy = grpc_port if what == "gRPC" else metrics_port
        done = subprocess.run(_serve_command(bundle_root, port=port, metrics_port=metrics), capture_output=True,
                              text=True, timeout=SUBPROCESS_START_S)
        errors = [line for line in done.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
        ok = (done.returncode == 2 and "Traceback" not in done.stderr and len(errors) == 1
              and errors[0].startswith(f"pvae-serve: error: {field_name}: cannot listen on 127.0.0.1:{busy}:"))
        shown = errors[0] if len(errors) == 1 else f"{len(errors)} error lines"
        outcomes.append(FaultOutcome(f"second server on a busy {what} port", ok,
                                     f"exit {done.returncode}: {shown[:110]}"))
    return outcomes


# ----------------------------------------------------------------------------- log flood


#: Bad requests sent per log-flood check.
DEFAULT_FLOOD_REQUESTS = 1000
#: A method no service on the port has (gRPC answers UNIMPLEMENTED itself).
UNKNOWN_METHOD = "/pvae.v1.Encoder/NoSuchMethod"
#: Lines of ``pvae-serve``'s own start and stop (not counted as flood).
_LIFECYCLE = re.compile(r" pvae\.serving INFO (pvae-serve |SERVING |transport |draining: |stopped|malloc: )")
_DIGITS = re.compile(r"\d+")


def unimplemented_methods() -> list[str]:
    """Every Open Inference Protocol method that pvae-serve answers UNIMPLEMENTED, and an unknown one."""
    from pvae.inference import grpc_service_pb2 as oip
    from pvae.serving.oip import UNIMPLEMENTED_RPCS

    service = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    return [f"/{service.full_name}/{name}" for name in UNIMPLEMENTED_RPCS] + [UNKNOWN_METHOD]


@dataclass(frozen=True)
class LogFlood:
    """Server log written while one kind of bad request was sent over and over."""

    kind: str
    requests: int
    codes: dict[str, int]
    log_bytes: int
    """Bytes of server log (stderr) beyond its start and stop lines."""
    log_lines: int
    most_repeated: int
    """Lines of the most frequent kind (the line with its digits masked; traceback lines not counted)."""
    allowed: int
    """The most lines of one kind the rate limit lets through in the time the run took."""
    log: str
    """What was counted."""

    @property
    def excerpt(self) -> str:
        """The first lines of ``log``."""
        return "".join(self.log.splitlines(keepends=True)[:12])

    @property
    def bytes_per_1000(self) -> float:
        return self.log_bytes * 1000 / max(self.requests, 1)

    @property
    def bounded(self) -> bool:
        return self.most_repeated <= self.allowed


def _message_heads(lines: Sequence[str]) -> list[str]:
    """The first line of every log message: tracebacks (down to their exception line) and the rate
    limit's own notices are left out, so each line left stands for one message."""
    heads = []
    in_traceback = False
    for line in lines:
        if line.startswith("Traceback (most recent call last):"):
            in_traceback = True
        elif in_traceback:
            in_traceback = line.startswith(" ")  # the first unindented line is the exception: the end
        elif line.strip() and not line.startswith(("pvae-serve: native stderr:", "During handling", "The above")) \
                and " pvae.serving.logs " not in line:
            heads.append(line)
    return heads


def _send(channel: grpc.Channel, calls: Iterator[tuple[str, bytes]]) -> dict[str, int]:
    codes: dict[str, int] = {}
    for method, payload in calls:
        code = grpc.StatusCode.OK
        try:
            if method.endswith("/StreamEncode"):
                call = channel.stream_stream(method, request_serializer=None, response_deserializer=None)
                for _ in call(iter([payload]), timeout=PROBE_TIMEOUT_S):
                    pass
            else:
                channel.unary_unary(method, request_serializer=None, response_deserializer=None)(
                    payload, timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError as exc:
            code = exc.code()
        codes[code.name] = codes.get(code.name, 0) + 1
    return codes


def _flood_calls(kind: str, requests: int, seed: int) -> Iterator[tuple[str, bytes]]:
    if kind == "unimplemented RPCs":
        methods = unimplemented_methods()
        return ((methods[i % len(methods)], b"") for i in range(requests))
    return hostile_payloads(random.Random(seed), requests)


#: The kinds of bad request the log-flood check sends.
FLOOD_KINDS = ("unimplemented RPCs", "malformed requests")


def log_flood(bundle_root: Path, kind: str, requests: int = DEFAULT_FLOOD_REQUESTS, seed: int = 0,
              log_burst: int | None = None, log_interval_s: float | None = None) -> LogFlood:
    """Start ``pvae-serve`` (its default log limits unless given), send ``requests`` bad requests of
    ``kind`` (FLOOD_KINDS: every unimplemented RPC in turn, or the seeded hostile corpus), stop it
    with SIGTERM and measure what it wrote to its log beyond its own start and stop lines."""
    from pvae.serving.config import ServeConfig

    if kind not in FLOOD_KINDS:
        raise ValueError(f"kind must be one of {FLOOD_KINDS}, got {kind!r}")
    defaults = ServeConfig()
    burst = defaults.log_burst if log_burst is None else log_burst
    interval = defaults.log_interval_s if log_interval_s is None else log_interval_s
    flags = ("--log-burst", str(burst), "--log-interval-s", str(interval))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(_serve_command(bundle_root, *flags), stderr=subprocess.PIPE, env=env) as process:
        try:
            assert process.stderr is not None
            port = None
            for raw in process.stderr:
                line = raw.decode(errors="replace")
                match = re.search(r" on 127\.0\.0\.1:(\d+)", line)
                port = port or (int(match.group(1)) if match else None)
                if " transport " in line:  # the last start-up line
                    break
            if port is None:
                raise RuntimeError("pvae-serve did not report its port")
            rest: list[bytes] = []
            reader = threading.Thread(target=lambda: rest.extend(process.stderr or ()), daemon=True)
            reader.start()
            started = time.monotonic()
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                codes = _send(channel, _flood_calls(kind, requests, seed))
            process.send_signal(signal.SIGTERM)
            process.wait(SUBPROCESS_START_S)
            reader.join(SUBPROCESS_START_S)  # end of file: the server and its log forwarder have both exited
            took = time.monotonic() - started
        finally:
            if process.poll() is None:
                process.kill()
    lines = [raw.decode(errors="replace") for raw in rest if not _LIFECYCLE.search(raw.decode(errors="replace"))]
    firsts = [_DIGITS.sub("#", line) for line in _message_heads(lines)]
    most = max((firsts.count(line) for line in set(firsts)), default=0)
    # One kind's intervals start at least an interval apart: at most took // interval + 1 of them in the run.
    allowed = burst * (int(took // interval) + 1) if burst else requests
    return LogFlood(kind, requests, codes, sum(len(line.encode()) for line in lines), len(lines), most, allowed,
                    "".join(lines))


# ----------------------------------------------------------------------------- hostile input


@dataclass
class FuzzTally:
    """Hostile cases sent and the statuses they got."""

    cases: int = 0
    codes: dict[str, int] = field(default_factory=dict)

    @property
    def imprecise(self) -> int:
        """Cases answered with anything but OK / INVALID_ARGUMENT / RESOURCE_EXHAUSTED."""
        return sum(n for code, n in self.codes.items() if grpc.StatusCode[code] not in PRECISE_CODES)


def _png_header(width: int, height: int) -> bytes:
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))


def hostile_oip_request(rng: random.Random) -> bytes:
    """A ModelInferRequest that tritonclient could send, used wrongly: a wrong datatype string, a
    ``raw_input_contents`` count or byte length that does not match, negative or huge dims, an
    unknown model, input or output name, a missing seed, a bad parameter."""
    from pvae.inference import grpc_service_pb2 as oip

    model = rng.choice(["pvae_rates", "pvae_counts", "pvae_frame", "pvae_rates", "nope", ""])
    request = oip.ModelInferRequest(model_name=model, model_version=rng.choice(["", "", "1", "2"]), id="fuzz")
    names = {"pvae_rates": ["patches"], "pvae_counts": ["rates", "seed"], "pvae_frame": ["frame", "seed"]}
    inputs = list(names.get(model, ["patches"]))
    if rng.random() < 0.3:  # drop one (the seed, say) or add an unknown one
        inputs = inputs[:-1] if rng.random() < 0.5 else [*inputs, "extra"]
    dims = [0, 1, 2, 16, 32, 48, 64, 256, 512, -1, -(2**63), 2**31, 2**62, 2**63 - 1]
    for name in inputs:
        shape = [rng.choice(dims) for _ in range(rng.choice([0, 1, 2, 2, 2, 3]))]
        datatype = rng.choice(["FP32", "FP32", "UINT8", "INT64", "FP16", "FP64", "INT32", "BYTES", "", "fp32"])
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        if rng.random() < 0.15:  # typed contents instead of raw bytes
            values = [rng.uniform(-1e30, 1e30) for _ in range(rng.randrange(64))]
            request.inputs[-1].contents.fp32_contents.extend(values)
    for _ in range(len(inputs) + rng.choice([-1, 0, 0, 0, 1])):
        request.raw_input_contents.append(rng.randbytes(rng.choice([0, 1, 8, 64, 1024, 16 * 256 * 4, 65536])))
    if rng.random() < 0.3:
        request.outputs.add(name=rng.choice(["rates", "counts", "spikes", ""]))
    if rng.random() < 0.2:
        request.parameters["float_format"].string_param = rng.choice(["fp16", "fp32", "fp8", ""])
    return request.SerializeToString()


def hostile_payloads(rng: random.Random, count: int) -> Iterator[tuple[str, bytes]]:
    """``count`` seeded hostile (method, serialized request) pairs: corrupt and truncated files,
    absurd sizes, wrong byte counts, huge patch batches, Open Inference Protocol requests used
    wrongly, and bytes that are not protobuf at all."""
    import cv2

    image = np.random.default_rng(0).integers(0, 256, (48, 64), dtype=np.uint8)
    files = [cv2.imencode(ext, image)[1].tobytes() for ext in (".jpg", ".png")]
    encode = "/pvae.v1.Encoder/Encode"
    for _ in range(count):
        kind = rng.randrange(9)
        if kind == 7:
            yield OIP_INFER, hostile_oip_request(rng)
        elif kind == 8:
            yield OIP_INFER, rng.randbytes(rng.randrange(1, 512))
        elif kind == 0:
            yield encode, rng.randbytes(rng.randrange(1, 512))
        elif kind == 1:
            data = rng.choice(files)
            yield encode, pb.EncodeRequest(frame=pb.Frame(encoded=data[:rng.randrange(len(data))])).SerializeToString()
        elif kind == 2:
            flipped = bytearray(rng.choice(files))
            for _ in range(rng.randrange(1, 8)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            yield encode, pb.EncodeRequest(frame=pb.Frame(encoded=bytes(flipped))).SerializeToString()
        elif kind == 3:
            header = _png_header(rng.randrange(2**32), rng.randrange(2**32))
            yield encode, pb.EncodeRequest(frame=pb.Frame(encoded=header + rng.randbytes(64))).SerializeToString()
        elif kind == 4:
            raw = pb.RawFrame(height=rng.choice([0, 1, 48, 2**31, 2**32 - 1]), width=rng.choice([0, 64, 2**31]),
                              channels=rng.choice([0, 1, 2, 3, 4, 5, 2**32 - 1]), data=bytes(rng.randrange(16384)))
            yield encode, pb.EncodeRequest(frame=pb.Frame(raw=raw)).SerializeToString()
        elif kind == 5:
            patches = pb.Patches(count=rng.choice([0, 1, 7, 10**6, 2**32 - 1]), data=bytes(rng.randrange(8192)))
            yield encode, pb.EncodeRequest(patches=patches).SerializeToString()
        else:
            yield "/pvae.v1.Encoder/StreamEncode", rng.randbytes(rng.randrange(1, 256))


def run_fuzz(address: str, cases: int = DEFAULT_FUZZ_CASES, seed: int = 0) -> FuzzTally:
    """Send the seeded hostile corpus and tally the statuses (the server must stay up)."""
    tally = FuzzTally()
    with grpc.insecure_channel(address) as channel:
        unary = channel.unary_unary("/pvae.v1.Encoder/Encode", request_serializer=None, response_deserializer=None)
        oip_unary = channel.unary_unary(OIP_INFER, request_serializer=None, response_deserializer=None)
        stream = channel.stream_stream("/pvae.v1.Encoder/StreamEncode", request_serializer=None,
                                       response_deserializer=None)
        for method, payload in hostile_payloads(random.Random(seed), cases):
            code = grpc.StatusCode.OK
            try:
                if method == OIP_INFER:
                    oip_unary(payload, timeout=PROBE_TIMEOUT_S)
                elif method.endswith("/Encode"):
                    unary(payload, timeout=PROBE_TIMEOUT_S)
                else:
                    for _ in stream(iter([payload]), timeout=PROBE_TIMEOUT_S):
                        pass
            except grpc.RpcError as exc:
                code = exc.code()
            tally.cases += 1
            tally.codes[code.name] = tally.codes.get(code.name, 0) + 1
    return tally


# ----------------------------------------------------------------------------- the report


def _table(rows: Sequence[tuple[str, str, str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _load_rows(label: str, load: LoadResult) -> list[tuple[str, str, str]]:
    ok = load.lost == 0 and load.block_dropped == 0 and load.block_sent == load.block_answered \
        and load.server_dropped == load.dropped and not load.stream_errors
    return [
        (f"{label}: load held", f"{load.streams} streams, {load.sent} frames in {load.seconds:.1f} s",
         f"{load.frames_per_s:.0f} frames/s, p50 {load.percentile_ms(50):.1f} ms, p99 {load.percentile_ms(99):.1f} ms"),
        (f"{label}: accounting", f"sent {load.sent} = answered {load.answered} + failed {load.failed}"
                                 f"{f' {load.failed_codes}' if load.failed_codes else ''} + dropped {load.dropped} "
                                 f"(server counted {load.server_dropped})",
         f"lost {load.lost}; block: {load.block_sent} sent, {load.block_dropped} dropped "
         f"{'PASS' if ok else 'FAIL'}"),
        (f"{label}: memory", f"RSS {load.rss_start / 2**20:.0f} -> {load.rss_end / 2**20:.0f} MiB",
         f"growth {(load.rss_end - load.rss_start) / 2**20:+.1f} MiB"),
    ]


@dataclass(frozen=True)
class ReliabilityConfig:
    """What ``pvae-reliability`` runs."""

    model: str | None = None
    """Bundle directory or checkpoint (default: the bundled model)."""
    streams: int = DEFAULT_STREAMS
    """Concurrent streams of the load run (>= 1)."""
    duration_s: float = DEFAULT_DURATION_S
    """Seconds of the load run."""
    fuzz_cases: int = DEFAULT_FUZZ_CASES
    """Hostile cases sent."""
    soak: bool = False
    """Also run the long soak (RSS growth)."""
    soak_frames: int = DEFAULT_SOAK_FRAMES
    """Frames the soak sends."""
    seed: int = 0
    """Seed of the hostile corpus."""
    flood_requests: int = DEFAULT_FLOOD_REQUESTS
    """Bad requests of each kind (unimplemented RPCs, malformed requests) sent to a ``pvae-serve`` whose log is
    measured; 0 skips the log-flood check."""

    def __post_init__(self) -> None:
        if self.streams < 1 or self.duration_s <= 0 or self.fuzz_cases < 0 or self.soak_frames < 1:
            raise ConfigError("streams, duration and soak frames must be positive, fuzz cases >= 0")
        if self.flood_requests < 0:
            raise ConfigError(f"flood requests must be >= 0, got {self.flood_requests}")


def run_report(config: ReliabilityConfig, bundle: Bundle | None = None) -> tuple[str, bool]:
    """Run everything; return the table and whether every promise held."""
    bundle = bundle if bundle is not None else resolve_bundle(config.model)
    rows: list[tuple[str, str, str]] = [("check", "what", "result")]
    passed = True
    engine = Engine(bundle, DevicePlan("cpu"))
    with InProcessServer(reliability_config(metrics_port=0), engine=engine, auth_tokens=()) as server:
        load = run_load(server.address, server.registry, config.streams, config.duration_s)
        rows += _load_rows("quick", load)
        passed &= load.lost == 0 and load.block_dropped == 0 and not load.stream_errors
        if config.soak:
            soak = run_load(server.address, server.registry, config.streams, duration_s=float("inf"),
                            max_frames=config.soak_frames)
            rows += _load_rows("soak", soak)
            passed &= soak.lost == 0 and soak.block_dropped == 0 and not soak.stream_errors
        faults = run_faults(server)
        tally = run_fuzz(server.address, config.fuzz_cases, config.seed)
        assert server.running is not None and server.running.metrics_port is not None
        faults += port_conflicts(bundle.root, server.port, server.running.metrics_port)
        with grpc.insecure_channel(server.address) as channel:
            after_fuzz = serves_normally(channel)
    faults.append(sigterm_with_streams_in_flight(bundle.root))
    faults.append(corrupt_bundle_at_start(bundle.root))
    for fault in faults:
        rows.append((f"fault: {fault.name}", fault.detail, "survived" if fault.survived else "FAILED"))
        passed &= fault.survived
    survived = sum(f.survived for f in faults)
    rows.append(("faults", f"{len(faults)} injected", f"{survived} survived, recovered without restart"))
    codes = ", ".join(f"{code} {n}" for code, n in sorted(tally.codes.items()))
    rows.append(("hostile input", f"{tally.cases} cases ({codes})",
                 f"{tally.imprecise} imprecise statuses; server healthy after: {after_fuzz}"))
    passed &= tally.imprecise == 0 and after_fuzz
    for kind in FLOOD_KINDS if config.flood_requests else ():
        flood = log_flood(bundle.root, kind, config.flood_requests, config.seed)
        codes = ", ".join(f"{code} {n}" for code, n in sorted(flood.codes.items()))
        rows.append((f"log flood: {kind}", f"{flood.requests} requests ({codes})",
                     f"{flood.log_bytes} B of server log ({flood.bytes_per_1000:.0f} B per 1,000 requests, "
                     f"{flood.log_lines} lines; most of one kind {flood.most_repeated}, limit {flood.allowed}) "
                     f"{'PASS' if flood.bounded else 'FAIL'}"))
        passed &= flood.bounded
    rows.append(("frames lost", "where promised (block streams; accounting of all streams)",
                 f"{load.lost}{' PASS' if passed else ' FAIL'}"))
    return _table(rows), passed


def build_parser() -> argparse.ArgumentParser:
    """One flag per ReliabilityConfig field, its docstring the help."""
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="pvae-reliability", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_flags(parser, ReliabilityConfig, flags={"soak": Flag(negatable=False)})
    return parser


def _main(argv: Sequence[str] | None) -> int:
    config = ReliabilityConfig(**flag_values(ReliabilityConfig, build_parser().parse_args(argv)))
    table, passed = run_report(config)
    print(table)
    return 0 if passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``pvae-reliability``."""
    return run_cli("pvae-reliability", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
