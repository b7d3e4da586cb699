"""Rate-limited logs: no client can flood the server log by repeating a bad request.

Two sources reach ``pvae-serve``'s stderr, and both are limited the same way: the first ``burst``
messages of one kind in an interval of ``interval_s`` seconds pass, the rest are counted, and one
line says that suppression started and one (when the interval is over, or at exit) how many were
suppressed. Each kind of message therefore costs at most ``burst + 2`` lines per interval,
whatever the request rate.

- **Python logging** (``RateLimitFilter`` on the root handlers): a kind is (logger, level, message
  template with its digits masked), so ``log.warning("bad frame %s", name)`` is one kind whatever
  ``name`` is; a record's traceback stays with it.
- **Native libraries** (``native_stderr_limited``): libjpeg ("Corrupt JPEG data: ..."), libpng
  ("libpng error: ...") and OpenCV ("[ WARN:0@...] ...") write straight to file descriptor 2 when a
  client sends a corrupt image, below Python's logging. File descriptor 2 is turned into a pipe
  read by a small forwarding process (this file run as a script, standard library only) that
  passes lines on to the real stderr; a kind is the line with its digits masked. The forwarder
  outlives a crashing server (it ends at end of file), so a native crash message is never lost.
  Python's own ``sys.stderr`` keeps writing to the real stderr directly.

At most ``MAX_KINDS`` kinds are tracked at once; beyond that, new kinds share one overflow kind, so
messages that differ in every line (a template built with an f-string) are still bounded.

    >>> limiter = RateLimiter(burst=5, interval_s=60.0)
    >>> [limiter.admit("k", "msg")[0] for _ in range(7)]
    [True, True, True, True, True, False, False]
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

__all__ = [
    "DEFAULT_BURST",
    "DEFAULT_INTERVAL_S",
    "MAX_KINDS",
    "RateLimitFilter",
    "RateLimiter",
    "forward",
    "native_stderr_limited",
    "rate_limited_handlers",
]

#: Messages of one kind let through per interval.
DEFAULT_BURST = 5
#: Length of the interval, seconds.
DEFAULT_INTERVAL_S = 60.0
#: Kinds tracked at once; further kinds share one overflow kind.
MAX_KINDS = 64
#: Longest example quoted in a notice, characters.
EXAMPLE_CHARS = 160
#: Longest native line kept whole, bytes (a longer one is cut, so a line without newline cannot grow memory).
MAX_LINE_BYTES = 8192
#: Attribute that marks a record as one of this module's notices (never suppressed).
NOTICE_ATTR = "pvae_log_notice"
#: Attribute that records this filter's decision on a record (a record may meet the filter at several handlers).
DECISION_ATTR = "pvae_log_admitted"
#: Logger of the notices about Python log records.
NOTICE_LOGGER = "pvae.serving.logs"
_OVERFLOW = ("pvae.serving.logs", "overflow")
_DIGIT_TEXT = re.compile(r"\d+")


@dataclass
class _Window:
    start: float
    example: str
    passed: int = 0
    suppressed: int = 0


class RateLimiter:
    """Counts messages per kind and interval; thread-safe. ``admit`` says whether a message passes
    and which notices (suppression started, an interval's count) to write before it."""

    def __init__(self, burst: int = DEFAULT_BURST, interval_s: float = DEFAULT_INTERVAL_S, max_kinds: int = MAX_KINDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or interval_s <= 0 or max_kinds < 1:
            raise ValueError("burst and max_kinds must be >= 1 and interval_s > 0")
        self.burst = burst
        self.interval_s = interval_s
        self.max_kinds = max_kinds
        self._clock = clock
        self._windows: OrderedDict[Hashable, _Window] = OrderedDict()  # oldest window first
        self._lock = threading.Lock()

    def _summary(self, window: _Window) -> str:
        return (f"suppressed {window.suppressed} more message{'s' if window.suppressed != 1 else ''} like "
                f"{window.example!r} in {self.interval_s:g} s")

    def _expire(self, now: float) -> list[str]:
        notices = []
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if now - window.start < self.interval_s:
                break
            del self._windows[key]
            if window.suppressed:
                notices.append(self._summary(window))
        return notices

    def admit(self, kind: Hashable, example: str) -> tuple[bool, list[str]]:
        """(whether this message passes, notices to write first)."""
        now = self._clock()
        with self._lock:
            notices = self._expire(now)
            window = self._windows.get(kind)
            if window is None:
                if len(self._windows) >= self.max_kinds:
                    kind, example = _OVERFLOW, "messages of more kinds than are tracked"
                    window = self._windows.get(kind)
                if window is None:
                    window = self._windows[kind] = _Window(now, example[:EXAMPLE_CHARS])
            if window.passed < self.burst:
                window.passed += 1
                return True, notices
            if not window.suppressed:
                notices.append(f"more than {self.burst} messages like {window.example!r} in {self.interval_s:g} s: "
                               "suppressing them for the rest of the interval")
            window.suppressed += 1
            return False, notices

    def flush(self) -> list[str]:
        """The counts of every interval still open (at exit, or for a periodic report), and forget them."""
        with self._lock:
            notices = [self._summary(window) for window in self._windows.values() if window.suppressed]
            self._windows.clear()
        return notices

    def due(self) -> list[str]:
        """The counts of the intervals that are over."""
        with self._lock:
            return self._expire(self._clock())


class RateLimitFilter(logging.Filter):
    """A handler filter that rate-limits records per (logger, level, message template)."""

    def __init__(self, burst: int = DEFAULT_BURST, interval_s: float = DEFAULT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.limiter = RateLimiter(burst, interval_s, clock=clock)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, NOTICE_ATTR, False):
            return True
        decided = getattr(record, DECISION_ATTR, None)
        if decided is not None:  # the same record at a second handler with this filter: counted once
            return bool(decided)
        # Digits masked: some libraries (grpc.aio among them) format values into the message itself.
        kind = (record.name, record.levelno, _DIGIT_TEXT.sub("#", str(record.msg)))
        passed, notices = self.limiter.admit(kind, f"{record.name}: {record.msg}")
        setattr(record, DECISION_ATTR, passed)
        self._notify(notices)
        return passed

    @staticmethod
    def _notify(notices: Sequence[str]) -> None:
        for notice in notices:
            logging.getLogger(NOTICE_LOGGER).warning("%s", notice, extra={NOTICE_ATTR: True})

    def flush(self) -> None:
        """Log the counts of the intervals still open."""
        self._notify(self.limiter.flush())


@contextmanager
def rate_limited_handlers(handlers: Sequence[logging.Handler], burst: int = DEFAULT_BURST,
                          interval_s: float = DEFAULT_INTERVAL_S) -> Iterator[RateLimitFilter]:
    """Rate-limit what ``handlers`` write while the block runs; the counts still open are logged at the end."""
    limit = RateLimitFilter(burst, interval_s)
    for handler in handlers:
        handler.addFilter(limit)
    try:
        yield limit
    finally:
        limit.flush()
        for handler in handlers:
            handler.removeFilter(limit)


# ----------------------------------------------------------------------------- native stderr

_DIGITS = re.compile(rb"\d+")


def forward(source: BinaryIO | int, sink: BinaryIO, burst: int = DEFAULT_BURST,
            interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
    """Copy lines from ``source`` (a file descriptor or binary file) to ``sink`` until end of file,
    rate-limited per line kind (the line with its digits masked); notices are prefixed ``pvae-serve:``."""
    fd = source if isinstance(source, int) else source.fileno()
    limiter = RateLimiter(burst, interval_s, clock=clock)
    pending = b""

    def notify(notices: Sequence[str]) -> None:
        for notice in notices:
            sink.write(f"pvae-serve: native stderr: {notice}\n".encode(errors="replace"))

    def emit(line: bytes) -> None:
        passed, notices = limiter.admit(_DIGITS.sub(b"#", line.rstrip()[:EXAMPLE_CHARS]),
                                        line.rstrip().decode(errors="replace"))
        notify(notices)
        if passed:
            sink.write(line)

    while True:
        ready, _, _ = select.select([fd], [], [], interval_s)
        if not ready:  # quiet for an interval: report what the intervals that ended suppressed
            notify(limiter.due())
            sink.flush()
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            emit(line + b"\n")
        if len(pending) > MAX_LINE_BYTES:
            emit(pending[:MAX_LINE_BYTES] + b" [cut]\n")
            pending = b""
        sink.flush()
    if pending:
        emit(pending + b"\n")
    notify(limiter.flush())
    sink.flush()


@contextmanager
def native_stderr_limited(burst: int = DEFAULT_BURST, interval_s: float = DEFAULT_INTERVAL_S) -> Iterator[None]:
    """Route file descriptor 2 through a rate-limiting forwarder process while the block runs.

    ``sys.stderr`` is pointed at the real stderr for the block, so Python's own output (logging
    handlers created inside the block, tracebacks, the CLI's error line) is written directly; only
    writes below Python (native libraries) pass the forwarder. At the end descriptor 2 is restored
    and the forwarder, at end of file, writes the counts still open and exits.
    """
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    try:
        forwarder = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), str(burst), repr(float(interval_s))],
            stdin=read_end, stdout=real, stderr=real, close_fds=True, start_new_session=True)
    except OSError:
        for fd in (real, read_end, write_end):
            os.close(fd)
        raise
    os.close(read_end)
    saved_stderr = sys.stderr
    real_stderr = open(real, "w", buffering=1, encoding=getattr(saved_stderr, "encoding", None) or "utf-8",  # noqa: SIM115
                       errors="backslashreplace", closefd=False)
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = real_stderr
    try:
        yield
    finally:
        sys.stderr = saved_stderr
        real_stderr.flush()
        os.dup2(real, 2)  # the pipe's last write end in this process closes: the forwarder sees end of file
        # ``real`` stays open: logging handlers made in the block still write to it (the real stderr).
        with contextlib.suppress(subprocess.TimeoutExpired):  # a child of ours still holds the pipe: let it be
            forwarder.wait(timeout=10)


def _forward_main(argv: Sequence[str]) -> int:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the server; this ends at end of file
    burst, interval_s = int(argv[0]), float(argv[1])
    forward(sys.stdin.buffer, sys.stdout.buffer, burst, interval_s)
    return 0


if __name__ == "__main__":
    sys.exit(_forward_main(sys.argv[1:]))
