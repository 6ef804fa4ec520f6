"""The Compressor: the one place that wires a config's strategies, the training engine and the artifacts.

Per epoch: strategies' epoch-begin hooks (pruning happens here), one training
epoch, evaluation every ``eval_epoch``, epoch-end hooks, then
``checkpoint_path/<epoch>/`` (training state, written atomically),
``<epoch>/eval_model/`` (manifest + weights) and ``<epoch>/eval_model/model.onnx``.
A restarted run resumes from the newest complete checkpoint; the config itself is
not part of the checkpoint, so edits to it apply on restart (as in the seed).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from torchslim.compress.param_check import check_pruned_params
from torchslim.compress.strategies import CompressionContext, Strategy, build_strategy
from torchslim.config import SlimConfig
from torchslim.data import DEFAULT_DATA_SPEC, DataBundle, build_loaders
from torchslim.data.loaders import check_label_range
from torchslim.data.preprocess import preprocess_record
from torchslim.data.spec import parse_data_spec
from torchslim.engine import (
    EvalResult,
    append_jsonl,
    autocast_settings,
    build_lr_scheduler,
    build_optimizer,
    capture_rng_state,
    check_writable,
    evaluate,
    find_latest_checkpoint,
    load_checkpoint,
    read_jsonl,
    restore_rng_state,
    save_checkpoint,
    train_one_epoch,
)
from torchslim.engine.device import num_outputs, resolve_device
from torchslim.engine.distributed import barrier, from_environment
from torchslim.errors import CheckpointError, ModelError
from torchslim.export import export_onnx
from torchslim.models import (
    build_from_manifest,
    build_model,
    canonical_name,
    check_state_dict,
    load_manifest,
    load_model,
    load_pretrained,
    make_manifest,
    save_model,
    seed_param_names,
)
from torchslim.models.saved import MANIFEST_FILE
from torchslim.pruning.counting import profile_model
from torchslim.recovery.batch_norm import recalibrate_batch_norm
from torchslim.recovery.reconstruction import reconstruct

DEFAULT_MODEL = "mobilenet_v1"
METRICS_FILE = "metrics.jsonl"
RESOLVED_CONFIG_FILE = "config.resolved.yaml"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class ModelStats:
    macs: int
    params: int
    size_bytes: int
    top1: float | None = None
    top5: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class CompressionSummary:
    before: ModelStats
    after: ModelStats
    epochs_run: list[int] = field(default_factory=list)
    resumed_from: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint: str | None = None
    top1_per_epoch: dict[int, float] = field(default_factory=dict)  # epochs run in this process and evaluated

    def as_dict(self) -> dict[str, Any]:
        return {
            "before": self.before.as_dict(),
            "after": self.after.as_dict(),
            "epochs_run": self.epochs_run,
            "resumed_from": self.resumed_from,
            "events": self.events,
            "last_checkpoint": self.last_checkpoint,
            "top1_per_epoch": self.top1_per_epoch,
        }


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
            "layers": len(report.layers),
            "error_before": report.mean_error_before,
            "error_after": report.mean_error_after,
            "seconds": report.seconds,
        }

    def recalibrate_bn(self, model: nn.Module) -> int:
        """Re-estimate batch-norm statistics after pruning on ``train.bn_recalibration_batches`` training batches.

        Silent: search strategies call it for every candidate; the strategies' events carry top-1 before and after.
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
        check_pruned_params(self.config, context.model, context.aliases)  # before anything is written
        if self.checkpoint_root is not None and self.dist.is_main:
            check_writable(self.checkpoint_root)
        state = self.resume(context)
        if state is None:
            before = self.stats(context.model, self.evaluate(context.model))
            start_epoch, events = 0, []
        else:
            before = ModelStats(**state["meta"]["before"])
            start_epoch, events = state["meta"]["epoch"] + 1, state["meta"].get("events", [])
        context.events = events
        extras = self.extra_parameters(context)
        optimizer, scheduler = self.build_optimization(context.model, state, extras)
        if self.checkpoint_root is not None and self.dist.is_main:
            self.config.save(str(self.checkpoint_root / RESOLVED_CONFIG_FILE))
        summary = CompressionSummary(before, before, resumed_from=state["path"] if state else None)
        for strategy in self.strategies:
            strategy.on_compression_begin(context)
        last_eval: EvalResult | None = None
        for epoch in range(start_epoch, self.config.compressor.epoch):
            context.epoch = epoch
            for strategy in self.strategies:
                strategy.on_epoch_begin(context)
            new_extras = self.extra_parameters(context)
            if context.model_changed or not _same_objects(new_extras, extras):
                optimizer, scheduler = self.rebuild_optimization(
                    context.model, optimizer, scheduler, new_extras, keep_state=not context.model_changed
                )
                context.model_changed, extras = False, new_extras
            stats = self.train_epoch(context, optimizer, scheduler, epoch, data)
            last_eval = self.evaluate_if_due(context.model, epoch)
            for strategy in self.strategies:
                strategy.on_epoch_end(context)
            record = self.epoch_record(context.model, epoch, stats, last_eval)
            summary.epochs_run.append(epoch)
            if record.get("top1") is not None:
                summary.top1_per_epoch[epoch] = record["top1"]
            if self.checkpoint_root is not None:
                if self.dist.is_main:
                    self.save_epoch(context, optimizer, scheduler, epoch, record, before)
                summary.last_checkpoint = str(self.checkpoint_root / str(epoch))
                barrier(self.dist)
        for strategy in self.strategies:
            strategy.on_compression_end(context)
        if last_eval is None:
            last_eval = self.evaluate(context.model)
        summary.after = self.stats(context.model, last_eval)
        summary.events = context.events
        return summary

    def train_epoch(self, context, optimizer, scheduler, epoch: int, data: DataBundle):
        amp_dtype, scaler = autocast_settings(self.device, amp=self.device.type == "cuda")
        hooks = _StrategyHooks(self.strategies, context)
        model = context.model
        if self.dist.enabled:  # wrapped per epoch: pruning may have replaced the parameters
            model = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        return train_one_epoch(
            model,
            data.train_loader,
            optimizer,
            scheduler=scheduler,
            device=self.device,
            epoch=epoch,
            loss_fn=context.loss_fn,
            label_smoothing=self.train.label_smoothing,
            amp_dtype=amp_dtype,
            scaler=scaler,
            channels_last=self.device.type == "cuda",
            hooks=hooks,
            progress=self.progress,
        )

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
        profile = profile_model(model, self.input_size())
        return ModelStats(
            profile.macs,
            profile.params,
            profile.size_bytes,
            result.top1 if result else None,
            result.top5 if result else None,
        )

    def epoch_record(self, model: nn.Module, epoch: int, stats, result: EvalResult | None) -> dict[str, Any]:
        profile = profile_model(model, self.input_size())
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

    def build_optimization(self, model: nn.Module, state: dict[str, Any] | None, extras=()):
        """SGD over the model and, as a last group, the strategies' extra parameters; its LR schedule."""
        optimizer = build_optimizer(
            model, lr=self.train.lr, momentum=self.train.momentum_rate, l2_decay=self.train.l2_decay
        )
        if extras:
            optimizer.add_param_group({"params": list(extras), "weight_decay": self.train.l2_decay})
        scheduler = build_lr_scheduler(
            optimizer,
            strategy=self.train.lr_strategy,
            epochs=max(self.config.compressor.epoch, 1),
            steps_per_epoch=max(len(self.load_data().train_loader), 1),
            step_epochs=self.train.step_epochs,
            warmup_epochs=self.train.warmup_epochs,
        )
        if state is not None:
            try:
                optimizer.load_state_dict(state["tensors"]["optimizer"])
            except ValueError as error:  # e.g. a strategy with extra parameters was added or removed
                raise CheckpointError(
                    f"checkpoint {state['path']}: its optimizer state does not fit this config's parameters "
                    f"({error}); use another checkpoint_path to start fresh"
                ) from None
            scheduler.load_state_dict(state["tensors"]["scheduler"])
        return optimizer, scheduler

    def rebuild_optimization(
        self, model: nn.Module, old_optimizer, old_scheduler, extras=(), *, keep_state=False
    ):
        """After pruning, or when the extra parameters change: a fresh optimizer (no momentum for removed
        shapes; ``keep_state`` keeps that of parameters still trained), the schedule where it was."""
        optimizer, scheduler = self.build_optimization(model, None, extras)
        lr = old_scheduler.get_last_lr()[0]  # every group follows the one schedule from train.lr
        state = old_scheduler.state_dict()
        state.update(base_lrs=scheduler.base_lrs, _last_lr=[lr] * len(optimizer.param_groups))
        scheduler.load_state_dict(state)
        for group in optimizer.param_groups:
            group["lr"] = lr
            if keep_state:
                for param in group["params"]:
                    if param in old_optimizer.state:
                        optimizer.state[param] = old_optimizer.state[param]
        return optimizer, scheduler

    # -- checkpoints ----------------------------------------------------------------------
    def save_epoch(self, context, optimizer, scheduler, epoch: int, record: dict, before: ModelStats) -> Path:
        directory = self.checkpoint_root / str(epoch)
        manifest = make_manifest(self.model_name, context.base_kwargs, context.model)
        meta = {
            "format": "torchslim.checkpoint/1",
            "epoch": epoch,
            "model": self.model_name,
            "manifest": manifest,
            "metrics": record,
            "before": before.as_dict(),
            "events": context.events,
        }
        states = {strategy.name: strategy.state_dict() for strategy in self.strategies}
        meta["strategies"], strategy_tensors = _split_states(states)
        tensors = {
            "model": _cpu_state(context.model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": capture_rng_state(),
        }
        if strategy_tensors:
            tensors["strategies"] = strategy_tensors
        # The log line goes first: a kill before the checkpoint lands leaves an extra record that resume drops.
        append_jsonl(self.checkpoint_root / METRICS_FILE, record)
        save_checkpoint(directory, tensors=tensors, meta=meta)
        if self.config.compressor.save_eval_model:
            self.save_eval_model(context, directory / "eval_model", manifest, record)
        return directory

    def save_eval_model(self, context, directory: Path, manifest: dict, record: dict) -> None:
        model = context.model
        extra = {"metrics": record, "preprocess": preprocess_record(self.data_spec, self.input_size())}
        save_model(
            directory,
            model,
            self.model_name,
            context.base_kwargs,
            input_size=self.input_size(),
            manifest=manifest,
            extra=extra,
        )
        if self.config.compressor.save_inference_model:
            export_onnx(_cpu_copy(model), context.example_input.cpu(), directory / "model.onnx")

    def resume(self, context: CompressionContext) -> dict[str, Any] | None:
        """Load the newest complete checkpoint into ``context``; None when starting fresh."""
        if self.checkpoint_root is None:
            return None
        latest = find_latest_checkpoint(
            self.checkpoint_root,
            on_corrupt=lambda path, error: self.log(f"skipping corrupt checkpoint {path}: {error}"),
        )
        if latest is None:
            return None
        tensors, meta = load_checkpoint(latest)
        if meta.get("model") != self.model_name:
            raise CheckpointError(
                f"checkpoint {latest} is of model {meta.get('model')!r}, not {self.model_name!r}; "
                "use another checkpoint_path to start fresh"
            )
        manifest = meta.get("manifest")
        if not isinstance(manifest, dict) or manifest.get("model") != self.model_name:
            # never build (import) a model the checkpoint names but the user did not
            raise CheckpointError(
                f"checkpoint {latest}: its architecture manifest is missing or not of model {self.model_name!r}; "
                "use another checkpoint_path to start fresh"
            )
        try:
            model = build_from_manifest(manifest, trusted=self.model_name)
            check_state_dict(
                model, tensors["model"], f"checkpoint {latest}: weights do not match its manifest"
            )
        except ModelError as error:
            raise CheckpointError(str(error)) from None
        model.load_state_dict(tensors["model"])
        context.model = model.to(self.device)
        restore_rng_state(tensors["rng"])
        for strategy in self.strategies:
            state = meta.get("strategies", {}).get(strategy.name, {})
            strategy.load_state_dict({**state, **tensors.get("strategies", {}).get(strategy.name, {})})
        if self.dist.is_main:
            _truncate_metrics(self.checkpoint_root / METRICS_FILE, meta["epoch"])
            if (
                self.config.compressor.save_eval_model
                and not (latest / "eval_model" / MANIFEST_FILE).is_file()
            ):
                # killed between the checkpoint and its eval model: write it now
                self.save_eval_model(context, latest / "eval_model", manifest, meta.get("metrics", {}))
        self.log(f"resuming from checkpoint {latest} (epoch {meta['epoch']} done)")
        return {"path": str(latest), "tensors": tensors, "meta": meta}


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


def _holds_tensors(value: Any) -> bool:
    if isinstance(value, dict):
        return bool(value) and all(_holds_tensors(v) for v in value.values())
    return isinstance(value, torch.Tensor)


def _split_states(states: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Strategies' states -> (the JSON part for meta.json, the tensor part for the tensor file)."""
    json_part, tensor_part = {}, {}
    for name, state in states.items():
        json_part[name] = {k: v for k, v in state.items() if not _holds_tensors(v)}
        tensors = {k: v for k, v in state.items() if _holds_tensors(v)}
        if tensors:
            tensor_part[name] = tensors
    return json_part, tensor_part


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).cpu().float()


def _truncate_metrics(path: Path, last_epoch: int) -> None:
    """Drop log records of epochs after the checkpoint we resume from (they will be re-run)."""
    if not path.exists():
        return
    records = [r for r in read_jsonl(path) if r.get("epoch", -1) <= last_epoch]
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(_json_line(r) for r in records))
    temporary.replace(path)


def _json_line(record: dict) -> str:
    import json

    return json.dumps(record) + "\n"
