"""Live viewers: a local web page (works anywhere, headless too) and an OpenCV window.

``WebView`` serves, on loopback by default, a page with the live side-by-side picture and live
stats (fps, latency, sparsity, drops). It runs the standard library's HTTP server in a thread:

    GET /             the page (it polls the two endpoints below; its picture's ``data-rendered``
                      counts the newer pictures it has shown, ``data-frame`` is the last one's number)
    GET /frame.jpg    the latest picture as JPEG (encoded on request, at most once per picture)
    GET /stats.json   the latest stats (StatsSnapshot fields, plus frame number and state)
    GET /stream.mjpg  the pictures as an MJPEG stream (for VLC, ffplay or an <img> tag)

``WindowView`` shows the pictures with ``cv2.imshow``. Without a display, OpenCV's GUI build kills
the process when it opens a window, and opencv-python-headless has no GUI at all, so
``window_support()`` checks both first and the CLI points to ``--view`` instead.

    >>> with WebView(port=0) as view:
    ...     print(view.url)
    ...     view.update(picture, stats.snapshot().to_dict())
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from .errors import ClientError

__all__ = ["DEFAULT_VIEW_HOST", "ViewerUnavailable", "WebView", "WindowView", "window_support"]

#: The page is served on loopback unless asked otherwise (it shows the camera).
DEFAULT_VIEW_HOST = "127.0.0.1"
#: JPEG quality of the pictures sent to the browser.
VIEW_JPEG_QUALITY = 80
#: How long an MJPEG connection waits for a new picture before re-checking for shutdown, in seconds.
MJPEG_WAIT_SECONDS = 0.5
MJPEG_BOUNDARY = "pvaeframe"
#: Placeholder picture before the first result (height, width).
PLACEHOLDER_SHAPE = (120, 360)
#: Browser polling periods, in milliseconds.
FRAME_POLL_MS = 40
STATS_POLL_MS = 500
#: The OpenCV window's title and the keys that close it (q, Esc).
WINDOW_TITLE = "pvae-client"
QUIT_KEYS = (ord("q"), 27)


class ViewerUnavailable(ClientError):
    """The requested viewer cannot run here (no GUI support or no display)."""


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
 body {{ background:#161616; color:#e8e8e8; font:14px system-ui, sans-serif; margin:16px; }}
 h1 {{ font-size:16px; font-weight:600; margin:0 0 10px; }}
 #picture {{ max-width:100%; image-rendering:pixelated; border:1px solid #333; display:block; }}
 #stats {{ display:flex; flex-wrap:wrap; gap:8px 24px; margin-top:10px; }}
 .stat b {{ display:block; font-size:20px; font-variant-numeric:tabular-nums; }}
 .stat span {{ color:#999; font-size:12px; }}
 #state {{ color:#999; margin-left:8px; font-weight:400; }}
</style></head>
<body>
<h1>{title}<span id="state"></span></h1>
<img id="picture" src="frame.jpg" alt="input | reconstruction | spike counts" data-rendered="0" data-frame="-1">
<div id="stats">
 <div class="stat"><b id="fps">-</b><span>fps (last 2 s)</span></div>
 <div class="stat"><b id="latency">-</b><span>latency (last 2 s)</span></div>
 <div class="stat"><b id="p99">-</b><span>p50 / p99 latency</span></div>
 <div class="stat"><b id="active">-</b><span>active latents</span></div>
 <div class="stat"><b id="sparsity">-</b><span>population sparsity</span></div>
 <div class="stat"><b id="frames">-</b><span>frames answered / sent</span></div>
 <div class="stat"><b id="drops">-</b><span>dropped / failed</span></div>
</div>
<script>
const img = document.getElementById("picture");
let shown = -1;
function nextFrame() {{
  fetch("stats.json", {{cache: "no-store"}}).then(r => r.json()).then(s => {{
    if (s.frame !== shown) {{ shown = s.frame; img.src = "frame.jpg?n=" + s.frame; }}
    else setTimeout(nextFrame, {frame_poll});
  }}).catch(() => setTimeout(nextFrame, 1000));
}}
img.onload = () => {{
  if (shown >= 0) {{ img.dataset.rendered = +img.dataset.rendered + 1; img.dataset.frame = shown; }}
  setTimeout(nextFrame, {frame_poll});
}};
img.onerror = () => setTimeout(nextFrame, 1000);
const ms = v => v == null ? "-" : (1000 * v).toFixed(1) + " ms";
function set(id, text) {{ document.getElementById(id).textContent = text; }}
function stats() {{
  fetch("stats.json", {{cache: "no-store"}}).then(r => r.json()).then(s => {{
    set("fps", s.recent_fps.toFixed(1));
    set("latency", ms(s.recent_latency_seconds));
    set("p99", ms(s.latency_p50_seconds) + " / " + ms(s.latency_p99_seconds));
    set("active", s.mean_active_fraction == null ? "-" : (100 * s.mean_active_fraction).toFixed(2) + " %");
    set("sparsity", s.mean_population_sparsity == null ? "-" : s.mean_population_sparsity.toFixed(3));
    set("frames", s.frames_answered + " / " + s.frames_sent);
    set("drops", s.frames_dropped + " / " + s.frames_failed);
    set("state", " \u2014 " + s.state);
  }}).catch(() => set("state", " \u2014 disconnected"));
}}
setInterval(stats, {stats_poll});
stats();
</script>
</body></html>
"""


