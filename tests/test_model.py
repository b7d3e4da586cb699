"""Model, KL terms, closed forms and schedules against independent oracles."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pvae.errors import ConfigError
from pvae.training.config import ModelConfig, TrainConfig, config_from_dict, config_to_dict
from pvae.training.model import (
    VAE,
    PoissonLatent,
    Posterior,
    expected_linear_reconstruction,
    loss_terms,
    soft_clamp,
)
from pvae.training.sampling import poisson_log_pmf
from pvae.training.schedules import beta_at, lr_factor_at, temperature_at

ARCHS = ["lin|lin", "conv|lin", "conv+b|lin", "conv|conv"]
LATENTS = ["poisson", "gaussian", "gaussian-relu", "laplace", "categorical"]


def test_soft_clamp_is_identity_below_and_bounded_above() -> None:
    x = torch.tensor([-5.0, 0.0, 3.0, 5.3, 50.0])
    y = soft_clamp(x, 5.3)
    assert torch.allclose(y[:2], x[:2], atol=5e-3)
    assert (y <= 5.3).all() and y[-1] == pytest.approx(5.3, abs=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("latent", LATENTS)
def test_every_architecture_and_family_trains_a_step(arch: str, latent: str) -> None:
    torch.manual_seed(0)
    model = VAE(ModelConfig(arch=arch, latent=latent, n_latents=16))
    x = torch.randn(8, 256)
    out = model(x, temperature=0.5)
    assert out.recon.shape == (8, 256) and out.z.shape == (8, 16) and out.kl.shape == (8, 16)
    loss, _, _ = loss_terms(x, out, beta=1.0)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads if g is not None)
    exact = model(x, temperature=0.0)
    assert torch.isfinite(exact.recon).all()


def test_conv_models_accept_other_image_sizes() -> None:
    for shape in [(28, 28), (8, 8)]:
        model = VAE(ModelConfig(arch="conv|conv", n_latents=10, input_shape=shape))
        assert model(torch.randn(3, shape[0] * shape[1]), 1.0).recon.shape == (3, shape[0] * shape[1])


def test_poisson_posterior_follows_the_formulas() -> None:
    cfg = ModelConfig(n_latents=4)
    fam = PoissonLatent(cfg)
    u = torch.tensor([[-3.0, 0.0, 8.0, 30.0]])
    post = fam.posterior(u)
    log_dr = 10.0 - torch.nn.functional.softplus(10.0 - u)
    log_rate = 5.3 - torch.nn.functional.softplus(5.3 - (fam.log_rate + log_dr))
    torch.testing.assert_close(post.params["log_rate"], log_rate)
    torch.testing.assert_close(post.params["rate"], torch.exp(log_rate) + 1.19e-7)
    assert post.params["rate"].max() < math.exp(5.3) + 1e-3


def test_prior_init_ranges() -> None:
    lin = PoissonLatent(ModelConfig(arch="lin|lin", n_latents=5000)).log_rate
    conv = PoissonLatent(ModelConfig(arch="conv|conv", n_latents=5000)).log_rate
    assert lin.min() >= -6 and lin.max() <= -4 and lin.requires_grad
    assert conv.min() >= -6 and conv.max() <= -2 and conv.max() > -4


def test_poisson_kl_matches_monte_carlo() -> None:
    fam = PoissonLatent(ModelConfig(n_latents=3))
    with torch.no_grad():
        fam.log_rate.copy_(torch.log(torch.tensor([0.05, 1.0, 4.0])))
    post = Posterior({"rate": torch.tensor([[0.5, 1.0, 9.0]])})
    post.params["log_rate"] = post.params["rate"].log()
    kl = fam.kl(post)[0]
    z = torch.poisson(post.params["rate"].expand(400_000, 3), generator=torch.Generator().manual_seed(0))
    prior = fam.log_rate.exp().expand_as(z)
    mc = (poisson_log_pmf(z, post.params["rate"].expand_as(z)) - poisson_log_pmf(z, prior))
    se = mc.std(0) / math.sqrt(z.shape[0])
    assert ((kl - mc.mean(0)).abs() < 5 * se + 1e-4).all()
    # Closed form: lambda log(lambda / r) - lambda + r.
    lam, r = post.params["rate"][0], fam.log_rate.exp()
    torch.testing.assert_close(kl, lam * torch.log(lam / r) - lam + r)


@pytest.mark.parametrize("latent", ["gaussian", "laplace"])
def test_continuous_kl_matches_monte_carlo(latent: str) -> None:
    torch.manual_seed(1)
    model = VAE(ModelConfig(latent=latent, n_latents=3))
    enc = torch.tensor([[0.3, -1.2, 2.0, -0.5, 0.2, -1.0]])
    post = model.latent.posterior(enc)
    n = 400_000
    big = Posterior({k: v.expand(n, 3) for k, v in post.params.items()})
    z = model.latent.sample(big, 1.0, torch.Generator().manual_seed(2))
    if latent == "gaussian":
        q = torch.distributions.Normal(post.params["mu"], post.params["log_sigma"].exp())
        p = torch.distributions.Normal(0.0, 1.0)
    else:
        q = torch.distributions.Laplace(post.params["mu"], post.params["log_b"].exp())
        p = torch.distributions.Laplace(0.0, 1.0)
    mc = q.log_prob(z) - p.log_prob(z)
    se = mc.std(0) / math.sqrt(n)
    assert ((model.latent.kl(post)[0] - mc.mean(0)).abs() < 5 * se).all()


def test_categorical_kl_is_kl_to_uniform() -> None:
    model = VAE(ModelConfig(latent="categorical", n_latents=4))
    post = model.latent.posterior(torch.tensor([[2.0, 0.0, -1.0, 0.5]]))
    q = post.params["logits"].exp()[0]
    expected = (q * torch.log(q * 4)).sum()
    assert model.latent.kl(post).sum().item() == pytest.approx(expected.item(), rel=1e-5)
    hard = model.latent.sample(post, 0.0)
    assert hard.sum().item() == 1.0 and set(hard.unique().tolist()) <= {0.0, 1.0}


def test_linear_reconstruction_closed_form_matches_exact_samples() -> None:
    torch.manual_seed(3)
    model = VAE(ModelConfig(n_latents=32))
    x = torch.randn(4, 256)
    with torch.no_grad():
        model.latent.log_rate.fill_(0.0)  # rates ~1 so the variance term matters
        post = model.encode(x)
        rate = post.params["rate"]
        closed = expected_linear_reconstruction(x, rate, model.dictionary)
        n = 20_000
        z = torch.poisson(rate.repeat(n, 1), generator=torch.Generator().manual_seed(4))  # (n*4, K)
        err = (x.repeat(n, 1) - model.decode(z)).pow(2).sum(-1).view(n, 4)
    se = err.std(0) / math.sqrt(n)
    assert ((err.mean(0) - closed).abs() < 5 * se).all()


def test_schedule_end_points() -> None:
    cfg = TrainConfig(beta=2.0, beta_start=1e-4, beta_hold_fraction=0.1, beta_anneal_fraction=0.5,
                      temperature_start=1.0, temperature_end=0.05, temperature_anneal_fraction=0.5,
                      warmup_fraction=0.1)
    total = 1000
    assert temperature_at(0, total, cfg) == 1.0
    assert temperature_at(500, total, cfg) == pytest.approx(0.05)
    assert temperature_at(999, total, cfg) == pytest.approx(0.05)
    assert temperature_at(250, total, cfg) == pytest.approx(0.525)
    assert beta_at(0, total, cfg) == 1e-4 and beta_at(100, total, cfg) == 1e-4
    assert beta_at(600, total, cfg) == pytest.approx(2.0) and beta_at(999, total, cfg) == pytest.approx(2.0)
    assert beta_at(350, total, cfg) == pytest.approx(1e-4 + 0.5 * (2.0 - 1e-4))
    assert lr_factor_at(0, total, cfg) == pytest.approx(0.01)
    assert lr_factor_at(99, total, cfg) == pytest.approx(1.0)
    assert lr_factor_at(100, total, cfg) == pytest.approx(1.0)
    assert lr_factor_at(total, total, cfg) == pytest.approx(0.0, abs=1e-12)


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match="arch"):
        ModelConfig(arch="mlp|lin")
    with pytest.raises(ConfigError, match="n_latents"):
        ModelConfig(n_latents=0)
    with pytest.raises(ConfigError, match="temperature"):
        TrainConfig(temperature_end=0.0)
    with pytest.raises(ConfigError, match="unknown field"):
        config_from_dict(ModelConfig, {"bogus": 1})


def test_config_round_trip() -> None:
    cfg = TrainConfig(model=ModelConfig(arch="conv|conv", n_latents=10, input_shape=(28, 28)), epochs=7)
    assert config_from_dict(TrainConfig, config_to_dict(cfg)) == cfg
    assert dataclasses.replace(cfg, epochs=8).epochs == 8
