"""pvae.clients: the Python client of the pvae streaming encoder, and the ``pvae-client`` CLI.

    >>> from pvae.clients import Client, EncodeOptions
    >>> with Client("127.0.0.1:50051") as client:
    ...     result = client.encode(frame, EncodeOptions(seed=1))   # rates (R, C, K), counts, ...
    ...     for result in client.stream(frames, window=4, policy="drop_oldest"):
    ...         ...

``AsyncClient`` is the same with ``await`` / ``async for``. Sources (``open_source``: webcams,
video files, image folders, URLs, the synthetic camera), the side-by-side renderer, the
recorders and the live web view are the building blocks of ``pvae-client`` (``pvae.clients.cli``).

Modules, in the order a frame travels: ``sources`` / ``synthetic`` -> ``frames`` (numpy ->
message) -> ``options`` -> ``channel`` (targets, TLS, retry) -> ``client`` / ``aio`` (with
``streaming``: numbering, windows, matching) -> ``results`` (message -> numpy) -> ``stats`` ->
``render`` -> ``recorders`` / ``viewer`` -> ``cli`` / ``demo``. Errors: ``errors``.
"""

from .aio import AsyncClient, AsyncFrameStream
from .channel import DEFAULT_TARGET, ChannelConfig, RetryPolicy, tls_credentials
from .client import Client, FrameStream
from .errors import ClientError, FrameError, ProtocolError, RemoteError, ServerUnavailable, SourceError
from .frames import frame_to_proto, to_gray
from .options import EncodeOptions, StreamSettings
from .recorders import CodeRecorder, Codes, VideoRecorder, load_codes
from .render import SideBySide
from .results import FrameResult, FrameStats, ModelInfo, ServerInfo, ServerLimits, StageTimings
from .sources import FrameSource, limited, open_source, paced
from .stats import StatsSnapshot, StreamStats
from .synthetic import SyntheticCamera
from .viewer import ViewerUnavailable, WebView, WindowView

__all__ = [
    "DEFAULT_TARGET",
    "AsyncClient",
    "AsyncFrameStream",
    "ChannelConfig",
    "Client",
    "ClientError",
    "CodeRecorder",
    "Codes",
    "EncodeOptions",
    "FrameError",
    "FrameResult",
    "FrameSource",
    "FrameStats",
    "FrameStream",
    "ModelInfo",
    "ProtocolError",
    "RemoteError",
    "RetryPolicy",
    "ServerInfo",
    "ServerLimits",
    "ServerUnavailable",
    "SideBySide",
    "SourceError",
    "StageTimings",
    "StatsSnapshot",
    "StreamSettings",
    "StreamStats",
    "SyntheticCamera",
    "VideoRecorder",
    "ViewerUnavailable",
    "WebView",
    "WindowView",
    "frame_to_proto",
    "limited",
    "load_codes",
    "open_source",
    "paced",
    "tls_credentials",
    "to_gray",
]
