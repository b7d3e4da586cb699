"""``pvae-bench-serve``: streaming over loopback vs the in-process engine, on the same VGA frames.

What it measures, in one run:

1. **in-process**: the frames go through the same compute the server runs (decode -> frame graph
   -> per-frame sampler -> packing), one at a time in this process: the baseline.
2. **streaming**: ``pvae-serve`` is started as a separate process on loopback (the real CLI, the
   same bundle and device) and 1, then 4, concurrent streams (one channel each, as separate clients
   would) send the frames with a client-side in-flight window; latency is the time from handing a
   frame to gRPC to receiving its result.

Every request asks for rates (fp16), sparse spike counts and the reconstruction (JPEG by default),
what a camera client shows. The streams are the load generator's (``pvae.bench.loadgen``: the
project's own ``AsyncClient``). It prints throughput, p50/p99 latency, wire bytes per frame round
trip (request + response protobuf bytes) and the ratios against the targets; ``--json`` writes the
figures.

    pvae-bench-serve --model runs/quick/best.bundle --frames 60
    pvae-bench-serve --server-processes 2 --server-threads 1      # SO_REUSEPORT workers experiment
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pvae.bench.config import DEFAULT_FRAMES, BenchConfig
from pvae.bench.host import OPENCV_REFERENCE_MS, HostSpeed, cpu_times, host_speed
from pvae.bench.loadgen import Tally, Tickets, stream_frames
from pvae.cli import Flag, add_config_flags, flag_values, free_port, run_cli
from pvae.clients import AsyncClient, FrameResult
from pvae.errors import ConfigError
from pvae.serving.decode import FrameLimits
from pvae.serving.engine import Engine, resolve_device
from pvae.serving.messages import decode_frame, fill_result, parse_options
from pvae.serving.pipeline import FrameJob, Pipeline, StageTimes
from pvae.serving.source import resolve_bundle
from pvae.training.data.config import PatchConfig
from pvae.v1 import pvae_pb2 as pb

__all__ = ["InProcessRunner", "RunFigures", "format_report", "frame_message", "main", "realtime_lines",
           "run_benchmark", "server_processes", "synthetic_frames"]

#: The in-process pipeline stages reported per frame (``StageTimes`` fields; queueing is a server's).
STAGES = ("decode", "inference", "sampling", "packing")
#: VGA, the frame size the serving targets are set for.
VGA = (480, 640)
#: The serving targets on the 2-core CPU: streaming throughput against the in-process engine, the
#: latency tail with 4 streams, and the wire bytes of one frame's round trip.
TARGET_STREAM_RATIO = 0.85
TARGET_P99_OVER_P50 = 2.0
TARGET_WIRE_BYTES = 1.3e6
#: Real time on a laptop-class CPU: one VGA stream at >= 50 fps with p50 <= 30 ms, 4 streams >= 60 fps in
#: total, and a round trip of <= 0.8 MB with rates requested (the compact formats: --float-format u8log
#: --count-format rice).
TARGET_ONE_STREAM_FPS = 50.0
TARGET_ONE_STREAM_P50_MS = 30.0
TARGET_FOUR_STREAMS_FPS = 60.0
TARGET_COMPACT_WIRE_BYTES = 0.8e6
#: The (float, count) formats the compact round trip is judged for, and the response parts that are images.
COMPACT_FORMATS = ("u8log", "rice")
IMAGE_PARTS = ("reconstruction", "preprocessed")
#: Seconds to wait for the server process to listen (imports, sessions, warm-up).
SERVER_START_TIMEOUT_S = 120.0
#: Pixels the synthetic camera moves per frame (a slow pan, as a handheld camera).
PAN_STEP = (3, 7)
#: The defaults of pvae-bench-serve's flags where they differ from BenchConfig's (pvae-bench's).
SERVE_DEFAULTS = BenchConfig(concurrency=(1, 4), frames=DEFAULT_FRAMES, warmup=5, rounds=3, image_encoding="jpeg")
#: Sequence numbers (and frame offsets) of warm-up and timed streams: far apart, so that streams
#: start at different frames of the pan.
WARMUP_OFFSET, TIMED_OFFSET = 997, 7919


@dataclass
class RunFigures:
    """Figures of one configuration (in-process, or n streams), over all rounds."""

    name: str
    frames: int = 0
    round_fps: list[float] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list, repr=False)
    requests: int = 0
    request_bytes: int = 0
    """Serialized bytes of all ``requests``."""
    response_bytes: list[int] = field(default_factory=list, repr=False)
    parts: dict[str, list[int]] = field(default_factory=dict, repr=False)
    batch_sizes: list[int] = field(default_factory=list, repr=False)
    stages: dict[str, list[float]] = field(default_factory=dict, repr=False)
    """In-process runs: seconds per frame in each pipeline stage (``StageTimes``)."""

    def add_round(self, frames: int, seconds: float) -> None:
        self.frames += frames
        self.round_fps.append(frames / seconds)

    def add_requests(self, count: int, total_bytes: int) -> None:
        self.requests += count
        self.request_bytes += total_bytes

    def add_response(self, result: pb.EncodeResult, response_bytes: int) -> None:
        """Record a response's size, split by output."""
        self.response_bytes.append(response_bytes)
        which = result.WhichOneof("counts")
        counts = getattr(result, which).ByteSize() if which else 0
        rates = len(result.rates) + (result.rate_codes.ByteSize() if result.HasField("rate_codes") else 0)
        for part, size in (("rates", rates), ("counts", counts), ("reconstruction", len(result.reconstruction.data))):
            self.parts.setdefault(part, []).append(size)
        if result.HasField("stats"):
            self.batch_sizes.append(result.stats.timings.batch_size)

    def add_tally(self, tally: Tally) -> None:
        """The timed streams' latencies and request bytes (responses come in one by one)."""
        self.latencies_s += tally.latencies_s
        self.add_requests(tally.sent, tally.sent_bytes)

    @property
    def fps(self) -> float:
        return float(np.median(self.round_fps))

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1e3)

    def summary(self) -> dict[str, Any]:
        request = self.request_bytes / max(self.requests, 1)
        response = float(np.mean(self.response_bytes))
        return {
            "name": self.name, "frames": self.frames, "fps": self.fps, "round_fps": self.round_fps,
            "p50_ms": self.percentile_ms(50), "p99_ms": self.percentile_ms(99),
            "request_bytes": request, "response_bytes": response, "round_trip_bytes": request + response,
            "response_parts_bytes": {k: float(np.mean(v)) for k, v in self.parts.items()},
            "mean_batch_size": float(np.mean(self.batch_sizes)) if self.batch_sizes else 1.0,
            "stage_ms": {k: float(np.median(v) * 1e3) for k, v in self.stages.items()},
        }


