"""Finding the eval model or inference model a ``--model-path`` points at."""

from __future__ import annotations

from pathlib import Path

from torchslim.engine import list_checkpoints
from torchslim.errors import ModelError
from torchslim.export import OrtModel
from torchslim.models import load_manifest
from torchslim.models.saved import MANIFEST_FILE

ONNX_FILE = "model.onnx"


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


def onnx_file(path: str | Path) -> Path:
    """The inference model: an ``.onnx`` file, or the one inside a model / checkpoint directory."""
    path = Path(path)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise ModelError(f"inference model {path} does not exist")
        return path
    candidate = eval_model_dir(path) / ONNX_FILE
    if not candidate.is_file():
        raise ModelError(f"{candidate.parent} has no inference model {ONNX_FILE}")
    return candidate


def image_classifier(path: Path, threads: int | None = None) -> OrtModel:
    """An ONNX Runtime session of ``path`` whose one input is an N x 3 x H x W image batch; any other
    model (or a file that is no ONNX model) is a one-line ModelError naming the file."""
    model = OrtModel(path, threads=threads)
    shape = model.input_shape
    if len(shape) != 4 or shape[1] != 3 or not isinstance(shape[-1], int):
        raise ModelError(
            f"{path}: not an image classifier: its input {model.input_name!r} has shape "
            f"{list(shape)} (expected N x 3 x H x W)"
        )
    return model


def manifest_beside(onnx_path: Path) -> dict | None:
    manifest = onnx_path.parent / MANIFEST_FILE
    return load_manifest(manifest) if manifest.is_file() else None
