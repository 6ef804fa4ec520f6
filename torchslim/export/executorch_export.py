"""Export a PyTorch classifier to one verified ExecuTorch program (``.pte``, XNNPACK delegate).

``torch.export`` captures the eval-mode model at the example's shape; ``to_edge_transform_and_lower``
hands every subgraph XNNPACK supports to its delegate, the rest stays on ExecuTorch's portable
kernels (named in the report as ``fallback_ops``). Before anything is written the program is loaded
in the ExecuTorch runtime and compared with PyTorch; only a program that passes is written,
atomically. A model that cannot be exported is one ModelError naming the layer and the op.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from torchslim.errors import ModelError
from torchslim.export.atomic import write_atomic
from torchslim.export.onnx_export import cpu_float_eval, quiet_loggers
from torchslim.export.pte import load_method, require_executorch

__all__ = ["PteExportReport", "export_executorch", "export_program", "lower_and_verify"]

# Nodes of a lowered graph that are plumbing, not computation left outside the delegate.
_PLUMBING = ("executorch_call_delegate", "getitem", "sym_size")
_NOT_USER_CODE = ("site-packages", "/torch/", "torchslim/export/")
_OP_NAME = re.compile(r"aten\.[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?")
# Loggers torch.export and ExecuTorch warn on while exporting a model they handle well.
_EXPORT_LOGGERS = ("torch", "executorch")


@dataclass
class PteExportReport:
    """What an ExecuTorch export wrote and how close it stays to PyTorch on the check inputs."""

    path: str
    dtype: str  # "fp32" or "int8"
    max_abs_diff: float
    top1_agreement: float  # fraction of check inputs whose top-1 class equals the reference's
    size_bytes: int
    seconds: float
    fallback_ops: dict[str, int] = field(default_factory=dict)  # op -> count, run outside XNNPACK

    def as_dict(self) -> dict:
        return asdict(self)

    def summary_line(self) -> str:
        fallbacks = ", ".join(f"{op} x{n}" for op, n in self.fallback_ops.items()) or "none"
        return (
            f"ExecuTorch {self.dtype}: max diff {self.max_abs_diff:.3g} against PyTorch, top-1 agreement "
            f"{100 * self.top1_agreement:.0f}%, {self.size_bytes / 2**20:.2f} MiB; ops outside XNNPACK: "
            f"{fallbacks}"
        )


# --------------------------------------------------------------------------- failures


@contextmanager
def _module_stack(model: nn.Module) -> Iterator[list[str]]:
    """The names of the modules whose forward is running, innermost last: what was being traced
    when ``torch.export`` gave up."""
    stack: list[str] = []

    def leave(*_) -> None:  # a forward hook that returned a value would replace the module's output
        if stack:
            stack.pop()

    handles = []
    for name, module in model.named_modules():
        label = f"{name or '<model>'} ({type(module).__name__})"
        handles.append(module.register_forward_pre_hook(lambda *_, label=label: stack.append(label)))
        handles.append(module.register_forward_hook(leave))
    try:
        yield stack
    finally:
        for handle in handles:
            handle.remove()


def _innermost(error: BaseException) -> BaseException:
    seen = set()
    while error.__cause__ is not None and id(error) not in seen:
        seen.add(id(error))
        error = error.__cause__
    return error


def _user_code(error: BaseException) -> str | None:
    """``file:line: code`` of the innermost frame outside torch and the installed packages: the user's
    line that export could not follow."""
    found = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.line and not any(part in frame.filename for part in _NOT_USER_CODE):
            found = f"{Path(frame.filename).name}:{frame.lineno}: {frame.line.strip()}"
    return found


def describe_failure(error: BaseException, layer: str | None, stage: str) -> str:
    """One line: the stage, the layer, the op (when the message names one), the first line of the
    innermost error and the user's code it points at."""
    inner = _innermost(error)
    text = str(inner)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(inner).__name__)
    parts = [f"ExecuTorch export failed in {stage}"]
    if layer:
        parts.append(f"at layer {layer}")
    op = _named_op(text)
    if op:
        parts.append(f"op {op}")
    code = _user_code(inner) or _user_code(error)
    detail = f"{type(inner).__name__}: {first}" + (f" (code: {code})" if code else "")
    return ", ".join(parts) + f": {detail}"


def _named_op(text: str) -> str | None:
    """The op an error message is about: an ``Operator:`` line's, else one in its first three lines
    (further down, torch.export dumps the whole graph it traced, which names every op)."""
    lines = text.splitlines()
    focus = [ln for ln in lines if ln.strip().startswith("Operator:")] or lines[:3]
    match = _OP_NAME.search("\n".join(focus))
    return match.group(0) if match else None


def _layer_of_op(program, text: str) -> str | None:
    """The module of the first node of ``program`` running the op an error message names."""
    op = _named_op(text)
    if op is None:
        return None
    for node in program.graph.nodes:
        if node.op == "call_function" and op.split(".")[1] in str(node.target):
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                name, kind = list(stack.values())[-1]
                kind = getattr(kind, "__name__", str(kind).rsplit(".", 1)[-1])
                return f"{name or '<model>'} ({kind})"
    return None


# --------------------------------------------------------------------------- export


