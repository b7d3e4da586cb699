"""Transport security and access control: TLS, mutual TLS, bearer tokens, and untrusted bundles.

Certificates are made on the fly with the ``openssl`` command (a CA, a server certificate for
localhost/127.0.0.1, a client certificate, and a client certificate from a rogue CA).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import serve_config

from pvae.bundle import MANIFEST, Bundle, GraphSpec, load_bundle, sha256_file
from pvae.clients import AsyncClient, Client, RemoteError
from pvae.clients.channel import TOKEN_ENV, read_token, tls_credentials, with_token
from pvae.clients.cli import main as client_main
from pvae.errors import BundleError, ConfigError
from pvae.serving.config import ServeConfig
from pvae.serving.engine import DevicePlan, Engine
from pvae.serving.inprocess import InProcessServer
from pvae.serving.security import (
    AUTH_TOKENS_ENV,
    bearer_token,
    check_bundle_confined,
    insecure_bind_warning,
    load_tokens,
)
from pvae.serving.server import main as serve_main
from pvae.v1 import pvae_pb2 as pb
from pvae.v1 import pvae_pb2_grpc as pb_grpc

TOKEN = "s3cret-token-0123456789"
OTHER_TOKEN = "another-token-9876543210"
#: Seconds a single test call may take before it counts as hung.
CALL_TIMEOUT_S = 20.0

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


# ----------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    """PEM file paths of a throw-away public-key infrastructure."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", key, "-out", cert)
    return cert, key


def _leaf(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, csr, ext = (directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}.csr",
                           directory / f"{name}.ext")
    ext.write_text(extensions)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={name}",
             "-keyout", key, "-out", csr)
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-days", "2",
             "-out", cert, "-extfile", ext)
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = _ca(directory, "pvae-test-ca")
    rogue_ca = _ca(directory, "rogue-ca")
    server = _leaf(directory, "server", ca, "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                            "extendedKeyUsage=serverAuth\n")
    client = _leaf(directory, "client", ca, "extendedKeyUsage=clientAuth\n")
    rogue = _leaf(directory, "rogue", rogue_ca, "extendedKeyUsage=clientAuth\n")
    return Pki(ca[0], server[0], server[1], client[0], client[1], rogue[0], rogue[1])


# ----------------------------------------------------------------------------- helpers


def _frame() -> pb.Frame:
    gray = np.random.default_rng(0).integers(0, 256, (32, 48), dtype=np.uint8)
    return pb.Frame(raw=pb.RawFrame(height=32, width=48, channels=1, data=gray.tobytes()))


def _health(channel: grpc.Channel) -> int:
    return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                         timeout=CALL_TIMEOUT_S).status)


def _encode(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> pb.EncodeResponse:
    return pb_grpc.EncoderStub(channel).Encode(pb.EncodeRequest(frame=_frame()), timeout=CALL_TIMEOUT_S,
                                               metadata=metadata)


def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, engine: Engine) -> Iterator[InProcessServer]:
    config = serve_config(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), tls_ca=str(pki.ca),
                          metrics_port=0)
    with InProcessServer(config, engine=engine, auth_tokens=(TOKEN,)) as server:
        yield server


# ----------------------------------------------------------------------------- TLS


