"""Plain-data configuration: the model, the optimisation schedule and the presets.

Configs are frozen dataclasses, validated on construction, with no side effects. The CLI
(`pvae-train`) mirrors every field one to one (``--field value``), and a checkpoint stores
them as dicts, so a model can be rebuilt without the training code.

    >>> cfg = ModelConfig(arch="lin|lin", n_latents=512)
    >>> TrainConfig(model=cfg, epochs=10).model.n_latents
    512
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pvae.errors import ConfigError

#: Encoder and decoder kinds understood by ``ModelConfig.arch`` ("enc|dec").
ENCODERS = ("lin", "conv", "conv+b")
DECODERS = ("lin", "conv")
#: Latent families: P-VAE and its baselines (Vafaii, Galor & Yates, NeurIPS 2024; docs/reproduction.md, "Numbers").
LATENTS = ("poisson", "gaussian", "gaussian-relu", "laplace", "categorical")
#: Training losses (paper Table 4): mc = Algorithm 1's relaxed samples; exact = the closed-form
#: expected reconstruction of a linear decoder under Poisson latents (no sampling at all).
LOSSES = ("mc", "exact")
#: Learning-rate schedules: cosine = warm-up then one cosine to lr_min over the run; paper = the
#: paper-era code's CosineAnnealingLR with T_max in epochs but stepped every iteration, so the rate
#: oscillates between lr and lr_min with a period of 2 * T_max steps.
LR_SCHEDULES = ("cosine", "paper")
DEVICES_HELP = "auto | cpu | cuda | cuda:N"


def _check(cond: bool, name: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {message}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a VAE with a pluggable latent family."""

    arch: str = "lin|lin"
    """Encoder and decoder, written ``enc|dec``: enc in lin, conv, conv+b; dec in lin, conv."""
    latent: str = "poisson"
    """Latent family: poisson (P-VAE), gaussian, gaussian-relu, laplace or categorical."""
    n_latents: int = 512
    """K, the number of latents (512 for linear decoders on 16x16 patches)."""
    input_shape: tuple[int, int] = (16, 16)
    """Height and width of one input (a 16x16 patch, a 28x28 image, ...)."""
    log_rate_clamp: float = 5.3
    """Soft upper clamp c of log lambda (paper 5.3; the authors' later code uses 5.0)."""
    log_modulation_clamp: float = 10.0
    """Soft upper clamp of the log rate modulation log dr = sc(u)."""
    prior_log_rate_init: tuple[float, float] | None = None
    """Uniform init range of the prior log-rates; None: [-6,-4] for lin decoders, else [-6,-2]."""
    init_std: float = 0.05
    """Std of the N(0, std^2) init of linear encoder and decoder weights."""
    conv_channels: tuple[int, ...] = (32, 64, 128)
    """Widths of the conv encoder stages (one stride-2 downsampling between stages)."""
    dec_channels: int = 64
    """Width of the conv decoder's upsampling stages."""
    log_sigma_clamp: float = 5.3
    """G-VAE: log sigma is soft-limited to +-this via c*tanh(log sigma / c)."""

    def __post_init__(self) -> None:
        enc, sep, dec = self.arch.partition("|")
        _check(sep == "|", "arch", f"expected 'enc|dec', got {self.arch!r}")
        _check(enc in ENCODERS, "arch", f"unknown encoder {enc!r}; choose from {', '.join(ENCODERS)}")
        _check(dec in DECODERS, "arch", f"unknown decoder {dec!r}; choose from {', '.join(DECODERS)}")
        _check(self.latent in LATENTS, "latent", f"unknown family {self.latent!r}; choose from {LATENTS}")
        _check(1 <= self.n_latents <= 65536, "n_latents", f"must be in [1, 65536], got {self.n_latents}")
        _check(
            len(self.input_shape) == 2 and all(2 <= s <= 4096 for s in self.input_shape),
            "input_shape",
            f"must be (H, W) with sides in [2, 4096], got {self.input_shape}",
        )
        _check(0 < self.log_rate_clamp <= 20, "log_rate_clamp", "must be in (0, 20]")
        _check(0 < self.log_modulation_clamp <= 50, "log_modulation_clamp", "must be in (0, 50]")
        if self.prior_log_rate_init is not None:
            lo, hi = self.prior_log_rate_init
            _check(lo <= hi, "prior_log_rate_init", f"low {lo} exceeds high {hi}")
            _check(self.latent == "poisson", "prior_log_rate_init",
                   f"only the P-VAE has prior log-rates, got {self.latent} latents")
        _check(self.init_std > 0, "init_std", "must be > 0")
        _check(len(self.conv_channels) >= 1 and min(self.conv_channels) >= 1, "conv_channels", "need >= 1 stage")
        _check(self.dec_channels >= 1, "dec_channels", "must be >= 1")

    @property
    def encoder(self) -> str:
        return self.arch.split("|")[0]

    @property
    def decoder(self) -> str:
        return self.arch.split("|")[1]

    @property
    def input_dim(self) -> int:
        """D, the number of pixels of one input."""
        return self.input_shape[0] * self.input_shape[1]

    @property
    def prior_init_range(self) -> tuple[float, float]:
        if self.prior_log_rate_init is not None:
            return self.prior_log_rate_init
        # The paper's prior init: [-6, -4] for linear decoders, [-6, -2] otherwise.
        return (-6.0, -4.0) if self.decoder == "lin" else (-6.0, -2.0)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run, besides the data's own preprocessing config."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The model to train."""
    data: str = "patches"
    """Dataset: patches (scikit-image's natural images), fashion-mnist, digits, or a path."""
    n_patches: int = 100_000
    """Natural-patch datasets: patches drawn in all (80/20 train/val split by image blocks)."""
    epochs: int = 20
    """Passes over the training set."""
    batch_size: int = 1000
    """Samples per optimisation step (the global batch when running on several processes)."""
    lr: float = 0.005
    """Peak learning rate (Adamax)."""
    warmup_fraction: float = 0.02
    """Fraction of steps of linear learning-rate warm-up (ignored when warmup_epochs is set)."""
    warmup_epochs: float | None = None
    """Linear learning-rate warm-up in epochs (paper era: 5); None uses warmup_fraction."""
    lr_schedule: str = "cosine"
    """After warm-up: cosine (one decay to lr_min over the run) or paper (oscillating, see docs)."""
    lr_min: float = 0.0
    """Floor of the cosine (paper era: 1e-5)."""
    prior_lr_multiplier: float = 1.0
    """Learning rate of the P-VAE prior log-rates, as a multiple of lr (1: the paper's)."""
    weight_decay: float = 0.0
    """Adamax weight decay (the paper uses 3e-4 on MNIST-style images)."""
    grad_clip: float = 500.0
    """Gradient-norm clip (paper: 500 on patches, 1000 on images)."""
    warmup_clip_multiplier: float = 1.0
    """The clip is this many times grad_clip during warm-up (paper era: 3)."""
    loss: str = "mc"
    """Training loss: mc (relaxed samples, Algorithm 1) or exact (linear decoder, Poisson latents only)."""
    beta: float = 1.0
    """Target KL weight."""
    beta_start: float = 1e-4
    """KL weight held during the first ``beta_hold_fraction`` of training."""
    beta_hold_fraction: float = 0.0
    """Fraction c of training at ``beta_start`` (paper: 0 for linear decoders, 0.01 otherwise)."""
    beta_anneal_fraction: float = 0.5
    """Fraction of training over which beta rises linearly to its target, after the hold."""
    temperature_start: float = 1.0
    """Relaxation temperature at step 0."""
    temperature_end: float = 0.05
    """Temperature after annealing (paper: 0.05 for Poisson, 0.1 for categorical)."""
    temperature_anneal_fraction: float = 0.5
    """Fraction of training over which the temperature falls linearly, then stays constant."""
    straight_through: bool = False
    """Hard (exact count) forward pass with the relaxed gradient."""
    n_exp_init: int = 263
    """Initial truncation of Algorithm 1: the (1-1e-5) quantile of Poisson(200)."""
    sampler: str = "fast"
    """Relaxed sampler implementation: fast (adaptive, O(B*K) memory) or naive (Algorithm 1 as written)."""
    device: str = "auto"
    """Where to train: auto | cpu | cuda | cuda:N."""
    amp: bool = True
    """Mixed precision (bf16 autocast of the encoder and decoder) when on CUDA; ignored on CPU."""
    seed: int = 0
    """Seed of parameter init, batching and sampling; CPU runs repeat exactly."""
    eval_every: int = 1
    """Validate (at temperature 0, exact Poisson counts) every this many epochs."""
    max_val_samples: int = 20_000
    """Validation samples used per evaluation."""
    log_every: int = 10
    """Progress-bar refresh interval in steps."""

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.n_patches >= 100, "n_patches", f"must be >= 100, got {self.n_patches}")
        _check(self.lr > 0, "lr", "must be > 0")
        _check(0 <= self.warmup_fraction < 1, "warmup_fraction", "must be in [0, 1)")
        if self.warmup_epochs is not None:
            _check(0 <= self.warmup_epochs < self.epochs, "warmup_epochs",
                   f"must be in [0, epochs={self.epochs}), got {self.warmup_epochs}")
        _check(self.lr_schedule in LR_SCHEDULES, "lr_schedule",
               f"unknown {self.lr_schedule!r}; choose from {', '.join(LR_SCHEDULES)}")
        _check(0 <= self.lr_min <= self.lr, "lr_min", f"must be in [0, lr={self.lr}], got {self.lr_min}")
        _check(self.prior_lr_multiplier > 0, "prior_lr_multiplier", "must be > 0")
        _check(self.prior_lr_multiplier == 1.0 or self.model.latent == "poisson", "prior_lr_multiplier",
               f"only the P-VAE has learnable prior log-rates, got {self.model.latent} latents")
        _check(self.warmup_clip_multiplier >= 1, "warmup_clip_multiplier", "must be >= 1")
        _check(self.loss in LOSSES, "loss", f"unknown {self.loss!r}; choose from {', '.join(LOSSES)}")
        if self.loss == "exact":
            _check(self.model.latent == "poisson" and self.model.decoder == "lin", "loss",
                   f"exact needs Poisson latents and a linear decoder (the closed form E||x - Phi z||^2), "
                   f"got {self.model.latent} latents with arch {self.model.arch}; use --loss mc")
            _check(not self.straight_through, "loss", "exact has no samples: --straight-through needs --loss mc")
            _check(self.sampler == "fast", "loss", "exact has no sampler: --sampler naive needs --loss mc")
        _check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _check(self.grad_clip > 0, "grad_clip", "must be > 0")
        _check(self.beta >= 0 and self.beta_start >= 0, "beta", "must be >= 0")
        for name in ("beta_hold_fraction", "beta_anneal_fraction", "temperature_anneal_fraction"):
            value = getattr(self, name)
            _check(0 <= value <= 1, name, f"must be in [0, 1], got {value}")
        _check(self.beta_hold_fraction + self.beta_anneal_fraction <= 1, "beta_anneal_fraction",
               "hold + anneal fractions must not exceed 1")
        _check(self.temperature_start > 0 and self.temperature_end > 0, "temperature",
               "start and end must be > 0 (temperature 0 is exact sampling, used for evaluation)")
        _check(1 <= self.n_exp_init <= 100_000, "n_exp_init", "must be in [1, 100000]")
        _check(self.sampler in ("fast", "naive"), "sampler", "must be fast or naive")
        _check(self.eval_every >= 1, "eval_every", "must be >= 1")
        _check(self.max_val_samples >= 1, "max_val_samples", "must be >= 1")
        _check(self.log_every >= 1, "log_every", "must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return config_from_dict(cls, data)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain JSON-able data (tuples become lists)."""
    return json_safe(dataclasses.asdict(cfg))


def json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) config dataclass from ``config_to_dict`` output, refusing unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = config_from_dict(hint, value)  # type: ignore[arg-type]
        elif isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


