"""Active latents: which of a trained VAE's K latents does it actually use?

Stage in the flow: after training, next to :func:`pvae.training.evaluate.evaluate_model` (which reports
one KL-threshold fraction); :func:`active_latent_summary` is the one call meant for ``pvae-report``'s
active-latent tables. Three criteria, because a KL threshold alone can be fooled: an untrained model
already has latents with posterior KL above a small threshold (reproduction.md, "Active latents").

1. :func:`kl_threshold_active`: the paper's Figure 5 rule, a fixed threshold on the mean KL per
   latent (the C-VAE instead uses the norm of its decoder column).
2. :func:`table2_active`: the paper's Table 2 rule, a gap in a histogram (decoder-column norms for
   linear encoders, KL for conv encoders), with KL < 3e-4 always dead.
3. :func:`usage_active`: a usage-based measure of our own: how much mse_map rises when a latent's
   posterior-mean code is set to zero (or to its mean). The summary also scores an untrained model of
   the same configuration, the reference every fraction should be read against.

All functions are pure (no files, no prints); a model is put in eval mode and otherwise only read.

    >>> summary = active_latent_summary(model, x_val)        # x_val: (N, D) validation inputs
    >>> summary["fractions"], summary["untrained_fractions"]  # {"kl_threshold", "table2", "usage", "usage_mean"}
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pvae.training.model import VAE, Posterior

__all__ = [
    "CATEGORICAL_DEAD_NORM",
    "FIGURE5_KL_THRESHOLD",
    "TABLE2_DEAD_KL",
    "USAGE_SHARE_FRACTION",
    "Table2Cut",
    "UsageResult",
    "active_latent_summary",
    "column_norms",
    "kl_per_latent",
    "kl_threshold_active",
    "last_gap_below_median",
    "posterior_mean_code",
    "table2_active",
    "untrained_like",
    "usage_active",
    "usage_rises",
    "usage_rises_by_decoding",
]

#: Figure 5 of the paper: a latent is active if its mean KL over validation data exceeds this
#: (values from the authors' results notebook, ``dead_thres``).
FIGURE5_KL_THRESHOLD = {"poisson": 0.0082, "gaussian": 0.09, "gaussian-relu": 0.09, "laplace": 0.08}
#: Figure 5, C-VAE: a latent (category) is dead if the L2 norm of its decoder column is below this.
CATEGORICAL_DEAD_NORM = 4.435
#: Table 2: a latent whose mean KL is below this is dead whatever the histogram says.
TABLE2_DEAD_KL = 3e-4
#: Table 2 gap search: the histogram has this many bins per latent over the range of the values
#: (the authors' code: ``num=len * 10`` edges) ...
GAP_BINS_PER_LATENT = 10
#: ... and a gap is a run of at least this fraction of the bins, all empty (the authors' ``w = 2 * len``
#: of ``10 * len``: an empty stretch covering 20 % of the range of the log values).
GAP_MIN_EMPTY_FRACTION = 0.2
#: Usage rule: a latent is used if zeroing its code raises mse_map by more than this fraction of an
#: equal share E / K of the mean per-sample data energy E = sum(x^2). Calibration in usage_active.
USAGE_SHARE_FRACTION = 0.1


# ----------------------------------------------------------------------------- inputs of the rules


def column_norms(model: VAE) -> np.ndarray | None:
    """L2 norm of each decoder column ||phi_k||, (K,); None for a nonlinear decoder (no dictionary)."""
    if not isinstance(model.decoder, nn.Linear):
        return None
    return model.dictionary.detach().double().norm(dim=0).cpu().numpy()


@torch.no_grad()
def kl_per_latent(model: VAE, x: Tensor, batch_size: int = 2000) -> np.ndarray:
    """Mean over the samples ``x`` (N, D) of KL(q(z_k|x) || p(z_k)), per latent: (K,), float64."""
    device = next(model.parameters()).device
    total = torch.zeros(model.cfg.n_latents, dtype=torch.float64)
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].to(device).reshape(-1, model.cfg.input_dim)  # (B, D)
        total += model.latent.kl(model.encode(xb)).double().sum(0).cpu()  # (K,)
    return (total / x.shape[0]).numpy()


def posterior_mean_code(model: VAE, post: Posterior, relu_mean: bool = False) -> Tensor:
    """The deterministic code that mse_map decodes, (B, K).

    ``model.latent.mean`` for every family except gaussian-relu, where the paper's code decodes the
    posterior mean mu itself (``decode(dist.mean)``, before any ReLU), while our ``model.latent.mean``
    (and so ``evaluate_model``'s mse_map) decodes relu(mu). The default follows the paper; pass
    ``relu_mean=True`` for relu(mu).
    """
    if model.cfg.latent == "gaussian-relu" and not relu_mean:
        return post.params["mu"]
    return model.latent.mean(post)


# ----------------------------------------------------------------------------- Figure 5 thresholds


def kl_threshold_active(
    kl_per_latent: np.ndarray, family: str, column_norms: np.ndarray | None = None,
) -> np.ndarray:
    """Figure 5 rule: boolean mask (K,) of active latents.

    poisson 0.0082, gaussian and gaussian-relu 0.09, laplace 0.08 on the mean KL per latent (active at
    or above: the authors count kl < threshold as dead). categorical: a latent is dead if its decoder
    column norm is below 4.435 (so ``column_norms`` is required; the KL is not used). The thresholds
    were tuned by the authors on their van Hateren models with K = 512: on other data they are a
    convention, not a law.
    """
    kl = np.asarray(kl_per_latent, dtype=np.float64)
    if family == "categorical":
        if column_norms is None:
            raise ValueError("the categorical rule needs the decoder column norms (a linear decoder)")
        norms = np.asarray(column_norms, dtype=np.float64)
        if norms.shape != kl.shape:
            raise ValueError(f"column_norms {norms.shape} and kl_per_latent {kl.shape} must agree")
        return norms >= CATEGORICAL_DEAD_NORM
    if family not in FIGURE5_KL_THRESHOLD:
        raise ValueError(f"unknown family {family!r}; choose from {sorted(FIGURE5_KL_THRESHOLD)} or categorical")
    return kl >= FIGURE5_KL_THRESHOLD[family]  # the authors: dead = kl < threshold


# ----------------------------------------------------------------------------- Table 2 gap rule


@dataclass(frozen=True)
class Table2Cut:
    """Result of :func:`table2_active`: the mask and how the cut was found."""

    mask: np.ndarray
    """(K,) bool, True for active latents."""
    rule: str
    """"gap": a gap was found and set the cut; "no gap": none, so every non-dead latent counts."""
    axis: str
    """What the histogram was taken of: "log_column_norm" (lin encoder) or "log_kl" (conv encoder)."""
    cut: float | None
    """Upper edge of the gap on ``axis`` (values at or above it are above the gap); None without a gap."""
    kl_cut: float | None
    """Lin encoder with a gap: the smallest KL of a non-dead latent above the norm gap; latents with at
    least this KL are active (the KL ordering step). Otherwise None."""

    @property
    def fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "n_active": int(self.mask.sum()), "rule": self.rule,
                "axis": self.axis, "cut": self.cut, "kl_cut": self.kl_cut}


def last_gap_below_median(values: np.ndarray) -> float | None:
    """Upper edge of the highest wide empty stretch of the histogram of ``values`` below their median.

    The rule, exactly: n = len(values); the histogram has ``GAP_BINS_PER_LATENT * n`` equal bins from
    min to max; only the bins strictly below the bin that holds the median are searched; a gap is a run
    of at least ``ceil(GAP_MIN_EMPTY_FRACTION * n_bins)`` consecutive empty bins; of those the highest
    one is taken and its upper edge returned (every value below it lies below the gap). None if there is
    no such run (including when all values are equal).
    """
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    lo, hi = float(v.min()), float(v.max())
    if n < 2 or not hi > lo:
        return None
    n_bins = GAP_BINS_PER_LATENT * n
    edges = np.linspace(lo, hi, n_bins + 1)
    hist, _ = np.histogram(v, bins=edges)
    median_bin = min(int(np.searchsorted(edges, np.median(v), side="right")) - 1, n_bins - 1)
    empty = hist[:median_bin] == 0  # (median_bin,)
    if not empty.any():
        return None
    # Runs of empty bins: starts where empty begins, ends (exclusive) where it stops.
    padded = np.concatenate(([False], empty, [False])).astype(np.int8)
    change = np.diff(padded)
    starts, ends = np.flatnonzero(change == 1), np.flatnonzero(change == -1)
    wide = (ends - starts) >= math.ceil(GAP_MIN_EMPTY_FRACTION * n_bins)
    if not wide.any():
        return None
    return float(edges[ends[wide][-1]])


def table2_active(
    kl_per_latent: np.ndarray, column_norms: np.ndarray | None, encoder: str,
) -> Table2Cut:
    """The paper's Table 2 rule (the authors' ``find_dead_neurons``, simplified as stated here).

    In both cases a latent with mean KL < 3e-4 is dead.

    - Linear encoder (``encoder == "lin"``): the histogram of log ||phi_k|| (decoder column norms) is
      searched for a gap below its median (:func:`last_gap_below_median`: 10 bins per latent, a gap is
      an empty run of >= 20 % of the bins). The latents above the gap are the well-formed ones; the
      latents are then ordered by KL and every latent with a KL at least that of the lowest-KL non-dead
      latent above the gap is active (the gap fixes a KL cut, ``kl_cut``). The authors take the lowest-KL
      latent above the gap even if its KL is below 3e-4, which lets one such latent pull the KL cut
      down to the dead limit; here it is skipped. Without a gap, every non-dead
      latent is active (``rule == "no gap"``). The authors' code additionally drops latents outside the
      first and last empty bins of a coarser K/8-bin histogram; that step is omitted here.
    - Conv encoders (``conv``, ``conv+b``): the same gap search on the histogram of log KL (KL floored
      at float64 eps); latents above the gap are active.
    """
    kl = np.asarray(kl_per_latent, dtype=np.float64)
    alive = kl >= TABLE2_DEAD_KL
    if encoder == "lin":
        if column_norms is None:
            raise ValueError("the lin-encoder rule needs the decoder column norms (a linear decoder)")
        norms = np.asarray(column_norms, dtype=np.float64)
        if norms.shape != kl.shape:
            raise ValueError(f"column_norms {norms.shape} and kl_per_latent {kl.shape} must agree")
        log_norms = np.log(np.maximum(norms, np.finfo(np.float64).eps))
        cut = last_gap_below_median(log_norms)
        if cut is None:
            return Table2Cut(alive, "no gap", "log_column_norm", None, None)
        above = (log_norms >= cut) & alive
        if not above.any():
            return Table2Cut(np.zeros_like(alive), "gap", "log_column_norm", cut, None)
        kl_cut = float(kl[above].min())
        return Table2Cut(alive & (kl >= kl_cut), "gap", "log_column_norm", cut, kl_cut)
    if encoder in ("conv", "conv+b"):
        log_kl = np.log(np.maximum(kl, np.finfo(np.float64).eps))
        cut = last_gap_below_median(log_kl)
        if cut is None:
            return Table2Cut(alive, "no gap", "log_kl", None, None)
        return Table2Cut(alive & (log_kl >= cut), "gap", "log_kl", cut, None)
    raise ValueError(f"unknown encoder {encoder!r}; choose from lin, conv, conv+b")


# ----------------------------------------------------------------------------- usage: the rise in mse_map


@dataclass(frozen=True)
class UsageResult:
    """Result of :func:`usage_active`."""

    mask: np.ndarray
    """(K,) bool: rise > threshold."""
    rises: np.ndarray
    """(K,) float64: mean over samples of the rise in the per-sample squared error when latent k is ablated."""
    threshold: float
    """The threshold on ``rises`` (units of mse_map: a per-sample sum over pixels)."""
    energy: float
    """Mean per-sample data energy sum(x^2): the mse_map of the all-zeros reconstruction."""
    mse_map: float
    """mse_map of the intact code (as decoded here: see :func:`posterior_mean_code`)."""
    ablation: str
    """"zero" or "mean": what latent k's code was replaced with."""

    @property
    def fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "n_active": int(self.mask.sum()), "threshold": self.threshold,
                "energy": self.energy, "mse_map": self.mse_map, "ablation": self.ablation}


