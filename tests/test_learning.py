"""The P-VAE learns: the exact loss against Monte Carlo, the paper-era schedule, divergence handling,
and a golden behaviour run that must leave its starting prior."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from pvae.errors import ConfigError, TrainingDivergedError
from pvae.training.config import ModelConfig, TrainConfig, get_preset
from pvae.training.model import VAE, expected_linear_reconstruction, loss_terms
from pvae.training.schedules import lr_factor_at
from pvae.training.train import LAST, Trainer, main


def _model_with_moderate_rates(seed: int = 0) -> tuple[VAE, torch.Tensor]:
    torch.manual_seed(seed)
    model = VAE(ModelConfig(arch="lin|lin", n_latents=32, input_shape=(4, 4), prior_log_rate_init=(-1.0, 0.5)))
    x = torch.randn(64, 16)
    return model, x


def test_exact_loss_is_the_expectation_of_the_sampled_loss() -> None:
    """Same data, same model: the exact loss equals the mean of the loss over exact Poisson counts,
    and the relaxed (mc) loss at the paper's final temperature agrees with it to within 2%."""
    model, x = _model_with_moderate_rates()
    exact_loss, exact_mse, exact_kl = loss_terms(x, model(x, temperature=0.05, exact=True), beta=1.0)
    post = model.encode(x)
    oracle = expected_linear_reconstruction(x, post.params["rate"], model.dictionary).mean()
    torch.testing.assert_close(exact_mse, oracle, rtol=1e-5, atol=1e-4)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        hard = torch.stack([loss_terms(x, model(x, temperature=0.0, generator=gen), 1.0)[1] for _ in range(3000)])
        soft = torch.stack([loss_terms(x, model(x, temperature=0.05, generator=gen), 1.0)[1] for _ in range(1000)])
    standard_error = hard.std() / math.sqrt(len(hard))
    assert abs(hard.mean() - exact_mse) < 4 * standard_error + 1e-3
    assert soft.mean().item() == pytest.approx(exact_mse.item(), rel=0.02)
    assert exact_loss.item() == pytest.approx(exact_mse.item() + exact_kl.item())


def test_exact_gradient_points_where_the_sampled_gradient_does_on_average() -> None:
    model, x = _model_with_moderate_rates(seed=3)

    def grads(exact: bool, temperature: float, gen: torch.Generator | None) -> torch.Tensor:
        model.zero_grad()
        loss_terms(x, model(x, temperature=temperature, generator=gen, exact=exact), beta=1.0)[0].backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    exact = grads(True, 0.05, None)
    gen = torch.Generator().manual_seed(0)
    mc = torch.stack([grads(False, 0.05, gen) for _ in range(400)]).mean(0)
    cosine = torch.nn.functional.cosine_similarity(exact, mc, dim=0).item()
    assert cosine > 0.95, cosine


