"""How tracing treats each op: the modules, functions and methods that keep channels or combine them.

An op in none of these tables (and not handled by name in the tracer) is not understood: tracing
blocks every channel that reaches it.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

# Layers, functions and tensor methods that keep every channel where it is (activations, dropout, pooling).
PASS_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.LeakyReLU,
    nn.ELU,
    nn.Mish,
    nn.Softplus,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.Dropout1d,
    nn.AlphaDropout,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool2d,
    nn.Upsample,
    nn.Hardtanh,
)
PASS_FUNCTIONS = {
    F.relu,
    F.relu6,
    F.silu,
    F.gelu,
    F.hardswish,
    F.hardsigmoid,
    F.sigmoid,
    F.tanh,
    F.leaky_relu,
    F.elu,
    F.hardtanh,
    F.mish,
    F.dropout,
    F.dropout2d,
    F.max_pool2d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    F.interpolate,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    torch.relu_,
    F.relu_,
    torch.nn.functional.adaptive_avg_pool1d,
    torchvision.ops.stochastic_depth,
}
PASS_METHODS = {
    "relu",
    "relu_",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "contiguous",
    "clone",
    "detach",
    "float",
    "to",
    "type_as",
    "clamp",
    "clamp_",
    "clamp_min",
    "clamp_max",
    "hardtanh_",
    "abs",
    "exp",
    "neg",
    "sqrt",
    "pow",
}
# Element-wise ops that combine tensors position by position: the channels they meet are joined.
ELEMENTWISE_FUNCTIONS = {
    operator.add,
    operator.iadd,
    operator.mul,
    operator.imul,
    operator.sub,
    operator.truediv,
    torch.add,
    torch.mul,
    torch.sub,
    torch.div,
    torch.maximum,
    torch.minimum,
}
ELEMENTWISE_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_", "expand_as"}
# Functions and methods that swap two axes (the channels move with their axis; the batch axis may not).
AXIS_SWAPS = {torch.transpose, torch.swapaxes, torch.swapdims, "transpose", "swapaxes", "swapdims"}
# Methods and attributes whose result carries no channels.
NON_TENSOR_METHODS = {"size", "dim", "numel"}
NON_TENSOR_ATTRIBUTES = {"shape", "dtype", "device", "ndim"}
# Layers that create or read channels, handled by the tracer one by one.
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm2d)
# Module attributes that a forward reads as a width (a literal in the traced graph), per type.
WIDTH_ATTRIBUTES = ((torchvision.models.VisionTransformer, ("hidden_dim",)),)
# Functions that stack the channels of 2x2 neighbours on the last axis (Swin's patch merging).
PATCH_MERGING_FUNCTIONS = {torchvision.models.swin_transformer._patch_merging_pad}
# Methods that keep a model tensor what it is (a class token expanded over the batch).
PARAM_KEEPING_METHODS = {"expand", "expand_as", "to", "contiguous", "type_as", "clone", "float", "detach"}
# Functional forms of the layers the tracer resizes: a call whose weight (batch norm: weight or running
# mean) is a module's own parameter is a call of that module, e.g. inside a subclass that re-implements
# forward (timm's Linear, BatchNormAct2d). Value: (layer type, positions of the arguments to look at).
FUNCTIONAL_LAYERS = {
    F.linear: (nn.Linear, (1,)),
    F.conv1d: (nn.Conv1d, (1,)),
    F.conv2d: (nn.Conv2d, (1,)),
    F.conv3d: (nn.Conv3d, (1,)),
    F.batch_norm: (nn.modules.batchnorm._BatchNorm, (3, 1)),
}
FUNCTIONAL_KWARGS = {1: "weight", 3: "weight"}  # F.batch_norm's weight is positional 3 or a keyword
# Tensor attributes that are not tensors (``x.shape``, ``x.ndim``): reading them carries no channels.
METADATA_ATTRIBUTES = {"shape", "ndim", "dtype", "device", "is_cuda", "requires_grad", "layout"}
# Functions whose result carries no channels.
NON_TENSOR_FUNCTIONS = {torch._assert, torch.is_tensor, isinstance, len}
# Ops that may transform a conv's weight without mixing its output channels (weight standardisation),
# checked together with the shapes they give (see layer_rules.transformed_weight_conv).
WEIGHT_TRANSFORM_METHODS = {
    "reshape", "view", "reshape_as", "view_as", "contiguous", "to", "float", "type_as",
    "mean", "var", "std", "sub", "add", "mul", "div", "pow", "sqrt", "rsqrt",
}  # fmt: skip
WEIGHT_TRANSFORM_FUNCTIONS = {
    F.batch_norm, operator.add, operator.sub, operator.mul, operator.truediv, operator.pow,
    torch.mean, torch.var, torch.std, torch.var_mean, torch.std_mean, torch.sqrt, torch.rsqrt,
    operator.getitem,
}  # fmt: skip
