"""pvae-bench: config checks, the stage split, pacing, and full runs against an in-process server."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import time
from pathlib import Path

import pytest

from pvae.bench.load import (
    BenchConfig,
    format_report,
    main,
    parse_size,
    run_bench,
    scrape,
    stage_split,
    write_csv,
    write_plots,
)
from pvae.bench.loadgen import Tickets
from pvae.bundle import Bundle
from pvae.errors import ConfigError
from pvae.serving.inprocess import InProcessServer

#: Small frames keep the tiny model fast: (height, width), 3 x 4 patches of 16 pixels.
HEIGHT, WIDTH = 48, 64
SIZE_FLAG = f"{WIDTH}x{HEIGHT}"


#: The module's server (conftest) serves metrics, warmed up for the frame size of the tests.
SERVER_CONFIG = {"metrics_port": 0, "warmup_sizes": ((HEIGHT, WIDTH),)}


def _metrics_url(server: InProcessServer) -> str:
    assert server.running is not None and server.running.metrics_port is not None
    return f"http://127.0.0.1:{server.running.metrics_port}/metrics"


# ----------------------------------------------------------------------------- units


def test_parse_size_is_width_by_height() -> None:
    assert parse_size("640x480") == (480, 640)
    with pytest.raises(ConfigError, match="--size"):
        parse_size("640")


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "batch"}, "mode"),
    ({"concurrency": (0,)}, "concurrency"),
    ({"outputs": ("rates", "bogus")}, "outputs"),
    ({"duration_s": 1.0, "frames": 5}, "not both"),
    ({"fps": 0.0}, "fps"),
    ({"window": 0}, "window"),
])
def test_config_rejects_bad_fields(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BenchConfig(**kwargs)


def test_frame_budget_defaults_to_60_unless_timed() -> None:
    assert BenchConfig().frame_budget == 60
    assert BenchConfig(frames=7).frame_budget == 7
    assert BenchConfig(duration_s=2.0).frame_budget is None


def test_stage_split_is_delta_sum_over_delta_count() -> None:
    before = {("pvae_stage_duration_seconds_sum", (("stage", "decode"),)): 1.0,
              ("pvae_stage_duration_seconds_count", (("stage", "decode"),)): 10.0,
              ("pvae_stage_duration_seconds_count", (("stage", "queue"),)): 3.0}
    after = {("pvae_stage_duration_seconds_sum", (("stage", "decode"),)): 1.5,
             ("pvae_stage_duration_seconds_count", (("stage", "decode"),)): 20.0,
             ("pvae_stage_duration_seconds_sum", (("stage", "queue"),)): 9.0,
             ("pvae_stage_duration_seconds_count", (("stage", "queue"),)): 3.0}
    # decode: 0.5 s over 10 frames = 50 ms; queue saw no new frames and is left out
    assert stage_split(before, after) == {"decode": pytest.approx(50.0)}


def test_tickets_budget_and_pacing() -> None:
    async def take_all(tickets: Tickets) -> list[int]:
        taken = []
        while (index := await tickets.take()) is not None:
            taken.append(index)
        return taken

    assert asyncio.run(take_all(Tickets(5, None, None))) == [0, 1, 2, 3, 4]
    paced = Tickets(5, None, 50.0)
    assert asyncio.run(take_all(paced)) == [0, 1, 2, 3, 4]
    # frame 4's slot is 4 / 50 s after the start: pacing can only make the run longer, never shorter
    assert time.perf_counter() - paced.started >= 4 / 50.0
    timed = Tickets(None, 0.05, 50.0)  # a deadline ends a paced level too
    assert len(asyncio.run(take_all(timed))) <= 3

# ----------------------------------------------------------------------------- against a server


@pytest.mark.parametrize("mode", ["unary", "stream"])
def test_run_counts_every_frame_the_server_counted(server: InProcessServer, tiny_bundle: Bundle, mode: str) -> None:
    url = _metrics_url(server)
    rpc = "Encode" if mode == "unary" else "StreamEncode"
    frames_key = ("pvae_frames_total", (("protocol", "pvae.v1"), ("rpc", rpc)))
    config = BenchConfig(server=server.address, metrics_url=url, model=str(tiny_bundle.root), mode=mode,
                         concurrency=(1, 2), size=(HEIGHT, WIDTH), frames=8, warmup=1, baseline_frames=3)
    before = scrape(url).get(frames_key, 0.0)
    figures = run_bench(config)
    after = scrape(url)[frames_key]
    levels = figures["levels"]
    assert [row["concurrency"] for row in levels] == [1, 2]
    for row in levels:
        assert row["frames"] == 8 and row["errors"] == 0
        assert row["p50_ms"] <= row["p90_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["patches_per_s"] == pytest.approx(row["fps"] * (HEIGHT // 16) * (WIDTH // 16))
        assert {"decode", "inference", "end_to_end"} <= set(row["stages_ms"])
        assert row["vs_in_process"] == pytest.approx(row["fps"] / figures["in_process"]["fps"])
    # the timed frames plus one warm-up frame per client, all counted by the server
    assert after - before == 2 * 8 + (1 + 2)
    report = format_report(figures)
    assert "p99 ms" in report and "server stages" in report and "in-process engine" in report


def test_paced_run_is_not_faster_than_asked(server: InProcessServer) -> None:
    fps = 20.0
    config = BenchConfig(server=server.address, size=(HEIGHT, WIDTH), frames=6, fps=fps, warmup=0, baseline=False)
    row = run_bench(config)["levels"][0]
    assert row["frames"] == 6
    assert row["seconds"] >= 5 / fps  # the 6th frame is sent 5 / fps after the first
    assert row["vs_in_process"] is None


def test_outputs_csv_json_and_plots(server: InProcessServer, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    config = BenchConfig(server=server.address, metrics_url=_metrics_url(server), concurrency=(1, 2),
                         size=(HEIGHT, WIDTH), frames=4, warmup=0, baseline=False, outputs=("rates",))
    figures = run_bench(config)
    write_csv(figures, tmp_path / "bench.csv")
    with (tmp_path / "bench.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["concurrency"]) for r in rows] == [1, 2]
    assert float(rows[0]["stage_end_to_end_ms"]) > 0
    assert not math.isnan(float(rows[1]["p99_ms"]))
    paths = write_plots(figures, tmp_path / "plots")
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_starts_its_own_server(tiny_bundle: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "figures.json"
    assert main(["--model", str(tiny_bundle.root), "--mode", "stream", "--concurrency", "2", "--size", SIZE_FLAG,
                 "--frames", "6", "--baseline-frames", "2", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "frames/s" in captured.out and "concurrency 2" in captured.err  # report, then progress lines
    figures = json.loads(out.read_text())
    assert figures["levels"][0]["frames"] == 6
    assert figures["config"]["metrics_url"].startswith("http://127.0.0.1:")
    assert figures["levels"][0]["stages_ms"]["end_to_end"] > 0


def test_cli_refuses_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--server", "127.0.0.1:1", "--frames", "3", "--duration", "1"]) == 2
    assert "not both" in capsys.readouterr().err


def test_realtime_targets_are_judged_with_their_figures() -> None:
    from pvae.bench.serve import realtime_lines

    rows = [{"name": "1 stream", "fps": 50.0, "p50_ms": 30.0, "round_trip_bytes": 700_000},
            {"name": "4 streams", "fps": 59.9, "p50_ms": 60.0, "round_trip_bytes": 800_001}]
    lines = realtime_lines(rows)
    assert lines[0] == "1 stream >= 50 fps with p50 <= 30 ms: met (50.0 fps, p50 30.0 ms)"
    assert lines[1] == "4 streams >= 60 fps in total: MISSED (59.9 fps)"
    assert lines[2] == ("round trip <= 0.8 MB with rates requested (compact formats): MISSED (0.800 MB, images sent "
                        "back left apart)")
    slow = realtime_lines([{**rows[0], "p50_ms": 30.1}])
    assert slow[0].startswith("1 stream >= 50 fps with p50 <= 30 ms: MISSED")
    assert slow[1].endswith("met (0.700 MB, images sent back left apart)")


def test_compact_round_trip_leaves_images_apart_and_needs_the_compact_formats() -> None:
    from pvae.bench.serve import realtime_lines

    row = {"name": "1 stream", "fps": 50.0, "p50_ms": 30.0, "round_trip_bytes": 843_000,
           "response_parts_bytes": {"rates": 321_000, "counts": 138_000, "reconstruction": 76_500}}
    assert realtime_lines([row])[-1] == ("round trip <= 0.8 MB with rates requested (compact formats): met "
                                         "(0.766 MB, images sent back left apart)")
    assert realtime_lines([{**row, "round_trip_bytes": 900_000}])[-1].split(": ")[1].startswith("MISSED (0.824 MB")
    assert realtime_lines([row], formats=("fp16", "sparse"))[-1] == (
        "round trip <= 0.8 MB with rates requested (compact formats): not judged (this run: --float-format fp16 "
        "--count-format sparse; the target is for u8log + rice)")


def test_realtime_targets_are_judged_again_at_the_reference_speed() -> None:
    from pvae.bench.serve import realtime_lines

    rows = [{"name": "1 stream", "fps": 40.0, "p50_ms": 36.0, "round_trip_bytes": 700_000},
            {"name": "4 streams", "fps": 45.0, "p50_ms": 90.0, "round_trip_bytes": 700_000}]
    lines = realtime_lines(rows, host_factor=1.25)  # this host takes 1.25x the reference machine's time
    assert lines[0] == "1 stream >= 50 fps with p50 <= 30 ms: MISSED (40.0 fps, p50 36.0 ms)"
    assert lines[1] == "1 stream >= 50 fps with p50 <= 30 ms at the reference speed: met (50.0 fps, p50 28.8 ms)"
    assert lines[2] == "4 streams >= 60 fps in total: MISSED (45.0 fps)"
    assert lines[3] == "4 streams >= 60 fps in total at the reference speed: MISSED (56.2 fps)"
    assert len(realtime_lines(rows)) == 3  # without a factor: one verdict per target


def test_host_speed_times_the_opencv_preprocessing() -> None:
    from pvae.bench.host import OPENCV_REFERENCE_MS, HostSpeed, host_speed
    from pvae.training.data import PatchConfig

    speed = host_speed(PatchConfig(), calls=3)
    assert speed.opencv_ms > 0 and speed.factor == speed.opencv_ms / OPENCV_REFERENCE_MS
    assert HostSpeed(8.8).factor == pytest.approx(2.0)
    assert "8.80 ms here, 4.4 ms" in HostSpeed(8.8).describe()
    assert HostSpeed(8.8, 0.31).describe().endswith("(this host is 2.00x its time; 31% of the CPU time stolen by the "
                                                    "hypervisor meanwhile)")


def test_cpu_steal_is_read_from_the_kernel_counters(tmp_path: Path) -> None:
    from pvae.bench.host import CpuTimes, cpu_times

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 1 2 3\n")
    before = cpu_times(stat)
    assert before == CpuTimes(steal=35, total=1000)
    stat.write_text("cpu  150 0 60 850 10 0 5 75 0 0\n")
    after = cpu_times(stat)
    assert before is not None and after is not None
    assert after.steal_since(before) == pytest.approx(40 / 150)
    assert before.steal_since(before) is None
    assert cpu_times(tmp_path / "missing") is None
    stat.write_text("intr 1 2 3\n")
    assert cpu_times(stat) is None


def test_bench_export_compares_two_bundles_in_the_same_rounds(capsys: pytest.CaptureFixture[str]) -> None:
    """pvae-bench-export --against: both bundles' graphs are timed and compared; the absolute targets are
    judged as measured and at the reference speed (no timing is asserted: one tiny round each)."""
    from pvae.bench.export import main as bench_export
    from pvae.serving.source import resolve_bundle

    bundle = str(resolve_bundle(None).root)
    argv = ["--bundle", bundle, "--against", bundle, "--batches", "1", "--rounds", "1", "--round-seconds", "0.01",
            "--threads", "1"]
    assert bench_export(argv) == 0
    out = capsys.readouterr().out
    frame_row = next(line for line in out.splitlines() if line.split()[:2] == ["1", "frame"])
    assert "<= 8 ms: " in frame_row and "at the reference speed (opencv 4.4 ms)" in frame_row
    section = out.split("this bundle vs --against", 1)[1].splitlines()[2:]
    assert [row.split()[1] for row in section] == ["preprocess", "frame", "rates"]
    assert all(float(row.split()[-1].rstrip("x")) > 0 for row in section)


def test_bench_pack_times_each_kernel_against_numpy(tiny_bundle: Bundle, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """pvae-bench-pack: one row per packer with both timings and a byte comparison (no timing is asserted)."""
    from pvae import native
    from pvae.bench.pack import PACKERS
    from pvae.bench.pack import main as bench_pack

    try:
        native.library()
    except native.NativeUnavailable as exc:
        pytest.skip(str(exc))
    out_json = tmp_path / "pack.json"
    assert bench_pack(["--model", str(tiny_bundle.root), "--rounds", "1", "--json", str(out_json)]) == 0
    rows = capsys.readouterr().out.splitlines()[1:1 + len(PACKERS)]
    assert [row[:18].strip() for row in rows] == list(PACKERS)
    assert all(row.endswith("yes") for row in rows)
    figures = json.loads(out_json.read_text())["packers"]
    assert all(r["native_ms"] > 0 and r["numpy_ms"] > 0 and r["equal"] for r in figures.values())


def test_bench_pack_refuses_without_the_kernels(tiny_bundle: Bundle, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from pvae.bench.pack import main as bench_pack

    monkeypatch.setenv("PVAE_NATIVE", "0")
    assert bench_pack(["--model", str(tiny_bundle.root), "--rounds", "1"]) == 2
    assert "native kernels are not built or are switched off" in capsys.readouterr().err
    assert bench_pack(["--rounds", "0"]) == 2
