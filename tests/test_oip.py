"""The Open Inference Protocol on pvae-serve's port, driven by the standard client (tritonclient.grpc).

Results are compared with the bundle's own graphs run directly by ONNX Runtime (and the sampler's
numpy reference), so every model is checked for values, not only for shapes.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from google.protobuf import text_format
from helpers import BundleGraphs, serve_config, unpack_floats
from tritonclient.utils import InferenceServerException

from pvae.bundle import Bundle
from pvae.export.sampler import poisson_reference
from pvae.inference import grpc_service_pb2 as oip
from pvae.inference import grpc_service_pb2_grpc as oip_grpc
from pvae.inference import model_config_pb2 as mc
from pvae.serving.engine import Engine
from pvae.serving.inprocess import InProcessServer
from pvae.serving.oip_models import MODEL_NAMES
from pvae.serving.oip_tensors import read_inputs

TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def client(server: InProcessServer) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.address) as open_client:
        yield open_client


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> oip_grpc.GRPCInferenceServiceStub:
    return oip_grpc.GRPCInferenceServiceStub(channel)


def _patches(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _frame(height: int = 48, width: int = 72, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)


def _input(name: str, array: np.ndarray, datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _status(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


# ----------------------------------------------------------------------------- health and metadata


def test_both_protocol_stub_sets_live_in_one_process() -> None:
    """tritonclient registers the same .proto files in protobuf's default pool: they must agree."""
    assert triton.service_pb2.DESCRIPTOR.serialized_pb == oip.DESCRIPTOR.serialized_pb
    assert triton.model_config_pb2.DESCRIPTOR.serialized_pb == mc.DESCRIPTOR.serialized_pb


def test_health_and_server_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    for name in MODEL_NAMES:
        assert client.is_model_ready(name) and client.is_model_ready(name, "1")
    assert not client.is_model_ready("no_such_model") and not client.is_model_ready("pvae_rates", "2")
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "pvae" and "model_configuration" in metadata["extensions"]
    index = client.get_model_repository_index(as_json=True)
    assert [(m["name"], m["state"]) for m in index["models"]] == [(name, "READY") for name in MODEL_NAMES]


def test_model_metadata_describes_the_graphs(client: triton.InferenceServerClient, tiny_bundle: Bundle) -> None:
    k = tiny_bundle.n_latents
    rates = client.get_model_metadata("pvae_rates", as_json=True)
    assert rates["versions"] == ["1"]
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in rates["inputs"]] == [
        ("patches", "FP32", [-1, tiny_bundle.patch_size ** 2])]
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in rates["outputs"]] == [
        ("rates", "FP16", [-1, k]), ("log_rates", "FP16", [-1, k])]
    counts = client.get_model_metadata("pvae_counts", as_json=True)
    assert [t["name"] for t in counts["inputs"]] == ["rates", "seed"]
    assert [(t["name"], t["datatype"]) for t in counts["outputs"]] == [("counts", "INT32")]
    frame = client.get_model_metadata("pvae_frame", as_json=True)
    assert [(t["name"], t["datatype"]) for t in frame["inputs"]] == [("frame", "UINT8"), ("seed", "INT64")]
    assert [t["name"] for t in frame["outputs"]] == ["rates", "log_rates", "counts", "reconstruction"]


def test_model_config_is_a_valid_triton_config(client: triton.InferenceServerClient, tiny_bundle: Bundle) -> None:
    for name in MODEL_NAMES:
        config = client.get_model_config(name).config
        # Round trip through Triton's text format: what a config.pbtxt of this model would hold.
        parsed = text_format.Parse(text_format.MessageToString(config), mc.ModelConfig())
        assert parsed.name == name and parsed.max_batch_size == 0
        assert parsed.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
        assert not parsed.model_transaction_policy.decoupled
    frame = client.get_model_config("pvae_frame").config
    assert [(i.name, i.data_type, list(i.dims), i.optional) for i in frame.input] == [
        ("frame", mc.TYPE_UINT8, [-1, -1], False), ("seed", mc.TYPE_INT64, [1], True)]
    assert list(frame.output[0].dims) == [-1, tiny_bundle.n_latents]


