"""pvae.clients against a real in-process server serving the tiny model's exported bundle.

The contract checks: streamed results are the service's outputs (rates equal the bundle's frame
graph, counts are the exact Poisson draws of the bundle's sampler for seed + sequence); the CLI's
--out video has one frame per frame sent; --save round-trips; drop_oldest drops under a slow
consumer; UNAVAILABLE at start-up is waited out; and the --view page, opened in headless Chromium,
shows a picture that changes (its own frame counter says so; no test waits a fixed time for it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
import pytest
from helpers import BundleGraphs, serve_config, wait_for

from pvae.bundle import Bundle
from pvae.clients import (
    AsyncClient,
    Client,
    CodeRecorder,
    EncodeOptions,
    FrameResult,
    RetryPolicy,
    ServerUnavailable,
    SyntheticCamera,
    cli,
    frame_to_proto,
    load_codes,
    to_gray,
)
from pvae.clients.errors import FrameError
from pvae.clients.render import LABEL_BAR_HEIGHT
from pvae.clients.results import decode_result
from pvae.errors import ConfigError
from pvae.serving.config import ServeConfig
from pvae.serving.inprocess import InProcessServer
from pvae.v1 import pvae_pb2 as pb
from pvae.v1 import pvae_pb2_grpc as pb_grpc

ort = pytest.importorskip("onnxruntime")
from pvae.export.sampler import poisson_reference  # noqa: E402 - after the onnxruntime check

#: Small frames keep the tests quick on two CPU cores: 48 x 64 is 3 x 4 patches.
HEIGHT, WIDTH = 48, 64
SEED = 1234
ALL_OUTPUTS = ("rates", "log_rates", "counts", "reconstruction", "preprocessed", "stats")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Headless Chromium flags that keep it off the network and quiet (CI runs it the same way).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Bundle) -> Bundle:
    """The tiny model as an ONNX bundle, exported once per session (conftest)."""
    return tiny_bundle


#: The module's server (conftest): windows of 4 frames by default, at most 8.
SERVER_CONFIG = {"max_window": 8, "default_window": 4}


@pytest.fixture()
def client(server: InProcessServer) -> Iterator[Client]:
    with Client(server.address, retry=RetryPolicy(timeout_s=10.0)) as connected:
        yield connected


def _frames(count: int, start: int = 0) -> list[np.ndarray]:
    camera = SyntheticCamera(HEIGHT, WIDTH)
    return [camera.frame(start + 7 * i) for i in range(count)]


def _check_against_graphs(result: FrameResult, frame: np.ndarray, graphs: BundleGraphs, seed: int) -> None:
    reference = graphs.frame(to_gray(frame))
    assert result.ok and result.rates is not None and result.counts is not None
    rows, cols, k = result.rates.shape
    assert (rows, cols) == (-(-HEIGHT // 16), -(-WIDTH // 16)) and result.seed == seed
    np.testing.assert_allclose(result.rates.reshape(-1, k), reference["rates"], rtol=1e-5, atol=1e-7)
    assert result.log_rates is not None
    np.testing.assert_allclose(result.log_rates.reshape(-1, k), reference["log_rates"], rtol=1e-5, atol=1e-5)
    # Counts are the bundle sampler's exact draws from the returned (fp32, exact) rates with this seed.
    expected_counts = poisson_reference(result.rates.reshape(-1, k), seed).reshape(rows, cols, k)
    np.testing.assert_array_equal(result.counts, expected_counts)
    assert result.reconstruction is not None and result.preprocessed is not None
    assert np.abs(result.reconstruction.astype(int) - reference["reconstruction_u8"]).max() <= 1
    assert np.abs(result.preprocessed.astype(int) - reference["preprocessed_u8"]).max() <= 1
    assert result.stats is not None
    assert result.stats.total_spikes == int(result.counts.sum())
    assert result.stats.active_fraction == pytest.approx(float((result.counts > 0).mean()), abs=1e-6)


# ----------------------------------------------------------------------------- library


def test_a_dns_name_is_dialled_with_round_robin(server: InProcessServer) -> None:
    with Client(f"dns:///localhost:{server.port}") as client:  # localhost may also resolve to ::1: skipped
        results = list(client.stream(_frames(3), options=EncodeOptions(outputs=("counts",))))
    assert [r.sequence for r in results] == [0, 1, 2]


def test_info_describes_the_served_bundle(client: Client, bundle: Bundle) -> None:
    info = client.info()
    assert info.model.n_latents == bundle.n_latents and info.model.patch_size == bundle.patch_size
    assert info.model.manifest["n_latents"] == bundle.n_latents
    assert info.limits.default_window == 4 and info.limits.max_window == 8
    assert info.execution_provider == "CPUExecutionProvider"


def test_stream_results_are_the_services_outputs(client: Client, bundle: Bundle) -> None:
    frames = _frames(6)
    options = EncodeOptions(outputs=ALL_OUTPUTS, seed=SEED, float_format="fp32")
    stream = client.stream(frames, window=3, options=options, start_sequence=100, keep_inputs=True)
    results = list(stream)
    assert [r.sequence for r in results] == list(range(100, 106))
    graphs = BundleGraphs(bundle)
    for result, frame in zip(results, frames, strict=True):
        assert result.input is frame and result.latency_seconds is not None and result.latency_seconds > 0
        _check_against_graphs(result, frame, graphs, SEED + result.sequence)
    # Unary Encode with the frame's seed reproduces the stream's draw.
    again = client.encode(frames[2], EncodeOptions(outputs=("rates", "counts"), seed=SEED + 102,
                                                   float_format="fp32"))
    assert again.seed == SEED + 102
    _check_counts_equal_draw(again)
    snapshot = stream.stats.snapshot()
    assert (snapshot.frames_sent, snapshot.frames_answered, snapshot.frames_dropped) == (6, 6, 0)
    assert snapshot.bytes_sent > 6 * HEIGHT * WIDTH and snapshot.bytes_received > 0


def _check_counts_equal_draw(result: FrameResult) -> None:
    assert result.rates is not None and result.counts is not None and result.seed is not None
    k = result.n_latents
    np.testing.assert_array_equal(result.counts.reshape(-1, k),
                                  poisson_reference(result.rates.reshape(-1, k), result.seed))


def test_formats_agree(client: Client) -> None:
    frame = _frames(1)[0]
    exact = client.encode(frame, EncodeOptions(outputs=("rates", "counts", "reconstruction"), seed=7,
                                               float_format="fp32"))
    compact = client.encode(frame, EncodeOptions(outputs=("rates", "counts", "reconstruction"), seed=7,
                                                 count_format="dense_u8", image_encoding="png"))
    assert exact.rates is not None and compact.rates is not None
    np.testing.assert_allclose(compact.rates, exact.rates, rtol=2.0**-11, atol=6e-8)  # fp16 on the wire
    np.testing.assert_array_equal(compact.counts, exact.counts)  # no count reaches 255 here
    np.testing.assert_array_equal(compact.reconstruction, exact.reconstruction)  # PNG is lossless
    assert compact.counts_saturated == 0
    encoded = client.encode(cv2.imencode(".png", to_gray(frame))[1].tobytes(), EncodeOptions(seed=7))
    assert encoded.counts is not None and encoded.counts.shape == exact.rates.shape


#: pvae.proto's bound on FLOAT_FORMAT_U8_LOG rates: relative error at most exp(0.084 / 2) - 1 < 4.3 %.
U8_LOG_BOUND = float(np.expm1(0.042))
#: The wire budget of a VGA round trip (raw uint8 frame in, rates + log-rates + counts out), bytes.
VGA_ROUND_TRIP_BUDGET = 800_000


def test_compact_formats_round_trip_through_the_server(client: Client) -> None:
    """u8log rates and log-rates within the stated bound of the fp32 ones, Rice counts exactly the fp32
    request's counts (the same seed), unary and streamed."""
    frames = _frames(3)
    exact_options = EncodeOptions(outputs=("rates", "log_rates", "counts"), seed=7, float_format="fp32")
    compact_options = dataclasses.replace(exact_options, float_format="u8log", count_format="rice")
    exact = list(client.stream(frames, options=exact_options))
    compact = list(client.stream(frames, options=compact_options))
    unary = client.encode(frames[0], compact_options)
    for fp32, small in zip([exact[0], *exact], [unary, *compact], strict=True):
        assert small.ok and fp32.rates is not None and small.rates is not None and small.log_rates is not None
        assert small.rates.dtype == np.float32 and small.rates.shape == fp32.rates.shape
        assert np.abs(small.rates / fp32.rates - 1).max() <= U8_LOG_BOUND + 1e-6
        assert np.abs(small.log_rates - np.log(fp32.rates.astype(np.float64))).max() <= 0.042 + 1e-5
        np.testing.assert_array_equal(small.counts, fp32.counts)
        assert small.response_bytes < fp32.response_bytes / 3
    # The request's outputs still decide what the client sees: log-rates alone come without rates.
    log_only = client.encode(frames[0], EncodeOptions(outputs=("log_rates",), float_format="u8log"))
    assert log_only.rates is None and log_only.counts is None and log_only.log_rates is not None
    np.testing.assert_array_equal(log_only.log_rates, unary.log_rates)


