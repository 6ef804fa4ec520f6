"""The soft-label distillation loss is the documented formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchslim.recovery.distillation import soft_label_loss


def test_soft_label_loss_is_the_documented_formula():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(8, 10, generator=generator), torch.randn(8, 10, generator=generator)
    targets = torch.randint(0, 10, (8,), generator=generator)
    p_teacher = torch.softmax(teacher / 3.0, dim=1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student / 3.0, dim=1))).sum(dim=1).mean()
    expected = 0.3 * 9.0 * kl + 0.7 * F.cross_entropy(student, targets)
    loss = soft_label_loss(student, teacher, targets, temperature=3.0, alpha=0.3)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    same = soft_label_loss(student, student, targets, temperature=2.0, alpha=1.0)
    assert float(same) == pytest.approx(0, abs=1e-6)
    hard_only = soft_label_loss(student, teacher, targets, temperature=2.0, alpha=0.0)
    assert torch.equal(hard_only, F.cross_entropy(student, targets))
