"""``pvae-bench``: a load generator for pvae-serve, in the spirit of Triton's perf_analyzer.

It targets a running server (``--server host:port``) or starts one (``--model BUNDLE|CKPT``, default
the bundled model) as a separate ``pvae-serve`` process on loopback, then, for each concurrency
level of ``--concurrency``, runs that many clients (one channel each) in ``unary`` mode (one
``Encode`` after another) or ``stream`` mode (one ``StreamEncode`` with an in-flight window), open
loop or paced at ``--fps`` frames/s in total, for ``--duration`` seconds or ``--frames`` frames.

Per level it reports throughput (frames/s, patches/s, MB/s on the wire), latency (avg ± std,
p50/p90/p95/p99; from handing a frame to gRPC to receiving its result), the server-side per-stage
split (the delta of ``pvae_stage_duration_seconds`` ``_sum``/``_count`` over the level, read from
``--metrics-url``) and the ratio to the in-process engine, measured in the same run on the same
frames (``pvae.bench.serve.InProcessRunner``). ``--csv``, ``--json`` and ``--plot DIR`` write the
figures. Streams are the load generator's (``pvae.bench.loadgen``: the project's own ``AsyncClient``).

    pvae-bench --model runs/quick/best.bundle --concurrency 1,2,4 --duration 10 --plot bench/
    pvae-bench --server 10.0.0.5:50051 --metrics-url http://10.0.0.5:9464/metrics --mode unary
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import dataclasses
import json
import math
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from pvae.bench.config import BenchConfig
from pvae.bench.loadgen import Tally, Tickets, stream_frames
from pvae.cli import Flag, add_config_flags, flag_values, free_port, run_cli
from pvae.clients import AsyncClient
from pvae.clients.frames import frame_to_proto
from pvae.clients.options import OUTPUTS
from pvae.clients.synthetic import SyntheticCamera
from pvae.errors import ConfigError, MissingDependencyError
from pvae.v1 import pvae_pb2 as pb
from pvae.v1 import pvae_pb2_grpc as pb_grpc

__all__ = [
    "BenchConfig",
    "LevelFigures",
    "format_report",
    "main",
    "parse_size",
    "run_bench",
    "stage_split",
    "write_csv",
    "write_plots",
]

#: Latency percentiles reported (perf_analyzer reports p50/p90/p95/p99).
PERCENTILES = (50, 90, 95, 99)
#: Distinct synthetic frames cycled through (encoded once, before timing).
FRAME_POOL = 30
#: Seconds between progress lines.
PROGRESS_INTERVAL_S = 1.0
#: gRPC message limit of the bench's channels: a raw 4K frame plus its outputs fit.
MESSAGE_LIMIT_BYTES = 64 << 20
#: Seconds to wait for a metrics scrape.
SCRAPE_TIMEOUT_S = 10.0
#: Stage histogram of the server (pvae.serving.metrics).
STAGE_METRIC = "pvae_stage_duration_seconds"
#: One megabyte (decimal, as network throughput is quoted).
MB = 1e6


@dataclass
class LevelFigures:
    """Raw measurements of one concurrency level."""

    concurrency: int
    tally: Tally = field(default_factory=Tally)
    seconds: float = 0.0

    @property
    def latencies_s(self) -> list[float]:
        return self.tally.latencies_s

    @property
    def errors(self) -> dict[str, int]:
        """Failed frames by status name: in-band errors, frames lost with a failed stream or call, and
        responses that carried no result (UNKNOWN)."""
        errors = dict(self.tally.failed)
        for name, count in self.tally.lost.items():
            errors[name] = errors.get(name, 0) + count
        if self.tally.drop_reports:
            errors["UNKNOWN"] = errors.get("UNKNOWN", 0) + self.tally.drop_reports
        return errors

    def summary(self, patches_per_frame: int) -> dict[str, Any]:
        """The row that the report, CSV and JSON show (latencies in ms)."""
        frames = len(self.latencies_s)
        latencies_ms = np.asarray(self.latencies_s, dtype=np.float64) * 1e3
        sent_bytes, received_bytes = self.tally.sent_bytes, self.tally.received_bytes
        row: dict[str, Any] = {
            "concurrency": self.concurrency, "frames": frames, "errors": sum(self.errors.values()),
            "seconds": self.seconds, "fps": frames / self.seconds if self.seconds else 0.0,
            "patches_per_s": frames * patches_per_frame / self.seconds if self.seconds else 0.0,
            "mb_per_s": (sent_bytes + received_bytes) / MB / self.seconds if self.seconds else 0.0,
            "avg_ms": float(latencies_ms.mean()) if frames else math.nan,
            "std_ms": float(latencies_ms.std()) if frames else math.nan,
        }
        for q in PERCENTILES:
            row[f"p{q}_ms"] = float(np.percentile(latencies_ms, q)) if frames else math.nan
        return row


# ----------------------------------------------------------------------------- server metrics


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text endpoint, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def stage_split(before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
                after: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    """Mean milliseconds per stage between two scrapes: delta(_sum) / delta(_count) of the stage histogram."""
    split = {}
    for (name, labels), value in after.items():
        if name != f"{STAGE_METRIC}_count":
            continue
        count = value - before.get((name, labels), 0.0)
        if count <= 0:
            continue
        sum_key = (f"{STAGE_METRIC}_sum", labels)
        seconds = after.get(sum_key, 0.0) - before.get(sum_key, 0.0)
        split[dict(labels)["stage"]] = seconds / count * 1e3
    return split


# ----------------------------------------------------------------------------- load


def _channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=_message_limits())


async def _unary_client(address: str, frames: Sequence[pb.Frame], options: pb.EncodeOptions, tickets: Tickets,
                        tally: Tally) -> None:
    """One Encode call after another, one frame per ticket."""
    async with _channel(address) as channel:
        stub = pb_grpc.EncoderStub(channel)
        while (index := await tickets.take()) is not None:
            request = pb.EncodeRequest(frame=frames[index % len(frames)], options=options)
            started = time.perf_counter()
            tally.sent += 1
            tally.sent_bytes += request.ByteSize()
            try:
                response = await stub.Encode(request)
            except grpc.aio.AioRpcError as exc:
                tally.failed[exc.code().name] = tally.failed.get(exc.code().name, 0) + 1
                continue
            tally.answered += 1
            tally.latencies_s.append(time.perf_counter() - started)
            tally.received_bytes += response.ByteSize()


async def _progress(figures: LevelFigures, started: float, report: Callable[[str], None]) -> None:
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL_S)
        elapsed = time.perf_counter() - started
        report(f"  concurrency {figures.concurrency}: {len(figures.latencies_s)} frames in {elapsed:.1f} s "
               f"({len(figures.latencies_s) / elapsed:.1f} frames/s), {sum(figures.errors.values())} errors")


async def run_level(address: str, frames: Sequence[pb.Frame], config: BenchConfig, concurrency: int,
                    report: Callable[[str], None] | None = None) -> LevelFigures:
    """``concurrency`` clients for one level (after ``warmup`` untimed frames each); the raw figures.

    Stream mode: each client is an ``AsyncClient`` (its own channel) with one stream at a time, fed
    by the load generator; unary mode: one Encode after another on a channel of its own."""
    options = config.encode_options()
    clients = [AsyncClient(address, options=options, channel_options=_message_limits())
               for _ in range(concurrency if config.mode == "stream" else 0)]

    def client(index: int, tickets: Tickets, tally: Tally) -> Any:
        if config.mode == "unary":
            return _unary_client(address, frames, options.to_proto(), tickets, tally)
        return stream_frames(clients[index], frames, tickets, tally, window=config.window, label=f"client {index}")

    try:
        if config.warmup:
            warm = Tickets(config.warmup * concurrency)
            await asyncio.gather(*(client(i, warm, Tally()) for i in range(concurrency)))
        figures = LevelFigures(concurrency)
        tickets = Tickets(config.frame_budget, config.duration_s, config.fps)
        ticker = asyncio.create_task(_progress(figures, tickets.started, report)) if report else None
        try:
            await asyncio.gather(*(client(i, tickets, figures.tally) for i in range(concurrency)))
        finally:
            figures.seconds = time.perf_counter() - tickets.started
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    return figures


def _message_limits() -> list[tuple[str, Any]]:
    return [("grpc.max_receive_message_length", MESSAGE_LIMIT_BYTES),
            ("grpc.max_send_message_length", MESSAGE_LIMIT_BYTES)]


# ----------------------------------------------------------------------------- the run


@contextlib.contextmanager
def _target(config: BenchConfig) -> Iterator[tuple[str, str | None]]:
    """(gRPC address, metrics URL): the given server, or a ``pvae-serve`` process started for the run."""
    if config.server is not None:
        yield config.server, config.metrics_url
        return
    from pvae.bench.serve import server_processes
    from pvae.serving.source import resolve_bundle

    bundle = resolve_bundle(config.model)
    metrics_port = free_port()
    serve = dataclasses.replace(config, extra_server_args=(
        *config.extra_server_args, "--metrics-port", str(metrics_port),
        "--warmup-sizes", f"{config.size[0]}x{config.size[1]}"))
    with server_processes(serve, bundle.root) as port:
        yield f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"


def _baseline(config: BenchConfig, frames: Sequence[pb.Frame]) -> dict[str, Any]:
    """The in-process engine (decode -> graphs -> sampler -> packing), one frame at a time, same frames."""
    from pvae.bench.serve import InProcessRunner, RunFigures
    from pvae.serving.source import resolve_bundle

    bundle = resolve_bundle(config.model)
    runner = InProcessRunner(dataclasses.replace(config, warmup=1), bundle.root, frames)
    figures = RunFigures("in-process")
    runner.run(figures, config.baseline_frames)
    return {"frames": figures.frames, "fps": figures.fps, "p50_ms": figures.percentile_ms(50),
            "p99_ms": figures.percentile_ms(99)}


def _patches_per_frame(address: str, size: tuple[int, int]) -> int:
    with grpc.insecure_channel(address) as channel:
        info = pb_grpc.EncoderStub(channel).Info(pb.InfoRequest(), timeout=SCRAPE_TIMEOUT_S)
    patch = info.model.patch_size
    return (size[0] // patch) * (size[1] // patch)


def make_frames(config: BenchConfig) -> list[pb.Frame]:
    """The synthetic camera's frames at ``config.size``, encoded once as the bench sends them."""
    camera = SyntheticCamera(height=config.size[0], width=config.size[1])
    return [frame_to_proto(camera.frame(i), config.input) for i in range(FRAME_POOL)]


