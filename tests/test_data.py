"""Contracts of pvae.training.data: kernels, preprocessing, patch splits, caching, sources, datasets."""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from pvae.errors import ConfigError, DataError, InputError
from pvae.training.data import (
    DEFAULT_FASHION_MNIST_ROOT,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    SKIMAGE_IMAGES,
    Dataset,
    PatchConfig,
    PatchSplit,
    block_grid,
    extract_patches,
    filter2d,
    gaussian_kernel,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_images,
    load_natural_patches,
    make_patch_split,
    preprocess_image,
    whitening_kernel,
    whitening_response,
)

# Small enough that every build in this file takes well under a second.
N_TEST_PATCHES = 5_000
SMALL_CFG = PatchConfig(n_patches=N_TEST_PATCHES)
FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
fashion_installed = pytest.mark.skipif(
    not all((Path(DEFAULT_FASHION_MNIST_ROOT) / name).is_file() for name in FASHION_FILES),
    reason="Debian package dataset-fashion-mnist is not installed",
)


def reference_filter2d(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Direct correlation after numpy reflect padding: the ONNX Pad(reflect) + Conv definition."""
    pad_rows, pad_cols = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(image, ((pad_rows, pad_rows), (pad_cols, pad_cols)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape)  # (H, W, kh, kw)
    return np.einsum("ijuv,uv->ij", windows, kernel)


def reference_preprocess(image: np.ndarray, cfg: PatchConfig) -> np.ndarray:
    """The documented preprocessing, restated with reference_filter2d only."""
    x = reference_filter2d(image, whitening_kernel(cfg.whiten_f0, cfg.whiten_size))
    window = gaussian_kernel(cfg.lcn_size, cfg.lcn_sigma)
    mean = reference_filter2d(x, window)
    std = np.sqrt(np.maximum(reference_filter2d((x - mean) ** 2, window), 0.0))
    x = (x - mean) / (np.maximum(std, std.mean()) + 1e-8)
    return (x - x.mean()) / (max(x.std(), cfg.zscore_floor) + 1e-8)


def smooth_noise(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A uint8 image with some spatial structure (blurred noise), for synthetic sources."""
    noise = np.random.default_rng(seed).random(shape)
    blurred = cv2.GaussianBlur(noise, (0, 0), 2.0)
    blurred = (blurred - blurred.min()) / (blurred.max() - blurred.min())
    return (blurred * 255).astype(np.uint8)


def write_pngs(folder: Path, count: int, shape: tuple[int, int] = (80, 96)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img_{i}.png"
        assert cv2.imwrite(str(path), smooth_noise(shape, i))
        paths.append(path)
    return paths


def write_video(path: Path, frames: int, shape: tuple[int, int] = (96, 128)) -> None:
    height, width = shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (width, height), True)
    assert writer.isOpened()
    for i in range(frames):
        gray = smooth_noise(shape, 100 + i)
        writer.write(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    writer.release()


@pytest.fixture(scope="module")
def natural_split(tmp_path_factory: pytest.TempPathFactory) -> PatchSplit:
    return load_natural_patches(SMALL_CFG, cache_dir=tmp_path_factory.mktemp("cache"))


# --------------------------------------------------------------------------------------------
# PatchConfig
# --------------------------------------------------------------------------------------------


def test_config_round_trips_through_dict_and_json() -> None:
    cfg = PatchConfig(patch_size=8, whiten_f0=0.4, lcn_sigma=3, n_patches=1234, seed=7)
    assert PatchConfig.from_dict(cfg.to_dict()) == cfg
    assert PatchConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert isinstance(cfg.lcn_sigma, float)  # ints given for float fields are stored as floats
    assert PatchConfig().to_dict()["n_patches"] == 100_000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("patch_size", 1),
        ("patch_size", 16.0),
        ("whiten_f0", 0.0),
        ("whiten_f0", float("nan")),
        ("whiten_size", 14),
        ("lcn_size", 0),
        ("lcn_sigma", -1.0),
        ("border", -1),
        ("n_patches", 1),
        ("val_fraction", 1.0),
        ("val_fraction", 0.0),
        ("block_size", 8),
        ("seed", -3),
        ("seed", True),
    ],
)
def test_config_rejects_bad_fields_naming_them(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        PatchConfig(**{field: value})


def test_config_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="patchsize"):
        PatchConfig.from_dict({"patchsize": 16})


