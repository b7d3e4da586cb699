"""Natural patches end to end, cached on disk: :func:`load_natural_patches` reads a source
(:mod:`.sources`), builds the train/validation split (:mod:`.patches`) and keeps it as .npz, keyed by
the pipeline version, the config and the source's fingerprint. :mod:`.datasets` calls it for every
patch dataset."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pvae.paths import default_cache_dir
from pvae.training.data.config import PIPELINE_VERSION, PatchConfig
from pvae.training.data.patches import PatchSplit, make_patch_split
from pvae.training.data.sources import DEFAULT_MAX_FRAMES, _source_fingerprint, load_images, load_skimage_images

__all__ = ["load_natural_patches"]

logger = logging.getLogger(__name__)


def _cache_key(cfg: PatchConfig, fingerprint: Mapping[str, Any]) -> str:
    payload = {"pipeline_version": PIPELINE_VERSION, "config": cfg.to_dict(), "source": fingerprint}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


_CACHE_ARRAYS = ("train", "val", "blocks", "block_is_val", "train_origins", "val_origins")
# Failures that a damaged .npz can cause while loading; each means "rebuild", never "crash".
_CORRUPT_CACHE_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error)


def _read_cache(path: Path, key: str, cfg: PatchConfig) -> PatchSplit | None:
    """The cached split at `path`, or None when absent, corrupt or written for another key."""
    if not path.is_file():
        return None
    try:
        # Open the file ourselves: np.load(path) leaks its handle when the archive is damaged.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            arrays = {name: np.array(archive[name]) for name in _CACHE_ARRAYS}
            meta = json.loads(str(archive["meta"]))
        consistent = (
            meta.get("cache_key") == key
            and arrays["train"].dtype == np.float32
            and arrays["val"].dtype == np.float32
            and arrays["train"].shape == (meta["n_train"], cfg.dim)
            and arrays["val"].shape == (meta["n_val"], cfg.dim)
            and arrays["train_origins"].shape == (meta["n_train"], 3)
            and arrays["val_origins"].shape == (meta["n_val"], 3)
            and arrays["blocks"].shape == (len(arrays["block_is_val"]), 5)
            and bool(np.isfinite(arrays["train"]).all() and np.isfinite(arrays["val"]).all())
        )
    except _CORRUPT_CACHE_ERRORS as error:
        logger.warning("ignoring unreadable patch cache %s (%s); rebuilding", path, error)
        return None
    if not consistent:
        logger.warning("ignoring inconsistent patch cache %s; rebuilding", path)
        return None
    meta.update(cache_hit=True, cache_path=str(path))
    return PatchSplit(meta=meta, **arrays)


def _write_cache(path: Path, split: PatchSplit) -> None:
    """Write atomically (temp file + rename); a failure is logged, never raised."""
    temp_name: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.stem, suffix=".tmp", delete=False) as f:
            temp_name = f.name
            stored_meta = {k: v for k, v in split.meta.items() if k not in ("cache_hit", "cache_path")}
            np.savez(
                f,
                meta=np.array(json.dumps(stored_meta)),
                **{name: getattr(split, name) for name in _CACHE_ARRAYS},
            )
        os.replace(temp_name, path)
        temp_name = None
    except OSError as error:
        logger.warning("could not write patch cache %s: %s", path, error)
    finally:
        if temp_name is not None:
            Path(temp_name).unlink(missing_ok=True)


def load_natural_patches(
    cfg: PatchConfig,
    source: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    *,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> PatchSplit:
    """Natural-image patches split train/val by block (see :func:`make_patch_split`), cached.

    source=None uses scikit-image's bundled photographs (:data:`SKIMAGE_IMAGES`); otherwise a
    folder of images, one image or a video (:func:`load_images`). The result is cached as .npz
    under cache_dir (default :func:`default_cache_dir`), keyed by a sha256 of PIPELINE_VERSION,
    cfg.to_dict() and a fingerprint of the source (file names, sizes and mtimes; or the skimage
    version and image names). A corrupt or foreign cache file is ignored and rewritten.
    meta["cache_hit"] says whether the cache answered and meta["cache_path"] where it lives.
    """
    label, fingerprint = _source_fingerprint(source, max_frames)
    key = _cache_key(cfg, fingerprint)
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = directory / f"natural-patches-{key[:32]}.npz"
    cached = _read_cache(path, key, cfg)
    if cached is not None:
        return cached

    if source is None:
        images = load_skimage_images()
    else:
        images = load_images(source, max_frames=max_frames, min_size=cfg.min_image_size)
    split = make_patch_split(images, cfg, progress=progress)
    split.meta.update(source=label, source_kind=fingerprint["kind"], cache_key=key)
    _write_cache(path, split)
    split.meta.update(cache_hit=False, cache_path=str(path))
    return split

