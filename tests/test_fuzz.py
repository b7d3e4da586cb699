"""Hostile input: property-based fuzzing of frame decoding, request validation and the wire format.

Every case must end in a precise status (INVALID_ARGUMENT or RESOURCE_EXHAUSTED), or a result
when the input happens to be valid; never INTERNAL/UNKNOWN, a crash, or a server that stops
answering. Hypothesis runs derandomized with bounded example counts, so the suite is
deterministic and takes seconds.
"""

from __future__ import annotations

import random
import struct
import zlib
from typing import Any

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvae.errors import InputError
from pvae.serving.decode import ChannelOrder, FrameLimits, decode_encoded, decode_raw, read_image_header
from pvae.serving.inprocess import InProcessServer
from pvae.v1 import pvae_pb2 as pb
from pvae.v1 import pvae_pb2_grpc as pb_grpc

#: Limits of the fuzzed server and decoder: small, so absurd sizes are cheap to reach.
LIMITS = FrameLimits(max_height=256, max_width=320, max_pixels=256 * 320, max_bytes=300_000, min_side=16)
#: Bounded example counts keep the default suite fast.
PURE_EXAMPLES = 300
WIRE_EXAMPLES = 60
#: Statuses a hostile request may get; anything else (INTERNAL, UNKNOWN, ...) is a bug.
PRECISE = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
#: Deadline of each fuzzed call, seconds: a hang fails the test instead of the suite.
CALL_TIMEOUT_S = 20.0
PURE = settings(max_examples=PURE_EXAMPLES, derandomize=True, deadline=None, database=None)
WIRE = settings(max_examples=WIRE_EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

ENCODE = "/pvae.v1.Encoder/Encode"
STREAM = "/pvae.v1.Encoder/StreamEncode"
INFO = "/pvae.v1.Encoder/Info"


def _image(height: int = 48, width: int = 64) -> np.ndarray:
    return np.random.default_rng(height * width).integers(0, 256, (height, width), dtype=np.uint8)


JPEG = cv2.imencode(".jpg", _image())[1].tobytes()
PNG = cv2.imencode(".png", _image())[1].tobytes()


def _png_with_size(width: int, height: int, body: bytes = b"") -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (CRC correct), followed by ``body``."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + body


def _jpeg_with_size(width: int, height: int) -> bytes:
    """The test JPEG with its SOF0 frame header rewritten to claim ``width`` x ``height``."""
    data = bytearray(JPEG)
    at = data.index(b"\xff\xc0") + 5  # marker (2), length (2), precision (1), then height, width
    data[at:at + 4] = struct.pack(">HH", height, width)
    return bytes(data)


def _check_decoded(image: np.ndarray) -> None:
    height, width = image.shape
    assert image.dtype == np.uint8
    assert LIMITS.min_side <= height <= LIMITS.max_height and LIMITS.min_side <= width <= LIMITS.max_width


# ----------------------------------------------------------------------------- pure decoding


hostile_files = st.one_of(
    st.binary(max_size=4096),
    st.builds(lambda n: JPEG[:n], st.integers(0, len(JPEG))),
    st.builds(lambda n: PNG[:n], st.integers(0, len(PNG))),
    st.builds(lambda n, b: JPEG[:n] + b, st.integers(0, len(JPEG)), st.binary(max_size=64)),
    st.builds(lambda i, b: JPEG[:i] + bytes([b]) + JPEG[i + 1:], st.integers(0, len(JPEG) - 1), st.integers(0, 255)),
    st.builds(lambda i, b: PNG[:i] + bytes([b]) + PNG[i + 1:], st.integers(0, len(PNG) - 1), st.integers(0, 255)),
    st.builds(_png_with_size, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=256)),
    st.builds(_jpeg_with_size, st.integers(0, 2**16 - 1), st.integers(0, 2**16 - 1)),
    st.builds(lambda n: b"\xff\xd8" + b"\x00" * n, st.integers(LIMITS.max_bytes - 10, LIMITS.max_bytes + 10)),
)


@PURE
@given(data=hostile_files)
def test_decoding_any_bytes_gives_a_frame_or_an_input_error(data: bytes) -> None:
    try:
        image = decode_encoded(data, LIMITS)
    except InputError as exc:  # PayloadTooLargeError included
        assert str(exc).startswith("frame.encoded"), exc
        return
    _check_decoded(image)
    assert image.shape == (read_image_header(data).height, read_image_header(data).width)


@PURE
@given(height=st.integers(-2**31, 2**32), width=st.integers(-2**31, 2**32), channels=st.integers(-5, 260),
       size=st.integers(0, 2 * LIMITS.max_bytes), order=st.sampled_from(list(ChannelOrder)))