def test_model_statistics_count_requests(client: triton.InferenceServerClient, tiny_bundle: Bundle) -> None:
    def stats() -> Any:
        return client.get_inference_statistics("pvae_rates").model_stats[0]

    before = stats()
    patches = _patches(10, tiny_bundle.patch_size ** 2)
    for _ in range(3):
        client.infer("pvae_rates", [_input("patches", patches, "FP32")])
    with pytest.raises(InferenceServerException):
        client.infer("pvae_rates", [_input("patches", patches[:, :-1].copy(), "FP32")])
    after = stats()
    assert after.inference_count - before.inference_count == 3
    assert after.inference_stats.success.count - before.inference_stats.success.count == 3
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 1
    assert after.inference_stats.compute_infer.ns > before.inference_stats.compute_infer.ns
    assert after.last_inference > 0
    everything = client.get_inference_statistics()
    assert [m.name for m in everything.model_stats] == list(MODEL_NAMES)


# ----------------------------------------------------------------------------- inference, value by value


def test_rates_equal_the_bundle_graph(client: triton.InferenceServerClient, graphs: BundleGraphs,
                                      tiny_bundle: Bundle) -> None:
    patches = _patches(37, tiny_bundle.patch_size ** 2)
    expected = graphs.rates(patches)
    result = client.infer("pvae_rates", [_input("patches", patches, "FP32")])
    for name in ("rates", "log_rates"):
        got = result.as_numpy(name)
        assert got.dtype == np.float16 and got.shape == expected[name].shape
        np.testing.assert_array_equal(got, expected[name].astype(np.float16))  # round-to-nearest-even, exactly
    exact = client.infer("pvae_rates", [_input("patches", patches, "FP32")], parameters={"float_format": "fp32"})
    for name in ("rates", "log_rates"):
        assert exact.as_numpy(name).dtype == np.float32
        np.testing.assert_array_equal(exact.as_numpy(name), expected[name])


def test_requested_outputs_are_honoured_in_order(client: triton.InferenceServerClient, tiny_bundle: Bundle) -> None:
    patches = _patches(5, tiny_bundle.patch_size ** 2)
    result = client.infer("pvae_rates", [_input("patches", patches, "FP32")],
                          outputs=[triton.InferRequestedOutput("log_rates")])
    response = result.get_response()
    assert [o.name for o in response.outputs] == ["log_rates"] and len(response.raw_output_contents) == 1
    both = client.infer("pvae_rates", [_input("patches", patches, "FP32")],
                        outputs=[triton.InferRequestedOutput("log_rates"), triton.InferRequestedOutput("rates")])
    assert [o.name for o in both.get_response().outputs] == ["log_rates", "rates"]


def test_counts_equal_the_sampler_reference(client: triton.InferenceServerClient, tiny_bundle: Bundle) -> None:
    rates = np.random.default_rng(2).gamma(0.5, 2.0, size=(20, tiny_bundle.n_latents)).astype(np.float32)
    rates[0, :4] = [0.0, 1e-3, 50.0, 200.0]
    seed = np.array([12345], dtype=np.int64)
    result = client.infer("pvae_counts", [_input("rates", rates, "FP32"), _input("seed", seed, "INT64")])
    counts = result.as_numpy("counts")
    assert counts.dtype == np.int32
    np.testing.assert_array_equal(counts, poisson_reference(rates, 12345))
    assert result.get_response().parameters["seed"].int64_param == 12345
    again = client.infer("pvae_counts", [_input("rates", rates, "FP32"), _input("seed", seed + 1, "INT64")])
    assert not np.array_equal(again.as_numpy("counts"), counts)


