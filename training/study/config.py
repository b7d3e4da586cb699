"""What ``pvae-report`` trains and measures: plain-data configs and the smoke / quick / cpu / full presets.

    >>> cfg = cpu_config()                  # the whole study in <= 90 min on a 2-core CPU
    >>> cfg.patches.betas
    (0.01, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 4.0)

``full`` keeps the paper's budgets (docs: ``reproduction.md``) and is meant for a GPU; ``cpu`` and
``quick`` shorten every schedule to fit a 2-core CPU and say so in the report (the deviations are
computed from these configs, see :func:`deviations`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pvae.errors import ConfigError
from pvae.training.config import ENCODERS, ESCAPED_PRIOR_INIT, LATENTS, config_to_dict
from pvae.training.study.sparse_coding import METHODS

__all__ = [
    "PAPER_BATCH_PATCHES",
    "PAPER_BETAS",
    "PAPER_EPOCHS_IMAGES",
    "PAPER_EPOCHS_PATCHES",
    "PAPER_LABEL_BUDGETS",
    "PAPER_LATENTS_PATCHES",
    "PAPER_N_LATENTS_CLASSIFICATION",
    "PAPER_N_PATCHES",
    "PAPER_SEEDS",
    "PRESETS",
    "ClassificationStudy",
    "ImageStudy",
    "PatchStudy",
    "ReportConfig",
    "cpu_config",
    "deviations",
    "full_config",
    "quick_config",
    "smoke_config",
]

#: The paper's patch recipe (reproduction.md, "Training recipe").
PAPER_EPOCHS_PATCHES = 3000
PAPER_BATCH_PATCHES = 1000
PAPER_N_PATCHES = 100_000
PAPER_LATENTS_PATCHES = 512
#: Every table of the paper is a 5-seed mean.
PAPER_SEEDS = 5
#: The betas of the paper's sweep (reproduction.md, "P-VAE beta sweep").
PAPER_BETAS = (0.01, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 4.0)
#: The image schedule of the ``paper-images`` preset (training/config.py): 300 epochs, batch 200.
PAPER_EPOCHS_IMAGES = 300
#: K of the paper's geometry study (reproduction.md, "Geometry").
PAPER_N_LATENTS_CLASSIFICATION = (10, 50, 100)
#: Label budgets of the few-label kNN study and its repeats.
PAPER_LABEL_BUDGETS = (200, 1000, 5000)
PAPER_KNN_REPEATS = 100
#: The paper's conv encoder widths (training/config.py's default).
PAPER_CONV_CHANNELS = (32, 64, 128)
#: sklearn's digits has 1797 images: the kNN pool is the first half of a seeded permutation and the
#: evaluation set the second; the budgets keep the paper's 5x ratio at a smaller scale (our choice).
DIGITS_LABEL_BUDGETS = (40, 200, 800)
#: Training losses of the P-VAE rows of Table 4.
LOSSES = ("exact", "mc", "st")


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


@dataclass(frozen=True)
class PatchStudy:
    """The natural-patch study: the beta sweep, Table 4 (NELBO of every family, lin and conv encoders),
    active latents, Gabor fits, LCA/ISTA and LCA on the P-VAE's own dictionary."""

    n_latents: int = PAPER_LATENTS_PATCHES
    """K of every patch model (VAEs and sparse-coding dictionaries alike)."""
    n_patches: int = PAPER_N_PATCHES
    """Natural patches drawn in all (80/20 train/val by image blocks)."""
    batch_size: int = PAPER_BATCH_PATCHES
    """Batch size of every patch VAE."""
    epochs: int = PAPER_EPOCHS_PATCHES
    """Epochs of every lin-encoder P-VAE (the sweep and Table 4)."""
    baseline_epochs: int = PAPER_EPOCHS_PATCHES
    """Epochs of the lin-encoder G-, L- and C-VAE (cheap: no sampler), so that they converge."""
    conv_epochs: int = PAPER_EPOCHS_PATCHES
    """Epochs of every conv-encoder model of Table 4."""
    conv_channels: tuple[int, ...] = PAPER_CONV_CHANNELS
    """Widths of the conv encoder's stages (Table 4's conv row)."""
    lr: float = 0.005
    """Peak Adamax learning rate (paper: 0.005)."""
    init_std: float = 0.05
    """Std of the linear weights' normal init (paper: 0.05)."""
    prior_log_rate_init: tuple[float, float] | None = None
    """P-VAE prior log-rate init range; None: the paper's U(-6, -4)."""
    betas: tuple[float, ...] = PAPER_BETAS
    """The P-VAE beta sweep."""
    seeds: int = PAPER_SEEDS
    """Seeds of the beta sweep (the trend test's CI is over them)."""
    sweep_loss: str = "mc"
    """Training loss of the sweep's P-VAEs: mc (the paper's main results) or exact (the same NELBO)."""
    reference_beta: float = 1.0
    """Beta of Table 4, the baselines and the active-latent and Gabor comparisons (one of ``betas``)."""
    losses: tuple[str, ...] = LOSSES
    """P-VAE training methods of Table 4 (exact, mc, st)."""
    baselines: tuple[str, ...] = ("gaussian", "laplace", "categorical")
    """Baseline latent families of Table 4 (also: gaussian-relu)."""
    encoders: tuple[str, ...] = ("lin", "conv")
    """Encoders of Table 4 (the decoder is linear throughout)."""
    max_val_samples: int = 10_000
    """Validation patches used by every evaluation."""
    gabor_filters: int = 128
    """At most this many active basis vectors per model get a Gabor fit (most used first)."""
    sparse_coding: tuple[tuple[str, float], ...] = (("lca", 0.5), ("ista", 1.0))
    """Sparse-coding references: (method, lam) pairs, each with its own learned dictionary."""
    sc_epochs: int = 20
    """Dictionary-learning epochs."""
    sc_batch_size: int = 250
    """Dictionary-learning batch size."""
    sc_lr: float = 0.5
    """Dictionary step size (per-atom preconditioned; decays linearly to a tenth)."""
    sc_train_iterations: int = 100
    """Inference iterations per dictionary update."""
    sc_eval_iterations: int = 300
    """Inference iterations when evaluating codes (and on the P-VAE's dictionary)."""
    amortisation_lambdas: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8)
    """LCA thresholds on the P-VAE's dictionary, as fractions of the median per-sample max of Phi^T x."""
    amortisation_samples: int = 4000
    """Validation patches coded by LCA on the P-VAE's dictionary and by sparse coding at evaluation."""

    def __post_init__(self) -> None:
        _require(self.n_latents >= 2, "patches.n_latents", "must be >= 2")
        _require(min(self.epochs, self.baseline_epochs, self.conv_epochs, self.batch_size) >= 1, "patches.epochs",
                 "epochs and batch size must be >= 1")
        _require(len(self.betas) >= 2 and all(b > 0 for b in self.betas), "patches.betas",
                 "a sweep needs at least two positive betas")
        _require(list(self.betas) == sorted(set(self.betas)), "patches.betas", "must increase")
        _require(self.seeds >= 1, "patches.seeds", "must be >= 1")
        _require(self.sweep_loss in ("mc", "exact"), "patches.sweep_loss", "mc or exact")
        _require(self.reference_beta in self.betas, "patches.reference_beta", f"must be one of {self.betas}")
        _require(set(self.losses) <= set(LOSSES) and self.sweep_loss in self.losses, "patches.losses",
                 f"a subset of {LOSSES} holding the sweep's loss")
        for family in self.baselines:
            _require(family in LATENTS and family != "poisson", "patches.baselines", f"unknown {family!r}")
        for enc in self.encoders:
            _require(enc in ENCODERS, "patches.encoders", f"unknown encoder {enc!r}")
        _require("lin" in self.encoders, "patches.encoders", "the lin encoder is required (the claims use it)")
        for method, lam in self.sparse_coding:
            _require(method in METHODS and lam > 0, "patches.sparse_coding", f"bad entry {(method, lam)!r}")
        _require(len(self.amortisation_lambdas) >= 2 and all(f > 0 for f in self.amortisation_lambdas),
                 "patches.amortisation_lambdas", "need >= 2 positive fractions")
        _require(self.gabor_filters >= 1, "patches.gabor_filters", "must be >= 1")
        _require(self.max_val_samples >= 2 and self.amortisation_samples >= 2, "patches.max_val_samples",
                 "need >= 2 samples")