# ----------------------------------------------------------------------------- presets
# Presets are functions returning a config, so they are plain data and easy to override.

#: The optimisation schedule of the paper-era code (docs/reproduction.md, "Training recipe").
PAPER_ERA_SCHEDULE: dict[str, Any] = {
    "lr_schedule": "paper", "warmup_epochs": 5.0, "lr_min": 1e-5, "grad_clip": 500.0, "warmup_clip_multiplier": 3.0,
}


#: The documented deviation from the paper's recipe (README, "Training"): under the paper-era
#: schedule the prior log-rates initialised in U(-6, -4) barely move in thousands of steps (the
#: model stays at its starting prior, lifetime sparsity ~0.98), so the shipped recipes start them
#: in U(-2, -1) (prior rates 0.14-0.37) instead.
ESCAPED_PRIOR_INIT = (-2.0, -1.0)


def preset_quick() -> TrainConfig:
    """lin|lin P-VAE, K=512, on natural patches: the shipped recipe, shortened to ~1 minute on 2 cores."""
    return TrainConfig(
        model=ModelConfig(arch="lin|lin", n_latents=512, prior_log_rate_init=ESCAPED_PRIOR_INIT),
        n_patches=20_000,
        epochs=15,
        batch_size=500,
        lr=0.005,
        loss="exact",
        max_val_samples=4000,
        **{**PAPER_ERA_SCHEDULE, "warmup_epochs": 1.0},
    )


