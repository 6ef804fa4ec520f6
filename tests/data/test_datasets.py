"""Tests for torchslim.data: spec parsing, IDX, the four dataset kinds, loaders and samplers."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchslim.data import (
    DEFAULT_DATA_SPEC,
    ShardedEvalSampler,
    build_datasets,
    build_loaders,
    parse_data_spec,
)
from torchslim.data.idx import read_idx
from torchslim.data.spec import FASHION_MNIST_DIR
from torchslim.data.tensor_dataset import TensorImageDataset
from torchslim.errors import ConfigError, DataError

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


# ---------------------------------------------------------------- helpers


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> Path:
    """Write ``array`` as IDX (gzip when the name ends in .gz), independently of the reader."""
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def make_fmnist_dir(root: Path, n_train: int = 20, n_val: int = 10, gz: bool = True) -> Path:
    """A mini Fashion-MNIST: image i is constant with value i*6, label i % 10."""
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, count in (("train", n_train), ("t10k", n_val)):
        images = np.stack([np.full((28, 28), i * 6, dtype=np.uint8) for i in range(count)])
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return root


COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def write_jpeg(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG")


def write_png(path: Path, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20), color).save(path, format="PNG")


def make_imagenet_dir(root: Path, n_train: int = 6, n_val: int = 4) -> Path:
    """ILSVRC-style layout: train/val JPEGs plus list files; image i has label i % 3."""
    lines = {"train": [], "val": []}
    for split, count in (("train", n_train), ("val", n_val)):
        for i in range(count):
            rel = f"{split}/n{i % 3:08d}/img_{i}.JPEG"
            write_jpeg(root / rel, COLORS[i % len(COLORS)])
            lines[split].append(f"{rel} {i % 3}")
        (root / f"{split}_list.txt").write_text("\n".join(lines[split]) + "\n")
    return root


def make_cifar_dir(root: Path, per_batch: int = 4, n_val: int = 3) -> Path:
    """torchvision's cifar-10-batches-py layout; image i of a batch is constant i*20, label i."""
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    names = [(f"data_batch_{b}", per_batch) for b in range(1, 6)] + [("test_batch", n_val)]
    for name, count in names:
        data = np.stack([np.full(3072, i * 20, dtype=np.uint8) for i in range(count)])
        entry = {b"batch_label": name.encode(), b"data": data, b"labels": list(range(count))}
        (batches / name).write_bytes(pickle.dumps(entry, protocol=2))
    return root


def first_epoch_labels(loader) -> list[int]:
    return [int(y) for _, labels in loader for y in labels]


# ---------------------------------------------------------------- spec


def test_parse_default_spec_uses_debian_dir():
    spec = parse_data_spec(DEFAULT_DATA_SPEC)
    assert DEFAULT_DATA_SPEC == "fashion-mnist"
    assert spec.scheme == "fashion-mnist"
    assert spec.root == Path("/usr/share/datasets/fashion-mnist") == FASHION_MNIST_DIR


@pytest.mark.parametrize(
    ("text", "scheme", "root"),
    [
        ("fashion-mnist:/data/fm", "fashion-mnist", "/data/fm"),
        ("imagenet:/data/ilsvrc", "imagenet", "/data/ilsvrc"),
        ("folder:rel/dir", "folder", "rel/dir"),
        ("CIFAR10:/x:y", "cifar10", "/x:y"),
    ],
)
def test_parse_scheme_and_dir(text, scheme, root):
    spec = parse_data_spec(text)
    assert (spec.scheme, spec.root) == (scheme, Path(root))


def test_parse_unknown_scheme_lists_known_ones():
    with pytest.raises(DataError) as info:
        parse_data_spec("mnist:/data")
    message = str(info.value)
    assert "'mnist'" in message
    for form in ("cifar10:DIR", "fashion-mnist[:DIR]", "folder:DIR", "imagenet:DIR"):
        assert form in message


@pytest.mark.parametrize("text", ["imagenet", "folder", "cifar10", "imagenet:", ""])
def test_parse_missing_dir_is_an_error(text):
    with pytest.raises(DataError, match="DIR|directory"):
        parse_data_spec(text)


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_read_idx_roundtrip(tmp_path, name):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    result = read_idx(write_idx(tmp_path / name, array))
    assert result.dtype == np.uint8 and result.shape == (2, 3, 4)
    np.testing.assert_array_equal(result, array)