def _placeholder() -> np.ndarray:
    picture = np.full((*PLACEHOLDER_SHAPE, 3), 24, dtype=np.uint8)
    cv2.putText(picture, "waiting for frames...", (12, PLACEHOLDER_SHAPE[0] // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                (200, 200, 200), 1, cv2.LINE_AA)
    return picture


class WebView:
    """The live web page (see the module docstring); ``start()`` returns its URL."""

    def __init__(self, host: str = DEFAULT_VIEW_HOST, port: int = 0, title: str = "pvae live view",
                 jpeg_quality: int = VIEW_JPEG_QUALITY) -> None:
        self.host = host
        self.port = port
        self.title = title
        self.jpeg_quality = jpeg_quality
        self._condition = threading.Condition()
        self._picture: np.ndarray = _placeholder()
        self._version = 0
        self._jpeg: tuple[int, bytes] | None = None
        self._stats: dict[str, Any] = {}
        self._state = "waiting"
        self._closed = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ producer side

    def update(self, picture: np.ndarray | None, stats: dict[str, Any] | None = None, state: str = "streaming") -> None:
        """Publish a new picture (BGR uint8; None keeps the last) and stats."""
        with self._condition:
            if picture is not None:
                self._picture = picture
                self._version += 1
            if stats is not None:
                self._stats = dict(stats)
            self._state = state
            self._condition.notify_all()

    def set_state(self, state: str) -> None:
        """Change the state shown next to the title (e.g. "finished")."""
        self.update(None, None, state)

    # ------------------------------------------------------------------ consumer side

    def jpeg(self) -> tuple[int, bytes]:
        """(picture number, JPEG bytes) of the latest picture, encoded once per picture."""
        with self._condition:
            version, picture, cached = self._version, self._picture, self._jpeg
        if cached is not None and cached[0] == version:
            return cached
        ok, data = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:  # pragma: no cover - any uint8 BGR picture encodes
            raise ClientError("live view: could not encode the picture as JPEG")
        encoded = (version, data.tobytes())
        with self._condition:
            if self._jpeg is None or self._jpeg[0] < version:
                self._jpeg = encoded
        return encoded

    def stats_json(self) -> bytes:
        """The stats endpoint's body."""
        with self._condition:
            body = {**self._stats, "frame": self._version, "state": self._state}
        return json.dumps(body).encode()

    def wait_for_picture(self, after: int, timeout: float) -> int:
        """Block until a picture newer than ``after`` exists (or timeout / close); returns the latest number."""
        with self._condition:
            self._condition.wait_for(lambda: self._version > after or self._closed, timeout)
            return self._version

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran."""
        return self._closed

    def page(self) -> bytes:
        """The HTML page."""
        return PAGE.format(title=self.title, frame_poll=FRAME_POLL_MS, stats_poll=STATS_POLL_MS).encode()

    # ------------------------------------------------------------------ lifetime

    def start(self) -> str:
        """Start serving in a daemon thread; returns the URL (ClientError if the port is taken)."""
        try:
            server = ThreadingHTTPServer((self.host, self.port), _handler_for(self))
        except OSError as exc:
            raise ViewerUnavailable(f"--view: cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, name="pvae-web-view", daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        """Where the page is."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        """Stop serving (idempotent)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> WebView:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _handler_for(view: WebView) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "pvae-client-view"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the terminal for the progress bar

        def _send(self, body: bytes, content_type: str) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                if path in ("/", "/index.html"):
                    self._send(view.page(), "text/html; charset=utf-8")
                elif path == "/frame.jpg":
                    self._send(view.jpeg()[1], "image/jpeg")
                elif path == "/stats.json":
                    self._send(view.stats_json(), "application/json")
                elif path == "/stream.mjpg":
                    self._mjpeg()
                else:
                    self.send_error(HTTPStatus.NOT_FOUND, "try /, /frame.jpg, /stats.json or /stream.mjpg")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the browser went away

        def _mjpeg(self) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            shown = -1
            while not view.closed:
                latest = view.wait_for_picture(shown, MJPEG_WAIT_SECONDS)
                if latest == shown:
                    continue
                shown, data = view.jpeg()
                self.wfile.write(f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

    return Handler


def window_support() -> str | None:
    """None when an OpenCV window can open here, else the reason it cannot."""
    gui = next((line.split(":", 1)[1].strip() for line in cv2.getBuildInformation().splitlines()
                if line.strip().startswith("GUI:")), "")
    if gui.upper() in ("", "NONE"):
        return "this OpenCV build has no GUI (opencv-python-headless)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "there is no display (DISPLAY and WAYLAND_DISPLAY are unset)"
    return None


class WindowView:
    """Show pictures in an OpenCV window; ``show`` returns False once the user pressed q or Esc."""

    def __init__(self, title: str = WINDOW_TITLE) -> None:
        reason = window_support()
        if reason is not None:
            raise ViewerUnavailable(f"--show: {reason}; use --view for a live page in the browser instead")
        self.title = title
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def show(self, picture: np.ndarray) -> bool:
        """Display a picture; False when the window asks to stop."""
        cv2.imshow(self.title, picture)
        return (cv2.waitKey(1) & 0xFF) not in QUIT_KEYS

    def close(self) -> None:
        """Close the window."""
        cv2.destroyWindow(self.title)
