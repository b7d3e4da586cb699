"""The streaming part of ``make demo``: serve the bundled model, stream a synthetic pan through it,
record the side-by-side video, print the summary, stop the server.

    python -m pvae.clients.demo                      # -> runs/demo/side_by_side.mp4 and .png
    python -m pvae.clients.demo --model runs/quick/best.pt --frames 300

Steps: pick a free loopback port; start ``pvae-serve`` (with this interpreter; the
bundled default model unless ``--model``) in the background with its log in ``runs/demo/server.log``;
wait until its health check says SERVING (failing early with the log's tail if the server exits);
run ``pvae-client stream --source synthetic --frames N --out runs/demo/side_by_side.mp4``; save
a still of the middle frame for the README; stop the server with SIGTERM (graceful drain), killing
it if it does not exit in time. Every step is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2

from pvae.cli import free_port, run_cli
from pvae.errors import DataError

from . import cli
from .channel import RetryPolicy
from .client import Client
from .errors import ServerUnavailable

__all__ = ["main", "run_demo"]

PROG = "pvae-demo"
HOST = "127.0.0.1"
#: Defaults: a 10 s clip at 30 fps.
DEFAULT_FRAMES = 300
DEFAULT_OUT = Path("runs/demo/side_by_side.mp4")
#: The whole demo (server start-up included: the first start may export the default model) must
#: finish within this many seconds.
DEFAULT_TIMEOUT_S = 900.0
#: How long the server may take to drain and exit after SIGTERM before it is killed, in seconds.
STOP_GRACE_S = 15.0
#: How often the start-up wait checks whether the server process died, in seconds.
POLL_S = 1.0
#: Runs ``pvae-serve`` with the arguments that follow.
SERVE_ENTRY = "import sys; from pvae.serving.server import main; sys.exit(main(sys.argv[1:]))"
#: Log lines shown when the server fails to start.
LOG_TAIL_LINES = 20


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def running_server(model: str | None, port: int, log_path: Path, start_timeout_s: float) -> Iterator[str]:
    """Start ``pvae-serve`` in the background, wait for SERVING, yield its address; always stop it."""
    flags = ["--host", HOST, "--port", str(port), "--metrics-port", "off"]
    if model is not None:
        flags += ["--model", model]
    # pvae-serve's entry point, run by this interpreter (the console script may not be on PATH).
    command = [sys.executable, "-c", SERVE_ENTRY, *flags]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    address = f"{HOST}:{port}"
    with open(log_path, "wb") as log:
        print(f"{PROG}: starting the server: pvae-serve {' '.join(flags)} (log: {log_path})", flush=True)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            _wait_until_serving(process, address, log_path, start_timeout_s)
            yield address
        finally:
            _stop(process)


def _wait_until_serving(process: subprocess.Popen[bytes], address: str, log_path: Path, timeout_s: float) -> None:
    started = time.monotonic()
    with Client(address, retry=RetryPolicy(timeout_s=POLL_S)) as client:
        while True:
            if process.poll() is not None:
                raise DataError(f"the server exited with status {process.returncode} before it was ready; "
                                f"last lines of {log_path}:\n{_tail(log_path)}")
            try:
                client.wait_until_ready(timeout=POLL_S)
            except ServerUnavailable:
                if time.monotonic() - started > timeout_s:
                    raise ServerUnavailable(address, f"not SERVING after {timeout_s:.0f} s; last lines of "
                                                     f"{log_path}:\n{_tail(log_path)}") from None
                continue
            print(f"{PROG}: server SERVING at {address} after {time.monotonic() - started:.1f} s", flush=True)
            return


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # graceful drain
    try:
        process.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def save_still(video: Path, still: Path) -> Path:
    """Write the middle frame of ``video`` as an image (the README's picture)."""
    capture = cv2.VideoCapture(str(video))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        capture.set(cv2.CAP_PROP_POS_FRAMES, max(count // 2, 0))
        ok, frame = capture.read()
    finally:
        capture.release()
    if not ok or frame is None:
        raise DataError(f"{video}: no frame could be read back")
    if not cv2.imwrite(str(still), frame):
        raise DataError(f"{still}: could not write the still")
    return still


def run_demo(model: str | None = None, frames: int = DEFAULT_FRAMES, out: Path = DEFAULT_OUT,
             still: Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, fps: float | None = None) -> int:
    """Run the demo (see the module docstring); returns the client's exit status."""
    started = time.monotonic()
    port = free_port(HOST)
    print(f"{PROG}: serving {'the model ' + model if model is not None else 'the bundled default model (pvae/models)'}",
          flush=True)
    with running_server(model, port, out.parent / "server.log", timeout_s) as address:
        remaining = max(1.0, timeout_s - (time.monotonic() - started))
        argv = ["stream", "--source", "synthetic", "--frames", str(frames), "--server", address, "--out", str(out),
                "--timeout", f"{remaining:.0f}"]
        if fps is not None:
            argv += ["--fps", str(fps)]
        print(f"{PROG}: pvae-client {' '.join(argv)}", flush=True)
        status = cli.main(argv)
    if status == 0:
        still_path = save_still(out, still if still is not None else out.with_suffix(".png"))
        print(f"{PROG}: done in {time.monotonic() - started:.1f} s: video {out}, still {still_path}")
    return status


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     prog=PROG, description=__doc__.split("\n\n")[0] if __doc__ else None,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("PVAE_DEMO_MODEL"),
                        help="bundle directory or checkpoint to serve (default: the bundled default model)")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="frames to stream")
    parser.add_argument("--fps", type=float, help="pace the synthetic camera (default: as fast as served)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="side-by-side video to write")
    parser.add_argument("--still", type=Path, help="still of the middle frame (default: --out with .png)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="give up after this many seconds (server start-up included)")
    args = parser.parse_args(argv)
    with cli.terminate_as_interrupt():  # SIGTERM (e.g. from make or CI) still stops the server
        return run_demo(args.model, args.frames, args.out, args.still, args.timeout, args.fps)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pvae.clients.demo``."""
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
