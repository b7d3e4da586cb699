"""pvae-serve end to end: an in-process server on port 0 against the bundle's own graphs as the oracle."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from helpers import BundleGraphs, serve_config, unpack_dense_counts, unpack_floats, unpack_sparse_counts

from pvae.bundle import Bundle, load_bundle
from pvae.errors import BundleError, DeviceError
from pvae.serving.config import ServeConfig
from pvae.serving.engine import CUDA_PROVIDER, DevicePlan, Engine, resolve_device
from pvae.serving.inprocess import InProcessServer
from pvae.serving.metrics import PROTOCOLS
from pvae.serving.options import FloatFormat
from pvae.serving.pack import DenseCountsPacked, SparseCountsPacked
from pvae.serving.source import resolve_bundle
from pvae.v1 import pvae_pb2 as pb
from pvae.v1 import pvae_pb2_grpc as pb_grpc

ALL_OUTPUTS = [pb.OUTPUT_RATES, pb.OUTPUT_LOG_RATES, pb.OUTPUT_COUNTS, pb.OUTPUT_RECONSTRUCTION,
               pb.OUTPUT_PREPROCESSED, pb.OUTPUT_STATS]
HEIGHT, WIDTH = 48, 64  # 3 x 4 patches of 16: cheap, and exercises the tiling
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def serving_bundle(tiny_bundle: Bundle) -> Bundle:
    """The tiny model, exported through the server's own --model CHECKPOINT path (conftest)."""
    return tiny_bundle


#: This module's test servers (over helpers.TEST_SERVER): small frame and message limits, a window of 8.
SETTINGS: dict[str, Any] = {"max_window": 8, "max_frame_height": 512, "max_frame_width": 640,
                            "max_frame_bytes": 200_000, "max_receive_message_bytes": 1_000_000, "drain_grace_s": 5.0}
#: The module's shared server (conftest's ``server``) serves metrics too.
SERVER_CONFIG = {**SETTINGS, "metrics_port": 0}


def _config(**overrides: Any) -> ServeConfig:
    return serve_config(SETTINGS, **overrides)


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.EncoderStub:
    return pb_grpc.EncoderStub(channel)


