"""What ``pvae-report`` trains and measures: plain-data configs and the quick / full presets.

    >>> cfg = quick_config(device="cpu")            # <= 20 min on a 2-core CPU
    >>> cfg.patches.betas, cfg.classification.n_latents
    ((0.5, 1.0, 2.0, 4.0), (10, 100))

The full preset follows the paper's schedules (pvae-model.md, "Training defaults of the paper") and is
meant for a GPU; the quick preset shortens every schedule and says so in the report (the deviations
are computed from these configs, see :func:`deviations`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pvae.errors import ConfigError
from pvae.training.config import DECODERS, ENCODERS, LATENTS, config_to_dict
from pvae.training.sparse_coding import METHODS

__all__ = [
    "PAPER_BATCH_PATCHES",
    "PAPER_EPOCHS_IMAGES",
    "PAPER_EPOCHS_PATCHES",
    "PAPER_LATENTS_PATCHES",
    "PAPER_N_LATENTS_CLASSIFICATION",
    "PAPER_N_PATCHES",
    "ClassificationStudy",
    "ImageStudy",
    "PatchStudy",
    "ReportConfig",
    "deviations",
    "full_config",
    "quick_config",
    "smoke_config",
]

#: The paper's schedules (pvae-model.md, "Training defaults of the paper"; "Notation" for K).
PAPER_EPOCHS_PATCHES = 3000
PAPER_BATCH_PATCHES = 1000
PAPER_N_PATCHES = 100_000
PAPER_LATENTS_PATCHES = 512
#: The image schedule of the ``paper-images`` preset (training/config.py): 300 epochs, batch 200.
PAPER_EPOCHS_IMAGES = 300
#: K of the paper's classification study (pvae-model.md, "Notation").
PAPER_N_LATENTS_CLASSIFICATION = (10, 50, 100)
#: Label budgets of the few-label study (pvae-model.md, "Metrics").
PAPER_LABEL_BUDGETS = (200, 1000, 5000)
#: sklearn's digits: the test split (360 images) is too small for these budgets, so the kNN pool is all
#: 1797 images and the budgets keep the paper's 5x ratio at a smaller scale (our choice).
DIGITS_LABEL_BUDGETS = (40, 200, 800)
#: Evaluation sets of a labelled dataset: its test split, or train + test (unlabelled VAE training).
EVALUATE_ON = ("test", "all")


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


@dataclass(frozen=True)
class PatchStudy:
    """The natural-patch study: lin|lin P-VAE beta sweep, VAE baselines, sparse coding, amortisation."""

    n_latents: int = PAPER_LATENTS_PATCHES
    """K of every patch model (VAEs and sparse-coding dictionaries alike)."""
    n_patches: int = PAPER_N_PATCHES
    """Natural patches drawn in all (80/20 train/val by image blocks)."""
    epochs: int = PAPER_EPOCHS_PATCHES
    """Epochs of every patch VAE."""
    batch_size: int = PAPER_BATCH_PATCHES
    """Batch size of every patch VAE."""
    lr: float = 0.005
    """Peak Adamax learning rate (paper: 0.005)."""
    init_std: float = 0.05
    """Std of the linear weights' normal init (paper: 0.05)."""
    betas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    """The P-VAE beta sweep (the paper reports beta 1 and 4)."""
    reference_beta: float = 1.0
    """Beta of the baselines and of the P-VAE they are compared with (must be in ``betas``)."""
    baselines: tuple[str, ...] = ("gaussian", "laplace", "categorical", "gaussian-relu")
    """Baseline latent families, trained with the same encoder, decoder and schedule."""
    max_val_samples: int = 10_000
    """Validation patches used by every evaluation."""
    gabor_filters: int = 128
    """At most this many active basis vectors per model get a Gabor fit (largest KL / usage first)."""
    sparse_coding: tuple[tuple[str, float], ...] = (("lca", 0.5), ("lca", 1.0), ("ista", 0.5), ("ista", 1.0))
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
    """Inference iterations when evaluating codes (and in the amortisation study)."""
    amortisation_lambdas: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8)
    """LCA thresholds on the P-VAE's dictionary, as fractions of the median per-sample max of Phi^T x."""
    amortisation_samples: int = 4000
    """Validation patches coded by LCA in the amortisation study and by sparse coding at evaluation."""

    def __post_init__(self) -> None:
        _require(self.n_latents >= 2, "patches.n_latents", "must be >= 2")
        _require(self.epochs >= 1 and self.batch_size >= 1, "patches.epochs", "epochs and batch size must be >= 1")
        _require(len(self.betas) >= 2, "patches.betas", "a sweep needs at least two betas")
        _require(all(b > 0 for b in self.betas), "patches.betas", "must be > 0")
        _require(self.reference_beta in self.betas, "patches.reference_beta", f"must be one of {self.betas}")
        for family in self.baselines:
            _require(family in LATENTS and family != "poisson", "patches.baselines", f"unknown {family!r}")
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
    evaluate_on: str = "test"
    """test: kNN and shattering on the test split; all: on train + test (for tiny datasets)."""

    def __post_init__(self) -> None:
        _require(self.dataset in ("fashion-mnist", "digits"), "dataset", f"unknown {self.dataset!r}")
        _require(self.epochs >= 1 and self.batch_size >= 1, f"{self.dataset}.epochs", "must be >= 1")
        _require(len(self.budgets) >= 2 and list(self.budgets) == sorted(set(self.budgets)),
                 f"{self.dataset}.budgets", "need >= 2 increasing budgets")
        _require(self.evaluate_on in EVALUATE_ON, f"{self.dataset}.evaluate_on", f"one of {EVALUATE_ON}")