_ABLATIONS = ("zero", "mean")


def _code_batches(
    model: VAE, x: Tensor, batch_size: int, relu_mean: bool,
) -> Iterator[tuple[Tensor, Tensor]]:
    """(x_b (B, D), posterior-mean code z_b (B, K)) per batch, float32 on the model's device."""
    device = next(model.parameters()).device
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].to(device).reshape(-1, model.cfg.input_dim).float()  # (B, D)
        yield xb, posterior_mean_code(model, model.encode(xb), relu_mean).float()  # (B, K)


def _check_ablation(ablation: str) -> None:
    if ablation not in _ABLATIONS:
        raise ValueError(f"ablation must be one of {_ABLATIONS}, got {ablation!r}")


@torch.no_grad()
def usage_rises(
    model: VAE, x: Tensor, batch_size: int = 1000, relu_mean: bool = False, ablation: str = "zero",
) -> tuple[np.ndarray, float, float]:
    """(rises (K,), energy, mse_map) on samples ``x`` (N, D); see :func:`usage_active`.

    ``ablation="zero"``: rise_k = mean_n [ ||x_n - dec(z_n with z_nk = 0)||^2 - ||x_n - dec(z_n)||^2 ], z_n the
    posterior-mean code. ``ablation="mean"``: z_nk is replaced by its mean over the samples instead, so
    only what latent k's *variation* across samples carries is counted.

    A linear decoder without bias (``lin``) uses the closed form, with delta_nk = z_nk - c_k (c_k = 0 or
    the mean): rise_k = mean_n [ 2 delta_nk phi_k . (x_n - x_hat_n) + delta_nk^2 ||phi_k||^2 ], from per-latent
    sums accumulated batch by batch (one (B, D) x (D, K) product per batch). Other decoders go through
    :func:`usage_rises_by_decoding`.
    """
    _check_ablation(ablation)
    if not (isinstance(model.decoder, nn.Linear) and model.decoder.bias is None):
        return usage_rises_by_decoding(model, x, batch_size, relu_mean, ablation)
    model.eval()
    k, n = model.cfg.n_latents, x.shape[0]
    phi = model.dictionary.float()  # (D, K)
    # Per-latent sums over samples of z, z^2, p = phi_k . (x - x_hat) and z p.
    sum_z = torch.zeros(k, dtype=torch.float64)
    sum_z2, sum_p, sum_zp = torch.zeros_like(sum_z), torch.zeros_like(sum_z), torch.zeros_like(sum_z)
    energy_sum = error_sum = 0.0
    for xb, z in _code_batches(model, x, batch_size, relu_mean):
        residual = xb - model.decode(z).float()  # (B, D)
        p = (residual @ phi).double()  # (B, K)
        zd = z.double()
        energy_sum += xb.double().pow(2).sum().item()
        error_sum += residual.double().pow(2).sum().item()
        sum_z += zd.sum(0).cpu()
        sum_z2 += zd.pow(2).sum(0).cpu()
        sum_p += p.sum(0).cpu()
        sum_zp += (zd * p).sum(0).cpu()
    c = sum_z / n if ablation == "mean" else torch.zeros(k, dtype=torch.float64)  # (K,) replacement code
    sq_norms = phi.double().pow(2).sum(0).cpu()  # (K,) ||phi_k||^2
    # mean_n [2 (z - c) p + (z - c)^2 ||phi||^2], expanded into the sums.
    rises = (2 * (sum_zp - c * sum_p) + (sum_z2 - 2 * c * sum_z + n * c.pow(2)) * sq_norms) / n
    return rises.numpy(), energy_sum / n, error_sum / n


