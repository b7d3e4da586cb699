"""pvae.clients without a model: wire decoding, stream bookkeeping, options, sources, rendering,
recorders, the web view, and the CLI's one-line errors (bad sources, unreachable servers)."""

from __future__ import annotations

import dataclasses
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from pvae.clients import (
    ChannelConfig,
    CodeRecorder,
    EncodeOptions,
    FrameResult,
    RetryPolicy,
    ServerUnavailable,
    SideBySide,
    SourceError,
    StreamSettings,
    StreamStats,
    SyntheticCamera,
    VideoRecorder,
    WebView,
    cli,
    frame_to_proto,
    load_codes,
    open_source,
    to_gray,
)
from pvae.clients.client import Client
from pvae.clients.errors import FrameError, ProtocolError
from pvae.clients.results import decode_counts, decode_image, decode_result
from pvae.clients.sources import limited, paced, parse_size
from pvae.clients.streaming import RequestFactory, StreamBook
from pvae.clients.synthetic import procedural_panorama
from pvae.errors import ConfigError, DataError, InputError
from pvae.serving.pack import pack_dense_counts, pack_sparse_counts
from pvae.v1 import pvae_pb2 as pb

K = 8


def _counts(n_patches: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(0.7, size=(n_patches, K)).astype(np.int32)
    counts[1, 2] = 255  # exactly the escape value
    counts[4, 7] = 70_000  # needs large_counts and more than 16 bits
    counts[3] = 0  # a silent patch
    return counts


def _sparse_message(counts: np.ndarray, rows: int, cols: int) -> pb.EncodeResult:
    packed = pack_sparse_counts(counts)
    message = pb.EncodeResult(height=rows * 16, width=cols * 16, grid_rows=rows, grid_cols=cols,
                              n_patches=rows * cols, n_latents=K, seed=9)
    message.sparse_counts.patch_offsets = packed.patch_offsets
    message.sparse_counts.latents = packed.latents
    message.sparse_counts.counts = packed.counts
    message.sparse_counts.large_counts.extend(packed.large_counts)
    return message


# ----------------------------------------------------------------------------- wire decoding


def test_sparse_counts_decode_exactly_as_the_server_packs_them() -> None:
    counts = _counts()
    result = decode_result(_sparse_message(counts, 2, 3))
    assert result.counts is not None and result.counts.dtype == np.int32
    assert result.counts.shape == (2, 3, K)
    np.testing.assert_array_equal(result.counts.reshape(-1, K), counts)
    assert result.seed == 9 and result.counts_saturated == 0
    np.testing.assert_array_equal(result.spike_map, counts.sum(axis=1).reshape(2, 3))


def test_dense_counts_report_saturation() -> None:
    counts = _counts()
    packed = pack_dense_counts(counts)
    message = pb.EncodeResult(grid_rows=2, grid_cols=3, n_patches=6, n_latents=K)
    message.dense_counts.counts = packed.counts
    message.dense_counts.saturated = packed.saturated
    decoded, saturated = decode_counts(message)
    assert saturated == 2
    assert decoded is not None
    np.testing.assert_array_equal(decoded, np.minimum(counts, 255))


def test_rates_decode_from_fp16_and_fp32() -> None:
    rates = np.random.default_rng(1).gamma(1.0, 1.0, size=(6, K)).astype(np.float32)
    for fmt, dtype, tolerance in ((pb.FLOAT_FORMAT_FP32, "<f4", 0.0), (pb.FLOAT_FORMAT_FP16, "<f2", 2.0**-11)):
        message = pb.EncodeResult(grid_rows=2, grid_cols=3, n_patches=6, n_latents=K, float_format=fmt,
                                  rates=rates.astype(dtype).tobytes())
        decoded = decode_result(message).rates
        assert decoded is not None and decoded.dtype == np.float32 and decoded.shape == (2, 3, K)
        np.testing.assert_allclose(decoded.reshape(6, K), rates, rtol=tolerance, atol=0)


def _bits(text: str) -> bytes:
    """A bit string such as "0110" packed most significant bit first, zero-padded (pvae.proto RiceCodes)."""
    return np.packbits(np.array([int(bit) for bit in text], np.uint8)).tobytes()


def test_rice_counts_decode_as_the_proto_specifies() -> None:
    # (2, 2) counts [[0, 5], [3, 1]] with Rice parameters k = [0, 1], coded by hand from pvae.proto:
    # quotients v >> k in unary: 0 -> "0", 5 >> 1 = 2 -> "110", 3 -> "1110", 1 >> 1 = 0 -> "0";
    # remainders (k bits each, column 1 only): 5 & 1 = 1, 1 & 1 = 1.
    rice = pb.RiceCodes(parameters=bytes([0, 1]), quotients=_bits("0" + "110" + "1110" + "0"), remainders=_bits("11"))
    message = pb.EncodeResult(grid_rows=1, grid_cols=2, n_patches=2, n_latents=2, rice_counts=rice)
    decoded, saturated = decode_counts(message)
    assert decoded is not None and decoded.dtype == np.int32 and saturated == 0
    np.testing.assert_array_equal(decoded, [[0, 5], [3, 1]])
    assert decode_result(message).counts.tolist() == [[[0, 5], [3, 1]]]  # type: ignore[union-attr]


def _u8log_message(rates: bool, log_rates: bool) -> pb.EncodeResult:
    # Codes [[10, 11], [9, 0]] with base codes [10, 0]: code - base = [[0, 11], [-1, 0]], zigzag
    # [[0, 22], [1, 0]], Rice coded with k = [0, 0] (unary only).
    codes = pb.RiceCodes(parameters=bytes([0, 0]), quotients=_bits("0" + "1" * 22 + "0" + "10" + "0"))
    grid = pb.RateCodes(log_min=-16.0, log_step=0.084, base=bytes([10, 0]), codes=codes, rates=rates,
                        log_rates=log_rates)
    return pb.EncodeResult(n_patches=2, n_latents=2, float_format=pb.FLOAT_FORMAT_U8_LOG, rate_codes=grid)


def test_u8log_rates_and_log_rates_decode_from_one_payload() -> None:
    result = decode_result(_u8log_message(rates=True, log_rates=True))
    assert result.rates is not None and result.log_rates is not None
    assert result.rates.dtype == np.float32 and result.rates.shape == (2, 2)
    expected_log = np.array([[-16 + 9 * 0.084, -16 + 10 * 0.084], [-16 + 8 * 0.084, -np.inf]])
    np.testing.assert_allclose(result.log_rates, expected_log, rtol=1e-6)
    np.testing.assert_allclose(result.rates, np.exp(expected_log), rtol=1e-6)
    assert result.rates[1, 1] == 0.0  # code 0: a rate of exactly 0
    # The request's outputs decide what the client sees: the same codes, log-rates only.
    only_log = decode_result(_u8log_message(rates=False, log_rates=True))
    assert only_log.rates is None and only_log.log_rates is not None


@pytest.mark.parametrize("damage", ["short_quotients", "long_quotients", "remainders", "parameter", "float_bytes",
                                    "grid", "code_range"])
def test_malformed_compact_formats_raise_protocol_error(damage: str) -> None:
    message = _u8log_message(rates=True, log_rates=True)
    codes = message.rate_codes.codes
    if damage == "short_quotients":
        codes.quotients = codes.quotients[:2]
    elif damage == "long_quotients":
        codes.quotients += b"\x00"
    elif damage == "remainders":
        codes.remainders = b"\x00"
    elif damage == "parameter":
        codes.parameters = bytes([0, 32])
    elif damage == "float_bytes":
        message.rates = b"\x00" * 8
    elif damage == "grid":
        message.rate_codes.log_step = 0.0
    else:  # base 250 + 11 lies beyond code 255
        message.rate_codes.base = bytes([10, 250])
    with pytest.raises(ProtocolError, match="malformed response"):
        decode_result(message)


def test_images_decode_raw_and_png() -> None:
    image = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    raw = pb.Image(encoding=pb.IMAGE_ENCODING_RAW, height=12, width=20, data=image.tobytes())
    png = pb.Image(encoding=pb.IMAGE_ENCODING_PNG, height=12, width=20, data=cv2.imencode(".png", image)[1].tobytes())
    np.testing.assert_array_equal(decode_image(raw), image)
    np.testing.assert_array_equal(decode_image(png), image)


@pytest.mark.parametrize("damage", ["short_rates", "offsets", "large_counts", "grid", "image"])
def test_malformed_responses_raise_protocol_error(damage: str) -> None:
    message = _sparse_message(_counts(), 2, 3)
    if damage == "short_rates":
        message.rates = b"\x00" * 10
    elif damage == "offsets":
        message.sparse_counts.patch_offsets = message.sparse_counts.patch_offsets[:-4]
    elif damage == "large_counts":
        del message.sparse_counts.large_counts[:]
    elif damage == "grid":
        message.grid_cols = 4
    else:
        message.reconstruction.CopyFrom(pb.Image(encoding=pb.IMAGE_ENCODING_RAW, height=4, width=4, data=b"x"))
    with pytest.raises(ProtocolError, match="malformed response"):
        decode_result(message)


# ----------------------------------------------------------------------------- requests and options


def test_frames_become_raw_or_encoded_messages() -> None:
    bgr = SyntheticCamera(40, 56).frame(0)
    raw = frame_to_proto(bgr)
    assert (raw.raw.height, raw.raw.width, raw.raw.channels) == (40, 56, 3)
    assert raw.raw.channel_order == pb.CHANNEL_ORDER_BGR and raw.raw.data == bgr.tobytes()
    png = frame_to_proto(bgr, encoding="png")
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(png.encoded, np.uint8), cv2.IMREAD_COLOR), bgr)
    rgb = frame_to_proto(bgr[:, :, ::-1], encoding="png", channel_order="rgb")
    assert rgb.encoded == png.encoded
    assert frame_to_proto(b"\x89PNG...").encoded == b"\x89PNG..."
    np.testing.assert_array_equal(to_gray(bgr), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


def test_request_factory_checks_its_settings() -> None:
    with pytest.raises(ConfigError, match="frame_encoding"):
        RequestFactory(frame_encoding="webp")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="jpeg_quality"):
        RequestFactory(jpeg_quality=0)


