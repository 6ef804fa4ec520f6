"""A small wrapper around an ONNX Runtime inference session for exported classifiers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from torchslim.errors import ConfigError, ModelError

__all__ = ["OrtModel", "available_providers"]


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers, best first."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


class OrtModel:
    """Run a single-input ONNX model with ONNX Runtime.

    ``threads`` sets ``intra_op_num_threads`` (``None``: ORT's default, one per core);
    operators run sequentially with one inter-op thread and all graph optimisations on.
    ``providers`` defaults to ``["CPUExecutionProvider"]``; asking for one this build
    lacks raises :class:`ConfigError`. A missing or unreadable file raises
    :class:`ModelError` naming it.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        if providers is None:
            providers = ["CPUExecutionProvider"]
        providers = list(providers)
        available = available_providers()
        missing = [p for p in providers if p not in available]
        if missing:
            raise ConfigError(
                f"ONNX Runtime provider(s) {', '.join(missing)} not available; available: {', '.join(available)}"
            )
        if not self.path.is_file():
            raise ModelError(f"ONNX model file not found: {self.path}")

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads if threads is not None else 0
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(os.fspath(self.path), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own pybind exception types
            raise ModelError(f"cannot load ONNX model {self.path}: {e}") from e

        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"ONNX model {self.path} has {len(inputs)} inputs; expected exactly one")
        self.input_name: str = inputs[0].name
        # Symbolic dims ("batch") and unknown dims come back as str/None: report both as None.
        self.input_shape: tuple[int | None, ...] = tuple(
            d if isinstance(d, int) else None for d in inputs[0].shape
        )
        self.output_name: str = self.session.get_outputs()[0].name
        self.threads = threads

    @property
    def providers(self) -> list[str]:
        """Providers the session actually uses."""
        return list(self.session.get_providers())

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run a float32 batch and return the first output."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        try:
            return self.session.run([self.output_name], {self.input_name: x})[0]
        except Exception as e:
            raise ModelError(
                f"ONNX model {self.path} failed on an input of shape {x.shape} "
                f"(expects {self.input_shape}): {e}"
            ) from e

    def __repr__(self) -> str:
        return f"OrtModel({str(self.path)!r}, input_shape={self.input_shape}, threads={self.threads})"
