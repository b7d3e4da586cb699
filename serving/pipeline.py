"""The compute pipeline: decoded frames (or patches) in, packed results out. No gRPC here.

One frame's journey through it: a batch of equal-size frames runs through the
frame graph at once (``infer``); then each frame, on its own (``finish``), draws its spike counts
with its own seed and is packed: fp16 rates, sparse or dense counts, PNG/JPEG/raw images, stats.
Per-frame sampling keeps a frame's counts a function of its rates and seed alone, whatever batch
it rode in.

    >>> pipeline = Pipeline(engine)
    >>> results = pipeline.process([FrameJob(gray, OutputSpec(), seed=7)])   # in-process use
    >>> results[0].counts                                                    # SparseCountsPacked
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pvae.serving.engine import Engine, FrameBatch, HalfCaster
from pvae.serving.errors import InferenceError
from pvae.serving.options import CountFormat, FloatFormat, ImageEncoding, Output, OutputSpec
from pvae.serving.pack import (
    DenseCountsPacked,
    FrameStatistics,
    RateCodesPacked,
    RiceCodesPacked,
    SparseCountsPacked,
    encode_image,
    frame_statistics,
    pack_dense_counts,
    pack_rate_codes,
    pack_rice_counts,
    pack_sparse_counts,
)

__all__ = [
    "FrameJob",
    "InferredBatch",
    "PackedImage",
    "PackedResult",
    "PatchJob",
    "Pipeline",
    "PreprocessJob",
    "SampleJob",
    "StageTimes",
]


@dataclass
class StageTimes:
    """Seconds spent on one frame per stage (filled in as the frame moves along)."""

    decode: float = 0.0
    queue: float = 0.0
    inference: float = 0.0
    sampling: float = 0.0
    packing: float = 0.0
    batch_size: int = 1


@dataclass(eq=False)
class FrameJob:
    """One decoded frame and what to compute for it."""

    frame: np.ndarray
    """uint8 gray (H, W)."""
    spec: OutputSpec
    """Outputs and formats."""
    seed: int
    """Sampler seed, 0 .. 2^63 - 1 (used when counts or stats are asked for)."""
    times: StageTimes = field(default_factory=StageTimes)
    started: bool = False
    """Set when the batcher hands the job to an inference call (dropping it then wastes work)."""

    @property
    def key(self) -> tuple[int, int]:
        """Frames with equal keys can share an inference call."""
        return (int(self.frame.shape[0]), int(self.frame.shape[1]))


@dataclass(eq=False)
class PatchJob:
    """A batch of model-space patches and what to compute for it."""

    patches: np.ndarray
    """float32 (N, D)."""
    spec: OutputSpec
    seed: int
    times: StageTimes = field(default_factory=StageTimes)
    started: bool = False

    @property
    def key(self) -> object:
        """A patch batch is an inference call of its own: its key equals nothing else."""
        return self


@dataclass(eq=False)
class SampleJob:
    """Rates to draw counts from, with one seed (the Open Inference Protocol's ``pvae_counts``)."""

    rates: np.ndarray
    """float32 (N, K), finite and >= 0."""
    spec: OutputSpec
    seed: int
    times: StageTimes = field(default_factory=StageTimes)
    started: bool = False

    @property
    def key(self) -> object:
        """A sampling request is a call of its own (one seed per request)."""
        return self


@dataclass(eq=False)
class PreprocessJob:
    """One decoded frame to turn into model-space patches (the Open Inference Protocol's ``pvae_preprocess``)."""

    frame: np.ndarray
    """uint8 gray (H, W)."""
    spec: OutputSpec
    seed: int = 0
    """Unused (no sampling); present so every job has one."""
    times: StageTimes = field(default_factory=StageTimes)
    started: bool = False

    @property
    def key(self) -> tuple[str, int, int]:
        """Preprocessing jobs of one frame size share an inference call (the preprocessing graph's batch)."""
        return ("preprocess", int(self.frame.shape[0]), int(self.frame.shape[1]))


Job = FrameJob | PatchJob | SampleJob | PreprocessJob


@dataclass(frozen=True)
class PackedImage:
    """An image ready for the wire."""

    encoding: ImageEncoding
    height: int
    width: int
    data: bytes


@dataclass
class PackedResult:
    """Everything a response carries for one frame or patch batch; unrequested outputs are None."""

    n_patches: int
    n_latents: int
    float_format: FloatFormat
    height: int = 0
    width: int = 0
    grid_rows: int = 0
    grid_cols: int = 0
    seed: int | None = None
    rates: bytes | None = None
    log_rates: bytes | None = None
    counts: SparseCountsPacked | DenseCountsPacked | RiceCodesPacked | None = None
    rate_codes: RateCodesPacked | None = None
    """Rates and log-rates as one payload (FloatFormat.U8_LOG; ``rates`` and ``log_rates`` stay None)."""
    reconstruction: PackedImage | None = None
    preprocessed: PackedImage | None = None
    reconstruction_patches: bytes | None = None
    stats: FrameStatistics | None = None
    counts_i32: bytes | None = None
    """Dense int32 (n_patches, K) counts, little-endian (CountFormat.DENSE_I32)."""
    patches: bytes | None = None
    """Model-space patches float32 (n_patches, D), little-endian (a preprocessing job)."""
    total_spikes: int | None = None
    """Sum of the counts, when counts were drawn."""
    times: StageTimes = field(default_factory=StageTimes)


@dataclass
class InferredBatch:
    """What ``infer`` hands to ``finish``: the graph outputs of one inference call."""

    jobs: Sequence[Job]
    frames: FrameBatch | None = None
    """Frame-graph outputs (frame jobs)."""
    patch_outputs: dict[str, np.ndarray] = field(default_factory=dict)
    """Rates-graph outputs (a patch job)."""
    patches: np.ndarray | None = None
    """Preprocessing-graph output (B, R*C, D) (preprocessing jobs)."""


def _frame_outputs(spec: OutputSpec) -> set[str]:
    names = set()
    if spec.needs_rates:
        names.add("rates")
    if spec.needs_log_rates:
        names.add("log_rates")
    if spec.wants(Output.RECONSTRUCTION):
        names.add("reconstruction_u8")
    if spec.wants(Output.PREPROCESSED):
        names.add("preprocessed_u8")
    return names


class Pipeline:
    """Stateless glue between the engine and the packers; safe to call from several threads.

        >>> pipeline = Pipeline(engine)
        >>> batch = pipeline.infer(jobs)                  # one inference call (equal-size frames)
        >>> result = pipeline.finish(batch, 0)            # sample + pack one of them
    """

    def __init__(self, engine: Engine, half_caster: HalfCaster | None = None) -> None:
        self.engine = engine
        self.n_latents = engine.n_latents
        self.patch_size = engine.patch_size
        self._half = half_caster if half_caster is not None else HalfCaster()

    # ------------------------------------------------------------------ stage 1: one inference call

    def infer(self, jobs: Sequence[Job]) -> InferredBatch:
        """Run the graph for ``jobs``: equal-size frames as one batch, or one patch job."""
        if not jobs:
            raise ValueError("infer needs at least one job")
        start = time.perf_counter()
        first = jobs[0]
        if isinstance(first, SampleJob):  # nothing to infer: the sampler runs per job in `finish`
            if len(jobs) != 1:
                raise ValueError("a sample job is a call of its own")
            result = InferredBatch(jobs)
        elif isinstance(first, PreprocessJob):
            pre_jobs = [job for job in jobs if isinstance(job, PreprocessJob)]
            if len(pre_jobs) != len(jobs) or len({job.key for job in pre_jobs}) != 1:
                raise ValueError("a preprocessing batch must hold frames of one size only")
            frames = np.stack([job.frame for job in pre_jobs])  # (B, H, W) uint8
            result = InferredBatch(jobs, patches=self.engine.run_preprocess(frames))
        elif isinstance(first, PatchJob):
            if len(jobs) != 1:
                raise ValueError("a patch job is an inference call of its own")
            wanted = ("log_rates", "rates") if first.spec.needs_log_rates else ("rates",)
            result = InferredBatch(jobs, patch_outputs=self.engine.run_patches(first.patches, wanted))
        else:
            frame_jobs = [job for job in jobs if isinstance(job, FrameJob)]
            if len(frame_jobs) != len(jobs) or len({job.key for job in frame_jobs}) != 1:
                raise ValueError("a batch must hold frames of one size only")
            names: set[str] = set()
            for frame_job in frame_jobs:
                names |= _frame_outputs(frame_job.spec)
            frames = np.stack([frame_job.frame for frame_job in frame_jobs])  # (B, H, W) uint8
            result = InferredBatch(jobs, frames=self.engine.run_frames(frames, sorted(names)))
        elapsed = time.perf_counter() - start
        for job in jobs:
            job.times.inference = elapsed
            job.times.batch_size = len(jobs)
        return result

    # ------------------------------------------------------------------ stage 2: per job

    def finish(self, inferred: InferredBatch, index: int) -> PackedResult:
        """Sample and pack job ``index`` of an inferred batch."""
        job = inferred.jobs[index]
        if isinstance(job, SampleJob):
            return self._finish_sample(job)
        if isinstance(job, PatchJob):
            return self._finish_patches(job, inferred.patch_outputs)
        if isinstance(job, PreprocessJob):
            assert inferred.patches is not None  # preprocessing jobs always carry patches
            return self._finish_preprocess(job, inferred.patches[index])
        assert inferred.frames is not None  # frame jobs always carry frame outputs
        return self._finish_frame(job, inferred.frames, index)

    def process(self, jobs: Sequence[Job]) -> list[PackedResult]:
        """``infer`` then ``finish`` every job: the whole pipeline in the calling thread."""
        inferred = self.infer(jobs)
        return [self.finish(inferred, i) for i in range(len(jobs))]

    def _floats(self, values: np.ndarray, fmt: FloatFormat) -> bytes:
        if fmt is FloatFormat.FP16:
            return self._half(values).tobytes()
        return np.ascontiguousarray(values, dtype="<f4").tobytes()

    def _finish_frame(self, job: FrameJob, batch: FrameBatch, index: int) -> PackedResult:
        spec = job.spec
        height, width = job.key
        rows, cols = -(-height // self.patch_size), -(-width // self.patch_size)
        result = PackedResult(n_patches=rows * cols, n_latents=self.n_latents, float_format=spec.float_format,
                              height=height, width=width, grid_rows=rows, grid_cols=cols, times=job.times)
        counts = None
        if spec.needs_counts:
            start = time.perf_counter()
            counts = self.engine.sample(batch, index, job.seed)  # (R*C, K) int32
            job.times.sampling = time.perf_counter() - start
            result.seed = job.seed
        start = time.perf_counter()
        rates = batch.output("rates", index) if spec.needs_rates else None
        if rates is not None and rates.shape != (rows * cols, self.n_latents):
            raise InferenceError(f"frame graph returned rates of shape {rates.shape} for a {height}x{width} frame; "
                             f"expected {(rows * cols, self.n_latents)}")
        self._pack_common(result, spec, rates, batch.output("log_rates", index) if spec.needs_log_rates
                          else None, counts)
        if spec.wants(Output.RECONSTRUCTION):
            result.reconstruction = self._image(batch.output("reconstruction_u8", index), spec)
        if spec.wants(Output.PREPROCESSED):
            result.preprocessed = self._image(batch.output("preprocessed_u8", index), spec)
        job.times.packing = time.perf_counter() - start
        return result

    def _finish_patches(self, job: PatchJob, outputs: dict[str, np.ndarray]) -> PackedResult:
        spec = job.spec
        rates = outputs["rates"]  # (N, K)
        result = PackedResult(n_patches=int(rates.shape[0]), n_latents=self.n_latents,
                              float_format=spec.float_format, times=job.times)
        counts = None
        if spec.needs_counts:
            start = time.perf_counter()
            counts = self.engine.sample_rates(rates, job.seed)
            job.times.sampling = time.perf_counter() - start
            result.seed = job.seed
        start = time.perf_counter()
        self._pack_common(result, spec, rates, outputs["log_rates"] if spec.needs_log_rates else None,
                          counts)
        if spec.wants(Output.RECONSTRUCTION):
            # Decoding is model math, so it runs in the decoder graph (timed as inference).
            decode_start = time.perf_counter()
            patches = self.engine.decode(rates)
            job.times.inference += time.perf_counter() - decode_start
            result.reconstruction_patches = np.ascontiguousarray(patches, dtype="<f4").tobytes()
        job.times.packing = time.perf_counter() - start
        return result

    def _finish_preprocess(self, job: PreprocessJob, patches: np.ndarray) -> PackedResult:
        start = time.perf_counter()
        height, width = int(job.frame.shape[0]), int(job.frame.shape[1])
        rows, cols = -(-height // self.engine.patch_shape[0]), -(-width // self.engine.patch_shape[1])
        if patches.shape[0] != rows * cols:
            raise InferenceError(f"preprocessing graph returned {patches.shape[0]} patches for a {height}x{width} "
                                 f"frame; expected {rows * cols}")
        result = PackedResult(n_patches=rows * cols, n_latents=self.n_latents, float_format=job.spec.float_format,
                              height=height, width=width, grid_rows=rows, grid_cols=cols, times=job.times,
                              patches=np.ascontiguousarray(patches, dtype="<f4").tobytes())
        job.times.packing = time.perf_counter() - start
        return result

    def _finish_sample(self, job: SampleJob) -> PackedResult:
        rates = job.rates
        result = PackedResult(n_patches=int(rates.shape[0]), n_latents=int(rates.shape[1]),
                              float_format=job.spec.float_format, times=job.times, seed=job.seed)
        start = time.perf_counter()
        counts = self.engine.sample_rates(rates, job.seed)
        job.times.sampling = time.perf_counter() - start
        start = time.perf_counter()
        self._pack_common(result, job.spec, rates, None, counts)
        job.times.packing = time.perf_counter() - start
        return result

    def _pack_common(self, result: PackedResult, spec: OutputSpec, rates: np.ndarray | None,
                     log_rates: np.ndarray | None, counts: np.ndarray | None) -> None:
        if spec.float_format is FloatFormat.U8_LOG:  # one payload of codes serves rates and log-rates
            wants = spec.wants(Output.RATES), spec.wants(Output.LOG_RATES)
            if rates is not None and any(wants):
                result.rate_codes = pack_rate_codes(rates, *wants)
        else:
            if spec.wants(Output.RATES) and rates is not None:
                result.rates = self._floats(rates, spec.float_format)
            if log_rates is not None:
                result.log_rates = self._floats(log_rates, spec.float_format)
        if counts is not None and spec.count_format is CountFormat.DENSE_I32:
            result.total_spikes = int(counts.sum(dtype=np.int64))
            if spec.wants(Output.COUNTS):
                result.counts_i32 = np.ascontiguousarray(counts, dtype="<i4").tobytes()
        elif counts is not None and rates is not None:
            if spec.wants(Output.COUNTS) and spec.count_format is CountFormat.RICE:
                result.counts = pack_rice_counts(counts)
            elif spec.wants(Output.COUNTS) and spec.count_format is CountFormat.SPARSE:
                result.counts = pack_sparse_counts(counts)
            elif spec.wants(Output.COUNTS):
                result.counts = pack_dense_counts(counts)
            if spec.wants(Output.STATS):
                result.stats = frame_statistics(counts, rates)
                result.total_spikes = result.stats.total_spikes
            else:
                result.total_spikes = int(counts.sum(dtype=np.int64))

    @staticmethod
    def _image(image: np.ndarray, spec: OutputSpec) -> PackedImage:
        height, width = int(image.shape[0]), int(image.shape[1])
        return PackedImage(spec.image_encoding, height, width,
                           encode_image(image, spec.image_encoding, spec.jpeg_quality))
