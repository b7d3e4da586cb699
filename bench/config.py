"""``BenchConfig``: what a streaming benchmark runs, for ``pvae-bench`` and ``pvae-bench-serve`` alike.

One frozen dataclass, validated on construction: the server (a running one, or ``pvae-serve``
processes started for the run), the load (mode, clients per level, frames or seconds, pacing, the
in-flight window), the frames (size, how they travel), what each request asks for, and the
in-process baseline. Each command's flags are made from the fields it uses (``pvae.cli.add_config_flags``,
the docstrings below are their help); ``pvae-bench-serve`` has defaults of its own (``SERVE_DEFAULTS``:
1 and 4 streams, 5 warm-up frames, 3 rounds, JPEG reconstructions).

    >>> config = BenchConfig(model="runs/quick/best.bundle", concurrency=(1, 2, 4), duration_s=10.0)
    >>> config.frame_budget is None                 # timed levels
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from pvae.clients.options import OUTPUTS, CountFormat, EncodeOptions, FloatFormat, ImageEncoding, OutputName
from pvae.errors import ConfigError

__all__ = ["DEFAULT_FRAMES", "DEFAULT_OUTPUTS", "DEFAULT_SIZE", "MODES", "BenchConfig", "Device", "FrameInput", "Mode"]

Mode = Literal["unary", "stream"]
FrameInput = Literal["jpeg", "raw"]
Device = Literal["cpu", "cuda", "auto"]
#: Benchmark modes: one Encode call after another per client, or one StreamEncode per client.
MODES: tuple[Mode, ...] = get_args(Mode)
#: VGA (640x480), the frame size the serving targets are set for.
DEFAULT_SIZE = (480, 640)
#: Outputs asked for by default: what a camera client shows (rates, spikes, reconstruction) + stats.
DEFAULT_OUTPUTS: tuple[OutputName, ...] = ("rates", "counts", "reconstruction", "stats")
#: Frames per level (per stream for pvae-bench-serve) when neither frames nor a duration is given.
DEFAULT_FRAMES = 60
#: Sampler seed of every benchmark request (frame ``sequence`` uses seed + sequence).
SEED = 1


@dataclass(frozen=True)
class BenchConfig:
    """What to run (see the module docstring)."""

    server: str | None = None
    """``host:port`` of a running server; None: start ``pvae-serve`` for ``model`` on loopback."""
    metrics_url: str | None = None
    """The server's Prometheus endpoint (``http://host:9464/metrics``) for the per-stage split; when the
    bench starts the server it knows the URL itself."""
    model: str | None = None
    """Bundle or checkpoint: the server to start and the in-process baseline (default: bundled model)."""
    device: Device = "cpu"
    """Device of the started server and of the in-process engine."""
    gpu: int | None = None
    """CUDA GPU index (implies device cuda)."""
    mode: Mode = "stream"
    """``unary`` (Encode) or ``stream`` (StreamEncode)."""
    concurrency: tuple[int, ...] = (1,)
    """Concurrent clients per level (one channel each); one level per value (comma-separated: 1,2,4)."""
    size: tuple[int, int] = DEFAULT_SIZE
    """Frame (height, width) in pixels; ``--size`` reads WxH (640x480)."""
    input: FrameInput = "jpeg"
    """How frames travel: ``jpeg`` (q90, as a camera client sends them) or ``raw`` (uint8)."""
    outputs: tuple[OutputName, ...] = DEFAULT_OUTPUTS
    """Outputs each request asks for."""
    image_encoding: ImageEncoding = "raw"
    """Encoding of the returned reconstruction."""
    float_format: FloatFormat = "fp16"
    """Rates and log-rates: ``fp16``, ``fp32`` or ``u8log`` (8-bit log-grid codes, relative error < 4.3 %)."""
    count_format: CountFormat = "sparse"
    """Spike counts: ``sparse`` events, ``dense_u8`` or ``rice`` (exact, entropy coded)."""
    duration_s: float | None = None
    """Seconds per level (open the tap, close it after this long); exclusive with ``frames``."""
    frames: int | None = None
    """Frames per level, shared by its clients (pvae-bench-serve: per stream); default 60 unless timed."""
    fps: float | None = None
    """Offered load in frames/s over all clients of a level (paced); None: open loop."""
    window: int = 4
    """In-flight frames per stream (client side and, for a started server, its --max-window)."""
    warmup: int = 2
    """Untimed frames per client before each level."""
    rounds: int = 1
    """Rounds of (in-process, each level), interleaved so that background load drifts hit every
    configuration alike; throughput is the median over rounds, latency pooled (pvae-bench-serve)."""
    baseline: bool = True
    """Measure the in-process engine on the same frames (needs onnxruntime and the model); ``--no-baseline``
    skips it."""
    baseline_frames: int = 10
    """Frames of the in-process baseline (pvae-bench; pvae-bench-serve times ``frames``)."""
    server_processes: int = 1
    """pvae-serve processes sharing the port with SO_REUSEPORT (1 = the normal single server)."""
    server_threads: int = 0
    """ONNX Runtime intra-op threads per server process and of the in-process engine (0 = one per core)."""
    extra_server_args: tuple[str, ...] = ()
    """More pvae-serve flags for a started server (``--server-arg``, repeatable)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode: one of {', '.join(MODES)}, got {self.mode!r}")
        if not self.concurrency or min(self.concurrency) < 1:
            raise ConfigError(f"concurrency: positive integers, got {self.concurrency}")
        if min(self.size) < 1:
            raise ConfigError(f"size: positive, got {self.size}")
        if not self.outputs or any(name not in OUTPUTS for name in self.outputs):
            raise ConfigError(f"outputs: any of {', '.join(OUTPUTS)}, got {self.outputs}")
        if self.duration_s is not None and self.frames is not None:
            raise ConfigError("give --duration or --frames, not both")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError(f"duration: must be > 0 seconds, got {self.duration_s}")
        if self.frames is not None and self.frames < 1:
            raise ConfigError(f"frames: must be >= 1, got {self.frames}")
        if self.fps is not None and self.fps <= 0:
            raise ConfigError(f"fps: must be > 0, got {self.fps}")
        if self.window < 1 or self.warmup < 0 or self.baseline_frames < 1 or self.rounds < 1:
            raise ConfigError("window, rounds and baseline_frames must be >= 1, warmup >= 0")
        if self.input not in get_args(FrameInput):
            raise ConfigError(f"input: jpeg or raw, got {self.input!r}")
        if self.image_encoding not in ("raw", "png", "jpeg"):
            raise ConfigError(f"image_encoding: raw, png or jpeg, got {self.image_encoding!r}")
        if self.server_processes < 1:
            raise ConfigError("server_processes must be >= 1")

    @property
    def frame_budget(self) -> int | None:
        """Frames per level, or None when the level is timed by ``duration_s``."""
        if self.duration_s is not None:
            return None
        return self.frames if self.frames is not None else DEFAULT_FRAMES

    def encode_options(self) -> EncodeOptions:
        """What every request asks for: ``outputs`` in ``float_format`` and ``count_format``, the
        reconstruction as ``image_encoding``, seed 1."""
        return EncodeOptions(outputs=self.outputs, seed=SEED, image_encoding=self.image_encoding,
                             float_format=self.float_format, count_format=self.count_format)