@dataclass(frozen=True)
class ImageStudy:
    """Training schedule and label budgets for one labelled dataset (defaults: the paper's)."""

    dataset: str = "fashion-mnist"
    """fashion-mnist or digits (MNIST is not available offline)."""
    epochs: int = PAPER_EPOCHS_IMAGES
    """Epochs of every model on this dataset."""
    batch_size: int = 200
    """Batch size (paper: 200)."""
    lr: float = 0.002
    """Peak learning rate (paper: 0.002)."""
    weight_decay: float = 3e-4
    """Adamax weight decay (paper: 3e-4)."""
    grad_clip: float = 1000.0
    """Gradient-norm clip (paper: 1000)."""
    beta_hold_fraction: float = 0.01
    """Fraction of training at beta 1e-4 before annealing (paper: 0.01 for non-linear decoders)."""
    budgets: tuple[int, ...] = PAPER_LABEL_BUDGETS
    """Label budgets N of the kNN study; the first two are compared for the "5x labels" claim."""
    pool_size: int = 5000
    """The first ``pool_size`` test images are the labelled pool, the rest the kNN evaluation set (paper:
    5000 of MNIST's 10k); for digits, of a seeded permutation of all 1797 images."""
    shattering_train_samples: int | None = None
    """Training-set images the shattering regressions are fitted on (stratified; None: all)."""

    def __post_init__(self) -> None:
        _require(self.dataset in ("fashion-mnist", "digits"), "dataset", f"unknown {self.dataset!r}")
        _require(self.epochs >= 1 and self.batch_size >= 1, f"{self.dataset}.epochs", "must be >= 1")
        _require(len(self.budgets) >= 2 and list(self.budgets) == sorted(set(self.budgets)),
                 f"{self.dataset}.budgets", "need >= 2 increasing budgets")
        _require(self.budgets[-1] <= self.pool_size, f"{self.dataset}.budgets", "must fit in the labelled pool")


