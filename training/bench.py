"""Training-throughput benchmark: the adaptive relaxed sampler against Algorithm 1 as written.

    pvae-bench-train                       # lin|lin, K=512, batch 1000, on the current device
    pvae-bench-train --device cuda --steps 50

Each variant runs in its own subprocess so that peak memory is measured cleanly (peak RSS growth
on CPU, ``torch.cuda.max_memory_allocated`` on CUDA). Both variants train the same model on the
same natural patches at the same temperature; the printed ratio is fast / naive, measured in this
run. On CUDA it also projects the paper-length run (3000 epochs of 80k patches).
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

#: The paper's patch run: 3000 epochs of 80k training patches (pvae-model.md).
PAPER_EPOCHS, PAPER_TRAIN_PATCHES = 3000, 80_000
#: The authors' reported wall time for that run, in seconds (about 1 h 52 min).
PAPER_SECONDS = 112 * 60


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
    latent.naive_sampler = variant == "naive"
    latent.n_exp = 263  # the paper's starting truncation
    opt = torch.optim.Adamax(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(0)

    def step(i: int) -> None:
        idx = torch.randint(0, x_all.shape[0], (batch,), device=device, generator=gen)
        out = model(x_all[idx], temperature=temperature, generator=gen)
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
    return {"variant": variant, "device": str(device), "temperature": temperature, "weights": weights,
            "batch": batch, "k": k, "steps": steps, "seconds": elapsed,
            "samples_per_second": steps * batch / elapsed, "peak_mib": peak,
            "peak_kind": "cuda max_memory_allocated growth" if device.type == "cuda" else "peak RSS growth"}


def _run_child(args: argparse.Namespace, variant: str, temperature: float, weights: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pvae.training.bench", "--child", variant, "--device", args.device,
           "--temperature", str(temperature), "--steps", str(args.steps), "--batch", str(args.batch),
           "--k", str(args.k), "--weights", weights]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise PVAEError(f"benchmark child ({variant}) failed: {tail[0]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pvae-bench-train", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--steps", type=int, default=10, help="timed optimisation steps per variant")
    p.add_argument("--batch", type=int, default=1000, help="batch size (paper: 1000)")
    p.add_argument("--k", type=int, default=512, help="number of latents (paper: 512)")
    p.add_argument("--temperatures", default="1.0,0.05", help="comma-separated temperatures to measure")
    p.add_argument("--weights", default="init,trained",
                   help="init (fresh model: tiny rates) and/or trained (the bundled model's weights)")
    p.add_argument("--json", action="store_true", help="print the raw results as JSON at the end")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--temperature", type=float, default=1.0, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("pvae-bench-train", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        weights = args.weights
        print(json.dumps(_measure(args.child, args.device, args.temperature, args.steps, args.batch, args.k,
                                  weights)))
        return 0
    rows = []
    temps = [float(t) for t in args.temperatures.split(",")]
    weight_kinds = [w for w in args.weights.split(",") if w]
    print(f"{'weights':8s} {'T':>5s} {'variant':7s} {'samples/s':>11s} {'peak MiB':>9s}   ratio (fast/naive)",
          file=sys.stderr)
    for weights in weight_kinds:
        for temp in temps:
            pair = {}
            for variant in ("naive", "fast"):
                res = _run_child(args, variant, temp, weights)
                pair[variant] = res
                rows.append(res)
                ratio = ""
                if variant == "fast":
                    ratio = (f"   throughput x{res['samples_per_second'] / pair['naive']['samples_per_second']:.1f}, "
                             f"memory x{pair['naive']['peak_mib'] / max(res['peak_mib'], 1e-3):.0f} less")
                print(f"{weights:8s} {temp:5.2f} {variant:7s} {res['samples_per_second']:11.0f} "
                      f"{res['peak_mib']:9.0f}{ratio}", file=sys.stderr, flush=True)
    fast_rows = [r for r in rows if r["variant"] == "fast"]
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