@dataclass(frozen=True)
class ClassificationStudy:
    """Few-label kNN and shattering dimensionality on labelled images, per K and latent family."""

    datasets: tuple[ImageStudy, ...] = (
        ImageStudy("fashion-mnist"),
        ImageStudy("digits", epochs=2000, batch_size=100, budgets=DIGITS_LABEL_BUDGETS, evaluate_on="all"),
    )
    """Labelled datasets and their schedules."""
    n_latents: tuple[int, ...] = PAPER_N_LATENTS_CLASSIFICATION
    """K values studied."""
    families: tuple[str, ...] = ("poisson", "gaussian", "laplace", "categorical")
    """Latent families compared (poisson and gaussian are required for the verdict)."""
    arch: str = "conv|lin"
    """Encoder|decoder of every classification model."""
    knn_repeats: int = 10
    """Random label draws per budget."""
    shattering_max_splits: int | None = None
    """Evaluate a seeded subset of the 126 class splits (None: all)."""
    shattering_max_samples: int | None = None
    """Cap on the samples used for shattering (half train, half test; None: all)."""

    def __post_init__(self) -> None:
        _require(len(self.datasets) >= 1, "classification.datasets", "need at least one dataset")
        _require(all(k >= 1 for k in self.n_latents) and len(self.n_latents) >= 1, "classification.n_latents",
                 "need K >= 1")
        for family in self.families:
            _require(family in LATENTS, "classification.families", f"unknown {family!r}")
        enc, _, dec = self.arch.partition("|")
        _require(enc in ENCODERS and dec in DECODERS, "classification.arch", f"bad arch {self.arch!r}")
        _require(self.knn_repeats >= 2, "classification.knn_repeats", "need >= 2 for a CI")


@dataclass(frozen=True)
class ReportConfig:
    """Everything one ``pvae-report`` run does. ``patches`` or ``classification`` may be None (skipped)."""

    mode: str = "full"
    """Name of the preset (quick, full, smoke), printed in the report."""
    patches: PatchStudy | None = field(default_factory=PatchStudy)
    """The natural-patch study."""
    classification: ClassificationStudy | None = field(default_factory=ClassificationStudy)
    """The labelled-image study."""
    device: str = "auto"
    """Where to train: auto | cpu | cuda | cuda:N."""
    seed: int = 0
    """Seed of every model, draw and split."""

    def to_dict(self) -> dict[str, object]:
        return config_to_dict(self)


def full_config(device: str = "auto", seed: int = 0) -> ReportConfig:
    """The paper's schedules on every model (a GPU job: ~2 GPU-hours per patch model)."""
    return ReportConfig(mode="full", device=device, seed=seed)