# ----------------------------------------------------------------------------- frames


def _panorama(height: int) -> np.ndarray:
    """A strip of natural photographs (scikit-image's, when installed) or 1/f noise, BGR, ``height`` high."""
    try:
        from skimage import data as skimage_data

        images = [skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea(), skimage_data.rocket()]
        tiles = [cv2.resize(img[..., ::-1], (int(img.shape[1] * height / img.shape[0]), height),
                            interpolation=cv2.INTER_AREA) for img in images]
        return np.ascontiguousarray(np.concatenate(tiles, axis=1))
    except ImportError:  # the train extra is not installed: pink noise has natural-image statistics
        rng = np.random.default_rng(0)
        width = 4 * height
        spectrum = np.fft.fft2(rng.normal(size=(height, width, 3)), axes=(0, 1))
        fy = np.fft.fftfreq(height)[:, None, None]
        fx = np.fft.fftfreq(width)[None, :, None]
        spectrum /= np.maximum(np.hypot(fy, fx), 1.0 / width)
        image = np.real(np.fft.ifft2(spectrum, axes=(0, 1)))
        image = (image - image.min()) / (image.max() - image.min())
        return (image * 255).astype(np.uint8)


def synthetic_frames(count: int, height: int = VGA[0], width: int = VGA[1]) -> list[np.ndarray]:
    """``count`` BGR frames of a camera panning slowly across natural images (bouncing at the ends)."""
    strip = _panorama(height + PAN_STEP[0] * 8)
    frames = []
    span_x = strip.shape[1] - width
    span_y = strip.shape[0] - height
    for t in range(count):
        x = (t * PAN_STEP[1]) % (2 * span_x)
        y = (t * PAN_STEP[0]) % (2 * span_y)
        x = x if x <= span_x else 2 * span_x - x
        y = y if y <= span_y else 2 * span_y - y
        frames.append(np.ascontiguousarray(strip[y:y + height, x:x + width]))
    return frames


