"""Latency-aware pruning: layer latency tables, channel blocks, cost models, calibration, the planner."""
