"""Architecture as data: a pruned model is a fresh base model plus the new sizes of its layers.

A manifest is plain JSON: how to build the base model (name and keyword
arguments) and, for every module whose size changed, its size attributes and the
shapes of its parameters and buffers. Rebuilding applies those to a fresh base
model, so loading a pruned model never needs to unpickle a module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import VisionTransformer
from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
from torchvision.models.swin_transformer import ShiftedWindowAttention

from torchslim.errors import ModelError
from torchslim.nn.attention import uses_pruned_forward

from .zoo import build_model, canonical_name, is_user_factory

FORMAT = "torchslim.manifest/1"

# Module attributes that hold channel counts, per module type (checked with isinstance).
SIZE_ATTRIBUTES: tuple[tuple[type, tuple[str, ...]], ...] = (
    (nn.modules.conv._ConvNd, ("in_channels", "out_channels", "groups")),
    (nn.modules.batchnorm._NormBase, ("num_features",)),
    (nn.Linear, ("in_features", "out_features")),
    (nn.LayerNorm, ("normalized_shape",)),
    (nn.GroupNorm, ("num_groups", "num_channels")),
    (nn.PReLU, ("num_parameters",)),
    (nn.MultiheadAttention, ("embed_dim", "kdim", "vdim", "num_heads", "head_dim")),
    (VisionTransformer, ("hidden_dim",)),
    (ShiftedWindowAttention, ("num_heads",)),
    (RelativePositionalMultiHeadAttention, ("n_heads",)),
)


# The same for types of optional packages, by qualified type name (timm's attention).
NAMED_SIZE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "timm.layers.attention.Attention": ("num_heads", "attn_dim"),
}


def size_attributes(module: nn.Module) -> dict[str, Any]:
    for kind, names in SIZE_ATTRIBUTES:
        if isinstance(module, kind):
            return {name: _jsonable(getattr(module, name)) for name in names}
    names = NAMED_SIZE_ATTRIBUTES.get(f"{type(module).__module__}.{type(module).__name__}", ())
    return {name: _jsonable(getattr(module, name)) for name in names}


def module_record(module: nn.Module) -> dict[str, Any]:
    """Size attributes and direct tensor shapes of one module."""
    tensors = {name: list(t.shape) for name, t in module.named_parameters(recurse=False)}
    tensors.update({name: list(t.shape) for name, t in module.named_buffers(recurse=False) if t is not None})
    return {"attrs": size_attributes(module), "tensors": tensors}


def make_manifest(
    base_name: str, base_kwargs: dict[str, Any], model: nn.Module, reference: nn.Module | None = None
) -> dict[str, Any]:
    """Describe ``model`` as ``base_name(**base_kwargs)`` plus the modules that differ in size.

    ``reference`` is a freshly built base model; it is built here when not given.
    """
    if reference is None:
        with torch.random.fork_rng(devices=[]):  # building the reference must not move a seeded run's RNG
            reference = build_model(base_name, **base_kwargs)
    reference_modules = dict(reference.named_modules())
    changed: dict[str, Any] = {}
    for name, module in model.named_modules():
        record = module_record(module)
        base = reference_modules.get(name)
        if base is None:
            raise ModelError(
                f"module {name!r} is not in a fresh {base_name}; cannot describe it as a manifest"
            )
        if record != module_record(base):
            changed[name] = record
    return {"format": FORMAT, "model": canonical_name(base_name), "kwargs": base_kwargs, "modules": changed}


def apply_manifest_sizes(model: nn.Module, modules: dict[str, Any]) -> nn.Module:
    """Resize the named modules of ``model`` in place (tensors left uninitialised)."""
    named = dict(model.named_modules())
    for name, record in modules.items():
        module = named.get(name)
        if module is None:
            raise ModelError(f"manifest names module {name!r}, which the base model does not have")
        for attr, value in record.get("attrs", {}).items():
            setattr(module, attr, tuple(value) if isinstance(value, list) else value)
        for tensor_name, shape in record.get("tensors", {}).items():
            old = getattr(module, tensor_name, None)
            if not isinstance(old, torch.Tensor):
                raise ModelError(f"manifest names tensor {name}.{tensor_name}, which does not exist")
            new = torch.empty(shape, dtype=old.dtype, device=old.device)
            if isinstance(old, nn.Parameter):
                setattr(module, tensor_name, nn.Parameter(new, requires_grad=old.requires_grad))
            else:
                module._buffers[tensor_name] = new
    for name, module in named.items():  # a resized attention layer needs the forward that reads its widths
        if any(changed == name or changed.startswith(f"{name}.") for changed in modules):
            uses_pruned_forward(module)
    return model


def build_from_manifest(manifest: dict[str, Any], trusted: str | None = None) -> nn.Module:
    """Rebuild the architecture. A manifest naming user code (``file.py:factory``) is only
    followed when the caller names the same factory in ``trusted``: a downloaded model
    directory must never make us import code."""
    if manifest.get("format") != FORMAT:
        raise ModelError(f"not a torchslim manifest (format {manifest.get('format')!r}, expected {FORMAT!r})")
    name = manifest.get("model")
    if not isinstance(name, str):
        raise ModelError("manifest has no model name")
    if is_user_factory(name) and name != trusted:
        raise ModelError(
            f"the manifest names user code {name!r}; pass --model {name} (the Python API: trusted=...) "
            "to confirm you trust it"
        )
    model = build_model(name, **manifest.get("kwargs", {}))
    return apply_manifest_sizes(model, manifest.get("modules", {}))


def save_manifest(manifest: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def load_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"no manifest at {path}") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ModelError(f"cannot read manifest {path}: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelError(f"{path} is not a torchslim manifest")
    return manifest


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