def preset_default_model() -> TrainConfig:
    """The bundled default model: lin|lin, K=512, natural patches, the paper-era schedule with the
    exact loss and the escaped prior init, 300 epochs (24,000 steps of 1000 patches)."""
    return TrainConfig(
        model=ModelConfig(arch="lin|lin", n_latents=512, prior_log_rate_init=ESCAPED_PRIOR_INIT),
        n_patches=100_000,
        epochs=300,
        batch_size=1000,
        lr=0.005,
        loss="exact",
        max_val_samples=10_000,
        eval_every=10,
        **PAPER_ERA_SCHEDULE,
    )


def preset_paper_patches() -> TrainConfig:
    """The paper-era recipe on natural patches (docs/reproduction.md), unchanged: a GPU run.

    3000 epochs of 80 steps of 1000 patches, Adamax lr 0.005, 5-epoch warm-up with the clip at
    3 x 500, the oscillating cosine (T_max in epochs, stepped per iteration, floor 1e-5), prior
    log-rates initialised in U(-6, -4), relaxed samples (mc).
    """
    return TrainConfig(
        model=ModelConfig(arch="lin|lin", n_latents=512),
        n_patches=100_000,
        epochs=3000,
        batch_size=1000,
        lr=0.005,
        **PAPER_ERA_SCHEDULE,
    )


