"""Faults the service must survive and recover from without a restart (pvae.bench.reliability).

In-process: clients that disconnect, stall, cancel or run out of time; an inference error on one
batch; a malformed message mid-stream. Subprocess ``pvae-serve``: SIGTERM with streams in flight
(drain, health flip, exit 0 within the grace) and a corrupt bundle at start (clear error, exit 2).
Each scenario ends with a recovery check: the server is idle again and serves a fresh stream.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from pvae.bench.reliability import (
    FaultOutcome,
    corrupt_bundle_at_start,
    fault_scenarios,
    log_flood,
    port_conflicts,
    reliability_config,
    serves_normally,
    sigterm_with_streams_in_flight,
)
from pvae.bundle import Bundle
from pvae.serving.engine import Engine
from pvae.serving.inprocess import InProcessServer

#: Drain grace of the SIGTERM scenario, seconds (short: the test waits for it at most).
SIGTERM_GRACE_S = 3.0


#: The module's server (conftest): the reliability harness's, with a window cap of 8.
SERVER_CONFIG = reliability_config(max_window=8)


@pytest.mark.parametrize("scenario", fault_scenarios, ids=[s.__name__ for s in fault_scenarios])
def test_in_process_faults_are_survived(scenario: Callable[[InProcessServer, grpc.Channel], FaultOutcome],
                                        server: InProcessServer, channel: grpc.Channel) -> None:
    outcome = scenario(server, channel)
    assert outcome.survived, f"{outcome.name}: {outcome.detail}"


def test_the_server_outlives_every_fault_without_a_restart(server: InProcessServer, channel: grpc.Channel) -> None:
    # the module's server took every fault above; it still answers
    assert serves_normally(channel, frames=8)
    assert server.registry.get_sample_value("pvae_ready") == 1.0


def test_inference_fault_fails_only_its_batch(server: InProcessServer, channel: grpc.Channel) -> None:
    """The scenario's own check must bite: no injected failure means no pass."""
    from pvae.bench.reliability import fault_inference_error

    outcome = fault_inference_error(server, channel)
    assert outcome.survived and "failed in-band" in outcome.detail
    labels = {"protocol": "pvae.v1", "rpc": "StreamEncode", "code": "INTERNAL"}
    errors = server.registry.get_sample_value("pvae_errors_total", labels)
    assert errors is not None and errors >= 1


def test_sigterm_with_streams_in_flight_drains_and_exits_zero(tiny_bundle: Bundle) -> None:
    outcome = sigterm_with_streams_in_flight(tiny_bundle.root, streams=4, grace_s=SIGTERM_GRACE_S)
    assert outcome.survived, outcome.detail


def test_corrupt_bundle_at_start_is_a_clear_error_and_exit_2(tiny_bundle: Bundle) -> None:
    outcome = corrupt_bundle_at_start(tiny_bundle.root)
    assert outcome.survived, outcome.detail
    assert "checksum mismatch for frame.onnx" in outcome.detail


def test_a_second_server_on_either_busy_port_is_refused_in_one_line(tiny_bundle: Bundle, engine: Engine) -> None:
    """The reliability report's port-conflict checks, against a running server."""
    config = reliability_config(metrics_port=0)
    with InProcessServer(config, engine=engine, auth_tokens=()) as first:
        assert first.running is not None and first.running.metrics_port is not None
        outcomes = port_conflicts(tiny_bundle.root, first.port, first.running.metrics_port)
        with grpc.insecure_channel(first.address) as channel:
            assert serves_normally(channel)  # the first server is untouched
    assert [o.name for o in outcomes] == ["second server on a busy gRPC port", "second server on a busy metrics port"]
    for outcome in outcomes:
        assert outcome.survived, outcome.detail
        assert outcome.detail.startswith("exit 2: pvae-serve: error: ")


def test_bad_requests_cannot_flood_the_server_log(tiny_bundle: Bundle) -> None:
    """The reliability report's log-flood checks on a small count: a real pvae-serve hammered with
    unimplemented RPCs and with the hostile corpus. Corrupt JPEG/PNG frames make libjpeg, libpng and
    OpenCV write a line each to stderr; the rate limit lets 5 of a kind through per interval (an hour
    here, so the count does not depend on the machine's speed). The control run, limit off, shows
    the flood the limit stops."""
    unimplemented = log_flood(tiny_bundle.root, "unimplemented RPCs", 120, log_interval_s=3600.0)
    assert unimplemented.codes == {"UNIMPLEMENTED": 120}
    assert unimplemented.log_bytes == 0, unimplemented.excerpt
    unlimited = log_flood(tiny_bundle.root, "malformed requests", 300, log_burst=0)
    assert unlimited.most_repeated > 10, unlimited.excerpt  # the corpus does make the native libraries talk
    limited = log_flood(tiny_bundle.root, "malformed requests", 300, log_interval_s=3600.0)
    assert limited.codes == unlimited.codes
    assert limited.bounded and limited.most_repeated <= 5 == limited.allowed, limited.excerpt
    assert limited.log_lines < unlimited.log_lines
    assert "pvae-serve: native stderr: more than 5 messages like" in limited.log