@pytest.fixture(scope="module")
def default_model_server() -> Iterator[InProcessServer]:
    """An in-process server of the shipped default model (K = 512), for wire sizes at the real K."""
    import pvae
    from pvae.bundle import load_bundle
    from pvae.paths import DEFAULT_BUNDLE_RESOURCE
    from pvae.serving.engine import DevicePlan, Engine

    engine = Engine(load_bundle(Path(pvae.__file__).parent / DEFAULT_BUNDLE_RESOURCE), DevicePlan("cpu"))
    with InProcessServer(serve_config(), engine=engine, auth_tokens=()) as running:
        yield running


def test_a_vga_round_trip_with_compact_rates_and_counts_fits_the_budget(default_model_server: InProcessServer) -> None:
    """Request + response message bytes of a raw 640 x 480 frame with rates, log-rates and counts of the
    default model (K = 512) are at most 0.8 MB with u8log rates and Rice counts; the sizes of the other
    formats are printed (pytest -s) for comparison."""
    skimage_data = pytest.importorskip("skimage.data")
    frame = cv2.resize(to_gray(skimage_data.astronaut()), (640, 480), interpolation=cv2.INTER_AREA)
    wanted = ("rates", "log_rates", "counts")
    runs = {
        "default outputs (fp16 rates, sparse counts, stats)": EncodeOptions(seed=3),
        "rates + log_rates + counts, fp16 + sparse": EncodeOptions(outputs=wanted, seed=3),
        "rates + log_rates + counts, u8log + sparse": EncodeOptions(outputs=wanted, seed=3, float_format="u8log"),
        "rates + log_rates + counts, u8log + rice": EncodeOptions(outputs=wanted, seed=3, float_format="u8log",
                                                                  count_format="rice"),
    }
    sizes: dict[str, tuple[int, int]] = {}
    results: dict[str, FrameResult] = {}
    with grpc.insecure_channel(default_model_server.address) as channel:
        stub = pb_grpc.EncoderStub(channel)
        for label, options in runs.items():
            request = pb.EncodeRequest(frame=frame_to_proto(frame), options=options.to_proto())
            response = stub.Encode(request, timeout=120)
            sizes[label] = (request.ByteSize(), response.ByteSize())
            results[label] = decode_result(response.result)
    print("\nVGA round trip, default model (K = 512), raw uint8 frame in, message bytes:")
    for label, (sent, received) in sizes.items():
        print(f"  {label:<52} request {sent:>9,}  response {received:>9,}  total {sent + received:>9,}")
    sent, received = sizes["rates + log_rates + counts, u8log + rice"]
    assert sent >= 640 * 480 and sent + received <= VGA_ROUND_TRIP_BUDGET
    compact = results["rates + log_rates + counts, u8log + rice"]
    fp16 = results["rates + log_rates + counts, fp16 + sparse"]
    assert compact.rates is not None and fp16.rates is not None and compact.rates.shape == (30, 40, 512)
    np.testing.assert_array_equal(compact.counts, fp16.counts)  # exact, same seed
    assert np.abs(compact.rates / fp16.rates - 1).max() <= U8_LOG_BOUND + 2.0**-10  # fp16's own rounding too


