"""int8 ExecuTorch programs: XNNPACK's quantizer through PT2E, calibrated on training images.

The model is captured with ``torch.export`` (batch symbolic, so calibration runs in batches),
annotated by ``XNNPACKQuantizer`` (symmetric int8, per-channel weights), calibrated on a fixed
slice of training images, converted (``convert_pt2e``), then exported again at the program's
fixed shape and lowered to XNNPACK. The program is checked on calibration images against the
converted PyTorch model (the same integer arithmetic, simulated) and its top-1 agreement with fp32
is measured on them; nothing is written unless the check passes.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchslim.errors import ModelError
from torchslim.export.executorch_export import (
    PteExportReport,
    VerifySpec,
    export_program,
    lower_and_verify,
)
from torchslim.export.onnx_export import cpu_float_eval, quiet_loggers
from torchslim.export.pte import require_executorch
from torchslim.quant.calibration import batches, check_finite

__all__ = ["INT8_PTE_FILE", "quantize_executorch"]

INT8_PTE_FILE = "model.int8.pte"
# int8 against its own simulated reference, on calibration images (random inputs fall outside the
# calibrated ranges): XNNPACK and PyTorch's reference kernels round a quantization step apart here and
# there, and deep depthwise networks add those steps up; a wrong scale or layout is off by the whole range.
INT8_RTOL = 0.25
CHECK_BATCHES = 4


def _quantizer(per_channel: bool):
    with quiet_loggers(("torch",)):  # importing the quantizer warns about torch internals
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )

    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=per_channel))


def _converted(model: nn.Module, images: np.ndarray, per_channel: bool, where: str) -> nn.Module:
    """The PT2E int8 reference model of ``model``, calibrated on ``images``."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    pair = torch.from_numpy(images[:2]) if len(images) >= 2 else torch.from_numpy(np.repeat(images, 2, 0))
    captured = export_program(model, pair, where, dynamic_batch=True).module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_pt2e(captured, _quantizer(per_channel))
        with torch.no_grad():
            for batch in batches(images):
                prepared(torch.from_numpy(batch))
        return convert_pt2e(prepared)


def _check_batches(images: np.ndarray, batch_size: int) -> list[torch.Tensor]:
    """Up to :data:`CHECK_BATCHES` batches of the program's shape from the calibration images."""
    count = min(CHECK_BATCHES, max(1, len(images) // batch_size))
    chosen = np.resize(images, (count * batch_size, *images.shape[1:]))
    return [torch.from_numpy(np.ascontiguousarray(b)) for b in np.split(chosen, count)]


def _top1_agreement(program_path: Path, model: nn.Module, images: np.ndarray, batch: int) -> float:
    """Share of ``images`` whose int8 program top-1 equals fp32 ``model``'s."""
    from torchslim.export.pte import PteModel

    int8 = PteModel(program_path)
    with torch.no_grad():
        fp32 = torch.cat([model(torch.from_numpy(b)) for b in batches(images)]).argmax(1).numpy()
    got = int8(images).argmax(1)
    return float((got == fp32).mean())


def quantize_executorch(
    model: nn.Module,
    images: np.ndarray,
    path: str | Path,
    *,
    batch_size: int = 1,
    per_channel: bool = True,
) -> PteExportReport:
    """Write an int8 ExecuTorch program of ``model`` at ``path``, calibrated on ``images`` (float32
    N x 3 x H x W, e.g. :func:`~torchslim.quant.calibration.calibration_images`), for batches of
    ``batch_size``. The report's ``top1_agreement`` is against the fp32 model on ``images``."""
    start = time.perf_counter()
    path = Path(path)
    where = str(path)
    require_executorch(f"quantizing {path}")
    if images.ndim != 4 or len(images) == 0:
        raise ModelError(f"{where}: calibration images must be a non-empty N x C x H x W array")
    check_finite(images, f"calibration images for {path}")
    with cpu_float_eval(model) as fp32:
        reference = _converted(fp32, images, per_channel, where)
        example = torch.from_numpy(np.resize(images, (batch_size, *images.shape[1:])))
        program = export_program(reference, example, where)
        check = VerifySpec(reference, _check_batches(images, batch_size), rtol=INT8_RTOL, atol=1e-3)
        report = lower_and_verify(program, path, "int8", check, start)
        try:
            report.top1_agreement = _top1_agreement(path, fp32, images, batch_size)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    report.seconds = time.perf_counter() - start
    return report
