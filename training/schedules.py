"""Schedules as pure functions of (step, total steps): temperature, beta and learning rate.

Paper defaults (pvae-model.md): the temperature falls linearly 1.0 -> 0.05 over the first half of
training and then stays; beta is held at 1e-4 for a fraction c of training, rises linearly to its
target over the next half, then stays; the learning rate warms up linearly, then decays by cosine.
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


def lr_factor_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak learning rate: linear warm-up, then cosine decay to 0 at the end."""
    warmup = cfg.warmup_fraction * total_steps
    if step < warmup:
        return (step + 1) / warmup
    frac = _progress(step, warmup, total_steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * frac))