def preset_paper_images() -> TrainConfig:
    """The paper's MNIST-style defaults, on Fashion-MNIST (MNIST is not available offline)."""
    return TrainConfig(
        model=ModelConfig(arch="conv|lin", n_latents=10, input_shape=(28, 28)),
        data="fashion-mnist",
        epochs=300,
        batch_size=200,
        lr=0.002,
        weight_decay=3e-4,
        grad_clip=1000.0,
        beta_hold_fraction=0.01,
    )


def preset_tiny() -> TrainConfig:
    """Seconds on a CPU: for tests and smoke runs."""
    return TrainConfig(
        model=ModelConfig(arch="lin|lin", n_latents=64),
        n_patches=4000,
        epochs=3,
        batch_size=100,
        lr=0.02,
        beta_anneal_fraction=0.0,  # the objective is fixed from step 0, so the loss curve is comparable
        max_val_samples=800,
    )


PRESETS: dict[str, Callable[[], TrainConfig]] = {
    "quick": preset_quick,
    "default-model": preset_default_model,
    "paper-patches": preset_paper_patches,
    "paper-images": preset_paper_images,
    "tiny": preset_tiny,
}


def get_preset(name: str) -> TrainConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"preset: unknown {name!r}; choose from {', '.join(PRESETS)}") from None
