"""Tracing a model, its channel dependency groups, and the surgery that removes channels."""

from .groups import Group, GroupSet, build_groups, select_groups
from .surgery import apply_plan, oracle_reference, plan_macs, removed_mask
from .trace import ChannelGraph, LayerUse, trace_channels

__all__ = [
    "ChannelGraph",
    "Group",
    "GroupSet",
    "LayerUse",
    "apply_plan",
    "build_groups",
    "oracle_reference",
    "plan_macs",
    "removed_mask",
    "select_groups",
    "trace_channels",
]
