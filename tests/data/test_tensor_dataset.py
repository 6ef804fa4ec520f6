"""The in-memory image dataset: crops and flips are windows of the zero-padded image."""

from __future__ import annotations

import torch

from torchslim.data.tensor_dataset import TensorImageDataset


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