def test_frame_gives_rates_counts_and_reconstruction(client: triton.InferenceServerClient, graphs: BundleGraphs,
                                                     tiny_bundle: Bundle) -> None:
    frame = _frame()
    expected = graphs.frame(frame)
    result = client.infer("pvae_frame", [_input("frame", frame, "UINT8"),
                                         _input("seed", np.array([7], np.int64), "INT64")])
    np.testing.assert_array_equal(result.as_numpy("rates"), expected["rates"].astype(np.float16))
    np.testing.assert_array_equal(result.as_numpy("counts"), poisson_reference(expected["rates"], 7))
    np.testing.assert_array_equal(result.as_numpy("reconstruction"), expected["reconstruction_u8"])
    parameters = result.get_response().parameters
    patch = tiny_bundle.patch_size
    assert (parameters["grid_rows"].int64_param, parameters["grid_cols"].int64_param) == (
        -(-48 // patch), -(-72 // patch))
    assert result.as_numpy("rates").shape == (parameters["grid_rows"].int64_param
                                              * parameters["grid_cols"].int64_param, tiny_bundle.n_latents)


def test_frame_without_seed_reports_the_seed_it_drew(client: triton.InferenceServerClient,
                                                     graphs: BundleGraphs) -> None:
    frame = _frame(32, 32, seed=3)
    result = client.infer("pvae_frame", [_input("frame", frame, "UINT8")],
                          outputs=[triton.InferRequestedOutput("counts")])
    seed = result.get_response().parameters["seed"].int64_param
    np.testing.assert_array_equal(result.as_numpy("counts"), poisson_reference(graphs.frame(frame)["rates"], seed))


def test_typed_contents_are_accepted(stub: oip_grpc.GRPCInferenceServiceStub, graphs: BundleGraphs,
                                     tiny_bundle: Bundle) -> None:
    patches = _patches(3, tiny_bundle.patch_size ** 2)
    request = oip.ModelInferRequest(model_name="pvae_rates", parameters={
        "float_format": oip.InferParameter(string_param="fp32")})
    request.inputs.add(name="patches", datatype="FP32", shape=patches.shape,
                       contents=oip.InferTensorContents(fp32_contents=patches.ravel()))
    response = stub.ModelInfer(request, timeout=TIMEOUT_S)
    got = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(3, tiny_bundle.n_latents)
    np.testing.assert_array_equal(got, graphs.rates(patches)["rates"])
    frame = _frame(16, 16)
    request = oip.ModelInferRequest(model_name="pvae_frame", outputs=[
        oip.ModelInferRequest.InferRequestedOutputTensor(name="reconstruction")])
    request.inputs.add(name="frame", datatype="UINT8", shape=frame.shape,
                       contents=oip.InferTensorContents(uint_contents=frame.ravel().tolist()))
    request.inputs.add(name="seed", datatype="INT64", shape=[1], contents=oip.InferTensorContents(int64_contents=[1]))
    response = stub.ModelInfer(request, timeout=TIMEOUT_S)
    assert response.outputs[0].name == "reconstruction" and list(response.outputs[0].shape) == [16, 16]
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], np.uint8).reshape(16, 16),
                                  graphs.frame(frame)["reconstruction_u8"])


# ----------------------------------------------------------------------------- streaming


def test_stream_infer_answers_in_order_with_in_band_errors(client: triton.InferenceServerClient,
                                                           graphs: BundleGraphs, tiny_bundle: Bundle) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    patches = [_patches(4 + i, tiny_bundle.patch_size ** 2, seed=i) for i in range(4)]
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i, batch in enumerate(patches):
            if i == 2:  # a bad request in the middle: wrong width
                client.async_stream_infer("pvae_rates", [_input("patches", batch[:, :7].copy(), "FP32")],
                                          request_id="bad")
            client.async_stream_infer("pvae_rates", [_input("patches", batch, "FP32")], request_id=f"r{i}")
        client.async_stream_infer("no_such_model", [_input("patches", patches[0], "FP32")], request_id="missing")
        client.async_stream_infer("pvae_rates", [_input("patches", patches[0], "FP32")], request_id="last")
        received = [answers.get(timeout=TIMEOUT_S) for _ in range(7)]
    finally:
        client.stop_stream()
    ids = []
    for result, error in received:
        if error is not None:
            ids.append(("error", str(error)))
            continue
        ids.append(("ok", result.get_response().id))
        index = {"r0": 0, "r1": 1, "r2": 2, "r3": 3, "last": 0}[result.get_response().id]
        np.testing.assert_array_equal(result.as_numpy("rates"),
                                      graphs.rates(patches[index])["rates"].astype(np.float16))
    assert [kind for kind, _ in ids] == ["ok", "ok", "error", "ok", "ok", "error", "ok"]
    assert [value for kind, value in ids if kind == "ok"] == ["r0", "r1", "r2", "r3", "last"]
    assert "INVALID_ARGUMENT" in ids[2][1] and "input 'patches'" in ids[2][1]
    assert "NOT_FOUND" in ids[5][1] and "no_such_model" in ids[5][1]


def test_streams_count_against_max_streams(engine: Engine, tiny_bundle: Bundle) -> None:
    with InProcessServer(serve_config(max_streams=1), engine=engine, auth_tokens=()) as server, \
            grpc.insecure_channel(server.address) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        hold = threading.Event()

        def first_requests() -> Iterator[oip.ModelInferRequest]:
            yield oip.ModelInferRequest(model_name="pvae_rates", id="held")  # missing input: in-band error
            hold.wait(TIMEOUT_S)

        opened = stub.ModelStreamInfer(first_requests(), timeout=TIMEOUT_S)
        assert next(opened).error_message  # the first stream is open
        code, details = _status(lambda: list(stub.ModelStreamInfer(iter([oip.ModelInferRequest()]),
                                                                   timeout=TIMEOUT_S)))
        hold.set()
        list(opened)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_streams=1" in details