# --------------------------------------------------------------------------------------------
# Kernels and filtering
# --------------------------------------------------------------------------------------------


def test_gaussian_kernel_is_normalised_symmetric_and_peaked() -> None:
    kernel = gaussian_kernel(13, 2.0)
    assert kernel.shape == (13, 13)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(kernel, kernel.T)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1])
    assert np.unravel_index(kernel.argmax(), kernel.shape) == (6, 6)


def test_whitening_kernel_frequency_response_follows_r_of_f() -> None:
    f0, size, grid = 0.5, 15, 256
    kernel = whitening_kernel(f0, size)
    assert kernel.shape == (size, size)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-15)  # real, point-symmetric
    response = np.abs(np.fft.fft2(kernel, s=(grid, grid)))
    freqs = np.fft.fftfreq(grid)
    radial = np.hypot(freqs[:, None], freqs[None, :])
    assert response[0, 0] < 1e-12  # zero gain at DC
    assert response.max() == pytest.approx(1.0)  # peak-gain normalisation
    # The peak lies near argmax R(f) = f0 / 4**0.25 (about 0.354 cycles/pixel).
    assert radial.flat[response.argmax()] == pytest.approx(f0 / 4**0.25, abs=0.05)
    target = whitening_response(radial, f0)
    inside = radial <= 0.5
    assert np.corrcoef(response[inside], target[inside])[0, 1] > 0.99
    # A lower cut-off moves the peak down.
    low = np.abs(np.fft.fft2(whitening_kernel(0.25, 31), s=(grid, grid)))
    assert radial.flat[low.argmax()] == pytest.approx(0.25 / 4**0.25, abs=0.05)


@pytest.mark.parametrize("bad_size", [4, 0, -3])
def test_kernels_reject_even_or_non_positive_sizes(bad_size: int) -> None:
    with pytest.raises(ConfigError):
        whitening_kernel(0.5, bad_size)
    with pytest.raises(ConfigError):
        gaussian_kernel(bad_size, 2.0)


