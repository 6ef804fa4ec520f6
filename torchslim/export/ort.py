"""A small wrapper around an ONNX Runtime inference session for exported classifiers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from torchslim.errors import ModelError
from torchslim.export.sessions import CPU, create_session, session_options

__all__ = ["OrtModel"]


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
        self.path = Path(path)
        options = session_options(threads)
        if not self.path.is_file():
            raise ModelError(f"ONNX model file not found: {self.path}")
        self.session = create_session(self.path, options, providers=providers or CPU)

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