# ----------------------------------------------------------------------------- statuses


def test_unknown_models_and_versions_are_not_found(stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    calls = [
        lambda: stub.ModelInfer(oip.ModelInferRequest(model_name="nope"), timeout=TIMEOUT_S),
        lambda: stub.ModelInfer(oip.ModelInferRequest(model_name="pvae_rates", model_version="2"), timeout=TIMEOUT_S),
        lambda: stub.ModelMetadata(oip.ModelMetadataRequest(name="nope"), timeout=TIMEOUT_S),
        lambda: stub.ModelConfig(oip.ModelConfigRequest(name="nope"), timeout=TIMEOUT_S),
        lambda: stub.ModelStatistics(oip.ModelStatisticsRequest(name="nope"), timeout=TIMEOUT_S),
    ]
    for call in calls:
        code, details = _status(call)
        assert code == grpc.StatusCode.NOT_FOUND and ("nope" in details or "version '2'" in details), details


def _rates_request(shape: list[int], data: bytes, datatype: str = "FP32", **fields: Any) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name="pvae_rates", **fields)
    request.inputs.add(name="patches", datatype=datatype, shape=shape)
    request.raw_input_contents.append(data)
    return request


def test_bad_requests_name_the_tensor(stub: oip_grpc.GRPCInferenceServiceStub, tiny_bundle: Bundle) -> None:
    dim, k = tiny_bundle.patch_size ** 2, tiny_bundle.n_latents
    good = _patches(2, dim).tobytes()
    wrong_output = _rates_request([2, dim], good)
    wrong_output.outputs.add(name="spikes")
    two_raw = _rates_request([2, dim], good)
    two_raw.raw_input_contents.append(good)
    no_seed = oip.ModelInferRequest(model_name="pvae_counts")
    no_seed.inputs.add(name="rates", datatype="FP32", shape=[1, k])
    no_seed.raw_input_contents.append(np.ones((1, k), np.float32).tobytes())
    negative_seed = oip.ModelInferRequest(model_name="pvae_counts")
    negative_seed.CopyFrom(no_seed)
    negative_seed.inputs.add(name="seed", datatype="INT64", shape=[1])
    negative_seed.raw_input_contents.append(np.array([-5], np.int64).tobytes())
    cases = {
        "datatype 'FP64'": _rates_request([2, dim], good, "FP64"),
        "datatype 'BANANA'": _rates_request([2, dim], good, "BANANA"),
        "holds 100 bytes": _rates_request([2, dim], good[:100]),
        "negative dimension": _rates_request([-2, dim], good),
        "does not match the model's": _rates_request([2, dim + 1], good),
        "3 dimensions": _rates_request([1, 2, dim], good),
        "output 'spikes'": wrong_output,
        "2 entries for 1 inputs": two_raw,
        "input 'seed': missing": no_seed,
        "input 'seed': must be": negative_seed,
        "NaN": _rates_request([1, dim], np.full(dim, np.nan, np.float32).tobytes()),
        "has 0 rows": _rates_request([0, dim], b""),
        "parameter 'float_format'": _rates_request([2, dim], good, parameters={
            "float_format": oip.InferParameter(string_param="fp8")}),
        # pvae.v1's compact rate codes are no OIP tensor: refused by name, not an INTERNAL error
        'must be the string "fp16" or "fp32", got \'u8log\'': _rates_request([2, dim], good, parameters={
            "float_format": oip.InferParameter(string_param="u8log")}),
    }
    for expected, request in cases.items():
        code, details = _status(lambda request=request: stub.ModelInfer(request, timeout=TIMEOUT_S))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (expected, code, details)
        assert expected in details, (expected, details)


