"""The stream core: what pvae.v1's StreamEncode and the Open Inference Protocol's ModelStreamInfer share.

Both wire protocols are thin adapters over this module. :class:`StreamCore` is the server-wide
part: readiness and drain, admission of new streams (``max_streams`` over both protocols), the
frame limits, the accounting of served frames and the response size limit. :class:`Stream` is one
call's machinery:

- one reader task takes the adapter's items (parsed requests) and admits each into the stream's
  bounded in-flight **window**. Under ``block`` it waits for room, so gRPC flow control slows the
  client. Under ``drop_oldest`` it drops the oldest admitted item that is not inside an inference
  call, or, when every one is being computed, parks the newest in a one-item slot (replacing, and
  dropping, any older parked one);
- one task per admitted item computes its serialized response (the adapter's ``answer``; a bad
  item is answered in-band, never raised);
- the handler writes the responses in arrival order, with the drops since the previous response
  reported on the next one (the adapter's ``report_drops``);
- **drain** (SIGTERM): every reader is cancelled, an item read but not yet admitted is refused (the
  adapter answers it in-band, or it is reported dropped), what was admitted is answered, then a
  stream the client had not finished ends UNAVAILABLE;
- a failed read (undecodable message, transport error, bad stream settings) ends the stream with
  the status of pvae.serving.status; when the client goes away, every task of the stream is
  cancelled and its frames leave the batch queue at once.

    >>> core = StreamCore(pipeline, batcher, config, metrics)
    >>> async for wire in core.serve(adapter, request_iterator, context):   # inside a grpc.aio handler
    ...     yield wire
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

import grpc

from pvae.serving.batcher import Batcher
from pvae.serving.config import ServeConfig
from pvae.serving.decode import FrameLimits
from pvae.serving.errors import OverloadedError, PayloadTooLargeError, ServingError, UnavailableError
from pvae.serving.metrics import Metrics, rpc_labels
from pvae.serving.pipeline import Job, PackedResult, Pipeline
from pvae.serving.status import cancel_code, read_failure, status_for

__all__ = ["MAX_REPORTED_DROPS", "Drops", "Policy", "Slot", "Stream", "StreamAdapter", "StreamCore"]

#: Sequence numbers listed per drop report (pvae.proto StreamEncodeResponse.dropped_sequences).
MAX_REPORTED_DROPS = 64
#: What happens to a new item when the window is full.
Policy = Literal["block", "drop_oldest"]

T = TypeVar("T")


class _Signal:
    """Wake every waiter when the stream's state changes (single event loop, no lock needed)."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    async def wait(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(future)

    def notify(self) -> None:
        for future in self._waiters:
            if not future.done():
                future.set_result(None)


@dataclass(eq=False)
class Slot:
    """One admitted item: its task resolves to the serialized response."""

    sequence: int
    block: bool
    """Admitted under ``block``: its job may wait for room in the batch queue instead of failing."""
    task: asyncio.Future[bytes] | None = None
    job: Job | None = None
    """Set by the adapter once the work is queued; drop_oldest spares a job that has started."""

    @property
    def droppable(self) -> bool:
        """Not inside an inference call: dropping it now wastes no work (queued, or done but unsent)."""
        assert self.task is not None
        return self.task.done() or self.job is None or not self.job.started


@dataclass(eq=False)
class Drops:
    """A run of dropped items between answered ones (bounded: a count and the newest sequence numbers)."""

    count: int = 0
    sequences: deque[int] = field(default_factory=lambda: deque(maxlen=MAX_REPORTED_DROPS))

    def absorb(self, other: Drops) -> None:
        self.count += other.count
        self.sequences.extend(other.sequences)


class StreamAdapter(Protocol[T]):
    """What a wire protocol supplies for its streaming RPC (``T``: one parsed request)."""

    rpc: str
    """The metrics' ``rpc`` label."""

    def items(self, requests: AsyncIterator[Any], stream: Stream[T]) -> AsyncIterator[T]:
        """The requests to admit, parsed. Raising ends the stream (pvae.serving.status.read_failure);
        ``stream.configure`` may set the window and policy before the first item."""
        ...

    def sequence(self, item: T) -> int:
        """The item's sequence number (reported when it is dropped)."""
        ...

    async def answer(self, item: T, slot: Slot) -> bytes:
        """The item's serialized response, a failure answered in-band (raises only CancelledError)."""
        ...

    def refused(self, item: T) -> bytes | None:
        """The in-band answer to an item read but not admitted when the server drains, or None to
        report it dropped."""
        ...

    def report_drops(self, response: bytes | None, drops: Drops) -> bytes:
        """``response`` with ``drops`` reported on it, or (None) a response that reports only them."""
        ...


