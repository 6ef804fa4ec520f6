"""QuantizationStrategy: quantization-aware training from ``start_epoch`` to the end of the run.

At ``start_epoch`` the (maybe pruned) model's batch norms are folded and it is replaced by its
fake-quantized PT2E graph (:class:`torchslim.quant.qat.QatModel`), which the remaining epochs train.
Checkpoints hold the float weights (the saved model keeps its format) plus this strategy's observer
state, so a resumed run rebuilds the same graph with the same ranges. When the run ends, the int8
graph is exported as a QDQ ONNX model (``model.int8.onnx`` beside the last eval model's
``model.onnx``, or in ``int8_model_save_path``) and checked in ONNX Runtime against the QAT model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchslim.config import PruneStrategyConfig, QuantizationConfig
from torchslim.errors import ConfigError
from torchslim.export import OrtModel
from torchslim.models import save_model
from torchslim.nn import eval_mode
from torchslim.quant import INT8_FILE, calibration_images
from torchslim.quant.graph_facts import fp32_fallbacks
from torchslim.quant.ptq import describe_fallbacks_dicts
from torchslim.quant.qat import QatModel, export_int8, prepare_qat, require_torchao

from .base import CompressionContext, Strategy, implements
from .post_training_quant import accuracy_text, int8_folder, record_int8, require_folder

CHECK_IMAGES = 64


def _check_schedule(name: str, config: Any, slim_config: Any) -> None:
    where = f"{slim_config.source}: strategies.{name}"
    epochs = slim_config.compressor.epoch
    if config.start_epoch >= epochs:
        raise ConfigError(
            f"{where}.start_epoch: must be < compressor.epoch ({epochs}), got {config.start_epoch}"
        )
    if config.end_epoch is not None and config.end_epoch != epochs - 1:
        raise ConfigError(
            f"{where}.end_epoch: quantization-aware training runs to the end of the run; "
            f"use null or {epochs - 1} (compressor.epoch - 1), got {config.end_epoch}"
        )
    for other in slim_config.active_strategies():
        if (
            isinstance(other, PruneStrategyConfig)
            and (other.end_epoch or other.start_epoch) > config.start_epoch
        ):
            raise ConfigError(
                f"{where}.start_epoch: strategy {other.name} prunes at epoch "
                f"{other.end_epoch or other.start_epoch}, after QAT starts ({config.start_epoch}); "
                "prune first, then quantize"
            )


@implements(QuantizationConfig)
class QuantizationStrategy(Strategy):
    def __init__(self, name: str, config: Any, slim_config: Any) -> None:
        super().__init__(name, config, slim_config)
        _check_schedule(name, config, slim_config)
        root = slim_config.compressor.checkpoint_path
        self.root = Path(root) if root else None
        self.epochs = slim_config.compressor.epoch
        require_folder(config, self.root, f"{slim_config.source}: strategies.{name}")
        require_torchao()
        self.per_channel = config.weight_quantize_type == "channel_wise_abs_max"
        self.qat: QatModel | None = None
        self.restored: dict[str, torch.Tensor] | None = None

    def _enter(self, context: CompressionContext, record: bool) -> None:
        """Replace the float model with its fake-quantized graph (with the restored ranges on resume)."""
        example = context.example_input.repeat(2, 1, 1, 1)
        self.qat = prepare_qat(context.model, example, per_channel=self.per_channel).to(context.device)
        if self.restored is not None:
            self.qat.load_observer_state(self.restored)
            self.restored = None
        context.model, context.model_changed = self.qat, True
        if record:
            context.events.append(
                {
                    "strategy": self.name,
                    "epoch": context.epoch,
                    "event": "quantization_aware_training",
                    "folded_batch_norms": len(self.qat.pairs),
                    "weights": "per channel" if self.per_channel else "per tensor",
                }
            )

    def on_resume(self, context: CompressionContext) -> None:
        if context.epoch >= self.config.start_epoch:  # the checkpoint was written during QAT
            self._enter(context, record=False)
            context.model_changed = False  # the optimizer is built next, from the checkpoint, for this model

    def on_epoch_begin(self, context: CompressionContext) -> None:
        if context.epoch >= self.config.start_epoch and self.qat is None:
            self._enter(context, record=True)

    def on_compression_end(self, context: CompressionContext) -> None:
        if self.qat is None:
            return
        if context.is_main_process:
            self._export(context)
        context.model = self.qat.float_model()

    def _export(self, context: CompressionContext) -> None:
        size = context.example_input.shape[-1]
        directory = int8_folder(self.config.int8_model_save_path, self.root, self.epochs)
        path = export_int8(self.qat, size, directory / INT8_FILE)
        agreement, diff = self._agreement(context, path)
        if self.config.float_model_save_path:
            model = self.qat.float_model()
            save_model(
                self.config.float_model_save_path,
                model,
                context.base_name,
                context.base_kwargs,
                input_size=size,
            )
        fallbacks = [{"node": f.node, "op_type": f.op_type} for f in fp32_fallbacks(path)]
        summary = (
            f"int8 (QAT, {'per-channel' if self.per_channel else 'per-tensor'} weights): top-1 agreement of "
            f"ONNX Runtime with the QAT model {100 * agreement:.1f}%, max logit diff {diff:.4f}; "
            f"ops left fp32: {describe_fallbacks_dicts(fallbacks)}"
        )
        record = {"method": "qat", "path": str(path), "top1_agreement": agreement, "max_logit_diff": diff}
        record["fallback_ops"] = fallbacks
        record = record_int8(context, path, {**record, "int8_bytes": path.stat().st_size})
        context.events.append(
            {
                "strategy": self.name,
                "epoch": context.epoch,
                "event": "qat_int8_export",
                "int8": record,
                "int8_summary": summary + accuracy_text(record),
            }
        )

    def _agreement(self, context: CompressionContext, path: Path) -> tuple[float, float]:
        """Top-1 agreement and max logit difference of the ORT int8 model and the fake-quantized graph
        on the first training images."""
        images = calibration_images(context.train_loader.dataset, CHECK_IMAGES, source="train.data")
        with eval_mode(self.qat), torch.no_grad():
            expected = self.qat(torch.from_numpy(images).to(context.device)).cpu().numpy()
        got = OrtModel(path)(images)
        return float(np.mean(got.argmax(1) == expected.argmax(1))), float(np.max(np.abs(got - expected)))

    def state_dict(self) -> dict[str, Any]:
        return {"observers": self.qat.observer_state()} if self.qat is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.restored = state.get("observers")
