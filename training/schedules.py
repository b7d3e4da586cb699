"""Schedules as pure functions of (step, total steps): temperature, beta and learning rate.

Paper defaults (docs/reproduction.md, "Training recipe"): the temperature falls linearly 1.0 -> 0.05
over the first half of training and then stays; beta is held at 1e-4 for a fraction c of training,
rises linearly to its target over the next half, then stays; the learning rate warms up linearly, then follows a cosine.

Two cosines are offered (``TrainConfig.lr_schedule``):

- ``cosine``: one half-period from lr down to lr_min over the steps after warm-up.
- ``paper``: what the paper-era code ran (docs/reproduction.md). ``CosineAnnealingLR`` was given
  T_max = epochs - warm-up epochs but stepped every *iteration*, so the rate follows
  lr_min + (lr - lr_min) (1 + cos(pi k / T_max)) / 2 with k counted in steps: it oscillates between
  lr and lr_min with a period of 2 * T_max steps (~40 cycles in a 3000-epoch run).
"""

from __future__ import annotations

import math

from pvae.training.config import TrainConfig


def _progress(step: int, start: float, length: float) -> float:
    """Fraction in [0, 1] of the way through [start, start + length) at ``step``."""
    if length <= 0:
        return 1.0 if step >= start else 0.0
    return min(1.0, max(0.0, (step - start) / length))


def temperature_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    frac = _progress(step, 0, cfg.temperature_anneal_fraction * total_steps)
    return cfg.temperature_start + frac * (cfg.temperature_end - cfg.temperature_start)


def beta_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    hold = cfg.beta_hold_fraction * total_steps
    frac = _progress(step, hold, cfg.beta_anneal_fraction * total_steps)
    return cfg.beta_start + frac * (cfg.beta - cfg.beta_start)


def warmup_steps(total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Length of the linear warm-up in steps: warmup_epochs if set, else warmup_fraction of the run."""
    if cfg.warmup_epochs is not None:
        return cfg.warmup_epochs * steps_per_epoch
    return cfg.warmup_fraction * total_steps


def in_warmup(step: int, total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> bool:
    return step < warmup_steps(total_steps, steps_per_epoch, cfg)


def lr_factor_at(step: int, total_steps: int, cfg: TrainConfig, steps_per_epoch: int | None = None) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warm-up, then the configured cosine.

    ``steps_per_epoch`` (default: total_steps / epochs) converts warmup_epochs into steps.
    """
    per_epoch = steps_per_epoch if steps_per_epoch is not None else max(1, total_steps // cfg.epochs)
    warmup = warmup_steps(total_steps, per_epoch, cfg)
    if step < warmup:
        return (step + 1) / warmup
    floor = cfg.lr_min / cfg.lr
    if cfg.lr_schedule == "paper":
        # T_max in epochs (epochs after warm-up), the argument in steps: the paper-era quirk.
        t_max = max(1.0, cfg.epochs - (warmup / per_epoch))
        phase = math.cos(math.pi * (step - warmup) / t_max)
    else:
        phase = math.cos(math.pi * _progress(step, warmup, total_steps - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + phase)