def frame_message(image: np.ndarray, kind: str) -> pb.Frame:
    """A BGR frame as a pvae.v1 Frame: JPEG q90 (``kind`` "jpeg") or raw uint8 gray."""
    if kind == "jpeg":
        _ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        return pb.Frame(encoded=buffer.tobytes())
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return pb.Frame(raw=pb.RawFrame(height=gray.shape[0], width=gray.shape[1], channels=1, data=gray.tobytes()))


# ----------------------------------------------------------------------------- in-process


class InProcessRunner:
    """The frames through decode -> engine -> sampler -> packing -> result message, one at a time,
    in this process: what an application embedding the engine would do."""

    def __init__(self, config: BenchConfig, bundle_path: Path, frames: Sequence[pb.Frame]) -> None:
        self.engine = Engine(resolve_bundle(bundle_path), resolve_device(config.device, config.gpu),
                             config.server_threads)
        self.engine.warm_up([config.size])
        self.pipeline = Pipeline(self.engine)
        self.spec, _ = parse_options(config.encode_options().to_proto(), 90)
        self.limits = FrameLimits(max_height=4096, max_width=4096, max_pixels=1 << 25, max_bytes=1 << 26,
                                  min_side=self.engine.min_frame_side)
        self.frames = frames
        self.config = config

    def batch(self, first: int, size: int) -> tuple[float, list[pb.StreamEncodeResponse], list[StageTimes]]:
        """``size`` frames decoded, then run as one batch (what the server does for equal sizes): the seconds,
        the responses and each frame's stage times."""
        start = time.perf_counter()
        indices = range(first, first + size)
        jobs = []
        for i in indices:
            decode_start = time.perf_counter()
            job = FrameJob(decode_frame(self.frames[i % len(self.frames)], self.limits), self.spec, seed=i)
            job.times.decode = time.perf_counter() - decode_start
            jobs.append(job)
        responses = []
        for i, result in zip(indices, self.pipeline.process(jobs), strict=True):
            response = pb.StreamEncodeResponse(sequence=i)
            fill_result(response.result, result, time.perf_counter() - start)
            responses.append(response)
        return time.perf_counter() - start, responses, [job.times for job in jobs]

    def run(self, figures: RunFigures, frames: int, batch: int = 1) -> None:
        """One round: ``frames`` frames, ``batch`` at a time."""
        self.batch(0, max(1, min(self.config.warmup, batch)))
        started = time.perf_counter()
        for first in range(0, frames, batch):
            size = min(batch, frames - first)
            latency, responses, stage_times = self.batch(first, size)
            for times in stage_times:
                for stage in STAGES:
                    figures.stages.setdefault(stage, []).append(getattr(times, stage))
            for i, response in zip(range(first, first + size), responses, strict=True):
                figures.latencies_s.append(latency)
                figures.add_response(response.result, response.ByteSize())
                figures.add_requests(1, self.frames[i % len(self.frames)].ByteSize())
        figures.add_round(frames, time.perf_counter() - started)


# ----------------------------------------------------------------------------- the server process


