"""What a request asks for: the outputs, their formats and the sampling seed, as plain data.

These mirror the pvae.v1 enums one to one (the servicer converts); the compute modules only see
these, never protobuf messages.

    >>> spec = OutputSpec(frozenset({Output.RATES, Output.COUNTS}))
    >>> spec.needs_counts, spec.count_format
    (True, <CountFormat.SPARSE: 'sparse'>)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "DEFAULT_OUTPUTS",
    "MAX_SEED",
    "CountFormat",
    "FloatFormat",
    "ImageEncoding",
    "Output",
    "OutputSpec",
    "stream_frame_seed",
]

#: Seeds are int64 scalars in the sampler graph (manifest graphs.sampler.inputs): 0 .. 2^63 - 1.
MAX_SEED = 2**63 - 1


class Output(Enum):
    """One output of a frame (pvae.v1.Output)."""

    RATES = "rates"
    LOG_RATES = "log_rates"
    COUNTS = "counts"
    RECONSTRUCTION = "reconstruction"
    PREPROCESSED = "preprocessed"
    STATS = "stats"


class CountFormat(Enum):
    """How spike counts are packed (pvae.v1.CountFormat)."""

    SPARSE = "sparse"
    DENSE_U8 = "dense_u8"
    RICE = "rice"
    """Exact counts, Golomb-Rice coded with one parameter per latent (pvae.v1 COUNT_FORMAT_RICE)."""
    DENSE_I32 = "dense_i32"
    """Exact int32 (n_patches, K), little-endian: the Open Inference Protocol's ``counts`` (not in pvae.v1)."""


class ImageEncoding(Enum):
    """How images are packed (pvae.v1.ImageEncoding)."""

    RAW = "raw"
    PNG = "png"
    JPEG = "jpeg"


class FloatFormat(Enum):
    """How rates and log-rates are packed (pvae.v1.FloatFormat)."""

    FP16 = "fp16"
    FP32 = "fp32"
    U8_LOG = "u8log"
    """8-bit codes on a fixed log-rate grid, Rice coded; one payload for rates and log-rates (pvae.v1
    FLOAT_FORMAT_U8_LOG; relative error of the rates < 4.3 %)."""


#: What a request without explicit outputs gets (pvae.proto, EncodeOptions.outputs).
DEFAULT_OUTPUTS = frozenset({Output.RATES, Output.COUNTS, Output.STATS})


@dataclass(frozen=True)
class OutputSpec:
    """The outputs of one frame and how to pack them."""

    outputs: frozenset[Output] = DEFAULT_OUTPUTS
    """Which outputs to compute and return."""
    count_format: CountFormat = CountFormat.SPARSE
    """Sparse events or dense uint8 counts."""
    image_encoding: ImageEncoding = ImageEncoding.RAW
    """Encoding of the reconstruction and preprocessed images."""
    jpeg_quality: int = 90
    """JPEG quality, 1..100 (used with ImageEncoding.JPEG)."""
    float_format: FloatFormat = FloatFormat.FP16
    """Precision of rates and log-rates."""

    def wants(self, output: Output) -> bool:
        """Whether ``output`` was asked for."""
        return output in self.outputs

    @property
    def needs_counts(self) -> bool:
        """Counts are drawn for the counts output and for the stats (spikes, sparsity)."""
        return Output.COUNTS in self.outputs or Output.STATS in self.outputs

    @property
    def needs_log_rates(self) -> bool:
        """Log-rates are fetched from the graph for the log-rates output, unless they travel as rate
        codes (FloatFormat.U8_LOG codes the rates)."""
        return Output.LOG_RATES in self.outputs and self.float_format is not FloatFormat.U8_LOG

    @property
    def needs_rates(self) -> bool:
        """Rates are fetched from the graph for the rates output, to draw counts, and for log-rates as
        codes (FloatFormat.U8_LOG codes the rates)."""
        return (Output.RATES in self.outputs or self.needs_counts
                or (self.float_format is FloatFormat.U8_LOG and Output.LOG_RATES in self.outputs))


def stream_frame_seed(seed: int, sequence: int) -> int:
    """The seed of frame ``sequence`` in a stream whose options carry ``seed``: (seed + sequence) mod 2^63."""
    return (seed + sequence) % (MAX_SEED + 1)
