"""Responses on the way in: ``pvae.v1`` messages -> plain dataclasses holding numpy arrays.

``decode_result`` reads one ``EncodeResult``: rates and log-rates become float32 (rows, cols, K)
(or (N, K) for a patch batch), spike counts become dense int32 arrays of the same shape rebuilt
exactly from the sparse events (or from dense uint8, saturation reported, or from Rice codes), images
become (H, W) uint8. Compact rates (``u8log``: log-grid codes, one payload for rates and log-rates)
decode to float32 rates and log-rates like the others. ``decode_info`` reads ``InfoResponse``. Lengths
are checked against the stated shapes, so a malformed response raises ``ProtocolError`` instead of
producing a wrong array.

    >>> result = client.encode(frame)
    >>> result.rates.shape, result.counts.dtype        # ((15, 20, 512), dtype('int32'))
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

import cv2
import numpy as np

from pvae.v1 import pvae_pb2 as pb

from .errors import FrameError, ProtocolError

__all__ = [
    "FrameResult",
    "FrameStats",
    "ModelInfo",
    "ServerInfo",
    "ServerLimits",
    "StageTimings",
    "decode_counts",
    "decode_image",
    "decode_info",
    "decode_rate_codes",
    "decode_result",
    "decode_rice",
]

#: Wire dtypes (pvae.proto: little-endian, row-major).
FLOAT_DTYPES: dict[int, np.dtype[Any]] = {
    pb.FLOAT_FORMAT_UNSPECIFIED: np.dtype("<f2"),  # the server default is fp16
    pb.FLOAT_FORMAT_FP16: np.dtype("<f2"),
    pb.FLOAT_FORMAT_FP32: np.dtype("<f4"),
}
OFFSET_DTYPE = np.dtype("<u4")
LATENT_DTYPE = np.dtype("<u2")
#: A count byte of 255 means "the exact count is in large_counts" (pvae.proto SparseCounts.counts).
LARGE_COUNT_MARK = 255
#: Counts as numpy holds them (the sampler graph's output dtype).
COUNT_DTYPE = np.int32
#: Largest Rice parameter (pvae.proto RiceCodes.parameters).
MAX_RICE_PARAMETER = 31
#: Rate codes 1..255 lie on the log grid; code 0 is a rate of 0 (pvae.proto RateCodes).
RATE_CODE_TOP = 255


# ----------------------------------------------------------------------------- per-frame results


@dataclass(frozen=True)
class StageTimings:
    """Where the server spent its time on a frame, in seconds (pvae.v1.StageTimings)."""

    decode_seconds: float = 0.0
    queue_seconds: float = 0.0
    inference_seconds: float = 0.0
    sampling_seconds: float = 0.0
    packing_seconds: float = 0.0
    total_seconds: float = 0.0
    batch_size: int = 0
    """Frames in the inference call that carried this frame."""


@dataclass(frozen=True)
class FrameStats:
    """Spike statistics of a frame, computed by the server (pvae.v1.FrameStats)."""

    total_spikes: int
    """Sum of all spike counts."""
    active_fraction: float
    """Fraction of (patch, latent) entries with at least one spike, 0 .. 1."""
    population_sparsity: float
    """Mean over patches of the population sparsity, 0 (dense) .. 1 (sparse)."""
    mean_rate: float
    """Mean firing rate over all entries (spikes per patch-latent per frame)."""
    timings: StageTimings
    """Server-side stage timings."""


@dataclass(frozen=True, eq=False)
class FrameResult:
    """Everything returned for one frame (or patch batch); outputs not requested are None.

    In a stream a result may also be an in-band error (``error`` set, no arrays) or, at the very
    end of a stream cut short, a pure drop report (``is_drop_report``).

        >>> for result in client.stream(frames, window=4):
        ...     print(result.sequence, result.counts.sum(), result.latency_seconds)
    """

    sequence: int = 0
    """The frame's sequence number in its stream (0 for unary Encode)."""
    height: int = 0
    """Input frame height in pixels (0 for patch batches)."""
    width: int = 0
    """Input frame width in pixels (0 for patch batches)."""
    grid_rows: int = 0
    """Patch rows R = ceil(H / P) (0 for patch batches)."""
    grid_cols: int = 0
    """Patch columns C = ceil(W / P) (0 for patch batches)."""
    n_patches: int = 0
    """R * C for a frame, N for a patch batch."""
    n_latents: int = 0
    """Latents per patch K."""
    seed: int | None = None
    """Seed the counts were drawn with; None when neither counts nor stats were computed."""
    rates: np.ndarray | None = None
    """float32 (R, C, K) firing rates (Poisson means per frame), or (N, K) for a patch batch."""
    log_rates: np.ndarray | None = None
    """float32 natural log of the rates, same shape."""
    counts: np.ndarray | None = None
    """int32 spike counts, same shape; exact unless ``counts_saturated`` > 0 (dense uint8 format)."""
    counts_saturated: int = 0
    """Entries stored as 255 because their true count was >= 255 (dense_u8 format only)."""
    reconstruction: np.ndarray | None = None
    """uint8 (H, W) mean reconstruction, shown as clip(round(128 + 32 v), 0, 255)."""
    preprocessed: np.ndarray | None = None
    """uint8 (H, W) model-space (whitened, normalised) input, shown the same way."""
    reconstruction_patches: np.ndarray | None = None
    """float32 (N, P * P) model-space reconstruction of a patch batch."""
    stats: FrameStats | None = None
    """Spike statistics and stage timings."""
    error: FrameError | None = None
    """In a stream: why this frame failed (the stream went on)."""
    dropped_count: int = 0
    """Frames dropped by the server (drop_oldest policy) since the previous response."""
    dropped_sequences: tuple[int, ...] = ()
    """Sequence numbers of those frames, oldest first (at most the 64 newest)."""
    latency_seconds: float | None = None
    """Client-measured time from sending the frame to receiving this result."""
    response_bytes: int = 0
    """Serialized size of the response message."""
    input: np.ndarray | None = field(default=None, repr=False)
    """The frame as it was given to ``stream`` (only with ``keep_inputs=True``)."""
    message: pb.EncodeResult | None = field(default=None, repr=False)
    """The result message as it came off the wire, arrays not decoded (only with ``decode=False``)."""

    @property
    def ok(self) -> bool:
        """True for a frame's outputs; False for an in-band error or a pure drop report."""
        return self.error is None and not self.is_drop_report

    @property
    def is_drop_report(self) -> bool:
        """A response that only reports drops (sent when a stream ends right after dropping)."""
        return self.error is None and self.n_latents == 0 and self.dropped_count > 0

    @property
    def spike_map(self) -> np.ndarray | None:
        """int64 (R, C) total spikes per patch, or None without counts or grid."""
        if self.counts is None or self.counts.ndim != 3:
            return None
        return self.counts.sum(axis=2, dtype=np.int64)


