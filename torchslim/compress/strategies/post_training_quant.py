"""PostTrainingQuantStrategy (and the seed's MKLDNNPostTrainingQuantStrategy): int8 at the end of a run.

When the run ends, the final model's fp32 ONNX model (the last epoch's ``eval_model/model.onnx``) is
quantized with ONNX Runtime's static quantization, calibrated on the first N training images; the
int8 model lands beside it as ``model.int8.onnx`` (or in ``int8_model_save_path``) and its agreement
with fp32 on the calibration slice is an event of the run. With ``compressor.save_executorch_model`` the
same calibration images also calibrate ExecuTorch's XNNPACK quantizer (PT2E) for ``model.int8.pte``
beside it; its check and accuracy go into the same record (key ``executorch``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchslim.config import MKLDNNPostTrainingQuantConfig, PostTrainingQuantConfig, quantizer_config
from torchslim.engine.evaluate import evaluate_onnx
from torchslim.errors import ConfigError, DataError
from torchslim.export import OrtModel
from torchslim.export.executorch_export import export_executorch
from torchslim.export.pte import PTE_FILE, PteModel
from torchslim.models import save_model
from torchslim.models.saved import MANIFEST_FILE
from torchslim.quant import PtqOptions, calibration_images
from torchslim.quant.executorch_int8 import INT8_PTE_FILE, quantize_executorch
from torchslim.quant.saved import quantize_model, write_record

from .base import CompressionContext, Strategy, implements


def int8_folder(save_path: str | None, root: Path | None, epochs: int) -> Path:
    """The int8 model's folder: ``int8_model_save_path``, else the last epoch's eval model (or
    ``<checkpoint_path>/eval_model`` when the run has no epochs)."""
    if save_path is not None:
        return Path(save_path)
    last = root / str(epochs - 1) / "eval_model"
    return last if epochs > 0 and (last / MANIFEST_FILE).is_file() else root / "eval_model"


def require_folder(config: Any, root: Path | None, where: str) -> None:
    if config.int8_model_save_path is None and root is None:
        raise ConfigError(
            f"{where}.int8_model_save_path: required when compressor.checkpoint_path is empty "
            "(the int8 model needs a folder)"
        )


def record_int8(context: CompressionContext, path: Path, record: dict) -> dict:
    """``record`` plus the int8 model's top-1/top-5 on the run's validation data (ONNX Runtime),
    written beside it as quantization.json."""
    if context.val_loader is not None:
        result = evaluate_onnx(OrtModel(path), context.val_loader)
        record = {**record, "top1": result.top1, "top5": result.top5, "val_samples": result.samples}
    write_record(path.parent, record)
    return record


def accuracy_text(record: dict) -> str:
    return f"; int8 top-1/top-5 {record['top1']:.2f}/{record['top5']:.2f}" if "top1" in record else ""


def executorch_int8(
    context: CompressionContext, model: Any, images: Any, directory: Path, per_channel: bool
) -> tuple[dict, str]:
    """``directory/model.int8.pte`` calibrated on ``images``: its record (the export check, and its
    top-1/top-5 on the run's validation data) and its summary line."""
    report = quantize_executorch(model, images, directory / INT8_PTE_FILE, per_channel=per_channel)
    record = report.as_dict()
    summary = f"{report.summary_line()} ({INT8_PTE_FILE}"
    if context.val_loader is not None:
        result = evaluate_onnx(PteModel(report.path), context.val_loader)
        record.update(top1=result.top1, top5=result.top5, val_samples=result.samples)
        summary += f", top-1/top-5 {result.top1:.2f}/{result.top5:.2f}"
    return record, summary + ")"


def ptq_options(quantizer: Any) -> PtqOptions:
    return PtqOptions(
        calibrate_method=quantizer.calibrate_method,
        calibration_images=quantizer.calibration_images,
        per_channel=quantizer.per_channel,
        activation_type=quantizer.activation_type,
        percentile=quantizer.percentile,
        preprocess=quantizer.preprocess,
    )


@implements(PostTrainingQuantConfig)
class PostTrainingQuantStrategy(Strategy):
    def __init__(self, name: str, config: Any, slim_config: Any) -> None:
        super().__init__(name, config, slim_config)
        self.options = ptq_options(quantizer_config(slim_config, config.quantizer))
        root = slim_config.compressor.checkpoint_path
        self.root = Path(root) if root else None
        self.epochs = slim_config.compressor.epoch
        self.data_key = "train.data"
        self.executorch = slim_config.compressor.save_executorch_model
        require_folder(config, self.root, f"{slim_config.source}: strategies.{name}")

    def destination(self) -> Path:
        return int8_folder(self.config.int8_model_save_path, self.root, self.epochs)

    def on_compression_end(self, context: CompressionContext) -> None:
        if not context.is_main_process:
            return
        loader = context.train_loader
        if loader is None or len(loader.dataset) == 0:
            raise DataError(
                f"strategies.{self.name}: no calibration data; set {self.data_key} (its training images "
                "calibrate the int8 activations)"
            )
        images = calibration_images(loader.dataset, self.options.calibration_images, source=self.data_key)
        model, directory = self.model_and_folder(context)
        report = quantize_model(model, context.example_input.shape[-1], directory, images, self.options)
        record, executorch_summary = {"method": "ptq", **report.as_dict()}, ""
        (directory / INT8_PTE_FILE).unlink(missing_ok=True)  # never left from an earlier model
        if self.executorch:
            record["executorch"], summary = executorch_int8(
                context, model, images, directory, self.options.per_channel
            )
            executorch_summary = f"; {summary}"
        record = record_int8(context, Path(report.path), record)
        context.events.append(
            {
                "strategy": self.name,
                "epoch": context.epoch,
                "event": "post_training_quantization",
                "int8": record,
                "int8_summary": report.summary_line() + accuracy_text(record) + executorch_summary,
            }
        )

    def model_and_folder(self, context: CompressionContext):
        """The model to quantize and the folder its fp32/int8 ONNX models go to. Only the last epoch's
        eval model is the run's final model as it is; any other folder gets that model saved afresh
        (manifest, weights, a new model.onnx and, with save_executorch_model, model.pte), so nothing stale
        is quantized and eval/infer read it."""
        directory = self.destination()
        last_eval = self.root is not None and directory == self.root / str(self.epochs - 1) / "eval_model"
        if not (last_eval and (directory / MANIFEST_FILE).is_file()):
            size = context.example_input.shape[-1]
            save_model(directory, context.model, context.base_name, context.base_kwargs, input_size=size)
            (directory / "model.onnx").unlink(missing_ok=True)  # exported again from this model
            (directory / PTE_FILE).unlink(missing_ok=True)
            if self.executorch:
                export_executorch(context.model, context.example_input[:1].cpu(), directory / PTE_FILE)
        return context.model, directory


@implements(MKLDNNPostTrainingQuantConfig)
class MKLDNNPostTrainingQuantStrategy(PostTrainingQuantStrategy):
    """The seed's class name; the same ONNX Runtime quantization."""
