"""Fashion-MNIST: generated files (sizes, limits, seeded order, crops, errors) and the real dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.data import first_epoch_labels, make_fmnist_dir, write_idx
from torchslim.data import (
    DEFAULT_DATA_SPEC,
    build_datasets,
    build_loaders,
)
from torchslim.data.spec import FASHION_MNIST_DIR
from torchslim.errors import DataError

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


# ---------------------------------------------------------------- Fashion-MNIST (generated)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_mini(tmp_path, gz):
    root = make_fmnist_dir(tmp_path / "fm", gz=gz)
    bundle = build_loaders(f"fashion-mnist:{root}", batch_size=4, shuffle_train=False)
    assert (bundle.num_classes, bundle.image_size, bundle.train_size, bundle.val_size) == (10, 32, 20, 10)
    assert bundle.description == f"fashion-mnist ({root}), 32x32, train 20, val 10"
    assert bundle.train_sampler is None
    images, labels = next(iter(bundle.val_loader))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert labels.tolist() == [0, 1, 2, 3]
    # Constant image of value 6*i stays constant after resizing, then is normalised.
    for i in range(4):
        expected = (i * 6 / 255 - FMNIST_MEAN) / FMNIST_STD
        torch.testing.assert_close(images[i], torch.full((3, 32, 32), expected), atol=1e-5, rtol=0)
    assert first_epoch_labels(bundle.train_loader) == [i % 10 for i in range(20)]


def test_fashion_mnist_limits_size_and_seeded_order(tmp_path):
    root = make_fmnist_dir(tmp_path / "fm", n_train=40)
    spec = f"fashion-mnist:{root}"

    def train_order(seed: int) -> list[int]:
        bundle = build_loaders(spec, batch_size=5, train_limit=30, val_limit=3, image_size=16, seed=seed)
        assert (bundle.train_size, bundle.val_size, bundle.image_size) == (30, 3, 16)
        assert next(iter(bundle.val_loader))[0].shape == (3, 3, 16, 16)
        # Values identify samples (label alone repeats): take each image's centre pixel.
        return [round(float(x[0, 8, 8]), 4) for batch, _ in bundle.train_loader for x in batch]

    first = train_order(seed=1)
    assert len(first) == 30
    assert first == train_order(seed=1)
    assert first != train_order(seed=2)
    expected = sorted(round((i * 6 / 255 - FMNIST_MEAN) / FMNIST_STD, 4) for i in range(30))
    assert sorted(first) == expected  # the first 30 samples, each exactly once


def test_fashion_mnist_train_crop_keeps_shape_and_pads_with_zero(tmp_path):
    root = make_fmnist_dir(tmp_path / "fm", n_train=10)
    train, _, _, _ = build_datasets(f"fashion-mnist:{root}")
    torch.manual_seed(0)
    background = (0 - FMNIST_MEAN) / FMNIST_STD
    foreground = (54 / 255 - FMNIST_MEAN) / FMNIST_STD
    values = set()
    for _ in range(20):
        image, label = train[9]
        assert image.shape == (3, 32, 32) and label == 9
        values |= {round(v, 4) for v in image.unique().tolist()}
    assert values <= {round(background, 4), round(foreground, 4)}
    assert round(background, 4) in values  # some crops shifted in padding


def test_fashion_mnist_missing_dir_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as info:
        build_loaders(f"fashion-mnist:{tmp_path / 'nowhere'}")
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message and "fashion-mnist:DIR" in message
    assert str(tmp_path / "nowhere") in message


def test_fashion_mnist_missing_file_is_named(tmp_path):
    root = make_fmnist_dir(tmp_path / "fm")
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\[\.gz\].*apt-get install"):
        build_datasets(f"fashion-mnist:{root}")


def test_fashion_mnist_count_mismatch_and_bad_label(tmp_path):
    root = make_fmnist_dir(tmp_path / "fm")
    labels_path = root / "train-labels-idx1-ubyte.gz"
    write_idx(labels_path, np.zeros(19, dtype=np.uint8))
    with pytest.raises(DataError, match="holds 19 labels but .* holds 20 images"):
        build_datasets(f"fashion-mnist:{root}")
    write_idx(labels_path, np.array([0] * 19 + [10], dtype=np.uint8))
    with pytest.raises(DataError, match=r"label 10 at index 19 is outside 0\.\.9") as info:
        build_datasets(f"fashion-mnist:{root}")
    assert str(labels_path) in str(info.value)


# ---------------------------------------------------------------- Fashion-MNIST (real)


def test_real_fashion_mnist():
    if not any(FASHION_MNIST_DIR.glob("train-images-idx3-ubyte*")):
        pytest.skip(
            f"Fashion-MNIST not installed in {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)"
        )
    bundle = build_loaders(DEFAULT_DATA_SPEC, batch_size=64)
    assert (bundle.train_size, bundle.val_size, bundle.num_classes) == (60000, 10000, 10)
    assert bundle.description == f"fashion-mnist ({FASHION_MNIST_DIR}), 32x32, train 60000, val 10000"
    images, labels = next(iter(bundle.val_loader))
    assert images.shape == (64, 3, 32, 32)
    assert 0 <= int(labels.min()) and int(labels.max()) <= 9
    # Normalisation roughly centres the data (only border pixels are exactly background).
    assert -0.5 < float(images.mean()) < 0.5