def _texture(height: int = 160, width: int = 240, seed: int = 0) -> np.ndarray:
    """A smooth colour texture (BGR) to pan a synthetic camera over."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height // 8, width // 8, 3)).astype(np.float32)
    return (cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255).astype(np.uint8)


def synthetic_video(n: int, height: int = HEIGHT, width: int = WIDTH) -> list[np.ndarray]:
    """A camera panning across the texture: BGR frames (height, width, 3)."""
    texture = _texture(height + 4 * n, width + 6 * n)
    return [np.ascontiguousarray(texture[4 * t:4 * t + height, 6 * t:6 * t + width]) for t in range(n)]


def raw_frame(image: np.ndarray, order: int = pb.CHANNEL_ORDER_BGR) -> pb.Frame:
    channels = 1 if image.ndim == 2 else image.shape[2]
    return pb.Frame(raw=pb.RawFrame(height=image.shape[0], width=image.shape[1], channels=channels,
                                    channel_order=order, data=image.tobytes()))


def png_frame(image: np.ndarray) -> pb.Frame:
    _ok, buffer = cv2.imencode(".png", image)
    return pb.Frame(encoded=buffer.tobytes())


def gray_frame(height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> pb.Frame:
    return raw_frame(cv2.cvtColor(synthetic_video(1, height, width)[0], cv2.COLOR_BGR2GRAY) if seed == 0 else
                     np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8))


def counts_of(result: pb.EncodeResult) -> np.ndarray:
    if result.HasField("sparse_counts"):
        sparse = result.sparse_counts
        packed = SparseCountsPacked(sparse.patch_offsets, sparse.latents, sparse.counts, tuple(sparse.large_counts))
        return unpack_sparse_counts(packed, result.n_patches, result.n_latents)
    return unpack_dense_counts(DenseCountsPacked(result.dense_counts.counts, result.dense_counts.saturated),
                               result.n_patches, result.n_latents)


def floats_of(data: bytes, result: pb.EncodeResult) -> np.ndarray:
    fmt = FloatFormat.FP32 if result.float_format == pb.FLOAT_FORMAT_FP32 else FloatFormat.FP16
    return unpack_floats(data, fmt, (result.n_patches, result.n_latents))


def sample(registry: Any, name: str, **labels: str) -> float:
    if "rpc" in labels:  # per-RPC counters also carry the protocol
        labels = {"protocol": PROTOCOLS[labels["rpc"]], **labels}
    return float(registry.get_sample_value(name, labels) or 0.0)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# ----------------------------------------------------------------------------- round trips


def test_info_describes_the_bundle(stub: pb_grpc.EncoderStub, serving_bundle: Bundle) -> None:
    info = stub.Info(pb.InfoRequest())
    assert info.model.n_latents == serving_bundle.n_latents == 64
    assert info.model.patch_size == 16 and info.model.arch == "lin|lin"
    assert info.model.source_checkpoint_sha256 == serving_bundle.manifest["source_checkpoint"]["sha256"]
    assert info.model.min_frame_side == serving_bundle.manifest["frame_policy"]["min_side"]
    assert info.execution_provider == "CPUExecutionProvider" and info.device == "cpu"
    assert info.limits.max_window == 8 and info.limits.max_frame_bytes == 200_000


def test_synthetic_video_round_trip_equals_the_bundle(stub: pb_grpc.EncoderStub, graphs: BundleGraphs,
                                                      server: InProcessServer) -> None:
    video = synthetic_video(8)
    options = pb.EncodeOptions(outputs=ALL_OUTPUTS, seed=123, float_format=pb.FLOAT_FORMAT_FP32)
    frames_before = sample(server.registry, "pvae_frames_total", rpc="StreamEncode")

    # Colour raw BGR, raw RGB and PNG files in one stream. Raw colour becomes gray with BT.601 luma
    # (cv2.cvtColor); files are read as OpenCV reads them in training (IMREAD_GRAYSCALE, also BT.601
    # but with libpng's fixed-point rounding).
    frames, grays = [], []
    for t, image in enumerate(video):
        if t % 3 == 0:
            frames.append(raw_frame(image))
            grays.append(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        elif t % 3 == 1:
            frames.append(raw_frame(np.ascontiguousarray(image[..., ::-1]), pb.CHANNEL_ORDER_RGB))
            grays.append(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        else:
            frames.append(png_frame(image))
            grays.append(cv2.imdecode(np.frombuffer(frames[-1].encoded, np.uint8), cv2.IMREAD_GRAYSCALE))
    requests = [pb.StreamEncodeRequest(sequence=100 + t, frame=frame, options=options if t == 0 else None,
                                       settings=pb.StreamSettings(window=4) if t == 0 else None)
                for t, frame in enumerate(frames)]

    responses = list(stub.StreamEncode(iter(requests)))
    assert [r.sequence for r in responses] == [100 + t for t in range(len(video))]
    for t, (gray, response) in enumerate(zip(grays, responses, strict=True)):
        assert response.WhichOneof("outcome") == "result", response.error.message
        result = response.result
        expected = graphs.frame(gray)
        assert (result.height, result.width, result.grid_rows, result.grid_cols) == (HEIGHT, WIDTH, 3, 4)
        rates = floats_of(result.rates, result)
        np.testing.assert_array_equal(rates, expected["rates"])
        np.testing.assert_array_equal(floats_of(result.log_rates, result), expected["log_rates"])
        assert result.seed == 123 + 100 + t
        counts = counts_of(result)
        np.testing.assert_array_equal(counts, graphs.counts(expected["rates"], result.seed))
        assert result.reconstruction.encoding == pb.IMAGE_ENCODING_RAW
        recon = np.frombuffer(result.reconstruction.data, np.uint8).reshape(HEIGHT, WIDTH)
        np.testing.assert_array_equal(recon, expected["reconstruction_u8"])
        pre = np.frombuffer(result.preprocessed.data, np.uint8).reshape(HEIGHT, WIDTH)
        np.testing.assert_array_equal(pre, expected["preprocessed_u8"])
        stats = result.stats
        assert stats.total_spikes == counts.sum()
        assert stats.active_fraction == pytest.approx(np.count_nonzero(counts) / counts.size)
        assert stats.mean_rate == pytest.approx(float(expected["rates"].mean()), rel=1e-5)
        assert 0.0 <= stats.population_sparsity <= 1.0
        timings = stats.timings
        assert timings.total_seconds >= timings.inference_seconds > 0 and 1 <= timings.batch_size <= 8
    assert sample(server.registry, "pvae_frames_total", rpc="StreamEncode") - frames_before == len(video)


def test_default_formats_fp16_rates_sparse_counts_and_png_jpeg(stub: pb_grpc.EncoderStub, graphs: BundleGraphs) -> None:
    image = cv2.cvtColor(synthetic_video(1)[0], cv2.COLOR_BGR2GRAY)
    expected = graphs.frame(image)
    result = stub.Encode(pb.EncodeRequest(frame=raw_frame(image), options=pb.EncodeOptions(seed=5))).result
    assert result.float_format == pb.FLOAT_FORMAT_FP16 and result.HasField("sparse_counts")
    assert not result.HasField("reconstruction") and result.HasField("stats") and not result.log_rates
    np.testing.assert_array_equal(floats_of(result.rates, result), expected["rates"].astype(np.float16))
    for encoding, ext in ((pb.IMAGE_ENCODING_PNG, "png"), (pb.IMAGE_ENCODING_JPEG, "jpeg")):
        options = pb.EncodeOptions(outputs=[pb.OUTPUT_RECONSTRUCTION, pb.OUTPUT_COUNTS], image_encoding=encoding,
                                   count_format=pb.COUNT_FORMAT_DENSE_U8, seed=5, jpeg_quality=95)
        result = stub.Encode(pb.EncodeRequest(frame=raw_frame(image), options=options)).result
        decoded = cv2.imdecode(np.frombuffer(result.reconstruction.data, np.uint8), cv2.IMREAD_GRAYSCALE)
        if ext == "png":
            np.testing.assert_array_equal(decoded, expected["reconstruction_u8"])
        else:
            assert np.abs(decoded.astype(int) - expected["reconstruction_u8"]).mean() < 4
        assert result.HasField("dense_counts") and result.dense_counts.saturated == 0
        np.testing.assert_array_equal(counts_of(result), graphs.counts(expected["rates"], 5))


def test_patch_batches_run_the_rates_decoder_and_sampler_graphs(stub: pb_grpc.EncoderStub,
                                                                graphs: BundleGraphs) -> None:
    patches = np.random.default_rng(3).normal(size=(7, 256)).astype(np.float32)
    options = pb.EncodeOptions(outputs=[pb.OUTPUT_RATES, pb.OUTPUT_COUNTS, pb.OUTPUT_RECONSTRUCTION,
                                        pb.OUTPUT_LOG_RATES], seed=9, float_format=pb.FLOAT_FORMAT_FP32)
    result = stub.Encode(pb.EncodeRequest(patches=pb.Patches(count=7, data=patches.tobytes()), options=options)).result
    expected = graphs.rates(patches)
    log_rates, rates = expected["log_rates"], expected["rates"]
    assert result.n_patches == 7 and result.grid_rows == 0 and result.height == 0
    np.testing.assert_array_equal(floats_of(result.rates, result), rates)
    np.testing.assert_array_equal(floats_of(result.log_rates, result), log_rates)
    np.testing.assert_array_equal(counts_of(result), graphs.counts(rates, 9))
    decoded = np.frombuffer(result.reconstruction_patches, "<f4").reshape(7, 256)
    np.testing.assert_array_equal(decoded, graphs.decode(rates))


def test_seeds_reproduce_through_the_service(stub: pb_grpc.EncoderStub) -> None:
    frame = gray_frame()
    options = pb.EncodeOptions(outputs=[pb.OUTPUT_COUNTS], seed=2024)

    def stream_counts() -> list[tuple[int, np.ndarray]]:
        requests = [pb.StreamEncodeRequest(sequence=s, frame=frame, options=options if s == 0 else None)
                    for s in range(3)]
        return [(r.result.seed, counts_of(r.result)) for r in stub.StreamEncode(iter(requests))]

    first, second = stream_counts(), stream_counts()
    for (seed_a, counts_a), (seed_b, counts_b) in zip(first, second, strict=True):
        assert seed_a == seed_b
        np.testing.assert_array_equal(counts_a, counts_b)
    assert not np.array_equal(first[0][1], first[1][1])  # frames of a stream get different seeds
    # Any stream frame can be reproduced with a unary call and its reported seed.
    unary = stub.Encode(pb.EncodeRequest(frame=frame, options=pb.EncodeOptions(outputs=[pb.OUTPUT_COUNTS],
                                                                                seed=first[1][0])))
    np.testing.assert_array_equal(counts_of(unary.result), first[1][1])
    # Without a seed the server draws one and says which.
    drawn = [stub.Encode(pb.EncodeRequest(frame=frame, options=pb.EncodeOptions(outputs=[pb.OUTPUT_COUNTS])))
             for _ in range(2)]
    assert drawn[0].result.seed != drawn[1].result.seed


def test_equal_sizes_from_different_streams_share_an_inference_call(engine: Engine) -> None:
    with InProcessServer(_config(max_batch_delay_s=0.5, max_batch_frames=4), engine=engine) as server, \
            grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.EncoderStub(channel)
        calls = [stub.StreamEncode(iter([pb.StreamEncodeRequest(sequence=0, frame=gray_frame(seed=s))]))
                 for s in range(1, 5)]
        odd = stub.Encode.future(pb.EncodeRequest(frame=gray_frame(32, 32, seed=9)))
        results = [next(call).result for call in calls]
        assert [r.stats.timings.batch_size for r in results] == [4, 4, 4, 4]
        assert odd.result().result.stats.timings.batch_size == 1  # other sizes never join
        assert sample(server.registry, "pvae_batch_size_frames_count") == 2


# ----------------------------------------------------------------------------- bad input


def _bomb() -> bytes:
    _ok, buffer = cv2.imencode(".jpg", np.zeros((32, 32), np.uint8))
    data = bytearray(buffer.tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = (60000).to_bytes(2, "big") * 2  # claims 60000 x 60000
    return bytes(data)


BAD_FRAMES: list[tuple[str, pb.StreamEncodeRequest, int, str]] = [
    ("undecodable", pb.StreamEncodeRequest(frame=pb.Frame(encoded=b"this is not an image")), INVALID,
     "not a JPEG or PNG"),
    ("truncated png", pb.StreamEncodeRequest(frame=pb.Frame(encoded=png_frame(np.zeros((48, 64), np.uint8))
                                                                    .encoded[:60])), INVALID, "PNG"),
    ("bomb", pb.StreamEncodeRequest(frame=pb.Frame(encoded=_bomb())), INVALID, "60000x60000"),
    ("wrong size", pb.StreamEncodeRequest(frame=pb.Frame(raw=pb.RawFrame(height=48, width=64, channels=1,
                                                                         data=b"\x00" * 100))), INVALID,
     "frame.raw.data: 100 bytes, expected"),
    ("wrong channels", pb.StreamEncodeRequest(frame=pb.Frame(raw=pb.RawFrame(height=48, width=64, channels=2,
                                                                             data=b"\x00" * 6144))), INVALID,
     "frame.raw.channels"),
    ("too large", pb.StreamEncodeRequest(frame=pb.Frame(raw=pb.RawFrame(height=600, width=100, channels=1,
                                                                        data=b"\x00" * 60000))), INVALID,
     "at most 512x640"),
    ("too small", pb.StreamEncodeRequest(frame=pb.Frame(raw=pb.RawFrame(height=8, width=64, channels=1,
                                                                        data=b"\x00" * 512))), INVALID,
     "at least 16"),
    ("empty frame", pb.StreamEncodeRequest(frame=pb.Frame()), INVALID, "frame: empty"),
    ("oversized payload", pb.StreamEncodeRequest(frame=pb.Frame(encoded=b"\xff\xd8" + b"\x00" * 300_000)),
     EXHAUSTED, "per-frame limit of 200000 bytes"),
    ("bad output", pb.StreamEncodeRequest(frame=gray_frame(), options=pb.EncodeOptions(outputs=[42])), INVALID,
     r"options.outputs\[0\]: unknown value 42"),
    ("bad seed", pb.StreamEncodeRequest(frame=gray_frame(), options=pb.EncodeOptions(seed=2**63)), INVALID,
     "options.seed"),
    ("late settings", pb.StreamEncodeRequest(frame=gray_frame(), settings=pb.StreamSettings(window=2)), INVALID,
     "first message"),
]


def test_every_bad_frame_gets_its_status_and_the_stream_goes_on(stub: pb_grpc.EncoderStub,
                                                                server: InProcessServer) -> None:
    good = gray_frame()
    requests = [pb.StreamEncodeRequest(sequence=0, frame=good)]
    for i, (_, request, _, _) in enumerate(BAD_FRAMES):
        bad = pb.StreamEncodeRequest()
        bad.CopyFrom(request)
        bad.sequence = 2 * i + 1
        requests += [bad, pb.StreamEncodeRequest(sequence=2 * i + 2, frame=good)]
    errors_before = sample(server.registry, "pvae_errors_total", rpc="StreamEncode", code="INVALID_ARGUMENT")
    started = time.perf_counter()
    responses = list(stub.StreamEncode(iter(requests)))
    assert time.perf_counter() - started < 20
    assert [r.sequence for r in responses] == list(range(len(requests)))
    for i, (name, _, code, message) in enumerate(BAD_FRAMES):
        bad, after = responses[2 * i + 1], responses[2 * i + 2]
        assert bad.WhichOneof("outcome") == "error", name
        assert bad.error.code == code, (name, bad.error)
        assert re.search(message, bad.error.message), (name, bad.error.message)
        assert after.WhichOneof("outcome") == "result", (name, after.error.message)
    invalid = sum(code == INVALID for _, _, code, _ in BAD_FRAMES)
    assert sample(server.registry, "pvae_errors_total", rpc="StreamEncode",
                  code="INVALID_ARGUMENT") - errors_before == invalid


def test_unary_bad_input_statuses(stub: pb_grpc.EncoderStub) -> None:
    cases = [
        (pb.EncodeRequest(frame=pb.Frame(encoded=b"junk")), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.EncodeRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.EncodeRequest(patches=pb.Patches(count=2, data=b"\x00" * 12)), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.EncodeRequest(frame=gray_frame(), options=pb.EncodeOptions(jpeg_quality=500)),
         grpc.StatusCode.INVALID_ARGUMENT),
        (pb.EncodeRequest(frame=pb.Frame(encoded=b"\xff\xd8" + b"\x00" * 300_000)), grpc.StatusCode.RESOURCE_EXHAUSTED),
        # over the transport limit (1 MB): refused by gRPC itself
        (pb.EncodeRequest(frame=pb.Frame(encoded=b"\xff\xd8" + b"\x00" * 1_100_000)),
         grpc.StatusCode.RESOURCE_EXHAUSTED),
    ]
    for request, code in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub.Encode(request)
        assert info.value.code() == code, info.value.details()


def test_fatal_stream_problems_close_it_with_a_real_status(stub: pb_grpc.EncoderStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(stub.StreamEncode(iter([pb.StreamEncodeRequest(frame=gray_frame(),
                                                            settings=pb.StreamSettings(window=99))])))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "settings.window" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        list(stub.StreamEncode(iter([pb.StreamEncodeRequest(frame=pb.Frame(encoded=b"\x00" * 1_100_000))])))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# ----------------------------------------------------------------------------- flow control


def test_overload_answers_resource_exhausted(engine: Engine) -> None:
    with InProcessServer(_config(max_queue_frames=1, max_batch_frames=1, max_batch_delay_s=0.0),
                         engine=engine) as server, grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.EncoderStub(channel)
        frame = gray_frame(256, 320, seed=4)
        futures = [stub.Encode.future(pb.EncodeRequest(frame=frame)) for _ in range(16)]
        codes = []
        for future in futures:
            try:
                future.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert refused > 0 and codes.count(grpc.StatusCode.OK) > 0
        assert sample(server.registry, "pvae_errors_total", rpc="Encode", code="RESOURCE_EXHAUSTED") == refused
        # a `block` stream on the same overloaded server loses nothing: it waits for room instead
        requests = [pb.StreamEncodeRequest(sequence=s, frame=frame) for s in range(12)]
        responses = list(stub.StreamEncode(iter(requests)))
        assert [r.sequence for r in responses] == list(range(12))
        assert all(r.WhichOneof("outcome") == "result" for r in responses)


def test_block_window_loses_nothing(stub: pb_grpc.EncoderStub, server: InProcessServer) -> None:
    frame = gray_frame(128, 160, seed=2)
    dropped_before = sample(server.registry, "pvae_dropped_frames_total")
    requests = [pb.StreamEncodeRequest(sequence=s, frame=frame,
                                       settings=pb.StreamSettings(window=2, policy=pb.WINDOW_POLICY_BLOCK)
                                       if s == 0 else None) for s in range(40)]
    responses = list(stub.StreamEncode(iter(requests)))
    assert [r.sequence for r in responses] == list(range(40))
    assert all(r.WhichOneof("outcome") == "result" and r.dropped_count == 0 for r in responses)
    assert sample(server.registry, "pvae_dropped_frames_total") == dropped_before


@pytest.mark.parametrize("window", [1, 2])
def test_drop_oldest_drops_counts_and_reports(stub: pb_grpc.EncoderStub, server: InProcessServer,
                                              window: int) -> None:
    frame = gray_frame(256, 320, seed=3)
    sent = 60
    dropped_before = sample(server.registry, "pvae_dropped_frames_total")
    requests = [pb.StreamEncodeRequest(sequence=s, frame=frame,
                                       settings=pb.StreamSettings(window=window, policy=pb.WINDOW_POLICY_DROP_OLDEST)
                                       if s == 0 else None) for s in range(sent)]
    responses = list(stub.StreamEncode(iter(requests)))
    answered = [r.sequence for r in responses if r.WhichOneof("outcome") == "result"]
    reported = [s for r in responses for s in r.dropped_sequences]
    dropped = sum(r.dropped_count for r in responses)
    assert dropped > 0, "a burst into a small window must drop"
    assert answered and len(answered) + dropped == sent  # every frame is accounted for
    assert answered == sorted(answered)  # in order
    if dropped == len(reported):  # every run was short enough to list in full
        assert sorted(answered + reported) == list(range(sent))
        # each drop is reported no later than the next answered frame after it
        for response in responses:
            assert all(s < response.sequence for s in response.dropped_sequences if response.HasField("result"))
    if window > 1:
        assert answered[-1] == sent - 1  # a waiting slot exists: the newest frame always survives
    assert sample(server.registry, "pvae_dropped_frames_total") - dropped_before == dropped


def test_cancellation_frees_the_stream_at_once(stub: pb_grpc.EncoderStub, server: InProcessServer) -> None:
    stop = threading.Event()
    frame = gray_frame(256, 320, seed=5)

    def requests() -> Iterator[pb.StreamEncodeRequest]:
        sequence = 0
        while not stop.is_set():
            yield pb.StreamEncodeRequest(sequence=sequence, frame=frame)
            sequence += 1

    call = stub.StreamEncode(requests())
    assert next(call).sequence == 0
    assert wait_until(lambda: sample(server.registry, "pvae_active_streams") == 1)
    call.cancel()
    stop.set()
    assert wait_until(lambda: sample(server.registry, "pvae_active_streams") == 0, 5.0)
    assert wait_until(lambda: sample(server.registry, "pvae_inflight_frames") == 0, 5.0)
    assert wait_until(lambda: sample(server.registry, "pvae_queue_depth_frames") == 0, 5.0)
    assert call.code() == grpc.StatusCode.CANCELLED


def test_deadlines_are_honoured(stub: pb_grpc.EncoderStub, server: InProcessServer) -> None:
    frame = gray_frame(256, 320, seed=6)
    with pytest.raises(grpc.RpcError) as info:
        stub.Encode(pb.EncodeRequest(frame=frame), timeout=0.001)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    def forever() -> Iterator[pb.StreamEncodeRequest]:
        sequence = 0
        while sequence < 10_000:
            yield pb.StreamEncodeRequest(sequence=sequence, frame=frame)
            sequence += 1

    with pytest.raises(grpc.RpcError) as info:
        list(stub.StreamEncode(forever(), timeout=0.5))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_until(lambda: sample(server.registry, "pvae_active_streams") == 0, 5.0)
    assert wait_until(lambda: sample(server.registry, "pvae_inflight_frames") == 0, 5.0)


# ----------------------------------------------------------------------------- health, reflection, metrics


def test_health_is_serving_only_after_warm_up_and_flips_on_drain(engine: Engine) -> None:
    server = InProcessServer(_config(), engine=engine, warm_up=False).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service="pvae.v1.Encoder"))
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.EncoderStub(channel).Encode(pb.EncodeRequest(frame=gray_frame()))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "warming up" in info.value.details()
            assert sample(server.registry, "pvae_ready") == 0
            server.warm_up()
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            assert health.Check(health_pb2.HealthCheckRequest(service="pvae.v1.Encoder")).status == \
                health_pb2.HealthCheckResponse.SERVING
            assert sample(server.registry, "pvae_ready") == 1
            with pytest.raises(grpc.RpcError) as info:
                health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            stopper = threading.Thread(target=server.stop, kwargs={"grace": 0.5})
            stopper.start()
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            stopper.join(30)
    finally:
        server.stop()


def test_reflection_lists_the_service(stub: pb_grpc.EncoderStub, server: InProcessServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"pvae.v1.Encoder", "grpc.health.v1.Health"} <= services
        file = database.FindFileContainingSymbol("pvae.v1.Encoder")
        assert file.package == "pvae.v1"
        assert "StreamEncodeRequest" in {m.name for m in file.message_type}


def test_metrics_are_recorded_and_exposed(stub: pb_grpc.EncoderStub, server: InProcessServer) -> None:
    registry = server.registry
    before = {name: sample(registry, name, rpc="Encode") for name in
              ("pvae_frames_total", "pvae_patches_total", "pvae_received_bytes_total", "pvae_sent_bytes_total")}
    inference_before = sample(registry, "pvae_stage_duration_seconds_count", stage="inference")
    response = stub.Encode(pb.EncodeRequest(frame=gray_frame(), options=pb.EncodeOptions(seed=1)))
    assert sample(registry, "pvae_frames_total", rpc="Encode") - before["pvae_frames_total"] == 1
    assert sample(registry, "pvae_patches_total", rpc="Encode") - before["pvae_patches_total"] == 12
    assert sample(registry, "pvae_sent_bytes_total", rpc="Encode") - before["pvae_sent_bytes_total"] == \
        response.ByteSize()
    assert sample(registry, "pvae_received_bytes_total", rpc="Encode") - before["pvae_received_bytes_total"] > 3072
    assert sample(registry, "pvae_stage_duration_seconds_count", stage="inference") - inference_before == 1
    for stage in ("decode", "queue", "inference", "sampling", "packing", "end_to_end"):
        assert sample(registry, "pvae_stage_duration_seconds_count", stage=stage) > 0, stage
    assert registry.get_sample_value("pvae_stage_duration_seconds_bucket", {"stage": "decode", "le": "2.5e-05"}) \
        is not None
    assert registry.get_sample_value("pvae_model_info", {
        "arch": "lin|lin", "n_latents": "64", "patch_size": "16", "device": "cpu",
        "execution_provider": "CPUExecutionProvider",
        "source_checkpoint_sha256": response and stub.Info(pb.InfoRequest()).model.source_checkpoint_sha256,
        "bundle_package_version": stub.Info(pb.InfoRequest()).model.bundle_package_version,
        "server_version": stub.Info(pb.InfoRequest()).server_version,
        "sampler": server.running.engine.sampler_backend}) == 1
    assert sample(registry, "pvae_spikes_total") >= response.result.stats.total_spikes
    assert server.running is not None and server.running.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{server.running.metrics_port}/metrics", timeout=10) as page:
        text = page.read().decode()
    assert 'pvae_frames_total{protocol="pvae.v1",rpc="Encode"}' in text and "pvae_active_streams" in text


# ----------------------------------------------------------------------------- shutdown


def test_graceful_shutdown_finishes_frames_in_flight(engine: Engine) -> None:
    server = InProcessServer(_config(), engine=engine).start()
    release = threading.Event()
    frame = gray_frame(256, 320, seed=7)
    try:
        channel = grpc.insecure_channel(server.address)
        stub = pb_grpc.EncoderStub(channel)

        def requests() -> Iterator[pb.StreamEncodeRequest]:
            for sequence in range(12):
                yield pb.StreamEncodeRequest(sequence=sequence, frame=frame,
                                             settings=pb.StreamSettings(window=4) if sequence == 0 else None)
            release.wait(30)  # keep the stream open: only the drain may end it

        call = stub.StreamEncode(requests())
        received = [next(call).sequence]
        unary = stub.Encode.future(pb.EncodeRequest(frame=frame))
        assert wait_until(lambda: sample(server.registry, "pvae_received_bytes_total", rpc="Encode") > 0)
        stopper = threading.Thread(target=server.stop, kwargs={"grace": 10.0})
        stopper.start()
        dropped: list[int] = []
        with pytest.raises(grpc.RpcError) as info:
            for response in call:
                if response.WhichOneof("outcome") is None:  # the frame read as the drain began: reported dropped
                    assert response.dropped_count == len(response.dropped_sequences) == 1
                    dropped.extend(response.dropped_sequences)
                    continue
                assert response.WhichOneof("outcome") == "result", response.error.message
                received.append(response.sequence)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "draining" in info.value.details()
        assert all(sequence == len(received) for sequence in dropped)  # right after the last answered one
        assert unary.result().result.n_patches == 16 * 20  # the unary call in flight finished too
        stopper.join(30)
        assert received == list(range(len(received)))
        # every frame the server took in was answered: nothing was computed and then lost
        assert sample(server.registry, "pvae_frames_total", rpc="StreamEncode") == len(received)
        assert sample(server.registry, "pvae_inflight_frames") == 0
        with pytest.raises(grpc.RpcError):
            stub.Info(pb.InfoRequest(), timeout=2)
        channel.close()
    finally:
        release.set()
        server.stop()


def test_sigterm_drains_the_cli_server(serving_bundle: Bundle) -> None:
    command = [sys.executable, "-m", "pvae.serving", "--model", str(serving_bundle.root), "--port", "0",
               "--metrics-port", "off", "--device", "cpu", "--drain-grace-s", "2"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as process:
        try:
            assert process.stderr is not None
            port = None
            for line in process.stderr:
                match = re.search(r"on 127\.0\.0\.1:(\d+)", line)
                if match:
                    port = int(match.group(1))
                    break
            assert port, "the server did not report its port"
            ready = process.stderr.readline()
            assert f"SERVING {serving_bundle.root} on 127.0.0.1:{port}" in ready, ready
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
                assert check.status == health_pb2.HealthCheckResponse.SERVING
                assert pb_grpc.EncoderStub(channel).Encode(pb.EncodeRequest(frame=gray_frame()), timeout=10).result
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
            assert "stopped" in process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()


def _serve_cli(serving_bundle: Bundle, *flags: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pvae.serving", "--model", str(serving_bundle.root), "--device", "cpu",
               "--warmup-sizes", "", *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_a_busy_grpc_port_is_a_one_line_error_unless_sharing_is_asked_for(serving_bundle: Bundle) -> None:
    """gRPC sets SO_REUSEPORT by default, so a second server on a held port used to start silently and
    split the clients at random. Now it is refused (exit 2, one line)."""
    config = ServeConfig(port=0, metrics_port=None)
    with InProcessServer(config, bundle=serving_bundle) as first:
        port = first.address.rsplit(":", 1)[1]
        result = _serve_cli(serving_bundle, "--port", port, "--metrics-port", "off")
        assert result.returncode == 2, result.stderr
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
        assert errors == [f"pvae-serve: error: port: cannot listen on 127.0.0.1:{port}: Address already in use "
                          "(pick another --port, or --reuse-port to share it on purpose)"], result.stderr
        # The first server is untouched.
        with grpc.insecure_channel(first.address) as channel:
            assert pb_grpc.EncoderStub(channel).Info(pb.InfoRequest(), timeout=10).model.n_latents > 0


def test_a_busy_metrics_port_is_a_one_line_error(serving_bundle: Bundle) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        result = _serve_cli(serving_bundle, "--port", "0", "--metrics-port", str(port))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Event loop is closed" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"pvae-serve: error: metrics_port: cannot listen on 127.0.0.1:{port}:"), result.stderr
    assert len([line for line in result.stderr.splitlines() if "error" in line.lower()]) == 1, result.stderr


# ----------------------------------------------------------------------------- model sources and devices


def test_model_sources(tmp_path: Path, serving_bundle: Bundle) -> None:
    assert resolve_bundle(serving_bundle.root).root == serving_bundle.root
    with pytest.raises(BundleError, match="no such bundle directory or checkpoint"):
        resolve_bundle(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(BundleError, match="manifest"):
        resolve_bundle(broken)
    # a checkpoint is exported once, then served from the cache
    cached = load_bundle(serving_bundle.root)
    assert cached.root.parent.name == "bundles"


def test_default_model_sources(monkeypatch: pytest.MonkeyPatch, serving_bundle: Bundle) -> None:
    import pvae.serving.source as source

    # a prebuilt default bundle shipped in the package is served as is (torch-free)
    monkeypatch.setattr(source, "DEFAULT_BUNDLE_RESOURCE", str(serving_bundle.root))
    assert resolve_bundle(None).root == serving_bundle.root
    # neither a prebuilt bundle nor the default checkpoint: a clear error
    monkeypatch.setattr(source, "DEFAULT_BUNDLE_RESOURCE", "models/no-such-bundle")
    monkeypatch.setattr(source, "DEFAULT_MODEL_RESOURCE", "models/no-such-model.pt")
    with pytest.raises(BundleError, match="bundled default model is missing"):
        resolve_bundle(None)


def test_cuda_requests_fail_clearly_without_a_gpu() -> None:
    if CUDA_PROVIDER in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    with pytest.raises(DeviceError, match="--gpu 0: this onnxruntime build has no CUDA execution provider"):
        resolve_device("auto", gpu=0)
    assert resolve_device("auto").kind == "cpu"


def test_io_binding_path_gives_the_same_results(serving_bundle: Bundle, graphs: BundleGraphs) -> None:
    """The CUDA code path (outputs bound, rates sliced in place for the sampler), exercised on CPU."""
    bound = Engine(serving_bundle, DevicePlan("cpu"), io_binding=True)
    frames = np.stack([cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for image in synthetic_video(3)])
    batch = bound.run_frames(frames, ("rates", "reconstruction_u8"))
    assert batch.device_rates is not None
    for index in range(3):
        expected = graphs.frame(frames[index])
        np.testing.assert_array_equal(batch.output("rates", index), expected["rates"])
        np.testing.assert_array_equal(batch.output("reconstruction_u8", index), expected["reconstruction_u8"])
        np.testing.assert_array_equal(bound.sample(batch, index, 11), graphs.counts(expected["rates"], 11))


@pytest.mark.gpu
def test_cuda_engine_matches_cpu(serving_bundle: Bundle, graphs: BundleGraphs) -> None:
    if CUDA_PROVIDER not in ort.get_available_providers():
        pytest.skip("no CUDA execution provider (install onnxruntime-gpu)")
    try:
        plan = resolve_device("cuda", gpu=0)
    except DeviceError as exc:
        pytest.skip(str(exc))
    gpu = Engine(serving_bundle, plan)
    frames = np.stack([cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for image in synthetic_video(2)])
    batch = gpu.run_frames(frames, ("rates",))
    for index in range(2):
        expected = graphs.frame(frames[index])
        np.testing.assert_allclose(batch.output("rates", index), expected["rates"], rtol=1e-4, atol=1e-6)
        # counter-based RNG: the same seed gives the same counts on every device (export README)
        np.testing.assert_array_equal(gpu.sample(batch, index, 3), graphs.counts(batch.output("rates", index), 3))
