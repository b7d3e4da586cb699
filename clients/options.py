"""What a request asks the server for, as plain frozen data mirrored one to one on pvae.proto.

``EncodeOptions`` becomes ``pvae.v1.EncodeOptions`` (outputs, seed, formats); ``StreamSettings``
becomes ``pvae.v1.StreamSettings`` (in-flight window and drop policy). Both validate on
construction and raise ``ConfigError`` naming the field.

    >>> options = EncodeOptions(outputs=("rates", "counts", "reconstruction"), seed=7, float_format="fp32")
    >>> options.to_proto().seed
    7
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from pvae.errors import ConfigError
from pvae.v1 import pvae_pb2 as pb

__all__ = [
    "MAX_JPEG_QUALITY",
    "MAX_SEED",
    "OUTPUTS",
    "POLICIES",
    "CountFormat",
    "EncodeOptions",
    "FloatFormat",
    "ImageEncoding",
    "OutputName",
    "Policy",
    "StreamSettings",
]

#: Seeds are int64 in the sampler graph (pvae.proto EncodeOptions.seed): 0 .. 2^63 - 1.
MAX_SEED = 2**63 - 1
#: JPEG quality range of EncodeOptions.jpeg_quality (0 = the server's default).
MAX_JPEG_QUALITY = 100

OutputName = Literal["rates", "log_rates", "counts", "reconstruction", "preprocessed", "stats"]
CountFormat = Literal["sparse", "dense_u8", "rice"]
ImageEncoding = Literal["raw", "png", "jpeg"]
FloatFormat = Literal["fp16", "fp32", "u8log"]
Policy = Literal["block", "drop_oldest"]

#: Output names, in pvae.proto order.
OUTPUTS: tuple[OutputName, ...] = get_args(OutputName)
#: Window policies: ``block`` (lose nothing; for files) and ``drop_oldest`` (stay fresh; for cameras).
POLICIES: tuple[Policy, ...] = get_args(Policy)

_OUTPUT_ENUM = {
    "rates": pb.OUTPUT_RATES,
    "log_rates": pb.OUTPUT_LOG_RATES,
    "counts": pb.OUTPUT_COUNTS,
    "reconstruction": pb.OUTPUT_RECONSTRUCTION,
    "preprocessed": pb.OUTPUT_PREPROCESSED,
    "stats": pb.OUTPUT_STATS,
}
_COUNT_FORMAT_ENUM = {"sparse": pb.COUNT_FORMAT_SPARSE, "dense_u8": pb.COUNT_FORMAT_DENSE_U8,
                      "rice": pb.COUNT_FORMAT_RICE}
_IMAGE_ENCODING_ENUM = {"raw": pb.IMAGE_ENCODING_RAW, "png": pb.IMAGE_ENCODING_PNG, "jpeg": pb.IMAGE_ENCODING_JPEG}
_FLOAT_FORMAT_ENUM = {"fp16": pb.FLOAT_FORMAT_FP16, "fp32": pb.FLOAT_FORMAT_FP32, "u8log": pb.FLOAT_FORMAT_U8_LOG}
_POLICY_ENUM = {"block": pb.WINDOW_POLICY_BLOCK, "drop_oldest": pb.WINDOW_POLICY_DROP_OLDEST}


def _one_of(value: object, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: must be one of {', '.join(allowed)}, got {value!r}")


@dataclass(frozen=True)
class EncodeOptions:
    """Outputs and formats of a request (pvae.v1.EncodeOptions); the defaults are the server's."""

    outputs: tuple[OutputName, ...] | None = None
    """Outputs to return, each at most once; None: the server default (rates, counts, stats)."""
    seed: int | None = None
    """Sampler seed 0 .. 2^63 - 1; in a stream, frame ``sequence`` uses (seed + sequence) mod 2^63.
    None: the server draws a fresh seed per frame (returned in ``FrameResult.seed``)."""
    count_format: CountFormat = "sparse"
    """``sparse`` (exact events), ``dense_u8`` (min(count, 255), saturation counted) or ``rice`` (exact,
    Rice coded per latent: the smallest for models that spike a lot)."""
    image_encoding: ImageEncoding = "raw"
    """How the reconstruction and preprocessed images travel: ``raw``, ``png`` (lossless) or ``jpeg``."""
    jpeg_quality: int = 0
    """JPEG quality 1 .. 100 for ``image_encoding="jpeg"``; 0 = the server default."""
    float_format: FloatFormat = "fp16"
    """Rates and log-rates as ``fp16`` (half the bytes), ``fp32`` (bit-exact model outputs) or ``u8log``
    (8-bit log-grid codes, entropy coded, one payload for both; relative error of the rates < 4.3 %).
    Results always hold float32 arrays."""

    def __post_init__(self) -> None:
        if self.outputs is not None:
            if not self.outputs:
                raise ConfigError("outputs: must name at least one output (or be None for the server default)")
            for name in self.outputs:
                _one_of(name, OUTPUTS, "outputs")
            if len(set(self.outputs)) != len(self.outputs):
                raise ConfigError(f"outputs: each output at most once, got {list(self.outputs)}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed: must be in [0, 2^63 - 1], got {self.seed}")
        _one_of(self.count_format, get_args(CountFormat), "count_format")
        _one_of(self.image_encoding, get_args(ImageEncoding), "image_encoding")
        _one_of(self.float_format, get_args(FloatFormat), "float_format")
        if not 0 <= self.jpeg_quality <= MAX_JPEG_QUALITY:
            raise ConfigError(f"jpeg_quality: must be in [0, {MAX_JPEG_QUALITY}], got {self.jpeg_quality}")

    def to_proto(self) -> pb.EncodeOptions:
        """The pvae.v1.EncodeOptions message."""
        message = pb.EncodeOptions(
            outputs=[_OUTPUT_ENUM[name] for name in self.outputs or ()],
            count_format=_COUNT_FORMAT_ENUM[self.count_format],
            image_encoding=_IMAGE_ENCODING_ENUM[self.image_encoding],
            jpeg_quality=self.jpeg_quality,
            float_format=_FLOAT_FORMAT_ENUM[self.float_format],
        )
        if self.seed is not None:
            message.seed = self.seed
        return message


@dataclass(frozen=True)
class StreamSettings:
    """Per-stream settings (pvae.v1.StreamSettings), sent with a stream's first frame."""

    window: int | None = None
    """Frames in flight (sent, not yet answered), 1 .. ServerLimits.max_window; None: the server default."""
    policy: Policy = "block"
    """When the window is full: ``block`` (wait; nothing is lost) or ``drop_oldest`` (drop the oldest
    unanswered frame; drops are reported)."""

    def __post_init__(self) -> None:
        if self.window is not None and self.window < 1:
            raise ConfigError(f"window: must be >= 1 (or None for the server default), got {self.window}")
        _one_of(self.policy, POLICIES, "policy")

    def to_proto(self) -> pb.StreamSettings:
        """The pvae.v1.StreamSettings message."""
        return pb.StreamSettings(window=self.window or 0, policy=_POLICY_ENUM[self.policy])
