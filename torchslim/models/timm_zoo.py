"""timm's models as ``timm:<name>``: random init (no download ever), timm's config for the defaults.

timm is an optional extra (``pip install torchslim[timm]``); it is imported on first use. A weights
file is read as a state dict; its classifier shape gives ``num_classes``, and a ``config.json`` beside
it (timm's hub layout) gives the input size it was trained at.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from torchslim.errors import ModelError

from .spec import ModelSpec, Namespace, WeightsConfig

PREFIX = "timm:"
INSTALL_HINT = "pip install torchslim[timm]"
CONFIG_FILE = "config.json"  # timm's pretrained config, beside the weights in its hub layout


def timm_module() -> ModuleType:
    """timm itself, or a one-line ModelError saying how to get it."""
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise ModelError(f"timm models need timm, which is not installed: {INSTALL_HINT}") from None


def timm_names(pattern: str | None = None) -> list[str]:
    """Registered timm architectures matching a shell-style ``pattern`` (a bare word: containing it)."""
    names = timm_module().list_models()
    if not pattern:
        return names
    if not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    return [n for n in names if fnmatch.fnmatch(n, pattern.lower())]


def pretrained_cfg(name: str) -> dict[str, Any]:
    """timm's default config for ``name`` (``arch`` or ``arch.tag``): input size, classes, head name."""
    timm = timm_module()
    architecture, tag = timm.models.split_model_name_tag(name)
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=3, cutoff=0.7)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(
            f"unknown timm model {architecture!r}{hint} (list them: torchslim models --timm PATTERN)"
        )
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # timm's error for a tag the architecture does not have
        tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{architecture}.*")]
        raise ModelError(
            f"timm model {architecture!r} has no tag {tag!r} (tags: {', '.join(tags) or 'none'})"
        ) from None
    return cfg.to_dict() if cfg is not None else {}


def resolve_timm(name: str) -> ModelSpec:
    cfg = pretrained_cfg(name)
    size = cfg.get("input_size") or (3, 224, 224)
    return ModelSpec(
        PREFIX + name,
        functools.partial(_create, name),
        input_size=int(size[-1]),
        description=f"timm {name}",
        weights_config=functools.partial(weights_config, cfg),
    )


def _create(name: str, **kwargs: Any) -> nn.Module:
    return timm_module().create_model(name, pretrained=False, **kwargs)


def weights_config(cfg: dict[str, Any], path: Path, state: dict[str, torch.Tensor]) -> WeightsConfig:
    """``num_classes`` from the classifier in ``state``; input size (and classes, if the head is absent)
    from the ``config.json`` beside the file."""
    saved = _read_config(Path(path).with_name(CONFIG_FILE))
    kwargs: dict[str, Any] = {}
    classes = _classifier_outputs(cfg, state)
    if classes is None:
        classes = saved.get("num_classes")
    if isinstance(classes, int):
        kwargs["num_classes"] = classes
    size = (saved.get("pretrained_cfg") or {}).get("input_size")
    return WeightsConfig(kwargs, int(size[-1]) if isinstance(size, (list, tuple)) and size else None)


def _classifier_outputs(cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> int | None:
    heads = cfg.get("classifier")
    for head in (heads,) if isinstance(heads, str) else tuple(heads or ()):
        weight = state.get(f"{head}.weight")
        if weight is not None and weight.dim() >= 2:
            return int(weight.shape[0])
    return None


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelError(f"cannot read timm config {path}: {error}") from None
    return config if isinstance(config, dict) else {}


TIMM = Namespace(PREFIX, resolve_timm, timm_names, description=f"timm's models ({INSTALL_HINT})")
