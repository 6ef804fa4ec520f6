"""Export a PyTorch classifier to a single, verified ONNX file.

``exporter="auto"`` uses torch's TorchScript exporter (fast, one self-contained file, stable conv-net
ops; its deprecation warning is silenced) and falls back to the dynamo exporter (``torch.export`` and
onnxscript) when it fails; either can be forced. The model is serialised in memory, checked with
``onnx.checker`` and verified against PyTorch in ONNX Runtime before anything is written, then moved
over the target from an fsynced temporary file: a kill never leaves a half-written ``.onnx``, and a
failed export never replaces an existing one.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchslim.errors import ModelError
from torchslim.export.atomic import write_atomic
from torchslim.export.sessions import create_session
from torchslim.nn import eval_mode

__all__ = ["EXPORTERS", "ExportReport", "export_onnx", "verify_onnx"]

EXPORTERS = ("auto", "torchscript", "dynamo")

# Serialised protobuf messages are limited to 2 GiB; larger models need external data.
_PROTOBUF_LIMIT = 2**31 - 1

# Loggers the dynamo exporter may chat on; quietened while it runs.
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "onnxscript")


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` produced.

    ``max_abs_diff`` is the largest |ORT - PyTorch| over the verification inputs, or
    ``None`` when verification was skipped. ``seconds`` covers export, checks,
    verification and the write.
    """

    path: Path
    max_abs_diff: float | None
    opset: int
    seconds: float
    exporter: str = "torchscript"
    size_bytes: int = 0


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def cpu_float_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Yield an eval-mode, CPU float32 version of ``model``; restore its modes after.

    A model already on CPU in float32 is used as is (only its mode changes, and is
    restored module by module). Otherwise a deep copy is converted, so the caller's
    model never changes device or dtype.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    tensors = [*model.parameters(), *model.buffers()]
    on_cpu_f32 = all(
        t.device.type == "cpu" and (t.dtype == torch.float32 or not t.is_floating_point()) for t in tensors
    )
    with eval_mode(model):
        target = model if on_cpu_f32 else copy.deepcopy(model).to(device="cpu", dtype=torch.float32)
        yield target.eval()


def _cpu_float_input(example: torch.Tensor) -> torch.Tensor:
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, got {type(example).__name__}")
    if example.dim() < 1:
        raise ValueError("example_input needs a batch dimension")
    return example.detach().to(device="cpu", dtype=torch.float32).contiguous()


def _flat_outputs(out: object, where: str) -> list[np.ndarray]:
    if isinstance(out, torch.Tensor):
        return [out.detach().cpu().float().numpy()]
    if isinstance(out, (tuple, list)) and out and all(isinstance(o, torch.Tensor) for o in out):
        return [o.detach().cpu().float().numpy() for o in out]
    raise ModelError(
        f"{where}: the model must return a tensor or a tuple of tensors, got {type(out).__name__}"
    )


def _verification_inputs(example: torch.Tensor, dynamic_batch: bool) -> list[torch.Tensor]:
    inputs = [example]
    if dynamic_batch:
        batch = 3 if example.shape[0] == 2 else 2
        gen = torch.Generator().manual_seed(0)
        inputs.append(torch.randn((batch, *example.shape[1:]), generator=gen, dtype=torch.float32))
    return inputs


def _compare(
    session, model: nn.Module, inputs: list[torch.Tensor], rtol: float, atol: float, where: str
) -> float:
    """Run ``inputs`` through ORT and PyTorch; return the max abs diff or raise ModelError."""
    input_name = session.get_inputs()[0].name
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            expected = _flat_outputs(model(x), where)
        try:
            got = session.run(None, {input_name: x.numpy()})
        except Exception as e:
            raise ModelError(
                f"{where}: ONNX Runtime failed on an input of shape {tuple(x.shape)}: {e}"
            ) from e
        if len(got) < len(expected):
            raise ModelError(f"{where}: ONNX model has {len(got)} outputs, PyTorch model {len(expected)}")
        for ref, out in zip(expected, got, strict=False):
            out = np.asarray(out)
            if out.shape != ref.shape:
                raise ModelError(
                    f"{where}: ONNX output shape {out.shape} != PyTorch {ref.shape} "
                    f"for input shape {tuple(x.shape)}"
                )
            # rtol is relative to the output's scale: a logit near zero in a large output is no worse off
            scale = float(np.abs(ref[np.isfinite(ref)]).max(initial=0.0))
            close = np.isclose(out, ref, rtol=0.0, atol=atol + rtol * scale, equal_nan=True)
            both_finite = np.isfinite(out) & np.isfinite(ref)
            diff = float(np.abs(out[both_finite] - ref[both_finite]).max(initial=0.0))
            if not close.all():
                if not both_finite[~close].all():
                    diff = float("inf")
                raise ModelError(
                    f"{where}: ONNX output does not match PyTorch: max diff {diff:.3g} "
                    f"(rtol={rtol:g}, atol={atol:g}, input shape {tuple(x.shape)})"
                )
            worst = max(worst, diff)
    return worst


def _opset_of(proto) -> int:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


@dataclass(frozen=True)
class _OnnxSignature:
    """What the exported graph looks like from outside: opset, tensor names, a symbolic batch or not."""

    opset: int | None
    dynamic_batch: bool
    input_name: str
    output_name: str

    def export_arguments(self) -> dict:
        """The keyword arguments both exporters of ``torch.onnx.export`` share."""
        return {
            "opset_version": self.opset,
            "input_names": [self.input_name],
            "output_names": [self.output_name],
        }


