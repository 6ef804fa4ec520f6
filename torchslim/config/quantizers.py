"""Quantization in the seed's schema: the ``quantizers`` section and the three quantization strategies.

``PostTrainingQuantStrategy`` (and the seed's ``MKLDNNPostTrainingQuantStrategy``) quantize the
final model with ONNX Runtime's static quantization, configured by a ``quantizers`` entry of class
``PostTrainingQuantizer``; ``QuantizationStrategy`` is quantization-aware training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torchslim.config.classes import STRATEGY_CONFIGS, StrategyConfig, class_names, yaml_class
from torchslim.config.messages import Context, KeyPath, config_context, did_you_mean, short_repr
from torchslim.config.validation import (
    POSITIVE_INT,
    as_bool,
    as_float,
    as_int,
    as_path_or_none,
    as_str,
    build,
    choice,
    interval,
    optional,
    plain,
    spec,
)
from torchslim.registry import Registry

QUANTIZER_CONFIGS: Registry[type] = Registry("quantizer class")
CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
SUPPORTED_BITS = (8,)
WEIGHT_QUANTIZE_TYPES = ("channel_wise_abs_max", "abs_max")
ACTIVATION_QUANTIZE_TYPES = ("moving_average_abs_max",)


@yaml_class(QUANTIZER_CONFIGS, "PostTrainingQuantizer")
@dataclass(kw_only=True)
class PostTrainingQuantizerConfig:
    """``class: PostTrainingQuantizer`` - ONNX Runtime static int8 quantization (QDQ)."""

    class_name: ClassVar[str]

    name: str = ""
    calibrate_method: str = spec(choice(CALIBRATE_METHODS, "calibrate_method"), "minmax")
    calibration_images: int = spec(
        as_int, 256, check=POSITIVE_INT, doc="the first N training images calibrate the activations"
    )
    per_channel: bool = spec(as_bool, True, doc="one int8 scale per output channel of each weight")
    activation_type: str = spec(choice(("int8", "uint8"), "activation_type"), "uint8")
    percentile: float = spec(
        as_float, 99.999, check=interval(50, 100, lo_open=True), doc="calibrate_method: percentile only"
    )
    preprocess: bool = spec(as_bool, True, doc="ORT's quant_pre_process before calibration")


def _bits(ctx: Context, path: KeyPath, value: Any) -> int:
    bits = as_int(ctx, path, value)
    if bits not in SUPPORTED_BITS:
        raise ctx.error(path, f"only 8 bits are supported (ONNX Runtime's int8 kernels), got {bits}")
    return bits


@yaml_class(STRATEGY_CONFIGS, "PostTrainingQuantStrategy")
@dataclass(kw_only=True)
class PostTrainingQuantConfig(StrategyConfig):
    """``class: PostTrainingQuantStrategy`` - at the end of the run, int8 ONNX model beside the fp32 one."""

    references: ClassVar[tuple[tuple[str, str], ...]] = (("quantizer", "quantizers"),)
    key_hints: ClassVar[dict[str, str]] = {
        "fp32_model_path": "name the saved model in compressor.init_model (with compressor.epoch: 0 "
        "it is quantized as it is)"
    }

    quantizer: str | None = spec(optional(as_str), None, doc="a quantizers entry; null: its defaults")
    int8_model_save_path: str | None = spec(
        as_path_or_none, None, doc="folder for the int8 model; null: the last epoch's eval_model/"
    )
    cpu_math_library_num_threads: int | None = spec(
        optional(as_int), None, check=POSITIVE_INT, doc="ORT threads of the int8 check; null: one per core"
    )


@yaml_class(STRATEGY_CONFIGS, "MKLDNNPostTrainingQuantStrategy")
@dataclass(kw_only=True)
class MKLDNNPostTrainingQuantConfig(PostTrainingQuantConfig):
    """The seed's name for post-training quantization; torchslim runs it with ONNX Runtime."""


@yaml_class(STRATEGY_CONFIGS, "QuantizationStrategy")
@dataclass(kw_only=True)
class QuantizationConfig(StrategyConfig):
    """``class: QuantizationStrategy`` - quantization-aware training from ``start_epoch`` to the end."""

    weight_bits: int = spec(_bits, 8)
    activation_bits: int = spec(_bits, 8)
    weight_quantize_type: str = spec(
        choice(WEIGHT_QUANTIZE_TYPES, "weight_quantize_type"),
        "channel_wise_abs_max",
        doc="channel_wise_abs_max: one scale per output channel; abs_max: one per tensor",
    )
    activation_quantize_type: str = spec(
        choice(ACTIVATION_QUANTIZE_TYPES, "activation_quantize_type"), "moving_average_abs_max"
    )
    float_model_save_path: str | None = spec(as_path_or_none, None, doc="saved float model (QAT weights)")
    int8_model_save_path: str | None = spec(as_path_or_none, None, doc="folder for model.int8.onnx")
    mobile_model_save_path: str | None = spec(
        as_path_or_none, None, doc="accepted; the int8 ONNX model is the deployable one"
    )
    save_in_nodes: Any = spec(plain, None, doc="seed key, kept raw (the ONNX model has one input)")
    save_out_nodes: Any = spec(plain, None, doc="seed key, kept raw")


def quantizer_config(slim_config: Any, name: str | None) -> PostTrainingQuantizerConfig:
    """The validated ``quantizers.<name>`` entry (its defaults when ``name`` is None)."""
    if name is None:
        return PostTrainingQuantizerConfig()
    ctx = config_context(slim_config)
    path = ("quantizers", name)
    entry = slim_config.quantizers[name]
    class_name = entry.get("class")
    if not isinstance(class_name, str) or class_name not in QUANTIZER_CONFIGS:
        known = class_names(QUANTIZER_CONFIGS)
        raise ctx.error(
            (*path, "class"),
            f"quantizer class {short_repr(class_name)} is not supported{did_you_mean(class_name, known)}"
            f" (supported quantizers: {', '.join(known)})",
        )
    return build(QUANTIZER_CONFIGS.get(class_name), ctx, path, entry, ignore=("class",), name=name)
