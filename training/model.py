"""The VAE: encoder -> latent family (sample) -> decoder, with the P-VAE as the main family.

    >>> model = VAE(ModelConfig(arch="lin|lin", n_latents=512))
    >>> out = model(torch.randn(8, 256), temperature=0.05)   # out.recon: (8, 256)

Formulas follow the paper (Vafaii, Galor & Yates, NeurIPS 2024; its recipe in docs/reproduction.md,
"Training recipe"). sc_c(v) = c - softplus(c - v) is a soft upper clamp at c.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pvae.training.config import ModelConfig
from pvae.training.sampling import exact_poisson, relaxed_poisson, relaxed_poisson_naive

#: Added to every rate so that log lambda stays finite (paper code: float32 eps-like floor).
RATE_FLOOR = 1.19e-7


def soft_clamp(x: Tensor, upper: float) -> Tensor:
    """sc_c(x) = c - softplus(c - x): ~identity below c, saturates smoothly at c."""
    return upper - F.softplus(upper - x)


# ----------------------------------------------------------------------------- encoders


class ResBlock(nn.Module):
    """x + conv(silu(conv(silu(x)))), 3x3 convs, same width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class ConvEncoder(nn.Module):
    """Residual conv net: stem, then (res block, stride-2 conv) per stage, global pool, Linear."""

    def __init__(self, cfg: ModelConfig, out_features: int, bias: bool) -> None:
        super().__init__()
        widths = cfg.conv_channels
        layers: list[nn.Module] = [nn.Conv2d(1, widths[0], 3, padding=1)]
        for w_in, w_out in itertools.pairwise(widths):
            layers += [ResBlock(w_in), nn.SiLU(), nn.Conv2d(w_in, w_out, 3, stride=2, padding=1)]
        layers += [ResBlock(widths[-1]), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], out_features, bias=bias)
        self.input_shape = cfg.input_shape

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(x.view(-1, 1, *self.input_shape))  # (B, C, h, w); 16 -> 8 -> 4 by default
        return self.head(h.mean(dim=(2, 3)))  # (B, out)


class ConvDecoder(nn.Module):
    """Linear(K -> C*s*s), then (nearest x2 upsample, conv, res block) stages, then a 1x1 conv."""

    N_UPSAMPLINGS = 3  # 2 -> 4 -> 8 -> 16 for 16x16 patches

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c = cfg.dec_channels
        h, w = cfg.input_shape
        scale = 2**self.N_UPSAMPLINGS
        self.grid = (math.ceil(h / scale), math.ceil(w / scale))
        self.output_shape = (h, w)
        self.channels = c
        self.fc = nn.Linear(cfg.n_latents, c * self.grid[0] * self.grid[1])
        stages: list[nn.Module] = []
        for _ in range(self.N_UPSAMPLINGS):
            stages += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1), ResBlock(c)]
        stages += [nn.SiLU(), nn.Conv2d(c, 1, 1)]
        self.body = nn.Sequential(*stages)

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z).view(-1, self.channels, *self.grid)  # (B, C, s, s)
        img = self.body(h)[:, 0]  # (B, s*8, s*8)
        oh, ow = self.output_shape
        return img[:, :oh, :ow].reshape(z.shape[0], -1)  # (B, D)


def build_encoder(cfg: ModelConfig, out_features: int) -> nn.Module:
    if cfg.encoder == "lin":
        return nn.Linear(cfg.input_dim, out_features, bias=False)
    return ConvEncoder(cfg, out_features, bias=cfg.encoder == "conv+b")


def build_decoder(cfg: ModelConfig) -> nn.Module:
    if cfg.decoder == "lin":
        return nn.Linear(cfg.n_latents, cfg.input_dim, bias=False)
    return ConvDecoder(cfg)


# ----------------------------------------------------------------------------- latent families


@dataclass
class Posterior:
    """Posterior parameters for a batch. ``params`` holds the family's tensors, each (B, K)."""

    params: dict[str, Tensor]