@pytest.mark.parametrize("kernel_shape", [(3, 3), (5, 3), (15, 15)])
def test_filter2d_is_reflect101_correlation(kernel_shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((37, 29))
    kernel = rng.standard_normal(kernel_shape)  # asymmetric: tells correlation from convolution
    np.testing.assert_allclose(filter2d(image, kernel), reference_filter2d(image, kernel), atol=1e-10)


def test_filter2d_rejects_even_kernels() -> None:
    with pytest.raises(InputError, match="odd"):
        filter2d(np.zeros((10, 10)), np.ones((4, 4)))


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


def test_preprocess_matches_reference_and_is_z_scored() -> None:
    image = smooth_noise((70, 90), seed=3)
    out = preprocess_image(image, PatchConfig())
    assert out.dtype == np.float32
    assert out.shape == image.shape
    assert abs(float(out.mean())) < 1e-5
    assert float(out.std()) == pytest.approx(1.0, abs=1e-4)
    # The contract an exported frame graph relies on: the documented ops reproduce it.
    np.testing.assert_allclose(out, reference_preprocess(image / 255.0, PatchConfig()), atol=1e-5)


def test_preprocess_does_not_amplify_clipped_black_and_white_images() -> None:
    """The z-score's divisor is floored: a thresholded (black-and-white) picture, whose contrast after
    local normalisation is low, is not blown up beyond the training range, while a textured image
    is z-scored exactly as before."""
    textured = smooth_noise((96, 96), seed=5)
    plain = dataclasses.replace(PatchConfig(), zscore_floor=0.0)
    np.testing.assert_array_equal(preprocess_image(textured, PatchConfig()), preprocess_image(textured, plain))
    bw = np.zeros((96, 96), np.uint8)
    bw[30:70, 20:50] = 255  # one white block on black: edges only
    floored, amplified = preprocess_image(bw, PatchConfig()), preprocess_image(bw, plain)
    assert float(amplified.std()) == pytest.approx(1.0, abs=1e-4)
    assert float(floored.std()) < 0.9 and np.abs(floored).max() < np.abs(amplified).max()
    np.testing.assert_allclose(floored, reference_preprocess(bw / 255.0, PatchConfig()), atol=1e-5)
    # Configs saved before the floor existed keep the plain z-score they were trained with.
    legacy = {k: v for k, v in PatchConfig().to_dict().items() if k != "zscore_floor"}
    assert PatchConfig.from_dict(legacy).zscore_floor == 0.0
    with pytest.raises(ConfigError, match="zscore_floor"):
        PatchConfig(zscore_floor=-1.0)


def test_preprocess_treats_uint8_as_scaled_float() -> None:
    image = smooth_noise((48, 48), seed=4)
    np.testing.assert_allclose(
        preprocess_image(image, SMALL_CFG), preprocess_image(image / 255.0, SMALL_CFG), atol=1e-6
    )


def test_preprocess_of_a_flat_image_is_zero() -> None:
    # Centring first makes the whitened flat image exactly 0; the epsilons then avoid 0/0.
    out = preprocess_image(np.full((32, 32), 0.5), SMALL_CFG)
    np.testing.assert_array_equal(out, np.zeros((32, 32), dtype=np.float32))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((32, 32, 3)), "2-D"),
        (np.zeros((10, 40)), "smaller"),
        (np.full((32, 32), np.nan), "NaN"),
        (np.zeros((32, 32), dtype=np.int32), "dtype"),
    ],
)
def test_preprocess_rejects_bad_images(image: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        preprocess_image(image, SMALL_CFG)


# --------------------------------------------------------------------------------------------
# Blocks and patch extraction
# --------------------------------------------------------------------------------------------


def test_block_grid_tiles_the_usable_region() -> None:
    blocks = block_grid(150, 100, block_size=64, border=4, patch_size=16)
    # rows: 4..68, 68..132, 132..146 (14 < 16: dropped); cols: 4..68, 68..96 (28 kept)
    np.testing.assert_array_equal(
        blocks, [[4, 4, 64, 64], [4, 68, 64, 28], [68, 4, 64, 64], [68, 68, 64, 28]]
    )


def test_extract_patches_stays_inside_the_given_blocks() -> None:
    image = np.arange(60 * 70, dtype=np.float32).reshape(60, 70)
    blocks = np.array([[4, 4, 20, 20], [30, 40, 16, 26]])
    patches, corners = extract_patches(
        image, 300, patch_size=16, border=4, rng=np.random.default_rng(1), blocks=blocks
    )
    assert patches.shape == (300, 256)
    assert patches.dtype == np.float32
    for (row, col), patch in zip(corners, patches, strict=True):
        np.testing.assert_array_equal(patch, image[row : row + 16, col : col + 16].ravel())
        in_first = 4 <= row <= 8 and 4 <= col <= 8
        in_second = row == 30 and 40 <= col <= 50
        assert in_first or in_second
    # 25 + 11 = 36 corners and 300 draws: every corner is used, so sampling covers both blocks.
    assert len({tuple(c) for c in corners}) == 36


def test_extract_patches_without_replacement_when_possible() -> None:
    image = np.zeros((40, 40), dtype=np.float32)
    _, corners = extract_patches(image, 200, patch_size=8, border=4, rng=np.random.default_rng(0))
    assert len({tuple(c) for c in corners}) == 200  # 25 * 25 corners available
    assert corners.min() >= 4 and corners.max() <= 40 - 4 - 8


def test_extract_patches_rejects_blocks_in_the_border() -> None:
    with pytest.raises(InputError, match="border"):
        extract_patches(
            np.zeros((40, 40)),
            1,
            patch_size=8,
            border=4,
            rng=np.random.default_rng(0),
            blocks=np.array([[0, 4, 10, 10]]),
        )


# --------------------------------------------------------------------------------------------
# Natural patches from scikit-image
# --------------------------------------------------------------------------------------------


def test_natural_patches_shapes_and_statistics(natural_split: PatchSplit) -> None:
    train, val = natural_split.train, natural_split.val
    assert train.dtype == np.float32 and val.dtype == np.float32
    assert train.shape[1] == val.shape[1] == 256
    assert len(train) + len(val) == N_TEST_PATCHES
    assert len(val) / N_TEST_PATCHES == pytest.approx(0.2, abs=0.01)
    assert np.isfinite(train).all() and np.isfinite(val).all()
    assert abs(float(train.mean())) < 0.05
    per_dim_std = train.std(axis=0)
    assert per_dim_std.min() > 0.7 and per_dim_std.max() < 1.3
    assert float(val.std()) == pytest.approx(1.0, abs=0.2)
    assert natural_split.image_shape == (16, 16)
    assert natural_split.meta["image_names"] == list(SKIMAGE_IMAGES)
    assert natural_split.meta["n_val_blocks"] / natural_split.meta["n_blocks"] == pytest.approx(0.2, abs=0.01)


def test_natural_patches_never_cross_the_train_val_split(natural_split: PatchSplit) -> None:
    blocks, is_val = natural_split.blocks, natural_split.block_is_val
    border, size = SMALL_CFG.border, SMALL_CFG.patch_size
    shapes = natural_split.meta["image_shapes"]
    # Blocks of one image are disjoint and inside the border.
    for image in range(len(shapes)):
        mask = np.zeros(shapes[image], dtype=np.int64)
        for _, top, left, height, width in blocks[blocks[:, 0] == image]:
            mask[top : top + height, left : left + width] += 1
        assert mask.max() == 1
        assert (
            mask[:border].sum()
            == mask[-border:].sum()
            == mask[:, :border].sum()
            == mask[:, -border:].sum()
            == 0
        )
    # Every patch lies wholly inside a block of its own set.
    for origins, want_val in ((natural_split.train_origins, False), (natural_split.val_origins, True)):
        for image, row, col in origins:
            candidates = blocks[(blocks[:, 0] == image) & (is_val == want_val)]
            inside = (
                (candidates[:, 1] <= row)
                & (row + size <= candidates[:, 1] + candidates[:, 3])
                & (candidates[:, 2] <= col)
                & (col + size <= candidates[:, 2] + candidates[:, 4])
            )
            assert inside.sum() == 1


def test_natural_patches_are_deterministic_given_the_seed(natural_split: PatchSplit, tmp_path: Path) -> None:
    again = load_natural_patches(SMALL_CFG, cache_dir=tmp_path / "fresh")
    assert again.meta["cache_hit"] is False
    np.testing.assert_array_equal(again.train, natural_split.train)
    np.testing.assert_array_equal(again.val, natural_split.val)
    np.testing.assert_array_equal(again.block_is_val, natural_split.block_is_val)
    other = load_natural_patches(PatchConfig(n_patches=N_TEST_PATCHES, seed=1), cache_dir=tmp_path / "fresh")
    assert not np.array_equal(other.block_is_val, natural_split.block_is_val)
    assert not np.array_equal(other.train[:100], natural_split.train[:100])


def test_cache_hit_returns_identical_arrays_and_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    first = load_natural_patches(SMALL_CFG, cache_dir=tmp_path)
    assert first.meta["cache_hit"] is False
    cache_file = Path(first.meta["cache_path"])
    assert cache_file.parent == tmp_path and cache_file.suffix == ".npz"

    hit = load_natural_patches(SMALL_CFG, cache_dir=tmp_path)
    assert hit.meta["cache_hit"] is True
    for name in ("train", "val", "blocks", "block_is_val", "train_origins", "val_origins"):
        np.testing.assert_array_equal(getattr(hit, name), getattr(first, name))
    assert {k: v for k, v in hit.meta.items() if k != "cache_hit"} == {
        k: v for k, v in first.meta.items() if k != "cache_hit"
    }

    size = cache_file.stat().st_size
    for damage in (b"not an npz file", cache_file.read_bytes()[: size // 2]):
        cache_file.write_bytes(damage)
        rebuilt = load_natural_patches(SMALL_CFG, cache_dir=tmp_path)
        assert rebuilt.meta["cache_hit"] is False
        np.testing.assert_array_equal(rebuilt.train, first.train)
        assert cache_file.stat().st_size == size  # rewritten whole
    assert load_natural_patches(SMALL_CFG, cache_dir=tmp_path).meta["cache_hit"] is True


def test_cache_key_depends_on_config(tmp_path: Path) -> None:
    a = load_natural_patches(SMALL_CFG, cache_dir=tmp_path)
    b = load_natural_patches(PatchConfig(n_patches=N_TEST_PATCHES, lcn_sigma=3.0), cache_dir=tmp_path)
    assert a.meta["cache_key"] != b.meta["cache_key"]
    assert b.meta["cache_hit"] is False


def test_make_patch_split_needs_two_blocks() -> None:
    with pytest.raises(DataError, match="at least 2"):
        make_patch_split({"tiny": np.zeros((30, 30))}, SMALL_CFG)


# --------------------------------------------------------------------------------------------
# The user's own images: folders and videos
# --------------------------------------------------------------------------------------------


def test_folder_source_reads_images_recursively_sorted(tmp_path: Path) -> None:
    write_pngs(tmp_path / "b", 2)
    write_pngs(tmp_path / "a", 1)
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_images(tmp_path)
    assert list(images) == ["a/img_0.png", "b/img_0.png", "b/img_1.png"]
    assert all(img.dtype == np.uint8 and img.shape == (80, 96) for img in images.values())


def test_folder_source_builds_patches_and_tracks_changes(tmp_path: Path) -> None:
    paths = write_pngs(tmp_path / "images", 4, shape=(140, 150))
    cfg = PatchConfig(n_patches=2_000)
    split = load_natural_patches(cfg, tmp_path / "images", cache_dir=tmp_path / "cache")
    assert split.train.shape == (1_600, 256) and split.val.shape == (400, 256)
    assert split.meta["source_kind"] == "folder"
    assert load_natural_patches(cfg, tmp_path / "images", cache_dir=tmp_path / "cache").meta["cache_hit"]
    cv2.imwrite(str(paths[0]), smooth_noise((140, 151), 99))  # a changed file changes the key
    changed = load_natural_patches(cfg, tmp_path / "images", cache_dir=tmp_path / "cache")
    assert changed.meta["cache_hit"] is False
    assert changed.meta["cache_key"] != split.meta["cache_key"]


def test_video_source_samples_frames_evenly(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    write_video(video, frames=10)
    frames = load_images(video, max_frames=4)
    assert list(frames) == ["frame_000000", "frame_000003", "frame_000006", "frame_000009"]
    assert all(f.shape == (96, 128) and f.dtype == np.uint8 for f in frames.values())
    split = load_natural_patches(
        PatchConfig(n_patches=1_000), video, cache_dir=tmp_path / "cache", max_frames=4
    )
    assert split.meta["source_kind"] == "video"
    assert split.train.shape == (800, 256)
    assert len(split.meta["image_names"]) == 4


def test_missing_path_is_a_data_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"not found.*nowhere"):
        load_images(missing)
    with pytest.raises(DataError, match="nowhere"):
        load_natural_patches(SMALL_CFG, missing, cache_dir=tmp_path)


def test_empty_folder_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no images here")
    with pytest.raises(DataError, match=r"no images found in folder .*empty"):
        load_images(tmp_path / "empty")


def test_unreadable_image_is_a_data_error(tmp_path: Path) -> None:
    write_pngs(tmp_path, 1)
    (tmp_path / "broken.png").write_bytes(b"definitely not a png")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        load_images(tmp_path)


def test_unreadable_video_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "broken.avi").write_bytes(b"definitely not a video" * 10)
    with pytest.raises(DataError, match=r"broken\.avi"):
        load_images(tmp_path / "broken.avi")


def test_too_small_image_is_a_data_error(tmp_path: Path) -> None:
    write_pngs(tmp_path, 1, shape=(20, 40))
    with pytest.raises(DataError, match=r"img_0\.png.*20x40.*>= 24"):
        load_natural_patches(SMALL_CFG, tmp_path, cache_dir=tmp_path / "cache")


# --------------------------------------------------------------------------------------------
# Labelled image datasets
# --------------------------------------------------------------------------------------------


@fashion_installed
def test_fashion_mnist_loads_the_standard_split() -> None:
    data = load_fashion_mnist()
    assert data.x_train.shape == (60_000, 784) and data.x_test.shape == (10_000, 784)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    assert set(np.unique(data.y_train)) == set(range(10)) == set(np.unique(data.y_test))
    assert data.image_shape == (28, 28) and data.name == "fashion-mnist"


def test_missing_fashion_mnist_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"Fashion-MNIST not found at .*apt-get install dataset-fashion-mnist"
    ):
        load_fashion_mnist(tmp_path / "absent")


def write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@fashion_installed
@pytest.mark.parametrize("damage", ["truncated", "wrong-magic", "short-data"])
def test_damaged_fashion_mnist_file_is_a_data_error(tmp_path: Path, damage: str) -> None:
    for name in FASHION_FILES:
        (tmp_path / name).symlink_to(Path(DEFAULT_FASHION_MNIST_ROOT) / name)
    target = tmp_path / "train-labels-idx1-ubyte.gz"
    target.unlink()
    labels = np.zeros(60_000, dtype=np.uint8)
    if damage == "truncated":
        shutil.copyfile(Path(DEFAULT_FASHION_MNIST_ROOT) / target.name, target)
        target.write_bytes(target.read_bytes()[:1000])
        match = "truncated"
    elif damage == "wrong-magic":
        write_idx(target, IDX_IMAGES_MAGIC, labels)
        match = "magic"
    else:
        write_idx(target, IDX_LABELS_MAGIC, labels)
        target.write_bytes(gzip.compress(gzip.decompress(target.read_bytes())[:-10]))
        match = "data bytes"
    with pytest.raises(DataError, match=match):
        load_fashion_mnist(tmp_path)


def test_digits_split_is_stratified_and_deterministic() -> None:
    data = load_digits()
    assert data.x_train.shape == (1437, 64) and data.x_test.shape == (360, 64)
    assert data.image_shape == (8, 8)
    assert data.x_train.dtype == np.float32 and data.x_train.min() >= 0.0 and data.x_train.max() == 1.0
    assert np.bincount(data.y_test).min() >= 35  # about 36 of each class
    np.testing.assert_array_equal(load_digits().x_test, data.x_test)
    assert not np.array_equal(load_digits(seed=1).x_test, data.x_test)


# --------------------------------------------------------------------------------------------
# load_dataset
# --------------------------------------------------------------------------------------------


def test_load_dataset_dispatches_by_name(tmp_path: Path) -> None:
    patches = load_dataset("patches", SMALL_CFG, cache_dir=tmp_path)
    assert isinstance(patches, Dataset)
    assert patches.kind == "patches" and patches.image_shape == (16, 16) and patches.dim == 256
    assert patches.train.shape == (4_000, 256) and patches.train_labels is None

    digits = load_dataset("digits", SMALL_CFG)
    assert digits.kind == "images" and digits.image_shape == (8, 8)
    assert (
        digits.train.shape == (1437, 64) and digits.val_labels is not None and len(digits.val_labels) == 360
    )

    write_pngs(tmp_path / "mine", 3, shape=(140, 150))
    mine = load_dataset(str(tmp_path / "mine"), PatchConfig(n_patches=500), cache_dir=tmp_path)
    assert mine.kind == "patches" and mine.train.shape == (400, 256)


@fashion_installed
def test_load_dataset_fashion_mnist() -> None:
    data = load_dataset("fashion-mnist", SMALL_CFG)
    assert data.train.shape == (60_000, 784) and data.val.shape == (10_000, 784)
    assert data.image_shape == (28, 28) and data.kind == "images"


def test_load_dataset_unknown_name_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'mnist-typo'.*patches, fashion-mnist, digits"):
        load_dataset("mnist-typo", SMALL_CFG)