def test_raw_frames_of_any_claimed_shape_are_checked_before_use(height: int, width: int, channels: int,
                                                                 size: int, order: ChannelOrder) -> None:
    data = bytes(size)
    try:
        image = decode_raw(height, width, channels, order, data, LIMITS)
    except InputError as exc:
        assert str(exc).startswith("frame.raw"), exc
        return
    _check_decoded(image)
    assert size == height * width * channels


def test_absurd_headers_are_refused_before_decoding() -> None:
    """A tiny file claiming a gigapixel image must fail on its header (no allocation)."""
    for data in (_png_with_size(100_000, 100_000), _jpeg_with_size(65_535, 65_535)):
        with pytest.raises(InputError, match=r"at most|pixels"):
            decode_encoded(data, LIMITS)


# ----------------------------------------------------------------------------- through the server


#: The module's server (conftest): the frame limits above, small messages and patch batches.
SERVER_CONFIG: dict[str, Any] = {"max_frame_height": LIMITS.max_height, "max_frame_width": LIMITS.max_width,
                                 "max_frame_pixels": LIMITS.max_pixels, "max_frame_bytes": LIMITS.max_bytes,
                                 "max_receive_message_bytes": 1_000_000, "max_patches": 512}


def _outcome(call: Any) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _assert_healthy(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    frame = pb.Frame(raw=pb.RawFrame(height=32, width=48, channels=1, data=_image(32, 48).tobytes()))
    assert pb_grpc.EncoderStub(channel).Encode(pb.EncodeRequest(frame=frame), timeout=CALL_TIMEOUT_S).result


raw_frames = st.builds(
    lambda h, w, c, n, o: pb.Frame(raw=pb.RawFrame(height=h, width=w, channels=c, channel_order=o, data=bytes(n))),
    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 400_000),
    st.integers(0, 5))
float_bytes = st.sampled_from([np.float32(v).tobytes() for v in (0.0, 1.0, -1e30, 1e30, np.nan, np.inf, -np.inf)])
patch_batches = st.one_of(
    st.builds(lambda n, size: pb.Patches(count=n, data=bytes(size)), st.integers(0, 2**32 - 1),
              st.integers(0, 400_000)),
    st.builds(lambda n, value: pb.Patches(count=n, data=value * (n * 256)), st.integers(1, 600), float_bytes),
)
hostile_requests = st.one_of(
    st.builds(lambda data: pb.EncodeRequest(frame=pb.Frame(encoded=data)), hostile_files),
    st.builds(lambda frame: pb.EncodeRequest(frame=frame), raw_frames),
    st.builds(lambda patches: pb.EncodeRequest(patches=patches), patch_batches),
    st.builds(lambda outputs, quality: pb.EncodeRequest(frame=pb.Frame(encoded=PNG), options=pb.EncodeOptions(
        outputs=outputs, jpeg_quality=quality)), st.lists(st.integers(0, 40), max_size=12), st.integers(0, 2**32 - 1)),
)


@WIRE
@given(request=hostile_requests)
def test_hostile_requests_get_a_precise_status(channel: grpc.Channel, request: pb.EncodeRequest) -> None:
    stub = pb_grpc.EncoderStub(channel)
    code = _outcome(lambda: stub.Encode(request, timeout=CALL_TIMEOUT_S))
    assert code == grpc.StatusCode.OK or code in PRECISE, (code, str(request)[:200])


@WIRE
@given(data=st.binary(min_size=1, max_size=2048), method=st.sampled_from([ENCODE, INFO]))
def test_malformed_protobuf_on_the_wire_is_invalid_argument(channel: grpc.Channel, data: bytes, method: str) -> None:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    code = _outcome(lambda: call(data, timeout=CALL_TIMEOUT_S))
    # bytes that happen to parse are valid messages: they get a result or a validation status
    assert code == grpc.StatusCode.OK or code in PRECISE, code


