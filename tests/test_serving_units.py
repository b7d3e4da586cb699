"""Serving's pure parts without a model: decoding, packing, options, config and the batcher."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import pytest
from helpers import unpack_dense_counts, unpack_floats, unpack_sparse_counts

from pvae.clients.results import decode_rate_codes, decode_rice
from pvae.errors import ConfigError, InputError
from pvae.serving.batcher import Batcher
from pvae.serving.config import ServeConfig
from pvae.serving.decode import (
    ChannelOrder,
    FrameLimits,
    decode_encoded,
    decode_raw,
    read_image_header,
)
from pvae.serving.engine import HalfCaster
from pvae.serving.errors import OverloadedError, PayloadTooLargeError
from pvae.serving.messages import fill_result, parse_options, parse_patches, parse_stream_settings
from pvae.serving.metrics import Metrics
from pvae.serving.options import MAX_SEED, CountFormat, FloatFormat, ImageEncoding, Output, stream_frame_seed
from pvae.serving.pack import (
    RATE_CODE_LOG_MIN,
    RATE_CODE_LOG_STEP,
    U8_SATURATED,
    encode_image,
    frame_statistics,
    pack_dense_counts,
    pack_floats,
    pack_rate_codes,
    pack_rice_counts,
    pack_sparse_counts,
    rate_codes,
)
from pvae.serving.pipeline import FrameJob, InferredBatch, OutputSpec, PackedResult
from pvae.serving.server import build_parser, config_from_args
from pvae.v1 import pvae_pb2 as pb

LIMITS = FrameLimits(max_height=512, max_width=640, max_pixels=640 * 480, max_bytes=1 << 20, min_side=16)
#: The longest a test waits for an event another thread sets, seconds (it returns as soon as it is set).
EVENT_TIMEOUT_S = 30.0


def _image(height: int = 48, width: int = 64, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (height, width, channels) if channels > 1 else (height, width)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _png_claiming(height: int, width: int) -> bytes:
    """A PNG whose IHDR claims height x width, followed by a tiny (bogus) body: a would-be bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00" * 64