@torch.no_grad()
def usage_rises_by_decoding(
    model: VAE, x: Tensor, batch_size: int = 1000, relu_mean: bool = False, ablation: str = "zero",
) -> tuple[np.ndarray, float, float]:
    """:func:`usage_rises` for any decoder: decode every sample once per ablated latent.

    Cost: K decoder passes over ``x`` (plus one encoder pass, two with ``ablation="mean"``); for a conv
    decoder with K = 512 pass a few hundred samples. Also the test oracle of the linear closed form.
    """
    _check_ablation(ablation)
    model.eval()
    device = next(model.parameters()).device
    k, n = model.cfg.n_latents, x.shape[0]
    replacement = torch.zeros(k, dtype=torch.float64)  # (K,)
    if ablation == "mean":
        for _, z in _code_batches(model, x, batch_size, relu_mean):
            replacement += z.double().sum(0).cpu()
        replacement /= n
    fill = replacement.float().to(device)
    rise_sum = torch.zeros(k, dtype=torch.float64)
    energy_sum = error_sum = 0.0
    for xb, z in _code_batches(model, x, batch_size, relu_mean):
        base = (xb - model.decode(z).float()).double().pow(2).sum(-1)  # (B,)
        energy_sum += xb.double().pow(2).sum().item()
        error_sum += base.sum().item()
        for j in range(k):
            ablated = z.clone()
            ablated[:, j] = fill[j]
            error = (xb - model.decode(ablated).float()).double().pow(2).sum(-1)  # (B,)
            rise_sum[j] += (error - base).sum().cpu()
    return (rise_sum / n).numpy(), energy_sum / n, error_sum / n


