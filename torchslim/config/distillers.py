"""The ``distillers`` config section: SoftLabelDistiller and its keys."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torchslim.config.classes import class_names, yaml_class
from torchslim.config.messages import Context, config_context, did_you_mean, short_repr
from torchslim.config.validation import as_float, as_path_or_none, as_str, build, interval, list_of, spec
from torchslim.registry import Registry

DISTILLER_CONFIGS: Registry[type] = Registry("distiller class")

_FEATURE_MAP_HINT = (
    "name the layers in 'feature_maps' (module names, the same in teacher and pruned student, "
    "e.g. ['features.7']); PaddleSlim's variable names do not carry over"
)


def _names(ctx: Context, path: tuple, value: Any) -> list[str]:
    """A list of module names; one name or null also do."""
    return [] if value is None else list_of(as_str, allow_scalar=True)(ctx, path, value)


@yaml_class(DISTILLER_CONFIGS, "SoftLabelDistiller")
@dataclass(kw_only=True)
class SoftLabelDistillerConfig:
    """``class: SoftLabelDistiller`` - match the teacher's softened class distribution."""

    class_name: ClassVar[str]
    key_hints: ClassVar[dict[str, str]] = {
        "teacher_temperature": "torchslim uses one 'temperature' for teacher and student",
        "student_temperature": "torchslim uses one 'temperature' for teacher and student",
        "distillation_loss_weight": (
            "use 'alpha' (weight of the soft-label loss; 1 - alpha weights the labels)"
        ),
        "teacher_feature_map": _FEATURE_MAP_HINT,
        "student_feature_map": _FEATURE_MAP_HINT,
    }

    name: str = ""
    temperature: float = spec(as_float, 4.0, check=interval(0, lo_open=True), doc="softmax temperature T")
    alpha: float = spec(as_float, 0.5, check=interval(0, 1), doc="weight of the soft-label (KL) loss")
    teacher: str | None = spec(
        as_path_or_none,
        None,
        doc="null: the model before pruning; else a weights file or saved model directory",
    )
    feature_maps: list[str] = spec(
        _names, factory=list, doc="modules whose outputs the student learns to match"
    )
    feature_weight: float = spec(as_float, 1.0, check=interval(0), doc="weight of the feature-map loss")

    def validate(self, ctx: Context, path: tuple) -> None:
        for index, name in enumerate(self.feature_maps):
            if name in self.feature_maps[:index]:
                raise ctx.error((*path, "feature_maps", index), f"{name!r} is listed twice")


CLASS_HINTS = {"L2Distiller": "; L2 feature-map distillation is SoftLabelDistiller's 'feature_maps' key"}


def distiller_config(slim_config: Any, name: str) -> SoftLabelDistillerConfig:
    """Validate the raw ``distillers.<name>`` entry; errors name the key and the file (and line)."""
    ctx = config_context(slim_config)
    path = ("distillers", name)
    entry = slim_config.distillers[name]
    class_name = entry.get("class")
    if not isinstance(class_name, str) or class_name not in DISTILLER_CONFIGS:
        known = class_names(DISTILLER_CONFIGS)
        raise ctx.error(
            (*path, "class"),
            f"distiller class {short_repr(class_name)} is not supported{did_you_mean(class_name, known)}"
            f" (supported distillers: {', '.join(known)}){CLASS_HINTS.get(class_name, '')}",
        )
    cls = DISTILLER_CONFIGS.get(class_name)
    config = build(cls, ctx, path, entry, ignore=("class",), name=name)
    if config.teacher is not None and not Path(config.teacher).exists():
        raise ctx.error((*path, "teacher"), f"no such file or directory: {config.teacher}")
    return config
