"""Training-throughput benchmark: real training runs, and the sampler against Algorithm 1 as written.

    pvae-bench-train                       # lin|lin, K=512, batch 1000, on the current device
    pvae-bench-train --device cuda --steps 50

Two parts, measured in the same run:

1. **Micro-benchmark** of one optimisation step with the model and data in memory: Algorithm 1 as
   written (``naive``), the adaptive relaxed sampler (``fast``) and the closed-form ``exact`` loss,
   at the start (tiny rates) and with trained weights, at T = 1 and T = 0.05. Ratios are against
   ``naive``.
2. **Real runs**: ``pvae-train``'s own Trainer on the ``default-model`` recipe (data, sampler or
   closed form, loss, optimiser, gradient clip, validation and a checkpoint every epoch), timed
   wall-clock over ``--real-epochs`` epochs, for ``--loss exact`` and ``--loss mc``. Each is
   projected to the paper-length run (240,000 steps of 1000 patches) and compared with the
   authors' 112 minutes on a GPU.

Each measurement runs in its own subprocess, so peak memory is measured cleanly (peak RSS growth on
CPU, ``torch.cuda.max_memory_allocated`` on CUDA).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from pvae.cli import run_cli
from pvae.errors import PVAEError

#: The paper's patch run: 3000 epochs of 80k training patches.
PAPER_EPOCHS, PAPER_TRAIN_PATCHES = 3000, 80_000
#: The authors' reported wall time for that run, in seconds (about 1 h 52 min).
PAPER_SECONDS = 112 * 60
#: Samples per second that fit the paper-length run (240M patches) into the authors' wall time.
PAPER_SAMPLES = PAPER_EPOCHS * PAPER_TRAIN_PATCHES
TARGET_SAMPLES_PER_SECOND = PAPER_SAMPLES / PAPER_SECONDS


def _measure_real_run(loss: str, device_spec: str, epochs: int) -> dict[str, Any]:
    """Runs inside the child process: a real Trainer run of the default-model recipe, timed wall-clock."""
    import dataclasses
    import tempfile
    from pathlib import Path

    from pvae.training.config import get_preset
    from pvae.training.train import Trainer

    base = get_preset("default-model")
    cfg = dataclasses.replace(base, loss=loss, epochs=epochs, device=device_spec, eval_every=1,
                              warmup_epochs=min(base.warmup_epochs or 0.0, epochs - 1.0))
    with tempfile.TemporaryDirectory(prefix="pvae-bench-train-") as tmp:
        trainer = Trainer(cfg, Path(tmp), progress=False)  # data loaded (cached) before the clock starts
        t0 = time.perf_counter()
        final = trainer.run()
        elapsed = time.perf_counter() - t0
    samples = trainer.total_steps * cfg.batch_size
    return {"kind": "real", "loss": loss, "device": str(trainer.device), "epochs": epochs,
            "steps": trainer.total_steps, "batch": cfg.batch_size, "seconds": elapsed,
            "samples_per_second": samples / elapsed,
            "validation_samples_per_epoch": int(trainer.val_x.shape[0]),
            "final_val_mse_map": final.get("val_mse_map"),
            "paper_length_minutes": PAPER_SAMPLES / (samples / elapsed) / 60}


def _measure(variant: str, device_spec: str, temperature: float, steps: int, batch: int, k: int,
             weights: str) -> dict[str, Any]:
    """Runs inside the child process: time ``steps`` optimisation steps of one sampler variant."""
    import torch

    from pvae.training.checkpoint import build_model, default_model_path, load_checkpoint
    from pvae.training.config import ModelConfig
    from pvae.training.data import PatchConfig, load_dataset
    from pvae.training.device import resolve_device
    from pvae.training.model import VAE, PoissonLatent, loss_terms

    device = resolve_device(device_spec)
    data = load_dataset("patches", PatchConfig(n_patches=20_000))
    x_all = torch.as_tensor(data.train, device=device)
    torch.manual_seed(0)
    if weights == "trained":
        model = build_model(load_checkpoint(default_model_path()), device).train()
        k = model.cfg.n_latents
    else:
        model = VAE(ModelConfig(arch="lin|lin", n_latents=k)).to(device)
    latent = model.latent
    assert isinstance(latent, PoissonLatent)
    exact = variant == "exact"
    latent.naive_sampler = variant == "naive"
    latent.n_exp = 263  # the paper's starting truncation
    opt = torch.optim.Adamax(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(0)

    def step(i: int) -> None:
        idx = torch.randint(0, x_all.shape[0], (batch,), device=device, generator=gen)
        out = model(x_all[idx], temperature=temperature, generator=gen, exact=exact)
        loss, _, _ = loss_terms(x_all[idx], out, beta=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # Peak memory counts from here (data and model loaded), warm-up steps included.
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    for i in range(2):  # warm-up
        step(i)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
    else:
        peak = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024  # KiB -> MiB
    return {"kind": "micro", "variant": variant, "device": str(device), "temperature": temperature, "weights": weights,
            "batch": batch, "k": k, "steps": steps, "seconds": elapsed,
            "samples_per_second": steps * batch / elapsed, "peak_mib": peak,
            "peak_kind": "cuda max_memory_allocated growth" if device.type == "cuda" else "peak RSS growth"}


def _run_child(args: argparse.Namespace, variant: str, temperature: float, weights: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pvae.bench.train", "--child", variant, "--device", args.device,
           "--temperature", str(temperature), "--steps", str(args.steps), "--batch", str(args.batch),
           "--k", str(args.k), "--weights", weights, "--real-epochs", str(args.real_epochs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise PVAEError(f"benchmark child ({variant}) failed: {tail[0]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="pvae-bench-train", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--steps", type=int, default=10, help="timed optimisation steps per variant")
    p.add_argument("--batch", type=int, default=1000, help="batch size (paper: 1000)")
    p.add_argument("--k", type=int, default=512, help="number of latents (paper: 512)")
    p.add_argument("--temperatures", default="1.0,0.05", help="comma-separated temperatures to measure")
    p.add_argument("--weights", default="init,trained",
                   help="init (fresh model: tiny rates) and/or trained (the bundled model's weights)")
    p.add_argument("--real-epochs", type=int, default=4,
                   help="epochs (of 80 steps) of each real training run; 0 skips the real runs")
    p.add_argument("--real-losses", default="exact,mc", help="losses of the real runs (exact and/or mc)")
    p.add_argument("--json", action="store_true", help="print the raw results as JSON at the end")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--temperature", type=float, default=1.0, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("pvae-bench-train", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        if args.child.startswith("real-"):
            print(json.dumps(_measure_real_run(args.child.removeprefix("real-"), args.device, args.real_epochs)))
            return 0
        print(json.dumps(_measure(args.child, args.device, args.temperature, args.steps, args.batch, args.k,
                                  args.weights)))
        return 0
    if args.real_epochs < 0 or (0 < args.real_epochs < 2):
        raise PVAEError(f"--real-epochs: 0 (skip) or >= 2 (one warm-up epoch at least), got {args.real_epochs}")
    rows: list[dict[str, Any]] = []
    temps = [float(t) for t in args.temperatures.split(",")]
    weight_kinds = [w for w in args.weights.split(",") if w]
    losses = [loss for loss in args.real_losses.split(",") if loss]
    if args.real_epochs:
        print(f"real runs: pvae-train's Trainer, default-model recipe, {args.real_epochs} epochs each "
              f"(validation and a checkpoint every epoch), wall clock", file=sys.stderr)
        print(f"{'loss':8s} {'steps':>6s} {'samples/s':>11s} {'paper-length run':>17s}   vs the authors' "
              f"{PAPER_SECONDS / 60:.0f} min (target {TARGET_SAMPLES_PER_SECOND:,.0f} samples/s)", file=sys.stderr)
        for loss in losses:
            res = _run_child(args, f"real-{loss}", 0.0, "init")
            rows.append(res)
            print(f"{loss:8s} {res['steps']:6d} {res['samples_per_second']:11.0f} "
                  f"{res['paper_length_minutes']:13.0f} min   x{PAPER_SECONDS / 60 / res['paper_length_minutes']:.2f} "
                  f"of the target speed", file=sys.stderr, flush=True)
    print(f"micro-benchmark: one optimisation step, batch {args.batch}, K={args.k}, data in memory", file=sys.stderr)
    print(f"{'weights':8s} {'T':>5s} {'variant':7s} {'samples/s':>11s} {'peak MiB':>9s}   ratio (vs naive = "
          "Algorithm 1 as written)", file=sys.stderr)
    for weights in weight_kinds:
        for temp in temps:
            pair = {}
            for variant in ("naive", "fast", "exact"):
                res = _run_child(args, variant, temp, weights)
                pair[variant] = res
                rows.append(res)
                ratio = ""
                if variant != "naive":
                    ratio = (f"   throughput x{res['samples_per_second'] / pair['naive']['samples_per_second']:.1f}, "
                             f"memory x{pair['naive']['peak_mib'] / max(res['peak_mib'], 1e-3):.0f} less")
                print(f"{weights:8s} {temp:5.2f} {variant:7s} {res['samples_per_second']:11.0f} "
                      f"{res['peak_mib']:9.0f}{ratio}", file=sys.stderr, flush=True)
    fast_rows = [r for r in rows if r.get("variant") == "fast"]
    if fast_rows and fast_rows[0]["device"].startswith("cuda"):
        worst = min(r["samples_per_second"] for r in fast_rows)
        epoch_s = PAPER_TRAIN_PATCHES / worst
        total = epoch_s * PAPER_EPOCHS
        print(f"CUDA: {epoch_s:.2f} s/epoch of {PAPER_TRAIN_PATCHES} patches (slowest setting); "
              f"paper-length run ({PAPER_EPOCHS} epochs) projected at {total / 60:.1f} min "
              f"vs the authors' {PAPER_SECONDS / 60:.0f} min", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
