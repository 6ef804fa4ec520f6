"""ImageNet list files and class folders: shapes, labels, errors naming file and line, bad images skipped."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.data import first_epoch_labels, make_imagenet_dir, write_jpeg, write_png
from torchslim.data import (
    build_datasets,
    build_loaders,
)
from torchslim.errors import DataError


def test_imagenet_loader_shapes_and_labels(tmp_path):
    root = make_imagenet_dir(tmp_path / "inet")
    bundle = build_loaders(f"imagenet:{root}", batch_size=4, image_size=64, shuffle_train=False)
    assert (bundle.num_classes, bundle.train_size, bundle.val_size, bundle.image_size) == (3, 6, 4, 64)
    images, labels = next(iter(bundle.train_loader))
    assert images.shape == (4, 3, 64, 64)
    assert labels.tolist() == [0, 1, 2, 0]
    val_images, val_labels = next(iter(bundle.val_loader))
    assert val_labels.tolist() == [0, 1, 2, 0]
    # Val image 0 is solid red: the center crop keeps it solid; ImageNet normalisation.
    red = torch.tensor([(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225])
    torch.testing.assert_close(val_images[0].mean(dim=(1, 2)), red, atol=0.1, rtol=0)


def test_imagenet_default_size_is_224(tmp_path):
    root = make_imagenet_dir(tmp_path / "inet", n_train=2, n_val=2)
    bundle = build_loaders(f"imagenet:{root}", batch_size=2)
    assert bundle.image_size == 224
    assert next(iter(bundle.val_loader))[0].shape == (2, 3, 224, 224)


def test_imagenet_num_classes_is_max_label_plus_one(tmp_path):
    root = make_imagenet_dir(tmp_path / "inet")
    with (root / "val_list.txt").open("a") as handle:
        handle.write("val/n00000000/img_0.JPEG 41\n")
    _, _, num_classes, _ = build_datasets(f"imagenet:{root}")
    assert num_classes == 42


def test_imagenet_malformed_line_names_file_and_line(tmp_path):
    root = make_imagenet_dir(tmp_path / "inet")
    lines = (root / "train_list.txt").read_text().splitlines()
    lines[2] = "train/n00000002/img_2.JPEG two"
    (root / "train_list.txt").write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"train_list\.txt line 3: label 'two' is not an integer"):
        build_datasets(f"imagenet:{root}")
    lines[2] = "just-one-field"
    (root / "train_list.txt").write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"train_list\.txt line 3: expected 'relative/path label'"):
        build_datasets(f"imagenet:{root}")
    lines[2] = "train/n00000002/img_2.JPEG -1"
    (root / "train_list.txt").write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"train_list\.txt line 3: label -1 is negative"):
        build_datasets(f"imagenet:{root}")


def test_imagenet_missing_list_and_missing_image(tmp_path):
    root = make_imagenet_dir(tmp_path / "inet")
    missing = root / "train/n00000001/img_1.JPEG"
    missing.unlink()
    train, _, _, _ = build_datasets(f"imagenet:{root}", image_size=32)
    assert train[0][1] == 0
    with pytest.raises(DataError, match="does not exist") as info:
        train[1]
    assert str(missing) in str(info.value)
    (root / "val_list.txt").unlink()
    with pytest.raises(DataError, match=r"val_list\.txt does not exist"):
        build_datasets(f"imagenet:{root}")


def test_imagenet_corrupt_jpeg_error_and_skip(tmp_path):
    root = make_imagenet_dir(tmp_path / "inet")
    corrupt = root / "train/n00000002/img_2.JPEG"
    corrupt.write_bytes(b"\xff\xd8 this is not a jpeg at all")
    bundle = build_loaders(f"imagenet:{root}", batch_size=3, image_size=32, shuffle_train=False)
    with pytest.raises(DataError, match="cannot decode image") as info:
        first_epoch_labels(bundle.train_loader)
    assert str(corrupt) in str(info.value)

    bundle = build_loaders(
        f"imagenet:{root}", batch_size=3, image_size=32, shuffle_train=False, skip_bad_images=True
    )
    # Sample 2 falls back to sample 3 (label 0): a full epoch still has 6 samples.
    assert first_epoch_labels(bundle.train_loader) == [0, 1, 0, 0, 1, 2]
    assert bundle.bad_images == 1
    first_epoch_labels(bundle.train_loader)
    assert bundle.bad_images == 1  # counted once per file, not per visit


def test_skip_bad_images_counts_across_workers_and_through_limits(tmp_path):
    root = make_imagenet_dir(tmp_path / "inet", n_train=4, n_val=2)
    (root / "train/n00000001/img_1.JPEG").write_bytes(b"garbage")
    bundle = build_loaders(
        f"imagenet:{root}",
        batch_size=2,
        image_size=16,
        num_workers=1,
        train_limit=3,
        shuffle_train=False,
        skip_bad_images=True,
    )
    # Batch [0, 1]: sample 1 is bad and replaced by sample 2; the last partial batch is dropped.
    assert first_epoch_labels(bundle.train_loader) == [0, 2]
    assert bundle.bad_images == 1  # flagged in the worker, seen by the main process


def test_folder_two_classes(tmp_path):
    root = tmp_path / "flowers"
    for split, count in (("train", 3), ("val", 2)):
        for i in range(count):
            write_jpeg(root / split / "tulip" / f"t{i}.jpg", (255, 0, 0))
            write_png(root / split / "rose" / f"r{i}.PNG", (0, 0, 255))
    (root / "train" / "rose" / "notes.txt").write_text("not an image")
    bundle = build_loaders(f"folder:{root}", batch_size=8, image_size=32, shuffle_train=False)
    assert (bundle.num_classes, bundle.train_size, bundle.val_size) == (2, 6, 4)
    images, labels = next(iter(bundle.val_loader))
    assert images.shape == (4, 3, 32, 32)
    assert labels.tolist() == [0, 0, 1, 1]  # rose < tulip
    # Rose images are blue: the blue channel is high after normalisation.
    assert float(images[0, 2].mean()) > 2.0 and float(images[2, 0].mean()) > 2.0


def test_folder_val_class_unknown_to_train(tmp_path):
    root = tmp_path / "flowers"
    write_jpeg(root / "train/rose/a.jpg", (1, 2, 3))
    write_jpeg(root / "val/daisy/b.jpg", (1, 2, 3))
    with pytest.raises(DataError, match="daisy does not exist in the train split"):
        build_datasets(f"folder:{root}")
    with pytest.raises(DataError, match="does not exist"):
        build_datasets(f"folder:{tmp_path / 'absent'}")
