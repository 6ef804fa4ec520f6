"""Tracing a model, its channel dependency groups, the surgery that removes channels, and the oracle."""

from .channel_graph import CONSUMER_ROLES, DENSE_ROLES, ChannelGraph, LayerUse, layer_weight
from .groups import (
    Group,
    GroupInput,
    GroupSet,
    build_groups,
    matching_params,
    param_name_sample,
    select_groups,
)
from .oracle import compare_outputs, oracle_reference
from .surgery import apply_plan, plan_macs, removed_mask
from .trace import trace_channels

__all__ = [
    "CONSUMER_ROLES",
    "DENSE_ROLES",
    "ChannelGraph",
    "Group",
    "GroupInput",
    "GroupSet",
    "LayerUse",
    "apply_plan",
    "build_groups",
    "compare_outputs",
    "oracle_reference",
    "plan_macs",
    "removed_mask",
    "layer_weight",
    "matching_params",
    "param_name_sample",
    "select_groups",
    "trace_channels",
]
