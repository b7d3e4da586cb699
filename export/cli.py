"""``pvae-export``: checkpoint -> verified ONNX/TorchScript bundle, with progress and a summary.

    pvae-export runs/quick/best.pt                       # -> runs/quick/best.bundle/
    pvae-export best.pt -o bundle --formats onnx --no-verify
    pvae-export best.pt --fp16 --triton triton-repo      # optional targets

Progress lines and the summary go to stdout; a user error is one line on stderr and exit code 2
(``pvae.cli.run_cli``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pvae import __version__
from pvae.bundle import MANIFEST
from pvae.cli import run_cli
from pvae.export.exporter import DEFAULT_FORMATS, export_bundle
from pvae.export.onnx_export import DEFAULT_OPSET

__all__ = ["build_parser", "format_summary", "main"]

PROG = "pvae-export"
#: Byte units for the file table.
_UNITS = ("B", "kB", "MB", "GB")
_KILO = 1000.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog=PROG,
        description="Export a pvae checkpoint to a bundle directory (ONNX graphs, TorchScript, "
        "manifest), verified against torch.",
    )
    parser.add_argument("checkpoint", type=Path, help="a pvae checkpoint (.pt)")
    parser.add_argument(
        "-o",
        "--out",
        type=Path,
        default=None,
        help="bundle directory (default: <checkpoint stem>.bundle next to the checkpoint); "
        "an existing bundle there is replaced, anything else is refused",
    )
    parser.add_argument(
        "--formats",
        default=",".join(DEFAULT_FORMATS),
        help="comma-separated: onnx (required), torchscript (default: %(default)s)",
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--no-verify", action="store_true", help="skip the parity and sampler checks")
    parser.add_argument(
        "--fp16", action="store_true", help="also write rates_fp16.onnx (float16 patches, weights and outputs)"
    )
    parser.add_argument(
        "--triton",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write a Triton Inference Server model repository to DIR (onnxruntime backend; config.pbtxt "
        "runs on the CPU, configs/gpu.pbtxt on GPUs: tritonserver --model-config-name=gpu)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _size(n_bytes: int) -> str:
    value = float(n_bytes)
    for unit in _UNITS:
        if value < _KILO or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= _KILO
    raise AssertionError("unreachable")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    return [line.format(*header), line.format(*("-" * w for w in widths)), *(line.format(*row) for row in rows)]


def format_summary(bundle: Path, step_times: Sequence[tuple[str, float]]) -> str:
    """The end-of-export report: files, parity errors, sampler checks, timings, warnings."""
    manifest: dict[str, Any] = json.loads((bundle / MANIFEST).read_text())
    lines = [
        f"bundle {bundle}  (K={manifest['n_latents']}, patch {manifest['patch_size']}, "
        f"opset {manifest['opset']}, frame min side {manifest['frame_policy']['min_side']})",
        "",
    ]
    files = sorted(bundle.iterdir())
    lines += _table(("file", "size"), [(f.name, _size(f.stat().st_size)) for f in files if f.is_file()])
    verification = manifest["verification"]
    lines.append("")
    if verification.get("skipped"):
        lines.append("verification: skipped (--no-verify)")
    else:
        rows = [
            (
                r["graph"],
                r["format"],
                r["output"],
                r["against"],
                f"{r['max_abs']:.2e}",
                f"{r['max_rel']:.2e}",
                "-" if r["tolerance"] is None else f"{r['tolerance']:g}",
                "ok" if r["passed"] else "FAIL",
            )
            for r in verification["checks"]
        ]
        lines += _table(("graph", "format", "output", "against", "max abs", "max rel", "gate", ""), rows)
        for fmt, result in verification["sampler"].items():
            worst = max(max(abs(r["mean_z"]), abs(r["var_z"])) for r in result["rates"])
            extra = ", counts equal the numpy reference" if result.get("matches_numpy_reference") else ""
            lines.append(
                f"sampler/{fmt}: {len(result['rates'])} rates x {result['draws_per_rate']} draws, "
                f"worst |z| {worst:.2f} (gate {result['z']:g}), same seed same counts: "
                f"{result['reproducible']}, seeds differ: {result['seeds_differ']}{extra}"
            )
    lines.append("")
    lines += _table(("step", "seconds"), [(name, f"{seconds:.2f}") for name, seconds in step_times])
    lines.append(f"total {sum(s for _, s in step_times):.2f} s")
    silenced = manifest["export"]["torchscript_deprecation_warnings_silenced"]
    if "torchscript" in manifest["export"]["formats"]:
        lines.append(
            f"note: torch 2.13 deprecates TorchScript; {silenced} `torch.jit.*` DeprecationWarnings were "
            "silenced deliberately (exactly that message) while writing and checking the .ts files"
        )
    return "\n".join(lines)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    marks: list[tuple[str, float]] = []

    def progress(line: str) -> None:
        marks.append((line.split("] ", 1)[-1], time.perf_counter()))
        print(f"{PROG}: {line}", flush=True)

    bundle = export_bundle(
        args.checkpoint,
        args.out,
        formats=args.formats,
        opset=args.opset,
        verify=not args.no_verify,
        progress=progress,
        fp16=args.fp16,
        triton_dir=args.triton,
    )
    done = time.perf_counter()
    ends = [t for _, t in marks[1:]] + [done]
    step_times = [(name, end - start) for (name, start), end in zip(marks, ends, strict=True)]
    print()
    print(format_summary(bundle, step_times))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``pvae-export``)."""
    return run_cli(PROG, _main, argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
