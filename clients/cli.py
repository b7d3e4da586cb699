"""``pvae-client``: stream a camera, a video, an image folder or a synthetic pan through a pvae server.

    pvae-client info
    pvae-client encode photo.jpg --out recon.png
    pvae-client stream --source synthetic --frames 300 --out side_by_side.mp4 --save codes.npz
    pvae-client stream --source 0 --view                  # webcam, live page in the browser
    pvae-client stream --source clip.mp4 --fps 30 --policy drop_oldest --server 10.0.0.5:50051

``stream`` prints a progress bar while it runs and a summary at the end (frames, fps, p50/p99
latency, drops, bytes). A bad source (no camera, unreadable file, empty folder), an unreachable
server or a bad flag is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pvae import __version__
from pvae.cli import EXIT_USER_ERROR, run_cli
from pvae.errors import ConfigError, DataError

from .channel import DEFAULT_TARGET, TOKEN_ENV, RetryPolicy, read_token, tls_credentials
from .client import Client
from .errors import SourceError
from .frames import DEFAULT_JPEG_QUALITY, FRAME_ENCODINGS
from .options import POLICIES, EncodeOptions, OutputName, Policy
from .recorders import CodeRecorder, VideoRecorder
from .render import SideBySide, explained_variance
from .results import FrameResult, ServerInfo
from .sources import SYNTHETIC, FrameSource, SyntheticSource, limited, open_source, paced, parse_size, resized
from .stats import StatsSnapshot, StreamStats
from .viewer import DEFAULT_VIEW_HOST, WebView, WindowView

__all__ = ["DEFAULT_VIEW_PORT", "build_parser", "main", "stop_on_signals", "terminate_as_interrupt"]

PROG = "pvae-client"
#: Environment variable naming the default server.
SERVER_ENV = "PVAE_SERVER"
#: The live page's default port (0 picks a free one).
DEFAULT_VIEW_PORT = 8765
#: How long to wait for the server to be up and SERVING before giving up, in seconds.
DEFAULT_CONNECT_TIMEOUT_S = 10.0
#: Progress-bar postfix refresh period, in seconds (tqdm redraws on its own in between).
POSTFIX_PERIOD_S = 0.5
#: Live-view stats refresh period, in seconds.
VIEW_STATS_PERIOD_S = 0.2
POLICY_AUTO = "auto"


# ----------------------------------------------------------------------------- arguments


def _metadata_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip().lower(), value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^63 - 1], got {value}")
    return value


def _connection_flags() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument("--server", action="append", metavar="TARGET",
                       help=f"server address host:port, a gRPC target such as dns:///pvae.ns.svc:50051, or several "
                            f"(repeat the flag or separate with commas; streams are balanced round-robin); default "
                            f"${SERVER_ENV} or {DEFAULT_TARGET}")
    group.add_argument("--tls", action="store_true", help="use TLS (system root certificates unless --tls-ca)")
    group.add_argument("--tls-ca", "--ca-cert", dest="ca_cert", metavar="PEM",
                       help="CA certificate to verify the server with (implies --tls)")
    group.add_argument("--tls-cert", "--client-cert", dest="client_cert", metavar="PEM",
                       help="client certificate for mutual TLS (implies --tls)")
    group.add_argument("--tls-key", "--client-key", dest="client_key", metavar="PEM",
                       help="client private key for mutual TLS")
    group.add_argument("--token", metavar="TOKEN",
                       help=f"bearer token sent as 'authorization: Bearer TOKEN' (visible in the process list: "
                            f"prefer --token-file or ${TOKEN_ENV}, which is read when neither is given)")
    group.add_argument("--token-file", metavar="PATH", help="file whose first line is the bearer token")
    group.add_argument("--metadata", action="append", type=_metadata_pair, default=[], metavar="KEY=VALUE",
                       help="gRPC metadata sent with every call (repeatable), e.g. authorization=Bearer...")
    group.add_argument("--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT_S, metavar="S",
                       help="how long to wait for the server to be reachable and SERVING, seconds")
    return parent


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show a flag's default only when it has one and the help text does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action) or text


def _add_picture_flags(command: argparse.ArgumentParser) -> None:
    """The side-by-side picture options, shared by encode and stream."""
    command.add_argument("--camera", action="store_true",
                         help="pictures: add the frame as sent (un-whitened) in front of the model-space panels")
    command.add_argument("--stretch", action="store_true",
                         help="pictures: show model input and reconstruction with one shared contrast stretch")


def build_parser() -> argparse.ArgumentParser:
    """The ``pvae-client`` argument parser (subcommands info, encode, stream)."""
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     prog=PROG, description="Client of the pvae streaming encoder (pvae.v1.Encoder).",
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    connection = _connection_flags()
    formatter = _HelpFormatter

    info = commands.add_parser("info", allow_abbrev=False, parents=[connection], formatter_class=formatter,
                               help="show the served model and the server's limits")
    info.add_argument("--json", action="store_true", help="print JSON (the whole manifest included)")

    encode = commands.add_parser("encode", allow_abbrev=False, parents=[connection], formatter_class=formatter,
                                 help="encode one image with unary Encode")
    encode.add_argument("image", help="an image file (PNG, JPEG, ...); colour is read as BT.601 gray")
    encode.add_argument("--out", metavar="RECON.png", help="write the reconstruction (PNG/JPEG/BMP by suffix)")
    encode.add_argument("--picture", metavar="FILE.png",
                        help="write model input (whitened) | reconstruction | spike counts, side by side")
    _add_picture_flags(encode)
    encode.add_argument("--save", metavar="FILE.npz", help="write the codes (rates, counts, seed)")
    encode.add_argument("--seed", type=_seed, help="sampler seed (default: the server draws one; it is printed)")
    encode.add_argument("--float-format", choices=("fp16", "fp32", "u8log"), default="fp16",
                        help="precision of the rates (u8log: 8-bit log-grid codes, < 4.3 %% relative error)")
    encode.add_argument("--count-format", choices=("sparse", "dense_u8", "rice"), default="sparse",
                        help="spike counts: sparse events, dense uint8 or Rice codes (exact; smallest for busy models)")
    encode.add_argument("--json", action="store_true", help="print the result's summary as JSON")

    stream = commands.add_parser("stream", allow_abbrev=False, parents=[connection], formatter_class=formatter,
                                 help="stream frames from a source and show, record or save the results")
    stream.add_argument("--source", required=True, metavar="SRC",
                        help=f"camera index (0), /dev/videoN, a video file, an image folder, an image, a URL OpenCV "
                             f"opens (rtsp://, http://), or '{SYNTHETIC}' (a camera pan over bundled natural images)")
    stream.add_argument("--frames", type=_positive_int, metavar="N",
                        help="stop after N frames (default: the end of the source; cameras and synthetic are endless)")
    stream.add_argument("--fps", type=_positive_float, help="send at most this many frames per second, like a live "
                                                            "camera (default: as fast as the server answers)")
    stream.add_argument("--window", type=_positive_int, metavar="N",
                        help="frames in flight (default: the server's default window)")
    stream.add_argument("--policy", choices=(POLICY_AUTO, *POLICIES), default=POLICY_AUTO,
                        help="when the window is full: block (lose nothing) or drop_oldest (stay fresh); auto: "
                             "drop_oldest for cameras and URLs, block otherwise")
    stream.add_argument("--seed", type=_seed, help="sampler seed; frame i uses seed + i (default: fresh per frame)")
    stream.add_argument("--size", type=parse_size, metavar="WxH",
                        help="resize frames to WIDTHxHEIGHT before sending (synthetic: its frame size, "
                             "default 320x240)")
    stream.add_argument("--encoding", choices=FRAME_ENCODINGS, default="raw",
                        help="how frames travel: raw gray pixels, or JPEG/PNG compressed on the client")
    stream.add_argument("--send-colour", action="store_true",
                        help="send colour frames as they are (default: convert to gray on the client, exactly as the "
                             "server would, for a third of the bytes)")
    stream.add_argument("--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY, metavar="Q",
                        help="quality of --encoding jpeg, 1..100")
    stream.add_argument("--float-format", choices=("fp16", "fp32", "u8log"), default="fp16",
                        help="precision of the rates (u8log: 8-bit log-grid codes, < 4.3 %% relative error)")
    stream.add_argument("--count-format", choices=("sparse", "dense_u8", "rice"), default="sparse",
                        help="spike counts: sparse events, dense uint8 or Rice codes (exact; smallest for busy models)")
    stream.add_argument("--out", metavar="FILE.mp4",
                        help="write a side-by-side video: model input (whitened) | reconstruction | spike-count map "
                             "(.mp4 or .avi)")
    stream.add_argument("--save", metavar="FILE.npz", help="write the codes: rates, exact counts, seeds, sequences")
    _add_picture_flags(stream)
    stream.add_argument("--view", action="store_true",
                        help="serve a live page (picture and stats) on loopback and print its URL")
    stream.add_argument("--view-host", default=DEFAULT_VIEW_HOST, metavar="HOST",
                        help="address the live page listens on")
    stream.add_argument("--view-port", type=int, default=DEFAULT_VIEW_PORT, metavar="PORT",
                        help="port of the live page (0: any free port)")
    stream.add_argument("--show", action="store_true", help="show an OpenCV window (needs a display and "
                                                            "OpenCV with GUI support; otherwise use --view)")
    stream.add_argument("--timeout", type=_positive_float, metavar="S",
                        help="deadline of the whole stream in seconds (default: no deadline)")
    stream.add_argument("--no-progress", action="store_true", help="no progress bar")
    stream.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


# ----------------------------------------------------------------------------- shared


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while inside (so files are finished and the summary printed).

    Only the main thread can install signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM end a stream gracefully while inside: they set ``stop``, no new frame is sent,
    and the frames in flight are answered before the stream ends. A second one interrupts at once.

    No exception is raised into whatever the main thread is doing at the first signal (a lock held
    by the live view, a gRPC call), so nothing is left half-done. Only the main thread can install
    signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def graceful(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {number: signal.signal(number, graceful) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _until(stop: threading.Event, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """``frames`` until ``stop`` is set."""
    for frame in frames:
        if stop.is_set():
            return
        yield frame


def _client(args: argparse.Namespace) -> Client:
    servers = args.server or [os.environ.get(SERVER_ENV) or DEFAULT_TARGET]
    use_tls = bool(args.tls or args.ca_cert or args.client_cert or args.client_key)
    credentials = tls_credentials(args.ca_cert, args.client_cert, args.client_key) if use_tls else None
    if args.connect_timeout < 0:
        raise ConfigError(f"--connect-timeout: must be >= 0 seconds, got {args.connect_timeout}")
    token = read_token(args.token, args.token_file)
    return Client(servers[0] if len(servers) == 1 else servers, credentials=credentials, metadata=args.metadata,
                  token=token,
                  retry=RetryPolicy(timeout_s=args.connect_timeout),
                  frame_encoding=getattr(args, "encoding", "raw"),
                  jpeg_quality=getattr(args, "jpeg_quality", DEFAULT_JPEG_QUALITY),
                  gray=not getattr(args, "send_colour", False))


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _describe_model(info: ServerInfo) -> str:
    model = info.model
    return (f"{model.arch} K={model.n_latents} P={model.patch_size} ({model.data}), "
            f"checkpoint {model.source_checkpoint_sha256[:12] or '?'}, {info.execution_provider} on {info.device}")


# ----------------------------------------------------------------------------- info


def _info(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.info()
    if args.json:
        _print_json(dataclasses.asdict(info))
        return 0
    limits = info.limits
    print(f"server   {client.address} (pvae {info.server_version})")
    print(f"model    {_describe_model(info)}")
    print(f"bundle   exported by pvae {info.model.bundle_package_version}, ONNX opset {info.model.opset}, "
          f"min frame side {info.model.min_frame_side}")
    print(f"limits   frames up to {limits.max_frame_width}x{limits.max_frame_height} ({limits.max_frame_pixels} px, "
          f"{limits.max_frame_bytes} bytes); batches of {limits.max_batch_frames} within "
          f"{limits.max_batch_delay_seconds * 1e3:.1f} ms; {limits.max_streams} streams; window "
          f"{limits.default_window} (max {limits.max_window})")
    return 0


# ----------------------------------------------------------------------------- encode


def _encode(args: argparse.Namespace) -> int:
    path = Path(args.image)
    if not path.is_file():
        raise SourceError(f"{path}: no such image file")
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise SourceError(f"{path}: not an image OpenCV can read")
    outputs: tuple[OutputName, ...] = ("rates", "counts", "reconstruction", "preprocessed", "stats")
    options = EncodeOptions(outputs=outputs, seed=args.seed, float_format=args.float_format,
                            count_format=args.count_format)
    with _client(args) as client:
        info = client.info()
        result = client.encode(path.read_bytes(), options)  # the file as is: the server decodes it exactly
    assert result.reconstruction is not None and result.counts is not None and result.stats is not None
    explained = explained_variance(result.preprocessed, result.reconstruction)
    written = []
    if args.out:
        _imwrite(args.out, result.reconstruction)
        written.append(args.out)
    if args.picture:
        picture = SideBySide(show_camera=args.camera, stretch=args.stretch).render(result, image)
        assert picture is not None
        _imwrite(args.picture, picture)
        written.append(args.picture)
    if args.save:
        recorder = CodeRecorder(args.save, _codes_meta(client.address, info, options),
                                np.float32 if args.float_format == "fp32" else np.float16)
        recorder.add(result)
        written.append(str(recorder.save()))
    summary = {
        "image": str(path), "height": result.height, "width": result.width,
        "grid": [result.grid_rows, result.grid_cols], "n_latents": result.n_latents, "seed": result.seed,
        "total_spikes": result.stats.total_spikes, "active_fraction": result.stats.active_fraction,
        "population_sparsity": result.stats.population_sparsity, "mean_rate": result.stats.mean_rate,
        "explained_variance": explained,
        "latency_seconds": result.latency_seconds, "written": written,
    }
    if args.json:
        _print_json(summary)
        return 0
    print(f"{path}: {result.width}x{result.height} -> {result.grid_rows}x{result.grid_cols} patches x "
          f"{result.n_latents} latents; {result.stats.total_spikes} spikes "
          f"({100 * result.stats.active_fraction:.2f}% active, population sparsity "
          f"{result.stats.population_sparsity:.3f}); explained variance {_ev_text(explained)} "
          f"(model space); seed {result.seed}; "
          f"{(result.latency_seconds or 0) * 1e3:.1f} ms")
    for item in written:
        print(f"wrote {item}")
    return 0


def _ev_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _imwrite(path: str, image: np.ndarray) -> None:
    target = Path(path)
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    try:
        ok = cv2.imwrite(str(target), image)
    except cv2.error:
        ok = False
    if not ok:
        raise DataError(f"{path}: OpenCV cannot write an image there (use a .png, .jpg or .bmp name)")


def _codes_meta(address: str, info: ServerInfo, options: EncodeOptions) -> dict[str, Any]:
    return {
        "server": address,
        "server_version": info.server_version,
        "model": {key: value for key, value in dataclasses.asdict(info.model).items() if key != "manifest"},
        "options": dataclasses.asdict(options),
        "client_version": __version__,
    }


# ----------------------------------------------------------------------------- stream


@dataclasses.dataclass
class _Sinks:
    """Where a stream's results go (each optional)."""

    renderer: SideBySide | None = None
    video: VideoRecorder | None = None
    codes: CodeRecorder | None = None
    view: WebView | None = None
    window: WindowView | None = None
    explained: list[float] = dataclasses.field(default_factory=list)
    """Explained variance (model space) of every rendered frame, in order."""

    def close(self) -> None:
        if self.video is not None:
            self.video.close()
        if self.window is not None:
            self.window.close()
        if self.view is not None:
            self.view.close()


