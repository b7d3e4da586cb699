"""deploy/monitoring: the Grafana dashboard and Prometheus rules, proven against a real Prometheus.

The integration test starts Debian's ``prometheus`` on loopback (scraping every second) against an
in-process ``pvae-serve`` that ``pvae-bench`` loads, waits until Prometheus has scraped and evaluated
its rules past the end of the load, then evaluates every PromQL expression of the dashboard and the
rules through the HTTP API and asserts each returns data. That Prometheus's frames/s agrees with the
client's is a throughput comparison: it is marked ``bench`` (``make bench-tests``). Both skip when
``prometheus`` is not installed (``scripts/setup.sh`` installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import serve_config, wait_for

from pvae.bench.load import BenchConfig, run_bench
from pvae.cli import free_port
from pvae.serving.engine import Engine
from pvae.serving.inprocess import InProcessServer
from pvae.v1 import pvae_pb2 as pb
from pvae.v1 import pvae_pb2_grpc as pb_grpc

MONITORING = Path(__file__).resolve().parents[1] / "deploy" / "monitoring"
DASHBOARD = MONITORING / "pvae-dashboard.json"
RULES = MONITORING / "pvae-rules.yml"
SCRAPE_CONFIG = MONITORING / "prometheus.yml"
#: Frame size of the load (height, width): 3 x 4 patches of the tiny model, fast on a shared CPU.
HEIGHT, WIDTH = 48, 64
#: Seconds of load; long enough for 1 m-window rules to see many 1 s scrapes, short enough for CI.
LOAD_S = 12.0
#: What Grafana's $__rate_interval stands for here (>= 4 scrapes at 1 s, as Grafana picks it).
RATE_INTERVAL = "15s"
#: Grafana variables and what they become in a plain query.
GRAFANA_VARIABLES = {"$__rate_interval": RATE_INTERVAL, "$__interval": "5s", "$job": ".*", "$instance": ".*"}
#: Prometheus frames/s and the client's must agree within this fraction.
RATE_TOLERANCE = 0.20
#: Seconds to wait for Prometheus to be ready / to have scraped or evaluated something.
WAIT_S = 30.0
#: Alerts that must stay quiet under this load whatever the machine's speed (the latency alert
#: depends on how loaded the CI host is, so it is only evaluated).
HEALTHY_INACTIVE = ("PvaeErrorRatioHigh", "PvaeFramesDropped", "PvaeNotServing")
#: Rows the dashboard must have, in order.
ROWS = ("Rate", "Errors", "Latency", "Saturation", "Per-stage breakdown", "Throughput")


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the panels, plus the metric of each ``label_values(...)`` variable."""
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"]["query"])
        assert match, f"variable {variable['name']}: expected label_values(metric, label)"
        queries.append(match.group(1))
    return queries


