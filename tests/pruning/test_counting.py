"""MAC and parameter counts against torchvision's published numbers, and the matrix products counted.

torchvision's weights carry ``meta["_ops"]`` (GFLOPS, which are multiply-accumulates of convolutions
and matrix products, at the weights' own crop size) and ``meta["num_params"]``. Every classifier is
built with its parameters on the meta device, so the check runs on shapes alone.
"""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models import get_model, get_model_weights

from torchslim.pruning.counting import profile_model

TOLERANCE = 0.02
# Builder arguments that make a model the one its DEFAULT weights describe.
BUILD_KWARGS = {
    "googlenet": {"aux_logits": False, "init_weights": False},  # the weights drop the auxiliary heads
    "vit_h_14": {"image_size": 518},  # the DEFAULT (SWAG) weights are for 518 x 518
}
# Models whose count differs from ``_ops`` by more than TOLERANCE, with the reason (none today).
KNOWN_DIFFERENCES: dict[str, str] = {}


@contextlib.contextmanager
def parameters_on_meta():
    """Every parameter and buffer a module registers goes to the meta device (no memory, no init cost)."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def on_meta_parameter(self, name, param):
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, param)

    def on_meta_buffer(self, name, buffer, persistent=True):
        register_buffer(self, name, None if buffer is None else buffer.to("meta"), persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = on_meta_parameter, on_meta_buffer
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer


def test_every_classifier_is_listed():
    assert len(torchvision.models.list_models(module=torchvision.models)) == 80


@pytest.mark.parametrize("name", torchvision.models.list_models(module=torchvision.models))
def test_macs_and_params_match_torchvision(name):
    weights = get_model_weights(name).DEFAULT
    size = weights.transforms().crop_size[0]
    with parameters_on_meta(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_model(name, **BUILD_KWARGS.get(name, {}))
    profile = profile_model(model, size)
    assert profile.params == weights.meta["num_params"]
    published = weights.meta["_ops"] * 1e9
    if name in KNOWN_DIFFERENCES:
        pytest.skip(KNOWN_DIFFERENCES[name])
    assert abs(profile.macs / published - 1) <= TOLERANCE, (
        f"{name}: {profile.macs / 1e9:.3f} G MACs at {size}, torchvision says {weights.meta['_ops']}"
    )


class _Products(nn.Module):
    """Each way of multiplying matrices once: @, bmm, einsum, SDPA, F.linear, and an attention layer."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 4))
        self.attention = nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, x):  # x: (1, 3, 4, 4) -> tokens (1, 12, 4)
        tokens = x.flatten(2).transpose(1, 2).reshape(1, 12, 4)
        a = tokens @ tokens.transpose(1, 2)  # 12 * 12 * 4
        b = torch.bmm(a, tokens)  # 12 * 4 * 12
        c = torch.einsum("bld,bmd->blm", b, tokens)  # 12 * 12 * 4
        d = F.scaled_dot_product_attention(tokens[:, None], tokens[:, None], tokens[:, None])  # 2 * 144 * 4
        e = F.linear(tokens, self.weight)  # 12 * 4 * 6
        f, _ = self.attention(tokens, tokens, tokens, need_weights=False)  # 3 x 12*4*4 + 2*144*4 + 12*4*4
        return a.sum() + b.sum() + c.sum() + d.sum() + e.sum() + f.sum()


def test_every_matrix_product_is_counted():
    model = _Products()
    profile = profile_model(model, input_size=4)
    projections = 4 * 12 * 4 * 4  # q, k, v in, and out
    expected = 3 * 12 * 12 * 4 + 2 * 144 * 4 + 12 * 4 * 6 + projections + 2 * 144 * 4
    assert profile.macs == expected
    kinds = {layer.name: layer.kind for layer in profile.layers}
    assert kinds == {"": "matmul", "attention": "attention"}


def test_meta_and_real_weights_count_alike():
    real = torchvision.models.resnet18()
    with parameters_on_meta():
        meta = torchvision.models.resnet18()
    assert profile_model(real, 64).macs == profile_model(meta, 64).macs
