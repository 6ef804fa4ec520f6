"""Keep a quantized model's outputs in float.

Static quantization also puts a QuantizeLinear/DequantizeLinear pair on the tensors the model returns
(a classifier's logits). Their range is calibrated on a few images, and logits have heavy tails: a few
very confident images can set a range so wide that the ordinary logits fall into one or two int8
steps and the ranking among classes is lost. The last op then runs int8 with a float output
(ONNX Runtime's QGemm / MatMulIntegerToFloat), which costs nothing measurable.
"""

from __future__ import annotations

import onnx


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in graph.node for output in node.output}


def dequantized_outputs(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """The (QuantizeLinear, DequantizeLinear) pairs that produce a graph output from a float tensor."""
    producers = _producers(graph)
    pairs = []
    for output in graph.output:
        dequantize = producers.get(output.name)
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        quantize = producers.get(dequantize.input[0])
        if quantize is not None and quantize.op_type == "QuantizeLinear":
            pairs.append((quantize, dequantize))
    return pairs


def keep_outputs_float(model: onnx.ModelProto) -> int:
    """Remove the quantize/dequantize pair before each graph output (in place): the op that computed
    the float tensor writes the output directly. Returns how many outputs were changed."""
    graph = model.graph
    pairs = dequantized_outputs(graph)
    for quantize, dequantize in pairs:
        source, target = quantize.input[0], dequantize.output[0]
        graph.node.remove(quantize)
        graph.node.remove(dequantize)
        for node in graph.node:  # the float tensor takes the output's name, for every reader too
            for slots in (node.input, node.output):
                for index, name in enumerate(slots):
                    if name == source:
                        slots[index] = target
    return len(pairs)