def test_huge_dims_are_refused_before_allocation(stub: oip_grpc.GRPCInferenceServiceStub,
                                                 tiny_bundle: Bundle) -> None:
    dim = tiny_bundle.patch_size ** 2
    for rows in (2**40, 2**62):
        code, details = _status(lambda rows=rows: stub.ModelInfer(_rates_request([rows, dim], b"\0" * 16),
                                                                  timeout=TIMEOUT_S))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "over the server's limit" in details
    frame = oip.ModelInferRequest(model_name="pvae_frame")
    frame.inputs.add(name="frame", datatype="UINT8", shape=[4000, 4000])
    frame.raw_input_contents.append(bytes(4000 * 4000))
    code, details = _status(lambda: stub.ModelInfer(frame, timeout=TIMEOUT_S))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "input 'frame'" in details


def test_read_inputs_refuses_mixed_and_short_typed_contents(tiny_bundle: Bundle) -> None:
    from pvae.errors import InputError
    from pvae.serving.oip_models import model_specs

    model = model_specs(tiny_bundle.n_latents, 4)["pvae_rates"]
    short = oip.ModelInferRequest(model_name="pvae_rates")
    short.inputs.add(name="patches", datatype="FP32", shape=[2, 4], contents=oip.InferTensorContents(
        fp32_contents=[1.0] * 7))
    with pytest.raises(InputError, match="holds 7 values"):
        read_inputs(short, model, 1 << 20)
    mixed = oip.ModelInferRequest()
    mixed.CopyFrom(short)
    mixed.raw_input_contents.append(bytes(32))
    with pytest.raises(InputError, match="use one or the other"):
        read_inputs(mixed, model, 1 << 20)
    assert read_inputs(_rates_request([2, 4], np.ones((2, 4), np.float32).tobytes()), model, 1 << 20)[
        "patches"].shape == (2, 4)


def test_overload_is_resource_exhausted_and_metrics_are_labelled(engine: Engine, tiny_bundle: Bundle) -> None:
    with InProcessServer(serve_config(max_queue_frames=1, max_batch_frames=1, max_batch_delay_s=0.0, post_threads=1),
                         engine=engine, auth_tokens=()) as server, grpc.insecure_channel(server.address) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        request = _rates_request([2000, tiny_bundle.patch_size ** 2],
                                 _patches(2000, tiny_bundle.patch_size ** 2).tobytes())
        futures = [stub.ModelInfer.future(request, timeout=TIMEOUT_S) for _ in range(16)]
        codes = [_status(future.result)[0] for future in futures]
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert refused > 0 and codes.count(grpc.StatusCode.OK) > 0
        labels = {"protocol": "oip", "rpc": "ModelInfer"}
        registry = server.registry
        assert registry.get_sample_value("pvae_errors_total", {**labels, "code": "RESOURCE_EXHAUSTED"}) == refused
        assert registry.get_sample_value("pvae_frames_total", labels) == codes.count(grpc.StatusCode.OK)
        assert registry.get_sample_value("pvae_received_bytes_total", labels) > 16 * 2000 * 256 * 4


def test_warm_up_and_drain_are_unavailable(engine: Engine, tiny_bundle: Bundle) -> None:
    server = InProcessServer(serve_config(), engine=engine, auth_tokens=(), warm_up=False).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            request = _rates_request([1, tiny_bundle.patch_size ** 2],
                                     _patches(1, tiny_bundle.patch_size ** 2).tobytes())
            assert not stub.ServerReady(oip.ServerReadyRequest(), timeout=TIMEOUT_S).ready
            assert stub.ServerLive(oip.ServerLiveRequest(), timeout=TIMEOUT_S).live
            code, details = _status(lambda: stub.ModelInfer(request, timeout=TIMEOUT_S))
            assert code == grpc.StatusCode.UNAVAILABLE and "warming up" in details
            server.warm_up()
            assert stub.ServerReady(oip.ServerReadyRequest(), timeout=TIMEOUT_S).ready
            assert stub.ModelInfer(request, timeout=TIMEOUT_S).outputs
            assert server.running is not None
            server.running.servicer.begin_drain()
            assert not stub.ServerReady(oip.ServerReadyRequest(), timeout=TIMEOUT_S).ready
            code, details = _status(lambda: stub.ModelInfer(request, timeout=TIMEOUT_S))
            assert code == grpc.StatusCode.UNAVAILABLE and "draining" in details
            code, _ = _status(lambda: list(stub.ModelStreamInfer(iter([request]), timeout=TIMEOUT_S)))
            assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()