@contextlib.contextmanager
def server_processes(config: BenchConfig, bundle_path: Path) -> Iterator[int]:
    """Start ``server_processes`` pvae-serve processes on one loopback port; yield the port; SIGTERM them."""
    port = free_port()
    command = [sys.executable, "-m", "pvae.serving", "--model", str(bundle_path), "--port", str(port),
               "--metrics-port", "off", "--device", config.device, "--intra-op-threads", str(config.server_threads),
               "--max-window", str(max(config.window, 1)), "--default-window", str(max(config.window, 1)),
               *config.extra_server_args]
    if config.gpu is not None:
        command += ["--gpu", str(config.gpu)]
    processes = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
                 for _ in range(config.server_processes)]
    try:
        for process in processes:
            assert process.stderr is not None
            deadline = time.monotonic() + SERVER_START_TIMEOUT_S
            for line in process.stderr:
                if re.search(r" on \S+:\d+ ", line):
                    break
                if time.monotonic() > deadline:
                    raise ConfigError("pvae-serve did not start in time")
            else:
                raise ConfigError(f"pvae-serve exited with code {process.wait()}")
        yield port
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()


def _check(result: FrameResult) -> None:
    if not result.ok:
        raise ConfigError(f"frame {result.sequence} failed: {result.error or 'dropped'}")


async def _streams(address: str, frames: Sequence[pb.Frame], n_streams: int, config: BenchConfig,
                   figures: RunFigures) -> None:
    """``n_streams`` concurrent streams, one client (channel) each as separate clients would be,
    ``frames`` frames each with at most ``window`` in flight; warm-up streams first, on the same clients."""
    budget = config.frame_budget
    if budget is None:
        raise ConfigError("pvae-bench-serve counts frames per stream: give frames, not a duration")
    clients = [AsyncClient(address, options=config.encode_options()) for _ in range(n_streams)]
    try:

        def record(result: FrameResult) -> None:
            _check(result)
            assert result.message is not None  # decode=False keeps it
            figures.add_response(result.message, result.response_bytes)

        def streams(count: int, offset: int, tally: Tally, timed: bool) -> list[Any]:
            return [stream_frames(client, frames, Tickets(count), tally, window=config.window, offset=offset * s,
                                  on_result=record if timed else _check)
                    for s, client in enumerate(clients)]

        if config.warmup:
            await asyncio.gather(*streams(config.warmup, WARMUP_OFFSET, Tally(), timed=False))
        tally = Tally()
        started = time.perf_counter()
        await asyncio.gather(*streams(budget, TIMED_OFFSET, tally, timed=True))
        figures.add_round(n_streams * budget, time.perf_counter() - started)
        if tally.stream_errors:
            raise ConfigError(f"a stream failed: {tally.stream_errors[0]}")
        figures.add_tally(tally)
    finally:
        await asyncio.gather(*(client.close() for client in clients))


# ----------------------------------------------------------------------------- the benchmark


def run_benchmark(config: BenchConfig, progress: Any = None) -> dict[str, Any]:
    """Run everything and return the figures (also what ``--json`` writes)."""
    budget = config.frame_budget
    if budget is None:
        raise ConfigError("pvae-bench-serve counts frames per stream: give frames, not a duration")
    bundle = resolve_bundle(config.model)
    images = synthetic_frames(max(budget, 30), *config.size)
    frames = [frame_message(image, config.input) for image in images]
    in_process = InProcessRunner(config, bundle.root, frames)
    preprocessing = bundle.manifest.get("preprocessing")
    cfg = PatchConfig.from_dict(preprocessing) if preprocessing else None
    speeds = [host_speed(cfg).opencv_ms] if cfg is not None else []
    started = cpu_times()
    baseline = RunFigures("in-process")
    batched = RunFigures(f"in-proc b{config.window}")
    runs = {n: RunFigures(f"{n} stream{'s' if n > 1 else ''}") for n in config.concurrency}
    with server_processes(config, bundle.root) as port:
        for round_index in range(config.rounds):
            in_process.run(baseline, budget)
            if config.window > 1:
                in_process.run(batched, budget, batch=config.window)
            for n, figures in runs.items():
                asyncio.run(_streams(f"127.0.0.1:{port}", frames, n, config, figures))
            if progress is not None:
                progress(f"round {round_index + 1}/{config.rounds}: in-process {baseline.round_fps[-1]:.2f} fps, "
                         + ", ".join(f"{f.name} {f.round_fps[-1]:.2f} fps" for f in runs.values()))
    ended = cpu_times()
    steal = ended.steal_since(started) if started is not None and ended is not None else None
    if cfg is not None:
        speeds.append(host_speed(cfg).opencv_ms)  # before and after: the host's speed drifts
    return {
        "config": {**asdict(config), "model": str(bundle.root), "n_latents": bundle.n_latents,
                   "cpu_count": os.cpu_count(), "sampler": in_process.engine.sampler_backend},
        "in_process": baseline.summary(),
        "in_process_batched": batched.summary() if batched.frames else None,
        "streaming": [run.summary() for run in runs.values()],
        "host": {"opencv_ms": statistics.median(speeds), "opencv_ms_each": speeds,
                 "reference_ms": OPENCV_REFERENCE_MS, "steal_during_rounds": steal} if speeds else None,
    }