def run_bench(config: BenchConfig, report: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every concurrency level (and the baseline); the figures that ``--json`` writes."""
    say = report or (lambda _line: None)
    frames = make_frames(config)
    baseline = None
    if config.baseline and (config.server is None or config.model is not None):
        say("in-process baseline ...")
        baseline = _baseline(config, frames)
        say(f"in-process baseline: {baseline['fps']:.2f} frames/s")
    levels = []
    with _target(config) as (address, metrics_url):
        patches_per_frame = _patches_per_frame(address, config.size)
        for concurrency in config.concurrency:
            say(f"{config.mode}, concurrency {concurrency} ...")
            before = scrape(metrics_url) if metrics_url else {}
            figures = asyncio.run(run_level(address, frames, config, concurrency, report))
            row = figures.summary(patches_per_frame)
            if metrics_url:
                row["stages_ms"] = stage_split(before, scrape(metrics_url))
            row["vs_in_process"] = row["fps"] / baseline["fps"] if baseline else None
            row["errors_by_code"] = dict(figures.errors)
            levels.append(row)
            say(f"{config.mode}, concurrency {concurrency}: {row['fps']:.2f} frames/s, p50 {row['p50_ms']:.1f} ms")
    return {"config": {**asdict(config), "address": address, "metrics_url": metrics_url,
                       "patches_per_frame": patches_per_frame},
            "in_process": baseline, "levels": levels}


# ----------------------------------------------------------------------------- output


def format_report(figures: dict[str, Any]) -> str:
    """The perf_analyzer-style table of every level, the stage split and the baseline."""
    cfg = figures["config"]
    lines = [f"pvae-bench: {cfg['mode']} against {cfg['address']}, {cfg['size'][1]}x{cfg['size'][0]} "
             f"{cfg['input']} frames, outputs {','.join(cfg['outputs'])}, "
             + (f"paced at {cfg['fps']} frames/s" if cfg["fps"] else "open loop")]
    header = (f"{'conc':>4} {'frames':>6} {'err':>4} {'frames/s':>9} {'patches/s':>10} {'MB/s':>7} "
              f"{'avg±std ms':>15} " + " ".join(f"{f'p{q} ms':>8}" for q in PERCENTILES) + f" {'vs in-proc':>10}")
    lines.append(header)
    for row in figures["levels"]:
        ratio = f"{row['vs_in_process']:.2f}" if row["vs_in_process"] is not None else "n/a"
        lines.append(f"{row['concurrency']:>4} {row['frames']:>6} {row['errors']:>4} {row['fps']:>9.2f} "
                     f"{row['patches_per_s']:>10.0f} {row['mb_per_s']:>7.2f} "
                     f"{row['avg_ms']:>8.1f}±{row['std_ms']:<6.1f} "
                     + " ".join(f"{row[f'p{q}_ms']:>8.1f}" for q in PERCENTILES) + f" {ratio:>10}")
    for row in figures["levels"]:
        stages = row.get("stages_ms")
        if stages:
            lines.append(f"server stages, concurrency {row['concurrency']} (mean ms): "
                         + ", ".join(f"{name} {ms:.2f}" for name, ms in stages.items()))
        if row["errors_by_code"]:
            lines.append(f"errors, concurrency {row['concurrency']}: {row['errors_by_code']}")
    base = figures["in_process"]
    lines.append(f"in-process engine: {base['fps']:.2f} frames/s over {base['frames']} frames "
                 f"(p50 {base['p50_ms']:.1f} ms)" if base
                 else "in-process engine: not measured (--no-baseline, or --server without --model)")
    return "\n".join(lines)


#: CSV columns, in order (stage means are appended as stage_<name>_ms).
CSV_COLUMNS = ("concurrency", "frames", "errors", "seconds", "fps", "patches_per_s", "mb_per_s", "avg_ms",
               "std_ms", *(f"p{q}_ms" for q in PERCENTILES), "vs_in_process")


def write_csv(figures: dict[str, Any], path: Path) -> None:
    """One row per concurrency level."""
    stages = sorted({name for row in figures["levels"] for name in row.get("stages_ms", {})})
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*CSV_COLUMNS, *(f"stage_{name}_ms" for name in stages)])
        for row in figures["levels"]:
            writer.writerow([row[c] for c in CSV_COLUMNS]
                            + [row.get("stages_ms", {}).get(name, "") for name in stages])


def write_plots(figures: dict[str, Any], directory: Path) -> list[Path]:
    """``latency.png`` (percentiles) and ``throughput.png`` (frames/s) against concurrency."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on servers and CI
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError("--plot needs matplotlib: pip install 'pvae[train]' (or matplotlib)") from exc
    directory.mkdir(parents=True, exist_ok=True)
    levels = figures["levels"]
    x = [row["concurrency"] for row in levels]
    title = f"pvae-bench {figures['config']['mode']}, {figures['config']['size'][1]}x{figures['config']['size'][0]}"
    paths = [directory / "latency.png", directory / "throughput.png"]

    fig, ax = plt.subplots(figsize=(6, 4))
    for q in PERCENTILES:
        ax.plot(x, [row[f"p{q}_ms"] for row in levels], marker="o", label=f"p{q}")
    ax.set(xlabel="concurrency (clients)", ylabel="latency (ms)", title=f"{title}: latency", xticks=x)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [row["fps"] for row in levels], marker="o", label="over gRPC")
    if figures["in_process"]:
        ax.axhline(figures["in_process"]["fps"], color="gray", linestyle="--", label="in-process engine")
    ax.set(xlabel="concurrency (clients)", ylabel="frames/s", title=f"{title}: throughput", xticks=x)
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths


