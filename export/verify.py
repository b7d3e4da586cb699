"""Parity and sampler checks of a freshly written bundle: torch vs ONNX Runtime vs TorchScript.

References come from the training code, never from the export modules: ``VAE.encode``/``decode``
for the rate path and decoder, and ``pvae.training.data.preprocess_image`` (float64) followed by
numpy reflect padding, tiling, ``VAE.encode`` and ``VAE.decode`` for the frame path.

Errors are reported as ``max_abs`` = max |candidate - reference| and ``max_rel`` = max_abs divided by
max |reference| (a norm-wise relative error: element-wise ratios blow up where log-rates cross 0).

Gates (the export fails, and nothing reaches the final path, when one is exceeded):

- rate path log-rates on natural held-out patches, ONNX and TorchScript vs torch:
  ``LOG_RATE_TOLERANCE`` (1e-5); on stress patches ``STRESS_LOG_RATE_TOLERANCE``;
- frame path log-rates vs ``VAE.encode`` of the tiles of the graph's *own* preprocessed output:
  ``LOG_RATE_TOLERANCE`` too (this isolates tiling and the rate path from preprocessing round-off);
- frame ``preprocessed`` vs the float64 ``preprocess_image``: ``PREPROCESS_TOLERANCE`` (float32
  convolutions and whole-frame means in the graph; the measured error is reported);
- decoder and reconstructions: ``DECODER_TOLERANCE`` (relative); uint8 views: at most one level off;
- sampler: per-rate mean and variance within ``SAMPLER_Z`` standard errors of Poisson(rate), the same
  seed gives identical counts, another seed different ones, and ONNX counts equal the numpy
  reference ``poisson_reference`` bit for bit.

    >>> report = verify_bundle(bundle_dir, model, preprocessing, policy, formats=("onnx", "torchscript"))
    >>> report["passed"], report["checks"][0]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pvae.errors import BundleError, MissingDependencyError
from pvae.export.modules import FramePolicy, to_display_u8
from pvae.training.data import PatchConfig, preprocess_image, to_grayscale
from pvae.training.model import VAE

__all__ = [
    "DECODER_TOLERANCE",
    "FP16_LOG_RATE_TOLERANCE",
    "LOG_RATE_TOLERANCE",
    "PREPROCESS_TOLERANCE",
    "SAMPLER_RATES",
    "SAMPLER_Z",
    "STRESS_LOG_RATE_TOLERANCE",
    "VerificationError",
    "check_sampler_statistics",
    "error_stats",
    "natural_images",
    "reference_frame_outputs",
    "sample_frames",
    "sample_patches",
    "stress_patches",
    "verify_bundle",
]

#: The parity gate: log-rates of every format within 1e-5 (absolute, fp32) of torch.
LOG_RATE_TOLERANCE = 1e-5
#: Frame preprocessing vs the float64 reference. The graph runs float32 correlations (15x15 whitening,
#: two separable 13x13 Gaussians) and whole-frame float32 means; z-scored values reach ~10, so ~1e-5
#: absolute is float32 round-off (1.7e-5 measured on the bundled model's verification frames).
PREPROCESS_TOLERANCE = 5e-5
#: Decoded patches / reconstructions, *relative* (max_rel): decoding counts of up to a few hundred
#: gives values of hundreds, so an absolute gate would only measure the input scale.
DECODER_TOLERANCE = 1e-5
#: Log-rates of the stress patches (zeros and 6x-scaled noise): encoder outputs reach ~30 there,
#: so float32 summation order alone moves log-rates by ~2e-5 (torch and ONNX Runtime alike, measured
#: against float64); reported and gated 10x looser than natural inputs.
STRESS_LOG_RATE_TOLERANCE = 1e-4
#: The fp16 rate path vs torch fp32 (float16 patches and weights carry ~3 decimal digits).
FP16_LOG_RATE_TOLERANCE = 5e-2
#: uint8 display views may differ by one level where a value sits on a rounding boundary.
U8_TOLERANCE = 1
#: Rates at which the sampler is checked against Poisson (1e-3 .. 150, and the model's clamp ~200).
SAMPLER_RATES = (1e-3, 0.1, 1.0, 5.0, 20.0, 150.0, 200.0)
#: Draws per rate for the sampler statistics.
SAMPLER_DRAWS = 20_000
#: Allowed deviation of the sample mean and variance, in standard errors (5 sigma: ~6e-7 false alarms
#: per check for Gaussian statistics, so a correct sampler practically never fails the export).
SAMPLER_Z = 5.0
#: Number of natural patches and stress patches (zeros, large noise) in the verification set.
N_NATURAL_PATCHES = 256
N_STRESS_PATCHES = 32
#: Scale of the stress noise: z-scored data rarely exceeds 4, so 6x pushes the encoder into the clamps.
STRESS_SCALE = 6.0
#: Seeds of the verification inputs and the sampler checks (fixed: verification is reproducible).
VERIFY_SEED = 20240514
SAMPLER_SEEDS = (1, 2)
#: Frame shapes (B, H, W) verified besides the minimum frame: odd sizes, a batch, and one VGA frame.
FRAME_SHAPES = ((1, 33, 47), (2, 64, 80), (1, 100, 75), (1, 480, 640))


class VerificationError(BundleError):
    """A bundle failed its parity or sampler checks (the export is abandoned)."""


# ----------------------------------------------------------------------------- inputs


def natural_images() -> list[np.ndarray]:
    """A few of scikit-image's bundled photographs as grayscale uint8 (nothing is downloaded)."""
    try:
        from skimage import data as skdata
    except ImportError as error:
        raise MissingDependencyError("verification images come from scikit-image: pip install 'pvae[train]'") from error
    images = [skdata.camera(), skdata.astronaut(), skdata.coffee()]
    return [np.clip(np.rint(to_grayscale(img) * 255.0), 0, 255).astype(np.uint8) for img in images]