def export_program(model: nn.Module, example: torch.Tensor, where: str, dynamic_batch: bool = False):
    """``torch.export`` of ``model`` at ``example``'s shape; a ModelError naming the layer it failed in."""
    dynamic = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    # On failure torch.export prints the whole graph it traced to stderr; the one-line error says enough.
    with (
        _module_stack(model) as stack,
        warnings.catch_warnings(),
        quiet_loggers(_EXPORT_LOGGERS),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        try:
            return torch.export.export(model, (example,), dynamic_shapes=dynamic)
        except Exception as e:  # export raises many types; all are one ModelError here
            layer = stack[-1] if stack else None
            raise ModelError(f"{where}: {describe_failure(e, layer, 'torch.export')}") from e


def _fallback_ops(lowered) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in lowered.exported_program().graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target)).split(":")[0]
        if any(part in name for part in _PLUMBING):
            continue
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def lower_to_pte(program, where: str) -> tuple[bytes, dict[str, int]]:
    """An exported program lowered to XNNPACK and serialised, and the ops left outside the delegate."""
    require_executorch(f"exporting {where}")
    try:
        with warnings.catch_warnings(), quiet_loggers(_EXPORT_LOGGERS):
            warnings.simplefilter("ignore")
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            fallbacks = _fallback_ops(lowered)
            data = lowered.to_executorch().buffer
    except Exception as e:
        layer = _layer_of_op(program, str(_innermost(e)))
        raise ModelError(f"{where}: {describe_failure(e, layer, 'lowering to ExecuTorch')}") from e
    return bytes(data), fallbacks


def check_inputs(example: torch.Tensor, count: int = 3) -> list[torch.Tensor]:
    """``example`` and ``count - 1`` seeded random inputs of its shape (the program's shape is fixed)."""
    generator = torch.Generator().manual_seed(0)
    extra = [torch.randn(example.shape, generator=generator) for _ in range(count - 1)]
    return [example, *extra]


def compare_program(
    data: bytes,
    reference: Callable[[torch.Tensor], torch.Tensor],
    inputs: list[torch.Tensor],
    *,
    rtol: float,
    atol: float,
    where: str,
) -> tuple[float, float]:
    """Run ``inputs`` through the program in ``data`` and through ``reference``: the max abs diff and
    the top-1 agreement; a ModelError naming ``where`` when any output is off by more than
    ``atol + rtol * max|reference|``."""
    method = load_method(data, where)
    worst, agree, total = 0.0, 0, 0
    for x in inputs:
        with torch.no_grad():
            expected = reference(x).float()
        got = method.execute([x.contiguous()])[0]
        if got.shape != expected.shape:
            raise ModelError(
                f"{where}: ExecuTorch output shape {tuple(got.shape)} != PyTorch {tuple(expected.shape)}"
            )
        diff = float((got - expected).abs().max()) if torch.isfinite(got).all() else float("inf")
        limit = atol + rtol * float(expected.abs().max())
        if not diff <= limit:
            raise ModelError(
                f"{where}: ExecuTorch output does not match PyTorch: max diff {diff:.3g} (allowed "
                f"{limit:.3g}, input shape {tuple(x.shape)})"
            )
        worst = max(worst, diff)
        if expected.dim() == 2:
            agree += int((got.argmax(1) == expected.argmax(1)).sum())
            total += expected.shape[0]
    return worst, (agree / total if total else 1.0)


@dataclass(frozen=True)
class VerifySpec:
    """What the program is checked against: a PyTorch callable, the inputs and the tolerances."""

    reference: Callable[[torch.Tensor], torch.Tensor]
    inputs: list[torch.Tensor]
    rtol: float = 1e-3
    atol: float = 1e-4


def lower_and_verify(
    program, path: Path, dtype: str, check: VerifySpec | None, start: float
) -> PteExportReport:
    """Lower ``program``, check it against ``check`` (None: not checked), write it atomically to ``path``."""
    where = str(path)
    data, fallbacks = lower_to_pte(program, where)
    diff, agreement = float("nan"), float("nan")
    if check is not None:
        diff, agreement = compare_program(
            data, check.reference, check.inputs, rtol=check.rtol, atol=check.atol, where=where
        )
    try:
        write_atomic(path, data)
    except OSError as e:
        raise ModelError(f"cannot write ExecuTorch program {path}: {e}") from e
    return PteExportReport(
        str(path), dtype, diff, agreement, len(data), time.perf_counter() - start, fallbacks
    )


def export_executorch(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | Path,
    *,
    verify: bool = True,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> PteExportReport:
    """Write ``model`` as an fp32 ExecuTorch program (XNNPACK) at ``path``, for inputs of
    ``example_input``'s shape (batch included: ExecuTorch plans memory for one fixed shape; the
    runtime wrapper :class:`~torchslim.export.pte.PteModel` runs other batch sizes in pieces).

    With ``verify`` the program is run on the example and two random inputs and must match the
    eval-mode model within ``atol + rtol * max|logit|``. On any failure nothing is written.
    """
    start = time.perf_counter()
    path = Path(path)
    require_executorch(f"exporting {path}")
    example = example_input.detach().to("cpu", torch.float32).contiguous()
    with cpu_float_eval(model) as cpu_model, torch.no_grad():
        program = export_program(cpu_model, example, str(path))
        check = VerifySpec(cpu_model, check_inputs(example), rtol, atol) if verify else None
        return lower_and_verify(program, path, "fp32", check, start)
