"""The data flow's last step and the training loop's one entry point: :func:`load_dataset` gives a
:class:`Dataset` (flattened train/val arrays and the image shape) for natural patches
(:mod:`.cache`) or a labelled image dataset (Fashion-MNIST via :mod:`.idx`, scikit-learn's
digits)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pvae.errors import DataError, MissingDependencyError
from pvae.training.data.cache import load_natural_patches
from pvae.training.data.config import PatchConfig
from pvae.training.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, _read_idx
from pvae.training.data.patches import PatchSplit
from pvae.training.data.preprocess import UINT8_MAX
from pvae.training.data.sources import DEFAULT_MAX_FRAMES

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_FASHION_MNIST_ROOT",
    "DIGITS_MAX_VALUE",
    "DIGITS_SHAPE",
    "DIGITS_TEST_FRACTION",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SHAPE",
    "Dataset",
    "DatasetKind",
    "ImageDataset",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
]

# Fashion-MNIST as installed by the Debian package dataset-fashion-mnist.
DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
_FASHION_MNIST_DEBIAN_HINT = (
    "install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
)
# (images file, labels file, number of examples) of the standard split (Xiao et al. 2017).
_FASHION_MNIST_SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}
FASHION_MNIST_SHAPE = (28, 28)
FASHION_MNIST_CLASSES = 10

# sklearn's digits are 8x8 images with integer values 0..16.
DIGITS_SHAPE = (8, 8)
DIGITS_MAX_VALUE = 16.0
# Fraction of the digits held out as the test split.
DIGITS_TEST_FRACTION = 0.2

# Names that load_dataset understands besides a filesystem path.
DATASET_NAMES = ("patches", "fashion-mnist", "digits")

DatasetKind = Literal["patches", "images"]


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image dataset with a train/test split, images flattened row-major.

    Example::

        data = load_digits()
        data.x_train.shape, data.image_shape        # (1437, 64), (8, 8)
    """

    x_train: np.ndarray
    """(N_train, H*W) float32 in [0, 1]."""
    y_train: np.ndarray
    """(N_train,) int64 class labels."""
    x_test: np.ndarray
    """(N_test, H*W) float32 in [0, 1]."""
    y_test: np.ndarray
    """(N_test,) int64 class labels."""
    image_shape: tuple[int, int]
    """(H, W) of one image."""
    name: str
    """Dataset name, e.g. "fashion-mnist"."""



def load_fashion_mnist(root: str | Path = DEFAULT_FASHION_MNIST_ROOT) -> ImageDataset:
    """Fashion-MNIST (Xiao et al. 2017) from its four gzipped IDX files under `root`: 60000 train
    and 10000 test 28x28 images scaled to [0, 1], labels 0..9. Read with numpy only; magic
    numbers, shapes, sizes and label range are checked (a bad file is a :class:`DataError`)."""
    root = Path(root).expanduser()
    names = [name for images, labels, _ in _FASHION_MNIST_SPLITS.values() for name in (images, labels)]
    missing = [name for name in names if not (root / name).is_file()]
    if missing:
        raise DataError(
            f"Fashion-MNIST not found at {root} (missing {', '.join(missing)}): {_FASHION_MNIST_DEBIAN_HINT}"
        )
    arrays: dict[str, np.ndarray] = {}
    for split, (images_file, labels_file, count) in _FASHION_MNIST_SPLITS.items():
        labels = _read_idx(root / labels_file, IDX_LABELS_MAGIC, 1)
        images = _read_idx(root / images_file, IDX_IMAGES_MAGIC, 3)
        if labels.shape != (count,) or images.shape != (count, *FASHION_MNIST_SHAPE):
            raise DataError(
                f"Fashion-MNIST {split} split at {root} has images {images.shape} and labels {labels.shape}, "
                f"expected ({count}, 28, 28) and ({count},)"
            )
        if labels.max() >= FASHION_MNIST_CLASSES:
            raise DataError(f"{root / labels_file} has label {labels.max()}, expected 0..9")
        arrays[f"x_{split}"] = (images.reshape(count, -1) / np.float32(UINT8_MAX)).astype(np.float32)
        arrays[f"y_{split}"] = labels.astype(np.int64)
    return ImageDataset(image_shape=FASHION_MNIST_SHAPE, name="fashion-mnist", **arrays)