def test_a_bad_frame_fails_in_band_and_the_stream_goes_on(client: Client) -> None:
    frames = [*_frames(2), np.zeros((4, 4), np.uint8), *_frames(2, start=50)]  # 4 x 4 is below min_frame_side
    results = list(client.stream(frames, window=2, options=EncodeOptions(seed=1)))
    assert [r.sequence for r in results] == [0, 1, 2, 3, 4]
    assert [r.ok for r in results] == [True, True, False, True, True]
    error = results[2].error
    assert isinstance(error, FrameError) and error.code.name == "INVALID_ARGUMENT" and error.sequence == 2


def test_a_stream_without_decoding_keeps_each_result_message(client: Client) -> None:
    options = EncodeOptions(outputs=("rates", "counts", "reconstruction", "stats"), seed=7,
                            image_encoding="png")
    decoded = list(client.stream(_frames(3), options=options))
    undecoded = list(client.stream(_frames(3), options=options, decode=False))
    for full, light in zip(decoded, undecoded, strict=True):
        assert light.message is not None and full.message is None
        assert light.rates is None and light.counts is None and light.reconstruction is None
        assert (light.sequence, light.seed, light.grid_rows, light.grid_cols, light.n_latents) == (
            full.sequence, full.seed, full.grid_rows, full.grid_cols, full.n_latents)
        assert light.stats is not None and full.stats is not None and light.response_bytes > 0
        assert light.stats.total_spikes == full.stats.total_spikes  # the timings differ from call to call
        again = decode_result(light.message, light.sequence)
        for name in ("rates", "counts", "reconstruction"):
            np.testing.assert_array_equal(getattr(again, name), getattr(full, name))


