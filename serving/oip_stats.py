"""What ModelStatistics reports: Triton's per-model counts and durations, one execution per request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pvae.inference import grpc_service_pb2 as oip
from pvae.serving.oip_models import MODEL_VERSION

__all__ = ["DurationStat", "ModelStats"]

@dataclass
class DurationStat:
    """A count and a total duration, as Triton's StatisticDuration reports them."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += int(seconds * 1e9)

    def message(self) -> oip.StatisticDuration:
        return oip.StatisticDuration(count=self.count, ns=self.ns)


@dataclass
class ModelStats:
    """What ModelStatistics reports for one model (Triton's fields; one execution per request)."""

    last_inference_ms: int = 0
    inference_count: int = 0
    success: DurationStat = field(default_factory=DurationStat)
    fail: DurationStat = field(default_factory=DurationStat)
    queue: DurationStat = field(default_factory=DurationStat)
    compute_input: DurationStat = field(default_factory=DurationStat)
    compute_infer: DurationStat = field(default_factory=DurationStat)
    compute_output: DurationStat = field(default_factory=DurationStat)

    def succeeded(self, total_s: float, queue_s: float, input_s: float, infer_s: float, output_s: float) -> None:
        """One answered request and the seconds it spent in each of Triton's phases."""
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.inference_count += 1
        self.success.add(total_s)
        self.queue.add(queue_s)
        self.compute_input.add(input_s)
        self.compute_infer.add(infer_s)
        self.compute_output.add(output_s)

    def failed(self, total_s: float) -> None:
        """One request that got an error status."""
        self.fail.add(total_s)

    def message(self, name: str) -> oip.ModelStatistics:
        return oip.ModelStatistics(
            name=name, version=MODEL_VERSION, last_inference=self.last_inference_ms,
            inference_count=self.inference_count, execution_count=self.inference_count,
            inference_stats=oip.InferStatistics(
                success=self.success.message(), fail=self.fail.message(), queue=self.queue.message(),
                compute_input=self.compute_input.message(), compute_infer=self.compute_infer.message(),
                compute_output=self.compute_output.message()))