def realtime_lines(streaming: list[dict[str, Any]], host_factor: float | None = None,
                   formats: tuple[str, str] = COMPACT_FORMATS) -> list[str]:
    """The real-time targets: 1 stream >= 50 fps with p50 <= 30 ms, 4 streams >= 60 fps, and the compact
    round trip. With ``host_factor`` (this host's time over the reference machine's for the same OpenCV
    work, pvae.bench.host), the stream targets are judged a second time on the figures scaled to the
    reference machine's speed (fps x factor, latency / factor).

    The round trip is the frame in and the rates, counts and stats out (the worst stream row; images sent
    back, the reconstruction or the preprocessed frame, are left apart, as in the target's baseline). It
    is judged only for a run with the compact ``formats`` (float, count), ``COMPACT_FORMATS``."""
    lines = []
    for row in streaming:
        fps, p50 = row["fps"], row["p50_ms"]
        for scaled in (False, True) if host_factor else (False,):
            if scaled:
                assert host_factor is not None
                fps, p50 = row["fps"] * host_factor, row["p50_ms"] / host_factor
            at = " at the reference speed" if scaled else ""
            if row["name"] == "1 stream":
                met = fps >= TARGET_ONE_STREAM_FPS and p50 <= TARGET_ONE_STREAM_P50_MS
                lines.append(f"1 stream >= {TARGET_ONE_STREAM_FPS:.0f} fps with p50 <= {TARGET_ONE_STREAM_P50_MS:.0f} "
                             f"ms{at}: {'met' if met else 'MISSED'} ({fps:.1f} fps, p50 {p50:.1f} ms)")
            elif row["name"] == "4 streams":
                met = fps >= TARGET_FOUR_STREAMS_FPS
                lines.append(f"4 streams >= {TARGET_FOUR_STREAMS_FPS:.0f} fps in total{at}: "
                             f"{'met' if met else 'MISSED'} ({fps:.1f} fps)")
    if streaming:
        target = f"round trip <= {TARGET_COMPACT_WIRE_BYTES / 1e6:.1f} MB with rates requested (compact formats)"
        if formats != COMPACT_FORMATS:
            lines.append(f"{target}: not judged (this run: --float-format {formats[0]} --count-format {formats[1]}; "
                         f"the target is for {' + '.join(COMPACT_FORMATS)})")
        else:
            worst = max(_round_trip_without_images(row) for row in streaming)
            met = worst <= TARGET_COMPACT_WIRE_BYTES
            lines.append(f"{target}: {'met' if met else 'MISSED'} ({worst / 1e6:.3f} MB, images sent back left apart)")
    return lines


def _round_trip_without_images(row: dict[str, Any]) -> float:
    parts = row.get("response_parts_bytes") or {}
    return float(row["round_trip_bytes"] - sum(parts.get(image, 0.0) for image in IMAGE_PARTS))


