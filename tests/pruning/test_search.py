"""Plan searches: uniform, and scaled per group."""

from __future__ import annotations

import torch

from tests.helpers.latency import plan_builder
from torchslim.pruning.search import search_scaled, search_uniform


def test_search_scaled_with_unit_scale_is_the_uniform_search(wide):

    _, builder = plan_builder(wide, torch.randn(1, 3, 32, 32), allowed_block=8)
    uniform = search_uniform(builder, 0.4, 0.02)
    assert search_scaled(builder, 0.4, 0.02, dict.fromkeys(builder.sizes, 1.0)).keep == uniform.keep