def test_gray_factory_sends_a_third_of_the_bytes_with_the_same_pixels() -> None:
    bgr = SyntheticCamera(40, 56).frame(1)
    message = RequestFactory(gray=True).frame(bgr)
    assert message.raw.channels == 1 and message.raw.data == to_gray(bgr).tobytes()


@pytest.mark.parametrize("frame", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 2), np.uint8),
                                   np.zeros((0, 4), np.uint8), [[0, 1]]])
def test_bad_frames_raise_input_error(frame: object) -> None:
    with pytest.raises(InputError, match="frame"):
        frame_to_proto(frame)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"outputs": ("rates", "rates")}, "outputs"), ({"outputs": ("spikes",)}, "outputs"), ({"outputs": ()}, "outputs"),
    ({"seed": -1}, "seed"), ({"seed": 2**63}, "seed"), ({"float_format": "bf16"}, "float_format"),
    ({"jpeg_quality": 101}, "jpeg_quality"), ({"count_format": "csr"}, "count_format"),
])
def test_bad_options_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        EncodeOptions(**kwargs)  # type: ignore[arg-type]


def test_options_and_settings_map_onto_the_proto() -> None:
    message = EncodeOptions(outputs=("rates", "reconstruction"), seed=0, count_format="dense_u8",
                            image_encoding="png", float_format="fp32").to_proto()
    assert list(message.outputs) == [pb.OUTPUT_RATES, pb.OUTPUT_RECONSTRUCTION]
    assert message.HasField("seed") and message.seed == 0
    assert (message.count_format, message.image_encoding, message.float_format) == (
        pb.COUNT_FORMAT_DENSE_U8, pb.IMAGE_ENCODING_PNG, pb.FLOAT_FORMAT_FP32)
    assert not EncodeOptions().to_proto().HasField("seed")
    compact = EncodeOptions(count_format="rice", float_format="u8log").to_proto()
    assert (compact.count_format, compact.float_format) == (pb.COUNT_FORMAT_RICE, pb.FLOAT_FORMAT_U8_LOG)
    assert StreamSettings(window=3, policy="drop_oldest").to_proto() == pb.StreamSettings(
        window=3, policy=pb.WINDOW_POLICY_DROP_OLDEST)
    with pytest.raises(ConfigError, match="window"):
        StreamSettings(window=0)
    with pytest.raises(ConfigError, match="policy"):
        StreamSettings(policy="newest")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- stream bookkeeping


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_stream_book_matches_responses_and_forgets_dropped_frames() -> None:
    clock = _Clock()
    book = StreamBook(RequestFactory(), StreamSettings(window=2, policy="drop_oldest"), EncodeOptions(seed=4),
                      address="host:1", start_sequence=10, keep_inputs=True, stats=StreamStats(clock))
    frames = [np.full((16, 16), i, np.uint8) for i in range(5)]
    requests = []
    for frame in frames:
        requests.append(book.request(frame))
        clock.now += 0.01
    assert [r.sequence for r in requests] == [10, 11, 12, 13, 14]
    assert requests[0].HasField("settings") and requests[0].options.seed == 4
    assert not any(r.HasField("settings") or r.HasField("options") for r in requests[1:])

    first = book.result(pb.StreamEncodeResponse(sequence=10, result=pb.EncodeResult(n_latents=K)))
    assert first.ok and first.latency_seconds == pytest.approx(0.05)
    assert first.input is frames[0]
    # Frames 11 and 12 were dropped; 13 failed in-band; the stream then ended with a drop report for 14.
    failed = book.result(pb.StreamEncodeResponse(sequence=13, error=pb.Status(code=3, message="too small"),
                                                 dropped_count=2, dropped_sequences=[11, 12]))
    assert isinstance(failed.error, FrameError) and failed.error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "frame 13" in str(failed.error) and "host:1" in str(failed.error)
    assert not failed.ok and failed.dropped_sequences == (11, 12) and failed.input is frames[3]
    report = book.result(pb.StreamEncodeResponse(sequence=14, dropped_count=1, dropped_sequences=[14]))
    assert report.is_drop_report and not report.ok and report.latency_seconds is None
    assert book.in_flight() == 0
    snapshot = book.stats.snapshot()
    assert (snapshot.frames_sent, snapshot.frames_answered, snapshot.frames_failed, snapshot.frames_dropped) == (
        5, 1, 1, 3)
    assert snapshot.latency_p50_seconds == pytest.approx(0.05)


