"""Cross-stream batching with a bounded queue: equal-size frames from any caller share one inference.

Frames wait in per-size queues. The dispatcher takes the size whose oldest frame waited longest,
waits at most ``max_delay_s`` (since that frame arrived) for companions, and runs up to
``max_batch`` of them in one inference call on an inference thread. While the calls run, new
frames queue up, so batches grow with load by themselves. Sampling and packing of a finished
batch run on a separate post-processing thread, overlapping the next inference call; each frame
is answered as soon as it is packed, not when its whole batch is.

``workers`` inference threads (default 1) may run calls at once: on a CPU host, two workers
with one ONNX Runtime thread each keep both cores busy with two requests instead of splitting
every call across the cores; the dispatcher waits for a free worker before it takes a batch, so
batching still grows with load.

Every queue is bounded:
- at most ``max_queue`` frames wait for inference; beyond it ``submit`` raises OverloadedError
  (``wait=False``, the default) or waits for room (``wait=True``: a ``block`` stream's sender is
  slowed instead of losing frames);
- at most ``MAX_BATCHES_IN_POST`` batches are in post-processing; the dispatcher waits for room.

A caller that is cancelled (client gone, deadline passed, frame dropped) leaves the queue at once
and its frame is skipped by the stages it has not reached.

    >>> batcher = Batcher(pipeline, max_batch=8, max_delay_s=0.002, max_queue=64)
    >>> await batcher.start()
    >>> result = await batcher.submit(job)          # PackedResult, or the stage's exception
    >>> await batcher.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pvae.serving.errors import OverloadedError, UnavailableError
from pvae.serving.metrics import Metrics
from pvae.serving.pipeline import InferredBatch, Job, PackedResult, Pipeline

__all__ = ["MAX_BATCHES_IN_POST", "Batcher"]

#: Batches that may wait for or be in post-processing at once. Two keep the post thread busy while
#: the inference thread runs the next batch, without letting finished batches pile up.
MAX_BATCHES_IN_POST = 2


@dataclass(eq=False)
class _Item:
    job: Job
    future: asyncio.Future[PackedResult]
    enqueued: float = field(default_factory=time.perf_counter)
    cancelled: bool = False


class Batcher:
    """The queue between the RPC handlers and the inference thread (see the module docstring)."""

    def __init__(self, pipeline: Pipeline, max_batch: int, max_delay_s: float, max_queue: int,
                 metrics: Metrics | None = None, post_threads: int = 1, workers: int = 1) -> None:
        self.pipeline = pipeline
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.metrics = metrics
        self._queues: dict[object, deque[_Item]] = {}
        self._waiting = 0  # live (not cancelled) items in the queues
        self._changed: asyncio.Condition | None = None
        self._post_slots: asyncio.Semaphore | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._closed = False
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._infer_slots: asyncio.Semaphore | None = None
        self._infer_pool = ThreadPoolExecutor(workers, thread_name_prefix="pvae-infer")
        self._post_pool = ThreadPoolExecutor(post_threads, thread_name_prefix="pvae-post") if post_threads else None
        self._tasks: set[asyncio.Task[None]] = set()  # post-processing and wake-up tasks in flight

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the dispatcher on the running event loop."""
        self._changed = asyncio.Condition()
        self._post_slots = asyncio.Semaphore(MAX_BATCHES_IN_POST + self.workers - 1)
        self._infer_slots = asyncio.Semaphore(self.workers)
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="pvae-batcher")

    async def stop(self) -> None:
        """Refuse new work, fail what still waits with UnavailableError, and stop the threads."""
        self._closed = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        for queue in self._queues.values():
            for item in queue:
                if not item.future.done():
                    item.future.set_exception(UnavailableError("server is shutting down"))
        self._queues.clear()
        self._waiting = 0
        self._set_depth()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._infer_pool.shutdown(wait=True)
        if self._post_pool is not None:
            self._post_pool.shutdown(wait=True)

    @property
    def depth(self) -> int:
        """Frames waiting for inference."""
        return self._waiting

    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self._waiting)

    # ------------------------------------------------------------------ producers

    async def submit(self, job: Job, wait: bool = False) -> PackedResult:
        """Queue ``job`` and wait for its result. Raises OverloadedError when the queue is full
        (unless ``wait``), UnavailableError once stopped, or the pipeline's error for this job."""
        changed = self._changed
        if changed is None or self._closed:
            raise UnavailableError("server is not accepting frames (starting or shutting down)")
        async with changed:
            while self._waiting >= self.max_queue:
                if not wait:
                    raise OverloadedError(f"server overloaded: {self._waiting} frames already wait for "
                                          f"inference (max_queue_frames={self.max_queue}); retry later")
                await changed.wait()
                if self._closed:
                    raise UnavailableError("server is shutting down")
            item = _Item(job, asyncio.get_running_loop().create_future())
            self._queues.setdefault(job.key, deque()).append(item)
            self._waiting += 1
            self._set_depth()
            changed.notify_all()
        try:
            return await item.future
        except asyncio.CancelledError:
            self._cancel(item)
            raise

    def _cancel(self, item: _Item) -> None:
        if item.cancelled:
            return
        item.cancelled = True
        queue = self._queues.get(item.job.key)
        if queue is not None and item in queue:
            queue.remove(item)
            if not queue:
                del self._queues[item.job.key]
            self._waiting -= 1
            self._set_depth()
            self._notify()

    def _notify(self) -> None:
        changed = self._changed
        if changed is None:
            return

        async def notify() -> None:
            async with changed:
                changed.notify_all()

        task = asyncio.get_running_loop().create_task(notify())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ the dispatcher

    def _oldest_key(self) -> object | None:
        best: object | None = None
        best_time = float("inf")
        for key, queue in self._queues.items():
            if queue and queue[0].enqueued < best_time:
                best, best_time = key, queue[0].enqueued
        return best

    async def _take_batch(self) -> list[_Item]:
        """Wait for work, honour the delay cap, and pop one batch of equal-size frames."""
        changed = self._changed
        assert changed is not None
        async with changed:
            while True:
                key = self._oldest_key()
                if key is None:
                    await changed.wait()
                    continue
                queue = self._queues[key]
                remaining = queue[0].enqueued + self.max_delay_s - time.perf_counter()
                if len(queue) >= self.max_batch or remaining <= 0 or isinstance(key, Job):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
            items = [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]
            if not queue:
                del self._queues[key]
            self._waiting -= len(items)
            self._set_depth()
            changed.notify_all()  # room for blocked producers
        return items

    async def _dispatch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        post_slots, infer_slots = self._post_slots, self._infer_slots
        assert post_slots is not None and infer_slots is not None
        while True:
            # A free worker and room in post-processing first, so frames keep gathering in the queue
            # (bigger batches) instead of waiting, already taken, for a slot.
            await infer_slots.acquire()
            await post_slots.acquire()
            items = await self._take_batch()
            live = [item for item in items if not item.cancelled]
            if not live:
                post_slots.release()
                infer_slots.release()
                continue
            now = time.perf_counter()
            for item in live:
                item.job.started = True
                item.job.times.queue = now - item.enqueued
                if self.metrics is not None:
                    self.metrics.observe_stage("queue", item.job.times.queue)
            task = loop.create_task(self._run_batch(live, post_slots, infer_slots))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, live: list[_Item], post_slots: asyncio.Semaphore,
                         infer_slots: asyncio.Semaphore) -> None:
        """One inference call on a worker thread, then its post-processing."""
        loop = asyncio.get_running_loop()
        try:
            inferred = await loop.run_in_executor(self._infer_pool, self.pipeline.infer,
                                                  [item.job for item in live])
        except Exception as exc:  # the whole batch failed: each of its frames gets the error
            post_slots.release()
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        finally:
            infer_slots.release()
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(live))
            self.metrics.observe_stage("inference", live[0].job.times.inference)
        await self._post_process(inferred, live, post_slots)

    async def _post_process(self, inferred: InferredBatch, items: list[_Item], slots: asyncio.Semaphore) -> None:
        """Finish the batch's frames one after another; each frame's caller gets its result as soon as
        that frame is done, not when the whole batch is."""
        loop = asyncio.get_running_loop()

        def resolve(item: _Item, outcome: Any) -> None:
            if item.future.done():
                return
            if isinstance(outcome, BaseException):
                item.future.set_exception(outcome)
                return
            item.future.set_result(outcome)
            if self.metrics is not None:
                self.metrics.observe_stage("sampling", outcome.times.sampling)
                self.metrics.observe_stage("packing", outcome.times.packing)

        def finish_each() -> None:
            for index, outcome in enumerate(self._finish_all(inferred, items)):
                loop.call_soon_threadsafe(resolve, items[index], outcome)

        try:
            pool = self._infer_pool if self._post_pool is None else self._post_pool  # None: on the inference thread
            await loop.run_in_executor(pool, finish_each)
        finally:
            slots.release()

    def _finish_all(self, inferred: InferredBatch, items: list[_Item]) -> Iterator[Any]:
        """Each frame's outcome in turn: its result, or the exception that failed it alone."""
        for index, item in enumerate(items):
            if item.cancelled:  # its caller is gone: skip the work
                yield UnavailableError("cancelled")
                continue
            try:
                yield self.pipeline.finish(inferred, index)
            except Exception as exc:  # one frame's failure stays that frame's
                yield exc
