"""The server's configuration: one frozen dataclass, validated on construction, mirrored by the CLI.

Every field's docstring is its flag's help text: ``pvae-serve`` builds its flags from the fields
(``--max-batch-frames`` for ``max_batch_frames``, see ``pvae.cli.add_config_flags``), so the two never
drift apart.

    >>> config = ServeConfig(port=0, max_batch_frames=4)        # ConfigError on a bad field
    >>> config.bind_address
    '127.0.0.1:0'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pvae.errors import ConfigError

__all__ = [
    "DEVICES",
    "MIB",
    "SAMPLERS",
    "ServeConfig",
]

#: One mebibyte, the unit of the message-size defaults.
MIB = 1 << 20
#: Values of ``ServeConfig.device``.
DEVICES = ("auto", "cpu", "cuda")
#: A 4K UHD frame (3840 x 2160): the default ceiling on pixels per frame.
UHD_PIXELS = 3840 * 2160
#: Largest frame side by default, in pixels (a portrait or landscape 4K frame fits).
DEFAULT_MAX_SIDE = 4096
#: JPEG quality used when a request leaves it at 0 (OpenCV's own default is 95; 90 is the usual
#: size/quality compromise of libjpeg users).
DEFAULT_JPEG_QUALITY = 90

Device = Literal["auto", "cpu", "cuda"]
#: Values of ``ServeConfig.sampler``.
SAMPLERS = ("auto", "native", "graph")
Sampler = Literal["auto", "native", "graph"]


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``pvae-serve`` can be told; plain data with no side effects."""

    model: str | None = None
    """an export bundle directory, or a checkpoint (.pt) exported on the fly into the cache (needs pvae[train]);
    default: the bundled default model"""
    device: Device = "auto"
    """cpu, cuda, or auto (CUDA when onnxruntime-gpu sees a GPU, else CPU)"""
    gpu: int | None = None
    """run on CUDA GPU N (CUDA execution provider with I/O binding); implies --device cuda"""
    host: str = "127.0.0.1"
    """address to bind (0.0.0.0 for all interfaces)"""
    port: int = 50051
    """gRPC port; 0 picks a free one"""
    reuse_port: bool = False
    """share the gRPC port with other processes (SO_REUSEPORT; clients are then split between them at random); off:
    a port another process holds is an error"""
    metrics_port: int | None = 9464
    """Prometheus /metrics HTTP port; 0 picks a free one; unset in code disables it"""
    intra_op_threads: int = 0
    """ONNX Runtime intra-op threads per session; 0 = one per core"""
    inference_workers: int = 1
    """inference calls that may run at once; on a CPU host, N workers with --intra-op-threads 1 serve N requests
    side by side instead of splitting each across the cores"""
    sampler: Sampler = "auto"
    """how counts are drawn on a CPU host: native (the compiled kernel, pvae.native), graph (the bundle's
    sampler.onnx) or auto (native when it is built and draws the bundle graph's counts, else graph). Both give the
    same counts for the same seed; native costs about a third. On CUDA the graph samples on the device"""
    sampler_threads: int = 1
    """threads of one sampling call (-1: as --intra-op-threads). One, with --post-threads 2, samples two frames
    side by side"""
    post_threads: int = 2
    """threads that sample and pack finished frames, overlapping the next inference call"""
    decode_threads: int = 2
    """threads that decode JPEG/PNG frames"""
    max_batch_frames: int = 8
    """most frames (of one size, from any streams) in one inference call"""
    max_batch_delay_s: float = 0.002
    """longest a frame waits for companions of its size before its batch runs, in seconds"""
    max_queue_frames: int = 64
    """most frames waiting for inference across all streams; beyond: RESOURCE_EXHAUSTED"""
    max_streams: int = 64
    """most concurrent streams"""
    default_window: int = 4
    """in-flight window (frames) of a stream that does not choose one"""
    max_window: int = 32
    """largest in-flight window a stream may choose"""
    max_frame_height: int = DEFAULT_MAX_SIDE
    """largest frame height, pixels"""
    max_frame_width: int = DEFAULT_MAX_SIDE
    """largest frame width, pixels"""
    max_frame_pixels: int = UHD_PIXELS
    """largest frame area, pixels"""
    max_frame_bytes: int = 16 * MIB
    """largest frame payload (encoded file or raw pixels), bytes"""
    max_patches: int = 65536
    """most patches in one Encode patch batch"""
    max_receive_message_bytes: int = 32 * MIB
    """gRPC limit on a request message, bytes"""
    max_send_message_bytes: int = 64 * MIB
    """gRPC limit on a response message, bytes"""
    default_jpeg_quality: int = DEFAULT_JPEG_QUALITY
    """JPEG quality when a request asks for JPEG without one, 1..100"""
    warmup_sizes: tuple[tuple[int, int], ...] = ((480, 640),)
    """frame sizes HxW (comma-separated, e.g. 480x640,720x1280) run once before SERVING, so the first real frame of
    that size does not pay ONNX Runtime's first-run allocations"""
    drain_grace_s: float = 10.0
    """on SIGTERM, how long in-flight frames may take to finish before streams are cut, seconds"""
    tls_cert: str | None = None
    """server certificate chain (PEM); with --tls-key the server speaks TLS only"""
    tls_key: str | None = None
    """private key of --tls-cert (PEM)"""
    tls_ca: str | None = None
    """CA certificate(s) (PEM) that client certificates must chain to: mutual TLS, clients without a valid
    certificate are refused; needs --tls-cert"""
    auth_token_file: str | None = None
    """file of bearer tokens, one a line ('#' comments); calls must send 'authorization: Bearer <token>' (health
    checks excepted); tokens in $PVAE_AUTH_TOKENS are accepted too"""
    log_burst: int = 5
    """log messages of one kind (same logger and message template; for native libraries such as libjpeg, the same
    line up to its digits) written per --log-interval-s; further ones are counted and summarised in one line, so no
    client can flood the log; 0 turns the limit off"""
    log_interval_s: float = 60.0
    """the interval of --log-burst, seconds"""
    cache_dir: str | None = None
    """where checkpoints given to --model are exported (default: $PVAE_CACHE_DIR or ~/.cache/pvae)"""

    def __post_init__(self) -> None:
        _check(self.device in DEVICES, "device", f"must be one of {', '.join(DEVICES)}, got {self.device!r}")
        _check(self.gpu is None or self.gpu >= 0, "gpu", f"must be >= 0, got {self.gpu}")
        _check(self.gpu is None or self.device != "cpu", "gpu", "cannot be combined with device 'cpu'")
        _check(0 <= self.port <= 65535, "port", f"must be in [0, 65535], got {self.port}")
        _check(self.metrics_port is None or 0 <= self.metrics_port <= 65535, "metrics_port",
               f"must be in [0, 65535], got {self.metrics_port}")
        _check(bool(self.host), "host", "must not be empty")
        _check(self.intra_op_threads >= 0, "intra_op_threads", f"must be >= 0, got {self.intra_op_threads}")
        _check(self.sampler in SAMPLERS, "sampler", f"must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        _check(self.sampler_threads >= -1, "sampler_threads", f"must be >= -1, got {self.sampler_threads}")
        _check(self.post_threads >= 1, "post_threads", f"must be >= 1, got {self.post_threads}")
        _check(1 <= self.inference_workers <= 64, "inference_workers",
               f"must be 1..64, got {self.inference_workers}")
        _check(self.decode_threads >= 1, "decode_threads", f"must be >= 1, got {self.decode_threads}")
        _check(1 <= self.max_batch_frames <= 1024, "max_batch_frames",
               f"must be in [1, 1024], got {self.max_batch_frames}")
        _check(0.0 <= self.max_batch_delay_s <= 1.0, "max_batch_delay_s",
               f"must be in [0, 1] seconds, got {self.max_batch_delay_s}")
        _check(self.max_queue_frames >= 1, "max_queue_frames", f"must be >= 1, got {self.max_queue_frames}")
        _check(self.max_streams >= 1, "max_streams", f"must be >= 1, got {self.max_streams}")
        _check(self.max_window >= 1, "max_window", f"must be >= 1, got {self.max_window}")
        _check(1 <= self.default_window <= self.max_window, "default_window",
               f"must be in [1, max_window={self.max_window}], got {self.default_window}")
        for name in ("max_frame_height", "max_frame_width", "max_frame_pixels", "max_frame_bytes", "max_patches"):
            _check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        # gRPC takes these as C ints.
        for name in ("max_receive_message_bytes", "max_send_message_bytes"):
            value = getattr(self, name)
            _check(1024 <= value < 2**31, name, f"must be in [1024, 2^31) bytes, got {value}")
        _check(self.max_frame_bytes <= self.max_receive_message_bytes, "max_frame_bytes",
               f"must not exceed max_receive_message_bytes ({self.max_receive_message_bytes}), "
               f"got {self.max_frame_bytes}")
        _check(1 <= self.default_jpeg_quality <= 100, "default_jpeg_quality",
               f"must be in [1, 100], got {self.default_jpeg_quality}")
        for size in self.warmup_sizes:
            _check(len(size) == 2 and all(isinstance(v, int) and v >= 1 for v in size), "warmup_sizes",
                   f"each size must be (height, width) >= 1, got {size}")
            _check(size[0] <= self.max_frame_height and size[1] <= self.max_frame_width, "warmup_sizes",
                   f"{size[0]}x{size[1]} exceeds max_frame_height x max_frame_width")
        _check((self.tls_cert is None) == (self.tls_key is None), "tls_cert",
               "give both --tls-cert and --tls-key, or neither")
        _check(self.tls_ca is None or self.tls_cert is not None, "tls_ca",
               "mutual TLS needs the server's own --tls-cert and --tls-key")
        _check(self.log_burst >= 0, "log_burst", f"must be >= 0 (0: no limit), got {self.log_burst}")
        _check(0.0 < self.log_interval_s <= 86400.0, "log_interval_s",
               f"must be in (0, 86400] seconds, got {self.log_interval_s}")
        _check(self.drain_grace_s >= 0.0, "drain_grace_s", f"must be >= 0 seconds, got {self.drain_grace_s}")

    @property
    def bind_address(self) -> str:
        """``host:port`` as gRPC wants it (IPv6 literals bracketed)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @property
    def resolved_device(self) -> Device:
        """``device`` with ``gpu`` folded in: a GPU index means CUDA."""
        return "cuda" if self.gpu is not None else self.device
