"""Fixtures shared by the whole suite (helpers that are not fixtures live in ``tests/helpers``)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.data import write_brightness_fashion_mnist, write_fashion_mnist
from tests.helpers.latency import Wide
from tests.helpers.processes import PLAIN, CliServer, plain_cli
from tests.helpers.tiny_models import tiny_net
from torchslim.data import build_loaders
from torchslim.engine import TrainOptions, build_optimizer, train_one_epoch


@pytest.fixture(scope="session")
def tiny_fmnist(tmp_path_factory) -> str:
    """A data spec for 256 training and 128 validation images."""
    return "fashion-mnist:" + str(write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), 256, 128))


@pytest.fixture(scope="session")
def brightness_fmnist(tmp_path_factory) -> str:
    """A data spec for 200 training and 50 validation images whose class is their brightness."""
    root = tmp_path_factory.mktemp("brightness-fmnist")
    return "fashion-mnist:" + str(write_brightness_fashion_mnist(root, 200, 50, noise=20))


@pytest.fixture(scope="session")
def tiny_net_weights(tmp_path_factory, tiny_fmnist) -> str:
    """A weights file of tiny_net trained one epoch on tiny_fmnist (at 32x32): better than chance, short of
    perfect, so accuracies after pruning differ between models."""
    torch.manual_seed(0)
    model = tiny_net()
    data = build_loaders(tiny_fmnist, batch_size=32, image_size=32)
    train_one_epoch(model, data.train_loader, build_optimizer(model, lr=0.1), TrainOptions(progress=False))
    path = tmp_path_factory.mktemp("weights") / "tiny_net.pt"
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture
def one_thread():
    """Two shared cores: one thread is several times faster than two fighting ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """``python -m torchslim ARGV`` in a process of its own: forked from a CLI server (see
    tests/helpers/processes.py), or a fresh interpreter with TORCHSLIM_TEST_PLAIN_SUBPROCESS=1."""
    if PLAIN:
        yield plain_cli
        return
    server = CliServer(tmp_path_factory.mktemp("cli-runs"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def wide() -> Wide:
    """The latency tests' model (widths 48-96), seeded, in eval mode."""
    torch.manual_seed(0)
    return Wide().eval()