def _jpeg_claiming(height: int, width: int) -> bytes:
    _ok, buffer = cv2.imencode(".jpg", _image(32, 32, 1))
    data = bytearray(buffer.tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


# ----------------------------------------------------------------------------- decode


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_header_dimensions_are_read_without_decoding(ext: str) -> None:
    _ok, buffer = cv2.imencode(ext, _image(37, 53))
    header = read_image_header(buffer.tobytes())
    assert (header.height, header.width) == (37, 53)
    assert header.format == ("png" if ext == ".png" else "jpeg")


def test_progressive_jpeg_header() -> None:
    _ok, buffer = cv2.imencode(".jpg", _image(40, 70), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert (read_image_header(buffer.tobytes()).height, read_image_header(buffer.tobytes()).width) == (40, 70)


def test_png_decodes_to_bt601_gray_as_opencv_reads_files() -> None:
    colour = _image(48, 64)
    _ok, buffer = cv2.imencode(".png", colour)
    gray = decode_encoded(buffer.tobytes(), LIMITS)
    expected = cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE)
    assert gray.dtype == np.uint8 and gray.shape == (48, 64)
    np.testing.assert_array_equal(gray, expected)


@pytest.mark.parametrize(("channels", "order", "code"), [
    (3, ChannelOrder.BGR, cv2.COLOR_BGR2GRAY), (3, ChannelOrder.RGB, cv2.COLOR_RGB2GRAY),
    (4, ChannelOrder.BGR, cv2.COLOR_BGRA2GRAY), (4, ChannelOrder.RGB, cv2.COLOR_RGBA2GRAY)])
def test_raw_colour_uses_bt601_luma_in_the_stated_order(channels: int, order: ChannelOrder, code: int) -> None:
    pixels = _image(48, 64, channels)
    gray = decode_raw(48, 64, channels, order, pixels.tobytes(), LIMITS)
    np.testing.assert_array_equal(gray, cv2.cvtColor(pixels, code))
    # BT.601 weights, by hand, to within rounding
    rgb = pixels[..., :3][..., ::-1] if order is ChannelOrder.BGR else pixels[..., :3]
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(gray - luma).max() <= 1.0


def test_raw_gray_is_passed_through() -> None:
    pixels = _image(48, 64, 1)
    np.testing.assert_array_equal(decode_raw(48, 64, 1, ChannelOrder.BGR, pixels.tobytes(), LIMITS), pixels)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty image"),
    (b"GIF89a" + b"\x00" * 32, "not a JPEG or PNG"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 4, "truncated or malformed PNG"),
    (b"\xff\xd8\xff\xe0\x00", "truncated JPEG"),
])
def test_undecodable_headers_name_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        decode_encoded(data, LIMITS)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_files_are_refused(ext: str) -> None:
    _ok, buffer = cv2.imencode(ext, _image(64, 64))
    with pytest.raises(InputError, match=r"frame\.encoded"):
        decode_encoded(buffer.tobytes()[: len(buffer) // 2], LIMITS)


@pytest.mark.parametrize("make", [_png_claiming, _jpeg_claiming])
def test_decompression_bombs_are_refused_from_the_header(make: Any) -> None:
    data = make(60000, 60000)
    started = time.perf_counter()
    with pytest.raises(InputError, match=r"60000x60000.*at most 512x640"):
        decode_encoded(data, LIMITS)
    assert time.perf_counter() - started < 0.5  # nothing was decoded


def test_dimension_limits() -> None:
    _ok, small = cv2.imencode(".png", _image(8, 64))
    with pytest.raises(InputError, match="at least 16"):
        decode_encoded(small.tobytes(), LIMITS)
    tight = FrameLimits(max_height=512, max_width=640, max_pixels=1000, max_bytes=1 << 20)
    _ok, big = cv2.imencode(".png", _image(48, 64))
    with pytest.raises(InputError, match="pixels"):
        decode_encoded(big.tobytes(), tight)


def test_raw_frame_errors() -> None:
    pixels = _image(48, 64, 3).tobytes()
    with pytest.raises(InputError, match=r"frame.raw.data: .* expected height\*width\*channels"):
        decode_raw(48, 64, 1, ChannelOrder.BGR, pixels, LIMITS)
    with pytest.raises(InputError, match=r"frame\.raw\.channels: must be 1, 3 or 4, got 2"):
        decode_raw(48, 64, 2, ChannelOrder.BGR, pixels, LIMITS)
    with pytest.raises(InputError, match="at most 512x640"):
        decode_raw(4000, 64, 1, ChannelOrder.BGR, b"\x00" * 4000 * 64, FrameLimits(512, 640, 10**9, 1 << 30))


def test_payload_limit_is_resource_exhausted_kind() -> None:
    limits = FrameLimits(max_height=512, max_width=640, max_pixels=640 * 480, max_bytes=100, min_side=1)
    with pytest.raises(PayloadTooLargeError, match="exceeds the server's per-frame limit of 100 bytes"):
        decode_encoded(b"\xff\xd8" + b"\x00" * 200, limits)


# ----------------------------------------------------------------------------- pack


def _counts(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rates = rng.random((30, 64)) ** 6 * 4
    counts = rng.poisson(rates).astype(np.int32)
    counts[2, 5] = 255
    counts[7, 63] = 1000
    counts[29, 0] = 254
    return counts


def test_sparse_counts_round_trip_exactly_with_large_counts() -> None:
    counts = _counts()
    packed = pack_sparse_counts(counts)
    assert packed.large_counts == (255, 1000)
    np.testing.assert_array_equal(unpack_sparse_counts(packed, *counts.shape), counts)
    offsets = np.frombuffer(packed.patch_offsets, "<u4")
    assert offsets[0] == 0 and offsets[-1] == np.count_nonzero(counts)
    assert len(packed.latents) == 2 * np.count_nonzero(counts) and len(packed.counts) == np.count_nonzero(counts)


def test_sparse_counts_of_an_all_zero_frame() -> None:
    counts = np.zeros((12, 8), np.int32)
    packed = pack_sparse_counts(counts)
    assert packed.latents == b"" and packed.counts == b""
    np.testing.assert_array_equal(unpack_sparse_counts(packed, 12, 8), counts)


def test_dense_counts_saturate_and_flag_never_wrap() -> None:
    counts = _counts()
    packed = pack_dense_counts(counts)
    assert packed.saturated == 2
    dense = unpack_dense_counts(packed, *counts.shape)
    assert dense[7, 63] == U8_SATURATED and dense[2, 5] == U8_SATURATED and dense[29, 0] == 254
    np.testing.assert_array_equal(dense, np.minimum(counts, 255))


def test_fp16_packing_matches_numpy_rounding() -> None:
    rates = (np.random.default_rng(1).random((1200, 64)) * 200).astype(np.float32)
    rates[0, :4] = [1.19e-7, 5e-8, 65504.0, 0.0]
    half = HalfCaster()(rates)
    np.testing.assert_array_equal(half, rates.astype(np.float16))
    data = pack_floats(rates, FloatFormat.FP16)
    assert len(data) == rates.size * 2
    np.testing.assert_array_equal(unpack_floats(data, FloatFormat.FP16, rates.shape), rates.astype(np.float16))
    np.testing.assert_array_equal(unpack_floats(pack_floats(rates, FloatFormat.FP32), FloatFormat.FP32,
                                                rates.shape), rates)


#: The model's rates: exp(log_rate) + 1.19e-7 with log_rate softly clamped below 5.3 (training/model.py).
RATE_FLOOR = 1.19e-7
MODEL_MAX_RATE = float(np.exp(5.3)) + RATE_FLOOR
#: The relative error bound pvae.proto states for FLOAT_FORMAT_U8_LOG (< 4.3 %), and what the grid gives.
STATED_U8_LOG_BOUND = 0.043
GRID_BOUND = float(np.expm1(RATE_CODE_LOG_STEP / 2))


def _rate_codes_message(rates: np.ndarray, want_rates: bool = True, want_log_rates: bool = True) -> pb.EncodeResult:
    n_patches, n_latents = rates.shape
    packed = PackedResult(n_patches=n_patches, n_latents=n_latents, float_format=FloatFormat.U8_LOG,
                          rate_codes=pack_rate_codes(rates, want_rates, want_log_rates))
    return fill_result(pb.EncodeResult(), packed, 0.0)


def test_u8log_rates_are_within_the_stated_bound_over_the_models_whole_range() -> None:
    """Every rate the model can produce, [1.19e-7, exp(5.3) + 1.19e-7], decodes within exp(step / 2) - 1
    (< 4.3 %) of the fp32 rate; log-rates within step / 2 of log(rate); exact zeros stay zero."""
    rng = np.random.default_rng(3)
    log_rates = rng.uniform(np.log(RATE_FLOOR), np.log(MODEL_MAX_RATE), (400, 512))
    rates = np.exp(log_rates).astype(np.float32)
    edges = np.exp(np.linspace(np.log(RATE_FLOOR), np.log(MODEL_MAX_RATE), 512))
    rates[0] = edges.astype(np.float32)  # the whole range, evenly in log
    rates[1, :4] = [RATE_FLOOR, MODEL_MAX_RATE, 1.0, 0.7839]
    rates[2, :8] = 0.0
    midpoints = np.exp(RATE_CODE_LOG_MIN + (np.arange(1, 255) - 0.5) * RATE_CODE_LOG_STEP)
    rates[3, :254] = midpoints.astype(np.float32)  # the worst case: half-way between grid points
    message = _rate_codes_message(rates)
    assert not message.rates and not message.log_rates and message.float_format == pb.FLOAT_FORMAT_U8_LOG
    assert (message.rate_codes.log_min, message.rate_codes.log_step) == (RATE_CODE_LOG_MIN, RATE_CODE_LOG_STEP)
    grid_top = RATE_CODE_LOG_MIN + 254 * RATE_CODE_LOG_STEP
    assert np.log(RATE_FLOOR) >= RATE_CODE_LOG_MIN and np.log(MODEL_MAX_RATE) <= grid_top  # covers the model's range
    decoded, decoded_log = decode_rate_codes(message.rate_codes, *rates.shape)
    assert decoded.dtype == np.float32 and decoded_log.dtype == np.float32
    zero = rates == 0
    np.testing.assert_array_equal(decoded[zero], 0.0)
    assert np.isneginf(decoded_log[zero]).all()
    exact = rates[~zero].astype(np.float64)
    relative = np.abs(decoded[~zero] / exact - 1.0)
    assert relative.max() <= GRID_BOUND + 1e-6 <= STATED_U8_LOG_BOUND
    assert relative.max() > 0.9 * GRID_BOUND  # the bound is tight: half-way rates come close to it
    assert np.abs(decoded_log[~zero] - np.log(exact)).max() <= RATE_CODE_LOG_STEP / 2 + 1e-5
    # One code, two views: the log-rates are the logs of the rates (to float32 rounding).
    np.testing.assert_allclose(decoded_log[~zero], np.log(decoded[~zero].astype(np.float64)), rtol=0, atol=2e-6)


def test_rate_codes_clamp_outside_the_grid_and_code_zero_below_the_floor() -> None:
    rates = np.array([[0.0, -1.0, np.nan, 1e-9, np.exp(RATE_CODE_LOG_MIN), 1e4, np.inf]], np.float32)
    np.testing.assert_array_equal(rate_codes(rates), [[0, 0, 0, 0, 1, 255, 255]])


def test_u8log_sends_one_payload_for_rates_and_log_rates() -> None:
    rates = np.random.default_rng(4).lognormal(-0.5, 1.0, (1200, 64)).astype(np.float32)
    both = _rate_codes_message(rates)
    only_log = _rate_codes_message(rates, want_rates=False)
    assert (both.rate_codes.rates, both.rate_codes.log_rates) == (True, True)
    assert (only_log.rate_codes.rates, only_log.rate_codes.log_rates) == (False, True)
    assert only_log.rate_codes.codes == both.rate_codes.codes  # the same bytes, sent once
    # Entropy coding: under one byte per value even for rates spread over ~4 decades (std 12 codes).
    assert both.rate_codes.ByteSize() < 0.8 * rates.size


@pytest.mark.parametrize("shape", [(1200, 512), (3, 1), (1, 7), (0, 4)])
def test_rice_counts_are_exact(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(5)
    counts = rng.poisson(rng.lognormal(-0.5, 1.0, shape)).astype(np.int32)
    if counts.size:
        counts.flat[0] = 1_000_000  # the sampler's largest rate: escapes nothing, just a longer code
        counts[-1] = 0
    packed = pack_rice_counts(counts)
    message = pb.RiceCodes(parameters=packed.parameters, quotients=packed.quotients, remainders=packed.remainders)
    np.testing.assert_array_equal(decode_rice(message, *shape, "rice_counts"), counts)
    if shape == (1200, 512):  # ~1.8 bits per entry where sparse events take 3 bytes per nonzero count
        assert message.ByteSize() < 0.3 * counts.size < 3 * np.count_nonzero(counts)


def test_u8log_needs_rates_even_for_log_rates_alone() -> None:
    spec, _ = parse_options(pb.EncodeOptions(outputs=[pb.OUTPUT_LOG_RATES], float_format=pb.FLOAT_FORMAT_U8_LOG,
                                             count_format=pb.COUNT_FORMAT_RICE), 90)
    assert spec.float_format is FloatFormat.U8_LOG and spec.count_format is CountFormat.RICE
    assert spec.needs_rates and not spec.needs_counts


@pytest.mark.parametrize("encoding", list(ImageEncoding))
def test_images_encode(encoding: ImageEncoding) -> None:
    image = _image(48, 64, 1)
    data = encode_image(image, encoding, 90)
    if encoding is ImageEncoding.RAW:
        assert data == image.tobytes()
    else:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert decoded.shape == image.shape
        if encoding is ImageEncoding.PNG:
            np.testing.assert_array_equal(decoded, image)


def test_frame_statistics() -> None:
    counts = np.zeros((3, 4), np.int32)
    counts[0] = [2, 0, 0, 0]  # one active latent: S = 1
    counts[1] = [1, 1, 1, 1]  # uniform: S = 0
    rates = np.full((3, 4), 0.5, np.float32)
    stats = frame_statistics(counts, rates)
    assert stats.total_spikes == 6
    assert stats.active_fraction == pytest.approx(5 / 12)
    assert stats.population_sparsity == pytest.approx((1.0 + 0.0 + 1.0) / 3)  # silent patch counts as 1
    assert stats.mean_rate == pytest.approx(0.5)


# ----------------------------------------------------------------------------- options, settings, config


def test_options_defaults_and_parsing() -> None:
    spec, seed = parse_options(None, 90)
    assert spec.outputs == {Output.RATES, Output.COUNTS, Output.STATS} and seed is None
    spec, seed = parse_options(pb.EncodeOptions(
        outputs=[pb.OUTPUT_LOG_RATES, pb.OUTPUT_RECONSTRUCTION], seed=MAX_SEED, count_format=pb.COUNT_FORMAT_DENSE_U8,
        image_encoding=pb.IMAGE_ENCODING_JPEG, jpeg_quality=0, float_format=pb.FLOAT_FORMAT_FP32), 77)
    assert spec.outputs == {Output.LOG_RATES, Output.RECONSTRUCTION} and seed == MAX_SEED
    assert spec.count_format is CountFormat.DENSE_U8 and spec.image_encoding is ImageEncoding.JPEG
    assert spec.jpeg_quality == 77 and spec.float_format is FloatFormat.FP32
    assert not spec.needs_counts and not spec.needs_rates


@pytest.mark.parametrize(("options", "message"), [
    (pb.EncodeOptions(outputs=[pb.OUTPUT_UNSPECIFIED]), r"options.outputs\[0\]: OUTPUT_UNSPECIFIED"),
    (pb.EncodeOptions(outputs=[pb.OUTPUT_RATES, 42]), r"options.outputs\[1\]: unknown value 42"),
    (pb.EncodeOptions(outputs=[pb.OUTPUT_RATES, pb.OUTPUT_RATES]), "listed twice"),
    (pb.EncodeOptions(seed=MAX_SEED + 1), "options.seed: must be at most 2"),
    (pb.EncodeOptions(jpeg_quality=101), "options.jpeg_quality"),
    (pb.EncodeOptions(count_format=9), "options.count_format: unknown value 9"),
    (pb.EncodeOptions(image_encoding=9), "options.image_encoding"),
    (pb.EncodeOptions(float_format=9), "options.float_format"),
])
def test_bad_options_name_the_field(options: pb.EncodeOptions, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_options(options, 90)


def test_stream_settings() -> None:
    assert parse_stream_settings(pb.StreamSettings(), 4, 8) == (4, "block")
    assert parse_stream_settings(pb.StreamSettings(window=8, policy=pb.WINDOW_POLICY_DROP_OLDEST), 4, 8) == (
        8, "drop_oldest")
    with pytest.raises(InputError, match=r"settings\.window: must be 1\.\.8"):
        parse_stream_settings(pb.StreamSettings(window=9), 4, 8)


def test_patches_parsing() -> None:
    patches = np.arange(2 * 256, dtype=np.float32).reshape(2, 256)
    np.testing.assert_array_equal(parse_patches(pb.Patches(count=2, data=patches.tobytes()), 256, 10, 1 << 20),
                                  patches)
    with pytest.raises(InputError, match=r"patches\.count: must be 1\.\.10"):
        parse_patches(pb.Patches(count=11, data=b""), 256, 10, 1 << 20)
    with pytest.raises(InputError, match="expected count"):
        parse_patches(pb.Patches(count=2, data=patches.tobytes()[:-4]), 256, 10, 1 << 20)
    bad = patches.copy()
    bad[1, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        parse_patches(pb.Patches(count=2, data=bad.tobytes()), 256, 10, 1 << 20)


def test_stream_seeds_offset_by_sequence_and_wrap() -> None:
    assert stream_frame_seed(10, 5) == 15
    assert stream_frame_seed(MAX_SEED, 1) == 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"port": 70000}, "port"), ({"max_batch_frames": 0}, "max_batch_frames"),
    ({"default_window": 9, "max_window": 8}, "default_window"), ({"device": "tpu"}, "device"),
    ({"gpu": 0, "device": "cpu"}, "gpu"), ({"max_frame_bytes": 2**30}, "max_frame_bytes"),
    ({"max_send_message_bytes": 2**31}, "max_send_message_bytes"), ({"max_batch_delay_s": -1.0}, "max_batch_delay_s"),
])
def test_config_validation_names_the_field(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServeConfig(**kwargs)


def test_cli_mirrors_the_config() -> None:
    config = config_from_args(["--port", "0", "--metrics-port", "off", "--max-batch-frames", "3", "--device", "cpu",
                               "--max-batch-delay-s", "0.01", "--model", "some/bundle"])
    assert config == ServeConfig(port=0, metrics_port=None, max_batch_frames=3, device="cpu", max_batch_delay_s=0.01,
                                 model="some/bundle")
    flags = {a.dest for a in build_parser()._actions}
    assert {f for f in ServeConfig.__dataclass_fields__} <= flags
    assert ServeConfig(host="::1", port=5).bind_address == "[::1]:5"


# ----------------------------------------------------------------------------- batcher


class _FakePipeline:
    """Records inference calls; 'inference' takes ``delay`` seconds; a frame of value 13 fails."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[list[tuple[int, int]]] = []

    def infer(self, jobs: Sequence[FrameJob]) -> InferredBatch:
        self.calls.append([job.key for job in jobs])
        time.sleep(self.delay)
        for job in jobs:
            job.times.batch_size = len(jobs)
        return InferredBatch(jobs)

    def finish(self, inferred: InferredBatch, index: int) -> PackedResult:
        job = inferred.jobs[index]
        assert isinstance(job, FrameJob)
        if int(job.frame[0, 0]) == 13:
            raise InputError("frame 13 is unlucky")
        return PackedResult(n_patches=int(job.frame[0, 0]), n_latents=1, float_format=FloatFormat.FP16,
                            times=job.times)


def _job(value: int, shape: tuple[int, int] = (16, 16)) -> FrameJob:
    return FrameJob(np.full(shape, value, np.uint8), OutputSpec(), seed=0)


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_equal_sizes_batch_together_and_sizes_never_mix() -> None:
    from prometheus_client import CollectorRegistry

    async def scenario() -> tuple[list[Any], _FakePipeline, Metrics]:
        pipeline = _FakePipeline()
        metrics = Metrics(CollectorRegistry())
        batcher = Batcher(pipeline, max_batch=4, max_delay_s=0.2, max_queue=16, metrics=metrics)  # type: ignore[arg-type]
        await batcher.start()
        jobs = [_job(i) for i in range(4)] + [_job(9, (32, 16))]
        results = await asyncio.gather(*(batcher.submit(job) for job in jobs))
        await batcher.stop()
        return results, pipeline, metrics

    results, pipeline, metrics = _run(scenario())
    assert [r.n_patches for r in results] == [0, 1, 2, 3, 9]
    assert sorted(len(call) for call in pipeline.calls) == [1, 4]
    assert all(len(set(call)) == 1 for call in pipeline.calls)
    assert metrics.registry.get_sample_value("pvae_batch_size_frames_count") == 2
    assert metrics.registry.get_sample_value("pvae_queue_depth_frames") == 0


def test_overload_is_refused_or_waited_for() -> None:
    async def scenario() -> tuple[int, int, list[int]]:
        pipeline = _FakePipeline(delay=0.05)
        batcher = Batcher(pipeline, max_batch=1, max_delay_s=0.0, max_queue=2)  # type: ignore[arg-type]
        await batcher.start()
        outcomes = await asyncio.gather(*(batcher.submit(_job(i)) for i in range(8)), return_exceptions=True)
        refused = sum(isinstance(o, OverloadedError) for o in outcomes)
        served = sum(isinstance(o, PackedResult) for o in outcomes)
        waited = await asyncio.gather(*(batcher.submit(_job(i), wait=True) for i in range(8)))
        await batcher.stop()
        return refused, served, [r.n_patches for r in waited]

    refused, served, waited = _run(scenario())
    assert refused > 0 and served > 0 and refused + served == 8
    assert waited == list(range(8))  # wait=True loses nothing


def test_one_frames_failure_stays_that_frames() -> None:
    async def scenario() -> list[Any]:
        batcher = Batcher(_FakePipeline(), max_batch=4, max_delay_s=0.1, max_queue=8)  # type: ignore[arg-type]
        await batcher.start()
        outcomes = await asyncio.gather(*(batcher.submit(_job(v)) for v in (1, 13, 2)), return_exceptions=True)
        await batcher.stop()
        return outcomes

    outcomes = _run(scenario())
    assert isinstance(outcomes[1], InputError)
    assert [o.n_patches for o in (outcomes[0], outcomes[2])] == [1, 2]


class _GatedPipeline(_FakePipeline):
    """Inference signals ``entered`` and then holds until ``release`` is set (threading events: it
    runs on the batcher's inference thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def infer(self, jobs: Sequence[FrameJob]) -> InferredBatch:
        self.entered.set()
        assert self.release.wait(EVENT_TIMEOUT_S), "the test never released inference"
        return super().infer(jobs)


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Yield to the event loop until ``condition()`` holds (at most EVENT_TIMEOUT_S)."""
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0)


def test_cancelled_callers_leave_the_queue_at_once() -> None:
    async def scenario() -> tuple[int, int, list[list[tuple[int, int]]]]:
        pipeline = _GatedPipeline()
        batcher = Batcher(pipeline, max_batch=1, max_delay_s=0.0, max_queue=8)  # type: ignore[arg-type]
        await batcher.start()
        first = asyncio.create_task(batcher.submit(_job(1)))
        # the first is in inference now, and stays there until released
        assert await asyncio.to_thread(pipeline.entered.wait, EVENT_TIMEOUT_S)
        waiting = [asyncio.create_task(batcher.submit(_job(2, (32, 32)))) for _ in range(3)]
        await _until(lambda: batcher.depth == 3, "three callers in the queue")
        depth_before = batcher.depth
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        depth_after = batcher.depth
        pipeline.release.set()
        await first
        await batcher.stop()
        return depth_before, depth_after, pipeline.calls

    before, after, calls = _run(scenario())
    assert (before, after) == (3, 0)
    assert calls == [[(16, 16)]]  # the cancelled frames never reached inference


def test_serving_never_imports_torch() -> None:
    """The base install has no torch: the server, its CLI and the benchmark must not need it."""
    import subprocess
    import sys

    code = ("import sys; import pvae.serving, pvae.serving.server, pvae.bench.serve, pvae.serving.inprocess, "
            "pvae.serving.source; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


class _OverlapPipeline(_FakePipeline):
    """Records how many inference calls run at once. Each call waits at a barrier for ``workers``
    calls to be in flight together, so the most that overlap is reached whatever the machine's
    load (a call that waits in vain breaks the barrier and fails the test)."""

    def __init__(self, workers: int) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._together = threading.Barrier(workers, timeout=EVENT_TIMEOUT_S)
        self.active = 0
        self.most = 0

    def infer(self, jobs: Sequence[FrameJob]) -> InferredBatch:
        with self._lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            self._together.wait()
            return super().infer(jobs)
        finally:
            with self._lock:
                self.active -= 1


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_inference_workers_bound_the_calls_that_run_at_once(workers: int) -> None:
    async def scenario() -> tuple[list[Any], _OverlapPipeline]:
        pipeline = _OverlapPipeline(workers)
        batcher = Batcher(pipeline, max_batch=1, max_delay_s=0.0, max_queue=16,  # type: ignore[arg-type]
                          workers=workers)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(_job(i, (16 + 16 * i, 16))) for i in range(6)))
        await batcher.stop()
        return results, pipeline

    results, pipeline = _run(scenario())
    assert [r.n_patches for r in results] == list(range(6))  # every caller gets its own result
    assert pipeline.most == workers and len(pipeline.calls) == 6


def test_inference_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers"):
        Batcher(_FakePipeline(), max_batch=1, max_delay_s=0.0, max_queue=1, workers=0)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- frame graph cut to the outputs
def test_frame_graph_cut_to_the_requested_outputs_gives_the_same_values(engine: Any) -> None:
    """ONNX Runtime runs every node whatever is fetched, so the engine runs the frame graph cut down to
    the outputs a batch needs: the values must be the full graph's, bit for bit, and each cut is made once."""
    from pvae.serving.engine import FRAME_OUTPUTS

    frames = np.random.default_rng(3).integers(0, 256, (2, 40, 56), dtype=np.uint8)
    full = engine.run_frames(frames, FRAME_OUTPUTS)
    for outputs in (["rates"], ["rates", "reconstruction_u8"], ["log_rates", "rates"], ["preprocessed_u8"]):
        cut = engine.run_frames(frames, outputs)
        for name in outputs:
            np.testing.assert_array_equal(cut.host[name], full.host[name], err_msg=name)
        assert engine._frame_session(outputs) is engine._frame_session(list(reversed(outputs)))
    assert engine._frame_session(FRAME_OUTPUTS) is engine._sessions["frame"]
    patches = np.random.default_rng(4).standard_normal((30, engine.patch_dim)).astype(np.float32)
    both = engine.run_patches(patches)
    assert set(both) == {"log_rates", "rates"}
    for outputs in (["rates"], ["log_rates"]):
        cut = engine.run_patches(patches, outputs)
        assert list(cut) == outputs
        np.testing.assert_array_equal(cut[outputs[0]], both[outputs[0]])