def _stream_outputs(args: argparse.Namespace, wants_picture: bool) -> tuple[OutputName, ...]:
    outputs: list[OutputName] = ["counts", "stats"]
    if wants_picture:
        outputs += ["reconstruction", "preprocessed"]
    if args.save:
        outputs.append("rates")
    return tuple(outputs)


def _frames(source: FrameSource, args: argparse.Namespace) -> Iterator[np.ndarray]:
    frames: Iterator[np.ndarray] = iter(source)
    if args.size is not None and not isinstance(source, SyntheticSource):  # synthetic renders at --size
        frames = resized(frames, args.size)
    return limited(paced(frames, args.fps), args.frames)


def _progress(total: int | None, disabled: bool) -> Any:
    from tqdm import tqdm  # a base dependency; imported here to keep `pvae-client info` light

    return tqdm(total=total, unit="frame", disable=disabled, dynamic_ncols=True, file=sys.stderr,
                desc="streaming")


def _postfix(snapshot: StatsSnapshot, explained: float | None) -> dict[str, str]:
    latency = snapshot.recent_latency_seconds
    postfix = {"fps": f"{snapshot.recent_fps:.1f}", "latency": "-" if latency is None else f"{latency * 1e3:.1f}ms",
               "drops": str(snapshot.frames_dropped)}
    if explained is not None:
        postfix["EV"] = f"{explained:.2f}"
    return postfix