def test_exact_loss_is_refused_where_it_makes_no_sense(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="exact needs Poisson latents and a linear decoder"):
        TrainConfig(model=ModelConfig(arch="conv|conv"), loss="exact")
    with pytest.raises(ConfigError, match="exact needs"):
        TrainConfig(model=ModelConfig(latent="gaussian"), loss="exact")
    with pytest.raises(ConfigError, match="straight-through"):
        TrainConfig(loss="exact", straight_through=True)
    with pytest.raises(ConfigError, match="prior_lr_multiplier"):
        TrainConfig(model=ModelConfig(latent="laplace"), prior_lr_multiplier=10)
    with pytest.raises(ConfigError, match="prior_log_rate_init"):
        ModelConfig(latent="gaussian", prior_log_rate_init=(-2.0, -1.0))
    assert main(["--preset", "tiny", "--arch", "lin|conv", "--loss", "exact", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exact needs Poisson latents and a linear decoder" in err[0]
    assert not (tmp_path / "r").exists()


def test_paper_era_learning_rate_oscillates_with_t_max_in_epochs() -> None:
    cfg = TrainConfig(epochs=100, lr=0.005, lr_schedule="paper", warmup_epochs=5, lr_min=1e-5)
    per_epoch, total = 80, 8000
    warmup = 5 * per_epoch
    t_max = 95  # epochs after warm-up, used as a number of steps
    assert lr_factor_at(0, total, cfg, per_epoch) == pytest.approx(1 / warmup)
    assert lr_factor_at(warmup - 1, total, cfg, per_epoch) == pytest.approx(1.0)
    assert lr_factor_at(warmup, total, cfg, per_epoch) == pytest.approx(1.0)
    floor = 1e-5 / 0.005
    assert lr_factor_at(warmup + t_max, total, cfg, per_epoch) == pytest.approx(floor)
    assert lr_factor_at(warmup + 2 * t_max, total, cfg, per_epoch) == pytest.approx(1.0)
    assert lr_factor_at(warmup + 41 * t_max, total, cfg, per_epoch) == pytest.approx(floor)
    cosine = dataclasses.replace(cfg, lr_schedule="cosine")
    assert lr_factor_at(total, total, cosine, per_epoch) == pytest.approx(floor)


def test_the_prior_learning_rate_multiplier_applies_to_the_prior_only(tmp_path: Path) -> None:
    cfg = dataclasses.replace(get_preset("tiny"), prior_lr_multiplier=10.0, epochs=1)
    trainer = Trainer(cfg, tmp_path, progress=False)
    groups = trainer.optimizer.param_groups
    assert len(groups) == 2
    assert groups[1]["params"] == [trainer.model.latent.log_rate]
    assert groups[1]["initial_lr"] == pytest.approx(10 * groups[0]["initial_lr"])


def test_a_diverging_run_stops_with_one_line_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    base = ["--preset", "tiny", "--device", "cpu", "--out", str(out), "--no-progress"]
    assert main([*base, "--stop-after-epochs", "1"]) == 0
    good = (out / LAST).read_bytes()
    capsys.readouterr()
    # An absurd learning rate blows the decoder up within a step or two: the loss overflows to inf.
    assert main([*base, "--resume", "--lr", "1e30"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error" in line.lower() or "Traceback" in line]
    assert len(errors) == 1 and errors[0].startswith("pvae-train: error: training diverged at step"), err
    assert err[-1] == errors[0]
    assert (out / LAST).read_bytes() == good
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]
    with pytest.raises(TrainingDivergedError):
        trainer = Trainer(dataclasses.replace(get_preset("tiny"), lr=1e30), tmp_path / "direct", progress=False)
        trainer.run()


def test_golden_behaviour_training_leaves_the_stuck_state_the_paper_init_falls_into(tmp_path: Path) -> None:
    """A short CPU run (114 steps) of the shipped recipe (the `quick` preset, less data) learns a
    code: mse_map falls well below the all-zeros predictor and lifetime sparsity stays below 0.9.
    The same run from the paper's prior init U(-6, -4) stays at its starting prior (lifetime
    sparsity ~0.99, barely below an untrained model's), which is why the shipped recipes deviate.

    A behaviour test on validation metrics (deterministic on CPU), not a timing test.
    """
    base = dataclasses.replace(get_preset("quick"), n_patches=12_000, epochs=6, max_val_samples=2000)
    paper_init = dataclasses.replace(base, model=dataclasses.replace(base.model, prior_log_rate_init=(-6.0, -4.0)))
    finals = {}
    for name, cfg in (("shipped", base), ("paper-init", paper_init)):
        trainer = Trainer(cfg, tmp_path / name, progress=False)
        start_median = trainer.model.latent.log_rate.median().item()
        zeros = trainer.val_x.pow(2).sum(-1).mean().item()
        final = trainer.run()
        finals[name] = (final, start_median, zeros)
    shipped, _, zeros = finals["shipped"]
    assert shipped["val_mse_map"] < 0.7 * zeros
    assert 0.7 < shipped["val_lifetime_sparsity"] < 0.9
    stuck, stuck_start_median, _ = finals["paper-init"]
    assert stuck["val_lifetime_sparsity"] > 0.95
    assert abs(stuck["prior_log_rate_median"] - stuck_start_median) < 0.2
    assert stuck["val_mse_map"] > shipped["val_mse_map"] + 20


def test_eval_scores_the_same_patches_whatever_each_checkpoint_trained_on(tiny_checkpoint: Path,
                                                                          tmp_path: Path) -> None:
    from pvae.training.checkpoint import load_checkpoint, save_checkpoint
    from pvae.training.evaluate import evaluate_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    # The same weights, as if trained on 6,000 patches instead of 4,000 (its own split is then bigger).
    data = {**ckpt.data, "preprocessing": {**ckpt.data["preprocessing"], "n_patches": 6000}}
    other = dataclasses.replace(ckpt, train_config=dataclasses.replace(ckpt.train_config, n_patches=6000), data=data)
    other_path = save_checkpoint(other, tmp_path / "other.pt")
    own = evaluate_checkpoint(tiny_checkpoint, device="cpu", max_samples=3000)
    own_other = evaluate_checkpoint(other_path, device="cpu", max_samples=3000)
    assert own["n_val_samples"] == 800 and own_other["n_val_samples"] == 1200  # each its own split
    a = evaluate_checkpoint(tiny_checkpoint, device="cpu", max_samples=3000, data="patches")
    b = evaluate_checkpoint(other_path, device="cpu", max_samples=3000, data="patches")
    assert a["n_val_samples"] == b["n_val_samples"] == 3000
    assert a["metrics"] == b["metrics"]  # same weights, same patches, same seed


def test_eval_scores_held_out_photos_against_the_all_zeros_predictor(tiny_checkpoint: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from pvae.training.evaluate import main as eval_main

    assert eval_main([str(tiny_checkpoint), "--photos", "--gabor", "--json", "--device", "cpu",
                      "--max-samples", "200"]) == 0
    report = json.loads(capsys.readouterr().out)
    photos, gabor = report["photos"], report["gabor"]
    assert gabor["n_fitted"] == gabor["n_active"] <= 64
    assert gabor["n_active"] == 0 or 0.0 <= gabor["fraction_gabor_like"] <= 1.0
    names = set(photos["per_photo"])
    for base in ("china", "flower", "grace_hopper", "clock"):
        assert {base, f"{base}-contrast", f"{base}-bw"} <= names
    for score in photos["per_photo"].values():
        assert score["patches"] > 100 and score["zeros"] > 0
        assert score["ratio"] == pytest.approx(score["mse_map"] / score["zeros"])
    assert photos["worst_ratio"] == max(s["ratio"] for s in photos["per_photo"].values())
    folder = tmp_path / "mine"
    folder.mkdir()
    import cv2
    import numpy as np

    cv2.imwrite(str(folder / "noise.png"), (np.random.default_rng(0).random((64, 80)) * 255).astype(np.uint8))
    assert eval_main([str(tiny_checkpoint), "--photos", str(folder), "--device", "cpu", "--max-samples", "200"]) == 0
    out = capsys.readouterr().out
    assert "noise.png-bw" in out and "mse_map / all-zeros" in out


def test_eval_counts_active_latents_next_to_an_untrained_model(tiny_checkpoint: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from pvae.training.evaluate import main as eval_main

    assert eval_main([str(tiny_checkpoint), "--active", "--json", "--device", "cpu", "--max-samples", "300"]) == 0
    active = json.loads(capsys.readouterr().out)["active"]
    assert set(active["fractions"]) == set(active["untrained_fractions"]) >= {"usage_mean", "usage", "table2"}
    assert all(0.0 <= v <= 1.0 for v in active["fractions"].values() if v is not None)
    assert active["untrained_fractions"]["usage_mean"] <= 0.05  # the control: an untrained model uses ~none
    assert eval_main([str(tiny_checkpoint), "--active", "--device", "cpu", "--max-samples", "300"]) == 0
    assert "active (usage_mean)" in capsys.readouterr().out


@pytest.mark.slow  # two benchmark subprocesses and a 160-step real run: ~30 s of CPU
def test_bench_train_reports_a_real_run_next_to_the_micro_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    from pvae.bench.train import main as bench_main

    argv = ["--device", "cpu", "--steps", "1", "--batch", "100", "--k", "32", "--temperatures", "1.0",
            "--weights", "init", "--real-epochs", "2", "--real-losses", "exact", "--json"]
    assert bench_main(argv) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    real = [r for r in rows if r["kind"] == "real"]
    micro = {r["variant"]: r for r in rows if r["kind"] == "micro"}
    assert len(real) == 1 and real[0]["loss"] == "exact" and real[0]["steps"] == 160
    assert real[0]["samples_per_second"] > 0
    assert real[0]["paper_length_minutes"] == pytest.approx(240_000_000 / real[0]["samples_per_second"] / 60)
    assert set(micro) == {"naive", "fast", "exact"}
    assert "paper-length run" in captured.err and "vs naive" in captured.err
    assert bench_main(["--real-epochs", "1"]) == 2
