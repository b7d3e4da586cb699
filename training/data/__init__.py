"""Training data: natural image patches and small labelled image datasets.

The natural-patch pipeline (described in docs/training.md, "Data")::

    grayscale image in [0, 1]
      -> whitening       filter2d with a finite spatial kernel realising R(f) = f exp(-(f/f0)^4)
      -> local contrast  m = G*x, s = sqrt(G*(x - m)^2), x = (x - m) / max(s, mean(s))
      -> z-score         (x - mean) / (std + eps), over the whole image
      -> patches         random patch_size x patch_size crops, away from a `border`, inside
                         block_size x block_size blocks that are split train/val

Every step of :func:`preprocess_image` is a 2-D correlation with reflect-101 borders, an
elementwise op or a whole-image mean, so that an ONNX frame graph can rebuild it exactly from
Pad(mode="reflect") + Conv + elementwise ops + ReduceMean (numpy ``mode="reflect"``, ONNX
``mode="reflect"`` and ``cv2.BORDER_REFLECT_101`` are the same border rule). Keep the two in sync:
any change to the arithmetic here must bump :data:`PIPELINE_VERSION`.

The modules, in the order of the flow:

- :mod:`.config`: :class:`PatchConfig` and :data:`PIPELINE_VERSION`;
- :mod:`.preprocess`: kernels, :func:`filter2d` and :func:`preprocess_image`;
- :mod:`.patches`: blocks, patch sampling and the train/val :class:`PatchSplit`;
- :mod:`.sources`: scikit-image photographs, image folders, images and videos as grayscale;
- :mod:`.cache`: :func:`load_natural_patches`, sources to patches with an on-disk cache;
- :mod:`.idx`: the IDX reader behind Fashion-MNIST;
- :mod:`.datasets`: labelled datasets and :func:`load_dataset`, the training loop's entry point.

Usage::

    cfg = PatchConfig(n_patches=20_000)
    data = load_dataset("patches", cfg)          # or "fashion-mnist", "digits", a folder, a video
    x_train = data.train                          # (N, 256) float32
"""

from pvae.paths import default_cache_dir
from pvae.training.data.cache import load_natural_patches
from pvae.training.data.config import PIPELINE_VERSION, PatchConfig
from pvae.training.data.config import ZSCORE_FLOOR as ZSCORE_FLOOR
from pvae.training.data.datasets import (
    DATASET_NAMES,
    DEFAULT_FASHION_MNIST_ROOT,
    Dataset,
    ImageDataset,
    load_dataset,
    load_digits,
    load_fashion_mnist,
)
from pvae.training.data.datasets import DIGITS_MAX_VALUE as DIGITS_MAX_VALUE
from pvae.training.data.datasets import DIGITS_SHAPE as DIGITS_SHAPE
from pvae.training.data.datasets import DIGITS_TEST_FRACTION as DIGITS_TEST_FRACTION
from pvae.training.data.datasets import FASHION_MNIST_CLASSES as FASHION_MNIST_CLASSES
from pvae.training.data.datasets import FASHION_MNIST_SHAPE as FASHION_MNIST_SHAPE
from pvae.training.data.datasets import DatasetKind as DatasetKind
from pvae.training.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC
from pvae.training.data.patches import PatchSplit, block_grid, extract_patches, make_patch_split
from pvae.training.data.preprocess import LCN_EPSILON as LCN_EPSILON
from pvae.training.data.preprocess import UINT8_MAX as UINT8_MAX
from pvae.training.data.preprocess import UINT16_MAX as UINT16_MAX
from pvae.training.data.preprocess import WHITEN_GRID_SIZE as WHITEN_GRID_SIZE
from pvae.training.data.preprocess import ZSCORE_EPSILON as ZSCORE_EPSILON
from pvae.training.data.preprocess import (
    filter2d,
    gaussian_kernel,
    preprocess_image,
    whitening_kernel,
    whitening_response,
)
from pvae.training.data.sources import (
    DEFAULT_MAX_FRAMES,
    SKIMAGE_IMAGES,
    load_images,
    load_skimage_images,
    to_grayscale,
)
from pvae.training.data.sources import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
from pvae.training.data.sources import LUMA_WEIGHTS_BT601 as LUMA_WEIGHTS_BT601

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_FASHION_MNIST_ROOT",
    "DEFAULT_MAX_FRAMES",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "PIPELINE_VERSION",
    "SKIMAGE_IMAGES",
    "Dataset",
    "ImageDataset",
    "PatchConfig",
    "PatchSplit",
    "block_grid",
    "default_cache_dir",
    "extract_patches",
    "filter2d",
    "gaussian_kernel",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_images",
    "load_natural_patches",
    "load_skimage_images",
    "make_patch_split",
    "preprocess_image",
    "to_grayscale",
    "whitening_kernel",
    "whitening_response",
]
