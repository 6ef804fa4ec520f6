"""Model-agnostic training engine: train one epoch, evaluate, LR schedules, checkpoints."""

from torchslim.data.shuffle import (  # re-exported: samplers live with the data
    EpochShuffleSampler,
    seeded_generator,
)
from torchslim.engine.amp import autocast_settings
from torchslim.engine.checkpoint import (
    capture_rng_state,
    check_writable,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    verify_checkpoint,
)
from torchslim.engine.evaluate import EvalResult, accuracy_counts, evaluate
from torchslim.engine.metrics_log import append_jsonl, read_jsonl
from torchslim.engine.optim import LR_STRATEGIES, build_lr_scheduler, build_optimizer, lr_multiplier
from torchslim.engine.train import EpochStats, TrainOptions, train_one_epoch

__all__ = [
    "LR_STRATEGIES",
    "EpochShuffleSampler",
    "EpochStats",
    "EvalResult",
    "TrainOptions",
    "accuracy_counts",
    "append_jsonl",
    "autocast_settings",
    "build_lr_scheduler",
    "build_optimizer",
    "capture_rng_state",
    "check_writable",
    "evaluate",
    "find_latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "lr_multiplier",
    "read_jsonl",
    "restore_rng_state",
    "save_checkpoint",
    "seeded_generator",
    "train_one_epoch",
    "verify_checkpoint",
]