def test_a_window_above_the_servers_limit_is_refused_before_streaming(client: Client) -> None:
    with pytest.raises(ConfigError, match="max_window=8"):
        client.stream(_frames(1), window=9)


def _drop_oldest_under_a_slow_consumer(client: Client, sent: int = 40) -> int:
    """Stream ``sent`` frames under drop_oldest with a window of 1 to a consumer slower than the
    source; check the accounting (every frame answered or reported dropped, in order) and return how
    many frames were dropped."""
    stream = client.stream(_frames(sent), window=1, policy="drop_oldest",
                           options=EncodeOptions(outputs=("counts", "reconstruction"), seed=3))
    answered: list[int] = []
    dropped: list[int] = []
    reported = 0
    for result in stream:
        time.sleep(0.03)  # a consumer slower than the source
        reported += result.dropped_count
        dropped.extend(result.dropped_sequences)
        if result.ok:
            answered.append(result.sequence)
    assert len(answered) + reported == sent  # every frame is answered or reported dropped
    assert answered == sorted(answered) and not set(answered) & set(dropped)
    assert stream.stats.snapshot().frames_dropped == reported
    return reported


def test_drop_oldest_accounts_for_every_frame_and_block_loses_none(client: Client) -> None:
    _drop_oldest_under_a_slow_consumer(client)
    # The same consumer under `block` loses nothing.
    blocked = list(client.stream(_frames(10), window=1, policy="block", options=EncodeOptions(outputs=("counts",))))
    assert [r.sequence for r in blocked] == list(range(10)) and all(r.dropped_count == 0 for r in blocked)


@pytest.mark.bench  # whether the server outpaces a 30 ms consumer depends on how loaded the machine is
def test_drop_oldest_drops_frames_under_a_slow_consumer(client: Client) -> None:
    reported = _drop_oldest_under_a_slow_consumer(client)
    assert reported > 0, "drop_oldest never dropped a frame under a slow consumer"


