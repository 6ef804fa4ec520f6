"""Calibration images: the same every run, even from a training set that augments randomly."""

from __future__ import annotations

import numpy as np
import torch

from torchslim.quant.calibration import calibration_images


class Augmenting(torch.utils.data.Dataset):
    """A training set whose every fetch adds random noise (a random crop would do the same)."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int):
        return torch.full((3, 4, 4), float(index)) + torch.rand(3, 4, 4), 0


def test_calibration_images_are_the_same_every_run_and_leave_the_random_stream_alone():
    torch.manual_seed(5)
    expected_next = torch.rand(1)
    torch.manual_seed(5)
    first = calibration_images(Augmenting(), 4)
    assert torch.equal(torch.rand(1), expected_next)
    torch.manual_seed(6)
    assert np.array_equal(calibration_images(Augmenting(), 4), first)
