"""Quantization-aware training with the maintained PyTorch flow: torch.export + torchao's PT2E.

The model's batch norms are folded into its convolutions (:mod:`.batch_norm_fold`), the fused copy is
captured with ``torch.export`` and prepared with ``prepare_qat_pt2e`` and torchao's x86 quantizer
(int8 weights, symmetric, per channel or per tensor; uint8 activations with moving-average ranges).
:class:`QatModel` trains that graph like any module; its float weights and observer states are what
checkpoints hold. At the end ``convert_pt2e`` gives the int8 reference graph, exported by the dynamo
ONNX exporter as a QDQ model that ONNX Runtime runs.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from torchslim.errors import ModelError
from torchslim.export import create_session
from torchslim.quant.batch_norm_fold import FoldedPair, conv_norm_pairs, fused_copy, neutralise, write_back
from torchslim.quant.module_calls import one_module_per_call

INSTALL_HINT = "pip install 'torchslim[quant]' (torchao)"


def _torchao():
    """torchao's PT2E entry points; a one-line ModelError when the optional extra is missing."""
    try:
        from torchao.quantization.pt2e import (
            allow_exported_model_train_eval,
            move_exported_model_to_eval,
            move_exported_model_to_train,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    except ImportError as error:
        raise ModelError(f"quantization-aware training needs torchao ({error}): {INSTALL_HINT}") from None
    return {
        "prepare": prepare_qat_pt2e,
        "convert": convert_pt2e,
        "to_train": move_exported_model_to_train,
        "to_eval": move_exported_model_to_eval,
        "allow_train_eval": allow_exported_model_train_eval,
        "x86": x86,
    }


def require_torchao() -> None:
    """Fail before any training when torchao is missing."""
    _torchao()


def _quantizer(per_channel: bool):
    api = _torchao()["x86"]
    config = api.get_default_x86_inductor_quantization_config(is_qat=True)
    if not per_channel:
        from torchao.quantization.pt2e.fake_quantize import FusedMovingAvgObsFakeQuantize
        from torchao.quantization.pt2e.observer import MovingAverageMinMaxObserver

        weight = dataclasses.replace(
            config.weight,
            qscheme=torch.per_tensor_symmetric,
            ch_axis=None,
            observer_or_fake_quant_ctr=FusedMovingAvgObsFakeQuantize.with_args(
                observer=MovingAverageMinMaxObserver, eps=2**-12
            ),
        )
        config = dataclasses.replace(config, weight=weight)
    quantizer = api.X86InductorQuantizer().set_global(config)
    annotate = quantizer.annotate

    def annotate_for_onnx_runtime(model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        model = annotate(model)
        _quantize_both_add_inputs(model, config.input_activation, api.QUANT_ANNOTATION_KEY)
        return model

    quantizer.annotate = annotate_for_onnx_runtime
    return quantizer


ADDS = (torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor)


def _quantize_both_add_inputs(model: torch.fx.GraphModule, spec, key: str) -> None:
    """Fake-quantize the conv output that a residual add reads as well.

    The x86 quantizer fuses conv -> add (-> relu) as one int8 kernel, as Inductor runs it, and leaves
    the conv's output float; ONNX Runtime has no such kernel and would run those convs in fp32. With
    both add inputs quantized, every conv and add of the exported model maps to an ORT int8 kernel."""
    for node in model.graph.nodes:
        annotation = node.meta.get(key)
        if node.target not in ADDS or annotation is None or not annotation.input_qspec_map:
            continue
        for source in node.args[:2]:
            if isinstance(source, torch.fx.Node) and source not in annotation.input_qspec_map:
                annotation.input_qspec_map[source] = spec


class QatModel(nn.Module):
    """A model under fake quantization: the prepared PT2E graph of its batch-norm-folded copy.

    ``train()``/``eval()`` switch the graph's batch norm and dropout ops as torchao requires;
    :meth:`float_model` writes the trained weights back into the float model the run saves."""

    def __init__(
        self, prepared: nn.Module, float_model: nn.Module, pairs: list[FoldedPair], weights: list[str]
    ) -> None:
        super().__init__()
        self.prepared = prepared
        self._float = [float_model]  # a list: not a submodule, so not in this module's state dict
        self.pairs = pairs
        self.weight_keys = frozenset(weights)
        self.training = True

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.prepared(images)

    def train(self, mode: bool = True) -> QatModel:
        """Training updates the observed ranges; evaluation uses them as they are (torchao's mode
        switch changes batch norm and dropout only, so the observers are switched here)."""
        api = _torchao()
        (api["to_train"] if mode else api["to_eval"])(self.prepared)
        for module in self.prepared.modules():
            if hasattr(module, "enable_observer"):
                module.enable_observer(mode)
        self.training = mode
        return self

    def float_model(self) -> nn.Module:
        """The float model with the QAT weights (norms folded): what checkpoints and eval models hold."""
        model = self._float[0]
        write_back(model, self.prepared.state_dict(), self.pairs)
        return model

    def observer_state(self) -> dict[str, torch.Tensor]:
        """The fake-quantization state (ranges, scales, flags): everything but the weights."""
        state = self.prepared.state_dict()
        return {k: v.detach().cpu().clone() for k, v in state.items() if k not in self.weight_keys}

    def load_observer_state(self, state: dict[str, torch.Tensor]) -> None:
        missing = [key for key in self.observer_state() if key not in state]
        if missing:
            raise ModelError(f"QAT state does not fit this model (missing {', '.join(missing[:3])})")
        self.prepared.load_state_dict(state, strict=False)  # resizes the per-channel buffers
        with torch.no_grad():  # and copy every value: some observers' loaders skip keys such as eps
            for key, value in state.items():
                self.prepared.get_buffer(key).copy_(value)


def prepare_qat(model: nn.Module, example: torch.Tensor, *, per_channel: bool = True) -> QatModel:
    """Fold ``model``'s batch norms (in place, exactly) and wrap its fused copy for QAT.

    ``example``: a batch of at least 2 images on the model's device (batch size stays dynamic)."""
    api = _torchao()
    pairs = conv_norm_pairs(model)
    neutralise(model, pairs)
    fused = one_module_per_call(fused_copy(model, pairs)).train()
    dynamic = ({0: torch.export.Dim("batch")},)
    with torch.random.fork_rng(devices=[]):  # capture draws no random numbers from the run's stream
        try:
            program = torch.export.export(fused, (example,), dynamic_shapes=dynamic)
        except Exception as error:  # torch.export raises many types for untraceable code
            raise ModelError(
                f"quantization-aware training: torch.export cannot capture the model: {_first_line(error)}"
            ) from None
        try:
            prepared = api["prepare"](program.module(), _quantizer(per_channel))
        except Exception as error:  # the quantizer's pattern matching fails on some graphs
            raise ModelError(
                f"quantization-aware training: torchao's x86 quantizer cannot annotate the model: "
                f"{type(error).__name__}: {_first_line(error)}"
            ) from None
    return QatModel(prepared, model, pairs, list(fused.state_dict()))


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def float_model_of(model: nn.Module) -> nn.Module:
    """The float model behind a :class:`QatModel` (with its current weights); any other model itself."""
    return model.float_model() if isinstance(model, QatModel) else model


def _onnx_bytes(converted: nn.Module, example: torch.Tensor) -> bytes:
    dynamic = ({0: torch.export.Dim("batch")},)
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):  # the exporter prints progress
        warnings.simplefilter("ignore")
        program = torch.export.export(converted, (example,), dynamic_shapes=dynamic)
        onnx_program = torch.onnx.export(
            program,
            (example,),
            None,
            dynamo=True,
            verbose=False,
            input_names=["input"],
            output_names=["logits"],
        )
    return onnx_program.model_proto.SerializeToString()


def export_int8(qat: QatModel, input_size: int, path: str | Path) -> Path:
    """Convert a copy of the QAT graph to int8 and write it as a QDQ ONNX model (atomically); the
    int8 reference graph must export and ONNX Runtime must load it, else ``ModelError``."""
    api = _torchao()
    prepared = copy.deepcopy(qat.prepared).cpu()
    api["to_eval"](prepared)
    converted = api["convert"](prepared)
    example = torch.zeros(2, 3, input_size, input_size)
    path = Path(path)
    try:
        data = _onnx_bytes(converted, example)
    except Exception as error:  # the exporters raise many types
        raise ModelError(
            f"{path}: exporting the int8 QAT model failed: {type(error).__name__}: {error}"
        ) from None
    create_session(data, where=f"int8 QAT model {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(data)
    os.replace(handle.name, path)
    return path
