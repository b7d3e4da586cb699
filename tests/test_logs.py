"""The server log's rate limit (pvae.serving.logs): no client can flood the log by repeating a bad request.

Unit tests drive the limiter with a fake clock; the native-stderr forwarder runs for real (a pipe and
a subprocess). tests/test_faults.py hammers a real ``pvae-serve`` with bad requests and measures its log.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys

import pytest

from pvae.serving.logs import (
    MAX_KINDS,
    RateLimiter,
    forward,
    native_stderr_limited,
    rate_limited_handlers,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_limiter_lets_a_burst_through_then_counts_and_reports() -> None:
    clock = Clock()
    limiter = RateLimiter(burst=3, interval_s=60.0, clock=clock)
    decisions = [limiter.admit("bad jpeg", "Corrupt JPEG data") for _ in range(10)]
    assert [passed for passed, _ in decisions] == [True] * 3 + [False] * 7
    notices = [n for _, ns in decisions for n in ns]
    assert notices == ["more than 3 messages like 'Corrupt JPEG data' in 60 s: suppressing them for the rest of "
                       "the interval"]  # once, when suppression starts
    assert limiter.admit("other", "another kind")[0]  # kinds are counted apart
    clock.now = 60.0  # the interval is over: its count is reported before the next message
    passed, notices = limiter.admit("bad jpeg", "Corrupt JPEG data")
    assert passed and notices == ["suppressed 7 more messages like 'Corrupt JPEG data' in 60 s"]
    assert limiter.flush() == []  # nothing suppressed in the new interval
    for _ in range(5):
        limiter.admit("bad jpeg", "Corrupt JPEG data")
    assert limiter.flush() == ["suppressed 2 more messages like 'Corrupt JPEG data' in 60 s"]


def test_messages_of_ever_new_kinds_are_bounded_too() -> None:
    """A message that differs every time (an f-string) is a new kind every time: past MAX_KINDS kinds
    they share one overflow kind, so the total stays bounded."""
    limiter = RateLimiter(burst=2, interval_s=60.0, clock=Clock())
    passed = sum(limiter.admit(f"kind {i}", f"message {i}")[0] for i in range(10 * MAX_KINDS))
    assert passed == MAX_KINDS + 2  # one each for the tracked kinds, then the overflow kind's burst


def test_the_filter_limits_python_log_records_per_template(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("pvae.test.flood")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with rate_limited_handlers([handler], burst=5, interval_s=60.0) as limit:
            limit.limiter._clock = clock
            notices = logging.getLogger("pvae.serving.logs")
            notices.addHandler(handler)
            try:
                for i in range(100):
                    try:
                        raise ValueError(f"frame {i} is corrupt")
                    except ValueError:
                        logger.exception("request %d failed", i)  # one template, whatever i is
                logger.warning("port %d busy", 1)  # another template: its own budget
                clock.now = 61.0
                logger.error("request %d failed", 100)
            finally:
                notices.removeHandler(handler)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert len(re.findall(r"^request \d+ failed$", text, re.MULTILINE)) == 6  # 5, then 1 in the next interval
    assert text.count("Traceback") == 5  # each record keeps its traceback
    assert "port 1 busy" in text
    assert text.count("suppressing them for the rest of the interval") == 1
    assert "suppressed 95 more messages like 'pvae.test.flood: request %d failed' in 60 s" in text
    assert text.index("suppressed 95") < text.index("request 100 failed")


def test_the_forwarder_limits_native_lines_by_kind_up_to_their_digits() -> None:
    read_end, write_end = os.pipe()
    lines = [f"Corrupt JPEG data: {n} extraneous bytes before marker 0xd9\n" for n in range(100, 140)]
    lines += ["libpng error: IDAT: incorrect data check\n"] * 3 + ["x" * 20_000]  # a last line with no newline
    os.write(write_end, "".join(lines).encode())
    os.close(write_end)
    sink = io.BytesIO()
    with os.fdopen(read_end, "rb") as source:
        forward(source, sink, burst=4, interval_s=3600.0)
    out = sink.getvalue().decode().splitlines()
    assert [line for line in out if line.startswith("Corrupt")] == [line.rstrip() for line in lines[:4]]
    assert out.count("libpng error: IDAT: incorrect data check") == 3
    assert ("pvae-serve: native stderr: suppressed 36 more messages like 'Corrupt JPEG data: 100 extraneous bytes "
            "before marker 0xd9' in 3600 s") in out
    assert out[-2].endswith("x [cut]") and len(out[-2]) < 10_000  # a line without end is cut, not held forever


def test_native_stderr_goes_through_the_forwarder_and_python_output_does_not(capfd: pytest.CaptureFixture[str]) -> None:
    with native_stderr_limited(burst=2, interval_s=3600.0):
        for n in range(30):
            os.write(2, f"Corrupt JPEG data: {n} extraneous bytes\n".encode())  # as libjpeg writes: below Python
        for n in range(3):
            print(f"python line {n}", file=sys.stderr)
    os.write(2, b"after\n")  # descriptor 2 is the real stderr again
    err = capfd.readouterr().err
    assert err.count("Corrupt JPEG data") == 2 + 2  # two lines, and the two notices that quote the first
    assert "suppressed 28 more messages like 'Corrupt JPEG data: 0 extraneous bytes'" in err
    assert all(f"python line {n}" in err for n in range(3)) and err.rstrip().endswith("after")