def test_stats_summary_reports_percentiles_and_bytes() -> None:
    clock = _Clock()
    stats = StreamStats(clock)
    for latency in (0.010, 0.020, 0.030, 0.040):
        stats.record_sent(1000)
        clock.now += latency
        stats.record_result(FrameResult(n_latents=K, latency_seconds=latency, response_bytes=500))
    stats.finish()
    snapshot = stats.snapshot()
    assert snapshot.latency_p50_seconds == pytest.approx(0.025)
    assert snapshot.latency_p99_seconds == pytest.approx(0.0397)
    assert snapshot.fps == pytest.approx(4 / 0.1)
    assert (snapshot.bytes_sent, snapshot.bytes_received) == (4000, 2000)
    text = snapshot.summary()
    assert "p50 25.0 ms" in text and "4 sent, 4 answered, 0 dropped" in text
    json.dumps(snapshot.to_dict())


# ----------------------------------------------------------------------------- channel and errors


def test_targets_and_load_balancing() -> None:
    assert ChannelConfig.create("dns:///pvae.default.svc:50051").grpc_target() == "dns:///pvae.default.svc:50051"
    several = ChannelConfig.create("10.0.0.5:50051, 10.0.0.6:50051")
    assert several.grpc_target() == "ipv4:10.0.0.5:50051,10.0.0.6:50051"
    assert several.address == "10.0.0.5:50051,10.0.0.6:50051"
    assert ChannelConfig.create(["localhost:1", "127.0.0.1:2"]).grpc_target().startswith("ipv4:")
    assert ChannelConfig.create(["10.0.0.5:1,10.0.0.6:1", "10.0.0.7:1"]).targets == (
        "10.0.0.5:1", "10.0.0.6:1", "10.0.0.7:1")
    assert ChannelConfig.create("ipv4:10.0.0.5:1,10.0.0.6:1").targets == ("ipv4:10.0.0.5:1,10.0.0.6:1",)
    options = dict(several.channel_options())
    assert json.loads(options["grpc.service_config"]) == {"loadBalancingConfig": [{"round_robin": {}}]}
    with pytest.raises(ConfigError, match="host:port"):
        ChannelConfig.create(["10.0.0.5", "10.0.0.6:1"])
    with pytest.raises(ConfigError, match="lower-case"):
        ChannelConfig.create("h:1", metadata=[("Authorization", "x")])