def _consume(results: Iterator[FrameResult], stats: StreamStats, sinks: _Sinks, bar: Any) -> str:
    """Feed every result to the sinks; returns how the stream ended."""
    last_postfix = last_view = 0.0
    for result in results:
        bar.update((0 if result.is_drop_report else 1) + result.dropped_count)
        picture = sinks.renderer.render(result) if sinks.renderer is not None else None
        explained = sinks.renderer.last_explained_variance if sinks.renderer is not None else None
        if picture is not None and explained is not None:
            sinks.explained.append(explained)
        if picture is not None and sinks.video is not None:
            sinks.video.write(picture)
        if sinks.codes is not None:
            sinks.codes.add(result)
        now = time.monotonic()
        if sinks.view is not None:
            fresh_stats = now - last_view >= VIEW_STATS_PERIOD_S
            sinks.view.update(picture, stats.snapshot().to_dict() if fresh_stats else None)
            last_view = now if fresh_stats else last_view
        if now - last_postfix >= POSTFIX_PERIOD_S:
            bar.set_postfix(_postfix(stats.snapshot(), explained), refresh=False)
            last_postfix = now
        if picture is not None and sinks.window is not None and not sinks.window.show(picture):
            return "closed"
    return "finished"


def _open_sinks(args: argparse.Namespace, client: Client, info: ServerInfo, source: FrameSource,
                options: EncodeOptions, policy: str, sinks: _Sinks) -> None:
    if args.out or args.view or args.show:
        sinks.renderer = SideBySide(show_camera=args.camera, stretch=args.stretch)
    if args.out:
        sinks.video = VideoRecorder(args.out, args.fps or source.fps)
    if args.save:
        meta = {**_codes_meta(client.address, info, options), "source": source.name, "policy": policy}
        sinks.codes = CodeRecorder(args.save, meta, np.float32 if args.float_format == "fp32" else np.float16)
    if args.view:
        sinks.view = WebView(args.view_host, args.view_port, title=f"pvae live view: {source.name}")
        print(f"{PROG}: live view at {sinks.view.start()}", file=sys.stderr, flush=True)