class LatentFamily(nn.Module):
    """Interface of a latent family: the encoder outputs ``params_per_latent * K`` numbers."""

    params_per_latent = 1

    def posterior(self, enc_out: Tensor) -> Posterior:
        raise NotImplementedError

    def sample(
        self, post: Posterior, temperature: float, generator: torch.Generator | None = None,
    ) -> Tensor:
        """A latent sample; temperature 0 is the family's exact (non-relaxed) sample."""
        raise NotImplementedError

    def mean(self, post: Posterior) -> Tensor:
        """The deterministic code decoded for ``mse_map``."""
        raise NotImplementedError

    def kl(self, post: Posterior) -> Tensor:
        """KL(q(z|x) || p(z)) per latent, (B, K)."""
        raise NotImplementedError

    def features(self, post: Posterior) -> Tensor:
        """Features for downstream classification (docs/reproduction.md, "Geometry")."""
        raise NotImplementedError


class PoissonLatent(LatentFamily):
    """P-VAE: learnable prior log-rates; the encoder gives a log rate modulation."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        lo, hi = cfg.prior_init_range
        self.log_rate = nn.Parameter(torch.empty(cfg.n_latents).uniform_(lo, hi))  # (K,) prior log r
        self.log_rate_clamp = cfg.log_rate_clamp
        self.log_modulation_clamp = cfg.log_modulation_clamp
        self.n_exp = 263  # Algorithm 1 truncation; the trainer re-estimates it every epoch
        self.straight_through = False
        self.naive_sampler = False

    def posterior(self, enc_out: Tensor) -> Posterior:
        log_modulation = soft_clamp(enc_out, self.log_modulation_clamp)  # (B, K) log dr
        log_rate = soft_clamp(self.log_rate + log_modulation, self.log_rate_clamp)  # (B, K) log lambda
        rate = torch.exp(log_rate) + RATE_FLOOR  # (B, K) lambda
        return Posterior({"log_rate": log_rate, "rate": rate})

    def sample(self, post: Posterior, temperature: float, generator: torch.Generator | None = None) -> Tensor:
        rate = post.params["rate"].float()
        if temperature == 0:
            return exact_poisson(rate, generator)
        if self.naive_sampler:
            return relaxed_poisson_naive(rate, temperature, self.n_exp, generator)
        return relaxed_poisson(rate, temperature, self.n_exp, generator, self.straight_through)

    def mean(self, post: Posterior) -> Tensor:
        return post.params["rate"]

    def kl(self, post: Posterior) -> Tensor:
        # r f(dr) with f(y) = 1 - y + y log y and dr = lambda / r: exactly KL(Pois(lambda) || Pois(r)).
        # Using the effective dr of the clamped lambda keeps it the KL of the posterior actually used.
        rate = post.params["rate"]  # (B, K)
        prior_rate = torch.exp(self.log_rate)  # (K,)
        log_dr = torch.log(rate) - self.log_rate  # (B, K)
        dr = rate / prior_rate
        return prior_rate * (1.0 - dr + dr * log_dr)

    def features(self, post: Posterior) -> Tensor:
        return post.params["log_rate"]


class GaussianLatent(LatentFamily):
    """G-VAE: N(mu, sigma^2) posterior, N(0, 1) prior; optional ReLU on the latents."""

    params_per_latent = 2

    def __init__(self, cfg: ModelConfig, relu: bool = False) -> None:
        super().__init__()
        self.clamp = cfg.log_sigma_clamp
        self.relu = relu

    def posterior(self, enc_out: Tensor) -> Posterior:
        mu, log_sigma = enc_out.chunk(2, dim=-1)  # (B, K) each
        log_sigma = self.clamp * torch.tanh(log_sigma / self.clamp)
        return Posterior({"mu": mu, "log_sigma": log_sigma})

    def sample(self, post: Posterior, temperature: float, generator: torch.Generator | None = None) -> Tensor:
        # Evaluated at T = 1 (a sample), as in the paper; temperature only selects train vs eval.
        mu, log_sigma = post.params["mu"], post.params["log_sigma"]
        noise = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
        z = mu + torch.exp(log_sigma) * noise
        return F.relu(z) if self.relu else z

    def mean(self, post: Posterior) -> Tensor:
        mu = post.params["mu"]
        return F.relu(mu) if self.relu else mu

    def kl(self, post: Posterior) -> Tensor:
        mu, log_sigma = post.params["mu"], post.params["log_sigma"]
        return 0.5 * (mu**2 + torch.exp(2 * log_sigma) - 1.0) - log_sigma

    def features(self, post: Posterior) -> Tensor:
        return post.params["mu"]


class LaplaceLatent(LatentFamily):
    """L-VAE: Laplace(mu, b) posterior, Laplace(0, 1) prior."""

    params_per_latent = 2

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.clamp = cfg.log_sigma_clamp

    def posterior(self, enc_out: Tensor) -> Posterior:
        mu, log_b = enc_out.chunk(2, dim=-1)
        log_b = self.clamp * torch.tanh(log_b / self.clamp)
        return Posterior({"mu": mu, "log_b": log_b})

    def sample(self, post: Posterior, temperature: float, generator: torch.Generator | None = None) -> Tensor:
        mu, b = post.params["mu"], torch.exp(post.params["log_b"])
        u = torch.rand(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator) - 0.5
        u = u.clamp(-0.5 + 1e-7, 0.5 - 1e-7)  # keep log(1 - 2|u|) finite
        return mu - b * torch.sign(u) * torch.log1p(-2.0 * u.abs())

    def mean(self, post: Posterior) -> Tensor:
        return post.params["mu"]

    def kl(self, post: Posterior) -> Tensor:
        mu, log_b = post.params["mu"], post.params["log_b"]
        b = torch.exp(log_b)
        return b * torch.exp(-mu.abs() / b) + mu.abs() - log_b - 1.0

    def features(self, post: Posterior) -> Tensor:
        return post.params["mu"]


class CategoricalLatent(LatentFamily):
    """C-VAE: one categorical over K categories, relaxed one-hot (Gumbel-softmax), uniform prior."""

    def posterior(self, enc_out: Tensor) -> Posterior:
        return Posterior({"logits": torch.log_softmax(enc_out, dim=-1)})

    def sample(self, post: Posterior, temperature: float, generator: torch.Generator | None = None) -> Tensor:
        logits = post.params["logits"]
        if temperature == 0:
            index = torch.multinomial(logits.exp(), 1, generator=generator)  # (B, 1)
            return torch.zeros_like(logits).scatter_(1, index, 1.0)
        u = torch.rand(logits.shape, device=logits.device, dtype=logits.dtype, generator=generator)
        gumbel = -torch.log((-torch.log(u.clamp_min(1e-10))).clamp_min(1e-10))  # Gumbel(0, 1)
        return torch.softmax((logits + gumbel) / temperature, dim=-1)

    def mean(self, post: Posterior) -> Tensor:
        return post.params["logits"].exp()

    def kl(self, post: Posterior) -> Tensor:
        log_q = post.params["logits"]
        n = log_q.shape[-1]
        return log_q.exp() * (log_q + math.log(n))  # (B, K); sums to KL(q || uniform)

    def features(self, post: Posterior) -> Tensor:
        return post.params["logits"]


def build_latent(cfg: ModelConfig) -> LatentFamily:
    if cfg.latent == "poisson":
        return PoissonLatent(cfg)
    if cfg.latent in ("gaussian", "gaussian-relu"):
        return GaussianLatent(cfg, relu=cfg.latent == "gaussian-relu")
    if cfg.latent == "laplace":
        return LaplaceLatent(cfg)
    return CategoricalLatent()


# ----------------------------------------------------------------------------- the VAE


@dataclass
class VAEOutput:
    posterior: Posterior
    z: Tensor  # (B, K) the sample that was decoded (the rates themselves for the exact loss)
    recon: Tensor  # (B, D)
    kl: Tensor  # (B, K)
    #: (B,) sum_k lambda_k ||phi_k||^2, the Poisson noise term of the exact loss (None otherwise):
    #: E_z ||x - Phi z||^2 = ||x - Phi lambda||^2 + recon_variance.
    recon_variance: Tensor | None = None


class VAE(nn.Module):
    """encode -> sample -> decode. ``forward(x, temperature)``; temperature 0 samples exactly."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.latent = build_latent(cfg)
        self.encoder = build_encoder(cfg, cfg.n_latents * self.latent.params_per_latent)
        self.decoder = build_decoder(cfg)
        for layer in (self.encoder, self.decoder):
            if isinstance(layer, nn.Linear):  # the paper's init: N(0, 0.05^2) in the linear case
                nn.init.normal_(layer.weight, std=cfg.init_std)

    def encode(self, x: Tensor) -> Posterior:
        return self.latent.posterior(self.encoder(x.reshape(x.shape[0], -1)).float())

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def forward(
        self, x: Tensor, temperature: float, generator: torch.Generator | None = None, exact: bool = False,
    ) -> VAEOutput:
        """Encode, sample at ``temperature`` (0: exact counts) and decode.

        With ``exact`` (P-VAE with a linear decoder only, the paper's "exact" method) nothing is
        sampled: the rates are decoded and ``recon_variance`` carries the Poisson noise term, so
        that ``loss_terms`` returns the closed-form expected reconstruction error.
        """
        post = self.encode(x)
        if exact:
            if not isinstance(self.latent, PoissonLatent) or not isinstance(self.decoder, nn.Linear):
                raise TypeError("the exact loss needs Poisson latents and a linear decoder")
            rate = post.params["rate"]  # (B, K)
            variance = rate @ self.decoder.weight.pow(2).sum(0)  # (B,) sum_k lambda_k ||phi_k||^2
            return VAEOutput(post, rate, self.decode(rate), self.latent.kl(post), variance)
        z = self.latent.sample(post, temperature, generator)  # (B, K)
        return VAEOutput(post, z, self.decode(z), self.latent.kl(post))

    @property
    def dictionary(self) -> Tensor:
        """Phi, (D, K): column k is basis vector k (linear decoders only)."""
        if not isinstance(self.decoder, nn.Linear):
            raise TypeError("the dictionary is defined for linear decoders only")
        return self.decoder.weight


def reconstruction_error(x: Tensor, recon: Tensor) -> Tensor:
    """Sum over pixels of squared error, per sample: (B,)."""
    return (x.reshape(x.shape[0], -1) - recon).pow(2).sum(dim=-1)


def loss_terms(x: Tensor, out: VAEOutput, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, mse, kl), each averaged over the batch: loss = mse + beta * kl (the paper's beta-weighted NELBO).

    For an exact-loss output, mse is the expected error over Poisson counts (closed form).
    """
    error = reconstruction_error(x, out.recon.float())  # (B,)
    if out.recon_variance is not None:
        error = error + out.recon_variance.float()
    mse = error.mean()
    kl = out.kl.sum(dim=-1).mean()
    return mse + beta * kl, mse, kl


def expected_linear_reconstruction(x: Tensor, rate: Tensor, dictionary: Tensor) -> Tensor:
    """Closed form E_z ||x - Phi z||^2 for z ~ Poisson(rate): ||x - Phi lambda||^2 + sum lambda_k ||phi_k||^2."""
    mean_error = (x - rate @ dictionary.T).pow(2).sum(-1)  # (B,)
    return mean_error + rate @ dictionary.pow(2).sum(0)  # (B,)