def substitute(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced by plain values (longest names first)."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, f"unsubstituted Grafana variable in {expr}"
    return expr


# ----------------------------------------------------------------------------- static checks


def test_dashboard_imports_with_a_datasource_input_and_stable_uid() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "pvae-serve"
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert tuple(p["title"] for p in dashboard["panels"] if p["type"] == "row") == ROWS
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"], panel["title"]
    queries = dashboard_queries(dashboard)
    for metric in ("pvae_frames_total", "pvae_patches_total", "pvae_errors_total", "pvae_queue_depth_frames",
                   "pvae_active_streams", "pvae_batch_size_frames", "pvae_dropped_frames_total",
                   "pvae_stage_duration_seconds_bucket"):
        assert any(metric in q for q in queries), f"no panel shows {metric}"
    for quantile in ("0.5", "0.9", "0.99"):
        assert any(f"histogram_quantile({quantile}," in q and "end_to_end" in q for q in queries)


# ----------------------------------------------------------------------------- against a real Prometheus

prometheus_binary = shutil.which("prometheus")
promtool_binary = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(prometheus_binary is None or promtool_binary is None,
                                      reason="prometheus/promtool not installed (scripts/setup.sh installs them)")


class PrometheusAPI:
    """The bits of Prometheus's HTTP API the test uses."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self.get("/api/v1/query", **params)
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])

    def last_scrape(self) -> float:
        """When Prometheus last scraped pvae-serve (Unix seconds; 0 before the first scrape)."""
        scraped = self.query('timestamp(up{job="pvae"})')
        return float(scraped[0]["value"][1]) if scraped else 0.0

    def last_rule_evaluation(self) -> float:
        """When the rule group evaluated least recently last did so (Unix seconds; 0 before any)."""
        groups = self.get("/api/v1/rules")["groups"]
        times = [datetime.fromisoformat(group["lastEvaluation"]).timestamp() for group in groups]
        return min(times, default=0.0)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False


def _wait(condition: Any, what: str) -> None:
    wait_for(condition, what, timeout=WAIT_S, poll=0.25)


@pytest.fixture()
def serving(engine: Engine) -> Iterator[InProcessServer]:
    """A fresh server per test: the queries must see only that test's traffic."""
    config = serve_config(metrics_port=0, warmup_sizes=((HEIGHT, WIDTH),))
    with InProcessServer(config, engine=engine, auth_tokens=()) as running:
        yield running


@pytest.fixture()
def prometheus(serving: InProcessServer, tmp_path: Path) -> Iterator[PrometheusAPI]:
    """Debian's prometheus on a free loopback port, scraping ``serving`` every second with the shipped
    scrape config and rules (only the target and the intervals changed)."""
    assert prometheus_binary is not None and serving.running is not None
    text = SCRAPE_CONFIG.read_text()
    text = re.sub(r"(scrape_interval|evaluation_interval): \S+", r"\1: 1s", text)
    text = text.replace("127.0.0.1:9464", f"127.0.0.1:{serving.running.metrics_port}")
    text = text.replace("- pvae-rules.yml", f"- {RULES}")
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [prometheus_binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT)
    api = PrometheusAPI(port)
    try:
        _wait(lambda: api.ready() or process.poll() is not None, "prometheus /-/ready")
        assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
        yield api
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@needs_prometheus
def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    assert promtool_binary is not None
    for command in (["check", "rules", str(RULES)], ["check", "config", str(SCRAPE_CONFIG)]):
        result = subprocess.run([promtool_binary, *command], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def _load(serving: InProcessServer, prometheus: PrometheusAPI) -> tuple[float, float]:
    """One bad frame, then ``pvae-bench``'s stream load for LOAD_S seconds; returns (the client's
    frames/s, when the load ended) once Prometheus has scraped pvae-serve and evaluated every rule
    group at least a second after the load (two scrapes and evaluations at the 1 s intervals)."""
    assert serving.running is not None
    _wait(lambda: prometheus.query('up{job="pvae"} == 1') != [], "the first scrape of pvae-serve")
    # One bad frame, so that pvae_errors_total has a series (it has none until a first error).
    with grpc.insecure_channel(serving.address) as channel, pytest.raises(grpc.RpcError) as error:
        pb_grpc.EncoderStub(channel).Encode(pb.EncodeRequest(frame=pb.Frame(encoded=b"not an image")))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    metrics_url = f"http://127.0.0.1:{serving.running.metrics_port}/metrics"
    config = BenchConfig(server=serving.address, metrics_url=metrics_url, mode="stream", concurrency=(2,),
                         size=(HEIGHT, WIDTH), duration_s=LOAD_S, warmup=1, baseline=False)
    figures = run_bench(config)
    ended = time.time()
    client_fps = figures["levels"][0]["fps"]
    assert figures["levels"][0]["errors"] == 0 and client_fps > 0
    settled = ended + 1.0
    _wait(lambda: prometheus.last_scrape() >= settled and prometheus.last_rule_evaluation() >= settled,
          "a scrape and a rule evaluation after the load")
    return client_fps, ended


@needs_prometheus
@pytest.mark.bench
def test_prometheus_frame_rate_agrees_with_the_client(serving: InProcessServer, prometheus: PrometheusAPI) -> None:
    """A throughput comparison (``bench``): on a loaded machine the two clocks see different seconds."""
    client_fps, ended = _load(serving, prometheus)
    # Prometheus's frames/s, as the dashboard computes it, over the load minus a second at either end.
    window = int(LOAD_S - 2)
    prom_fps = float(prometheus.query(f'sum(rate(pvae_frames_total{{job="pvae"}}[{window}s]))',
                                      at=ended - 1.0)[0]["value"][1])
    assert prom_fps == pytest.approx(client_fps, rel=RATE_TOLERANCE)


@needs_prometheus
def test_every_query_returns_data_from_a_real_prometheus(serving: InProcessServer,
                                                         prometheus: PrometheusAPI) -> None:
    _load(serving, prometheus)

    # Every rule is loaded and healthy; recording rules and each alert's signal return data.
    groups = prometheus.get("/api/v1/rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == len(re.findall(r"^\s+- (record|alert):", RULES.read_text(), re.MULTILINE))
    queries = {}
    for rule in rules:
        assert rule["health"] == "ok", rule
        if rule["type"] == "recording":
            queries[f"record {rule['name']}"] = rule["query"]
            queries[f"recorded {rule['name']}"] = rule["name"]  # the series the rule wrote
        else:
            signal = re.fullmatch(r"(.+?)\s*(>|<|>=|<=|==|!=)\s*[-+0-9.e]+", rule["query"])
            assert signal, f"alert {rule['name']}: expected `signal OP threshold`, got {rule['query']}"
            queries[f"alert {rule['name']} signal"] = signal.group(1)
            prometheus.query(rule["query"])  # evaluates (empty while healthy)
            if rule["name"] in HEALTHY_INACTIVE:
                assert rule["state"] == "inactive", f"{rule['name']} fires during a healthy load"
    for i, expr in enumerate(dashboard_queries(_dashboard())):
        queries[f"dashboard {i}"] = substitute(expr)
    empty = {name: expr for name, expr in queries.items() if not prometheus.query(expr)}
    assert not empty, f"queries without data: {json.dumps(empty, indent=1)}"
    # The error series carries its code, as the errors-by-code panel shows it.
    codes = prometheus.query('sum by (code) (pvae_errors_total{job="pvae"})')
    assert {series["metric"]["code"] for series in codes} == {"INVALID_ARGUMENT"}
