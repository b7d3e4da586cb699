"""Where pvae keeps things on disk: the cache, and the model shipped inside the package.

Torch-free, so that training (data cache, default checkpoint) and serving (export cache, default
bundle) share one rule.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "DEFAULT_BUNDLE_RESOURCE", "DEFAULT_MODEL_RESOURCE", "default_cache_dir"]

#: Environment variable that overrides the cache directory.
CACHE_ENV = "PVAE_CACHE_DIR"
#: The bundled default checkpoint, relative to the ``pvae`` package (trained by ``make model``).
DEFAULT_MODEL_RESOURCE = "models/default.pt"
#: A prebuilt ONNX bundle of the default model, relative to the ``pvae`` package (lets a torch-free
#: install serve the default model).
DEFAULT_BUNDLE_RESOURCE = "models/default_bundle"


def default_cache_dir() -> Path:
    """``$PVAE_CACHE_DIR`` if set, else ``~/.cache/pvae`` (preprocessed data, exported bundles)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pvae"
