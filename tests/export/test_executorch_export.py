"""ExecuTorch export of a pruned model: the program computes what PyTorch computes, runs batches of any
size, and every failure (an op export refuses, a corrupt file, the extra missing) is one line that
names the problem and writes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import torchslim
from tests.helpers.tiny_models import tiny_net
from torchslim.errors import ModelError
from torchslim.export import executorch_export, pte
from torchslim.export.executorch_export import export_executorch
from torchslim.export.pte import PteModel

pytest.importorskip("executorch", reason="the executorch extra is part of make setup")


@pytest.fixture(scope="module")
def pruned():
    torch.manual_seed(0)
    model = tiny_net().eval()
    result = torchslim.prune(model, torch.randn(1, 3, 16, 16), target_flops=0.4, round_to=4, verify=True)
    return result.model.eval()


@pytest.fixture(scope="module")
def program(pruned, tmp_path_factory):
    path = tmp_path_factory.mktemp("pte") / "model.pte"
    report = export_executorch(pruned, torch.randn(2, 3, 16, 16), path)
    return path, report


def test_the_program_matches_pytorch_and_reports_what_it_checked(program, pruned):
    path, report = program
    assert path.is_file() and report.size_bytes == path.stat().st_size
    assert report.dtype == "fp32" and report.top1_agreement == 1.0
    assert 0.0 <= report.max_abs_diff < 1e-4
    assert report.fallback_ops == {}  # convolutions, batch norms, adds, pool, linear: all in XNNPACK


class Cumulative(nn.Module):
    """A cumulative sum, which XNNPACK has no kernel for, between two layers it has."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv(x).cumsum(1).amax((2, 3)))


def test_ops_left_outside_the_delegate_are_named_and_counted(tmp_path):
    model = Cumulative().eval()
    x = torch.randn(1, 3, 8, 8)
    report = export_executorch(model, x, tmp_path / "model.pte")
    assert "aten.cumsum.default" in report.fallback_ops
    assert "aten.convolution.default" not in report.fallback_ops
    assert "aten.cumsum.default x1" in report.summary_line()
    with torch.no_grad():
        np.testing.assert_allclose(PteModel(tmp_path / "model.pte")(x.numpy()), model(x).numpy(), atol=1e-5)


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_a_program_of_batch_two_runs_any_batch_in_pieces(program, pruned, batch):
    path, _ = program
    runner = PteModel(path, threads=1)
    assert runner.input_shape == (2, 3, 16, 16)
    images = torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = pruned(images).numpy()
    got = runner(images.numpy())
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_images_of_another_size_are_refused_by_name(program):
    path, _ = program
    with pytest.raises(ModelError, match=r"expects images of shape \[3, 16, 16\], got \[3, 8, 8\]"):
        PteModel(path)(np.zeros((1, 3, 8, 8), np.float32))


class Branchy(nn.Module):
    """Control flow on a tensor's value: torch.export cannot capture it."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        self.decide = Decide()

    def forward(self, x):
        return self.decide(self.features(x))


class Decide(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x.mean((2, 3))
        return x.amax((2, 3))


class Spectral(nn.Module):
    """torch.export takes an FFT; ExecuTorch's edge dialect refuses the complex abs after it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return torch.fft.rfft(self.conv(x).flatten(1)).abs()


def test_an_untraceable_layer_is_one_line_naming_it_and_nothing_is_written(tmp_path):
    target = tmp_path / "model.pte"
    target.write_bytes(b"the previous program")
    with pytest.raises(ModelError) as error:
        export_executorch(Branchy(), torch.randn(1, 3, 8, 8), target)
    message = str(error.value)
    assert "\n" not in message
    assert "torch.export" in message and "at layer decide (Decide)" in message
    assert target.read_bytes() == b"the previous program"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pte"]


def test_an_op_the_runtime_refuses_is_named_with_its_layer(tmp_path):
    with pytest.raises(ModelError) as error:
        export_executorch(Spectral(), torch.randn(1, 3, 8, 8), tmp_path / "model.pte")
    message = str(error.value)
    assert "\n" not in message
    assert "op aten.abs.default" in message and "at layer <model> (Spectral)" in message
    assert not any(tmp_path.iterdir())


def test_a_corrupt_program_is_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "broken.pte"
    bad.write_bytes(b"ET12" + bytes(60))
    with pytest.raises(ModelError, match=r"broken\.pte: not a readable ExecuTorch program"):
        PteModel(bad)
    with pytest.raises(ModelError, match="ExecuTorch program not found"):
        PteModel(tmp_path / "missing.pte")


def test_without_the_extra_the_error_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(pte, "executorch_available", lambda: False)
    with pytest.raises(ModelError, match=r"needs ExecuTorch, which is not installed: pip install") as error:
        executorch_export.export_executorch(tiny_net(), torch.randn(1, 3, 16, 16), tmp_path / "m.pte")
    assert error.value.exit_code == 4
    assert not any(tmp_path.iterdir())


def test_the_thread_pool_takes_the_count_asked_for():
    from executorch.extension.pybindings import portable_lib

    before = portable_lib._threadpool_get_thread_count()
    try:
        pte.set_executorch_threads(1)
        assert portable_lib._threadpool_get_thread_count() == 1
    finally:
        pte.set_executorch_threads(before)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        pte.set_executorch_threads(0)


def test_a_program_asking_for_another_thread_count_runs(program, pruned):
    """The pool is resized before the program loads: resized after, XNNPACK's delegate would run on the
    freed pool and abort the process."""
    from executorch.extension.pybindings import portable_lib

    path, _ = program
    before = portable_lib._threadpool_get_thread_count()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    try:
        pte.set_executorch_threads(1)
        runner = PteModel(path, threads=2)
        assert portable_lib._threadpool_get_thread_count() == 2
        with torch.no_grad():
            np.testing.assert_allclose(runner(images.numpy()), pruned(images).numpy(), atol=1e-4, rtol=1e-4)
    finally:
        pte.set_executorch_threads(before)
