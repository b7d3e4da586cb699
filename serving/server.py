"""``pvae-serve``: the gRPC server, its health and reflection services, metrics and graceful drain.

One port serves pvae.v1.Encoder and the Open Inference Protocol (``inference.GRPCInferenceService``,
pvae.serving.oip), plus grpc.health.v1 and reflection.

Start-up order: load the bundle and create the ONNX Runtime sessions; start gRPC with health
NOT_SERVING (so probes get an answer, and Encode gets UNAVAILABLE); warm every graph up; then
flip health to SERVING. On SIGTERM (or SIGINT): health NOT_SERVING at once, streams stop
admitting frames, in-flight frames finish and are sent, streams end with UNAVAILABLE, and
whatever is still running after ``--drain-grace-s`` is cancelled.

    pvae-serve --model runs/quick/best.bundle --port 50051 --metrics-port 9464
    pvae-serve --gpu 0

In code (tests use port 0 and a fresh registry)::

    running = await start_server(ServeConfig(port=0, metrics_port=None), registry=CollectorRegistry())
    ...  # connect to f"127.0.0.1:{running.port}"
    await running.stop(grace=5.0)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from pvae import __version__
from pvae.bundle import Bundle
from pvae.cli import Flag, add_config_flags, flag_values, run_cli
from pvae.errors import ConfigError
from pvae.inference import grpc_service_pb2_grpc as oip_grpc
from pvae.serving.batcher import Batcher
from pvae.serving.config import ServeConfig
from pvae.serving.engine import Engine, resolve_device
from pvae.serving.logs import native_stderr_limited, rate_limited_handlers
from pvae.serving.memory import tune_malloc
from pvae.serving.metrics import Metrics
from pvae.serving.oip import SERVICE_NAME as OIP_SERVICE_NAME
from pvae.serving.oip import InferenceServicer
from pvae.serving.pipeline import Pipeline
from pvae.serving.security import (
    BearerTokenInterceptor,
    check_bundle_confined,
    insecure_bind_warning,
    load_tokens,
    server_credentials,
)
from pvae.serving.servicer import EncoderServicer
from pvae.serving.source import resolve_bundle
from pvae.serving.wire import MalformedMessageInterceptor
from pvae.v1 import pvae_pb2 as pb
from pvae.v1 import pvae_pb2_grpc as pb_grpc

__all__ = ["SERVICE_NAME", "RunningServer", "build_parser", "config_from_args", "main", "serve", "start_server"]

log = logging.getLogger("pvae.serving")

#: Full name of the service, as health checks and reflection know it.
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Encoder"].full_name
#: Health entries kept: the server as a whole ("") and each inference service.
HEALTH_SERVICES = ("", SERVICE_NAME, OIP_SERVICE_NAME)


def _info(bundle: Bundle, engine: Engine, config: ServeConfig) -> pb.InfoResponse:
    manifest = bundle.manifest
    model_config = manifest.get("model_config") or {}
    data = manifest.get("data") or {}
    return pb.InfoResponse(
        server_version=__version__,
        model=pb.ModelInfo(
            arch=str(model_config.get("arch", "")),
            n_latents=bundle.n_latents,
            patch_size=bundle.patch_size,
            min_frame_side=engine.min_frame_side,
            data=str(data.get("name", data.get("dataset", ""))) if isinstance(data, dict) else str(data),
            source_checkpoint_sha256=str((manifest.get("source_checkpoint") or {}).get("sha256", "")),
            bundle_package_version=str(manifest.get("package_version", "")),
            opset=int(manifest.get("opset", 0) or 0),
            manifest_json=json.dumps(manifest, sort_keys=True),
        ),
        limits=pb.ServerLimits(
            max_frame_height=config.max_frame_height,
            max_frame_width=config.max_frame_width,
            max_frame_pixels=config.max_frame_pixels,
            max_frame_bytes=config.max_frame_bytes,
            max_patches=config.max_patches,
            max_receive_message_bytes=config.max_receive_message_bytes,
            max_send_message_bytes=config.max_send_message_bytes,
            max_batch_frames=config.max_batch_frames,
            max_batch_delay_seconds=config.max_batch_delay_s,
            max_queue_frames=config.max_queue_frames,
            max_streams=config.max_streams,
            default_window=config.default_window,
            max_window=config.max_window,
        ),
        execution_provider=engine.provider,
        device=engine.plan.label,
    )


@dataclass
class RunningServer:
    """A started server and its parts; ``stop`` drains it."""

    server: grpc.aio.Server
    port: int
    """The bound gRPC port (useful with port 0)."""
    servicer: EncoderServicer
    oip: InferenceServicer
    """The Open Inference Protocol service (same pipeline, limits and readiness)."""
    batcher: Batcher
    health: HealthServicer
    metrics: Metrics
    engine: Engine
    metrics_port: int | None = None
    """The bound /metrics HTTP port, or None when metrics HTTP is off."""
    warmup_sizes: tuple[tuple[int, int], ...] = ()
    """Frame sizes run once before SERVING."""
    auth: BearerTokenInterceptor | None = None
    """The bearer-token check, when tokens are configured."""
    tls: bool = False
    """Whether the port speaks TLS."""
    _metrics_http: Any = None
    _stopped: bool = False

    async def warm_up(self) -> None:
        """Run every graph once (off the event loop), then report SERVING."""
        await asyncio.get_running_loop().run_in_executor(None, self.engine.warm_up, self.warmup_sizes)
        self.servicer.set_ready(True)
        for service in HEALTH_SERVICES:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.metrics.ready.set(1)

    async def stop(self, grace: float) -> None:
        """Graceful drain: NOT_SERVING, finish in-flight frames for up to ``grace`` seconds, stop."""
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()
        self.metrics.ready.set(0)
        self.servicer.begin_drain()
        await self.server.stop(grace)  # refuses new RPCs; cancels what still runs after `grace`
        await self.batcher.stop()
        self.servicer.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()

    async def wait_for_termination(self) -> None:
        """Return when the gRPC server has stopped."""
        await self.server.wait_for_termination()


async def start_server(config: ServeConfig, registry: CollectorRegistry | None = None, bundle: Bundle | None = None,
                       warm_up: bool = True, engine: Engine | None = None,
                       auth_tokens: Sequence[str] | None = None) -> RunningServer:
    """Build and start the server. With ``warm_up=False`` it stays NOT_SERVING until
    ``RunningServer.warm_up()`` is awaited (tests watch the transition). ``auth_tokens`` None reads
    them from ``config.auth_token_file`` and ``$PVAE_AUTH_TOKENS``; empty turns auth off."""
    # Security settings are read first, so a missing certificate fails before the model loads.
    tokens = load_tokens(config.auth_token_file) if auth_tokens is None else tuple(auth_tokens)
    credentials = (server_credentials(config.tls_cert, config.tls_key, config.tls_ca)
                   if config.tls_cert is not None and config.tls_key is not None else None)
    warning = insecure_bind_warning(config)
    if warning is not None:
        log.warning(warning)
    auth = BearerTokenInterceptor(tokens) if tokens else None
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    if engine is None:
        bundle = bundle if bundle is not None else resolve_bundle(config.model, config.cache_dir)
        check_bundle_confined(bundle)  # before ONNX Runtime opens any path the manifest names
        engine = Engine(bundle, resolve_device(config.device, config.gpu), config.intra_op_threads,
                        sampler_threads=None if config.sampler_threads < 0 else config.sampler_threads,
                        sampler=config.sampler)
    bundle = engine.bundle
    check_bundle_confined(bundle)
    pipeline = Pipeline(engine)
    batcher = Batcher(pipeline, config.max_batch_frames, config.max_batch_delay_s, config.max_queue_frames, metrics,
                      post_threads=config.post_threads, workers=config.inference_workers)
    await batcher.start()
    info = _info(bundle, engine, config)
    metrics.model_info.info({
        "arch": info.model.arch,
        "n_latents": str(info.model.n_latents),
        "patch_size": str(info.model.patch_size),
        "source_checkpoint_sha256": info.model.source_checkpoint_sha256,
        "bundle_package_version": info.model.bundle_package_version,
        "server_version": __version__,
        "execution_provider": info.execution_provider,
        "device": info.device,
        "sampler": engine.sampler_backend,
    })
    servicer = EncoderServicer(pipeline, batcher, config, metrics, info)
    # Auth runs first, so an unauthenticated caller learns nothing, not even that its bytes were malformed.
    interceptors: list[grpc.aio.ServerInterceptor] = [MalformedMessageInterceptor()]
    if auth is not None:
        interceptors.insert(0, auth)
    server = grpc.aio.server(interceptors=interceptors, options=[
        ("grpc.max_receive_message_length", config.max_receive_message_bytes),
        ("grpc.max_send_message_length", config.max_send_message_bytes),
        # gRPC sets SO_REUSEPORT by default, so a second server on a busy port would start silently and
        # split the clients at random; only share the port when asked to.
        ("grpc.so_reuseport", 1 if config.reuse_port else 0),
    ])
    pb_grpc.add_EncoderServicer_to_server(servicer, server)
    oip = InferenceServicer(servicer.core)
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(oip, server)
    health = HealthServicer()
    for service in HEALTH_SERVICES:
        await health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, OIP_SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME), server)
    if config.port and not config.reuse_port:
        try:
            _check_port_free(config.host, config.port)
        except OSError as exc:
            await batcher.stop()
            raise ConfigError(f"port: cannot listen on {config.bind_address}: {exc.strerror or exc} (pick another "
                              "--port, or --reuse-port to share it on purpose)") from None
    try:
        if credentials is not None:
            port = server.add_secure_port(config.bind_address, credentials)
        else:
            port = server.add_insecure_port(config.bind_address)
    except RuntimeError:  # grpc raises RuntimeError when it cannot bind (older versions return port 0)
        port = 0
    if port == 0:
        await batcher.stop()
        raise ConfigError(f"port: cannot listen on {config.bind_address}: the address is in use or not available "
                          "(pick another --port, or --reuse-port to share it on purpose)")
    await server.start()
    running = RunningServer(server, port, servicer, oip, batcher, health, metrics, engine,
                            warmup_sizes=config.warmup_sizes, auth=auth, tls=credentials is not None)
    if config.metrics_port is not None:
        try:
            http_server, _ = start_http_server(config.metrics_port, addr=config.host, registry=metrics.registry)
        except OSError as exc:
            await running.stop(0.0)
            raise ConfigError(f"metrics_port: cannot listen on {config.host}:{config.metrics_port}: "
                              f"{exc.strerror or exc} (pick another --metrics-port, or 'off')") from None
        running._metrics_http = http_server
        running.metrics_port = int(http_server.server_port)
    if warm_up:
        await running.warm_up()
    return running


def _check_port_free(host: str, port: int) -> None:
    """Raise OSError (EADDRINUSE, ...) if ``host:port`` cannot be bound without SO_REUSEPORT.

    Checked before gRPC binds, so that a busy port is one clear line instead of gRPC core's own log.
    """
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is no conflict
        probe.bind((host, port))


async def serve(config: ServeConfig) -> None:
    """Run until SIGTERM/SIGINT, then drain gracefully."""
    tune_malloc()  # the whole process serves megabyte messages (pvae.serving.memory)
    running = await start_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    info = running.servicer.info
    log.info("pvae-serve %s: %s and %s on %s:%d (%s, %s; model %s K=%d, checkpoint %s); metrics %s",
             __version__, SERVICE_NAME, OIP_SERVICE_NAME, config.host, running.port, info.execution_provider,
             info.device,
             info.model.arch, info.model.n_latents, info.model.source_checkpoint_sha256[:12] or "?",
             f"http://{config.host}:{running.metrics_port}/metrics" if running.metrics_port else "off")
    # start_server returned after warm-up, with health already SERVING: say so, and what is served.
    log.info("SERVING %s on %s:%d (warm-up done: %s)", config.model or "the bundled default model", config.host,
             running.port, ", ".join(f"{h}x{w}" for h, w in config.warmup_sizes) or "no frame sizes")
    log.info("sampler: %s (%s)", running.engine.sampler_backend, running.engine.sampler_note)
    log.info("transport %s; bearer-token auth %s", "TLS" + (" (mutual)" if config.tls_ca else "") if running.tls
             else "plaintext", "on" if running.auth is not None else "off")
    await stop.wait()
    log.info("draining: health NOT_SERVING, finishing in-flight frames (grace %.1f s)", config.drain_grace_s)
    await running.stop(config.drain_grace_s)
    log.info("stopped")


# ----------------------------------------------------------------------------- CLI


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return tuple((int(h), int(w)) for h, w in (item.lower().split("x") for item in text.split(",") if item))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW[,HxW...], e.g. 480x640, got {text!r}") from None


def _metrics_port(text: str) -> int | None:
    if text.lower() in ("off", "none"):
        return None
    return int(text)


def _sizes_text(sizes: tuple[tuple[int, int], ...]) -> str:
    return ",".join(f"{h}x{w}" for h, w in sizes)


def build_parser() -> argparse.ArgumentParser:
    """One flag per ServeConfig field (``max_batch_frames`` -> ``--max-batch-frames``)."""
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="pvae-serve",
                                     description="Serve a P-VAE bundle over gRPC: pvae.v1.Encoder and the Open "
                                     "Inference Protocol (inference.GRPCInferenceService), on one port.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_flags(parser, ServeConfig, flags={
        "metrics_port": Flag(parse=_metrics_port, help="{doc} ('off' disables)"),
        "warmup_sizes": Flag(parse=_sizes, format=_sizes_text),
    })
    return parser


def config_from_args(argv: Sequence[str] | None) -> ServeConfig:
    """Parse flags into a validated ServeConfig (ConfigError on a bad value)."""
    return ServeConfig(**flag_values(ServeConfig, build_parser().parse_args(argv)))


def _main(argv: Sequence[str] | None) -> int:
    config = config_from_args(argv)
    with contextlib.ExitStack() as limits:
        if config.log_burst:  # before logging is set up: its handler must write to the real stderr
            limits.enter_context(native_stderr_limited(config.log_burst, config.log_interval_s))
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        # Exporting a checkpoint on the fly (--model x.pt) runs torch.onnx, whose IR passes log at INFO.
        for noisy in ("onnx_ir", "onnxscript", "torch.onnx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        if config.log_burst:
            limits.enter_context(rate_limited_handlers(logging.getLogger().handlers, config.log_burst,
                                                       config.log_interval_s))
        asyncio.run(serve(config))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``pvae-serve``."""
    return run_cli("pvae-serve", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