def test_async_client_streams_in_order(server: InProcessServer, bundle: Bundle) -> None:
    frames = _frames(4)

    async def scenario() -> tuple[Any, FrameResult, list[FrameResult]]:
        async with AsyncClient(server.address) as client:
            info = await client.info()
            single = await client.encode(frames[0], EncodeOptions(outputs=("rates", "counts"), seed=5,
                                                                  float_format="fp32"))

            async def source() -> Any:
                for frame in frames:
                    yield frame

            options = EncodeOptions(outputs=ALL_OUTPUTS, seed=SEED, float_format="fp32")
            results = [r async for r in client.stream(source(), window=2, options=options)]
            return info, single, results

    info, single, results = asyncio.run(scenario())
    assert info.model.n_latents == bundle.n_latents
    _check_counts_equal_draw(single)
    assert [r.sequence for r in results] == [0, 1, 2, 3]
    graphs = BundleGraphs(bundle)
    for result, frame in zip(results, frames, strict=True):
        _check_against_graphs(result, frame, graphs, SEED + result.sequence)


def test_unavailable_at_start_up_is_retried_until_serving(bundle: Bundle) -> None:
    config = ServeConfig(port=0, metrics_port=None)
    frame = _frames(1)[0]
    with InProcessServer(config, bundle=bundle, warm_up=False) as cold:  # health NOT_SERVING, frames UNAVAILABLE
        with Client(cold.address, retry=RetryPolicy(timeout_s=0.2)) as impatient, \
                pytest.raises(ServerUnavailable, match="NOT_SERVING") as caught:
            impatient.encode(frame)
        assert cold.address in str(caught.value)
        timer = threading.Timer(0.3, cold.warm_up)
        timer.start()
        try:
            with Client(cold.address, retry=RetryPolicy(timeout_s=30.0)) as patient:
                result = patient.encode(frame)  # waits out the warm-up instead of failing
        finally:
            timer.join()
    assert result.counts is not None


def test_streams_are_balanced_over_several_targets(server: InProcessServer, bundle: Bundle) -> None:
    assert server.running is not None
    with InProcessServer(ServeConfig(port=0, metrics_port=None), engine=server.running.engine) as second:
        targets = [server.address, second.address]
        with Client(targets) as client:
            client.wait_until_ready()
            for _ in range(6):
                assert len(list(client.stream(_frames(2), options=EncodeOptions(outputs=("counts",))))) == 2
        labels = {"protocol": "pvae.v1", "rpc": "StreamEncode"}
        served = [s.registry.get_sample_value("pvae_frames_total", labels) or 0.0 for s in (server, second)]
    assert served[1] > 0 and sum(served) >= 12


# ----------------------------------------------------------------------------- CLI


def _cli_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    assert cli.main(argv) == 0, capsys.readouterr().err
    return dict(json.loads(capsys.readouterr().out))