# ----------------------------------------------------------------------------- CLI


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` (e.g. ``640x480``) as (height, width)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as exc:
        raise ConfigError(f"--size: WxH such as 640x480, got {text!r}") from exc
    return height, width


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _size_text(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]}"


#: Fields pvae-bench has no flag for (pvae-bench-serve's own).
SERVE_ONLY = ("gpu", "image_encoding", "rounds", "server_processes", "server_threads", "extra_server_args")


def _parse(argv: Sequence[str] | None) -> tuple[BenchConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     prog="pvae-bench", description=(__doc__ or "").splitlines()[0].replace("``", ""))
    add_config_flags(parser, BenchConfig, exclude=SERVE_ONLY, flags={
        "size": Flag(parse=parse_size, format=_size_text),
        "outputs": Flag(parse=_names, help="{doc} Any of " + ",".join(OUTPUTS) + "."),
        "duration_s": Flag(name="--duration"),
        "baseline": Flag(negatable=False),
    })
    parser.add_argument("--csv", type=Path, default=None, help="write one row per concurrency level")
    parser.add_argument("--json", type=Path, default=None, help="write every figure and the config")
    parser.add_argument("--plot", type=Path, default=None, help="directory for latency.png and throughput.png")
    args = parser.parse_args(argv)
    return BenchConfig(**flag_values(BenchConfig, args)), args


def _main(argv: Sequence[str] | None) -> int:
    config, args = _parse(argv)
    figures = run_bench(config, report=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_report(figures))
    for path in (args.csv, args.json):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    if args.csv is not None:
        write_csv(figures, args.csv)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    if args.plot is not None:
        for path in write_plots(figures, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``pvae-bench``."""
    return run_cli("pvae-bench", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