def test_malformed_protobuf_is_invalid_argument(server: InProcessServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        unary = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=None,
                                    response_deserializer=None)
        code, details = _status(lambda: unary(b"\x0a\xff\xff\xff\xff\x0f", timeout=TIMEOUT_S))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "not valid protobuf" in details
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer", request_serializer=None,
                                       response_deserializer=None)
        code, details = _status(lambda: list(stream(iter([b"\x0a\xff\xff\xff\xff\x0f"]), timeout=TIMEOUT_S)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "not valid protobuf" in details


def test_asyncio_client_infers_and_streams(server: InProcessServer, graphs: BundleGraphs, tiny_bundle: Bundle) -> None:
    """tritonclient.grpc.aio: unary infer and stream_infer over an async request iterator."""
    import asyncio

    import tritonclient.grpc.aio as triton_aio

    patches = [_patches(6, tiny_bundle.patch_size ** 2, seed=10 + i) for i in range(3)]

    async def run() -> tuple[Any, list[Any]]:
        async with triton_aio.InferenceServerClient(server.address) as aio_client:
            unary = await aio_client.infer("pvae_rates", [_input("patches", patches[0], "FP32")])

            async def requests() -> Any:
                for i, batch in enumerate(patches):
                    yield {"model_name": "pvae_rates", "inputs": [_input("patches", batch, "FP32")],
                           "request_id": f"s{i}"}

            streamed = [(result, error) async for result, error in aio_client.stream_infer(requests())]
            return unary, streamed

    unary, streamed = asyncio.run(run())
    np.testing.assert_array_equal(unary.as_numpy("rates"), graphs.rates(patches[0])["rates"].astype(np.float16))
    assert [error for _, error in streamed] == [None] * 3
    assert [result.get_response().id for result, _ in streamed] == ["s0", "s1", "s2"]
    for (result, _), batch in zip(streamed, patches, strict=True):
        np.testing.assert_array_equal(result.as_numpy("log_rates"),
                                      graphs.rates(batch)["log_rates"].astype(np.float16))


def test_byte_metrics_equal_the_wire_sizes(server: InProcessServer, stub: oip_grpc.GRPCInferenceServiceStub,
                                          tiny_bundle: Bundle) -> None:
    """Sizes are computed without re-serializing the megabytes: they must still be exact."""
    registry = server.registry

    def counters(rpc: str) -> tuple[float, float]:
        labels = {"protocol": "oip", "rpc": rpc}
        return (registry.get_sample_value("pvae_received_bytes_total", labels) or 0.0,
                registry.get_sample_value("pvae_sent_bytes_total", labels) or 0.0)

    dim = tiny_bundle.patch_size ** 2
    request = _rates_request([9, dim], _patches(9, dim).tobytes(), id="sized")
    frame_request = oip.ModelInferRequest(model_name="pvae_frame")
    frame_request.inputs.add(name="frame", datatype="UINT8", shape=[40, 56])
    frame_request.raw_input_contents.append(_frame(40, 56).tobytes())
    for message in (request, frame_request):
        before = counters("ModelInfer")
        response = stub.ModelInfer(message, timeout=TIMEOUT_S)
        after = counters("ModelInfer")
        assert (after[0] - before[0], after[1] - before[1]) == (message.ByteSize(), response.ByteSize())
    before = counters("ModelStreamInfer")
    answers = list(stub.ModelStreamInfer(iter([request, frame_request, request]), timeout=TIMEOUT_S))
    after = counters("ModelStreamInfer")
    assert after[0] - before[0] == 2 * request.ByteSize() + frame_request.ByteSize()
    assert after[1] - before[1] == sum(answer.ByteSize() for answer in answers)


def test_unimplemented_extension_rpcs_answer_unimplemented_without_flooding_the_log(
        stub: oip_grpc.GRPCInferenceServiceStub, caplog: pytest.LogCaptureFixture) -> None:
    calls = [
        (stub.SystemSharedMemoryStatus, oip.SystemSharedMemoryStatusRequest()),
        (stub.CudaSharedMemoryRegister, oip.CudaSharedMemoryRegisterRequest(name="x")),
        (stub.RepositoryModelLoad, oip.RepositoryModelLoadRequest(model_name="pvae_rates")),
        (stub.TraceSetting, oip.TraceSettingRequest()),
        (stub.LogSettings, oip.LogSettingsRequest()),
    ]
    with caplog.at_level("DEBUG"):
        for _ in range(20):
            for call, request in calls:
                with pytest.raises(grpc.RpcError) as failed:
                    call(request, timeout=10)
                assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED
                assert "is not implemented by pvae-serve" in (failed.value.details() or "")
    noisy = [r for r in caplog.records if r.levelno >= 40 or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy[:3]]


def _until(stop: threading.Event, request: oip.ModelInferRequest) -> Iterator[oip.ModelInferRequest]:
    while not stop.is_set():
        yield request


def test_an_abrupt_disconnect_mid_stream_is_a_cancelled_stream_not_a_logged_error(
        caplog: pytest.LogCaptureFixture) -> None:
    """A client whose connection goes away while ModelStreamInfer sends it a
    response made grpc.aio log ``ExecuteBatchError`` at ERROR with a traceback (about one
    disconnect in three with the bundled model's megabyte responses). It is a cancelled stream,
    as on StreamEncode: nothing at ERROR, no traceback, the stream counted CANCELLED, the server idle."""
    from pvae.bench.reliability import server_is_idle, serves_normally
    from pvae.serving.source import resolve_bundle

    trials = 24
    frame = _frame(480, 640)
    request = oip.ModelInferRequest(model_name="pvae_frame")  # every output, fp32: ~7 MB a response with K=512
    request.parameters["float_format"].string_param = "fp32"
    request.inputs.add(name="frame", datatype="UINT8", shape=list(frame.shape))
    request.raw_input_contents.append(frame.tobytes())
    big = [("grpc.max_receive_message_length", 64 << 20)]
    default_model = resolve_bundle(None)
    with caplog.at_level("DEBUG"), InProcessServer(serve_config(), bundle=default_model, auth_tokens=()) as server:
        for _ in range(trials):
            stop = threading.Event()
            doomed = grpc.insecure_channel(server.address, options=big)
            call = oip_grpc.GRPCInferenceServiceStub(doomed).ModelStreamInfer(_until(stop, request), timeout=60)
            assert not next(call).error_message
            doomed.close()  # no half-close, no cancel: the connection goes away under the server
            stop.set()
        assert server_is_idle(server.registry)
        cancelled = server.registry.get_sample_value(
            "pvae_errors_total", {"protocol": "oip", "rpc": "ModelStreamInfer", "code": "CANCELLED"})
        assert cancelled == trials
        with grpc.insecure_channel(server.address) as channel:
            assert serves_normally(channel)
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy[:3]]


def test_write_responses_turns_a_failed_write_into_a_cancelled_call() -> None:
    """The deterministic half of the test above: when gRPC core fails a write (ExecuteBatchError, a
    grpc.aio.InternalError), the handler's generator is closed at once and the call ends cancelled."""
    import asyncio

    from pvae.serving.wire import write_responses

    events: list[str] = []

    async def handler() -> Any:
        try:
            yield b"first"
            yield b"second"
        except GeneratorExit:
            events.append("closed")
            raise

    class Context:
        async def write(self, message: bytes) -> None:
            events.append(f"write {message!r}")
            raise grpc.aio.InternalError("Failed \"execute_batch\"")

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(write_responses(handler(), Context()))  # type: ignore[arg-type]
    assert events == ["write b'first'", "closed"]


# ----------------------------------------------------------------------------- pvae_preprocess


def _stream_rates(address: str, frame: np.ndarray) -> np.ndarray:
    """The fp32 rates StreamEncode returns for one gray frame (pvae.v1, raw pixels)."""
    from pvae.serving.options import FloatFormat
    from pvae.v1 import pvae_pb2 as pb
    from pvae.v1 import pvae_pb2_grpc as pb_grpc

    raw = pb.RawFrame(height=frame.shape[0], width=frame.shape[1], channels=1, data=frame.tobytes())
    request = pb.StreamEncodeRequest(sequence=0, frame=pb.Frame(raw=raw), options=pb.EncodeOptions(
        outputs=[pb.OUTPUT_RATES], float_format=pb.FLOAT_FORMAT_FP32))
    with grpc.insecure_channel(address) as channel:
        (response,) = list(pb_grpc.EncoderStub(channel).StreamEncode(iter([request]), timeout=TIMEOUT_S))
    result = response.result
    return unpack_floats(result.rates, FloatFormat.FP32, (result.n_patches, result.n_latents))


def test_preprocess_then_rates_equals_what_stream_encode_returns(client: triton.InferenceServerClient,
                                                                 server: InProcessServer, tiny_bundle: Bundle) -> None:
    """pvae_rates takes whitened model-space patches, which a Triton client could not make. pvae_preprocess
    makes them from a frame with the frame graph's own preprocessing, so tritonclient alone, chaining
    the two, gets the rates StreamEncode returns for the same frame: equal to 1e-6 relative (float32
    round-off of one rate path against another; measured equal bit for bit)."""
    frame = _frame(52, 77, seed=5)  # sides not multiples of 16: the reflect padding is exercised too
    pre = client.infer("pvae_preprocess", [_input("frame", frame, "UINT8")])
    patches = pre.as_numpy("patches")
    parameters = pre.get_response().parameters
    rows, cols = parameters["grid_rows"].int64_param, parameters["grid_cols"].int64_param
    assert (rows, cols) == (4, 5) and patches.dtype == np.float32
    assert patches.shape == (rows * cols, tiny_bundle.patch_size ** 2)
    rates = client.infer("pvae_rates", [_input("patches", patches, "FP32")],
                         parameters={"float_format": "fp32"}).as_numpy("rates")
    streamed = _stream_rates(server.address, frame)
    assert rates.shape == streamed.shape == (rows * cols, tiny_bundle.n_latents)
    np.testing.assert_allclose(rates, streamed, rtol=1e-6, atol=0)
    # and the patches are the frame graph's model-space frame, reflect-padded and tiled row-major
    pre_frame = BundleGraphs(tiny_bundle).frame(frame)["preprocessed"]
    p = tiny_bundle.patch_size
    padded = np.pad(pre_frame, ((0, rows * p - frame.shape[0]), (0, cols * p - frame.shape[1])), mode="reflect")
    tiles = padded.reshape(rows, p, cols, p).transpose(0, 2, 1, 3).reshape(rows * cols, p * p)
    np.testing.assert_array_equal(patches, tiles)


def test_a_colour_frame_is_turned_to_gray_as_pvae_v1_does(client: triton.InferenceServerClient) -> None:
    import cv2

    rgb = np.random.default_rng(7).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    want = client.infer("pvae_preprocess", [_input("frame", gray, "UINT8")]).as_numpy("patches")
    got = client.infer("pvae_preprocess", [_input("frame", rgb, "UINT8")], parameters={"channel_order": "rgb"})
    np.testing.assert_array_equal(got.as_numpy("patches"), want)
    bgr = client.infer("pvae_preprocess", [_input("frame", rgb[:, :, ::-1].copy(), "UINT8")])  # BGR: the default
    np.testing.assert_array_equal(bgr.as_numpy("patches"), want)
    frame = client.infer("pvae_frame", [_input("frame", rgb, "UINT8"), _input("seed", np.array([3]), "INT64")],
                         parameters={"channel_order": "rgb"})
    gray_frame = client.infer("pvae_frame", [_input("frame", gray, "UINT8"), _input("seed", np.array([3]), "INT64")])
    np.testing.assert_array_equal(frame.as_numpy("counts"), gray_frame.as_numpy("counts"))
    for inputs, parameters, message in (
            ([_input("frame", rgb[:, :, :2].copy(), "UINT8")], {}, "C = 3 or 4"),
            ([_input("frame", rgb, "UINT8")], {"channel_order": "rbg"}, "channel_order"),
            ([_input("frame", gray[:8], "UINT8")], {}, "at least")):
        with pytest.raises(InferenceServerException, match=message) as failed:
            client.infer("pvae_preprocess", inputs, parameters=parameters)
        assert failed.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_each_model_says_what_its_inputs_expect(client: triton.InferenceServerClient, tiny_bundle: Bundle) -> None:
    """ModelConfig parameters describe every model and tensor; pvae_rates points to pvae_preprocess."""
    for name in MODEL_NAMES:
        config = client.get_model_config(name).config
        texts = {key: value.string_value for key, value in config.parameters.items()}
        assert texts["description"]
        assert {f"input.{t.name}" for t in config.input} <= set(texts), name
        assert {f"output.{t.name}" for t in config.output} <= set(texts), name
    rates = client.get_model_config("pvae_rates").config.parameters
    assert "pvae_preprocess" in rates["input.patches"].string_value
    assert "whitened" in rates["input.patches"].string_value
    pre = client.get_model_config("pvae_preprocess").config
    assert [(i.name, i.data_type, list(i.dims)) for i in pre.input] == [("frame", mc.TYPE_UINT8, [-1, -1])]
    assert [(o.name, o.data_type, list(o.dims)) for o in pre.output] == [
        ("patches", mc.TYPE_FP32, [-1, tiny_bundle.patch_size ** 2])]
    assert "grid_rows" in pre.parameters["output.patches"].string_value