def test_tls_serves_and_refuses_plaintext(pki: Pki, engine: Engine) -> None:
    config = serve_config(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))
    with InProcessServer(config, engine=engine, auth_tokens=()) as server:
        assert server.running is not None and server.running.tls
        with grpc.secure_channel(server.address, tls_credentials(str(pki.ca))) as channel:
            assert _encode(channel).result.n_patches > 0
        with grpc.insecure_channel(server.address) as channel:
            assert _code(lambda: _encode(channel)) == grpc.StatusCode.UNAVAILABLE
        # a client that trusts another CA refuses the server
        with grpc.secure_channel(server.address, tls_credentials(str(pki.rogue_cert))) as channel:
            assert _code(lambda: _encode(channel)) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki: Pki, mtls_server: InProcessServer) -> None:
    good = tls_credentials(str(pki.ca), str(pki.client_cert), str(pki.client_key))
    with grpc.secure_channel(mtls_server.address, good) as channel:
        assert _encode(channel, (("authorization", f"Bearer {TOKEN}"),)).result.n_patches > 0
    for credentials in (tls_credentials(str(pki.ca)),  # no client certificate
                        tls_credentials(str(pki.ca), str(pki.rogue_cert), str(pki.rogue_key))):  # wrong CA
        with grpc.secure_channel(mtls_server.address, credentials) as channel:
            assert _code(lambda: _health(channel)) == grpc.StatusCode.UNAVAILABLE  # the handshake fails


# ----------------------------------------------------------------------------- bearer tokens


def test_wrong_or_missing_token_is_unauthenticated_but_health_and_metrics_answer(
        pki: Pki, mtls_server: InProcessServer) -> None:
    credentials = tls_credentials(str(pki.ca), str(pki.client_cert), str(pki.client_key))
    with grpc.secure_channel(mtls_server.address, credentials) as channel:
        stub = pb_grpc.EncoderStub(channel)
        for metadata in ((), (("authorization", f"Bearer {OTHER_TOKEN}"),), (("authorization", TOKEN),),
                         (("authorization", "Bearer "),)):
            assert _code(lambda m=metadata: _encode(channel, m)) == grpc.StatusCode.UNAUTHENTICATED, metadata
            assert _code(lambda m=metadata: stub.Info(pb.InfoRequest(), timeout=CALL_TIMEOUT_S, metadata=m)) \
                == grpc.StatusCode.UNAUTHENTICATED
        # streams are refused before a frame is read
        call = stub.StreamEncode(iter([pb.StreamEncodeRequest(sequence=0, frame=_frame())]), timeout=CALL_TIMEOUT_S)
        assert _code(lambda: list(call)) == grpc.StatusCode.UNAUTHENTICATED
        # health needs no token (probes), and the server is unharmed
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
        good = (("authorization", f"Bearer {TOKEN}"),)
        assert stub.Info(pb.InfoRequest(), timeout=CALL_TIMEOUT_S, metadata=good).model.n_latents > 0
    assert mtls_server.running is not None and mtls_server.running.auth is not None
    assert mtls_server.running.auth.rejected >= 9
    # the Prometheus port is plain HTTP, untouched by TLS and tokens
    url = f"http://127.0.0.1:{mtls_server.running.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=CALL_TIMEOUT_S) as response:
        assert b"pvae_frames_total" in response.read()


