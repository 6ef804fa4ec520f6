"""DistillationStrategy: during fine-tuning, the unpruned model teaches the pruned one.

Config (PaddleSlim's ``distillers`` section and a strategy naming one)::

    distillers:
        distiller_1:
            class: 'SoftLabelDistiller'
            temperature: 4.0   # softens both distributions
            alpha: 0.5         # weight of the soft-label loss; 1 - alpha weights the hard labels
            teacher: null      # null: the model before any pruning; else a weights file or saved model dir
    strategies:
        distill:
            class: 'DistillationStrategy'
            distiller: 'distiller_1'
            start_epoch: 0
            end_epoch: 2       # exclusive, as in PaddleSlim; null: until the last epoch

For epochs ``start_epoch <= epoch < end_epoch`` the training loss is
``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)``
(the cross-entropy with ``train.label_smoothing``). The teacher runs in eval mode
without gradient on the training device; the seconds its forward passes take,
and their share of the epoch's training time, are an event per epoch.

Resume: with ``teacher: null`` the initial model is saved once, at the start of a
fresh run, to ``<checkpoint_path>/teacher/`` (a saved-model directory, as
:func:`torchslim.models.save_model` writes) and loaded from there by a resumed
run; epoch checkpoints never hold the teacher. A ``teacher`` path is read from
that path, fresh or resumed.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from torchslim.config._common import (
    Context,
    Origins,
    as_float,
    as_path_or_none,
    build,
    did_you_mean,
    interval,
    short_repr,
    spec,
)
from torchslim.errors import CheckpointError, ConfigError, ModelError
from torchslim.models import build_model, load_model, load_pretrained, save_model

from .base import CompressionContext, Strategy

log = logging.getLogger(__name__)

TEACHER_DIR = "teacher"


@dataclass(kw_only=True)
class SoftLabelDistillerConfig:
    """``class: SoftLabelDistiller`` - match the teacher's softened class distribution."""

    class_name: ClassVar[str] = "SoftLabelDistiller"
    key_hints: ClassVar[dict[str, str]] = {
        "teacher_temperature": "torchslim uses one 'temperature' for teacher and student",
        "student_temperature": "torchslim uses one 'temperature' for teacher and student",
        "distillation_loss_weight": "use 'alpha' (weight of the soft-label loss; 1 - alpha weights the labels)",
        "teacher_feature_map": "feature-map distillation is not supported yet",
        "student_feature_map": "feature-map distillation is not supported yet",
    }

    name: str = ""
    temperature: float = spec(as_float, 4.0, check=interval(0, lo_open=True), doc="softmax temperature T")
    alpha: float = spec(as_float, 0.5, check=interval(0, 1), doc="weight of the soft-label (KL) loss")
    teacher: str | None = spec(
        as_path_or_none,
        None,
        doc="null: the model before pruning; else a weights file or saved model directory",
    )


DISTILLER_CLASSES: dict[str, type] = {SoftLabelDistillerConfig.class_name: SoftLabelDistillerConfig}


def distiller_config(slim_config: Any, name: str) -> SoftLabelDistillerConfig:
    """Validate the raw ``distillers.<name>`` entry; errors name the key and the file (and line)."""
    ctx = Context(getattr(slim_config, "_origins", None) or Origins(slim_config.source))
    path = ("distillers", name)
    entry = slim_config.distillers[name]
    class_name = entry.get("class")
    cls = DISTILLER_CLASSES.get(class_name)
    if cls is None:
        known = ", ".join(DISTILLER_CLASSES)
        raise ctx.error(
            (*path, "class"),
            f"distiller class {short_repr(class_name)} is not supported{did_you_mean(class_name, DISTILLER_CLASSES)}"
            f" (supported distillers: {known})",
        )
    config = build(cls, ctx, path, entry, ignore=("class",), name=name)
    if config.teacher is not None and not Path(config.teacher).exists():
        raise ctx.error((*path, "teacher"), f"no such file or directory: {config.teacher}")
    return config


