"""A saved model directory: ``manifest.json`` (architecture) + ``model.safetensors`` (weights).

Written to a temporary directory and renamed, so a kill never leaves half a model.
Loading rebuilds the architecture from a fresh base model and reads tensors only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from torchslim.errors import ModelError

from .manifest import apply_manifest_sizes, build_from_manifest, load_manifest, make_manifest, save_manifest
from .pretrained import check_state_dict

MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "model.safetensors"


def save_model(
    directory: str | Path,
    model: nn.Module,
    base_name: str,
    base_kwargs: dict[str, Any],
    *,
    input_size: int,
    extra: dict[str, Any] | None = None,
    manifest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Save ``model`` (maybe a pruned ``base_name(**base_kwargs)``) in ``directory``; return its manifest."""
    directory = Path(directory)
    if manifest is None:
        manifest = make_manifest(base_name, base_kwargs, model)
    manifest = {**manifest, "input_size": input_size, **(extra or {})}
    temporary = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(temporary / WEIGHTS_FILE))
    save_manifest(manifest, temporary / MANIFEST_FILE)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(temporary, directory)
    return manifest


def load_model(
    directory: str | Path, model: nn.Module | None = None, trusted: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved model. ``model``: a fresh instance of a user's own base model (Python API);
    ``trusted``: the user factory the manifest may name (see :func:`build_from_manifest`)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"model directory {directory} does not exist")
    manifest = load_manifest(directory / MANIFEST_FILE)
    if model is not None:
        apply_manifest_sizes(model, manifest.get("modules", {}))
    else:
        model = build_from_manifest(manifest, trusted)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(f"{directory} has no {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights))
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise ModelError(f"cannot read {weights}: {error}") from None
    check_state_dict(model, state, str(weights))
    model.load_state_dict(state)
    return model.eval(), manifest
