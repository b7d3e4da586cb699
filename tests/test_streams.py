"""The stream core (pvae.serving.streams) on its own: a fake protocol adapter, no gRPC, no model.

Each item's answer waits for the test to release it, so the window, the drops and the drain are
driven step by step, with no timing involved.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from pvae.errors import InputError
from pvae.serving.config import ServeConfig
from pvae.serving.metrics import Metrics
from pvae.serving.streams import Drops, Policy, Slot, Stream, StreamCore


class Aborted(Exception):
    """What the fake context's abort raises (grpc.aio raises AbortError)."""


class FakeContext:
    def __init__(self) -> None:
        self.status: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        self.status = (code, message)
        raise Aborted(message)

    def time_remaining(self) -> float | None:
        return None


class Adapter:
    """Items are ints; item n is answered b"n" once released (``release(n)``); -1 in the requests is a
    bad first message (the stream's settings), which ends the stream."""

    rpc = "StreamEncode"

    def __init__(self, window: int = 2, policy: Policy = "block") -> None:
        self.window, self.policy = window, policy
        self.released: dict[int, asyncio.Event] = {}
        self.started: list[int] = []

    def gate(self, item: int) -> asyncio.Event:
        return self.released.setdefault(item, asyncio.Event())

    def release(self, *items: int) -> None:
        for item in items:
            self.gate(item).set()

    async def items(self, requests: AsyncIterator[Any], stream: Stream[int]) -> AsyncIterator[int]:
        stream.configure(self.window, self.policy)
        async for request in requests:
            if request == -1:
                raise InputError("settings: window must be >= 1")
            yield request

    def sequence(self, item: int) -> int:
        return item

    async def answer(self, item: int, slot: Slot) -> bytes:
        self.started.append(item)
        slot.job = SimpleNamespace(started=True)  # type: ignore[assignment]  # as if inside an inference call
        await self.gate(item).wait()
        return str(item).encode()

    def refused(self, item: int) -> bytes | None:
        return f"refused {item}".encode()

    def report_drops(self, response: bytes | None, drops: Drops) -> bytes:
        dropped = ",".join(str(s) for s in drops.sequences)
        return (response or b"") + f" dropped {drops.count}:{dropped}".encode()


def _core(max_streams: int = 4) -> StreamCore:
    pipeline: Any = SimpleNamespace(engine=SimpleNamespace(min_frame_side=16))
    core = StreamCore(pipeline, batcher=Any, config=ServeConfig(max_streams=max_streams),  # type: ignore[arg-type]
                      metrics=Metrics(CollectorRegistry()))
    core.set_ready(True)
    return core


