"""What a compression run writes each epoch, and resuming from it.

``<root>/<epoch>/`` holds the training state (written atomically), ``<epoch>/eval_model/`` the model
(manifest + weights), ``<epoch>/eval_model/model.onnx`` and, with ``save_executorch_model``, the
ExecuTorch program ``model.pte`` (batch 1, checked against PyTorch); ``<root>/metrics.jsonl`` one line
per epoch. A restarted run resumes from the newest complete checkpoint; the config is not part of it,
so edits to the config apply on restart (as in the seed).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchslim.compress.strategies import CompressionContext, Strategy
from torchslim.compress.summary import ModelStats
from torchslim.config import CompressorConfig
from torchslim.engine import (
    append_jsonl,
    capture_rng_state,
    find_latest_checkpoint,
    load_checkpoint,
    read_jsonl,
    restore_rng_state,
    save_checkpoint,
)
from torchslim.errors import CheckpointError, ModelError
from torchslim.export import export_onnx
from torchslim.export.executorch_export import export_executorch
from torchslim.export.pte import PTE_FILE
from torchslim.models import build_from_manifest, check_state_dict, make_manifest, save_model
from torchslim.models.saved import MANIFEST_FILE
from torchslim.quant.qat import float_model_of

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FORMAT = "torchslim.checkpoint/1"


@dataclass
class RunFiles:
    """The checkpoints, eval models and metrics log of one run under ``root``."""

    root: Path
    model_name: str
    compressor: CompressorConfig
    input_size: int
    preprocess: dict[str, Any]
    device: torch.device
    is_main: bool
    log: Callable[[str], None]

    # -- writing ----------------------------------------------------------------------------
    def save_epoch(
        self,
        context: CompressionContext,
        strategies: list[Strategy],
        optimizer,
        scheduler,
        epoch: int,
        record: dict,
        before: ModelStats,
    ) -> Path:
        """Append the epoch's metrics, then write its checkpoint and eval model."""
        directory = self.root / str(epoch)
        model = float_model_of(context.model)  # under QAT: the float weights; the strategy keeps the rest
        manifest = make_manifest(self.model_name, context.base_kwargs, model)
        meta = {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "model": self.model_name,
            "manifest": manifest,
            "metrics": record,
            "before": before.as_dict(),
            "events": context.events,
        }
        meta["strategies"], strategy_tensors = _split_states({s.name: s.state_dict() for s in strategies})
        tensors = {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": capture_rng_state(),
        }
        if strategy_tensors:
            tensors["strategies"] = strategy_tensors
        # The log line goes first: a kill before the checkpoint lands leaves a record that resume drops.
        append_jsonl(self.root / METRICS_FILE, record)
        save_checkpoint(directory, tensors=tensors, meta=meta)
        if self.compressor.save_eval_model:
            self.save_eval_model(context, directory / "eval_model", manifest, record)
        return directory

    def save_eval_model(
        self, context: CompressionContext, directory: Path, manifest: dict, record: dict
    ) -> None:
        extra = {"metrics": record, "preprocess": self.preprocess}
        model = float_model_of(context.model)
        save_model(
            directory,
            model,
            self.model_name,
            context.base_kwargs,
            input_size=self.input_size,
            manifest=manifest,
            extra=extra,
        )
        example = context.example_input[:1].cpu()
        if self.compressor.save_inference_model:
            export_onnx(copy.deepcopy(model).cpu().float(), example, directory / "model.onnx")
        if self.compressor.save_executorch_model:
            with torch.random.fork_rng(devices=[]):  # the run's random stream stays as without the switch
                export_executorch(model, example, directory / PTE_FILE)
        else:  # a program a killed run left here is of other weights
            (directory / PTE_FILE).unlink(missing_ok=True)

    # -- resuming ---------------------------------------------------------------------------
    def resume(self, context: CompressionContext, strategies: list[Strategy]) -> dict[str, Any] | None:
        """Load the newest complete checkpoint into ``context`` and the strategies; None to start fresh."""
        latest = find_latest_checkpoint(
            self.root, on_corrupt=lambda path, error: self.log(f"skipping corrupt checkpoint {path}: {error}")
        )
        if latest is None:
            return None
        tensors, meta = load_checkpoint(latest)
        context.model = self._model(latest, tensors, meta).to(self.device)
        restore_rng_state(tensors["rng"])
        for strategy in strategies:
            state = meta.get("strategies", {}).get(strategy.name, {})
            strategy.load_state_dict({**state, **tensors.get("strategies", {}).get(strategy.name, {})})
        if self.is_main:
            _truncate_metrics(self.root / METRICS_FILE, meta["epoch"])
            if self.compressor.save_eval_model and not (latest / "eval_model" / MANIFEST_FILE).is_file():
                # killed between the checkpoint and its eval model: write it now
                self.save_eval_model(
                    context, latest / "eval_model", meta["manifest"], meta.get("metrics", {})
                )
        self.log(f"resuming from checkpoint {latest} (epoch {meta['epoch']} done)")
        return {"path": str(latest), "tensors": tensors, "meta": meta}

    def _model(self, latest: Path, tensors: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
        """The checkpoint's model, built from its manifest only when it is of the model the config names."""
        if meta.get("model") != self.model_name:
            raise CheckpointError(
                f"checkpoint {latest} is of model {meta.get('model')!r}, not {self.model_name!r}; "
                "use another checkpoint_path to start fresh"
            )
        manifest = meta.get("manifest")
        if not isinstance(manifest, dict) or manifest.get("model") != self.model_name:
            # never build (import) a model the checkpoint names but the user did not
            raise CheckpointError(
                f"checkpoint {latest}: its architecture manifest is missing or not of model "
                f"{self.model_name!r}; use another checkpoint_path to start fresh"
            )
        try:
            model = build_from_manifest(manifest, trusted=self.model_name)
            check_state_dict(
                model, tensors["model"], f"checkpoint {latest}: weights do not match its manifest"
            )
        except ModelError as error:
            raise CheckpointError(str(error)) from None
        model.load_state_dict(tensors["model"])
        return model


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


def _truncate_metrics(path: Path, last_epoch: int) -> None:
    """Drop log records of epochs after the checkpoint we resume from (they will be re-run)."""
    if not path.exists():
        return
    records = [r for r in read_jsonl(path) if r.get("epoch", -1) <= last_epoch]
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(json.dumps(r) + "\n" for r in records))
    temporary.replace(path)