@dataclass(frozen=True)
class ClassificationStudy:
    """Few-label kNN and shattering dimensionality on labelled images, per K and latent family."""

    datasets: tuple[ImageStudy, ...] = (
        ImageStudy("fashion-mnist"),
        ImageStudy("digits", epochs=2000, batch_size=100, budgets=DIGITS_LABEL_BUDGETS, pool_size=898),
    )
    """Labelled datasets and their schedules."""
    n_latents: tuple[int, ...] = PAPER_N_LATENTS_CLASSIFICATION
    """K values studied."""
    families: tuple[str, ...] = ("poisson", "gaussian", "laplace", "categorical")
    """Latent families compared (poisson and gaussian are required for the verdict)."""
    arch: str = "conv+b|lin"
    """Encoder|decoder of every classification model (a nonlinear encoder: a linear one makes every
    family's features linear projections of the pixels)."""
    conv_channels: tuple[int, ...] = PAPER_CONV_CHANNELS
    """Widths of the conv encoder's stages."""
    prior_log_rate_init: tuple[float, float] | None = None
    """P-VAE prior log-rate init range; None: the paper's U(-6, -4) (linear decoder)."""
    knn_repeats: int = PAPER_KNN_REPEATS
    """Random label draws per budget (the largest budget uses the whole pool once)."""

    def __post_init__(self) -> None:
        _require(len(self.datasets) >= 1, "classification.datasets", "need at least one dataset")
        _require(len(self.n_latents) >= 1 and all(k >= 1 for k in self.n_latents), "classification.n_latents",
                 "need K >= 1")
        for family in self.families:
            _require(family in LATENTS, "classification.families", f"unknown {family!r}")
        _require("poisson" in self.families and "gaussian" in self.families, "classification.families",
                 "the claims compare poisson with gaussian: both are required")
        enc, _, dec = self.arch.partition("|")
        _require(enc in ENCODERS and dec == "lin", "classification.arch",
                 f"bad arch {self.arch!r}: an encoder in {ENCODERS} and a lin decoder")
        _require(self.knn_repeats >= 2, "classification.knn_repeats", "need >= 2 for a CI")