def _reference_config(cfg: PatchConfig) -> PatchConfig:
    # preprocess_image refuses images below cfg.min_image_size, which includes the training border
    # (patch extraction stays `border` pixels in). Frames are processed whole, so the border is
    # irrelevant to the arithmetic; dropping it lets the float64 reference cover the minimum frame.
    return dataclasses.replace(cfg, border=0)


def _preprocess(frame: np.ndarray, cfg: PatchConfig | None) -> np.ndarray:
    """The float64 reference of the frame graph's preprocessing (float32 result)."""
    if cfg is None:
        return (frame.astype(np.float64) / 255.0).astype(np.float32)
    return preprocess_image(frame, _reference_config(cfg))


def sample_patches(
    cfg: PatchConfig | None, patch_shape: tuple[int, int], n: int = N_NATURAL_PATCHES, seed: int = VERIFY_SEED
) -> np.ndarray:
    """Held-out-like inputs (n, D) float32: random crops of preprocessed natural images (camera,
    astronaut, coffee), preprocessed the training way."""
    rng = np.random.default_rng(seed)
    ph, pw = patch_shape
    images = [_preprocess(img, cfg) for img in natural_images()]
    crops = []
    for i in range(n):
        img = images[i % len(images)]
        top = int(rng.integers(0, img.shape[0] - ph + 1))
        left = int(rng.integers(0, img.shape[1] - pw + 1))
        crops.append(img[top : top + ph, left : left + pw].reshape(-1))
    return np.stack(crops).astype(np.float32)


def stress_patches(patch_shape: tuple[int, int], seed: int = VERIFY_SEED) -> np.ndarray:
    """(N_STRESS_PATCHES, D) float32: a zero patch and large noise that drives the encoder into both
    soft clamps (rates near the e^5.3 ceiling and near the floor)."""
    rng = np.random.default_rng(seed)
    stress = rng.standard_normal((N_STRESS_PATCHES, patch_shape[0] * patch_shape[1])) * STRESS_SCALE
    stress[0] = 0.0
    return stress.astype(np.float32)


