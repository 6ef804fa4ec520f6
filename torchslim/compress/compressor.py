"""The Compressor: the one place that wires a config's strategies, the training engine and the artifacts.

Per epoch: the strategies' epoch-begin hooks (pruning happens here), one training epoch, evaluation
every ``eval_epoch``, the epoch-end hooks, then the epoch's files (:mod:`torchslim.compress.run_files`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from torchslim.compress.optimization import Optimization
from torchslim.compress.param_check import check_pruned_params
from torchslim.compress.run_files import RunFiles
from torchslim.compress.strategies import CompressionContext, Strategy, build_strategy
from torchslim.compress.summary import CompressionSummary, ModelStats
from torchslim.config import SlimConfig
from torchslim.data import DEFAULT_DATA_SPEC, DataBundle, build_loaders
from torchslim.data.loaders import check_label_range
from torchslim.data.preprocess import preprocess_record
from torchslim.data.spec import parse_data_spec
from torchslim.engine import (
    EvalResult,
    TrainOptions,
    autocast_settings,
    check_writable,
    evaluate,
    train_one_epoch,
)
from torchslim.engine.device import num_outputs, resolve_device
from torchslim.engine.distributed import barrier, from_environment
from torchslim.errors import ModelError
from torchslim.models import (
    build_model,
    canonical_name,
    load_manifest,
    load_model,
    load_pretrained,
    seed_param_names,
)
from torchslim.pruning.counting import profile_model
from torchslim.quant.qat import float_model_of
from torchslim.recovery.batch_norm import recalibrate_batch_norm
from torchslim.recovery.reconstruction import reconstruct

__all__ = ["CompressionSummary", "Compressor", "ModelStats"]

DEFAULT_MODEL = "mobilenet_v1"
RESOLVED_CONFIG_FILE = "config.resolved.yaml"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclasses.dataclass
class _Training:
    """The optimizer and schedule an epoch trains with, and the extra parameters they were built for."""

    optimizer: Any
    scheduler: Any
    extras: list[nn.Parameter]


class Compressor:
    """Runs a :class:`SlimConfig`: strategies, fine-tuning, checkpoints, eval and inference models."""

    def __init__(
        self, config: SlimConfig, *, progress: bool = True, log=_stderr, skip_bad_images: bool = False
    ) -> None:
        self.config = config
        self.skip_bad_images = skip_bad_images
        self.train = config.train
        self.progress = progress
        self.log = log
        self.device = resolve_device(self.train.device)
        self.dist = from_environment(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if not self.dist.is_main:
            self.progress, self.log = False, lambda message: None
        self.checkpoint_root = (
            Path(config.compressor.checkpoint_path) if config.compressor.checkpoint_path else None
        )
        self.model_name = canonical_name(self.train.model or DEFAULT_MODEL)
        self.data: DataBundle | None = None
        self.strategies: list[Strategy] = []
        self.data_spec = self.train.data or DEFAULT_DATA_SPEC

    # -- set-up ---------------------------------------------------------------------------
    def load_data(self) -> DataBundle:
        if self.data is None:
            self.data = build_loaders(
                self.data_spec,
                batch_size=self.train.batch_size,
                image_size=self.train.input_size,
                train_limit=self.train.train_limit,
                val_limit=self.train.val_limit,
                num_workers=self.num_workers(),
                seed=self.train.seed,
                distributed=self.dist.enabled,
                skip_bad_images=self.skip_bad_images,
            )
            self.log(f"data: {self.data.description}")
        return self.data

    def num_workers(self) -> int:
        """``train.num_workers``, or by default: none for in-memory datasets, else up to 4 (one per core)."""
        if self.train.num_workers is not None:
            return self.train.num_workers
        in_memory = parse_data_spec(self.data_spec).scheme in ("fashion-mnist", "cifar10")
        return 0 if in_memory else min(4, os.cpu_count() or 1)

    def base_kwargs(self) -> dict[str, Any]:
        return {"num_classes": self.train.num_classes or self.load_data().num_classes}

    def input_size(self) -> int:
        return self.train.input_size or self.load_data().image_size

    def build_initial_model(self) -> tuple[nn.Module, dict[str, Any] | None]:
        """The model to compress: fresh, or ``init_model`` (a weights file or a saved model directory)."""
        init = self.config.compressor.init_model
        if init and Path(init).is_dir():
            # Checked before building: a manifest must not make us import code the user did not name.
            declared = load_manifest(Path(init) / "manifest.json").get("model")
            if declared != self.model_name:
                raise ModelError(f"init_model {init} is a {declared}, not a {self.model_name}")
            model, manifest = load_model(init, trusted=self.model_name)
            return model, manifest
        model = build_model(self.model_name, **self.base_kwargs())
        if init:
            load_pretrained(model, init)
            self.log(f"loaded weights from {init}")
        return model, None

    def build_strategies(self) -> list[Strategy]:
        return [build_strategy(s.name, s, self.config) for s in self.config.active_strategies()]

    def make_context(self, model: nn.Module) -> CompressionContext:
        size = self.input_size()
        example = torch.zeros(1, 3, size, size, device=self.device)
        data = self.load_data()
        context = CompressionContext(
            model=model,
            base_name=self.model_name,
            base_kwargs=self.base_kwargs(),
            example_input=example,
            aliases=seed_param_names(self.model_name, model) if ":" not in self.model_name else {},
            device=self.device,
            train_loader=data.train_loader,
            val_loader=data.val_loader,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        context.evaluate = lambda model=None: self.evaluate(model if model is not None else context.model)
        if self.train.bn_recalibration_batches > 0:
            context.after_prune = self.recalibrate_bn
        if self.train.reconstruction_batches > 0:
            context.reconstruct = self.reconstruct
        return context

    def reconstruct(
        self, original: nn.Module, pruned: nn.Module, group_set: Any, mask: Any
    ) -> dict[str, Any]:
        """Refit the layers a pruning step cut into, on ``train.reconstruction_batches`` training batches."""
        report = reconstruct(
            original,
            pruned,
            self.load_data().train_loader,
            group_set=group_set,
            mask=mask,
            num_batches=self.train.reconstruction_batches,
            device=self.device,
            seed=self.train.seed,
            distributed=self.dist.enabled,
        )
        return {
            "batches": report.batches,
            "images": report.images,
            "layers": len(report.layers),
            "error_before": report.mean_error_before,
            "error_after": report.mean_error_after,
            "seconds": report.seconds,
        }

    def recalibrate_bn(self, model: nn.Module) -> int:
        """Re-estimate batch-norm statistics after pruning on ``train.bn_recalibration_batches`` batches.

        Silent: search strategies call it for every candidate; their events carry top-1 before and after.
        """
        return recalibrate_batch_norm(
            model,
            self.load_data().train_loader,
            num_batches=self.train.bn_recalibration_batches,
            device=self.device,
            distributed=self.dist.enabled,
        )

    # -- the run --------------------------------------------------------------------------
    def run(self) -> CompressionSummary:
        context = self.prepare()
        state = self.resume(context)
        before, start_epoch = self._starting_point(context, state)
        extras = self.extra_parameters(context)
        optimizer, scheduler = self.optimization().build(context.model, extras, state)
        training = _Training(optimizer, scheduler, extras)
        if self.checkpoint_root is not None and self.dist.is_main:
            self.config.save(str(self.checkpoint_root / RESOLVED_CONFIG_FILE))
        summary = CompressionSummary(before, before, resumed_from=state["path"] if state else None)
        for strategy in self.strategies:
            strategy.on_compression_begin(context)
        last_eval: EvalResult | None = None
        for epoch in range(start_epoch, self.config.compressor.epoch):
            last_eval = self.run_epoch(context, training, epoch, before, summary)
        for strategy in self.strategies:
            strategy.on_compression_end(context)
        if last_eval is None:
            last_eval = self.evaluate(context.model)
        summary.after = self.stats(context.model, last_eval)
        summary.events = context.events
        return summary

    def prepare(self) -> CompressionContext:
        """Data, strategies and the initial model on its device, all checked before anything is written."""
        data = self.load_data()
        self.strategies = self.build_strategies()
        torch.manual_seed(self.train.seed)
        model, _ = self.build_initial_model()
        model.to(self.device)
        classes = num_outputs(model, self.input_size(), self.device)
        if (
            classes is not None
        ):  # a label the model has no output for: a DataError naming it, not an IndexError
            check_label_range(data, classes)
        context = self.make_context(model)
        check_pruned_params(self.config, context.model, context.aliases)
        if self.checkpoint_root is not None and self.dist.is_main:
            check_writable(self.checkpoint_root)
        return context

    def _starting_point(
        self, context: CompressionContext, state: dict[str, Any] | None
    ) -> tuple[ModelStats, int]:
        """The stats of the model before compression and the first epoch to run."""
        if state is None:
            return self.stats(context.model, self.evaluate(context.model)), 0
        meta = state["meta"]
        context.events, context.epoch = meta.get("events", []), meta["epoch"]
        for strategy in self.strategies:  # before the optimizer is built: it must fit their model
            strategy.on_resume(context)
        return ModelStats(**meta["before"]), meta["epoch"] + 1

    def run_epoch(
        self, context: CompressionContext, training: _Training, epoch: int, before: ModelStats, summary
    ) -> EvalResult | None:
        """One epoch: hooks, (re)built optimizer, training, evaluation when due, the epoch's files."""
        context.epoch = epoch
        for strategy in self.strategies:
            strategy.on_epoch_begin(context)
        extras = self.extra_parameters(context)
        if context.model_changed or not _same_objects(extras, training.extras):
            training.optimizer, training.scheduler = self.optimization().rebuild(
                context.model,
                training.optimizer,
                training.scheduler,
                extras,
                keep_state=not context.model_changed,
            )
            context.model_changed, training.extras = False, extras
        stats = self.train_epoch(context, training.optimizer, training.scheduler, epoch)
        result = self.evaluate_if_due(context.model, epoch)
        for strategy in self.strategies:
            strategy.on_epoch_end(context)
        record = self.epoch_record(context.model, epoch, stats, result)
        summary.epochs_run.append(epoch)
        if record.get("top1") is not None:
            summary.top1_per_epoch[epoch] = record["top1"]
        if self.checkpoint_root is not None:
            if self.dist.is_main:
                self.save_epoch(context, training.optimizer, training.scheduler, epoch, record, before)
            summary.last_checkpoint = str(self.checkpoint_root / str(epoch))
            barrier(self.dist)
        return result

    def train_epoch(self, context: CompressionContext, optimizer, scheduler, epoch: int):
        amp_dtype, scaler = autocast_settings(self.device, amp=self.device.type == "cuda")
        model = context.model
        if self.dist.enabled:  # wrapped per epoch: pruning may have replaced the parameters
            model = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        options = TrainOptions(
            device=self.device,
            loss_fn=context.loss_fn,
            label_smoothing=self.train.label_smoothing,
            amp_dtype=amp_dtype,
            scaler=scaler,
            channels_last=self.device.type == "cuda",
            hooks=_StrategyHooks(self.strategies, context),
            progress=self.progress,
        )
        loader = self.load_data().train_loader
        return train_one_epoch(model, loader, optimizer, options, scheduler=scheduler, epoch=epoch)

    def evaluate(self, model: nn.Module) -> EvalResult:
        return evaluate(
            model,
            self.load_data().val_loader,
            device=self.device,
            progress=self.progress,
            distributed=self.dist.enabled,
        )

    def evaluate_if_due(self, model: nn.Module, epoch: int) -> EvalResult | None:
        last = epoch == self.config.compressor.epoch - 1
        if (epoch + 1) % self.config.compressor.eval_epoch == 0 or last:
            return self.evaluate(model)
        return None

    def stats(self, model: nn.Module, result: EvalResult | None) -> ModelStats:
        profile = profile_model(float_model_of(model), self.input_size())
        return ModelStats(
            profile.macs,
            profile.params,
            profile.size_bytes,
            result.top1 if result else None,
            result.top5 if result else None,
        )

    def epoch_record(self, model: nn.Module, epoch: int, stats, result: EvalResult | None) -> dict[str, Any]:
        profile = profile_model(float_model_of(model), self.input_size())
        record = {
            "epoch": epoch,
            "train_loss": stats.loss,
            "train_top1": stats.top1,
            "lr": stats.lr,
            "images_per_s": stats.images_per_s,
            "macs": profile.macs,
            "params": profile.params,
        }
        if result is not None:
            record.update({"top1": result.top1, "top5": result.top5, "val_loss": result.loss})
        top1 = f", top-1 {result.top1:.2f}%, top-5 {result.top5:.2f}%" if result else ""
        self.log(f"epoch {epoch}: loss {stats.loss:.4f}, {stats.images_per_s:.0f} images/s{top1}")
        return record

    # -- optimization ---------------------------------------------------------------------
    def extra_parameters(self, context: CompressionContext) -> list[nn.Parameter]:
        return [p for strategy in self.strategies for p in strategy.extra_parameters(context)]

    def optimization(self) -> Optimization:
        steps = len(self.load_data().train_loader)
        return Optimization(self.train, self.config.compressor.epoch, steps)

    # -- checkpoints ----------------------------------------------------------------------
    def run_files(self) -> RunFiles | None:
        """The run's checkpoints, eval models and metrics log; None without a checkpoint path."""
        if self.checkpoint_root is None:
            return None
        return RunFiles(
            root=self.checkpoint_root,
            model_name=self.model_name,
            compressor=self.config.compressor,
            input_size=self.input_size(),
            preprocess=preprocess_record(self.data_spec, self.input_size()),
            device=self.device,
            is_main=self.dist.is_main,
            log=self.log,
        )

    def save_epoch(self, context, optimizer, scheduler, epoch: int, record: dict, before: ModelStats) -> Path:
        return self.run_files().save_epoch(
            context, self.strategies, optimizer, scheduler, epoch, record, before
        )

    def resume(self, context: CompressionContext) -> dict[str, Any] | None:
        """Load the newest complete checkpoint into ``context``; None when starting fresh."""
        files = self.run_files()
        return None if files is None else files.resume(context, self.strategies)


class _StrategyHooks:
    """Adapts the strategies' batch hooks to the engine's hook protocol."""

    def __init__(self, strategies: list[Strategy], context: CompressionContext) -> None:
        self.strategies, self.context = strategies, context

    def on_batch_begin(self, batch_index: int, images, targets) -> None:
        for strategy in self.strategies:
            strategy.on_batch_begin(self.context, batch_index)

    def on_batch_end(self, batch_index: int, loss: float) -> None:
        for strategy in self.strategies:
            strategy.on_batch_end(self.context, batch_index, loss)


def _same_objects(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