@dataclass(frozen=True)
class ReportConfig:
    """Everything one ``pvae-report`` run does. ``patches`` or ``classification`` may be None (skipped)."""

    mode: str = "full"
    """Name of the preset (smoke, quick, cpu, full), printed in the report."""
    patches: PatchStudy | None = field(default_factory=PatchStudy)
    """The natural-patch study."""
    classification: ClassificationStudy | None = field(default_factory=ClassificationStudy)
    """The labelled-image study."""
    device: str = "auto"
    """Where to train: auto | cpu | cuda | cuda:N."""
    seed: int = 0
    """Seed of the first model of every kind; further seeds count up from it."""

    def to_dict(self) -> dict[str, object]:
        return config_to_dict(self)


def full_config(device: str = "auto", seed: int = 0) -> ReportConfig:
    """The paper's budgets on every model: a GPU job (~2 GPU-hours per patch P-VAE, 40 of them)."""
    return ReportConfig(mode="full", device=device, seed=seed)


def cpu_config(device: str = "cpu", seed: int = 0) -> ReportConfig:
    """Every protocol of the paper, with budgets chosen to fit 90 minutes on a 2-core CPU (one thread).

    The sizes, measured on this machine's CPU (one thread, lin|lin K = 512): an exact P-VAE step at batch
    500 takes ~13 ms on a quiet machine and ~32 ms at load 3, an mc step twice that, a conv|lin step with
    the narrow encoder ~75 ms (quiet); a conv+b|lin Fashion-MNIST step at batch 200 ~70 ms (quiet). The
    budget leaves room for a machine that is busy with something else.
    """
    patches = PatchStudy(
        n_patches=50_000, batch_size=500, epochs=50, baseline_epochs=50, conv_epochs=15,
        conv_channels=(8, 16, 32), prior_log_rate_init=ESCAPED_PRIOR_INIT, seeds=2, sweep_loss="exact",
        max_val_samples=4000, gabor_filters=64, sc_epochs=2, sc_train_iterations=50, sc_eval_iterations=200,
        amortisation_samples=2000,
    )
    classification = ClassificationStudy(
        datasets=(
            ImageStudy("fashion-mnist", epochs=2, lr=0.005, shattering_train_samples=10_000),
            ImageStudy("digits", epochs=200, batch_size=100, lr=0.005, budgets=DIGITS_LABEL_BUDGETS, pool_size=898),
        ),
        conv_channels=(8, 16, 32), prior_log_rate_init=ESCAPED_PRIOR_INIT,
    )
    return ReportConfig(mode="cpu", patches=patches, classification=classification, device=device, seed=seed)