def quick_config(device: str = "auto", seed: int = 0) -> ReportConfig:
    """Every study, shortened to fit 20 minutes on a 2-core CPU (the report lists the deviations)."""
    patches = PatchStudy(
        n_patches=20_000, epochs=10, batch_size=250, lr=0.02, init_std=0.01, max_val_samples=4000,
        gabor_filters=64, sparse_coding=(("lca", 0.5), ("ista", 1.0)), sc_epochs=2, sc_lr=0.5,
        sc_train_iterations=30, sc_eval_iterations=150, amortisation_lambdas=(0.05, 0.1, 0.2, 0.4, 0.8),
        amortisation_samples=1000,
    )
    classification = ClassificationStudy(
        datasets=(
            ImageStudy("fashion-mnist", epochs=5, batch_size=200, lr=0.005),
            ImageStudy("digits", epochs=150, batch_size=100, lr=0.005, budgets=DIGITS_LABEL_BUDGETS,
                       evaluate_on="all"),
        ),
        n_latents=(10, 100), families=("poisson", "gaussian"), arch="lin|lin", knn_repeats=5,
        shattering_max_splits=32, shattering_max_samples=4000,
    )
    return ReportConfig(mode="quick", patches=patches, classification=classification, device=device, seed=seed)


def smoke_config(device: str = "cpu", seed: int = 0) -> ReportConfig:
    """Seconds: every code path on toy sizes (for tests; the numbers mean nothing)."""
    patches = PatchStudy(
        n_latents=16, n_patches=600, epochs=1, batch_size=100, lr=0.01, betas=(1.0, 2.0),
        baselines=("gaussian", "laplace"), max_val_samples=100, gabor_filters=3,
        sparse_coding=(("lca", 0.5), ("ista", 0.5)), sc_epochs=1, sc_batch_size=100, sc_train_iterations=5,
        sc_eval_iterations=10, amortisation_lambdas=(0.1, 0.4), amortisation_samples=100,
    )
    classification = ClassificationStudy(
        datasets=(ImageStudy("digits", epochs=1, batch_size=200, lr=0.005, budgets=(20, 100), evaluate_on="all"),),
        n_latents=(4,), families=("poisson", "gaussian"), arch="lin|lin", knn_repeats=2,
        shattering_max_splits=3, shattering_max_samples=400,
    )
    return ReportConfig(mode="smoke", patches=patches, classification=classification, device=device, seed=seed)


def deviations(cfg: ReportConfig) -> list[str]:
    """Where ``cfg`` departs from the paper's protocol, one sentence each (computed, for the report)."""
    notes: list[str] = []
    p = cfg.patches
    if p is not None:
        if p.epochs < PAPER_EPOCHS_PATCHES:
            notes.append(f"Patch models train for {p.epochs} epochs of ~{int(p.n_patches * 0.8)} training patches "
                         f"(paper: {PAPER_EPOCHS_PATCHES} epochs of ~{int(PAPER_N_PATCHES * 0.8)}), "
                         f"batch {p.batch_size}, lr {p.lr}, init std {p.init_std}.")
        if p.n_latents != PAPER_LATENTS_PATCHES:
            notes.append(f"Patch models have K = {p.n_latents} latents (paper: {PAPER_LATENTS_PATCHES}).")
        notes.append("Natural patches come from scikit-image's 11 bundled photographs, not van Hateren's images.")
    c = cfg.classification
    if c is not None:
        notes.append("MNIST is not available offline: Fashion-MNIST stands in for it, sklearn's digits "
                     "(8x8) is the second dataset.")
        if c.arch != "conv|lin":
            notes.append(f"Classification models use a {c.arch} architecture (paper-style: conv|lin).")
        for study in c.datasets:
            if study.epochs < PAPER_EPOCHS_IMAGES:
                notes.append(f"{study.dataset}: {study.epochs} epochs (paper schedule: {PAPER_EPOCHS_IMAGES}), "
                             f"lr {study.lr}.")
            if study.evaluate_on == "all":
                notes.append(f"{study.dataset}: kNN and shattering use train + test images (the test split is "
                             f"too small for the label budgets); the VAEs saw the train images without labels. "
                             f"Budgets {', '.join(map(str, study.budgets))} keep the paper's 5x ratio.")
        if tuple(c.n_latents) != PAPER_N_LATENTS_CLASSIFICATION:
            notes.append(f"K in {{{', '.join(map(str, c.n_latents))}}} only "
                         f"(paper: {', '.join(map(str, PAPER_N_LATENTS_CLASSIFICATION))}).")
        if c.shattering_max_splits is not None and c.shattering_max_splits < 126:
            notes.append(f"Shattering uses a seeded subset of {c.shattering_max_splits} of the 126 class splits "
                         f"(the same subset for every model)"
                         + (f", on {c.shattering_max_samples} samples." if c.shattering_max_samples else "."))
        missing = [f for f in ("laplace", "categorical") if f not in c.families]
        if missing:
            notes.append(f"Classification compares {', '.join(c.families)} only (not {', '.join(missing)}).")
    return notes