def load_digits(seed: int = 0) -> ImageDataset:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16 scaled to [0, 1]), split
    80/20 train/test, stratified by class, with `seed` fixing the split."""
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise MissingDependencyError(
            "the digits dataset comes from scikit-learn: pip install 'pvae[train]'"
        ) from error
    bunch = sklearn_load_digits()
    x = (bunch.data / DIGITS_MAX_VALUE).astype(np.float32)  # (1797, 64)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, random_state=seed, stratify=y
    )
    return ImageDataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        image_shape=DIGITS_SHAPE,
        name="digits",
    )


# --------------------------------------------------------------------------------------------
# One entry point for the training loop
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """What the training loop consumes: flattened train/val arrays and the image shape.

    Example::

        data = load_dataset("digits", PatchConfig())
        data.train.shape, data.image_shape          # (1437, 64), (8, 8)
    """

    train: np.ndarray
    """(N_train, D) float32 training inputs."""
    val: np.ndarray
    """(N_val, D) float32 validation inputs (the test split for labelled datasets)."""
    image_shape: tuple[int, int]
    """(H, W) with H * W == D."""
    name: str
    """The name load_dataset was called with ("patches", "digits", a path, ...)."""
    kind: DatasetKind
    """"patches" (natural-image patches, z-scored) or "images" (labelled images in [0, 1])."""
    train_labels: np.ndarray | None = None
    """(N_train,) int64 labels, or None for patches."""
    val_labels: np.ndarray | None = None
    """(N_val,) int64 labels, or None for patches."""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Provenance (for patches: :attr:`PatchSplit.meta`)."""

    @property
    def dim(self) -> int:
        """Number of values in one input."""
        return self.image_shape[0] * self.image_shape[1]


def _from_patches(split: PatchSplit, name: str) -> Dataset:
    return Dataset(
        train=split.train,
        val=split.val,
        image_shape=split.image_shape,
        name=name,
        kind="patches",
        meta=split.meta,
    )


def _from_images(data: ImageDataset) -> Dataset:
    return Dataset(
        train=data.x_train,
        val=data.x_test,
        image_shape=data.image_shape,
        name=data.name,
        kind="images",
        train_labels=data.y_train,
        val_labels=data.y_test,
        meta={"name": data.name, "n_train": len(data.x_train), "n_val": len(data.x_test)},
    )


def load_dataset(
    name: str,
    cfg: PatchConfig,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    fashion_mnist_root: str | Path = DEFAULT_FASHION_MNIST_ROOT,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> Dataset:
    """Load a training dataset by name.

    - "patches": natural patches from scikit-image's bundled photographs (cfg applies).
    - "fashion-mnist": :func:`load_fashion_mnist` (val = the standard test split).
    - "digits": :func:`load_digits` with cfg.seed fixing the split (val = the test split).
    - anything else is a path to an image folder, an image or a video: natural patches from it.
    """
    if name == "patches":
        return _from_patches(load_natural_patches(cfg, None, cache_dir, progress), name)
    if name == "fashion-mnist":
        return _from_images(load_fashion_mnist(fashion_mnist_root))
    if name == "digits":
        return _from_images(load_digits(cfg.seed))
    if not Path(name).expanduser().exists():
        raise DataError(
            f"unknown dataset {name!r}: expected one of {', '.join(DATASET_NAMES)} "
            "or an existing image folder / video path"
        )
    split = load_natural_patches(cfg, name, cache_dir, progress, max_frames=max_frames)
    return _from_patches(split, name)