class Requests:
    """An async request iterator the test feeds (``None`` half-closes)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[int | None] = asyncio.Queue()
        self.taken = 0

    def __aiter__(self) -> Requests:
        return self

    async def __anext__(self) -> int:
        item = await self.queue.get()
        if item is None:
            raise StopAsyncIteration
        self.taken += 1
        return item


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_block_keeps_at_most_window_in_flight_and_answers_in_order() -> None:
    async def main() -> list[bytes]:
        core, adapter, requests, context = _core(), Adapter(window=2), Requests(), FakeContext()
        out: list[bytes] = []

        async def consume() -> None:
            async for wire in core.serve(adapter, requests, context):
                out.append(wire)

        task = asyncio.create_task(consume())
        for item in range(4):
            requests.queue.put_nowait(item)
        await _settle()
        assert adapter.started == [0, 1]  # the window is full: 2 is read and held, 3 waits in the transport
        adapter.release(1)  # done out of order: still written after 0
        await _settle()
        assert out == [] and adapter.started == [0, 1]
        adapter.release(0)
        await _settle()
        assert out == [b"0", b"1"] and adapter.started == [0, 1, 2, 3]
        adapter.release(2, 3)
        requests.queue.put_nowait(None)
        await task
        assert context.status is None and core.active_streams == 0
        return out

    assert _run(main()) == [b"0", b"1", b"2", b"3"]


def test_drop_oldest_drops_stale_items_and_reports_them_on_the_next_answer() -> None:
    async def main() -> list[bytes]:
        core, adapter, requests, context = _core(), Adapter(window=2, policy="drop_oldest"), Requests(), FakeContext()
        out: list[bytes] = []

        async def consume() -> None:
            async for wire in core.serve(adapter, requests, context):
                out.append(wire)

        task = asyncio.create_task(consume())
        for item in range(5):  # read at once: each newer item replaces the oldest one not yet started
            requests.queue.put_nowait(item)
        await _settle()
        assert requests.taken == 5 and adapter.started == [3, 4]
        adapter.release(3)
        await _settle()
        assert out == [b"3 dropped 3:0,1,2"]
        requests.queue.put_nowait(5)  # room for one: admitted
        await _settle()
        assert adapter.started == [3, 4, 5]
        for item in (6, 7):  # 4 and 5 are being computed: never dropped; 7 replaces 6 in the pending slot
            requests.queue.put_nowait(item)
        await _settle()
        assert adapter.started == [3, 4, 5]
        adapter.release(4)
        await _settle()  # 4 answered: the pending 7 is admitted
        assert out[1:] == [b"4"] and adapter.started == [3, 4, 5, 7]
        adapter.release(5, 7)
        requests.queue.put_nowait(None)
        await task
        return out

    assert _run(main()) == [b"3 dropped 3:0,1,2", b"4", b"5", b"7 dropped 1:6"]


def test_drain_answers_what_was_admitted_refuses_the_held_item_and_ends_unavailable() -> None:
    async def main() -> tuple[list[bytes], FakeContext]:
        core, adapter, requests, context = _core(), Adapter(window=1), Requests(), FakeContext()
        out: list[bytes] = []

        async def consume() -> None:
            with pytest.raises(Aborted):
                async for wire in core.serve(adapter, requests, context):
                    out.append(wire)

        task = asyncio.create_task(consume())
        requests.queue.put_nowait(0)
        requests.queue.put_nowait(1)  # read, held: the window of 1 is full
        await _settle()
        core.begin_drain()
        await _settle()
        assert not core.ready
        adapter.release(0)
        await task
        return out, context

    out, context = _run(main())
    assert out == [b"0", b"refused 1"]
    assert context.status is not None and context.status[0] == grpc.StatusCode.UNAVAILABLE
    assert "draining" in context.status[1]


def test_a_bad_first_message_ends_the_stream_with_its_status() -> None:
    async def main() -> FakeContext:
        core, adapter, requests, context = _core(), Adapter(), Requests(), FakeContext()
        requests.queue.put_nowait(-1)
        with pytest.raises(Aborted):
            async for _ in core.serve(adapter, requests, context):
                pass
        return context

    context = _run(main())
    assert context.status == (grpc.StatusCode.INVALID_ARGUMENT, "settings: window must be >= 1")


def test_admission_refuses_streams_beyond_max_streams_and_while_warming_up() -> None:
    async def main() -> list[tuple[grpc.StatusCode, str] | None]:
        core = _core(max_streams=1)
        first, second = Requests(), Requests()
        holder = asyncio.create_task(_drain(core.serve(Adapter(), first, FakeContext())))
        await _settle()
        refused = FakeContext()
        with pytest.raises(Aborted):
            await _drain(core.serve(Adapter(), second, refused))
        first.queue.put_nowait(None)
        await holder
        core.set_ready(False)
        cold = FakeContext()
        with pytest.raises(Aborted):
            await _drain(core.serve(Adapter(), Requests(), cold))
        return [refused.status, cold.status]

    too_many, warming = _run(main())
    assert too_many is not None and too_many[0] == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_streams=1" in too_many[1]
    assert warming is not None and warming[0] == grpc.StatusCode.UNAVAILABLE and "warming up" in warming[1]


async def _drain(responses: AsyncIterator[bytes]) -> list[bytes]:
    return [wire async for wire in responses]
