"""pvae-report: shattering dimensionality, the computed verdicts, helpers, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pvae.errors import ConfigError
from pvae.training.config import ModelConfig, TrainConfig
from pvae.training.study.config import (
    PAPER_BETAS,
    ClassificationStudy,
    PatchStudy,
    cpu_config,
    deviations,
    full_config,
    smoke_config,
)
from pvae.training.study.document import Block, build_document, render_html, render_markdown
from pvae.training.study.report import RunContext, main, match_at_sparsity, ppca_active_fraction, slug, train_vae
from pvae.training.study.shattering import balanced_splits, shattering_dimensionality
from pvae.training.study.verdict import compute_verdicts

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- shattering


def test_balanced_splits_count_each_dichotomy_once() -> None:
    splits = balanced_splits(list(range(10)))
    assert len(splits) == math.comb(10, 5) // 2 == 126
    halves = {frozenset(s) for s in splits}
    assert len(halves) == 126
    assert all(frozenset(range(10)) - h not in halves for h in halves)  # no split next to its complement
    assert len(balanced_splits([0, 1, 2, 3])) == 3


def _clusters(n: int, dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    return np.eye(10)[labels][:, :dims] * 4 + 0.3 * rng.normal(size=(n, dims)), labels


def test_shattering_on_separable_and_structureless_features() -> None:
    features, labels = _clusters(300, 10, seed=0)  # one axis per class: every dichotomy is linearly separable
    test_features, test_labels = _clusters(300, 10, seed=5)
    full = shattering_dimensionality(features, labels, test_features, test_labels)
    assert full["n_splits"] == len(full["accuracies"]) == 126
    assert full["mean"] > 0.98
    noise = shattering_dimensionality(np.random.default_rng(1).normal(size=(300, 10)), labels,
                                      np.random.default_rng(2).normal(size=(300, 10)), test_labels)
    assert abs(noise["mean"] - 0.5) < 0.08
    # One feature, the class index: only the split {0..4} vs {5..9} is a threshold, most others are not.
    line = shattering_dimensionality(labels[:, None].astype(float), labels, test_labels[:, None].astype(float),
                                     test_labels)
    assert 0.55 < line["mean"] < 0.85


def test_shattering_subsets_are_seeded() -> None:
    features, labels = _clusters(400, 10, seed=2)
    a = shattering_dimensionality(features, labels, features, labels, max_train_samples=200, seed=3)
    b = shattering_dimensionality(features, labels, features, labels, max_train_samples=200, seed=3)
    assert a["accuracies"] == b["accuracies"] and a["n_train"] == 200 and a["n_test"] == 400
    with pytest.raises(ValueError, match="agree"):
        shattering_dimensionality(features, labels[:10], features, labels)


# ----------------------------------------------------------------------------- helpers


def test_match_at_sparsity() -> None:
    points = [{"lifetime_sparsity": 0.8, "mse": 100.0}, {"lifetime_sparsity": 0.9, "mse": 140.0}]
    inside = match_at_sparsity(points, 0.85)
    assert inside["mse"] == pytest.approx(120.0) and inside["how"] == "interpolated"
    outside = match_at_sparsity(points, 0.99)
    assert outside["mse"] == 140.0 and outside["how"].startswith("nearest")


def test_ppca_active_fraction_counts_variances_above_the_noise() -> None:
    rng = np.random.default_rng(0)
    scales = np.array([3.0, 2.0, 1.0, 0.3, 0.2, 0.1])  # variances 9, 4, 1, 0.09, 0.04, 0.01
    x = rng.normal(size=(20_000, 6)) * scales
    assert ppca_active_fraction(x, beta=1.0, n_latents=12)["active_fraction"] == pytest.approx(3 / 12)
    assert ppca_active_fraction(x, beta=1.0, n_latents=2)["active_fraction"] == 1.0


def test_configs_and_deviations() -> None:
    cpu = deviations(cpu_config())
    assert any("MNIST is not available offline" in d for d in cpu)
    assert any("U(-2, -1)" in d for d in cpu) and any("2 seed(s)" in d for d in cpu)
    assert not any("U(-2, -1)" in d for d in deviations(full_config()))  # the paper's init on the paper's budget
    assert cpu_config().patches is not None and cpu_config().patches.betas == PAPER_BETAS
    with pytest.raises(ConfigError, match="reference_beta"):
        PatchStudy(betas=(0.5, 2.0))
    with pytest.raises(ConfigError, match="must increase"):
        PatchStudy(betas=(2.0, 1.0))
    with pytest.raises(ConfigError, match="both are required"):
        ClassificationStudy(families=("poisson", "laplace"))
    assert slug("P-VAE β=1") == "p-vae-beta-1"


def test_renderers_escape() -> None:
    blocks = [Block("h1", "a <b>"), Block("table", items=("x|y",), rows=(("**ok**",),)), Block("p", "`c` & d")]
    assert "x\\|y" in render_markdown(blocks)
    page = render_html(blocks)
    assert "a &lt;b&gt;" in page and "<strong>ok</strong>" in page and "<code>c</code> &amp; d" in page


def test_train_vae_reuses_only_a_finished_run_of_the_same_config(tmp_path: Path) -> None:
    cfg = TrainConfig(model=ModelConfig(arch="lin|lin", n_latents=8, input_shape=(8, 8)), data="digits", epochs=1,
                      batch_size=200, max_val_samples=100, device="cpu")
    ctx = RunContext(out_dir=tmp_path, device=torch.device("cpu"), progress=False, reuse=True)
    first, _, reused = train_vae(cfg, "tiny P-VAE", ctx)
    assert not reused and (tmp_path / "models" / "tiny-p-vae" / "last.pt").is_file()
    again, _, reused = train_vae(cfg, "tiny P-VAE", ctx)
    assert reused and torch.equal(first.dictionary, again.dictionary)
    _, _, reused = train_vae(TrainConfig(**{**cfg.__dict__, "seed": 1}), "tiny P-VAE", ctx)
    assert not reused


# ----------------------------------------------------------------------------- end to end


def test_smoke_report_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main(["--smoke", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    results = json.loads((out / "report.json").read_text())
    assert (out / "report.md").read_text().startswith("# P-VAE against its baselines")
    figures = results["meta"]["figures"]
    assert {"tradeoff", "active", "beta_sweep", "shattering", "knn/digits"} <= set(figures)
    assert all((out / path).is_file() and (out / path).stat().st_size > 0 for path in figures.values())
    # The verdicts are a function of the numbers in report.json: recomputing them gives the same table.
    assert [v.to_dict() for v in compute_verdicts(results)] == results["verdicts"]
    assert len(results["verdicts"]) == 5
    patches = results["patches"]
    # Sweep: 2 betas x 2 seeds; Table 4: (exact, mc, G, C) x (lin, conv), the lin exact model being the sweep's.
    assert len(patches["beta_sweep"]) == 4 and {r["seed"] for r in patches["beta_sweep"]} == {0, 1}
    assert [(r["encoder"], r["family"], r["loss"]) for r in patches["table4"]] == [
        (e, f, lo) for e in ("lin", "conv") for f, lo in
        (("poisson", "exact"), ("poisson", "mc"), ("gaussian", "mc"), ("categorical", "mc"))]
    assert patches["reference"] == "P-VAE exact lin|lin β=1" and patches["reference"] in patches["models"]
    assert set(patches["untrained"]) == {"P-VAE", "G-VAE", "C-VAE"}
    fractions = patches["models"]["G-VAE lin|lin"]["active"]["fractions"]
    assert {"usage_mean", "usage", "table2", "kl_threshold"} <= set(fractions)
    digits = results["classification"]["digits"]
    assert digits["runs"]["4"]["poisson"]["shattering"]["n_splits"] == 126
    assert digits["paired"]["4"]["gaussian"]["shattering"]["n"] == 126
    assert digits["n_pool"] == 400 and digits["n_pool"] + digits["n_eval"] == 1797
    assert results["config"] == smoke_config().to_dict() | {"device": "cpu"}
    page = render_html(build_document(results, compute_verdicts(results), figures))
    assert page.count("<img") == sum(1 for k in figures if "/" not in k or k.startswith("knn/"))
    # --render recomputes the document from report.json and bases.npz alone: the same verdicts and figures.
    (out / "report.md").unlink()
    assert main(["--render", str(out)]) == 0
    rendered = json.loads((out / "report.json").read_text())
    assert rendered["verdicts"] == results["verdicts"] and rendered["meta"]["figures"] == figures
    assert "rendered" in rendered["meta"] and (out / "report.md").is_file()


def test_render_writes_the_verdict_table_between_the_markers(tmp_path: Path) -> None:
    from pvae.training.study.document import VERDICTS_BEGIN, VERDICTS_END, replace_verdict_block
    from pvae.training.study.verdict import Verdict

    results = {"meta": {"command": "pvae-report --cpu", "commit": "abc1234", "wall_seconds": 600.0, "cpu_count": 2,
                        "torch_threads": 1, "load_start": 1.0, "load_end": 2.0, "finished": "2026-12-02 09:00 UTC"}}
    page = f"# title\n\n{VERDICTS_BEGIN}\nold table\n{VERDICTS_END}\n\nafter\n"
    out = replace_verdict_block(page, results, [Verdict("a claim", "paper 1", "ours 2", True)])
    assert "old table" not in out and "| a claim | paper 1 | ours 2 | **holds** |" in out
    assert "at commit abc1234: 10.0 min" in out and out.startswith("# title") and out.endswith("after\n")
    assert replace_verdict_block(out, results, []).count(VERDICTS_BEGIN) == 1  # idempotent markers
    with pytest.raises(ValueError, match="no verdict markers"):
        replace_verdict_block("# no markers\n", results, [])
    no_markers = tmp_path / "page.md"
    no_markers.write_text("# no markers\n")
    assert main(["--render", str(tmp_path), "--doc", str(no_markers)]) == 2
    assert main(["--cpu", "--doc", str(no_markers)]) == 2  # --doc only with --render


def test_render_refuses_a_folder_without_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--render", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "report.json does not exist" in err and "Traceback" not in err
    (tmp_path / "report.json").write_text("{not json")
    assert main(["--render", str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err