def test_retry_backoff_grows_to_its_cap() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=0.4, multiplier=2.0, jitter=0.0)
    backoffs = policy.backoffs()
    assert [next(backoffs) for _ in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.4, 0.4])
    with pytest.raises(ConfigError, match="timeout_s"):
        RetryPolicy(timeout_s=-1)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket closes


def test_connection_errors_name_the_address() -> None:
    address = f"127.0.0.1:{_closed_port()}"
    with Client(address, retry=RetryPolicy(timeout_s=0.3)) as client, pytest.raises(ServerUnavailable) as caught:
        client.info()
    assert caught.value.address == address
    assert address in str(caught.value) and "gave up after" in str(caught.value)
    assert isinstance(caught.value, ConnectionError)
    with Client(address, retry=RetryPolicy(timeout_s=0.3)) as client, pytest.raises(ServerUnavailable, match=address):
        client.encode(np.zeros((16, 16), np.uint8))


def test_cli_connection_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    assert cli.main(["info", "--server", address, "--connect-timeout", "0.3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("pvae-client: error:") and address in err


# ----------------------------------------------------------------------------- sources


def _write_images(folder: Path, count: int) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    camera = SyntheticCamera(32, 48)
    frames = [camera.frame(10 * i) for i in range(count)]
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), frame)
    return frames