def quick_config(device: str = "cpu", seed: int = 0) -> ReportConfig:
    """Every study on small budgets: under 10 minutes on a 2-core CPU (the numbers are indicative)."""
    patches = PatchStudy(
        n_patches=20_000, batch_size=500, epochs=15, baseline_epochs=15, conv_epochs=2, conv_channels=(8, 16, 32),
        prior_log_rate_init=ESCAPED_PRIOR_INIT, betas=(0.01, 0.4, 1.0, 4.0), seeds=2, sweep_loss="exact",
        losses=("exact", "mc"), max_val_samples=2000, gabor_filters=32, sc_epochs=1, sc_train_iterations=30,
        sc_eval_iterations=100, amortisation_lambdas=(0.05, 0.1, 0.2, 0.4, 0.8), amortisation_samples=1000,
    )
    classification = ClassificationStudy(
        datasets=(
            ImageStudy("fashion-mnist", epochs=1, lr=0.005, budgets=(200, 1000), shattering_train_samples=3000),
            ImageStudy("digits", epochs=30, batch_size=100, lr=0.005, budgets=DIGITS_LABEL_BUDGETS, pool_size=898),
        ),
        n_latents=(10, 100), families=("poisson", "gaussian"), conv_channels=(8, 16, 32),
        prior_log_rate_init=ESCAPED_PRIOR_INIT, knn_repeats=20,
    )
    return ReportConfig(mode="quick", patches=patches, classification=classification, device=device, seed=seed)


def smoke_config(device: str = "cpu", seed: int = 0) -> ReportConfig:
    """Seconds: every code path on toy sizes (for tests; the numbers mean nothing)."""
    patches = PatchStudy(
        n_latents=16, n_patches=600, batch_size=100, epochs=1, baseline_epochs=1, conv_epochs=1,
        conv_channels=(4, 8), betas=(1.0, 2.0), seeds=2, sweep_loss="exact", losses=("exact", "mc"),
        baselines=("gaussian", "categorical"), max_val_samples=100, gabor_filters=3,
        sparse_coding=(("lca", 0.5), ("ista", 0.5)), sc_epochs=1, sc_batch_size=100, sc_train_iterations=5,
        sc_eval_iterations=10, amortisation_lambdas=(0.1, 0.4), amortisation_samples=100,
    )
    classification = ClassificationStudy(
        datasets=(ImageStudy("digits", epochs=1, batch_size=200, lr=0.005, budgets=(20, 100), pool_size=400,
                             shattering_train_samples=400),),
        n_latents=(4,), families=("poisson", "gaussian"), arch="conv+b|lin", conv_channels=(4, 8), knn_repeats=2,
    )
    return ReportConfig(mode="smoke", patches=patches, classification=classification, device=device, seed=seed)


#: The presets of ``pvae-report``, by flag.
PRESETS = {"smoke": smoke_config, "quick": quick_config, "cpu": cpu_config, "full": full_config}