def test_a_malformed_stream_message_closes_the_stream_with_invalid_argument(channel: grpc.Channel) -> None:
    call = channel.stream_stream(STREAM, request_serializer=None,
                                 response_deserializer=pb.StreamEncodeResponse.FromString)
    good = pb.StreamEncodeRequest(sequence=0, frame=pb.Frame(encoded=PNG)).SerializeToString()
    broken = b"\x0a\xff\xff\xff\xff\x0f"  # field 1, length-delimited, claims 4 GiB
    responses: list[pb.StreamEncodeResponse] = []
    with pytest.raises(grpc.RpcError) as info:
        for response in call(iter([good, broken]), timeout=CALL_TIMEOUT_S):
            responses.append(response)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not valid protobuf" in (info.value.details() or "")
    assert [r.sequence for r in responses if r.HasField("result")] == [0]
    # unary too: a named status, not gRPC's generic INTERNAL
    unary = channel.unary_unary(ENCODE, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as info:
        unary(broken, timeout=CALL_TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_hostile_stream_frames_each_get_a_status_and_the_server_stays_healthy(channel: grpc.Channel,
                                                                             server: InProcessServer) -> None:
    frames = [pb.Frame(encoded=JPEG[:len(JPEG) // 2]), pb.Frame(encoded=_png_with_size(10**6, 10**6)),
              pb.Frame(raw=pb.RawFrame(height=2**31, width=2**31, channels=1)),
              pb.Frame(raw=pb.RawFrame(height=32, width=48, channels=7, data=bytes(32 * 48 * 7))),
              pb.Frame(encoded=b"\xff\xd8" + bytes(LIMITS.max_bytes + 1)), pb.Frame(encoded=PNG)]
    requests = [pb.StreamEncodeRequest(sequence=i, frame=f) for i, f in enumerate(frames)]
    responses = list(pb_grpc.EncoderStub(channel).StreamEncode(iter(requests), timeout=CALL_TIMEOUT_S))
    assert [r.sequence for r in responses] == list(range(len(frames)))
    codes = [grpc.StatusCode.OK if r.HasField("result") else
             next(c for c in grpc.StatusCode if c.value[0] == r.error.code) for r in responses]
    assert codes[:-1] == [grpc.StatusCode.INVALID_ARGUMENT] * 4 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert codes[-1] == grpc.StatusCode.OK
    _assert_healthy(channel)
    assert server.registry.get_sample_value("pvae_active_streams") == 0


# ----------------------------------------------------------------------------- the Open Inference Protocol

OIP_INFER = "/inference.GRPCInferenceService/ModelInfer"
OIP_PRECISE = PRECISE | {grpc.StatusCode.NOT_FOUND}
oip_dims = st.lists(st.one_of(st.integers(-2**63, 2**63 - 1), st.sampled_from([0, 1, 16, 64, 256, -1])), max_size=4)
oip_inputs = st.lists(st.tuples(
    st.sampled_from(["patches", "rates", "seed", "frame", "extra", ""]),
    st.sampled_from(["FP32", "FP16", "UINT8", "INT64", "INT32", "FP64", "BYTES", "BOOL", "", "fp32", "FP3"]),
    oip_dims), max_size=3)


@st.composite
def oip_requests(draw: st.DrawFn) -> bytes:
    """A ModelInferRequest as tritonclient can build one, with every field possibly wrong."""
    from pvae.inference import grpc_service_pb2 as oip

    request = oip.ModelInferRequest(
        model_name=draw(st.sampled_from(["pvae_rates", "pvae_counts", "pvae_frame", "unknown", ""])),
        model_version=draw(st.sampled_from(["", "1", "0", "2", "latest"])))
    for name, datatype, shape in draw(oip_inputs):
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    typed = draw(st.booleans()) and len(request.inputs) > 0
    if typed:
        request.inputs[0].contents.uint_contents.extend(draw(st.lists(st.integers(0, 2**32 - 1), max_size=300)))
    raw_count = draw(st.integers(0, len(request.inputs) + 1)) if not typed else 0
    for _ in range(raw_count):
        request.raw_input_contents.append(bytes(draw(st.sampled_from([0, 1, 8, 255, 256 * 4, 64 * 4 * 3, 4096]))))
    for name in draw(st.lists(st.sampled_from(["rates", "log_rates", "counts", "reconstruction", "nope"]),
                              max_size=3)):
        request.outputs.add(name=name)
    if draw(st.booleans()):
        request.parameters["float_format"].string_param = draw(st.sampled_from(["fp16", "fp32", "FP32", "x"]))
    return request.SerializeToString()


@WIRE
@given(payload=oip_requests())
def test_hostile_oip_requests_get_a_precise_status(channel: grpc.Channel, payload: bytes) -> None:
    call = channel.unary_unary(OIP_INFER, request_serializer=None, response_deserializer=None)
    code = _outcome(lambda: call(payload, timeout=CALL_TIMEOUT_S))
    assert code == grpc.StatusCode.OK or code in OIP_PRECISE, code


def test_the_seeded_fuzz_corpus_gets_only_precise_statuses(server: InProcessServer, channel: grpc.Channel) -> None:
    """The corpus of pvae-reliability (pvae.v1 and Open Inference Protocol cases) against a live server."""
    from pvae.bench.reliability import OIP_INFER as CORPUS_OIP_INFER
    from pvae.bench.reliability import hostile_payloads, run_fuzz

    cases = 180
    methods = [method for method, _ in hostile_payloads(random.Random(3), cases)]
    assert methods.count(CORPUS_OIP_INFER) >= cases // 9  # the corpus does reach the OIP service
    tally = run_fuzz(server.address, cases=cases, seed=3)
    assert tally.cases == cases and tally.imprecise == 0, tally.codes
    assert tally.codes.get("NOT_FOUND", 0) > 0 and tally.codes.get("INVALID_ARGUMENT", 0) > 0
    _assert_healthy(channel)
