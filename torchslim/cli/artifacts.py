"""Finding the eval model or inference model a ``--model-path`` points at."""

from __future__ import annotations

from pathlib import Path

from torchslim.engine import list_checkpoints
from torchslim.errors import ConfigError, ModelError
from torchslim.export import OrtModel
from torchslim.export.pte import PTE_FILE, PteModel
from torchslim.models import load_manifest
from torchslim.models.saved import MANIFEST_FILE

ONNX_FILE = "model.onnx"
# The inference model each runtime runs, by file suffix and by name inside a model directory.
RUNTIME_FILES = {"onnxruntime": (".onnx", ONNX_FILE), "executorch": (".pte", PTE_FILE)}


def eval_model_dir(path: str | Path) -> Path:
    """A saved-model directory from itself, a checkpoint epoch directory, or a checkpoint root (its newest
    epoch)."""
    path = Path(path)
    if (path / MANIFEST_FILE).is_file():
        return path
    if (path / "eval_model" / MANIFEST_FILE).is_file():
        return path / "eval_model"
    epochs = list_checkpoints(path) if path.is_dir() else []
    for epoch_dir in reversed(epochs):
        if (epoch_dir / "eval_model" / MANIFEST_FILE).is_file():
            return epoch_dir / "eval_model"
    raise ModelError(
        f"{path} holds no torchslim model (expected {MANIFEST_FILE}, eval_model/ or epoch directories)"
    )


def runtime_of(path: str | Path, runtime: str | None, default: str = "onnxruntime") -> str:
    """The runtime for ``path``: the one its suffix says (``.onnx``, ``.pte``), else ``runtime``, else
    ``default``; a file of one runtime asked to run on another is a ConfigError."""
    suffix = Path(path).suffix
    by_suffix = next((name for name, (ending, _) in RUNTIME_FILES.items() if suffix == ending), None)
    if by_suffix and runtime and runtime != by_suffix:
        raise ConfigError(
            f"{path} is a {suffix} file, run by {by_suffix}; it cannot run with --runtime {runtime}"
        )
    return by_suffix or runtime or default


def inference_file(path: str | Path, runtime: str = "onnxruntime") -> Path:
    """The inference model for ``runtime``: the file itself (``.onnx`` / ``.pte``), or the one inside a
    model / checkpoint directory."""
    path = Path(path)
    suffix, name = RUNTIME_FILES[runtime]
    if path.suffix == suffix:
        if not path.is_file():
            raise ModelError(f"inference model {path} does not exist")
        return path
    candidate = eval_model_dir(path) / name
    if not candidate.is_file():
        hint = " (write one with torchslim export --format executorch)" if runtime == "executorch" else ""
        raise ModelError(f"{candidate.parent} has no inference model {name}{hint}")
    return candidate


def onnx_file(path: str | Path) -> Path:
    """The ONNX inference model: an ``.onnx`` file, or the one inside a model / checkpoint directory."""
    return inference_file(path, "onnxruntime")


def image_classifier(path: Path, threads: int | None = None) -> OrtModel | PteModel:
    """A runner of ``path`` (ONNX Runtime for ``.onnx``, ExecuTorch for ``.pte``) whose one input is an
    N x 3 x H x W image batch; any other model (or a file that is no such model) is a one-line
    ModelError naming the file."""
    if Path(path).suffix == ".pte":
        return PteModel(path, threads=threads)  # it checks its input shape itself
    model = OrtModel(path, threads=threads)
    shape = model.input_shape
    if len(shape) != 4 or shape[1] != 3 or not isinstance(shape[-1], int):
        raise ModelError(
            f"{path}: not an image classifier: its input {model.input_name!r} has shape "
            f"{list(shape)} (expected N x 3 x H x W)"
        )
    return model


def manifest_beside(model_file: Path) -> dict | None:
    manifest = model_file.parent / MANIFEST_FILE
    return load_manifest(manifest) if manifest.is_file() else None