class StreamCore:
    """The server-wide state both protocols share (see the module docstring)."""

    def __init__(self, pipeline: Pipeline, batcher: Batcher, config: ServeConfig, metrics: Metrics) -> None:
        self.pipeline = pipeline
        self.batcher = batcher
        self.config = config
        self.metrics = metrics
        self.limits = FrameLimits(
            max_height=config.max_frame_height,
            max_width=config.max_frame_width,
            max_pixels=config.max_frame_pixels,
            max_bytes=config.max_frame_bytes,
            min_side=pipeline.engine.min_frame_side,
        )
        self._ready = False
        self._draining = False
        self._streams: set[Stream[Any]] = set()

    # ------------------------------------------------------------------ lifecycle

    def set_ready(self, ready: bool) -> None:
        """Accept (True) or refuse with UNAVAILABLE (False) new work."""
        self._ready = ready

    def begin_drain(self) -> None:
        """Stop admitting work; streams finish what they admitted, then end with UNAVAILABLE."""
        self._draining = True
        self._ready = False
        for stream in self._streams:
            stream.stop_reading()

    @property
    def ready(self) -> bool:
        """Serving: warmed up and not draining."""
        return self._ready and not self._draining

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def active_streams(self) -> int:
        """Open streams of both protocols."""
        return len(self._streams)

    def check_available(self) -> None:
        """Raise UnavailableError while warming up or draining."""
        if self._draining:
            raise UnavailableError("server is draining (shutting down); reconnect to another replica")
        if not self._ready:
            raise UnavailableError("server is warming up; retry shortly")

    # ------------------------------------------------------------------ accounting

    def account(self, rpc: str, result: PackedResult) -> None:
        """Count a served frame (or request) in the metrics."""
        self.metrics.frames.labels(**rpc_labels(rpc)).inc()
        self.metrics.patches.labels(**rpc_labels(rpc)).inc(result.n_patches)
        if result.total_spikes is not None:
            self.metrics.spikes.inc(result.total_spikes)

    def check_size(self, size: int) -> None:
        """Raise PayloadTooLargeError when a response of ``size`` bytes would exceed the send limit."""
        if size > self.config.max_send_message_bytes:
            raise PayloadTooLargeError(f"the response would be {size} bytes, over the server's "
                                       f"max_send_message_bytes={self.config.max_send_message_bytes}; ask for "
                                       "fewer outputs, fp16, sparse counts or a smaller frame")

    # ------------------------------------------------------------------ streams

    def _open(self, adapter: StreamAdapter[T]) -> Stream[T]:
        self.check_available()
        if len(self._streams) >= self.config.max_streams:
            raise OverloadedError(f"too many streams: the server serves at most max_streams={self.config.max_streams}")
        stream = Stream(self, adapter, self.config.default_window)
        self._streams.add(stream)
        self.metrics.active_streams.inc()
        return stream

    async def serve(self, adapter: StreamAdapter[T], requests: AsyncIterator[Any],
                    context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        """Run one streaming call: the serialized responses in order, then the call's end status."""
        rpc = adapter.rpc
        try:
            stream = self._open(adapter)
        except ServingError as exc:
            code, message = status_for(exc)
            self.metrics.error(rpc, code.name)
            await context.abort(code, message)
        try:
            stream.start_reading(requests)
            async for wire in stream.responses():
                self.metrics.sent_bytes.labels(**rpc_labels(rpc)).inc(len(wire))
                yield wire
            end = stream.end_status()
            if end is not None:
                self.metrics.error(rpc, end[0].name)
                await context.abort(*end)
        except (asyncio.CancelledError, GeneratorExit):  # the client went away, or the deadline passed
            self.metrics.error(rpc, cancel_code(context))
            raise
        finally:
            stream.close()
            self._streams.discard(stream)
            self.metrics.active_streams.dec()


class Stream(Generic[T]):
    """One streaming call (see the module docstring); made by :meth:`StreamCore.serve`."""

    def __init__(self, core: StreamCore, adapter: StreamAdapter[T], window: int, policy: Policy = "block") -> None:
        self.core = core
        self.adapter = adapter
        self.window = window
        self.policy: Policy = policy
        self.entries: deque[Slot | Drops] = deque()
        self.in_flight = 0
        self.reader: asyncio.Task[None] | None = None
        self.reader_done = False
        self.client_done = False
        """The client half-closed: every item it sent was read."""
        self.fatal: tuple[grpc.StatusCode, str] | None = None
        self.pending: T | None = None
        """drop_oldest: the newest item, waiting for a slot in the window."""
        self.changed = _Signal()

    def configure(self, window: int, policy: Policy) -> None:
        """Set the window and policy (before the first item is admitted)."""
        self.window, self.policy = window, policy

    # ------------------------------------------------------------------ reading and admission

    def start_reading(self, requests: AsyncIterator[Any]) -> None:
        self.reader = asyncio.create_task(self._read(requests), name=f"pvae-{self.adapter.rpc}-reader")

    def stop_reading(self) -> None:
        """Drain: stop taking items (an item read but not admitted is refused)."""
        if self.reader is not None:
            self.reader.cancel()
        self.changed.notify()

    async def _read(self, requests: AsyncIterator[Any]) -> None:
        held: T | None = None  # read, not yet admitted
        try:
            async for held in self.adapter.items(requests, self):
                if self.core.draining:
                    break
                if self.policy == "drop_oldest":
                    self._offer(held)
                else:
                    while self.in_flight >= self.window:  # block: wait until a response leaves the window
                        await self.changed.wait()
                    self._start(held)
                held = None
            else:
                self.client_done = True
            if held is not None:  # read as the drain began
                self._refuse(held)
        except asyncio.CancelledError:
            if held is not None and self.core.draining:
                self._refuse(held)
            raise
        except Exception as exc:  # a fatal read: the stream ends with this status
            self.fatal = read_failure(exc)
        finally:
            self.reader_done = True
            self.changed.notify()

    def _refuse(self, item: T) -> None:
        wire = self.adapter.refused(item)
        if wire is None:
            self._mark_dropped(self.adapter.sequence(item), len(self.entries))
            return
        answered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        answered.set_result(wire)
        self._admit(Slot(self.adapter.sequence(item), block=True, task=answered))

    def _offer(self, item: T) -> None:
        """``drop_oldest``: admit ``item`` now, dropping the oldest stale item if the window is full.

        Stale items are those not inside an inference call: still queued, or done but unsent (the
        client reads slowly). When every item in flight is being computed, dropping one would waste
        that work (and a fast camera would never see a result), so the new item waits in the
        stream's single pending slot instead, replacing (dropping) any older waiting item; it is
        admitted as soon as a result leaves the window.
        """
        if self.pending is not None:  # the new item is fresher than the waiting one
            self._mark_dropped(self.adapter.sequence(self.pending), len(self.entries))
            self.pending = None
        if self.in_flight >= self.window:
            victim = next((e for e in self.entries if isinstance(e, Slot) and e.droppable), None)
            if victim is None:
                self.pending = item
                self.changed.notify()
                return
            assert victim.task is not None
            victim.task.cancel()
            index = self.entries.index(victim)
            del self.entries[index]
            self._mark_dropped(victim.sequence, index)
            self._release()
        self._start(item)

    def _start(self, item: T) -> None:
        """Admit an item to the window: start its task and queue its response slot."""
        slot = Slot(self.adapter.sequence(item), block=self.policy == "block")
        slot.task = asyncio.create_task(self.adapter.answer(item, slot))
        slot.task.add_done_callback(lambda _: self.changed.notify())
        self._admit(slot)

    def _admit(self, slot: Slot) -> None:
        self.entries.append(slot)
        self.in_flight += 1
        self.core.metrics.inflight.inc()
        self.changed.notify()

    def _release(self) -> None:
        """An item left the window (answered or dropped): admit the waiting item, if any."""
        self.in_flight -= 1
        self.core.metrics.inflight.dec()
        if self.pending is not None and self.in_flight < self.window and not self.core.draining:
            item, self.pending = self.pending, None
            self._start(item)
        self.changed.notify()

    def _mark_dropped(self, sequence: int, index: int) -> None:
        """Record a dropped item at ``index`` of the entries, merging adjacent drop runs."""
        entries = self.entries
        run = Drops(count=1)
        run.sequences.append(sequence)
        before = entries[index - 1] if index > 0 else None
        after = entries[index] if index < len(entries) else None
        if isinstance(before, Drops):
            before.absorb(run)
            if isinstance(after, Drops):  # the drop joined two runs
                before.absorb(after)
                del entries[index]
        elif isinstance(after, Drops):
            run.absorb(after)
            entries[index] = run
        else:
            entries.insert(index, run)
        self.core.metrics.dropped_frames.inc()

    # ------------------------------------------------------------------ answering

    async def responses(self) -> AsyncIterator[bytes]:
        """The serialized responses in arrival order, until the reader is done and all is answered."""
        drops = Drops()
        while True:
            head = self.entries[0] if self.entries else None
            if isinstance(head, Drops):
                drops.absorb(head)
                self.entries.popleft()
                continue
            if head is not None and head.task is not None and head.task.done():
                self.entries.popleft()
                self._release()
                wire = head.task.result()
                if drops.count:
                    wire = self.adapter.report_drops(wire, drops)
                    drops = Drops()
                yield wire
                continue
            if head is None and self.reader_done:
                if self.pending is not None:  # never admitted (draining): report it dropped
                    self._mark_dropped(self.adapter.sequence(self.pending), len(self.entries))
                    self.pending = None
                    continue
                break
            await self.changed.wait()
        if drops.count:  # drops after the last answered item (only when the stream was cut short)
            yield self.adapter.report_drops(None, drops)

    def end_status(self) -> tuple[grpc.StatusCode, str] | None:
        """How the call ends once every response is written: OK (None), the fatal read's status, or
        UNAVAILABLE when a drain stopped the reading before the client was done."""
        if self.fatal is not None:
            return self.fatal
        if not self.client_done:
            return grpc.StatusCode.UNAVAILABLE, "server is draining (shutting down); reconnect to another replica"
        return None

    def close(self) -> None:
        """Cancel the reader and every unanswered item (the client went away, or the call ended)."""
        if self.reader is not None:
            self.reader.cancel()
        for entry in self.entries:
            if isinstance(entry, Slot) and entry.task is not None:
                entry.task.cancel()
                self.core.metrics.inflight.dec()
        self.entries.clear()