def format_report(figures: dict[str, Any]) -> str:
    """A table of the figures and the targets."""
    base = figures["in_process"]
    batched = figures.get("in_process_batched")
    rows = [base, *([batched] if batched else []), *figures["streaming"]]
    lines = [f"{'run':<12} {'frames':>6} {'fps':>7} {'vs in-proc':>10} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>7} "
             f"{'req kB':>7} {'resp kB':>8} {'batch':>5}"]
    for row in rows:
        lines.append(f"{row['name']:<12} {row['frames']:>6} {row['fps']:>7.2f} {row['fps'] / base['fps']:>10.2f} "
                     f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['p99_ms'] / row['p50_ms']:>7.2f} "
                     f"{row['request_bytes'] / 1e3:>7.1f} {row['response_bytes'] / 1e3:>8.1f} "
                     f"{row['mean_batch_size']:>5.2f}")
    lines.append("")
    parts = base["response_parts_bytes"]
    lines.append(f"round trip per frame: request {base['request_bytes'] / 1e3:.1f} kB + response "
                 f"{base['response_bytes'] / 1e3:.1f} kB (rates {parts.get('rates', 0) / 1e3:.1f} kB, counts "
                 f"{parts.get('counts', 0) / 1e3:.1f} kB, reconstruction "
                 f"{parts.get('reconstruction', 0) / 1e3:.1f} kB)")
    # The target is judged against the faster of the two in-process runs (the stricter reading).
    reference = max([base, *([batched] if batched else [])], key=lambda r: r["fps"])
    for row in figures["streaming"]:
        ratio = row["fps"] / reference["fps"]
        tail = row["p99_ms"] / row["p50_ms"]
        lines.append(f"{row['name']}: throughput {ratio:.0%} of {reference['name']} "
                     f"(target >= {TARGET_STREAM_RATIO:.0%}: "
                     f"{'met' if ratio >= TARGET_STREAM_RATIO else 'MISSED'}); p99/p50 {tail:.2f} "
                     f"(target <= {TARGET_P99_OVER_P50:.0f} with 4 streams: "
                     f"{'met' if tail <= TARGET_P99_OVER_P50 else 'MISSED'}); round trip "
                     f"{row['round_trip_bytes'] / 1e6:.3f} MB/frame (target < {TARGET_WIRE_BYTES / 1e6:.1f} MB: "
                     f"{'met' if row['round_trip_bytes'] < TARGET_WIRE_BYTES else 'MISSED'})")
    stages = base.get("stage_ms") or {}
    if stages:
        lines.append("in-process stage medians per frame: " + ", ".join(f"{k} {v:.2f} ms" for k, v in stages.items())
                     + f" (sampler: {figures['config'].get('sampler', '?')})")
    host = figures.get("host")
    if host:
        lines.append(HostSpeed(host["opencv_ms"]).describe())
        if host.get("steal_during_rounds") is not None:
            lines.append(f"CPU time stolen by the hypervisor during the rounds: {host['steal_during_rounds']:.0%}")
    lines.extend(realtime_lines(figures["streaming"], HostSpeed(host["opencv_ms"]).factor if host else None,
                                (figures["config"]["float_format"], figures["config"]["count_format"])))
    cfg = figures["config"]
    lines.append(f"(model {cfg['model']}, K={cfg['n_latents']}, {cfg['cpu_count']} CPUs, device {cfg['device']}, "
                 f"window {cfg['window']}, input {cfg['input']}, reconstruction {cfg['image_encoding']}, "
                 f"{cfg['server_processes']} server process(es) x {cfg['server_threads'] or 'all'} threads)")
    return "\n".join(lines)


#: Fields pvae-bench-serve has no flag for (pvae-bench's own).
LOAD_ONLY = ("server", "metrics_url", "mode", "size", "outputs", "duration_s", "fps", "baseline", "baseline_frames")


def _parse(argv: Sequence[str] | None) -> tuple[BenchConfig, Path | None]:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     prog="pvae-bench-serve", description=__doc__.splitlines()[0] if __doc__ else "")
    add_config_flags(parser, BenchConfig, defaults=SERVE_DEFAULTS, exclude=LOAD_ONLY, flags={
        "concurrency": Flag(name="--streams"),
        "extra_server_args": Flag(name="--server-arg", repeat=True),
    })
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    return dataclasses.replace(SERVE_DEFAULTS, **flag_values(BenchConfig, args)), args.json


def _main(argv: Sequence[str] | None) -> int:
    config, json_path = _parse(argv)
    figures = run_benchmark(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_report(figures))
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``pvae-bench-serve``."""
    return run_cli("pvae-bench-serve", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
