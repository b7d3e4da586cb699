"""Every Prometheus metric of the server, on an injected registry (one place for observability).

Names are ``pvae_*`` in base units (seconds, bytes, frames). Stage histograms use buckets from
25 µs to 1 s, which resolve sub-millisecond stages (decode of a small frame, packing) as well as
a VGA frame's inference on a slow CPU.

    >>> registry = CollectorRegistry()
    >>> metrics = Metrics(registry)
    >>> metrics.frames.labels(**rpc_labels("StreamEncode")).inc()
    >>> registry.get_sample_value("pvae_frames_total", {"protocol": "pvae.v1", "rpc": "StreamEncode"})
    1.0

Metric                                   type       labels        meaning
pvae_stage_duration_seconds              histogram  stage         decode, queue, inference, sampling,
                                                                  packing, end_to_end (per frame;
                                                                  inference per batch)
pvae_frames_total                        counter    protocol, rpc frames (or patch batches) encoded;
                                                                  OIP: inference requests
pvae_patches_total                       counter    protocol, rpc patches encoded
pvae_spikes_total                        counter                  spikes drawn (sum of counts)
pvae_received_bytes_total                counter    protocol, rpc request message bytes
pvae_sent_bytes_total                    counter    protocol, rpc response message bytes
pvae_errors_total                        counter    protocol, rpc, errors by gRPC status code name
                                                    code          (in-band frame errors included)
pvae_dropped_frames_total                counter                  frames dropped by drop_oldest windows
pvae_batch_size_frames                   histogram                frames per inference call
pvae_queue_depth_frames                  gauge                    frames waiting for inference
pvae_inflight_frames                     gauge                    frames received and not yet answered
pvae_active_streams                      gauge                    open StreamEncode and ModelStreamInfer calls
pvae_ready                               gauge                    1 when health is SERVING, else 0
pvae_model_info                          info       arch, ...     the loaded model, device and sampler (native|graph)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

__all__ = ["BATCH_BUCKETS", "PROTOCOLS", "STAGES", "STAGE_BUCKETS", "Metrics", "rpc_labels"]

#: Stage latency buckets, seconds: 25 µs .. 1 s in 1-2.5-5 steps (sub-millisecond stages to whole frames).
STAGE_BUCKETS = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1, 0.25,
                 0.5, 1.0)
#: Batch-size buckets, frames: powers of two up to the largest sensible max_batch_frames.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: Values of the ``stage`` label.
STAGES = ("decode", "queue", "inference", "sampling", "packing", "end_to_end")
#: Value of the ``protocol`` label for each RPC that carries frames: our contract or the Open Inference Protocol.
PROTOCOLS = {"Encode": "pvae.v1", "StreamEncode": "pvae.v1", "ModelInfer": "oip", "ModelStreamInfer": "oip"}


def rpc_labels(rpc: str) -> dict[str, str]:
    """The ``protocol`` and ``rpc`` labels of a per-RPC counter."""
    return {"protocol": PROTOCOLS[rpc], "rpc": rpc}


class Metrics:
    """The server's metrics, registered on ``registry`` (tests pass a fresh CollectorRegistry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.stage_seconds = Histogram(
            "pvae_stage_duration_seconds", "Time spent per stage (per frame; inference per batch)",
            ["stage"], buckets=STAGE_BUCKETS, registry=registry)
        per_rpc = ["protocol", "rpc"]
        self.frames = Counter("pvae_frames", "Frames (or patch batches) encoded; OIP: inference requests", per_rpc,
                              registry=registry)
        self.patches = Counter("pvae_patches", "Patches encoded", per_rpc, registry=registry)
        self.spikes = Counter("pvae_spikes", "Spikes drawn (sum of returned counts)", registry=registry)
        self.received_bytes = Counter("pvae_received_bytes", "Request message bytes", per_rpc, registry=registry)
        self.sent_bytes = Counter("pvae_sent_bytes", "Response message bytes", per_rpc, registry=registry)
        self.errors = Counter("pvae_errors", "Errors by gRPC status code (in-band frame errors included)",
                              [*per_rpc, "code"], registry=registry)
        self.dropped_frames = Counter("pvae_dropped_frames", "Frames dropped by drop_oldest stream windows",
                                      registry=registry)
        self.batch_size = Histogram("pvae_batch_size_frames", "Frames per inference call",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.queue_depth = Gauge("pvae_queue_depth_frames", "Frames waiting for inference", registry=registry)
        self.inflight = Gauge("pvae_inflight_frames", "Frames received and not yet answered", registry=registry)
        self.active_streams = Gauge("pvae_active_streams", "Open streams (StreamEncode and ModelStreamInfer)",
                                    registry=registry)
        self.ready = Gauge("pvae_ready", "1 when the health status is SERVING, else 0", registry=registry)
        self.model_info = Info("pvae_model", "The loaded model and where it runs", registry=registry)
        for stage in STAGES:  # expose every series from the start, so dashboards see zeros, not gaps
            self.stage_seconds.labels(stage=stage)

    def observe_stage(self, stage: str, seconds: float) -> None:
        """Record ``seconds`` spent in ``stage`` (one of STAGES)."""
        self.stage_seconds.labels(stage=stage).observe(seconds)

    def error(self, rpc: str, code: str) -> None:
        """Count one error with status code name ``code`` (e.g. ``INVALID_ARGUMENT``)."""
        self.errors.labels(**rpc_labels(rpc), code=code).inc()
