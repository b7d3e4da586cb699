"""deploy/: the Kubernetes manifests render offline, validate, and agree with pvae-serve's flags.

Every object that ``kubectl kustomize`` renders (base and the gpu overlay) is validated against the
Kubernetes JSON schemas bundled with ``kubernetes-validate``. The custom resources (ServiceMonitor,
PrometheusRule, KServe InferenceService) have no schema there, so they are checked structurally here:
apiVersion/kind, required fields, and what they must agree with.

The PrometheusRule and the dashboard ConfigMap are built from generated copies of deploy/monitoring/
(kustomize loads nothing outside its root); regenerate them with ``python tests/test_deploy.py --sync``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML: a dependency of kubernetes-validate (dev extra)

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "k8s" / "base"
GPU = DEPLOY / "k8s" / "overlays" / "gpu"
RULES_SRC = DEPLOY / "monitoring" / "pvae-rules.yml"
DASHBOARD_SRC = DEPLOY / "monitoring" / "pvae-dashboard.json"
RULES_COPY = BASE / "prometheusrule.yaml"
DASHBOARD_COPY = BASE / "pvae-dashboard.json"
KSERVE = DEPLOY / "kserve" / "inferenceservice.yaml"
DOCKERFILES = {"cpu": DEPLOY / "docker" / "Dockerfile.cpu", "cuda": DEPLOY / "docker" / "Dockerfile.cuda"}
#: Kubernetes version whose schemas the core objects are validated against.
K8S_VERSION = "1.32.0"


# ---------------------------------------------------------------------------------------------- helpers
def prometheus_rule_text() -> str:
    """The PrometheusRule manifest that wraps deploy/monitoring/pvae-rules.yml (its groups, verbatim)."""
    groups = yaml.safe_load(RULES_SRC.read_text())["groups"]
    obj = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
           "metadata": {"name": "pvae", "labels": {"prometheus": "k8s", "role": "alert-rules"}},
           "spec": {"groups": groups}}

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    header = ("# GENERATED from deploy/monitoring/pvae-rules.yml by `python tests/test_deploy.py --sync`;\n"
              "# do not edit (tests/test_deploy.py fails when it drifts from the source).\n")
    return header + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=200)


def sync() -> None:
    """Rewrite the generated copies under deploy/k8s/base from deploy/monitoring."""
    RULES_COPY.write_text(prometheus_rule_text())
    shutil.copyfile(DASHBOARD_SRC, DASHBOARD_COPY)


def kubectl_with_kustomize_v5() -> str:
    """kubectl, if it embeds kustomize v5+ (``labels:`` and ``patches:`` need it); else skip."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed, so the manifests cannot be rendered here")
    proc = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, timeout=30)
    match = re.search(r"Kustomize Version: v(\d+)", proc.stdout)
    if match is None or int(match.group(1)) < 5:
        pytest.skip(f"{kubectl} embeds no kustomize v5+ (Debian bookworm's kubernetes-client 1.20 has v2)")
    return kubectl


def kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = kubectl_with_kustomize_v5()
    proc = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def flag_values(args: list[str]) -> dict[str, str]:
    """``["--port=1", "--gpu", "0"]`` -> ``{"--port": "1", "--gpu": "0"}`` (a bare flag maps to "")."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        assert a.startswith("--"), f"unexpected positional argument {a!r} in {args}"
        if "=" in a:
            k, v = a.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            k, v = a, args[i + 1]
            i += 1
        else:
            k, v = a, ""
        out[k] = v
        i += 1
    return out


def serve_flags() -> set[str]:
    from pvae.serving.server import build_parser

    return {s for a in build_parser()._actions for s in a.option_strings}


def check_serve_args(args: list[str]) -> dict[str, str]:
    """Every flag is a pvae-serve flag, and the whole list parses into a valid ServeConfig."""
    from pvae.serving.server import config_from_args

    flags = flag_values(args)
    unknown = set(flags) - serve_flags()
    assert not unknown, f"flags not in pvae-serve --help: {sorted(unknown)}"
    config_from_args(args)  # raises on a bad value
    return flags


def dockerfile_exec(path: Path, instruction: str) -> list[str]:
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith(instruction + " ")]
    assert len(lines) == 1, f"{path.name}: expected one {instruction}"
    return json.loads(lines[0][len(instruction) + 1:])


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = by_kind(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomize(BASE)


@pytest.fixture(scope="module")
def gpu() -> list[dict[str, Any]]:
    return kustomize(GPU)


@pytest.fixture(scope="module", params=["base", "gpu"])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return request.getfixturevalue(request.param)


# ---------------------------------------------------------------------------------------------- tests
CORE_KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"}
CRD_KINDS = {"ServiceMonitor": "monitoring.coreos.com/v1", "PrometheusRule": "monitoring.coreos.com/v1"}


def test_renders_every_kind(rendered: list[dict[str, Any]]) -> None:
    assert sorted(o["kind"] for o in rendered) == sorted(CORE_KINDS | set(CRD_KINDS))
    for o in rendered:
        assert o["metadata"]["labels"]["app.kubernetes.io/name"] == "pvae"


def test_core_objects_validate_against_kubernetes_schemas(rendered: list[dict[str, Any]]) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (in the dev extra)")
    for o in rendered:
        if o["kind"] in CORE_KINDS:
            kv.validate(o, K8S_VERSION, strict=True)  # raises ValidationError on a schema violation


def test_custom_resources_are_well_formed(rendered: list[dict[str, Any]]) -> None:
    """No schema for CRDs in kubernetes-validate: check apiVersion, kind and required fields here."""
    for kind, api in CRD_KINDS.items():
        obj = by_kind(rendered, kind)
        assert obj["apiVersion"] == api
        assert obj["metadata"]["name"]
    sm = by_kind(rendered, "ServiceMonitor")["spec"]
    assert sm["selector"]["matchLabels"] and sm["endpoints"]
    for ep in sm["endpoints"]:
        assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert ep["path"] == "/metrics"
    for group in by_kind(rendered, "PrometheusRule")["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert ("record" in rule) != ("alert" in rule) and rule["expr"]


def test_probes_and_ports_match_the_server_flags(rendered: list[dict[str, Any]]) -> None:
    c = container(rendered)
    flags = check_serve_args(c["args"])
    port, metrics_port = int(flags["--port"]), int(flags["--metrics-port"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": port, "metrics": metrics_port}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["grpc"]["port"] == port, probe  # native gRPC probe on grpc.health.v1
    assert c["readinessProbe"]["grpc"]["service"] == "pvae.v1.Encoder"
    assert c["resources"]["requests"] and c["resources"]["limits"]
    # The metrics port is scraped by name, through the Service, by the ServiceMonitor.
    svc = by_kind(rendered, "Service")
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert svc_ports["grpc"]["port"] == port and svc_ports["grpc"]["targetPort"] == "grpc"
    assert svc_ports["metrics"]["port"] == metrics_port and svc_ports["metrics"]["targetPort"] == "metrics"
    sm = by_kind(rendered, "ServiceMonitor")["spec"]
    assert [ep["port"] for ep in sm["endpoints"]] == ["metrics"]
    assert sm["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()


def test_grace_period_exceeds_drain_grace(rendered: list[dict[str, Any]]) -> None:
    pod = by_kind(rendered, "Deployment")["spec"]["template"]["spec"]
    drain = float(flag_values(container(rendered)["args"])["--drain-grace-s"])
    assert pod["terminationGracePeriodSeconds"] > drain


def test_headless_service_hpa_and_pdb_select_the_pods(rendered: list[dict[str, Any]]) -> None:
    dep = by_kind(rendered, "Deployment")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    svc = by_kind(rendered, "Service")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert by_kind(rendered, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    target = by_kind(rendered, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", dep["metadata"]["name"])


def test_generated_copies_match_deploy_monitoring() -> None:
    hint = "run `python tests/test_deploy.py --sync`"
    assert RULES_COPY.read_text() == prometheus_rule_text(), f"{RULES_COPY} is stale: {hint}"
    assert DASHBOARD_COPY.read_bytes() == DASHBOARD_SRC.read_bytes(), f"{DASHBOARD_COPY} is stale: {hint}"


def test_rules_and_dashboard_come_from_deploy_monitoring(rendered: list[dict[str, Any]]) -> None:
    rule = by_kind(rendered, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES_SRC.read_text())
    cm = by_kind(rendered, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["pvae-dashboard.json"]) == json.loads(DASHBOARD_SRC.read_text())
    # The rules select job="pvae"; the Prometheus Operator names the job after the Service.
    assert 'job="pvae"' in RULES_SRC.read_text() and by_kind(rendered, "Service")["metadata"]["name"] == "pvae"


def test_gpu_overlay(base: list[dict[str, Any]], gpu: list[dict[str, Any]]) -> None:
    c = container(gpu)
    assert flag_values(c["args"])["--gpu"] == "0"
    assert "--device" not in flag_values(c["args"])
    for section in ("requests", "limits"):
        assert str(c["resources"][section]["nvidia.com/gpu"]) == "1"
    assert c["image"].endswith(":cuda") and container(base)["image"].endswith(":cpu")
    assert "nvidia.com/gpu" not in container(base)["resources"]["limits"]


def test_kserve_inferenceservice() -> None:
    """KServe's CRD is not in the core schemas: structural checks, and the predictor's core parts."""
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (in the dev extra)")
    isvc = yaml.safe_load(KSERVE.read_text())
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert isvc["metadata"]["name"]
    predictor = isvc["spec"]["predictor"]
    (c,) = predictor["containers"]
    assert c["name"] == "kserve-container" and c["image"]
    flags = check_serve_args(c["args"])
    port = int(flags["--port"])
    # A custom predictor serving gRPC (OIP) declares one h2c port: the server's gRPC port.
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [("h2c", port)]
    assert c["readinessProbe"]["grpc"]["port"] == port and c["livenessProbe"]["grpc"]["port"] == port
    # KServe speaks the Open Inference Protocol: readiness is that service's health entry.
    from pvae.serving.server import HEALTH_SERVICES

    assert c["readinessProbe"]["grpc"]["service"] == "inference.GRPCInferenceService" in HEALTH_SERVICES
    # The container is a core Container: validate it inside a Pod with the Kubernetes schema.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "isvc-predictor"}, "spec": {"containers": [c]}}
    kv.validate(pod, K8S_VERSION, strict=True)


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_entrypoint_flags_exist(flavour: str) -> None:
    path = DOCKERFILES[flavour]
    text = path.read_text()
    entrypoint, cmd = dockerfile_exec(path, "ENTRYPOINT"), dockerfile_exec(path, "CMD")
    assert entrypoint[:3] == ["pvae-serve", "--host", "0.0.0.0"]
    check_serve_args(entrypoint[1:] + cmd)
    assert text.count("FROM ") >= 2, "multi-stage"
    assert "USER 10001" in text, "non-root"
    assert "default_bundle" in text, "the default model ships in the image"
    # The build copies every folder that pyproject.toml maps to a package (pip install fails without one).
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    folders = {Path(folder).parts[0] for folder in package_dirs.values()}
    assert {"pvae", "training", "export", "serving", "clients", "protos"} <= folders
    for folder in sorted(folders):
        assert f"COPY {folder} ./{folder}" in text, folder
    # setup.py builds the native sampler: without it (or without gcc) pip skips the extension silently and the
    # image samples with the slower graph.
    assert "setup.py" in text and "gcc" in text, "the build stage must build pvae/native/poisson.c"


if __name__ == "__main__":
    if sys.argv[1:] == ["--sync"]:
        sync()
        print(f"wrote {RULES_COPY.relative_to(ROOT)} and {DASHBOARD_COPY.relative_to(ROOT)}")
    else:
        sys.exit("usage: python tests/test_deploy.py --sync")
