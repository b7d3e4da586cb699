"""Active latents: the paper's KL and gap rules, and the usage rule (rise in mse_map when a latent is ablated)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pvae.training.active_latents import (
    CATEGORICAL_DEAD_NORM,
    TABLE2_DEAD_KL,
    active_latent_summary,
    kl_threshold_active,
    last_gap_below_median,
    posterior_mean_code,
    table2_active,
    usage_active,
    usage_rises,
    usage_rises_by_decoding,
)
from pvae.training.config import ModelConfig
from pvae.training.data import PatchConfig, load_dataset
from pvae.training.model import VAE, loss_terms

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def patches() -> torch.Tensor:
    """500 whitened natural 16x16 patches (validation split of a small patch set)."""
    return torch.as_tensor(load_dataset("patches", PatchConfig(n_patches=2500)).val[:500]).float()


def _low_rank(n: int, seed: int) -> torch.Tensor:
    """(n, 64) data on a fixed 4-dimensional subspace (scales 6, 5, 4, 3) plus N(0, 0.3^2) noise."""
    basis = np.linalg.qr(np.random.default_rng(0).normal(size=(64, 4)))[0]  # (64, 4), the same for every call
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, 4)) * [6.0, 5.0, 4.0, 3.0]) @ basis.T + 0.3 * rng.normal(size=(n, 64))
    return torch.as_tensor(x).float()


def _model(latent: str, k: int, arch: str = "lin|lin", shape: tuple[int, int] = (16, 16), seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(ModelConfig(arch=arch, latent=latent, n_latents=k, input_shape=shape, dec_channels=4,
                           conv_channels=(4, 8)))


# ----------------------------------------------------------------------------- usage rule


@pytest.mark.parametrize("latent", ["poisson", "gaussian", "gaussian-relu", "laplace", "categorical"])
@pytest.mark.parametrize("k", [10, 128])
def test_an_untrained_model_uses_almost_no_latent(patches: torch.Tensor, latent: str, k: int) -> None:
    for seed in range(2):
        usage = usage_active(_model(latent, k, seed=seed), patches)
        assert usage.fraction <= 0.05, (latent, k, seed, usage.rises.max() / usage.threshold)
        assert usage.threshold == pytest.approx(0.1 * usage.energy / k)


def test_a_briefly_trained_model_uses_latents_an_untrained_one_does_not() -> None:
    train, val = _low_rank(4000, seed=1), _low_rank(500, seed=2)
    model = _model("gaussian", 16, shape=(8, 8))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        batch = train[torch.randint(0, len(train), (256,), generator=gen)]
        loss, _, _ = loss_terms(batch, model(batch, temperature=1.0), beta=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    summary = active_latent_summary(model, val)
    assert summary["fractions"]["usage"] >= 4 / 16  # at least the 4 directions of the data
    assert summary["usage"]["mse_map"] < 0.2 * summary["usage"]["energy"]
    assert summary["untrained_fractions"]["usage"] <= 0.05
    json.dumps(summary)  # plain data


@pytest.mark.parametrize("ablation", ["zero", "mean"])
@pytest.mark.parametrize("latent", ["poisson", "gaussian-relu", "categorical"])
def test_linear_closed_form_equals_decoding_every_ablation(latent: str, ablation: str) -> None:
    model = _model(latent, 12, shape=(8, 8))
    with torch.no_grad():
        model.decoder.weight.mul_(4.0)  # larger rises than at init, so the comparison is not all round-off
    x = _low_rank(300, seed=3)
    closed, energy, mse_map = usage_rises(model, x, batch_size=128, ablation=ablation)
    looped, energy2, mse_map2 = usage_rises_by_decoding(model, x, batch_size=128, ablation=ablation)
    assert np.abs(closed).max() > 1e-3
    np.testing.assert_allclose(closed, looped, rtol=1e-4, atol=1e-6 * energy)
    assert (energy, mse_map) == pytest.approx((energy2, mse_map2), rel=1e-6)


def test_conv_decoders_are_scored_by_decoding() -> None:
    model = _model("gaussian", 6, arch="lin|conv", shape=(8, 8))
    x = _low_rank(64, seed=4)
    rises, _, _ = usage_rises(model, x, batch_size=32)
    np.testing.assert_allclose(rises, usage_rises_by_decoding(model, x)[0], rtol=1e-6, atol=1e-9)
    summary = active_latent_summary(model, x, untrained_reference=False)
    assert summary["column_norms"] is None and summary["fractions"]["table2"] is None
    assert summary["fractions"]["kl_threshold"] is not None and "untrained_fractions" not in summary


def test_gaussian_relu_decodes_mu_as_the_paper_does() -> None:
    model = _model("gaussian-relu", 8, shape=(8, 8))
    post = model.encode(_low_rank(16, seed=5))
    mu = post.params["mu"]
    assert (mu < 0).any()
    assert torch.equal(posterior_mean_code(model, post), mu)
    assert torch.equal(posterior_mean_code(model, post, relu_mean=True), torch.relu(mu))
    with pytest.raises(ValueError, match="ablation"):
        usage_rises(model, _low_rank(4, seed=5), ablation="noise")


# ----------------------------------------------------------------------------- Figure 5 and Table 2 rules


def test_figure5_thresholds_and_the_categorical_norm_rule() -> None:
    kl = np.array([0.0, 0.0081, 0.0083, 0.085, 0.095])
    assert kl_threshold_active(kl, "poisson").tolist() == [False, False, True, True, True]
    assert kl_threshold_active(kl, "laplace").tolist() == [False, False, False, True, True]
    assert kl_threshold_active(kl, "gaussian").tolist() == [False, False, False, False, True]
    norms = np.array([5.0, 4.0, 4.435, 10.0, 1.0])
    # The C-VAE ignores the KL: only the decoder column norm counts.
    assert kl_threshold_active(kl, "categorical", norms).tolist() == [True, False, True, True, False]
    assert kl_threshold_active(np.zeros(5), "categorical", norms).tolist() == (norms >= CATEGORICAL_DEAD_NORM).tolist()
    with pytest.raises(ValueError, match="column norms"):
        kl_threshold_active(kl, "categorical")


def test_table2_finds_a_planted_gap_in_the_column_norms() -> None:
    rng = np.random.default_rng(0)
    dead, alive = 30, 98
    log_norms = np.concatenate([-5 + 0.1 * rng.normal(size=dead), 0.1 * rng.normal(size=alive)])
    kl = np.concatenate([rng.uniform(1e-3, 5e-3, size=dead), rng.uniform(0.02, 0.5, size=alive)])
    kl[-1] = 1e-4  # well-formed column, but KL below 3e-4: dead in any case
    cut = table2_active(kl, np.exp(log_norms), "lin")
    assert cut.rule == "gap" and cut.axis == "log_column_norm"
    assert cut.cut is not None and log_norms[:dead].max() < cut.cut <= log_norms[dead:].min()
    # The KL cut is the smallest KL of a non-dead latent above the gap (not the 1e-4 one).
    assert cut.kl_cut == pytest.approx(kl[dead:-1].min())
    assert cut.mask.tolist() == [False] * dead + [True] * (alive - 1) + [False]
    # Ordering by KL: a latent below the norm gap with a KL above the cut is active.
    kl2 = kl.copy()
    kl2[-1] = 0.02
    kl2[0] = 0.3
    assert table2_active(kl2, np.exp(log_norms), "lin").mask[0]


def test_table2_without_a_gap_counts_every_non_dead_latent() -> None:
    log_norms = np.linspace(-3, 0, 64)
    kl = np.geomspace(1e-5, 1.0, 64)
    cut = table2_active(kl, np.exp(log_norms), "lin")
    assert cut.rule == "no gap" and cut.cut is None and cut.kl_cut is None
    assert cut.mask.tolist() == (kl >= TABLE2_DEAD_KL).tolist()
    # A gap above the median does not count (the search stops at the median).
    assert last_gap_below_median(np.concatenate([np.zeros(40), np.full(10, 5.0)])) is None


def test_table2_conv_rule_cuts_the_log_kl_histogram() -> None:
    rng = np.random.default_rng(1)
    kl = np.concatenate([np.exp(-9 + 0.2 * rng.normal(size=20)), np.exp(-1 + 0.3 * rng.normal(size=60))])
    cut = table2_active(kl, None, "conv+b")
    assert cut.rule == "gap" and cut.axis == "log_kl"
    assert cut.mask.tolist() == [False] * 20 + [True] * 60
    with pytest.raises(ValueError, match="column norms"):
        table2_active(kl, None, "lin")