# ----------------------------------------------------------------------------- decoding


def _array(data: bytes, dtype: np.dtype[Any], count: int, name: str) -> np.ndarray:
    expected = count * dtype.itemsize
    if len(data) != expected:
        raise ProtocolError(f"malformed response: {name} has {len(data)} bytes, expected {expected} "
                            f"({count} x {dtype.name})")
    return np.frombuffer(data, dtype=dtype)


def decode_image(image: pb.Image, name: str = "image") -> np.ndarray:
    """A ``pvae.v1.Image`` -> uint8 (H, W)."""
    shape = (image.height, image.width)
    if image.encoding in (pb.IMAGE_ENCODING_RAW, pb.IMAGE_ENCODING_UNSPECIFIED):
        return _array(image.data, np.dtype(np.uint8), shape[0] * shape[1], name).reshape(shape)
    decoded = cv2.imdecode(np.frombuffer(image.data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if decoded is None or decoded.shape != shape:
        got = "undecodable data" if decoded is None else f"shape {decoded.shape}"
        raise ProtocolError(f"malformed response: {name} is {got}, expected a {shape} image")
    return decoded


def decode_rice(message: pb.RiceCodes, n_rows: int, n_cols: int, name: str) -> np.ndarray:
    """int64 (n_rows, n_cols) values from ``pvae.v1.RiceCodes`` (ProtocolError if malformed)."""
    parameters = _array(message.parameters, np.dtype(np.uint8), n_cols, f"{name}.parameters").astype(np.int64)
    if (parameters > MAX_RICE_PARAMETER).any():
        raise ProtocolError(f"malformed response: {name}.parameters above {MAX_RICE_PARAMETER}")
    count = n_rows * n_cols
    unary = np.unpackbits(np.frombuffer(message.quotients, dtype=np.uint8))
    stops = np.flatnonzero(unary == 0)[:count]  # each entry's 0-bit
    used = int(stops[-1]) + 1 if count else 0
    if len(stops) < count or len(message.quotients) != -(-used // 8):
        raise ProtocolError(f"malformed response: {name}.quotients does not hold {count} unary codes "
                            f"in {len(message.quotients)} bytes")
    quotients = (np.diff(stops, prepend=-1) - 1).reshape(n_rows, n_cols)
    if (quotients >= 1 << (62 - parameters)).any():
        raise ProtocolError(f"malformed response: {name} holds a value beyond 2^62")
    values = quotients << parameters
    total = int(parameters.sum())
    _array(message.remainders, np.dtype(np.uint8), -(-n_rows * total // 8), f"{name}.remainders")
    if total:
        bits = np.unpackbits(np.frombuffer(message.remainders, dtype=np.uint8))[:n_rows * total]
        start = np.cumsum(parameters) - parameters  # (K,) first remainder bit of each column in a row
        column = np.repeat(np.arange(n_cols), parameters)
        shift = parameters[column] - 1 - (np.arange(total) - start[column])  # most significant bit first
        weighted = bits.reshape(n_rows, total).astype(np.int64) << shift
        coded = np.flatnonzero(parameters)
        values[:, coded] |= np.add.reduceat(weighted, start[coded], axis=1)
    return values


def decode_rate_codes(message: pb.RateCodes, n_patches: int, n_latents: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (n_patches, K) rates and log-rates from ``pvae.v1.RateCodes`` (ProtocolError if malformed).

    Code c >= 1 is log-rate log_min + (c - 1) log_step; code 0 is rate 0 (log-rate -inf)."""
    if not (np.isfinite(message.log_min) and np.isfinite(message.log_step) and message.log_step > 0):
        raise ProtocolError(f"malformed response: rate_codes grid log_min={message.log_min}, "
                            f"log_step={message.log_step}")
    base = _array(message.base, np.dtype(np.uint8), n_latents, "rate_codes.base").astype(np.int64)
    zigzag = decode_rice(message.codes, n_patches, n_latents, "rate_codes.codes")
    codes = base + np.where(zigzag % 2 == 0, zigzag // 2, -(zigzag + 1) // 2)  # (N, K)
    if ((codes < 0) | (codes > RATE_CODE_TOP)).any():
        raise ProtocolError("malformed response: rate_codes decode to codes outside 0..255")
    table = message.log_min + (np.arange(RATE_CODE_TOP + 1, dtype=np.float64) - 1) * message.log_step
    table[0] = -np.inf
    log_table = table.astype(np.float32)
    rate_table = np.exp(table).astype(np.float32)  # exp(-inf) = 0: code 0 is exactly zero
    return rate_table[codes], log_table[codes]


def decode_counts(message: pb.EncodeResult) -> tuple[np.ndarray | None, int]:
    """Dense int32 (n_patches, K) counts from sparse events, dense uint8 or Rice codes, and the saturated count."""
    n_patches, n_latents = message.n_patches, message.n_latents
    which = message.WhichOneof("counts")
    if which is None:
        return None, 0
    if which == "rice_counts":
        values = decode_rice(message.rice_counts, n_patches, n_latents, "rice_counts")
        if (values > np.iinfo(COUNT_DTYPE).max).any():
            raise ProtocolError("malformed response: rice_counts holds a count beyond int32")
        return values.astype(COUNT_DTYPE), 0
    if which == "dense_counts":
        dense = _array(message.dense_counts.counts, np.dtype(np.uint8), n_patches * n_latents, "dense_counts")
        return dense.astype(COUNT_DTYPE).reshape(n_patches, n_latents), int(message.dense_counts.saturated)
    sparse = message.sparse_counts
    offsets = _array(sparse.patch_offsets, OFFSET_DTYPE, n_patches + 1, "sparse_counts.patch_offsets")
    n_events = int(offsets[-1])
    latents = _array(sparse.latents, LATENT_DTYPE, n_events, "sparse_counts.latents").astype(np.intp)
    values = _array(sparse.counts, np.dtype(np.uint8), n_events, "sparse_counts.counts").astype(COUNT_DTYPE)
    large = values == LARGE_COUNT_MARK
    if int(large.sum()) != len(sparse.large_counts):
        raise ProtocolError(f"malformed response: {int(large.sum())} escaped counts but "
                            f"{len(sparse.large_counts)} large_counts")
    values[large] = np.asarray(sparse.large_counts, dtype=COUNT_DTYPE)
    bounds = offsets.astype(np.int64)
    per_patch = bounds[1:] - bounds[:-1]  # (N,) events per patch
    if offsets[0] != 0 or (per_patch < 0).any() or (latents >= n_latents).any():
        raise ProtocolError("malformed response: sparse_counts offsets or latent indices out of range")
    rows = np.repeat(np.arange(n_patches), per_patch)  # (E,) patch of each event
    dense = np.zeros((n_patches, n_latents), dtype=COUNT_DTYPE)
    dense[rows, latents] = values
    return dense, 0


def _stats(message: pb.FrameStats) -> FrameStats:
    timings = StageTimings(**{f.name: getattr(message.timings, f.name) for f in fields(StageTimings)})
    return FrameStats(int(message.total_spikes), float(message.active_fraction),
                      float(message.population_sparsity), float(message.mean_rate), timings)


def decode_result(message: pb.EncodeResult, sequence: int = 0, dropped_count: int = 0,
                  dropped_sequences: tuple[int, ...] = (), latency_seconds: float | None = None,
                  response_bytes: int = 0, input_frame: np.ndarray | None = None,
                  arrays: bool = True) -> FrameResult:
    """One ``pvae.v1.EncodeResult`` as a :class:`FrameResult` (ProtocolError if malformed).

    With ``arrays=False`` only the shape, seed and statistics are read; the outputs stay in the
    message (``FrameResult.message``), undecoded: for callers that forward, store or count bytes.
    """
    n_patches, n_latents = message.n_patches, message.n_latents
    is_frame = message.grid_rows > 0
    if is_frame and message.grid_rows * message.grid_cols != n_patches:
        raise ProtocolError(f"malformed response: grid {message.grid_rows} x {message.grid_cols} "
                            f"!= n_patches {n_patches}")
    if not arrays:
        has_counts = message.WhichOneof("counts") is not None
        return FrameResult(
            sequence=sequence, height=message.height, width=message.width, grid_rows=message.grid_rows,
            grid_cols=message.grid_cols, n_patches=n_patches, n_latents=n_latents,
            seed=int(message.seed) if has_counts or message.HasField("stats") else None,
            stats=_stats(message.stats) if message.HasField("stats") else None, dropped_count=dropped_count,
            dropped_sequences=dropped_sequences, latency_seconds=latency_seconds, response_bytes=response_bytes,
            input=input_frame, message=message)
    shape = (message.grid_rows, message.grid_cols, n_latents) if is_frame else (n_patches, n_latents)
    rates: np.ndarray | None = None
    log_rates: np.ndarray | None = None
    if message.float_format == pb.FLOAT_FORMAT_U8_LOG:
        if message.rates or message.log_rates:
            raise ProtocolError("malformed response: float_format U8_LOG with float rates or log_rates bytes")
        codes = message.rate_codes
        if message.HasField("rate_codes") and (codes.rates or codes.log_rates):
            all_rates, all_log_rates = decode_rate_codes(codes, n_patches, n_latents)
            rates = all_rates.reshape(shape) if codes.rates else None
            log_rates = all_log_rates.reshape(shape) if codes.log_rates else None
    elif message.float_format in FLOAT_DTYPES:
        float_dtype = FLOAT_DTYPES[message.float_format]

        def floats(data: bytes, name: str) -> np.ndarray | None:
            if not data:
                return None
            return _array(data, float_dtype, n_patches * n_latents, name).astype(np.float32).reshape(shape)

        rates, log_rates = floats(message.rates, "rates"), floats(message.log_rates, "log_rates")
    else:
        raise ProtocolError(f"malformed response: unknown float_format {message.float_format}")

    counts, saturated = decode_counts(message)
    patches = None
    if message.reconstruction_patches:
        patch_dim, rest = divmod(len(message.reconstruction_patches), 4 * max(n_patches, 1))
        if rest:
            raise ProtocolError("malformed response: reconstruction_patches is not n_patches float32 rows")
        patches = _array(message.reconstruction_patches, np.dtype("<f4"), n_patches * patch_dim,
                         "reconstruction_patches").reshape(n_patches, patch_dim)
    computed_seed = bool(counts is not None or message.HasField("stats"))
    return FrameResult(
        sequence=sequence,
        height=message.height,
        width=message.width,
        grid_rows=message.grid_rows,
        grid_cols=message.grid_cols,
        n_patches=n_patches,
        n_latents=n_latents,
        seed=int(message.seed) if computed_seed else None,
        rates=rates,
        log_rates=log_rates,
        counts=None if counts is None else counts.reshape(shape),
        counts_saturated=saturated,
        reconstruction=(decode_image(message.reconstruction, "reconstruction")
                        if message.HasField("reconstruction") else None),
        preprocessed=decode_image(message.preprocessed, "preprocessed") if message.HasField("preprocessed") else None,
        reconstruction_patches=patches,
        stats=_stats(message.stats) if message.HasField("stats") else None,
        dropped_count=dropped_count,
        dropped_sequences=dropped_sequences,
        latency_seconds=latency_seconds,
        response_bytes=response_bytes,
        input=input_frame,
    )


# ----------------------------------------------------------------------------- Info


@dataclass(frozen=True)
class ModelInfo:
    """The served model (pvae.v1.ModelInfo)."""

    arch: str
    """Architecture "enc|dec", e.g. "lin|lin"."""
    n_latents: int
    """Latents per patch K."""
    patch_size: int
    """Patch side P in pixels."""
    min_frame_side: int
    """Smallest frame side the server accepts, in pixels."""
    data: str
    """Training data set name."""
    source_checkpoint_sha256: str
    """sha256 of the checkpoint the bundle was exported from."""
    bundle_package_version: str
    """pvae version that exported the bundle."""
    opset: int
    """ONNX opset of the graphs."""
    manifest: dict[str, Any] = field(repr=False)
    """The bundle's whole manifest."""


@dataclass(frozen=True)
class ServerLimits:
    """Limits the server enforces (pvae.v1.ServerLimits)."""

    max_frame_height: int
    max_frame_width: int
    max_frame_pixels: int
    max_frame_bytes: int
    max_patches: int
    max_receive_message_bytes: int
    max_send_message_bytes: int
    max_batch_frames: int
    max_batch_delay_seconds: float
    max_queue_frames: int
    max_streams: int
    default_window: int
    """In-flight window of a stream that does not choose one."""
    max_window: int
    """Largest in-flight window a stream may choose."""


@dataclass(frozen=True)
class ServerInfo:
    """What ``Client.info()`` returns (pvae.v1.InfoResponse)."""

    server_version: str
    model: ModelInfo
    limits: ServerLimits
    execution_provider: str
    """ONNX Runtime execution provider, e.g. "CPUExecutionProvider"."""
    device: str
    """e.g. "cpu" or "cuda:0"."""


def decode_info(message: pb.InfoResponse) -> ServerInfo:
    """``pvae.v1.InfoResponse`` -> :class:`ServerInfo`."""
    try:
        manifest = json.loads(message.model.manifest_json) if message.model.manifest_json else {}
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"malformed response: ModelInfo.manifest_json is not JSON: {exc}") from None
    model = ModelInfo(manifest=manifest, **{f.name: getattr(message.model, f.name)
                                            for f in fields(ModelInfo) if f.name != "manifest"})
    limits = ServerLimits(**{f.name: getattr(message.limits, f.name) for f in fields(ServerLimits)})
    return ServerInfo(message.server_version, model, limits, message.execution_provider, message.device)
