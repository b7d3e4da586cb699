"""pvae-export: bundle contract, parity of every graph and format, frame policy, sampler, bad input.

One tiny model is trained per session (conftest ``tiny_checkpoint``) and exported once (with the
fp16 and Triton targets); most tests read that bundle. References are the training code
(``VAE.encode``/``decode``, ``preprocess_image``), never the export modules.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from scipy import stats

from pvae.bundle import load_bundle, sha256_file
from pvae.errors import BundleError, CheckpointError, ConfigError
from pvae.export import cli, exporter, verify
from pvae.export.exporter import export_bundle
from pvae.export.modules import build_paths, frame_policy
from pvae.export.onnx_export import export_graphs
from pvae.export.sampler import poisson_reference
from pvae.export.torchscript import (
    TORCHSCRIPT_WARNING,
    WarningCount,
    load_scripted,
    script_paths,
    torchscript_deprecation_silenced,
)
from pvae.export.triton import MARKER, TRITON_MODELS
from pvae.training.checkpoint import Checkpoint, build_model, load_checkpoint, save_checkpoint
from pvae.training.config import ModelConfig, TrainConfig
from pvae.training.data import PatchConfig, preprocess_image
from pvae.training.model import VAE

#: The parity gate for log-rates (fp32).
LOG_RATE_TOL = 1e-5
#: Frame preprocessing vs float64 preprocess_image (float32 convolutions in the graph).
PREPROCESS_TOL = 5e-5
#: The ONNX Runtime session options used by every test: CPU, quiet.
PROVIDERS = ["CPUExecutionProvider"]

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def export_run(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny model exported once: ONNX + TorchScript, fp16 rate path, Triton repository."""
    out = tmp_path_factory.mktemp("export")
    lines: list[str] = []
    bundle = export_bundle(
        tiny_checkpoint, out / "tiny.bundle", fp16=True, triton_dir=out / "triton-repo", progress=lines.append
    )
    return {"bundle": bundle, "progress": lines, "triton": out / "triton-repo", "checkpoint": tiny_checkpoint}


@pytest.fixture(scope="session")
def bundle_dir(export_run: dict[str, Any]) -> Path:
    return export_run["bundle"]


@pytest.fixture(scope="session")
def model_and_cfg(tiny_checkpoint: Path) -> tuple[VAE, PatchConfig]:
    ckpt = load_checkpoint(tiny_checkpoint)
    return build_model(ckpt), PatchConfig.from_dict(ckpt.data["preprocessing"])


def session(bundle: Path, name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(load_bundle(bundle).graph_path(name)), providers=PROVIDERS)