def test_cli_stream_writes_a_video_frame_per_frame_sent_and_codes_that_round_trip(
        server: InProcessServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video, codes_path, frames = tmp_path / "out" / "side_by_side.mp4", tmp_path / "codes.npz", 12
    summary = _cli_json(capsys, ["stream", "--source", "synthetic", "--size", f"{WIDTH}x{HEIGHT}", "--frames",
                                 str(frames), "--server", server.address, "--seed", str(SEED), "--float-format",
                                 "fp32", "--out", str(video), "--save", str(codes_path), "--no-progress", "--json"])
    assert summary["frames_sent"] == frames and summary["frames_answered"] == frames
    assert summary["frames_dropped"] == 0 and summary["policy"] == "block"
    assert summary["latency_p50_seconds"] > 0 and summary["bytes_sent"] > 0
    capture = cv2.VideoCapture(str(video))
    count, first = 0, None
    while True:
        ok, picture = capture.read()
        if not ok:
            break
        first = picture if first is None else first
        count += 1
    capture.release()
    assert count == frames
    assert first is not None and first.shape[1] >= 3 * WIDTH and first.shape[0] >= HEIGHT

    codes = load_codes(codes_path)
    assert len(codes) == frames
    np.testing.assert_array_equal(codes.sequences, np.arange(frames))
    np.testing.assert_array_equal(codes.seeds, SEED + np.arange(frames))
    assert codes.meta["options"]["seed"] == SEED and codes.meta["server"] == server.address
    with Client(server.address) as client:
        for index in (0, frames - 1):
            frame = SyntheticCamera(HEIGHT, WIDTH).frame(index)
            again = client.encode(frame, EncodeOptions(outputs=("rates", "counts"), seed=int(codes.seeds[index]),
                                                       float_format="fp32"))
            np.testing.assert_array_equal(codes.rates(index), again.rates)
            np.testing.assert_array_equal(codes.counts(index), again.counts)


def test_cli_stream_says_why_frames_fail_and_fails_when_every_frame_did(
        server: InProcessServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A --size under the model's smallest frame is refused before anything is sent.
    assert cli.main(["stream", "--source", "synthetic", "--size", "8x8", "--frames", "3", "--server", server.address,
                     "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--size 8x8: frames must be at least" in err and "Traceback" not in err
    # Frames that are too small for other reasons fail in-band: the first failure is printed (also in --json)
    # and, since every frame failed, the run exits 2.
    folder = tmp_path / "tiny-frames"
    folder.mkdir()
    for i in range(3):
        assert cv2.imwrite(str(folder / f"f{i}.png"), np.full((8, 8), 40 * i, np.uint8))
    assert cli.main(["stream", "--source", str(folder), "--server", server.address, "--no-progress", "--json"]) == 2
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["frames_failed"] == 3 and summary["frames_answered"] == 0
    assert summary["first_failure"].startswith("INVALID_ARGUMENT: frame 0:")
    assert "every frame failed (3); first failure: INVALID_ARGUMENT" in captured.err
    assert "frames need sides >= " in captured.err


def test_saved_codes_equal_the_streamed_results(client: Client, tmp_path: Path) -> None:
    results = list(client.stream(_frames(5), options=EncodeOptions(outputs=("rates", "counts"), seed=9)))
    recorder = CodeRecorder(tmp_path / "codes.npz")
    for result in results:
        recorder.add(result)
    codes = load_codes(recorder.save())
    for index, result in enumerate(results):
        np.testing.assert_array_equal(codes.rates(index), result.rates)
        np.testing.assert_array_equal(codes.counts(index), result.counts)
        assert int(codes.seeds[index]) == result.seed and int(codes.sequences[index]) == result.sequence


def test_cli_info_and_encode(server: InProcessServer, bundle: Bundle, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    info = _cli_json(capsys, ["info", "--server", server.address, "--json"])
    assert info["model"]["n_latents"] == bundle.n_latents
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), SyntheticCamera(HEIGHT, WIDTH).frame(3))
    recon = tmp_path / "recon.png"
    summary = _cli_json(capsys, ["encode", str(image), "--out", str(recon), "--picture", str(tmp_path / "sbs.png"),
                                 "--save", str(tmp_path / "one.npz"), "--seed", "3", "--server", server.address,
                                 "--json"])
    assert summary["seed"] == 3 and summary["grid"] == [3, 4]
    written = cv2.imread(str(recon), cv2.IMREAD_UNCHANGED)
    assert written is not None and written.shape == (HEIGHT, WIDTH) and written.dtype == np.uint8
    assert len(load_codes(tmp_path / "one.npz")) == 1


# ----------------------------------------------------------------------------- the live page in Chromium


def _screenshot(url: str, path: Path) -> np.ndarray:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={path}",
                        "--window-size=900,420", url], check=True, capture_output=True, timeout=60)
    picture = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert picture is not None, f"chromium wrote no screenshot to {path}"
    return picture


def _dom_after_scripts_ran(url: str, budget_ms: int = 5000) -> str:
    """The page's DOM after its scripts ran for ``budget_ms`` of (virtual) time."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
                              check=True, capture_output=True, text=True, timeout=60)
    return done.stdout


def _wait_for_url(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if "live view at " in line:
            return line.rsplit("live view at ", 1)[1].strip()
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"pvae-client printed no live-view URL (exit status {process.poll()})")


def _view_frame(url: str) -> int:
    """The live view's frame number (its stats.json), the counter the page polls."""
    return int(json.loads(urllib.request.urlopen(url + "stats.json", timeout=5).read())["frame"])


def _rendered(dom: str) -> int:
    """How many newer pictures the page swapped in by itself (its picture's data-rendered counter)."""
    match = re.search(r'<img id="picture"[^>]*data-rendered="(\d+)"', dom)
    assert match is not None, "the page's picture has no frame counter"
    return int(match.group(1))


#: Newer pictures the page must have swapped in by itself, and the real-time limit of the wait for them.
RENDERED_AT_LEAST, RENDER_WAIT_S = 2, 60.0
#: Seconds the client may take to stop after Ctrl-C (generous: CI runs on a loaded 2-core machine).
CTRL_C_EXIT_S = 90.0


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package 'chromium')")
def test_view_page_shows_a_live_picture_in_headless_chromium(server: InProcessServer, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "pvae.clients.cli", "stream", "--source", "synthetic", "--size", "160x120",
               "--fps", "15", "--server", server.address, "--view", "--view-port", "0", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = _wait_for_url(process, timeout=60)
        wait_for(lambda: _view_frame(url) >= 3, "a frame to reach the live view", poll=0.2)
        first = _screenshot(url, tmp_path / "first.png")
        # The second screenshot shows a newer picture: wait until the view has two more frames, not a fixed time.
        shown = _view_frame(url)
        wait_for(lambda: _view_frame(url) >= shown + 2, "newer frames in the live view", poll=0.05)
        second = _screenshot(url, tmp_path / "second.png")
        jpeg = urllib.request.urlopen(url + "frame.jpg", timeout=5).read()
        # The page's own counter: each DOM dump is a fresh page, run until it has swapped in newer pictures.
        deadline = time.monotonic() + RENDER_WAIT_S
        dom = _dom_after_scripts_ran(url)
        while _rendered(dom) < RENDERED_AT_LEAST and time.monotonic() < deadline:
            dom = _dom_after_scripts_ran(url)
    finally:
        process.send_signal(signal.SIGINT)  # a live stream ends with Ctrl-C: summary, exit 0
        try:
            out, err = process.communicate(timeout=CTRL_C_EXIT_S)
        except subprocess.TimeoutExpired:  # never leave it running into the next test
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"pvae-client did not exit within {CTRL_C_EXIT_S:.0f} s of Ctrl-C; its stderr:\n{err[-3000:]}")
    assert process.returncode == 0, err
    assert "stopped (Ctrl-C)" in out and "frames" in out
    # The page's script swapped in newer pictures and filled in the stats by itself.
    assert re.search(r'src="frame\.jpg\?n=\d+"', dom), "the page never asked for a newer picture"
    assert _rendered(dom) >= RENDERED_AT_LEAST, "the page did not swap in newer pictures by itself"
    fps = re.search(r'id="fps">([^<]*)<', dom)
    assert fps is not None and float(fps.group(1)) > 0, "the page shows no live fps"
    # Find the side-by-side picture in the screenshots by its label bar (constant text), then check
    # that it has contrast and that its panels changed between the two screenshots.
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    height, width = picture.shape[:2]
    labels = picture[:LABEL_BAR_HEIGHT, : width // 2]
    panels = []
    for shot in (first, second):
        scores = cv2.matchTemplate(shot, labels, cv2.TM_CCOEFF_NORMED)
        _, best, _, (left, top) = cv2.minMaxLoc(scores)
        assert best > 0.8, "the side-by-side picture is not on the page"
        region = shot[top + LABEL_BAR_HEIGHT:top + height, left:left + width].astype(np.int64)
        assert region.shape[:2] == (height - LABEL_BAR_HEIGHT, width)
        assert region.std() > 20, "the picture is blank"
        panels.append(region)
    assert np.abs(panels[0] - panels[1]).mean() > 1.0, "the picture did not change between two screenshots"
