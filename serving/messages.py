"""pvae.v1 messages <-> the pipeline's plain data. The only module besides the servicer that knows protobuf.

Request parsing validates every field it reads and raises InputError naming it (the servicer maps
that to INVALID_ARGUMENT); result building copies packed bytes into the response message.

    >>> spec, seed = parse_options(request.options, default_jpeg_quality=90)
    >>> fill_result(response.result, packed_result, total_seconds=0.012)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pvae.errors import InputError
from pvae.serving.decode import ChannelOrder, FrameLimits, decode_encoded, decode_raw
from pvae.serving.errors import PayloadTooLargeError
from pvae.serving.options import (
    DEFAULT_OUTPUTS,
    MAX_SEED,
    CountFormat,
    FloatFormat,
    ImageEncoding,
    Output,
    OutputSpec,
)
from pvae.serving.pack import DenseCountsPacked, RiceCodesPacked, SparseCountsPacked
from pvae.serving.pipeline import PackedImage, PackedResult
from pvae.v1 import pvae_pb2 as pb

__all__ = [
    "FLOAT_FORMATS",
    "IMAGE_ENCODINGS",
    "decode_frame",
    "fill_result",
    "frame_is_encoded",
    "parse_options",
    "parse_patches",
    "parse_stream_settings",
]

_OUTPUTS = {
    pb.OUTPUT_RATES: Output.RATES,
    pb.OUTPUT_LOG_RATES: Output.LOG_RATES,
    pb.OUTPUT_COUNTS: Output.COUNTS,
    pb.OUTPUT_RECONSTRUCTION: Output.RECONSTRUCTION,
    pb.OUTPUT_PREPROCESSED: Output.PREPROCESSED,
    pb.OUTPUT_STATS: Output.STATS,
}
_COUNT_FORMATS = {
    pb.COUNT_FORMAT_UNSPECIFIED: CountFormat.SPARSE,
    pb.COUNT_FORMAT_SPARSE: CountFormat.SPARSE,
    pb.COUNT_FORMAT_DENSE_U8: CountFormat.DENSE_U8,
    pb.COUNT_FORMAT_RICE: CountFormat.RICE,
}
#: Request enum value -> ImageEncoding (UNSPECIFIED means RAW), and back for responses.
IMAGE_ENCODINGS = {
    pb.IMAGE_ENCODING_UNSPECIFIED: ImageEncoding.RAW,
    pb.IMAGE_ENCODING_RAW: ImageEncoding.RAW,
    pb.IMAGE_ENCODING_PNG: ImageEncoding.PNG,
    pb.IMAGE_ENCODING_JPEG: ImageEncoding.JPEG,
}
_IMAGE_ENCODING_VALUES = {ImageEncoding.RAW: pb.IMAGE_ENCODING_RAW, ImageEncoding.PNG: pb.IMAGE_ENCODING_PNG,
                          ImageEncoding.JPEG: pb.IMAGE_ENCODING_JPEG}
#: Request enum value -> FloatFormat (UNSPECIFIED means FP16), and back for responses.
FLOAT_FORMATS = {
    pb.FLOAT_FORMAT_UNSPECIFIED: FloatFormat.FP16,
    pb.FLOAT_FORMAT_FP16: FloatFormat.FP16,
    pb.FLOAT_FORMAT_FP32: FloatFormat.FP32,
    pb.FLOAT_FORMAT_U8_LOG: FloatFormat.U8_LOG,
}
_FLOAT_FORMAT_VALUES = {FloatFormat.FP16: pb.FLOAT_FORMAT_FP16, FloatFormat.FP32: pb.FLOAT_FORMAT_FP32,
                        FloatFormat.U8_LOG: pb.FLOAT_FORMAT_U8_LOG}
_CHANNEL_ORDERS = {
    pb.CHANNEL_ORDER_UNSPECIFIED: ChannelOrder.BGR,
    pb.CHANNEL_ORDER_BGR: ChannelOrder.BGR,
    pb.CHANNEL_ORDER_RGB: ChannelOrder.RGB,
}
#: Window policies by request enum value (UNSPECIFIED means BLOCK).
WINDOW_POLICIES = {
    pb.WINDOW_POLICY_UNSPECIFIED: "block",
    pb.WINDOW_POLICY_BLOCK: "block",
    pb.WINDOW_POLICY_DROP_OLDEST: "drop_oldest",
}
#: Largest JPEG quality (libjpeg's scale is 1..100).
MAX_JPEG_QUALITY = 100


def _enum(table: Mapping[int, object], value: int, field: str) -> object:
    try:
        return table[value]
    except KeyError:
        raise InputError(f"{field}: unknown value {value}") from None


def parse_options(options: pb.EncodeOptions | None, default_jpeg_quality: int) -> tuple[OutputSpec, int | None]:
    """EncodeOptions -> (OutputSpec, seed or None). InputError on any bad field."""
    if options is None:
        return OutputSpec(DEFAULT_OUTPUTS, jpeg_quality=default_jpeg_quality), None
    outputs: set[Output] = set()
    for i, value in enumerate(options.outputs):
        if value == pb.OUTPUT_UNSPECIFIED:
            raise InputError(f"options.outputs[{i}]: OUTPUT_UNSPECIFIED is not an output")
        output = _enum(_OUTPUTS, value, f"options.outputs[{i}]")
        assert isinstance(output, Output)
        if output in outputs:
            raise InputError(f"options.outputs[{i}]: {output.name} is listed twice")
        outputs.add(output)
    quality = options.jpeg_quality
    if quality > MAX_JPEG_QUALITY:
        raise InputError(f"options.jpeg_quality: must be 1..{MAX_JPEG_QUALITY} (0 = server default), got {quality}")
    seed: int | None = None
    if options.HasField("seed"):
        seed = int(options.seed)
        if seed > MAX_SEED:
            raise InputError(f"options.seed: must be at most 2^63 - 1 = {MAX_SEED}, got {seed}")
    count_format = _enum(_COUNT_FORMATS, options.count_format, "options.count_format")
    image_encoding = _enum(IMAGE_ENCODINGS, options.image_encoding, "options.image_encoding")
    float_format = _enum(FLOAT_FORMATS, options.float_format, "options.float_format")
    assert isinstance(count_format, CountFormat) and isinstance(image_encoding, ImageEncoding)
    assert isinstance(float_format, FloatFormat)
    spec = OutputSpec(
        outputs=frozenset(outputs) if outputs else DEFAULT_OUTPUTS,
        count_format=count_format,
        image_encoding=image_encoding,
        jpeg_quality=quality or default_jpeg_quality,
        float_format=float_format,
    )
    return spec, seed


def parse_stream_settings(settings: pb.StreamSettings, default_window: int, max_window: int) -> tuple[int, str]:
    """StreamSettings -> (window, policy). InputError on a bad field."""
    window = settings.window or default_window
    if window > max_window:
        raise InputError(f"settings.window: must be 1..{max_window} (0 = server default {default_window}), "
                         f"got {window}")
    policy = _enum(WINDOW_POLICIES, settings.policy, "settings.policy")
    assert isinstance(policy, str)
    return window, policy


def frame_is_encoded(frame: pb.Frame) -> bool:
    """Whether the frame is a JPEG/PNG file (worth decoding off the event loop)."""
    return frame.WhichOneof("source") == "encoded"


def decode_frame(frame: pb.Frame, limits: FrameLimits) -> np.ndarray:
    """pvae.v1.Frame -> uint8 gray (H, W). InputError (or PayloadTooLargeError) on a bad frame."""
    source = frame.WhichOneof("source")
    if source == "encoded":
        return decode_encoded(frame.encoded, limits)
    if source == "raw":
        raw = frame.raw
        order = _enum(_CHANNEL_ORDERS, raw.channel_order, "frame.raw.channel_order")
        assert isinstance(order, ChannelOrder)
        return decode_raw(raw.height, raw.width, raw.channels, order, raw.data, limits)
    raise InputError("frame: empty (set frame.encoded or frame.raw)")


def parse_patches(patches: pb.Patches, patch_dim: int, max_patches: int, max_bytes: int) -> np.ndarray:
    """pvae.v1.Patches -> float32 (N, D). InputError on a bad count or size."""
    count = patches.count
    if not 1 <= count <= max_patches:
        raise InputError(f"patches.count: must be 1..{max_patches}, got {count}")
    if len(patches.data) > max_bytes:
        raise PayloadTooLargeError(f"patches.data: {len(patches.data)} bytes exceeds the server's per-frame "
                                   f"limit of {max_bytes} bytes")
    expected = count * patch_dim * 4
    if len(patches.data) != expected:
        raise InputError(f"patches.data: {len(patches.data)} bytes, expected count*{patch_dim}*4 = {expected} "
                         "(float32 patches)")
    values = np.frombuffer(patches.data, dtype="<f4").reshape(count, patch_dim)
    if not np.isfinite(values).all():
        raise InputError("patches.data: contains NaN or infinite values")
    return values.astype(np.float32, copy=False)


def _fill_image(target: pb.Image, image: PackedImage) -> None:
    target.encoding = _IMAGE_ENCODING_VALUES[image.encoding]
    target.height = image.height
    target.width = image.width
    target.data = image.data


def _fill_rice(target: pb.RiceCodes, codes: RiceCodesPacked) -> None:
    target.parameters = codes.parameters
    target.quotients = codes.quotients
    target.remainders = codes.remainders


def fill_result(message: pb.EncodeResult, result: PackedResult, total_seconds: float) -> pb.EncodeResult:
    """Write a PackedResult into ``message`` (a field of the response, so bytes are copied once)."""
    message.height = result.height
    message.width = result.width
    message.grid_rows = result.grid_rows
    message.grid_cols = result.grid_cols
    message.n_patches = result.n_patches
    message.n_latents = result.n_latents
    message.float_format = _FLOAT_FORMAT_VALUES[result.float_format]
    if result.seed is not None:
        message.seed = result.seed
    if result.rates is not None:
        message.rates = result.rates
    if result.log_rates is not None:
        message.log_rates = result.log_rates
    if result.rate_codes is not None:
        packed = result.rate_codes
        message.rate_codes.log_min = packed.log_min
        message.rate_codes.log_step = packed.log_step
        message.rate_codes.base = packed.base
        _fill_rice(message.rate_codes.codes, packed.codes)
        message.rate_codes.rates = packed.rates
        message.rate_codes.log_rates = packed.log_rates
    counts = result.counts
    if isinstance(counts, SparseCountsPacked):
        message.sparse_counts.patch_offsets = counts.patch_offsets
        message.sparse_counts.latents = counts.latents
        message.sparse_counts.counts = counts.counts
        message.sparse_counts.large_counts.extend(counts.large_counts)
    elif isinstance(counts, DenseCountsPacked):
        message.dense_counts.counts = counts.counts
        message.dense_counts.saturated = counts.saturated
    elif isinstance(counts, RiceCodesPacked):
        _fill_rice(message.rice_counts, counts)
    if result.reconstruction is not None:
        _fill_image(message.reconstruction, result.reconstruction)
    if result.preprocessed is not None:
        _fill_image(message.preprocessed, result.preprocessed)
    if result.reconstruction_patches is not None:
        message.reconstruction_patches = result.reconstruction_patches
    if result.stats is not None:
        stats = result.stats
        times = result.times
        message.stats.CopyFrom(pb.FrameStats(
            total_spikes=stats.total_spikes,
            active_fraction=stats.active_fraction,
            population_sparsity=stats.population_sparsity,
            mean_rate=stats.mean_rate,
            timings=pb.StageTimings(
                decode_seconds=times.decode,
                queue_seconds=times.queue,
                inference_seconds=times.inference,
                sampling_seconds=times.sampling,
                packing_seconds=times.packing,
                total_seconds=total_seconds,
                batch_size=times.batch_size,
            ),
        ))
    return message