def _export_torchscript(model: nn.Module, example: torch.Tensor, signature: _OnnxSignature) -> bytes:
    buf = io.BytesIO()
    names = (signature.input_name, signature.output_name)
    dynamic_axes = {name: {0: "batch"} for name in names} if signature.dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            model,
            (example,),
            buf,
            dynamo=False,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
            **signature.export_arguments(),
        )
    return buf.getvalue()


@contextlib.contextmanager
def quiet_loggers(names: tuple[str, ...] = _NOISY_LOGGERS) -> Iterator[None]:
    """Raise the given loggers to ERROR while the block runs (exporters chat on them)."""
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def _export_dynamo(model: nn.Module, example: torch.Tensor, signature: _OnnxSignature) -> bytes:
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if signature.dynamic_batch else None
    with warnings.catch_warnings(), quiet_loggers():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            None,
            dynamo=True,
            verbose=False,
            report=False,
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            **signature.export_arguments(),
        )
    if program is None:
        raise RuntimeError("the dynamo exporter returned no program")
    return program.model_proto.SerializeToString()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _describe(error: BaseException) -> str:
    """One line for an export failure: the innermost cause (the dynamo exporter wraps the
    user's exception in a multi-line TorchExportError with colour codes)."""
    seen = set()
    while error.__cause__ is not None and id(error) not in seen:
        seen.add(id(error))
        error = error.__cause__
    lines = [ln.strip() for ln in _ANSI.sub("", str(error)).splitlines() if ln.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else '(no message)'}"


def _export_bytes(
    model: nn.Module, example: torch.Tensor, exporter: str, signature: _OnnxSignature, where: str
) -> tuple[bytes, str]:
    """The serialised model from the first exporter of ``exporter``'s order that succeeds, and its name."""
    order = {"auto": ("torchscript", "dynamo"), "torchscript": ("torchscript",), "dynamo": ("dynamo",)}
    if exporter not in order:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    failures = []
    for name in order[exporter]:
        fn = _export_torchscript if name == "torchscript" else _export_dynamo
        try:
            data = fn(model, example, signature)
        except Exception as e:  # exporters raise many types; report them all as one ModelError
            failures.append((name, e, f"{name} exporter: {_describe(e)}"))
            continue
        return data, name
    summary = "; ".join(line for _, _, line in failures)
    raise ModelError(f"{where}: ONNX export failed; {summary}") from failures[-1][1]


def _checked_proto(data: bytes, where: str):
    """The ONNX model in ``data``, after ``onnx.checker``; a ModelError when it is too large or invalid."""
    import onnx

    if len(data) > _PROTOBUF_LIMIT:
        raise ModelError(f"{where}: model is over 2 GiB and cannot be stored as a single ONNX file")
    try:
        proto = onnx.load_from_string(data)
        onnx.checker.check_model(proto)
    except Exception as e:
        raise ModelError(f"{where}: exported ONNX model is invalid: {e}") from e
    return proto


# --------------------------------------------------------------------------- public API


def verify_onnx(
    path: str | os.PathLike,
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    dynamic_batch: bool = True,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> float:
    """Check that the ONNX file at ``path`` computes what ``model`` computes.

    Runs ONNX Runtime (CPU) and the eval-mode model on ``example_input`` and, when
    ``dynamic_batch``, on a random input with another batch size. Returns the max
    absolute difference; raises :class:`ModelError` (naming the file and the max diff)
    when any element differs by more than ``atol + rtol * |expected|``. The model's
    train/eval modes, device and dtype are left as they were.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ONNX model file not found: {path}")
    example = _cpu_float_input(example_input)
    session = create_session(path, where=str(path))
    with cpu_float_eval(model) as cpu_model:
        return _compare(
            session, cpu_model, _verification_inputs(example, dynamic_batch), rtol, atol, str(path)
        )


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike,
    *,
    opset: int | None = None,
    dynamic_batch: bool = True,
    verify: bool = True,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    input_name: str = "input",
    output_name: str = "logits",
    exporter: str = "auto",
) -> ExportReport:
    """Export ``model`` to one self-contained ONNX file at ``path``.

    The model is exported in eval mode on CPU in float32 (a copy is made when it lives
    elsewhere; its train/eval modes are restored afterwards). With ``dynamic_batch`` the
    first dimension of input and output is symbolic (``"batch"``). ``opset=None`` uses
    the exporter's default; the opset actually written is reported.

    The ONNX model is validated with ``onnx.checker.check_model`` and, when ``verify``,
    compared with PyTorch through ONNX Runtime (see :func:`verify_onnx`). Only a model
    that passes is written, atomically; on any failure :class:`ModelError` is raised and
    ``path`` is left untouched. ``exporter`` picks ``"torchscript"``, ``"dynamo"`` or
    ``"auto"`` (TorchScript, falling back to dynamo); see the module docstring for why.
    """
    start = time.perf_counter()
    path = Path(path)
    where = str(path)
    example = _cpu_float_input(example_input)
    signature = _OnnxSignature(opset, dynamic_batch, input_name, output_name)
    with cpu_float_eval(model) as cpu_model:
        data, used = _export_bytes(cpu_model, example, exporter, signature, where)
        proto = _checked_proto(data, where)
        max_diff = None
        if verify:
            session = create_session(data, where=where)
            max_diff = _compare(
                session, cpu_model, _verification_inputs(example, dynamic_batch), rtol, atol, where
            )
    try:
        write_atomic(path, data)
    except OSError as e:
        raise ModelError(f"cannot write ONNX model {path}: {e}") from e
    return ExportReport(
        path=path,
        max_abs_diff=max_diff,
        opset=_opset_of(proto),
        seconds=time.perf_counter() - start,
        exporter=used,
        size_bytes=len(data),
    )