def usage_active(
    model: VAE, x: Tensor, threshold: float | None = None, share_fraction: float = USAGE_SHARE_FRACTION,
    batch_size: int = 1000, relu_mean: bool = False, ablation: str = "zero",
) -> UsageResult:
    """Usage rule: latent k is active if ablating it (zeroing its posterior-mean code, by default) raises
    mse_map by more than ``threshold``.

    mse_map is computed as ``evaluate_model`` does (per-sample sums of squared errors of the decoded
    posterior mean, averaged over samples), except that for gaussian-relu the paper's mu is decoded
    unless ``relu_mean`` (:func:`posterior_mean_code`). ``ablation="mean"`` replaces the code by its
    sample mean instead of zero (:func:`usage_rises`).

    The threshold (unless given, in mse_map units) is ``share_fraction`` (0.1) of an equal share of the
    data energy: threshold = 0.1 * E / K, E = mean_n sum(x_n^2) (the mse_map of the all-zeros
    reconstruction). Reasons:

    - Scale: if K latents shared the reconstruction equally, each would carry at most E/K; a latent that
      carries under a tenth of that does little. A fixed fraction of E instead would call most latents of
      a trained distributed code unused at K = 512 (the trained P-VAE lin|lin K = 512 on our patches:
      median rise 0.6 E/K, minimum 0.14 E/K, all above the threshold; a fraction 1e-3 of E would count
      only 71 %), and would let chance pass at K = 10 (see below). Relative to E, the rule does not
      depend on the scale of the data.
    - Untrained models (fresh init; the largest fraction over 3 seeds, 1000 samples, K = 10 / 100 / 512):

      ============================  =====================  =====================  ==================
      data, arch, ablation          P-VAE                  G-VAE / L-VAE          C-VAE
      ============================  =====================  =====================  ==================
      patches, lin|lin, zero/mean   0 / 0 / 0              0 / 0 / .021           0 / 0 / 0
      patches, conv+b|lin, both     0 / 0 / 0              0 / 0 / 0              0 / 0 / 0
      Fashion-MNIST, lin|lin, zero  0 / 0 / .025           0 / .070 / .166        0 / 0 / 0
      Fashion-MNIST, lin|lin, mean  0 / 0 / 0              0 / 0 / .041           0 / 0 / 0
      digits 8x8, lin|lin, zero     0 / .010 / .119        0 / .330 / .422        0 / 0 / 0
      digits 8x8, lin|lin, mean     0 / 0 / 0              0 / .020 / .250        0 / 0 / 0
      ============================  =====================  =====================  ==================

      P-VAE rates start near e^-5 and C-VAE probabilities near 1/K, so zeroing one barely changes the
      output. G-/L-VAE codes are large but random: removing a random basis vector lowers the error on
      average (rise ~ -E[z^2] ||phi||^2), and only the chance alignment phi_k^T E[x x^T] w_k of a decoder
      column with an encoder row makes a rise positive. On uncentred data (Fashion-MNIST, digits) that
      alignment goes through the mean image and is larger; ``ablation="mean"`` takes the mean image out
      (only the latent's variation counts) but undercounts a P-VAE, whose non-negative counts build the
      mean image on purpose (Fashion-MNIST, K = 100, 500 Adam steps: 68 % used by zero ablation, 38 % by
      mean ablation). The init matters too: with the prior log-rates of our shipped P-VAE, U(-2, -1)
      instead of the paper's U(-6, -4), an untrained K = 512 P-VAE has 18 % of its latents above the
      threshold on patches by zero ablation (0.4 % by mean ablation). Hence :func:`active_latent_summary`
      reports both ablations and also scores an untrained model of the same configuration: read a usage
      fraction against that reference.
    - The rule is calibrated for K <= 512 with the paper's init: chance rises of random G-VAE latents
      grow with K (cross terms with the other K - 1 latents) while the threshold shrinks as 1/K; on data
      with few pixels (digits: D = 64 < K) it is not reliable for the G-/L-VAE at all.
    """
    rises, energy, mse_map = usage_rises(model, x, batch_size, relu_mean, ablation)
    cut = float(threshold) if threshold is not None else share_fraction * energy / model.cfg.n_latents
    return UsageResult(rises > cut, rises, cut, energy, mse_map, ablation)