def _stream(args: argparse.Namespace) -> int:
    if args.frames is None and args.source.strip().lower() == SYNTHETIC and not (args.view or args.show):
        print(f"{PROG}: the synthetic source is endless; stop with Ctrl-C or pass --frames N", file=sys.stderr)
    wants_picture = bool(args.out or args.view or args.show)
    sinks = _Sinks()
    with contextlib.ExitStack() as stack:
        stack.callback(sinks.close)
        client = stack.enter_context(_client(args))  # bad connection flags fail here, before any device opens
        if args.show:
            sinks.window = WindowView()  # fails politely without a GUI or a display, before connecting
        source = stack.enter_context(open_source(args.source, args.size))  # a bad source fails before connecting
        info = client.info()  # waits (bounded) for the server to be reachable
        policy: Policy = args.policy if args.policy != POLICY_AUTO else ("drop_oldest" if source.live else "block")
        options = EncodeOptions(outputs=_stream_outputs(args, wants_picture), seed=args.seed,
                                float_format=args.float_format, count_format=args.count_format)
        _open_sinks(args, client, info, source, options, policy, sinks)
        min_side = info.model.min_frame_side
        if args.size is not None and min(args.size) < min_side:
            raise SourceError(f"--size {args.size[0]}x{args.size[1]}: frames must be at least {min_side} pixels on "
                              "each side for this model")
        print(f"{PROG}: {source.name} -> {client.address} ({_describe_model(info)}); policy {policy}, "
              f"window {args.window or info.limits.default_window}; frames need sides >= {min_side} px",
              file=sys.stderr, flush=True)
        total = min(n for n in (args.frames, source.frame_count, sys.maxsize) if n is not None)
        stop = threading.Event()
        stream = client.stream(_until(stop, _frames(source, args)), window=args.window, policy=policy,
                               options=options, keep_inputs=sinks.renderer is not None, timeout=args.timeout)
        bar = _progress(None if total == sys.maxsize else total, args.no_progress)
        try:
            with stop_on_signals(stop):
                ending = _consume(stream, stream.stats, sinks, bar)
            if stop.is_set():
                ending = "stopped (Ctrl-C)"
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once
            ending = "stopped (Ctrl-C)"
        finally:
            stream.close()
            bar.close()
        snapshot = stream.stats.snapshot()
        if sinks.view is not None:
            sinks.view.update(None, snapshot.to_dict(), state=ending)
    written = []
    if sinks.video is not None and sinks.video.frames:
        written.append({"path": str(sinks.video.path), "kind": "video", "frames": sinks.video.frames})
    if sinks.codes is not None and len(sinks.codes):
        written.append({"path": str(sinks.codes.save()), "kind": "codes", "frames": len(sinks.codes)})
    explained = _explained_summary(sinks.explained)
    status = 0
    if snapshot.frames_failed and not snapshot.frames_answered:
        # Every frame failed: say why (the first failure names the field and the limit) and fail the run.
        print(f"{PROG}: error: every frame failed ({snapshot.frames_failed}); first failure: "
              f"{snapshot.first_failure}", file=sys.stderr)
        status = EXIT_USER_ERROR
    if args.json:
        _print_json({**snapshot.to_dict(), "source": source.name, "server": client.address, "policy": policy,
                     "ending": ending, "written": written, "explained_variance": explained})
        return status
    print(f"{PROG}: {ending}: {source.name} -> {client.address}")
    print(snapshot.summary())
    if explained is not None:
        print(f"explained variance per frame (model space): mean {explained['mean']:.3f}, "
              f"min {explained['min']:.3f}, max {explained['max']:.3f} over {explained['frames']} frames")
    for item in written:
        print(f"wrote {item['path']} ({item['frames']} frames)")
    return status


def _explained_summary(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"frames": len(values), "mean": float(np.mean(values)), "min": float(np.min(values)),
            "max": float(np.max(values)), "per_frame": [round(v, 4) for v in values]}


# ----------------------------------------------------------------------------- entry point

COMMANDS = {"info": _info, "encode": _encode, "stream": _stream}


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``pvae-client`` (user errors: one line on stderr, exit status 2)."""
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
