"""Mixed-precision choice for a device."""

from __future__ import annotations

import torch


def autocast_settings(
    device: str | torch.device, amp: bool
) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """``(amp_dtype, scaler)`` for :class:`~torchslim.engine.train.TrainOptions`.

    On CUDA with ``amp``: bfloat16 when the GPU supports it (no scaler needed), else float16 with a
    ``GradScaler``. Anywhere else, or without ``amp``: ``(None, None)``, plain float32.
    """
    device = torch.device(device)
    if not amp or device.type != "cuda":
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")