def encode(model: VAE, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        post = model.encode(torch.as_tensor(patches))
    return post.params["log_rate"].numpy(), post.params["rate"].numpy()


def decode(model: VAE, latents: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.decode(torch.as_tensor(latents)).numpy()


def natural_frames(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """(B, H, W) uint8 crops of skimage's camera."""
    from skimage import data as skdata

    image = skdata.camera()
    rng = np.random.default_rng(seed)
    batch, height, width = shape
    tops = rng.integers(0, image.shape[0] - height + 1, batch)
    lefts = rng.integers(0, image.shape[1] - width + 1, batch)
    return np.stack([image[t : t + height, s : s + width] for t, s in zip(tops, lefts, strict=True)])


def reference_preprocess(frame: np.ndarray, cfg: PatchConfig) -> np.ndarray:
    # border only limits where training patches are cut; frames are processed whole
    return preprocess_image(frame, dataclasses.replace(cfg, border=0))


def reflect_tiles(frames: np.ndarray, patch: int = 16) -> tuple[np.ndarray, int, int]:
    """The documented policy, independently: reflect-pad bottom/right, row-major 16x16 tiles."""
    batch, height, width = frames.shape
    padded = np.pad(frames, ((0, 0), (0, -height % patch), (0, -width % patch)), mode="reflect")
    rows, cols = padded.shape[1] // patch, padded.shape[2] // patch
    tiles = [
        padded[b, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch].reshape(-1)
        for b in range(batch)
        for r in range(rows)
        for c in range(cols)
    ]
    return np.stack(tiles).astype(np.float32), rows, cols


# ----------------------------------------------------------------------------- the bundle


def test_bundle_manifest_describes_itself(export_run: dict[str, Any], bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    assert m["format"] == "pvae-bundle" and m["n_latents"] == 64 and m["patch_size"] == 16
    assert m["opset"] == 18 and m["model_config"]["arch"] == "lin|lin"
    assert m["source_checkpoint"]["sha256"] == sha256_file(export_run["checkpoint"])
    assert m["preprocessing"] == load_checkpoint(export_run["checkpoint"]).data["preprocessing"]
    assert m["frame_policy"]["pad_mode"] == "reflect" and m["frame_policy"]["min_side"] == 16
    assert m["display"]["offset"] == 128.0 and m["display"]["scale"] == 32.0
    on_disk = {p.name for p in bundle_dir.iterdir()} - {"manifest.json"}
    assert set(m["files"]) == on_disk
    assert {
        "rates.onnx",
        "decoder.onnx",
        "sampler.onnx",
        "frame.onnx",
        "rates_fp16.onnx",
        "rates.ts",
        "decoder.ts",
        "frame.ts",
        "sampler.ts",
    } <= on_disk
    assert m["verification"]["passed"] and not m["verification"]["skipped"]
    frame = bundle.graphs["frame"]
    assert [(t.name, t.dtype, t.shape) for t in frame.inputs] == [("frames", "uint8", ("B", "H", "W"))]
    assert [(t.name, t.dtype) for t in frame.outputs] == [
        ("preprocessed", "float32"),
        ("log_rates", "float32"),
        ("rates", "float32"),
        ("reconstruction", "float32"),
        ("preprocessed_u8", "uint8"),
        ("reconstruction_u8", "uint8"),
    ]
    assert frame.outputs[1].shape == ("B", "R*C", 64)
    rates = bundle.graphs["rates"]
    assert [(t.name, t.dtype, t.shape) for t in rates.inputs] == [("patches", "float32", ("N", 256))]
    sampler = bundle.graphs["sampler"]
    assert [(t.name, t.dtype) for t in sampler.inputs] == [("rates", "float32"), ("seed", "int64")]
    assert [(t.name, t.dtype) for t in sampler.outputs] == [("counts", "int32")]
    # the manifest's specs are what the graphs really declare
    model = onnx.load(str(bundle.graph_path("decoder")))
    assert [i.name for i in model.graph.input] == ["latents"] and [o.name for o in model.graph.output] == ["patches"]


def test_progress_reports_numbered_steps(export_run: dict[str, Any]) -> None:
    lines = export_run["progress"]
    total = len(lines)
    assert [line.split("]")[0] for line in lines] == [f"[{i}/{total}" for i in range(1, total + 1)]
    assert any("verify" in line for line in lines) and any("Triton" in line for line in lines)


def test_checksums_cover_every_file_and_tampering_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(bundle_dir, tmp_path / "copy"))
    for name, digest in load_bundle(copy).manifest["files"].items():
        assert sha256_file(copy / name) == digest
    data = bytearray((copy / "rates.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "rates.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"checksum mismatch for rates\.onnx"):
        load_bundle(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        load_bundle(copy)


# ----------------------------------------------------------------------------- parity


@pytest.mark.parametrize("batch", [1, 7, 300])
def test_rate_path_parity_onnx_and_torchscript(
    bundle_dir: Path, model_and_cfg: tuple[VAE, PatchConfig], batch: int
) -> None:
    model, cfg = model_and_cfg
    patches = verify.sample_patches(cfg, (16, 16), n=batch, seed=batch)
    ref_log, ref_rates = encode(model, patches)
    log_rates, rates = session(bundle_dir, "rates").run(None, {"patches": patches})
    assert log_rates.shape == (batch, 64)
    assert np.abs(log_rates - ref_log).max() <= LOG_RATE_TOL
    assert np.allclose(rates, ref_rates, rtol=1e-5, atol=1e-7)
    scripted = load_scripted(bundle_dir / "rates.ts")
    ts_log, ts_rates = scripted(torch.as_tensor(patches))
    assert np.abs(ts_log.numpy() - ref_log).max() <= LOG_RATE_TOL
    assert np.allclose(ts_rates.numpy(), ref_rates, rtol=1e-5, atol=1e-7)


def test_decoder_parity_on_rates_and_counts(bundle_dir: Path, model_and_cfg: tuple[VAE, PatchConfig]) -> None:
    model, cfg = model_and_cfg
    _, rates = encode(model, verify.sample_patches(cfg, (16, 16), n=50, seed=3))
    counts = poisson_reference(rates * 20.0, seed=5).astype(np.float32)  # real integer codes
    scripted = load_scripted(bundle_dir / "decoder.ts")
    for latents in (rates, counts):
        ref = decode(model, latents)
        (onnx_out,) = session(bundle_dir, "decoder").run(None, {"latents": latents})
        assert onnx_out.shape == (50, 256)
        assert np.abs(onnx_out - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
        assert np.abs(scripted(torch.as_tensor(latents)).numpy() - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("shape", [(2, 33, 47), (1, 16, 16), (1, 48, 64), (3, 17, 31)])
def test_frame_graph_follows_the_pad_policy(
    bundle_dir: Path, model_and_cfg: tuple[VAE, PatchConfig], shape: tuple[int, int, int]
) -> None:
    model, cfg = model_and_cfg
    frames = natural_frames(shape, seed=sum(shape))
    batch, height, width = shape
    outs = session(bundle_dir, "frame").run(None, {"frames": frames})
    preprocessed, log_rates, rates, recon, pre_u8, recon_u8 = outs
    rows, cols = -(-height // 16), -(-width // 16)
    assert preprocessed.shape == recon.shape == pre_u8.shape == recon_u8.shape == (batch, height, width)
    assert log_rates.shape == rates.shape == (batch, rows * cols, 64)
    # preprocessing = the training pipeline (float64) up to float32 round-off
    reference = np.stack([reference_preprocess(f, cfg) for f in frames])
    assert np.abs(preprocessed - reference).max() <= PREPROCESS_TOL
    # tiling = reflect pad bottom/right + row-major tiles, on the graph's own preprocessed frames
    tiles, r, c = reflect_tiles(preprocessed)
    assert (r, c) == (rows, cols)
    ref_log, ref_rates = encode(model, tiles)
    assert np.abs(log_rates.reshape(-1, 64) - ref_log).max() <= LOG_RATE_TOL
    # reconstruction = decoded rates, untiled and cropped
    decoded = decode(model, ref_rates).reshape(batch, rows, cols, 16, 16).transpose(0, 1, 3, 2, 4)
    expected = decoded.reshape(batch, rows * 16, cols * 16)[:, :height, :width]
    assert np.abs(recon - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())
    # uint8 views: the manifest's display mapping of the float outputs, exactly
    assert np.array_equal(pre_u8, np.clip(np.round(32 * preprocessed) + 128, 0, 255).astype(np.uint8))
    assert np.abs(recon_u8.astype(int) - np.clip(np.round(32 * expected) + 128, 0, 255)).max() <= 1
    # TorchScript frame path: same outputs
    ts_outs = load_scripted(bundle_dir / "frame.ts")(torch.as_tensor(frames))
    assert np.abs(ts_outs[0].numpy() - reference).max() <= PREPROCESS_TOL
    assert np.abs(ts_outs[1].numpy() - log_rates).max() <= 10 * LOG_RATE_TOL


def test_frame_graph_writes_each_output_once(bundle_dir: Path) -> None:
    """The exported frame graph carries export/graph_passes.py's rewrites: the uint8 views are one
    QuantizeLinear each, no crop is two Slices in a row, and no output is a Reshape/Squeeze copy."""
    graph = onnx.load(str(bundle_dir / "frame.onnx")).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("QuantizeLinear") == 2 and "Round" not in ops
    producer = {out: node for node in graph.node for out in node.output}
    slices = [node for node in graph.node if node.op_type == "Slice"]
    assert slices and not any(producer.get(node.input[0], node).op_type == "Slice" for node in slices)
    copies = {"Reshape", "Squeeze", "Unsqueeze", "Identity"}
    assert not [value.name for value in graph.output if producer[value.name].op_type in copies]


def test_benchmark_baseline_is_the_training_preprocessing(model_and_cfg: tuple[VAE, PatchConfig]) -> None:
    """pvae-bench-export times the preprocessing graph against OpenCV doing the same work: check it is."""
    from pvae.bench.export import opencv_preprocess

    _, cfg = model_and_cfg
    frame = natural_frames((1, 48, 64), seed=4)[0]
    assert np.abs(opencv_preprocess(cfg)(frame) - reference_preprocess(frame, cfg)).max() <= PREPROCESS_TOL


def test_pad_is_reflect_not_edge_or_zero(model_and_cfg: tuple[VAE, PatchConfig], bundle_dir: Path) -> None:
    """The reference above could only fail if the pad rule mattered: make sure it does here."""
    frames = natural_frames((1, 33, 47), seed=1)
    preprocessed, log_rates = session(bundle_dir, "frame").run(["preprocessed", "log_rates"], {"frames": frames})
    model, _ = model_and_cfg
    edge = np.pad(preprocessed, ((0, 0), (0, 15), (0, 1)), mode="edge")
    edge_tiles, _, _ = reflect_tiles(edge)  # already a multiple of 16: no further padding
    edge_log, _ = encode(model, edge_tiles)
    assert np.abs(log_rates.reshape(-1, 64) - edge_log).max() > 100 * LOG_RATE_TOL


@pytest.mark.parametrize("value", [0, 77, 255])
def test_flat_frames_stay_finite(bundle_dir: Path, model_and_cfg: tuple[VAE, PatchConfig], value: int) -> None:
    """A flat (e.g. black) frame has zero local contrast and zero variance: the epsilons must survive
    export, or 0/0 gives NaN (onnxscript's optimizer once folded `+ 1e-8` away as `+ 0`)."""
    frames = np.full((2, 20, 30), value, np.uint8)
    outs = session(bundle_dir, "frame").run(None, {"frames": frames})
    assert all(np.isfinite(out).all() for out in outs[:4])
    reference = reference_preprocess(frames[0], model_and_cfg[1])  # exactly 0 in float64
    assert np.abs(outs[0] - reference).max() <= PREPROCESS_TOL


def test_vga_frame_gives_1200_patches(bundle_dir: Path) -> None:
    frames = natural_frames((1, 480, 512), seed=0)
    vga = np.concatenate([frames, frames[:, :, :128]], axis=2)  # 480 x 640
    (log_rates,) = session(bundle_dir, "frame").run(["log_rates"], {"frames": vga})
    assert log_rates.shape == (1, 1200, 64)


def test_fp16_rate_path(bundle_dir: Path, model_and_cfg: tuple[VAE, PatchConfig]) -> None:
    model, cfg = model_and_cfg
    patches = verify.sample_patches(cfg, (16, 16), n=64, seed=11)
    sess = session(bundle_dir, "rates_fp16")
    log16, rates16 = sess.run(None, {"patches": patches.astype(np.float16)})
    assert log16.dtype == rates16.dtype == np.float16
    ref_log, _ = encode(model, patches)
    assert np.abs(log16.astype(np.float32) - ref_log).max() <= verify.FP16_LOG_RATE_TOLERANCE


# ----------------------------------------------------------------------------- sampler


def test_sampler_is_reproducible_per_seed_through_the_bundle(
    bundle_dir: Path, model_and_cfg: tuple[VAE, PatchConfig]
) -> None:
    model, cfg = model_and_cfg
    _, rates = encode(model, verify.sample_patches(cfg, (16, 16), n=200, seed=4))
    rates = rates * 30.0  # enough spikes that two seeds surely differ
    sess = session(bundle_dir, "sampler")

    def draw(seed: int) -> np.ndarray:
        return sess.run(None, {"rates": rates, "seed": np.asarray(seed, np.int64)})[0]

    assert draw(7).dtype == np.int32 and draw(7).shape == rates.shape
    assert np.array_equal(draw(7), draw(7))
    assert not np.array_equal(draw(7), draw(8))
    assert np.array_equal(draw(7), poisson_reference(rates, 7))  # the documented algorithm, bit for bit
    scripted = load_scripted(bundle_dir / "sampler.ts")
    ts = [scripted(torch.as_tensor(rates), torch.tensor(s)).numpy() for s in (7, 7, 8)]
    assert np.array_equal(ts[0], ts[1]) and not np.array_equal(ts[0], ts[2])


@pytest.mark.parametrize("rate", [1e-3, 0.05, 1.0, 7.5, 30.0, 150.0])
def test_sampler_goodness_of_fit(bundle_dir: Path, rate: float) -> None:
    draws = 20_000
    sess = session(bundle_dir, "sampler")
    counts = sess.run(None, {"rates": np.full((draws, 1), rate, np.float32), "seed": np.asarray(3, np.int64)})[0]
    counts = counts.ravel()
    # chi-square over bins with expected count >= 5 (tail pooled)
    lo, hi = int(stats.poisson.ppf(1e-4, rate)), int(stats.poisson.ppf(1 - 1e-4, rate))
    edges = np.arange(lo, hi + 2)
    probs = np.diff(stats.poisson.cdf(edges - 1, rate))
    probs[0] += stats.poisson.cdf(lo - 1, rate)
    probs[-1] += stats.poisson.sf(hi, rate)
    observed = np.bincount(np.clip(counts, lo, hi) - lo, minlength=len(probs))
    expected = probs * draws
    keep = expected >= 5  # pool sparse bins so the chi-square approximation holds
    obs, exp = observed[keep], expected[keep]
    if expected[~keep].sum() > 0:
        obs, exp = np.append(obs, observed[~keep].sum()), np.append(exp, expected[~keep].sum())
    assert len(obs) >= 2
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-4


def test_sampler_statistics_check_can_fail() -> None:
    rng = np.random.default_rng(0)

    def biased(rates: np.ndarray, seed: int) -> np.ndarray:
        return rng.poisson(rates * 1.05).astype(np.int32)

    def honest(rates: np.ndarray, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).poisson(rates).astype(np.int32)

    assert verify.check_sampler_statistics(honest)["passed"]
    assert not verify.check_sampler_statistics(biased)["passed"]  # 5% too many spikes, and not reproducible


# ----------------------------------------------------------------------------- TorchScript warnings


def test_torchscript_deprecation_is_silenced_precisely(model_and_cfg: tuple[VAE, PatchConfig]) -> None:
    model, cfg = model_and_cfg
    tally = WarningCount()
    with torchscript_deprecation_silenced(tally):
        torch.jit.script(torch.nn.Linear(2, 2))
    assert tally.count >= 1
    assert "torch\\.jit" in TORCHSCRIPT_WARNING
    with pytest.warns(UserWarning, match="unrelated"), torchscript_deprecation_silenced(tally):
        import warnings

        warnings.warn("unrelated", UserWarning, stacklevel=1)
    assert set(script_paths(model, cfg)) == {"rates", "decoder", "frame", "sampler"}


@pytest.mark.slow  # one more exporter run: ~10 s of CPU
def test_conv_model_paths_match_the_model_in_torch_torchscript_and_onnx() -> None:
    """conv|conv and conv+b|lin: the export modules, their TorchScript and (conv|conv) their ONNX graphs
    equal VAE.encode/decode."""
    cfg = PatchConfig()
    frames = natural_frames((2, 20, 40), seed=2)
    for arch in ("conv|conv", "conv+b|lin"):
        torch.manual_seed(0)
        model = VAE(ModelConfig(arch=arch, n_latents=16, conv_channels=(4, 8), dec_channels=4)).eval()
        paths = build_paths(model, cfg)
        scripted = script_paths(model, cfg)
        x = torch.randn(5, 256)
        with torch.no_grad():
            post = model.encode(x)
            for rates_path in (paths.rates, scripted["rates"]):
                log_rates, _ = rates_path(x)
                assert torch.allclose(log_rates, post.params["log_rate"], atol=LOG_RATE_TOL)
            for decoder in (paths.decoder, scripted["decoder"]):
                assert torch.allclose(decoder(post.params["rate"]), model.decode(post.params["rate"]), atol=1e-5)
            eager = paths.frame(torch.as_tensor(frames))
            ts = scripted["frame"](torch.as_tensor(frames))
            assert all(torch.allclose(a.float(), b.float(), atol=1e-5) for a, b in zip(eager, ts, strict=True))
        if arch != "conv|conv":
            continue
        graphs = export_graphs(paths)  # one exporter run (seconds): conv layers, dynamic batch and frame size
        rates_session = ort.InferenceSession(graphs["rates"].SerializeToString(), providers=PROVIDERS)
        onnx_log, _ = rates_session.run(None, {"patches": x.numpy()})
        assert np.abs(onnx_log - post.params["log_rate"].numpy()).max() <= LOG_RATE_TOL
        decoder_session = ort.InferenceSession(graphs["decoder"].SerializeToString(), providers=PROVIDERS)
        (decoded,) = decoder_session.run(None, {"latents": post.params["rate"].numpy()})
        assert np.abs(decoded - model.decode(post.params["rate"]).detach().numpy()).max() <= 1e-5
        frame_session = ort.InferenceSession(graphs["frame"].SerializeToString(), providers=PROVIDERS)
        outs = frame_session.run(None, {"frames": frames})
        assert np.abs(outs[1] - eager[1].numpy()).max() <= LOG_RATE_TOL
        assert np.abs(outs[3] - eager[3].numpy()).max() <= 1e-5


# ----------------------------------------------------------------------------- Triton


def test_triton_repository(export_run: dict[str, Any], bundle_dir: Path) -> None:
    """export_bundle(triton_dir=...) writes the repository for the bundle it made; every config parses with
    Triton's model_config.proto (the configs are checked against the graphs in tests/test_triton_repo.py)."""
    from google.protobuf import text_format

    from pvae.inference import model_config_pb2

    repo: Path = export_run["triton"]
    assert (repo / MARKER).is_file()
    bundle = load_bundle(bundle_dir)
    for graph, (name, max_batch) in TRITON_MODELS.items():
        for variant in ("config.pbtxt", "configs/gpu.pbtxt"):
            config = text_format.Parse((repo / name / variant).read_text(), model_config_pb2.ModelConfig())
            assert config.name == name and config.backend == "onnxruntime"
            assert config.max_batch_size == max_batch and config.HasField("dynamic_batching") == (max_batch > 0)
            assert [t.name for t in config.input] == [t.name for t in bundle.graphs[graph].inputs]
        assert (repo / name / "1" / "model.onnx").read_bytes() == bundle.graph_path(graph).read_bytes()
    rates = text_format.Parse((repo / "pvae_rates" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert list(rates.input[0].dims) == [256] and list(rates.output[0].dims) == [64]


# ----------------------------------------------------------------------------- bad input and atomicity


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = cli.main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def foreign_family_checkpoint(path: Path) -> Path:
    cfg = ModelConfig(arch="lin|lin", latent="gaussian", n_latents=8)
    return save_checkpoint(
        Checkpoint(
            model_config=cfg,
            train_config=TrainConfig(model=cfg),
            data={"preprocessing": None},
            model_state=VAE(cfg).state_dict(),
        ),
        path,
    )


BadInput = Callable[[Path, Path], list[str]]


def _missing(tmp: Path, ckpt: Path) -> list[str]:
    return [str(tmp / "nope.pt"), "-o", str(tmp / "out")]


def _truncated(tmp: Path, ckpt: Path) -> list[str]:
    data = ckpt.read_bytes()
    (tmp / "half.pt").write_bytes(data[: len(data) // 2])
    return [str(tmp / "half.pt"), "-o", str(tmp / "out")]


def _foreign(tmp: Path, ckpt: Path) -> list[str]:
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp / "foreign.pt")
    return [str(tmp / "foreign.pt"), "-o", str(tmp / "out")]


def _garbage(tmp: Path, ckpt: Path) -> list[str]:
    (tmp / "garbage.pt").write_bytes(b"PK\x03\x04 not really a zip archive" * 64)
    return [str(tmp / "garbage.pt"), "-o", str(tmp / "out")]


def _gaussian(tmp: Path, ckpt: Path) -> list[str]:
    return [str(foreign_family_checkpoint(tmp / "gauss.pt")), "-o", str(tmp / "out")]


def _unwritable(tmp: Path, ckpt: Path) -> list[str]:
    (tmp / "a-file").write_text("not a directory")
    return [str(ckpt), "-o", str(tmp / "a-file" / "bundle")]


def _old_opset(tmp: Path, ckpt: Path) -> list[str]:
    return [str(ckpt), "-o", str(tmp / "out"), "--opset", "13"]


def _bad_format(tmp: Path, ckpt: Path) -> list[str]:
    return [str(ckpt), "-o", str(tmp / "out"), "--formats", "onnx,tflite"]


def _occupied(tmp: Path, ckpt: Path) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "precious.txt").write_text("keep me")
    return [str(ckpt), "-o", str(tmp / "out")]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_missing, "checkpoint not found"),
        (_truncated, "truncated or corrupt"),
        (_foreign, "not a pvae checkpoint"),
        (_garbage, "not a readable checkpoint"),
        (_gaussian, "poisson"),
        (_unwritable, "cannot write the bundle"),
        (_old_opset, "opset: 13 is too old"),
        (_bad_format, "unknown tflite"),
        (_occupied, "refusing to overwrite"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str], make: BadInput, message: str
) -> None:
    argv = make(tmp_path, tiny_checkpoint)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("pvae-export: error:") and message in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, nothing half-written
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_unwritable_directory_without_root(tmp_path: Path, tiny_checkpoint: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions (the file-as-parent case covers this as root)")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(BundleError, match="cannot write the bundle"):
        export_bundle(tiny_checkpoint, locked / "bundle")


def test_opset_range_is_checked() -> None:
    from pvae.export.onnx_export import MAX_OPSET, check_opset

    assert check_opset(18) == 18
    with pytest.raises(ConfigError, match="too old"):
        check_opset(17)
    with pytest.raises(ConfigError, match="newer"):
        check_opset(MAX_OPSET + 1)
    with pytest.raises(ConfigError, match="onnx' is required"):
        exporter.parse_formats("torchscript")


def test_failure_midway_leaves_nothing(tmp_path: Path, tiny_checkpoint: Path) -> None:
    target = tmp_path / "bundle"

    def interrupt(line: str) -> None:
        if "ONNX graphs" in line:  # the staging directory exists by now
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_bundle(tiny_checkpoint, target, progress=interrupt)
    assert not target.exists() and leftovers(tmp_path) == []


def test_failed_verification_keeps_the_previous_bundle(
    tmp_path: Path, bundle_dir: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real gate failure (an impossible tolerance) on re-export: the old bundle stays intact."""
    target = Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))
    manifest_before = (target / "manifest.json").read_bytes()
    graphs = {name: onnx.load(str(bundle_dir / f"{name}.onnx")) for name in ("rates", "decoder", "frame")}
    # reuse the session's exported graphs: the ONNX export itself is tested above, and costs seconds
    monkeypatch.setattr(exporter, "export_graphs", lambda paths, opset, fp16: graphs)
    monkeypatch.setattr(verify, "LOG_RATE_TOLERANCE", -1.0)
    with pytest.raises(verify.VerificationError, match="rates/onnx/log_rates"):
        export_bundle(tiny_checkpoint, target, formats="onnx")
    assert (target / "manifest.json").read_bytes() == manifest_before
    load_bundle(target)
    assert leftovers(tmp_path) == []


def test_reexport_replaces_a_bundle_and_no_verify_is_recorded(
    tmp_path: Path,
    bundle_dir: Path,
    tiny_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))
    graphs = {name: onnx.load(str(bundle_dir / f"{name}.onnx")) for name in ("rates", "decoder", "frame")}
    monkeypatch.setattr(exporter, "export_graphs", lambda paths, opset, fp16: graphs)
    assert cli.main([str(tiny_checkpoint), "-o", str(target), "--formats", "onnx", "--no-verify"]) == 0
    out = capsys.readouterr().out
    assert "verification: skipped" in out and "rates.onnx" in out and "total" in out
    manifest = load_bundle(target).manifest
    assert manifest["verification"] == {"skipped": True} and manifest["torchscript"] == {}
    assert not (target / "rates.ts").exists() and leftovers(tmp_path) == []


def test_default_output_is_next_to_the_checkpoint(tmp_path: Path) -> None:
    assert exporter.default_bundle_dir(tmp_path / "runs" / "best.pt") == tmp_path / "runs" / "best.bundle"


def test_export_refuses_non_square_and_non_poisson_models() -> None:
    cfg = ModelConfig(arch="lin|lin", latent="laplace", n_latents=4)
    with pytest.raises(CheckpointError, match="only 'poisson'"):
        build_paths(VAE(cfg), None)
    policy = frame_policy((16, 16), PatchConfig(whiten_size=41))
    assert policy.min_side == 21 and policy.grid(33, 47) == (3, 3)  # 20 (the whitening's half-width) + 1


@pytest.mark.parametrize("whiten_size", [15, 41])
def test_frames_at_the_minimum_side_preprocess(whiten_size: int) -> None:
    """Every side from the policy's minimum up, at every remainder of the 4 x 4 whitening blocks and the
    16-column Gaussian groups, takes the reflect pads (which need pad < side); the frame graph has the
    same pads."""
    from pvae.export.modules import FramePreprocess

    cfg = PatchConfig(whiten_size=whiten_size)
    side = frame_policy((16, 16), cfg).min_side
    pre = FramePreprocess(cfg)
    rng = np.random.default_rng(whiten_size)
    for height, width in [(side + i % 4, side + i) for i in range(16)]:  # every remainder mod 4 and mod 16
        frame = rng.integers(0, 256, (height, width), dtype=np.uint8)
        out = pre(torch.as_tensor(frame[None]))[0].numpy()
        assert out.shape == frame.shape
        assert np.abs(out - reference_preprocess(frame, cfg)).max() <= PREPROCESS_TOL  # the training pipeline
    if side > 16:  # the whitening sets the minimum (not the patch): one below it, its reflect pad fails
        with pytest.raises(RuntimeError, match=r"[Pp]adding"):
            pre(torch.zeros(1, side - 1, side, dtype=torch.uint8))