def soft_label_loss(
    outputs: torch.Tensor,
    teacher_outputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, targets)``, batch mean."""
    student = F.log_softmax(outputs.float() / temperature, dim=1)
    teacher = F.log_softmax(teacher_outputs.float() / temperature, dim=1)
    soft = F.kl_div(student, teacher, reduction="batchmean", log_target=True) * (temperature * temperature)
    hard = F.cross_entropy(outputs, targets, label_smoothing=label_smoothing)
    return alpha * soft + (1.0 - alpha) * hard


def _is_main_process(context: CompressionContext) -> bool:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return context.is_main_process


class DistillationStrategy(Strategy):
    def __init__(self, name: str, config: Any, slim_config: Any) -> None:
        super().__init__(name, config)
        names = [config.distiller] if config.distiller else list(config.distillers or [])
        if len(names) != 1:
            raise ConfigError(
                f"{slim_config.source}: strategies.{name}.distillers: one distiller per strategy is supported, "
                f"got {len(names)} ({', '.join(names)})"
            )
        self.distiller = distiller_config(slim_config, names[0])
        self.label_smoothing = slim_config.train.label_smoothing
        root = slim_config.compressor.checkpoint_path
        self.teacher_dir = Path(root) / TEACHER_DIR if root else None
        self.teacher: nn.Module | None = None
        self.resumed = False
        self.teacher_seconds = 0.0
        self._train_start: float | None = None
        self._train_end: float | None = None

    def active(self, epoch: int) -> bool:
        end = self.config.end_epoch
        return self.config.start_epoch <= epoch and (end is None or epoch < end)

    # -- the teacher ----------------------------------------------------------------------
    def on_compression_begin(self, context: CompressionContext) -> None:
        """A fresh run with ``teacher: null`` snapshots the model now, before any pruning, and saves it once."""
        if self.resumed or self.distiller.teacher is not None:
            return
        self.teacher = self._prepare(copy.deepcopy(context.model), context)
        if self.teacher_dir is not None:
            if _is_main_process(context):
                # The manifest builds a fresh base model: keep the global RNG as it was.
                with torch.random.fork_rng(devices=[]):
                    save_model(
                        self.teacher_dir,
                        self.teacher,
                        context.base_name,
                        context.base_kwargs,
                        input_size=int(context.example_input.shape[-1]),
                        extra={"teacher_of": self.name},
                    )
            if dist.is_available() and dist.is_initialized():
                dist.barrier()

    def _load_teacher(self, context: CompressionContext) -> nn.Module:
        path = self.distiller.teacher
        if path is not None:
            if Path(path).is_dir():
                model, _ = load_model(path, trusted=context.base_name)
            else:
                model = load_pretrained(build_model(context.base_name, **context.base_kwargs), path)
            return self._prepare(model, context)
        if self.teacher_dir is None or not (self.teacher_dir / "manifest.json").is_file():
            raise CheckpointError(
                f"strategies.{self.name}: resuming with distillers.{self.distiller.name}.teacher null needs the "
                f"unpruned model saved at the start of the run in {self.teacher_dir}, which is missing; "
                "set the teacher to a weights file or saved model directory"
            )
        model, _ = load_model(self.teacher_dir, trusted=context.base_name)
        log.info("strategy %s: teacher loaded from %s", self.name, self.teacher_dir)
        return self._prepare(model, context)

    @staticmethod
    def _prepare(model: nn.Module, context: CompressionContext) -> nn.Module:
        model = model.to(context.device).eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return model

    # -- the loss -------------------------------------------------------------------------
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The engine's ``loss_fn``: runs the teacher on ``images`` and mixes soft and hard losses."""
        cuda = images.is_cuda
        if cuda:
            torch.cuda.synchronize(images.device)
        start = time.perf_counter()
        with torch.no_grad():
            teacher_outputs = self.teacher(images)
        if cuda:
            torch.cuda.synchronize(images.device)
        self.teacher_seconds += time.perf_counter() - start
        if teacher_outputs.shape != outputs.shape:
            raise ModelError(
                f"distiller {self.distiller.name}: the teacher's outputs have shape {tuple(teacher_outputs.shape)}, "
                f"the student's {tuple(outputs.shape)}"
            )
        return soft_label_loss(
            outputs,
            teacher_outputs,
            targets,
            temperature=self.distiller.temperature,
            alpha=self.distiller.alpha,
            label_smoothing=self.label_smoothing,
        )

    # -- hooks ----------------------------------------------------------------------------
    def on_epoch_begin(self, context: CompressionContext) -> None:
        if not self.active(context.epoch):
            self._release(context)
            return
        if self.teacher is None:
            # Building the teacher's architecture draws random weights: keep the global RNG as it was.
            with torch.random.fork_rng(devices=[]):
                self.teacher = self._load_teacher(context)
        context.loss_fn = self.loss
        self.teacher_seconds, self._train_start, self._train_end = 0.0, None, None

    def on_batch_begin(self, context: CompressionContext, batch_index: int) -> None:
        if self._train_start is None and context.loss_fn == self.loss:
            self._train_start = time.perf_counter()

    def on_batch_end(self, context: CompressionContext, batch_index: int, loss: float) -> None:
        if context.loss_fn == self.loss:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, context: CompressionContext) -> None:
        if context.loss_fn != self.loss:
            return
        train_seconds = (self._train_end or 0.0) - (self._train_start or 0.0)
        share = 100.0 * self.teacher_seconds / train_seconds if train_seconds > 0 else None
        event = {
            "strategy": self.name,
            "epoch": context.epoch,
            "distiller": self.distiller.name,
            "temperature": self.distiller.temperature,
            "alpha": self.distiller.alpha,
            "teacher_seconds": self.teacher_seconds,
            "train_seconds": train_seconds,
            "teacher_percent_of_epoch": share,
        }
        context.events.append(event)
        percent = "?" if share is None else f"{share:.1f}%"
        log.info(
            "strategy %s, epoch %d: teacher forward %.2f s (%s of the epoch's training time)",
            self.name,
            context.epoch,
            self.teacher_seconds,
            percent,
        )
        if not self.active(context.epoch + 1):
            self._release(context)

    def on_compression_end(self, context: CompressionContext) -> None:
        self._release(context)

    def _release(self, context: CompressionContext) -> None:
        """Stop distilling: the default loss again, and the teacher's memory freed."""
        if context.loss_fn == self.loss:
            context.loss_fn = None
        if self.distiller.teacher is not None or self.teacher_dir is not None:
            self.teacher = None  # it can be loaded again; a snapshot not saved anywhere is kept

    # -- resumable state ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"teacher_dir": str(self.teacher_dir) if self.teacher_dir is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.resumed = True