def test_read_idx_big_endian_int32(tmp_path):
    array = np.array([1, -2, 70000], dtype=np.int32)
    result = read_idx(write_idx(tmp_path / "ints", array, type_code=0x0C))
    assert result.tolist() == [1, -2, 70000]
    assert result.dtype.isnative


def test_read_idx_bad_magic_names_file(tmp_path):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(b"\x12\x34\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataError, match="bad magic number 0x12340801") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_truncated_and_bad_gzip(tmp_path):
    path = write_idx(tmp_path / "short", np.zeros(10, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="holds 7 data bytes.*needs 10"):
        read_idx(path)
    bad_gz = tmp_path / "broken.gz"
    bad_gz.write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(DataError, match="not valid gzip") as info:
        read_idx(bad_gz)
    assert str(bad_gz) in str(info.value)


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


def test_tensor_dataset_crop_and_flip_are_windows_of_the_padded_image():
    images = torch.arange(2 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    dataset = TensorImageDataset(
        images, torch.tensor([3, 4]), ((0.0,), (1 / 255,)), crop_padding=1, hflip=True
    )
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        batch = dataset.__getitems__([0, 1])
        assert [label for _, label in batch] == [3, 4]
        for index, (image, _) in enumerate(batch):
            assert image.shape == (3, 6, 6)
            assert torch.equal(image[0], image[2])  # channel repeated
            padded = torch.nn.functional.pad(images[index, 0].float(), (1, 1, 1, 1))
            windows = {
                (top, left, flip): padded[top : top + 6, left : left + 6].flip(-1)
                if flip
                else padded[top : top + 6, left : left + 6]
                for top in range(3)
                for left in range(3)
                for flip in (False, True)
            }
            match = [key for key, window in windows.items() if torch.allclose(window, image[0], atol=1e-3)]
            assert len(match) == 1
            seen.add(match[0])
    assert len(seen) > 10  # offsets and flips really vary


# ---------------------------------------------------------------- ImageNet lists


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


# ---------------------------------------------------------------- class folders


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


# ---------------------------------------------------------------- CIFAR-10


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


# ---------------------------------------------------------------- samplers and distributed


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("size", [0, 1, 10, 11])
def test_sharded_eval_sampler_covers_each_index_once(world, size):
    shards = [list(ShardedEvalSampler(size, num_replicas=world, rank=r)) for r in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(size))
    assert [len(ShardedEvalSampler(size, world, r)) for r in range(world)] == [len(s) for s in shards]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_sharded_eval_sampler_rejects_bad_rank():
    with pytest.raises(ConfigError, match="rank 2"):
        ShardedEvalSampler(10, num_replicas=2, rank=2)


def test_distributed_needs_process_group(tmp_path):
    root = make_fmnist_dir(tmp_path / "fm")
    with pytest.raises(ConfigError, match="process group"):
        build_loaders(f"fashion-mnist:{root}", distributed=True)


def test_distributed_loaders_single_process_group(tmp_path):
    import torch.distributed as dist

    root = make_fmnist_dir(tmp_path / "fm", n_train=20, n_val=7)
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        bundle = build_loaders(f"fashion-mnist:{root}", batch_size=4, distributed=True, seed=3)
        assert bundle.train_sampler is not None
        bundle.train_sampler.set_epoch(1)
        assert sorted(first_epoch_labels(bundle.train_loader)) == sorted(i % 10 for i in range(20))
        assert isinstance(bundle.val_loader.sampler, ShardedEvalSampler)
        assert first_epoch_labels(bundle.val_loader) == list(range(7))
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- argument checks


def test_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="unknown data scheme"):
        build_loaders("svhn:/data")
    with pytest.raises(ConfigError, match="batch_size"):
        build_loaders(f"fashion-mnist:{tmp_path}", batch_size=0)
    with pytest.raises(ConfigError, match="train_limit"):
        build_datasets(f"fashion-mnist:{tmp_path}", train_limit=0)
