"""CIFAR-10 in torchvision's python format: loaded through a numpy-only unpickler."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.data import first_epoch_labels, make_cifar_dir
from torchslim.data import (
    build_datasets,
    build_loaders,
)
from torchslim.errors import DataError


@pytest.mark.parametrize("point_at_batches", [False, True])
def test_cifar10_tiny(tmp_path, point_at_batches):
    root = make_cifar_dir(tmp_path / "c10")
    spec_dir = root / "cifar-10-batches-py" if point_at_batches else root
    bundle = build_loaders(f"cifar10:{spec_dir}", batch_size=8, shuffle_train=False)
    assert (bundle.num_classes, bundle.train_size, bundle.val_size, bundle.image_size) == (10, 20, 3, 32)
    # The train loader drops the incomplete last batch (20 = 8 + 8 + 4); val keeps everything.
    assert first_epoch_labels(bundle.train_loader) == [0, 1, 2, 3] * 4
    images, labels = next(iter(bundle.val_loader))
    assert images.shape == (3, 3, 32, 32) and labels.tolist() == [0, 1, 2]
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2470, 0.2435, 0.2616])
    expected = (40 / 255 - mean) / std
    torch.testing.assert_close(images[2].mean(dim=(1, 2)), expected, atol=1e-5, rtol=0)


def test_cifar10_refuses_code_in_pickle(tmp_path):
    root = make_cifar_dir(tmp_path / "c10")
    evil = root / "cifar-10-batches-py/test_batch"
    evil.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(DataError, match="refusing to load global os.system") as info:
        build_datasets(f"cifar10:{root}")
    assert str(evil) in str(info.value)


def test_cifar10_missing(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        build_datasets(f"cifar10:{tmp_path}")