def test_image_folder_yields_its_images_in_name_order(tmp_path: Path) -> None:
    frames = _write_images(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    with open_source(str(tmp_path / "imgs")) as source:
        assert source.frame_count == 3 and not source.live
        for got, want in zip(source, frames, strict=True):
            np.testing.assert_array_equal(got, want)


def test_video_file_source_reads_every_frame(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    with VideoRecorder(path, fps=10) as recorder:
        for frame in limited(SyntheticCamera(48, 64), 7):
            recorder.write(frame)
    with open_source(str(path)) as source:
        frames = list(source)
    assert len(frames) == 7 and frames[0].shape == (48, 64, 3) and source.fps == pytest.approx(10)


def test_synthetic_camera_is_deterministic_and_moves() -> None:
    camera = SyntheticCamera(60, 80)
    np.testing.assert_array_equal(camera.frame(5), SyntheticCamera(60, 80).frame(5))
    assert camera.frame(0).shape == (60, 80, 3)
    assert np.abs(camera.frame(0).astype(int) - camera.frame(10).astype(int)).mean() > 1.0
    assert camera.frame(0).std() > 10  # a picture, not a flat field
    fallback = SyntheticCamera(60, 80, panorama=procedural_panorama(height=128, width=256))
    assert fallback.frame(3).shape == (60, 80, 3) and fallback.frame(3).std() > 10


def test_pacing_and_limits_keep_every_item() -> None:
    assert list(limited(paced(range(5), fps=1000.0), 3)) == [0, 1, 2]
    assert list(paced(iter("abc"), None)) == ["a", "b", "c"]
    assert parse_size("320x240") == (320, 240)
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        parse_size("320")


@pytest.mark.parametrize("case", ["missing", "empty_folder", "bad_image_in_folder", "not_a_video", "no_camera",
                                  "bad_image_file"])
def test_bad_sources_fail_with_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if case == "missing":
        spec, expect = str(tmp_path / "nope.mp4"), "no such file"
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        spec, expect = str(tmp_path / "empty"), "no images"
    elif case == "bad_image_in_folder":
        (tmp_path / "imgs").mkdir()
        (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG not really")
        spec, expect = str(tmp_path / "imgs"), "broken.png"
    elif case == "not_a_video":
        (tmp_path / "clip.mp4").write_text("hello")
        spec, expect = str(tmp_path / "clip.mp4"), "clip.mp4"
    elif case == "no_camera":
        spec, expect = "57", "camera 57"
    else:
        (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8 truncated")
        spec, expect = str(tmp_path / "photo.jpg"), "photo.jpg"
    with pytest.raises(SourceError, match=expect):
        open_source(spec)
    # The CLI fails on the source before it dials the (absent) server.
    status = cli.main(["stream", "--source", spec, "--server", f"127.0.0.1:{_closed_port()}", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and err[0].startswith("pvae-client: error:") and expect in err[0]


def test_show_without_a_gui_points_to_view(capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["stream", "--source", "synthetic", "--show", "--server", f"127.0.0.1:{_closed_port()}"])
    err = capsys.readouterr().err
    assert status == 2 and "--view" in err and "--show" in err


def test_encode_of_a_missing_image_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["encode", str(tmp_path / "x.png"), "--server", f"127.0.0.1:{_closed_port()}"]) == 2
    assert "x.png" in capsys.readouterr().err


# ----------------------------------------------------------------------------- pictures and recorders


def _result(sequence: int, rows: int = 3, cols: int = 4, seed: int = 0) -> FrameResult:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(0.5, size=(rows, cols, K)).astype(np.int32)
    rates = rng.gamma(1.0, 0.5, size=(rows, cols, K)).astype(np.float16).astype(np.float32)
    recon = rng.integers(0, 256, size=(rows * 16, cols * 16), dtype=np.uint8)
    return FrameResult(sequence=sequence, height=rows * 16, width=cols * 16, grid_rows=rows, grid_cols=cols,
                       n_patches=rows * cols, n_latents=K, seed=100 + sequence, rates=rates, counts=counts,
                       reconstruction=recon, input=np.zeros((rows * 16, cols * 16, 3), np.uint8))


def test_side_by_side_has_three_labelled_panels_of_even_size() -> None:
    renderer = SideBySide()
    picture = renderer.render(_result(0, rows=3, cols=5))
    assert picture is not None and picture.dtype == np.uint8
    height, width, _ = picture.shape
    assert height % 2 == 0 and width % 2 == 0 and width >= 3 * 80
    assert renderer.labels == ("model input", "reconstruction", "spike counts")
    assert SideBySide(show_camera=True).labels == ("camera", "model input", "reconstruction", "spike counts")
    assert SideBySide(stretch=True).labels[:2] == ("model input (stretched)", "reconstruction (stretched)")
    assert renderer.render(FrameResult(sequence=3, dropped_count=1)) is None


def test_pictures_put_the_model_input_beside_its_reconstruction_and_report_explained_variance() -> None:
    from pvae.clients.render import LABEL_BAR_HEIGHT, explained_variance

    rng = np.random.default_rng(0)
    values = rng.normal(size=(32, 48))  # model-space values
    pre = np.clip(np.round(128 + 32 * values), 0, 255).astype(np.uint8)
    half = np.clip(np.round(128 + 16 * values), 0, 255).astype(np.uint8)  # the input at half amplitude
    flat = np.full_like(pre, 128)
    assert explained_variance(pre, pre) == pytest.approx(1.0)
    assert explained_variance(pre, flat) == pytest.approx(0.0)
    assert explained_variance(pre, half) == pytest.approx(0.75, abs=0.01)
    assert explained_variance(flat, pre) is None and explained_variance(pre, None) is None
    result = dataclasses.replace(_result(0, rows=2, cols=3), preprocessed=pre, reconstruction=half)
    plain = SideBySide()
    picture = plain.render(result)
    assert picture is not None and plain.last_explained_variance == pytest.approx(0.75, abs=0.01)
    first_panel = picture[LABEL_BAR_HEIGHT:LABEL_BAR_HEIGHT + 32, :48, 0]
    np.testing.assert_array_equal(first_panel, pre)  # the whitened model input, not the camera frame
    stretched = SideBySide(stretch=True).render(result)
    assert stretched is not None
    second = stretched[LABEL_BAR_HEIGHT:LABEL_BAR_HEIGHT + 32, 48 + 4:48 + 4 + 48, 0].astype(int)
    assert second.std() > half.astype(int).std() * 1.2  # the faint reconstruction is stretched up
    with_camera = SideBySide(show_camera=True).render(result)
    assert with_camera is not None and with_camera.shape[1] > picture.shape[1]


def test_codes_round_trip_with_frames_of_different_sizes(tmp_path: Path) -> None:
    results = [_result(0, seed=1), _result(1, rows=2, cols=2, seed=2), _result(2, seed=3)]
    recorder = CodeRecorder(tmp_path / "codes.npz", {"note": "unit"})
    for result in results:
        recorder.add(result)
    recorder.add(FrameResult(sequence=5, dropped_count=2, dropped_sequences=(3, 4)))
    codes = load_codes(recorder.save())
    assert len(codes) == 3 and codes.meta["note"] == "unit" and codes.n_latents == K
    np.testing.assert_array_equal(codes.sequences, [0, 1, 2])
    np.testing.assert_array_equal(codes.seeds, [100, 101, 102])
    np.testing.assert_array_equal(codes.dropped_sequences, [3, 4])
    for index, result in enumerate(results):
        np.testing.assert_array_equal(codes.counts(index), result.counts)
        np.testing.assert_array_equal(codes.rates(index), result.rates)  # float16 on the wire: stored exactly


def test_codes_files_are_checked(tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="not a pvae codes file"):
        load_codes(tmp_path / "other.npz")
    with pytest.raises(ConfigError, match=r"\.npz"):
        CodeRecorder(tmp_path / "codes.txt")
    with pytest.raises(DataError, match="nothing to save"):
        CodeRecorder(tmp_path / "codes.npz").save()


def test_video_recorder_refuses_unknown_containers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mp4"):
        VideoRecorder(tmp_path / "out.gif")


# ----------------------------------------------------------------------------- web view


def _get(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.headers["Content-Type"], response.read()


def test_web_view_serves_the_page_the_picture_and_the_stats() -> None:
    picture = SideBySide().render(_result(0))
    assert picture is not None
    with WebView(port=0) as view:
        kind, page = _get(view.url)
        assert kind.startswith("text/html") and b"frame.jpg" in page and b"stats.json" in page
        kind, placeholder = _get(view.url + "frame.jpg")
        assert kind == "image/jpeg" and cv2.imdecode(np.frombuffer(placeholder, np.uint8), cv2.IMREAD_COLOR) is not None
        view.update(picture, {"frames_sent": 1})
        _, jpeg = _get(view.url + "frame.jpg")
        decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape == picture.shape
        _, stats = _get(view.url + "stats.json")
        assert json.loads(stats) == {"frames_sent": 1, "frame": 1, "state": "streaming"}
        with urllib.request.urlopen(view.url + "stream.mjpg", timeout=5) as stream:
            assert stream.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            assert stream.readline().strip() == b"--pvaeframe"
        with pytest.raises(urllib.error.HTTPError):
            _get(view.url + "nothing")