def deviations(cfg: ReportConfig) -> list[str]:
    """Where ``cfg`` departs from the paper's protocol, one sentence each (computed, for the report)."""
    notes: list[str] = []
    p = cfg.patches
    if p is not None:
        n_train = int(p.n_patches * 0.8)
        if (p.epochs, p.batch_size, p.n_patches) != (PAPER_EPOCHS_PATCHES, PAPER_BATCH_PATCHES, PAPER_N_PATCHES):
            steps = p.epochs * max(1, n_train // p.batch_size)
            notes.append(f"Patch P-VAEs train for {p.epochs} epochs of ~{n_train} patches at batch {p.batch_size} "
                         f"(~{steps} steps; paper: {PAPER_EPOCHS_PATCHES} epochs of 80,000 at batch "
                         f"{PAPER_BATCH_PATCHES}, 240,000 steps); G/L/C-VAEs {p.baseline_epochs} epochs, conv-encoder "
                         f"models {p.conv_epochs}. The paper-era schedules (warm-up, oscillating cosine, beta and "
                         "temperature annealing over the first half) are scaled to these lengths.")
        if p.prior_log_rate_init is not None:
            lo, hi = p.prior_log_rate_init
            notes.append(f"P-VAE prior log-rates start in U({lo:g}, {hi:g}), not the paper's U(-6, -4): at short "
                         "budgets the paper's init stays at its starting prior (docs/training.md, 'Why the P-VAE "
                         "stayed at its starting prior').")
        if p.seeds < PAPER_SEEDS:
            notes.append(f"The beta sweep uses {p.seeds} seed(s) per beta; Table 4 and the other patch models one "
                         f"(paper: {PAPER_SEEDS}-seed means everywhere).")
        if p.sweep_loss != "mc":
            notes.append(f"The beta sweep trains with the {p.sweep_loss} loss (paper: mc; Table 4 shows that both "
                         "reach the same NELBO).")
        if tuple(p.betas) != PAPER_BETAS:
            notes.append(f"Betas {', '.join(f'{b:g}' for b in p.betas)} only (paper: "
                         f"{', '.join(f'{b:g}' for b in PAPER_BETAS)}).")
        if p.n_latents != PAPER_LATENTS_PATCHES:
            notes.append(f"Patch models have K = {p.n_latents} latents (paper: {PAPER_LATENTS_PATCHES}).")
        if "conv" in p.encoders and tuple(p.conv_channels) != PAPER_CONV_CHANNELS:
            notes.append(f"Conv encoders are narrower than the paper's ({', '.join(map(str, p.conv_channels))} "
                         f"channels against {', '.join(map(str, PAPER_CONV_CHANNELS))}), to fit the CPU budget.")
        notes.append("Natural patches come from scikit-image's bundled photographs, not van Hateren's images; our "
                     "whitening is the textbook filter (f0 = 0.4), the official code's is an odd band-pass.")
    c = cfg.classification
    if c is not None:
        notes.append("MNIST is not available offline: Fashion-MNIST (harder) stands in for it, and sklearn's digits "
                     "(8x8, 1797 images) is the second dataset; kNN on digits uses a seeded half/half pool/evaluation "
                     f"split of all images with budgets {', '.join(map(str, DIGITS_LABEL_BUDGETS))} (5x ratio kept).")
        if c.prior_log_rate_init is not None:
            lo, hi = c.prior_log_rate_init
            notes.append(f"Geometry P-VAEs also start their prior log-rates in U({lo:g}, {hi:g}), for the same reason.")
        if tuple(c.conv_channels) != PAPER_CONV_CHANNELS:
            notes.append(f"Geometry models use {c.arch} with narrow conv encoders "
                         f"({', '.join(map(str, c.conv_channels))} channels).")
        for study in c.datasets:
            if study.epochs < PAPER_EPOCHS_IMAGES and study.dataset == "fashion-mnist":
                notes.append(f"{study.dataset}: {study.epochs} epoch(s) (paper schedule: {PAPER_EPOCHS_IMAGES}), "
                             f"lr {study.lr}.")
            if study.shattering_train_samples is not None:
                notes.append(f"{study.dataset}: the shattering regressions are fitted on "
                             f"{study.shattering_train_samples} training images (stratified; paper: all).")
            if study.dataset == "fashion-mnist" and tuple(study.budgets) != PAPER_LABEL_BUDGETS:
                notes.append(f"{study.dataset}: label budgets {', '.join(map(str, study.budgets))} only.")
        if tuple(c.n_latents) != PAPER_N_LATENTS_CLASSIFICATION:
            notes.append(f"K in {{{', '.join(map(str, c.n_latents))}}} only "
                         f"(paper: {', '.join(map(str, PAPER_N_LATENTS_CLASSIFICATION))}).")
        if c.knn_repeats < PAPER_KNN_REPEATS:
            notes.append(f"kNN: {c.knn_repeats} label draws per budget (paper: {PAPER_KNN_REPEATS}).")
        missing = [f for f in ("laplace", "categorical") if f not in c.families]
        if missing:
            notes.append(f"Geometry compares {', '.join(c.families)} only (not {', '.join(missing)}).")
    return notes
