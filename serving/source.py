"""Where the served model comes from: ``--model`` (a bundle or a checkpoint) or the bundled default.

- A bundle directory (``pvae-export`` output) is loaded as is, torch-free.
- A checkpoint file is exported on the fly into ``<cache>/bundles/<sha256 prefix>/`` and reused
  on later starts. The export runs the ``pvae-export`` command in a child process (it needs torch,
  ``pvae[train]``): serving itself reads bundles only and never imports the exporter or torch.
- No ``--model``: a prebuilt bundle shipped in the package (``pvae/models/default_bundle/``), else
  the shipped checkpoint ``pvae/models/default.pt`` exported as above.

    >>> bundle = resolve_bundle("runs/quick/best.bundle")       # BundleError on a bad bundle
    >>> bundle = resolve_bundle(None)                          # the default model
"""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from importlib.util import find_spec
from pathlib import Path

from pvae.bundle import MANIFEST, Bundle, load_bundle, sha256_file
from pvae.errors import BundleError, MissingDependencyError
from pvae.paths import DEFAULT_BUNDLE_RESOURCE, DEFAULT_MODEL_RESOURCE, default_cache_dir

__all__ = ["default_cache_dir", "resolve_bundle"]

#: Hex digits of the checkpoint's sha256 that name its cached bundle (64 bits: collisions are moot).
CACHE_KEY_CHARS = 16
#: The exporter's command (``pvae-export``), run with this interpreter: the console script may not be on PATH.
EXPORT_MODULE = "pvae.export.cli"
#: Modules ``pvae-export`` cannot run without (the ``train`` extra).
EXPORT_NEEDS = ("torch", "onnxscript")


def _export_checkpoint(checkpoint: Path, cache_dir: Path) -> Bundle:
    target = cache_dir / "bundles" / sha256_file(checkpoint)[:CACHE_KEY_CHARS]
    if (target / MANIFEST).is_file():
        try:
            return load_bundle(target)
        except BundleError:
            pass  # a damaged cache entry: export again over it
    missing = next((name for name in EXPORT_NEEDS if find_spec(name) is None), None)
    if missing is not None:
        raise MissingDependencyError(
            f"--model {checkpoint} is a checkpoint, and exporting it needs torch ({missing} is missing): "
            "pip install 'pvae[train]', or run pvae-export on a machine that has it and pass the bundle "
            "directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", EXPORT_MODULE, str(checkpoint), "-o", str(target), "--formats", "onnx"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or ["(no output)"]
        reason = lines[-1].removeprefix("pvae-export: error: ")
        raise BundleError(f"--model {checkpoint}: exporting the checkpoint failed: {reason}")
    return load_bundle(target)


def resolve_bundle(model: str | Path | None, cache_dir: str | Path | None = None) -> Bundle:
    """The bundle to serve for ``--model`` (see the module docstring)."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if model is None:
        package = resources.files("pvae")
        prebuilt = Path(str(package / DEFAULT_BUNDLE_RESOURCE))
        if (prebuilt / MANIFEST).is_file():
            return load_bundle(prebuilt)
        checkpoint = Path(str(package / DEFAULT_MODEL_RESOURCE))
        if not checkpoint.is_file():
            raise BundleError(f"no --model given and the bundled default model is missing ({checkpoint}); "
                              "run `make model`, or pass --model BUNDLE_DIR")
        return _export_checkpoint(checkpoint, cache)
    path = Path(model).expanduser()
    if path.is_dir():
        return load_bundle(path)
    if path.is_file():
        return _export_checkpoint(path, cache)
    raise BundleError(f"--model {model}: no such bundle directory or checkpoint file")