def test_client_library_sends_its_token(pki: Pki, mtls_server: InProcessServer) -> None:
    credentials = tls_credentials(str(pki.ca), str(pki.client_cert), str(pki.client_key))
    with Client(mtls_server.address, credentials=credentials, token=TOKEN) as client:
        assert client.info().model.n_latents > 0
        assert client.encode(np.zeros((32, 48), np.uint8)).rates is not None
    with Client(mtls_server.address, credentials=credentials, token=OTHER_TOKEN) as client, \
            pytest.raises(RemoteError) as info:
        client.info()
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_client_cli_tls_and_token_flags(pki: Pki, mtls_server: InProcessServer, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"# pvae\n{TOKEN}\n")
    base = ["info", "--server", mtls_server.address, "--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert),
            "--tls-key", str(pki.client_key), "--connect-timeout", "10", "--json"]
    assert client_main([*base, "--token-file", str(token_file)]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["n_latents"] > 0
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert client_main(base) == 0
    capsys.readouterr()
    assert client_main([*base, "--token", OTHER_TOKEN]) != 0
    assert "UNAUTHENTICATED" in capsys.readouterr().err


def test_token_sources() -> None:
    assert with_token((("x-a", "1"), ("authorization", "old")), "t") == (("x-a", "1"), ("authorization", "Bearer t"))
    assert with_token((), None) == ()
    assert read_token("abc", env={}) == "abc"
    assert read_token(None, env={TOKEN_ENV: "from-env"}) == "from-env"
    assert read_token(None, env={}) is None
    with pytest.raises(ConfigError):
        read_token("a\nb", env={})
    assert AsyncClient("127.0.0.1:1", token="t").metadata == (("authorization", "Bearer t"),)
    assert bearer_token((("authorization", "Bearer xyz"),)) == "xyz"
    assert bearer_token((("authorization", "Basic xyz"),)) is None


def test_server_token_sources(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# comment\n{TOKEN}\n\n{OTHER_TOKEN}\n")
    assert load_tokens(str(path), env={}) == (TOKEN, OTHER_TOKEN)
    assert load_tokens(None, env={AUTH_TOKENS_ENV: f"{TOKEN}, {OTHER_TOKEN} {TOKEN}"}) == (TOKEN, OTHER_TOKEN)
    assert load_tokens(None, env={}) == ()
    with pytest.raises(ConfigError, match="at least 16"):
        load_tokens(None, env={AUTH_TOKENS_ENV: "short"})
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no token"):
        load_tokens(str(empty), env={})
    with pytest.raises(ConfigError, match="auth_token_file"):
        load_tokens(str(tmp_path / "missing"), env={})


def test_tls_config_is_checked_and_missing_files_fail_clearly(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="tls_cert"):
        ServeConfig(tls_cert="a.pem")
    with pytest.raises(ConfigError, match="tls_ca"):
        ServeConfig(tls_ca="ca.pem")
    missing = str(tmp_path / "missing.pem")
    code = serve_main(["--tls-cert", missing, "--tls-key", missing, "--port", "0", "--metrics-port", "off"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("pvae-serve: error: tls_") and "missing.pem" in err, err


def test_plaintext_beyond_loopback_warns(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    assert insecure_bind_warning(serve_config(host="127.0.0.1")) is None
    assert insecure_bind_warning(serve_config(host="::1")) is None
    assert insecure_bind_warning(serve_config(host="localhost")) is None
    assert insecure_bind_warning(serve_config(host="0.0.0.0", tls_cert="c", tls_key="k")) is None
    assert "without TLS" in (insecure_bind_warning(serve_config(host="0.0.0.0")) or "")
    assert "without TLS" in (insecure_bind_warning(serve_config(host="pvae.example.org")) or "")
    with caplog.at_level(logging.WARNING, logger="pvae.serving"), \
            InProcessServer(serve_config(host="0.0.0.0"), engine=engine, auth_tokens=()):
        pass
    assert any("without TLS" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- untrusted bundles


class _Payload:
    """Pickling this runs ``touch <marker>`` when unpickled: the classic malicious pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, ...]]:
        return (os.system, (f"touch {self.marker}",))


def _copy_bundle(bundle: Bundle, directory: Path) -> Path:
    target = directory / "bundle"
    shutil.copytree(bundle.root, target)
    return target


def _sign(root: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` with fresh checksums, as an attacker who controls the bundle would."""
    manifest["files"] = {name: sha256_file((root / name).resolve()) for name in manifest["files"]}
    (root / MANIFEST).write_text(json.dumps(manifest))


def test_planted_pickles_in_a_bundle_never_run(tiny_bundle: Bundle, tmp_path: Path, engine: Engine) -> None:
    marker = tmp_path / "pwned"
    root = _copy_bundle(tiny_bundle, tmp_path)
    payload = pickle.dumps(_Payload(marker))
    manifest = json.loads((root / MANIFEST).read_text())
    # plant the pickle in place of every TorchScript file, under .pt/.pkl names, and reference them all
    for name in ("model.pt", "model.pkl"):
        (root / name).write_bytes(payload)
        manifest["files"][name] = ""
    for path in root.glob("*.ts"):
        path.write_bytes(payload)
    manifest["checkpoint"] = {"file": "model.pt"}
    manifest["torchscript"] = {**manifest["torchscript"], "pickle": {"file": "model.pkl"}}
    _sign(root, manifest)
    bundle = load_bundle(root)  # JSON and ONNX only: the planted files are never unpickled
    with InProcessServer(serve_config(), bundle=bundle, auth_tokens=()) as server, \
            grpc.insecure_channel(server.address) as channel:
        assert _encode(channel).result.n_patches > 0
    assert not marker.exists(), "a planted pickle was executed"
    # a pickle in place of an ONNX graph is refused as a corrupt graph (protobuf), never unpickled
    (root / "frame.onnx").write_bytes(payload)
    _sign(root, manifest)
    with pytest.raises(BundleError, match="ONNX Runtime cannot load"):
        Engine(load_bundle(root), DevicePlan("cpu"))
    assert not marker.exists()
    # and the server's CLI turns it into a clear error and exit code 2
    assert serve_main(["--model", str(root), "--port", "0", "--metrics-port", "off", "--device", "cpu"]) == 2
    assert not marker.exists()


@pytest.mark.parametrize("escape", ["../outside.onnx", "absolute", "sub/../../outside.onnx", "symlink.onnx"])
def test_manifest_paths_outside_the_bundle_are_refused(tiny_bundle: Bundle, tmp_path: Path, escape: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy_bundle(tiny_bundle, tmp_path)
    outside = tmp_path / "outside.onnx"
    shutil.copy(root / "sampler.onnx", outside)
    name = str(outside) if escape == "absolute" else escape
    if escape == "symlink.onnx":
        (root / escape).symlink_to(outside)
    (root / "sub").mkdir()
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["graphs"]["sampler"]["file"] = name
    manifest["files"][name] = ""
    _sign(root, manifest)
    with pytest.raises(BundleError, match="outside the bundle"):
        load_bundle(root)  # the one loader refuses it
    # A Bundle built without the loader is re-checked by serving before ONNX Runtime opens anything.
    bundle = Bundle(root=root, manifest=manifest,
                    graphs={name: GraphSpec.from_dict(spec) for name, spec in manifest["graphs"].items()})
    with pytest.raises(BundleError, match="outside the bundle"):
        check_bundle_confined(bundle)
    with pytest.raises(BundleError, match="outside the bundle"):
        InProcessServer(serve_config(), bundle=bundle, auth_tokens=()).start()
    assert serve_main(["--model", str(root), "--port", "0", "--metrics-port", "off", "--device", "cpu"]) == 2
    assert "outside the bundle" in capsys.readouterr().err


def test_open_inference_protocol_is_behind_the_same_tls_and_tokens(pki: Pki, mtls_server: InProcessServer) -> None:
    """tritonclient over mutual TLS: no token -> UNAUTHENTICATED on every OIP call; the token -> served."""
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    with triton.InferenceServerClient(mtls_server.address, ssl=True, root_certificates=str(pki.ca),
                                      private_key=str(pki.client_key),
                                      certificate_chain=str(pki.client_cert)) as client:
        with pytest.raises(InferenceServerException) as info:
            client.is_server_ready()
        assert "UNAUTHENTICATED" in str(info.value.status())
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata("pvae_rates", headers={"authorization": f"Bearer {OTHER_TOKEN}"})
        assert "UNAUTHENTICATED" in str(info.value.status())
        good = {"authorization": f"Bearer {TOKEN}"}
        assert client.is_server_ready(headers=good)
        dim = int(client.get_model_metadata("pvae_rates", headers=good).inputs[0].shape[1])
        patches = triton.InferInput("patches", [2, dim], "FP32")
        patches.set_data_from_numpy(np.zeros((2, dim), np.float32))
        assert client.infer("pvae_rates", [patches], headers=good).as_numpy("rates").shape[0] == 2
