"""DistillationStrategy: during fine-tuning, the unpruned model teaches the pruned one.

A strategy names one ``distillers`` entry (:mod:`torchslim.config.distillers`). For epochs
``start_epoch <= epoch < end_epoch`` the loss is
``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)``,
the teacher running in eval mode without gradient; its forward time per epoch is an event.

With ``feature_maps`` the loss also has ``feature_weight * mean MSE(adapter(student), teacher)`` over
those modules (pruning keeps module names). An adapter is a learned 1x1 map from the student's channels
to the teacher's (identity while they agree, zeros once pruned); adapters reach the optimizer through
:meth:`Strategy.extra_parameters`, are checkpointed, and under torchrun their gradients are averaged.

With ``teacher: null`` a fresh run saves the initial model once to ``<checkpoint_path>/teacher/``, which
a resumed run loads; epoch checkpoints never hold the teacher.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from torchslim.config import DistillationConfig
from torchslim.config.distillers import distiller_config
from torchslim.config.messages import config_context, did_you_mean, short_repr
from torchslim.errors import CheckpointError, ConfigError, ModelError
from torchslim.models import build_model, load_model, load_pretrained, save_model
from torchslim.recovery.distillation import (
    adapt,
    average_gradient,
    capture,
    initial_adapter,
    output_shapes,
    soft_label_loss,
)

from .base import CompressionContext, Strategy, implements

log = logging.getLogger(__name__)

TEACHER_DIR = "teacher"


def _is_main_process(context: CompressionContext) -> bool:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return context.is_main_process


@implements(DistillationConfig)
class DistillationStrategy(Strategy):
    def __init__(self, name: str, config: Any, slim_config: Any) -> None:
        super().__init__(name, config, slim_config)
        names = [config.distiller] if config.distiller else list(config.distillers or [])
        if len(names) != 1:
            raise ConfigError(
                f"{slim_config.source}: strategies.{name}.distillers: one distiller per strategy is "
                f"supported, got {len(names)} ({', '.join(names)})"
            )
        self.distiller = distiller_config(slim_config, names[0])
        self._ctx = config_context(slim_config)
        self.label_smoothing = slim_config.train.label_smoothing
        root = slim_config.compressor.checkpoint_path
        self.teacher_dir = Path(root) / TEACHER_DIR if root else None
        self.teacher: nn.Module | None = None
        self.resumed = False
        self.teacher_seconds = 0.0
        self._train_start: float | None = None
        self._train_end: float | None = None
        self.adapters: dict[str, nn.Parameter] = {}  # feature-map name -> (teacher x student channels)
        self._restored: dict[str, torch.Tensor] | None = None  # adapters from a checkpoint, until placed
        self._features: dict[str, dict[str, torch.Tensor]] = {"student": {}, "teacher": {}}
        self._handles: list[Any] = []
        self._feature_sum: torch.Tensor | float = 0.0
        self._feature_batches = 0

    def active(self, epoch: int) -> bool:
        end = self.config.end_epoch
        return self.config.start_epoch <= epoch and (end is None or epoch < end)

    # -- the teacher ----------------------------------------------------------------------
    def on_compression_begin(self, context: CompressionContext) -> None:
        """A fresh run with ``teacher: null`` snapshots the model now, before any pruning, and saves it."""
        self._modules(context.model)  # an unknown feature map is a ConfigError before training
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
                f"strategies.{self.name}: resuming with distillers.{self.distiller.name}.teacher null needs "
                f"the unpruned model saved at the start of the run in {self.teacher_dir}, which is missing; "
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

    # -- feature maps ---------------------------------------------------------------------
    def _modules(self, model: nn.Module) -> dict[str, nn.Module]:
        """The ``feature_maps`` modules of ``model``; an unknown name is a ConfigError at that item."""
        modules = dict(model.named_modules())
        for index, name in enumerate(self.distiller.feature_maps):
            if name not in modules:
                known = [n for n in modules if n]
                raise self._ctx.error(
                    ("distillers", self.distiller.name, "feature_maps", index),
                    f"the model has no module {short_repr(name)}{did_you_mean(name, known)} "
                    f"(module names look like: {', '.join(known[:6])}, ...)",
                )
        return {name: modules[name] for name in self.distiller.feature_maps}

    def extra_parameters(self, context: CompressionContext) -> list[nn.Parameter]:
        """The feature-map adapters, fitted to the model as it is now (after this epoch's pruning)."""
        if self._restored is not None:
            self.adapters = {n: self._parameter(w.to(context.device)) for n, w in self._restored.items()}
            self._restored = None
        if self.distiller.feature_maps and self.teacher is not None and context.loss_fn == self.loss:
            self._fit(context)
        return list(self.adapters.values())

    def _fit(self, context: CompressionContext) -> None:
        """Give every feature map an adapter of the right shape, and hook the outputs of both models."""
        self._detach()
        example = context.example_input
        student = output_shapes(self._modules(context.model), context.model, example)
        teacher = output_shapes(self._modules(self.teacher), self.teacher, example)
        adapters = {}
        for name in self.distiller.feature_maps:
            s, t = student[name], teacher[name]
            if len(s) != len(t) or s[2:] != t[2:]:
                raise ModelError(
                    f"distiller {self.distiller.name}, feature map {name!r}: the student's output has shape "
                    f"{s}, the teacher's {t}; only the channels (dim 1) may differ"
                )
            weight = self.adapters.get(name)
            if weight is None or tuple(weight.shape) != (t[1], s[1]):  # new, or the layer was pruned
                weight = self._parameter(initial_adapter(s[1], t[1], context.device))
            adapters[name] = weight
        self.adapters = adapters
        for role, model in (("student", context.model), ("teacher", self.teacher)):
            store = self._features[role]
            for name, module in self._modules(model).items():
                hook = capture(store, name, training_only=role == "student")
                self._handles.append(module.register_forward_hook(hook))

    @staticmethod
    def _parameter(weight: torch.Tensor) -> nn.Parameter:
        param = nn.Parameter(weight)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            param.register_post_accumulate_grad_hook(average_gradient)
        return param

    def _detach(self) -> None:
        """Remove the capturing hooks (they live while an epoch trains) and what they kept."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for store in self._features.values():
            store.clear()

    def feature_loss(self) -> torch.Tensor:
        """Mean over the feature maps of MSE(adapter(student output), teacher output), last forward."""
        losses = []
        for name in self.distiller.feature_maps:
            weight = self.adapters.get(name)
            student = self._features["student"].pop(name, None)
            teacher = self._features["teacher"].pop(name, None)
            if weight is None or student is None or teacher is None:
                raise ModelError(
                    f"distiller {self.distiller.name}, feature map {name!r}: no adapter or no output "
                    "captured (extra_parameters() sets them up after on_epoch_begin, as the compressor "
                    "calls it)"
                )
            if student.shape[1] != weight.shape[1]:
                raise ModelError(
                    f"distiller {self.distiller.name}, feature map {name!r}: the student's output has "
                    f"{student.shape[1]} channels, its adapter takes {weight.shape[1]}"
                )
            adapted = adapt(weight, student)
            if adapted.shape != teacher.shape:
                raise ModelError(
                    f"distiller {self.distiller.name}, feature map {name!r}: the student's output has shape "
                    f"{tuple(student.shape)}, the teacher's {tuple(teacher.shape)}; "
                    "only the channels may differ"
                )
            losses.append(F.mse_loss(adapted.float(), teacher.detach().float()))
        return torch.stack(losses).mean()

    # -- the loss -------------------------------------------------------------------------
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The engine's ``loss_fn``: runs the teacher on ``images``; soft, hard and feature-map losses."""
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
                f"distiller {self.distiller.name}: the teacher's outputs have shape "
                f"{tuple(teacher_outputs.shape)}, the student's {tuple(outputs.shape)}"
            )
        loss = soft_label_loss(
            outputs,
            teacher_outputs,
            targets,
            temperature=self.distiller.temperature,
            alpha=self.distiller.alpha,
            label_smoothing=self.label_smoothing,
        )
        if not self.distiller.feature_maps:
            return loss
        features = self.feature_loss()
        self._feature_sum, self._feature_batches = (
            self._feature_sum + features.detach(),
            self._feature_batches + 1,
        )
        return loss + self.distiller.feature_weight * features

    # -- hooks ----------------------------------------------------------------------------
    def on_epoch_begin(self, context: CompressionContext) -> None:
        if not self.active(context.epoch):
            self._release(context)
            # kept until now: the last distilling epoch's checkpoint and optimizer hold them
            self.adapters, self._restored = {}, None
            return
        if self.teacher is None:
            # Building the teacher's architecture draws random weights: keep the global RNG as it was.
            with torch.random.fork_rng(devices=[]):
                self.teacher = self._load_teacher(context)
        context.loss_fn = self.loss
        self.teacher_seconds, self._train_start, self._train_end = 0.0, None, None
        self._feature_sum, self._feature_batches = 0.0, 0

    def on_batch_begin(self, context: CompressionContext, batch_index: int) -> None:
        if self._train_start is None and context.loss_fn == self.loss:
            self._train_start = time.perf_counter()

    def on_batch_end(self, context: CompressionContext, batch_index: int, loss: float) -> None:
        if context.loss_fn == self.loss:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, context: CompressionContext) -> None:
        self._detach()
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
        if self.distiller.feature_maps:
            event["feature_weight"] = self.distiller.feature_weight
            event["feature_loss"] = float(self._feature_sum) / max(self._feature_batches, 1)
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
        self.adapters, self._restored = {}, None

    def _release(self, context: CompressionContext) -> None:
        """Stop distilling: the default loss again, the hooks removed and the teacher's memory freed."""
        self._detach()
        if context.loss_fn == self.loss:
            context.loss_fn = None
        if self.distiller.teacher is not None or self.teacher_dir is not None:
            self.teacher = None  # it can be loaded again; a snapshot not saved anywhere is kept

    # -- resumable state ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The teacher's place and the adapters (CPU copies; the checkpoint's tensor file holds them)."""
        state: dict[str, Any] = {
            "teacher_dir": str(self.teacher_dir) if self.teacher_dir is not None else None
        }
        adapters = self._restored
        if adapters is None:
            adapters = {name: w.detach().to("cpu", copy=True) for name, w in self.adapters.items()}
        if adapters:
            state["adapters"] = adapters
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.resumed = True
        self.adapters, self._restored = {}, dict(state.get("adapters") or {}) or None
