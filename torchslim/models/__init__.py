"""Models: the registry, seed names, pretrained loading and the architecture manifest."""

from .manifest import build_from_manifest, load_manifest, make_manifest, save_manifest
from .pretrained import BuiltModel, build_pretrained, check_state_dict, load_pretrained, read_state_dict
from .saved import load_model, save_model
from .zoo import (
    MODELS,
    NAMESPACES,
    ModelSpec,
    build_model,
    canonical_name,
    list_models,
    namespace_models,
    resolve_spec,
    seed_param_names,
    torchvision_classifiers,
)

__all__ = [
    "MODELS",
    "NAMESPACES",
    "BuiltModel",
    "ModelSpec",
    "build_from_manifest",
    "build_model",
    "build_pretrained",
    "canonical_name",
    "check_state_dict",
    "list_models",
    "load_manifest",
    "load_model",
    "load_pretrained",
    "make_manifest",
    "namespace_models",
    "read_state_dict",
    "resolve_spec",
    "save_manifest",
    "save_model",
    "seed_param_names",
    "torchvision_classifiers",
]
