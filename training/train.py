"""The training loop and the ``pvae-train`` command.

    pvae-train --preset quick --device cpu --out runs/quick
    torchrun --nproc-per-node 2 -m pvae.training.train --preset quick --out runs/ddp

Data -> model -> loss -> loop -> checkpoint. The loop is short on purpose: schedules, sampling and
metrics live in their own modules. Under ``torchrun`` every rank sees the same global batch order
and takes its slice, so the global batch is the configured one; each rank samples with its own
seed; only rank 0 writes checkpoints, logs and progress bars.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pvae import __version__
from pvae.cli import add_config_flags, flag_values, run_cli
from pvae.errors import ConfigError, TrainingDivergedError
from pvae.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from pvae.training.config import (
    PRESETS,
    ModelConfig,
    TrainConfig,
    config_to_dict,
    get_preset,
)
from pvae.training.data import Dataset, PatchConfig, load_dataset
from pvae.training.device import resolve_device
from pvae.training.evaluate import evaluate_model
from pvae.training.model import VAE, PoissonLatent, loss_terms
from pvae.training.sampling import n_exp_for_rate
from pvae.training.schedules import beta_at, in_warmup, lr_factor_at, temperature_at

#: Files a run directory holds.
LAST, BEST, LOG, BASIS_PNG, CURVES_PNG = "last.pt", "best.pt", "metrics.jsonl", "basis.png", "curves.png"


def patch_config(cfg: TrainConfig) -> PatchConfig:
    """The preprocessing of natural-patch datasets (stored in checkpoints, applied by export)."""
    return PatchConfig(n_patches=cfg.n_patches)


def load_training_data(cfg: TrainConfig, progress: bool = False) -> Dataset:
    """The dataset named by the config (natural patches use the config's patch count)."""
    return load_dataset(cfg.data, patch_config(cfg), progress=progress)


@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_spec: str) -> DistInfo:
    """Join a torchrun process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    use_cuda = device_spec != "cpu" and torch.cuda.is_available()
    if use_cuda:  # nccl needs each rank bound to its own GPU before the group forms
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world)


class Trainer:
    """Owns model, optimiser, scheduler and RNG; ``run()`` trains to the configured epoch count."""

    def __init__(self, cfg: TrainConfig, out_dir: Path, resume: bool = False, progress: bool = True,
                 dist_info: DistInfo | None = None) -> None:
        self.dist = dist_info or DistInfo()
        if cfg.batch_size % self.dist.world_size:
            raise ConfigError(f"batch_size: {cfg.batch_size} is not divisible by the {self.dist.world_size} "
                              "processes (the global batch is split evenly)")
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and self.dist.world_size > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.out_dir = out_dir
        self.progress = progress and self.dist.is_main
        dataset = load_training_data(cfg, progress=self.progress)
        if tuple(cfg.model.input_shape) != tuple(dataset.image_shape):
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, input_shape=dataset.image_shape))
        self.cfg = cfg
        self.data_meta = {"name": dataset.name, "image_shape": list(dataset.image_shape),
                          "kind": dataset.kind,
                          "preprocessing": patch_config(cfg).to_dict() if dataset.kind == "patches" else None}
        self.train_x = torch.as_tensor(dataset.train, device=self.device)  # (N, D)
        self.val_x = torch.as_tensor(dataset.val[: cfg.max_val_samples], device=self.device)  # (Nv, D)
        torch.manual_seed(cfg.seed)  # parameter init
        self.model = VAE(cfg.model).to(self.device)
        self.net: torch.nn.Module = self.model
        if self.dist.world_size > 1:
            self.net = DistributedDataParallel(self.model)
        if cfg.sampler == "naive" and isinstance(self.model.latent, PoissonLatent):
            self.model.latent.naive_sampler = True
        if isinstance(self.model.latent, PoissonLatent):
            self.model.latent.straight_through = cfg.straight_through
            self.model.latent.n_exp = cfg.n_exp_init
        self.optimizer = torch.optim.Adamax(param_groups(self.model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps_per_epoch = max(1, self.train_x.shape[0] // cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor_at(s, self.total_steps, self.cfg, self.steps_per_epoch))
        # One generator for batch order (identical on all ranks) and one for sampling (per rank).
        self.order_gen = torch.Generator().manual_seed(cfg.seed)
        self.sample_gen = torch.Generator(device=self.device).manual_seed(cfg.seed * 1_000_003 + self.dist.rank)
        self.step = self.epoch = 0
        self.best = float("inf")
        self.history: list[dict[str, Any]] = []
        if resume and (out_dir / LAST).exists():
            self._restore(out_dir / LAST)

    # ------------------------------------------------------------------ state
    def _restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt.model_config != self.cfg.model:
            raise ConfigError(f"--resume: {path} holds a different model config than the one requested")
        stored = (ckpt.data or {}).get("preprocessing")
        if stored != self.data_meta["preprocessing"]:
            raise ConfigError(f"--resume: {path} was trained on data preprocessed differently (its preprocessing "
                              f"{stored} against {self.data_meta['preprocessing']} now)")
        self.model.load_state_dict(ckpt.model_state)
        if ckpt.optimizer_state is None or ckpt.scheduler_state is None:
            raise ConfigError(f"--resume: {path} has no optimiser state (a slimmed checkpoint?)")
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.scheduler.load_state_dict(ckpt.scheduler_state)
        # The peak rates come from the config given now (the saved state holds the old ones), so
        # that `--resume --lr X` continues at X; with an unchanged config this changes nothing.
        peaks = [group.get("lr", self.cfg.lr) for group in param_groups(self.model, self.cfg)]
        self.scheduler.base_lrs = list(peaks)
        for group, peak in zip(self.optimizer.param_groups, peaks, strict=True):
            group["initial_lr"] = peak
        state = ckpt.metrics.get("trainer_state", {})
        self.order_gen.set_state(torch.as_tensor(state["order_rng"], dtype=torch.uint8))
        if self.dist.rank == 0:
            self.sample_gen.set_state(torch.as_tensor(state["sample_rng"], dtype=torch.uint8).to(
                self.sample_gen.get_state().device))
        else:
            # The checkpoint holds rank 0's sampling state only: other ranks continue on a stream of
            # their own, derived from (seed, rank, step), so ranks never share sampling noise.
            self.sample_gen.manual_seed(hash((self.cfg.seed, self.dist.rank, ckpt.step)) & (2**63 - 1))
        self.best = float(state["best"])
        if isinstance(self.model.latent, PoissonLatent):
            self.model.latent.n_exp = int(state["n_exp"])
        self.step, self.epoch = ckpt.step, ckpt.epoch
        log = self.out_dir / LOG
        if log.exists():
            self.history = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            self.history = [h for h in self.history if h["epoch"] <= self.epoch]

    def checkpoint(self, metrics: dict[str, Any]) -> Checkpoint:
        n_exp = self.model.latent.n_exp if isinstance(self.model.latent, PoissonLatent) else 0
        trainer_state = {"order_rng": self.order_gen.get_state(), "sample_rng": self.sample_gen.get_state().cpu(),
                         "best": self.best, "n_exp": n_exp}
        return Checkpoint(
            model_config=self.cfg.model, train_config=self.cfg, data=self.data_meta,
            model_state={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            step=self.step, epoch=self.epoch, metrics={**metrics, "trainer_state": trainer_state},
            optimizer_state=self.optimizer.state_dict(), scheduler_state=self.scheduler.state_dict(),
        )

    # ------------------------------------------------------------------ loop
    def _autocast(self) -> Any:
        if self.cfg.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def train_epoch(self, bar: tqdm | None) -> dict[str, float]:
        cfg, world, rank = self.cfg, self.dist.world_size, self.dist.rank
        self.net.train()
        order = torch.randperm(self.train_x.shape[0], generator=self.order_gen).to(self.device)
        local = cfg.batch_size // world
        sums = torch.zeros(3, device=self.device)  # loss, mse, kl
        max_rate = torch.zeros((), device=self.device)
        temperature = beta = 0.0
        exact = cfg.loss == "exact"
        for i in range(self.steps_per_epoch):
            temperature = temperature_at(self.step, self.total_steps, cfg)
            beta = beta_at(self.step, self.total_steps, cfg)
            idx = order[i * cfg.batch_size + rank * local: i * cfg.batch_size + (rank + 1) * local]
            x = self.train_x[idx]  # (B, D)
            with self._autocast():
                out = self.net(x, temperature=temperature, generator=self.sample_gen, exact=exact)
            loss, mse, kl = loss_terms(x, out, beta)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip = cfg.grad_clip * (cfg.warmup_clip_multiplier
                                    if in_warmup(self.step, self.total_steps, self.steps_per_epoch, cfg) else 1.0)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            # One host sync per step: a NaN/inf loss or gradient stops the run before it reaches
            # the parameters, so last.pt/best.pt stay the last good epoch's.
            if not bool(torch.isfinite(loss.detach() + grad_norm)):
                raise TrainingDivergedError(
                    f"training diverged at step {self.step + 1} (epoch {self.epoch + 1}): loss {loss.item():.4g}, "
                    f"gradient norm {grad_norm.item():.4g}; kept the last good checkpoint in {self.out_dir} "
                    "(lower --lr or --grad-clip)")
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            sums += torch.stack([loss.detach(), mse.detach(), kl.detach()])
            if "rate" in out.posterior.params:
                max_rate = torch.maximum(max_rate, out.posterior.params["rate"].detach().max())
            if bar is not None:
                bar.update(1)
                if self.step % cfg.log_every == 0 or i == self.steps_per_epoch - 1:
                    bar.set_postfix(loss=f"{loss.item():.2f}", mse=f"{mse.item():.2f}", kl=f"{kl.item():.2f}",
                                    T=f"{temperature:.3f}", beta=f"{beta:.3g}",
                                    lr=f"{self.scheduler.get_last_lr()[0]:.2e}", refresh=False)
        if world > 1:
            dist.all_reduce(sums)
            sums /= world
            dist.all_reduce(max_rate, op=dist.ReduceOp.MAX)
        loss_m, mse_m, kl_m = (sums / self.steps_per_epoch).tolist()
        stats = {"loss": loss_m, "mse": mse_m, "kl": kl_m, "temperature": temperature, "beta": beta,
                 "lr": self.scheduler.get_last_lr()[0]}
        if isinstance(self.model.latent, PoissonLatent):
            # Where the prior sits: a run that leaves its starting prior moves these.
            q = torch.quantile(self.model.latent.log_rate.detach().float().cpu(),
                               torch.tensor([0.25, 0.5, 0.75])).tolist()
            stats["prior_log_rate_q25"], stats["prior_log_rate_median"], stats["prior_log_rate_q75"] = q
            # Re-estimate the truncation of Algorithm 1 from the largest rate seen (paper: every epoch).
            stats["max_rate"] = max_rate.item()
            stats["n_exp"] = self.model.latent.n_exp
            self.model.latent.n_exp = n_exp_for_rate(stats["max_rate"])
        return stats

    def run(self, until_epoch: int | None = None) -> dict[str, Any]:
        """Train up to ``until_epoch`` (default: the configured epochs; less simulates a preemption)."""
        cfg = self.cfg
        stop = cfg.epochs if until_epoch is None else min(until_epoch, cfg.epochs)
        bar = None
        if self.progress:
            bar = tqdm(total=self.total_steps, initial=self.step, desc="pvae-train", unit="step",
                       file=sys.stderr, mininterval=0.5, dynamic_ncols=True)
        last_metrics: dict[str, Any] = {}
        try:
            while self.epoch < stop:
                t0 = time.perf_counter()
                stats = self.train_epoch(bar)
                self.epoch += 1
                elapsed = time.perf_counter() - t0
                record: dict[str, Any] = {"epoch": self.epoch, "step": self.step, **stats,
                                          "epoch_seconds": elapsed,
                                          "samples_per_second": self.steps_per_epoch * cfg.batch_size / elapsed}
                # Only rank 0 writes, so only rank 0 validates.
                if self.dist.is_main and (self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs):
                    val = evaluate_model(self.model, self.val_x, seed=cfg.seed)
                    record.update({f"val_{k}": v for k, v in val.items()})
                    # Model selection uses the objective at the target beta, so epochs compare fairly.
                    record["val_objective"] = val["mse"] + cfg.beta * val["kl"]
                last_metrics = record
                if self.dist.is_main:
                    self._write(record)
        finally:
            if bar is not None:
                bar.close()
        return last_metrics

    def _write(self, record: dict[str, Any]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.history.append(record)
        with open(self.out_dir / LOG, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        improved = "val_objective" in record and record["val_objective"] < self.best
        if improved:
            self.best = record["val_objective"]
        ckpt = self.checkpoint(record)
        save_checkpoint(ckpt, self.out_dir / LAST)
        if improved:
            save_checkpoint(ckpt, self.out_dir / BEST)


def param_groups(model: VAE, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Optimiser groups: the P-VAE prior log-rates at ``prior_lr_multiplier`` x lr, the rest at lr."""
    if not isinstance(model.latent, PoissonLatent) or cfg.prior_lr_multiplier == 1.0:
        return [{"params": list(model.parameters())}]
    prior = model.latent.log_rate
    rest = [p for p in model.parameters() if p is not prior]
    return [{"params": rest}, {"params": [prior], "lr": cfg.lr * cfg.prior_lr_multiplier}]


