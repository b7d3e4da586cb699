"""Running statistics of a stream: frames, drops, errors, latency percentiles, bytes, sparsity.

A stream updates one ``StreamStats`` from the thread that sends and the one that receives;
``snapshot()`` returns a consistent, JSON-ready ``StatsSnapshot`` for progress bars, the live
view and the end-of-run summary.

    >>> stream = client.stream(frames)
    >>> for result in stream: ...
    >>> print(stream.stats.snapshot().summary())
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .results import FrameResult

__all__ = ["RECENT_WINDOW_SECONDS", "StatsSnapshot", "StreamStats", "format_bytes"]

#: The live fps and latency shown while running cover the last this many seconds.
RECENT_WINDOW_SECONDS = 2.0
#: Percentiles reported for latency.
P50, P99 = 50.0, 99.0
MS_PER_SECOND = 1e3
#: Binary prefixes for byte counts.
BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
BYTES_PER_UNIT = 1024.0


def format_bytes(n_bytes: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    value = float(n_bytes)
    for unit in BYTE_UNITS:
        if abs(value) < BYTES_PER_UNIT or unit == BYTE_UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= BYTES_PER_UNIT
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class StatsSnapshot:
    """The state of a stream at one moment (all times in seconds, rates per second)."""

    frames_sent: int
    """Frames handed to the transport."""
    frames_answered: int
    """Frames that came back with outputs."""
    frames_failed: int
    """Frames that came back with an in-band error."""
    frames_dropped: int
    """Frames the server dropped (drop_oldest policy)."""
    elapsed_seconds: float
    """From the first frame sent to the last response (or now, while running)."""
    fps: float
    """Answered frames per second over the whole run."""
    recent_fps: float
    """Answered frames per second over the last RECENT_WINDOW_SECONDS."""
    latency_p50_seconds: float | None
    """Median client-measured latency (send -> result)."""
    latency_p99_seconds: float | None
    """99th percentile latency."""
    recent_latency_seconds: float | None
    """Mean latency over the last RECENT_WINDOW_SECONDS."""
    bytes_sent: int
    """Serialized request bytes."""
    bytes_received: int
    """Serialized response bytes."""
    mean_active_fraction: float | None
    """Mean over answered frames of the fraction of active (patch, latent) entries."""
    mean_population_sparsity: float | None
    """Mean over answered frames of the population sparsity."""
    mean_spikes_per_frame: float | None
    """Mean total spike count per answered frame."""
    first_failure: str | None = None
    """The first in-band failure, as 'STATUS: message' (None when no frame failed)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def summary(self) -> str:
        """A few human-readable lines for the end of a run."""

        def ms(value: float | None) -> str:
            return "n/a" if value is None else f"{value * MS_PER_SECOND:.1f} ms"

        per_frame = self.bytes_sent / self.frames_sent if self.frames_sent else 0.0
        lines = [
            f"frames     {self.frames_sent} sent, {self.frames_answered} answered, "
            f"{self.frames_dropped} dropped, {self.frames_failed} failed in {self.elapsed_seconds:.2f} s",
            f"throughput {self.fps:.1f} fps",
            f"latency    p50 {ms(self.latency_p50_seconds)}, p99 {ms(self.latency_p99_seconds)}",
            f"bytes      {format_bytes(self.bytes_sent)} sent ({format_bytes(per_frame)}/frame), "
            f"{format_bytes(self.bytes_received)} received",
        ]
        if self.mean_active_fraction is not None and self.mean_population_sparsity is not None:
            lines.append(f"spikes     {self.mean_spikes_per_frame:.0f}/frame, "
                         f"{100 * self.mean_active_fraction:.2f}% active, "
                         f"population sparsity {self.mean_population_sparsity:.3f}")
        if self.first_failure is not None:
            lines.append(f"failures   first: {self.first_failure}")
        return "\n".join(lines)


class StreamStats:
    """Thread-safe accumulator of a stream's statistics (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._first_sent: float | None = None
        self._last_received: float | None = None
        self._finished = False
        self.frames_sent = 0
        self.frames_answered = 0
        self.frames_failed = 0
        self._first_failure: str | None = None
        self.frames_dropped = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self._latencies: list[float] = []
        self._recent: deque[tuple[float, float]] = deque()  # (received at, latency)
        self._active_sum = 0.0
        self._sparsity_sum = 0.0
        self._spikes_sum = 0.0
        self._with_stats = 0

    def now(self) -> float:
        """The clock's current reading (seconds; the same clock as send and receive times)."""
        return float(self._clock())

    def record_sent(self, n_bytes: int) -> float:
        """Count a frame handed to the transport; returns the send time."""
        now = self._clock()
        with self._lock:
            if self._first_sent is None:
                self._first_sent = now
            self.frames_sent += 1
            self.bytes_sent += n_bytes
        return float(now)

    def record_result(self, result: FrameResult) -> None:
        """Count one response (outputs, an in-band error, or a drop report)."""
        now = self._clock()
        with self._lock:
            self._last_received = now
            self.bytes_received += result.response_bytes
            self.frames_dropped += result.dropped_count
            if result.error is not None:
                self.frames_failed += 1
                if self._first_failure is None:
                    self._first_failure = f"{result.error.code.name}: {result.error.details}"
            elif not result.is_drop_report:
                self.frames_answered += 1
                if result.latency_seconds is not None:
                    self._latencies.append(result.latency_seconds)
                    self._recent.append((now, result.latency_seconds))
                if result.stats is not None:
                    self._with_stats += 1
                    self._active_sum += result.stats.active_fraction
                    self._sparsity_sum += result.stats.population_sparsity
                    self._spikes_sum += result.stats.total_spikes
            while self._recent and now - self._recent[0][0] > RECENT_WINDOW_SECONDS:
                self._recent.popleft()

    def finish(self) -> None:
        """Freeze the elapsed time at the last response (call when the stream ends)."""
        with self._lock:
            self._finished = True

    def snapshot(self) -> StatsSnapshot:
        """A consistent copy of the current statistics."""
        now = self._clock()
        with self._lock:
            end = self._last_received if (self._finished and self._last_received is not None) else now
            elapsed = max(0.0, end - self._first_sent) if self._first_sent is not None else 0.0
            latencies = np.asarray(self._latencies, dtype=np.float64)
            recent = [latency for at, latency in self._recent if now - at <= RECENT_WINDOW_SECONDS]
            recent_span = min(RECENT_WINDOW_SECONDS, elapsed)
            with_stats = self._with_stats
            return StatsSnapshot(
                frames_sent=self.frames_sent,
                frames_answered=self.frames_answered,
                frames_failed=self.frames_failed,
                frames_dropped=self.frames_dropped,
                elapsed_seconds=elapsed,
                fps=self.frames_answered / elapsed if elapsed > 0 else 0.0,
                recent_fps=len(recent) / recent_span if recent_span > 0 else 0.0,
                latency_p50_seconds=float(np.percentile(latencies, P50)) if latencies.size else None,
                latency_p99_seconds=float(np.percentile(latencies, P99)) if latencies.size else None,
                recent_latency_seconds=float(np.mean(recent)) if recent else None,
                bytes_sent=self.bytes_sent,
                bytes_received=self.bytes_received,
                mean_active_fraction=self._active_sum / with_stats if with_stats else None,
                mean_population_sparsity=self._sparsity_sum / with_stats if with_stats else None,
                mean_spikes_per_frame=self._spikes_sum / with_stats if with_stats else None,
                first_failure=self._first_failure,
            )
