"""pvae.serving: the gRPC streaming encoder service (``pvae-serve``) and its compute pipeline.

Modules, in the order a frame meets them::

    config     ServeConfig: every limit and flag, validated (the CLI mirrors it)
    source     --model -> a bundle (bundle dir, checkpoint exported on the fly, or the default)
    decode     validate + decode JPEG/PNG/raw frames to uint8 gray (header dims checked first)
    engine     ONNX Runtime sessions over the bundle's graphs (CPU, or CUDA with I/O binding)
    pipeline   frames -> graph outputs -> per-frame counts -> packed results (no gRPC)
    pack       fp16 rates, sparse/dense counts, PNG/JPEG images, frame statistics
    batcher    cross-stream batching of equal-size frames; bounded queue; overload
    messages   pvae.v1 messages <-> pipeline data
    servicer   grpc.aio servicer of pvae.v1: streams, windows, drops, status codes
    oip        the Open Inference Protocol (KServe v2) servicer on the same pipeline and port
    wire       malformed protobuf -> INVALID_ARGUMENT; request sizes; pre-serialized responses; stream writes
    security   TLS / mutual TLS, bearer tokens
    memory     glibc malloc settings for megabyte messages
    metrics    Prometheus metrics on an injected registry
    logs       rate-limited logs: Python records and native stderr (no client can flood the log)
    server     pvae-serve: health, reflection, metrics HTTP, graceful drain
    inprocess  a server on a background thread (tests, notebooks, client tests)

Benchmarks and the reliability harness that drive this service live in ``pvae.bench``.

    >>> from pvae.serving import InProcessServer, ServeConfig
    >>> with InProcessServer(ServeConfig(port=0, metrics_port=None), bundle=bundle) as server:
    ...     print(server.address)
"""

from pvae.serving.config import ServeConfig
from pvae.serving.engine import DevicePlan, Engine, resolve_device
from pvae.serving.errors import InferenceError, OverloadedError, PayloadTooLargeError, ServingError, UnavailableError
from pvae.serving.inprocess import InProcessServer
from pvae.serving.options import CountFormat, FloatFormat, ImageEncoding, Output, OutputSpec
from pvae.serving.pipeline import FrameJob, PackedResult, PatchJob, Pipeline, PreprocessJob, SampleJob
from pvae.serving.server import RunningServer, start_server
from pvae.serving.source import resolve_bundle

__all__ = [
    "CountFormat",
    "DevicePlan",
    "Engine",
    "FloatFormat",
    "FrameJob",
    "ImageEncoding",
    "InProcessServer",
    "InferenceError",
    "Output",
    "OutputSpec",
    "OverloadedError",
    "PackedResult",
    "PatchJob",
    "PayloadTooLargeError",
    "Pipeline",
    "PreprocessJob",
    "RunningServer",
    "SampleJob",
    "ServeConfig",
    "ServingError",
    "UnavailableError",
    "resolve_bundle",
    "resolve_device",
    "start_server",
]