def write_figures(out_dir: Path, model: VAE, history: list[dict[str, Any]], val_x: torch.Tensor) -> list[Path]:
    """The learned basis (decoder columns ordered by KL) and the training curves, as PNGs."""
    from pvae.training.plots import save_basis_png, save_curves_png

    paths = [save_curves_png(history, out_dir / CURVES_PNG)]
    paths.append(save_basis_png(model, val_x, out_dir / BASIS_PNG))
    return paths


# ----------------------------------------------------------------------------- CLI


def build_parser(preset: str = "quick") -> argparse.ArgumentParser:
    """The CLI mirrors TrainConfig and ModelConfig one to one: every field is ``--field-name``.

    A field flag left out keeps the chosen preset's value; ``--help`` shows those values for
    ``preset`` (the one named on the command line, if any).
    """
    p = argparse.ArgumentParser(allow_abbrev=False,
                                prog="pvae-train", description="Train a Poisson VAE (or a baseline).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS), help="base config to start from")
    p.add_argument("--out", type=Path, required=True, default=argparse.SUPPRESS,
                   help="run directory (checkpoints, metrics, PNGs)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if it exists")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if OUT already holds a run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--stop-after-epochs", type=int, default=argparse.SUPPRESS, metavar="N",
                   help="stop after epoch N of the configured schedule (schedules keep their full length; "
                        "--resume continues): to study the start of a long run (default: run to the end)")
    base = get_preset(preset if preset in PRESETS else "quick")
    # suppress: an absent flag leaves no attribute, so the preset's value stands.
    add_config_flags(p, ModelConfig, defaults=base.model, suppress=True, group=f"model (defaults: preset {preset!r})")
    add_config_flags(p, TrainConfig, defaults=base, suppress=True, exclude=("model",),
                     group=f"training (defaults: preset {preset!r})")
    return p