def sample_frames(policy: FramePolicy, seed: int = VERIFY_SEED) -> list[np.ndarray]:
    """uint8 frame batches (B, H, W): crops of natural images at odd sizes, the minimum frame, a VGA
    frame (640x480 -> 1200 patches)."""
    import cv2

    rng = np.random.default_rng(seed)
    images = natural_images()
    shapes = [(1, policy.min_side, policy.min_side), *FRAME_SHAPES]
    batches = []
    for batch, height, width in shapes:
        frames = []
        for b in range(batch):
            img = images[b % len(images)]
            if height > img.shape[0] or width > img.shape[1]:
                img = cv2.resize(
                    img, (max(width, img.shape[1]), max(height, img.shape[0])), interpolation=cv2.INTER_AREA
                )
            top = int(rng.integers(0, img.shape[0] - height + 1))
            left = int(rng.integers(0, img.shape[1] - width + 1))
            frames.append(img[top : top + height, left : left + width])
        batches.append(np.ascontiguousarray(np.stack(frames)))
    return batches


# ----------------------------------------------------------------------------- references


def _encode(model: VAE, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        post = model.encode(torch.as_tensor(patches))
    return post.params["log_rate"].numpy(), post.params["rate"].numpy()


def _decode(model: VAE, latents: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.decode(torch.as_tensor(latents)).reshape(latents.shape[0], -1).numpy()


def _tile(frames: np.ndarray, patch_shape: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """(B, H, W) -> reflect-padded tiles (B*R*C, ph*pw) in row-major patch order, R, C."""
    ph, pw = patch_shape
    batch, height, width = frames.shape
    padded = np.pad(frames, ((0, 0), (0, -height % ph), (0, -width % pw)), mode="reflect")
    rows, cols = padded.shape[1] // ph, padded.shape[2] // pw
    tiles = padded.reshape(batch, rows, ph, cols, pw).transpose(0, 1, 3, 2, 4).reshape(-1, ph * pw)
    return np.ascontiguousarray(tiles), rows, cols


def _untile(
    patches: np.ndarray, batch: int, rows: int, cols: int, patch_shape: tuple[int, int], height: int, width: int
) -> np.ndarray:
    ph, pw = patch_shape
    canvas = patches.reshape(batch, rows, cols, ph, pw).transpose(0, 1, 3, 2, 4)
    return canvas.reshape(batch, rows * ph, cols * pw)[:, :height, :width]


def reference_frame_outputs(
    model: VAE, cfg: PatchConfig | None, patch_shape: tuple[int, int], frames: np.ndarray
) -> dict[str, np.ndarray]:
    """The frame graph's outputs computed the training way (float64 preprocessing, numpy tiling)."""
    preprocessed = np.stack([_preprocess(frame, cfg) for frame in frames])  # (B, H, W)
    return frame_outputs_from_preprocessed(model, patch_shape, preprocessed)


def frame_outputs_from_preprocessed(
    model: VAE, patch_shape: tuple[int, int], preprocessed: np.ndarray
) -> dict[str, np.ndarray]:
    """Tiling, encoding, decoding and untiling of already preprocessed frames (B, H, W)."""
    batch, height, width = preprocessed.shape
    tiles, rows, cols = _tile(preprocessed, patch_shape)
    log_rates, rates = _encode(model, tiles)
    recon = _untile(_decode(model, rates), batch, rows, cols, patch_shape, height, width)
    return {
        "preprocessed": preprocessed,
        "log_rates": log_rates.reshape(batch, rows * cols, -1),
        "rates": rates.reshape(batch, rows * cols, -1),
        "reconstruction": recon,
        "preprocessed_u8": to_display_u8(torch.as_tensor(preprocessed)).numpy(),
        "reconstruction_u8": to_display_u8(torch.as_tensor(recon)).numpy(),
    }


# ----------------------------------------------------------------------------- comparisons


def error_stats(candidate: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(max abs error, max abs error / max |reference|); shapes must match."""
    if candidate.shape != reference.shape:
        raise VerificationError(f"shape mismatch: got {candidate.shape}, expected {reference.shape}")
    diff = np.abs(candidate.astype(np.float64) - reference.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(reference.astype(np.float64)).max()) if reference.size else 0.0
    return max_abs, max_abs / scale if scale > 0 else max_abs


class _Checks:
    """Accumulates comparisons as manifest-ready rows."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        graph: str,
        fmt: str,
        output: str,
        candidate: np.ndarray,
        reference: np.ndarray,
        tolerance: float | None,
        against: str = "torch",
        relative: bool = False,
    ) -> None:
        """Compare; ``tolerance`` gates max_abs, or max_rel when ``relative``; None only reports."""
        max_abs, max_rel = error_stats(candidate, reference)
        for row in self.rows:  # keep the worst case over all inputs of one (graph, format, output)
            if (row["graph"], row["format"], row["output"], row["against"]) == (graph, fmt, output, against):
                row["max_abs"] = max(row["max_abs"], max_abs)
                row["max_rel"] = max(row["max_rel"], max_rel)
                row["passed"] = _within(row, tolerance, relative)
                return
        row = {
            "graph": graph,
            "format": fmt,
            "output": output,
            "against": against,
            "max_abs": max_abs,
            "max_rel": max_rel,
            "tolerance": tolerance,
            "gate": "rel" if relative else "abs",
        }
        row["passed"] = _within(row, tolerance, relative)
        self.rows.append(row)


def _within(row: dict[str, Any], tolerance: float | None, relative: bool) -> bool:
    return tolerance is None or row["max_rel" if relative else "max_abs"] <= tolerance


# ----------------------------------------------------------------------------- sampler


def check_sampler_statistics(
    sample: Callable[[np.ndarray, int], np.ndarray],
    rates: Sequence[float] = SAMPLER_RATES,
    draws: int = SAMPLER_DRAWS,
    seeds: Sequence[int] = SAMPLER_SEEDS,
    z: float = SAMPLER_Z,
) -> dict[str, Any]:
    """Mean and variance per rate against Poisson, plus seed reproducibility and independence.

    ``sample(rates (draws, len(rates)) float32, seed) -> counts`` (int). Standard errors: the mean of
    n Poisson(l) draws has variance l/n; the sample variance has variance ~ (l + 2 l^2)/n (4th
    central moment l + 3 l^2).
    """
    grid = np.tile(np.asarray(rates, dtype=np.float32), (draws, 1))  # (draws, R)
    first = np.asarray(sample(grid, seeds[0]))
    again = np.asarray(sample(grid, seeds[0]))
    other = np.asarray(sample(grid, seeds[1]))
    rows = []
    for j, rate in enumerate(np.asarray(rates, dtype=np.float32).astype(np.float64)):
        counts = first[:, j].astype(np.float64)
        mean, var = float(counts.mean()), float(counts.var(ddof=1))
        mean_se = math.sqrt(rate / draws)
        var_se = math.sqrt((rate + 2.0 * rate * rate) / draws)
        ok = abs(mean - rate) <= z * mean_se and abs(var - rate) <= z * var_se
        rows.append(
            {
                "rate": float(rate),
                "mean": mean,
                "var": var,
                "mean_z": (mean - rate) / mean_se,
                "var_z": (var - rate) / var_se,
                "passed": bool(ok),
            }
        )
    integral = bool(first.dtype.kind in "iu" and (first >= 0).all())
    reproducible = bool(np.array_equal(first, again))
    seeds_differ = bool(not np.array_equal(first, other))
    return {
        "draws_per_rate": draws,
        "z": z,
        "rates": rows,
        "integral_nonnegative": integral,
        "reproducible": reproducible,
        "seeds_differ": seeds_differ,
        "passed": bool(all(r["passed"] for r in rows) and integral and reproducible and seeds_differ),
    }


# ----------------------------------------------------------------------------- the bundle


def _ort_session(path: Path) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise MissingDependencyError("verification runs ONNX Runtime: pip install 'pvae[cpu]'") from error
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings are about graph rewrites, not results
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_runner(session: Any) -> Callable[..., list[np.ndarray]]:
    names = [i.name for i in session.get_inputs()]

    def run(*feeds: np.ndarray) -> list[np.ndarray]:
        return session.run(None, dict(zip(names, feeds, strict=True)))

    return run


def _torchscript_runner(module: Any) -> Callable[..., list[np.ndarray]]:
    def run(*feeds: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(*[torch.as_tensor(np.asarray(f)) for f in feeds])
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]

    return run


def _seeded(run: Callable[..., list[np.ndarray]]) -> Callable[[np.ndarray, int], np.ndarray]:
    """A sampler runner as ``sample(rates, seed) -> counts`` (the seed fed as an int64 scalar)."""

    def sample(rates: np.ndarray, seed: int) -> np.ndarray:
        return run(rates, np.asarray(seed, np.int64))[0]

    return sample


def _check_paths(
    checks: _Checks,
    fmt: str,
    run: dict[str, Callable[..., list[np.ndarray]]],
    model: VAE,
    policy: FramePolicy,
    inputs: dict[str, Any],
) -> None:
    """Parity of the rate path, decoder and frame path of one format against the references."""
    patches, stress, counts = inputs["patches"], inputs["stress"], inputs["counts"]
    log_rates, rates = run["rates"](patches)
    checks.add("rates", fmt, "log_rates", log_rates, inputs["log_rates"], LOG_RATE_TOLERANCE)
    checks.add("rates", fmt, "rates", rates, inputs["rates"], None)
    stress_log_rates, _ = run["rates"](stress)
    checks.add(
        "rates", fmt, "log_rates(stress)", stress_log_rates, inputs["stress_log_rates"], STRESS_LOG_RATE_TOLERANCE
    )
    checks.add(
        "decoder",
        fmt,
        "patches(rates)",
        run["decoder"](inputs["rates"])[0],
        _decode(model, inputs["rates"]),
        DECODER_TOLERANCE,
        relative=True,
    )
    checks.add(
        "decoder",
        fmt,
        "patches(counts)",
        run["decoder"](counts)[0],
        _decode(model, counts),
        DECODER_TOLERANCE,
        relative=True,
    )
    for batch, ref in zip(inputs["frames"], inputs["frame_refs"], strict=True):
        out = dict(zip(ref, run["frame"](batch), strict=True))
        checks.add(
            "frame",
            fmt,
            "preprocessed",
            out["preprocessed"],
            ref["preprocessed"],
            PREPROCESS_TOLERANCE,
            against="preprocess_image(float64)",
        )
        own = frame_outputs_from_preprocessed(model, policy.patch_shape, out["preprocessed"])
        checks.add(
            "frame",
            fmt,
            "log_rates",
            out["log_rates"],
            own["log_rates"],
            LOG_RATE_TOLERANCE,
            against="torch(own preprocessed)",
        )
        checks.add(
            "frame",
            fmt,
            "reconstruction",
            out["reconstruction"],
            own["reconstruction"],
            DECODER_TOLERANCE,
            against="torch(own preprocessed)",
            relative=True,
        )
        for name in ("preprocessed_u8", "reconstruction_u8"):
            checks.add(
                "frame",
                fmt,
                name,
                out[name].astype(np.int16),
                own[name].astype(np.int16),
                U8_TOLERANCE,
                against="torch(own preprocessed)",
            )
        for name in ("log_rates", "rates", "reconstruction"):  # reported: includes preprocessing round-off
            checks.add("frame", fmt, name, out[name], ref[name], None, against="end-to-end(float64)")
    if "rates_fp16" in run:
        log16, rates16 = run["rates_fp16"](patches.astype(np.float16))
        checks.add(
            "rates_fp16",
            fmt,
            "log_rates",
            log16,
            inputs["log_rates"],
            FP16_LOG_RATE_TOLERANCE,
            against="torch(float32)",
        )
        checks.add("rates_fp16", fmt, "rates", rates16, inputs["rates"], None, against="torch(float32)")


def verify_bundle(
    root: Path,
    model: VAE,
    cfg: PatchConfig | None,
    policy: FramePolicy,
    formats: Sequence[str],
    graph_files: dict[str, str],
    torchscript_files: dict[str, str],
) -> dict[str, Any]:
    """Run every check on the files under ``root``; returns the manifest's "verification" entry.

    Raises VerificationError (naming the failed checks) when a gate fails.
    """
    from pvae.export.sampler import poisson_reference
    from pvae.export.torchscript import load_scripted

    runners = {"onnx": {name: _onnx_runner(_ort_session(root / file)) for name, file in graph_files.items()}}
    if "torchscript" in formats:
        runners["torchscript"] = {
            name: _torchscript_runner(load_scripted(root / file)) for name, file in torchscript_files.items()
        }

    patches = sample_patches(cfg, policy.patch_shape)
    stress = stress_patches(policy.patch_shape)
    ref_log_rates, ref_rates = _encode(model, patches)
    seed = np.asarray(SAMPLER_SEEDS[0], np.int64)
    frames = sample_frames(policy)
    inputs = {
        "patches": patches,
        "stress": stress,
        "log_rates": ref_log_rates,
        "rates": ref_rates,
        "stress_log_rates": _encode(model, stress)[0],
        # decoder inputs as served: real spike counts of the real rates (from the bundle's sampler)
        "counts": runners["onnx"]["sampler"](ref_rates, seed)[0].astype(np.float32),
        "frames": frames,
        "frame_refs": [reference_frame_outputs(model, cfg, policy.patch_shape, batch) for batch in frames],
    }
    checks = _Checks()
    for fmt, run in runners.items():
        _check_paths(checks, fmt, run, model, policy, inputs)

    # The sampler: statistics per format, and the ONNX graph against its numpy reference, bit for bit.
    sampler: dict[str, Any] = {}
    for fmt, run in runners.items():
        sampler[fmt] = check_sampler_statistics(_seeded(run["sampler"]))
    ramp = np.linspace(0.0, 200.0, 4096, dtype=np.float32).reshape(64, 64)  # 0 .. the clamp, both algorithms
    matches = all(
        np.array_equal(runners["onnx"]["sampler"](rates, np.asarray(s, np.int64))[0], poisson_reference(rates, s))
        for rates, s in ((ref_rates, SAMPLER_SEEDS[0]), (ramp, SAMPLER_SEEDS[1]))
    )
    sampler["onnx"]["matches_numpy_reference"] = bool(matches)
    sampler["onnx"]["passed"] = bool(sampler["onnx"]["passed"] and matches)

    failed = [row for row in checks.rows if not row["passed"]]
    failed_sampler = [fmt for fmt, result in sampler.items() if not result["passed"]]
    report = {
        "passed": not failed and not failed_sampler,
        "tolerances": {
            "log_rates": LOG_RATE_TOLERANCE,
            "log_rates(stress)": STRESS_LOG_RATE_TOLERANCE,
            "preprocessed": PREPROCESS_TOLERANCE,
            "decoder(rel)": DECODER_TOLERANCE,
            "rates_fp16.log_rates": FP16_LOG_RATE_TOLERANCE,
            "u8_levels": U8_TOLERANCE,
            "sampler_z": SAMPLER_Z,
        },
        "error_definition": "max_abs = max|candidate - reference|; max_rel = max_abs / max|reference|",
        "inputs": {
            "patches": int(patches.shape[0]),
            "stress_patches": int(stress.shape[0]),
            "frames": ["x".join(str(s) for s in batch.shape) for batch in frames],
        },
        "checks": checks.rows,
        "sampler": sampler,
    }
    if failed or failed_sampler:
        reasons = [
            f"{r['graph']}/{r['format']}/{r['output']} max_{r['gate']} "
            f"{r['max_rel' if r['gate'] == 'rel' else 'max_abs']:.3g} > {r['tolerance']:g}"
            for r in failed
        ]
        reasons += [f"sampler/{fmt} failed its Poisson checks" for fmt in failed_sampler]
        error = VerificationError(f"verification failed: {'; '.join(reasons)}")
        error.report = report  # type: ignore[attr-defined]
        raise error
    return report