# ----------------------------------------------------------------------------- all criteria


def untrained_like(model: VAE, seed: int = 0) -> VAE:
    """A freshly initialised model of the same configuration (seeded; the global RNG is left untouched)."""
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = VAE(model.cfg)
    return fresh.to(device).eval()


def active_latent_summary(
    model: VAE, x: Tensor, batch_size: int = 1000, relu_mean: bool = False, untrained_reference: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Every criterion for one model on samples ``x`` (N, D), as plain JSON-ready data.

    - ``fractions``: {"kl_threshold" (Figure 5), "table2", "usage" (zero ablation), "usage_mean" (mean
      ablation)}; a value is None where the rule needs decoder column norms that a conv decoder lacks.
    - ``untrained_fractions``: the same for an untrained model of the same configuration
      (:func:`untrained_like`, ``seed``), so that a fraction can be read against what chance gives;
      absent without ``untrained_reference`` (pass False when ``model`` is itself untrained).
    - ``table2``: how the Table 2 cut was found (:meth:`Table2Cut.to_dict`); ``usage``, ``usage_mean``:
      threshold, energy and mse_map (:meth:`UsageResult.to_dict`).
    - Per latent (lists of K): ``usage_rises`` (zero ablation), ``usage_rises_mean``, ``kl_per_latent``,
      ``column_norms`` (None for a conv decoder).

    Cost: a few passes of the encoder over ``x`` for a linear decoder (milliseconds for K = 512 and
    5000 patches); a conv decoder is decoded 2K times over ``x`` (both ablations), 4K with the reference.
    """
    family = model.cfg.latent
    kl = kl_per_latent(model, x, batch_size)
    norms = column_norms(model)
    fractions: dict[str, float | None] = {"kl_threshold": None, "table2": None}
    if family != "categorical" or norms is not None:
        fractions["kl_threshold"] = float(kl_threshold_active(kl, family, norms).mean())
    table2: dict[str, Any] | None = None
    if model.cfg.encoder != "lin" or norms is not None:
        cut = table2_active(kl, norms, model.cfg.encoder)
        table2 = cut.to_dict()
        fractions["table2"] = cut.fraction
    usage = usage_active(model, x, batch_size=batch_size, relu_mean=relu_mean)
    usage_mean = usage_active(model, x, batch_size=batch_size, relu_mean=relu_mean, ablation="mean")
    fractions["usage"], fractions["usage_mean"] = usage.fraction, usage_mean.fraction
    summary: dict[str, Any] = {
        "family": family, "arch": model.cfg.arch, "n_latents": model.cfg.n_latents, "n_samples": int(x.shape[0]),
        "fractions": fractions, "kl_threshold": FIGURE5_KL_THRESHOLD.get(family), "table2": table2,
        "usage": usage.to_dict(), "usage_mean": usage_mean.to_dict(), "relu_mean": relu_mean,
        "usage_rises": usage.rises.tolist(), "usage_rises_mean": usage_mean.rises.tolist(),
        "kl_per_latent": kl.tolist(), "column_norms": None if norms is None else norms.tolist(),
    }
    if untrained_reference:
        reference = active_latent_summary(untrained_like(model, seed), x, batch_size, relu_mean, False)
        summary["untrained_fractions"] = reference["fractions"]
    return summary