def _preset_named(argv: Sequence[str] | None) -> str:
    """The --preset on the command line (for --help), without failing on anything else."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--preset", default="quick")
    known, _ = pre.parse_known_args(list(argv) if argv is not None else None)
    return str(known.preset)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The preset named by ``--preset`` with the field flags given laid over it."""
    base = get_preset(args.preset)
    model = dataclasses.replace(base.model, **flag_values(ModelConfig, args))
    return dataclasses.replace(base, **{**flag_values(TrainConfig, args), "model": model})


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("pvae-train", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser(_preset_named(argv)).parse_args(argv)
    cfg = config_from_args(args)
    if args.print_config:
        print(json.dumps(config_to_dict(cfg), indent=2))
        return 0
    if (args.out / LAST).exists() and not (args.resume or args.overwrite):
        raise ConfigError(f"--out: {args.out} already holds a run ({LAST}); pass --resume to continue it "
                          "or --overwrite to start afresh")
    if args.overwrite and not args.resume:
        (args.out / LOG).unlink(missing_ok=True)
    dist_info = init_distributed(cfg.device)
    try:
        trainer = Trainer(cfg, args.out, resume=args.resume, progress=not args.no_progress, dist_info=dist_info)
        if dist_info.is_main:
            print(f"pvae-train {__version__}: {cfg.model.arch} {cfg.model.latent} K={cfg.model.n_latents} on "
                  f"{trainer.device} x{dist_info.world_size}, {trainer.train_x.shape[0]} train / "
                  f"{trainer.val_x.shape[0]} val samples of {cfg.data}, {trainer.total_steps} steps -> {args.out}",
                  file=sys.stderr)
        stop_after = getattr(args, "stop_after_epochs", None)
        if stop_after is not None and stop_after < 1:
            raise ConfigError(f"--stop-after-epochs: must be >= 1, got {stop_after}")
        final = trainer.run(until_epoch=stop_after)
        if dist_info.is_main:
            figures = write_figures(args.out, trainer.model, trainer.history, trainer.val_x)
            summary = {k: final[k] for k in ("epoch", "loss", "val_mse", "val_mse_map", "val_kl",
                                              "val_active_fraction", "val_lifetime_sparsity") if k in final}
            print(json.dumps(summary), file=sys.stderr)
            print(f"wrote {args.out / BEST}, {args.out / LAST}, {args.out / LOG}, "
                  + ", ".join(str(p) for p in figures), file=sys.stderr)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
