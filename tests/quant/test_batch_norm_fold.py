"""Folding batch norms before QAT: the float model computes the same function, folding twice changes
nothing, and the fused copy is the same function without batch norms."""

from __future__ import annotations

import torch
from torch import nn

from tests.helpers.tiny_models import tiny_net
from torchslim.quant.batch_norm_fold import conv_norm_pairs, fused_copy, neutralise, write_back


def trained_tiny_net() -> nn.Module:
    torch.manual_seed(0)
    model = tiny_net()
    with torch.no_grad():  # batch statistics far from the defaults
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32) * 3 + 1)
    return model.eval()


def test_every_conv_bn_pair_is_found():
    pairs = conv_norm_pairs(tiny_net())
    assert [(p.conv, p.norm) for p in pairs] == [
        ("stem.0", "stem.1"),
        ("block.0", "block.1"),
        ("block.3", "block.4"),
        ("head.0", "head.1"),
    ]


def test_folding_keeps_the_function_and_a_second_fold_is_exact():
    model = trained_tiny_net()
    x = torch.randn(4, 3, 32, 32)
    before = model(x)
    pairs = conv_norm_pairs(model)
    neutralise(model, pairs)
    assert torch.allclose(model(x), before, atol=1e-5)
    norm = model.stem[1]
    assert torch.all(norm.weight == 1) and torch.all(norm.running_var == 1) and norm.eps == 0.0
    state = {k: v.clone() for k, v in model.state_dict().items()}
    norm.eps = 1e-5  # as a saved model loads again
    neutralise(model, pairs)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert norm.eps == 0.0


def test_the_fused_copy_has_no_batch_norms_and_writes_back_exactly():
    model = trained_tiny_net()
    pairs = conv_norm_pairs(model)
    neutralise(model, pairs)
    fused = fused_copy(model, pairs).eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(fused(x), model(x), atol=1e-6)
    with torch.no_grad():
        for parameter in fused.parameters():
            parameter.add_(0.01)
    write_back(model, fused.state_dict(), pairs)
    assert torch.equal(model.stem[0].weight, fused.stem[0].weight)
    assert torch.equal(model.stem[1].bias, fused.stem[0].bias)
    assert torch.allclose(fused(x), model(x), atol=1e-6)
