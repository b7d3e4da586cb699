"""The streaming load generator of every benchmark: ``pvae.clients.AsyncClient`` streams fed from tickets.

A run hands frames out as **tickets** (:class:`Tickets`): a frame budget, a deadline, or both,
shared by any number of streams, optionally paced to a fixed rate over all of them. Each stream is
an ordinary ``AsyncClient.stream`` (the project's own client: the in-flight window under
``block``, drop reports under ``drop_oldest``, in-order matching, client-side latency), with
``decode=False`` so that the client does not spend the cores the server is measured on turning
outputs into arrays. A stream's source takes tickets and yields pre-encoded frames; a
``drop_oldest`` stream can send at its own fixed rate, like a live camera that does not wait for
the server. What comes back is counted in a :class:`Tally` (sent, answered, failed in-band by
status, dropped, lost to a failed stream, latencies, bytes), shared by the streams it sums.

    >>> async with AsyncClient(address) as client:
    ...     tally = Tally()
    ...     tickets = Tickets(budget=600)
    ...     await asyncio.gather(*(stream_frames(client, frames, tickets, tally, window=4) for _ in range(4)))
    >>> tally.answered, tally.percentile_ms(99)
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import grpc
import numpy as np

from pvae.clients import AsyncClient, ClientError, EncodeOptions, FrameResult, RemoteError
from pvae.clients.options import Policy
from pvae.v1 import pvae_pb2 as pb

__all__ = ["Tally", "Tickets", "frame_source", "status_name", "stream_frames"]


class Tickets:
    """Frames handed out to the streams of a run: a frame budget, a deadline, or both, optionally paced.

    ``take()`` returns the next frame index (0, 1, ...) or None once the budget is spent or the
    deadline has passed. With ``fps`` every index has its slot in a fixed-rate schedule over all
    takers (index / fps seconds after the start) and ``take`` waits for it: pacing can only make a
    run longer, never burst to catch up.
    """

    def __init__(self, budget: int | None = None, duration_s: float | None = None, fps: float | None = None) -> None:
        self.budget = budget
        self.fps = fps
        self.issued = 0
        self.started = time.perf_counter()
        self.deadline = self.started + duration_s if duration_s is not None else math.inf

    def _over(self) -> bool:
        return (self.budget is not None and self.issued >= self.budget) or time.perf_counter() >= self.deadline

    async def take(self) -> int | None:
        """The next frame index, after waiting for its slot when paced; None when the run is over."""
        if self._over():
            return None
        index = self.issued
        self.issued += 1
        if self.fps is not None:  # the frame's slot in a fixed-rate schedule over all takers
            delay = self.started + index / self.fps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.perf_counter() >= self.deadline:
                return None
        return index


async def frame_source(frames: Sequence[pb.Frame], tickets: Tickets, pace_fps: float | None = None,
                       offset: int = 0) -> AsyncIterator[pb.Frame]:
    """``frames[(offset + ticket) % len(frames)]`` for every ticket taken; with ``pace_fps``, at most
    that many per second for this source alone (a live camera's rate, whatever the server does)."""
    due = time.monotonic()
    while True:
        if pace_fps is not None:
            due += 1.0 / pace_fps
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        index = await tickets.take()
        if index is None:
            return
        yield frames[(offset + index) % len(frames)]


def status_name(error: ClientError) -> str:
    """The gRPC status of a failed call, by name (UNAVAILABLE for a server that is unavailable)."""
    return error.code.name if isinstance(error, RemoteError) else grpc.StatusCode.UNAVAILABLE.name


@dataclass
class Tally:
    """What came back on one or more streams (all counts in frames unless named otherwise)."""

    sent: int = 0
    sent_bytes: int = 0
    """Serialized request bytes."""
    answered: int = 0
    received_bytes: int = 0
    """Serialized response bytes."""
    failed: dict[str, int] = field(default_factory=dict)
    """Frames answered in-band with an error status, by status name."""
    dropped: int = 0
    """Frames the server dropped (drop_oldest) and reported."""
    drop_reports: int = 0
    """Responses that only reported drops (at the end of a stream cut short)."""
    lost: dict[str, int] = field(default_factory=dict)
    """Frames in flight when their stream failed, by the stream's status name."""
    latencies_s: list[float] = field(default_factory=list)
    """Send -> result, answered frames."""
    stream_errors: list[str] = field(default_factory=list)
    """One line per failed stream: ``label: STATUS: details``."""

    def add(self, result: FrameResult) -> None:
        """Count one response."""
        self.received_bytes += result.response_bytes
        self.dropped += result.dropped_count
        if result.error is not None:
            name = result.error.code.name
            self.failed[name] = self.failed.get(name, 0) + 1
        elif result.is_drop_report:
            self.drop_reports += 1
        else:
            self.answered += 1
            if result.latency_seconds is not None:
                self.latencies_s.append(result.latency_seconds)

    def __add__(self, other: Tally) -> Tally:
        """Both tallies' counts together (counts and bytes summed, statuses merged, lists joined)."""
        values: dict[str, Any] = {}
        for item in fields(self):
            mine, theirs = getattr(self, item.name), getattr(other, item.name)
            values[item.name] = ({name: mine.get(name, 0) + theirs.get(name, 0) for name in {*mine, *theirs}}
                                 if isinstance(mine, dict) else mine + theirs)
        return Tally(**values)

    @property
    def failures(self) -> int:
        """Frames failed in-band."""
        return sum(self.failed.values())

    def percentile_ms(self, q: float) -> float:
        """Latency percentile ``q`` (0..100) in milliseconds; NaN before any answer."""
        return float(np.percentile(self.latencies_s, q) * 1e3) if self.latencies_s else math.nan


async def stream_frames(client: AsyncClient, frames: Sequence[pb.Frame], tickets: Tickets, tally: Tally, *,
                        window: int, policy: Policy = "block", options: EncodeOptions | None = None,
                        pace_fps: float | None = None, offset: int = 0, label: str = "stream",
                        on_result: Callable[[FrameResult], None] | None = None) -> None:
    """One stream on ``client``: frames for every ticket (see :func:`frame_source`; sequence numbers
    start at ``offset``), at most ``window`` in flight under ``block``; every response counted in
    ``tally`` and handed to ``on_result``. A stream that fails is recorded (``stream_errors``, its
    unanswered frames under ``lost``), not raised; what ``on_result`` raises is."""
    stream = client.stream(frame_source(frames, tickets, pace_fps, offset), window=window, policy=policy,
                           options=options, start_sequence=offset, decode=False)
    try:
        async for result in stream:
            tally.add(result)
            if on_result is not None:
                on_result(result)
    except ClientError as exc:
        name = status_name(exc)
        tally.lost[name] = tally.lost.get(name, 0) + stream.in_flight()
        tally.stream_errors.append(f"{label}: {name}: {exc}")
    finally:
        await stream.close()
        sent = stream.stats.snapshot()
        tally.sent += sent.frames_sent
        tally.sent_bytes += sent.bytes_sent
