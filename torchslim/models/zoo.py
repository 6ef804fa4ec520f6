"""The model registry: built-in names, seed aliases, namespaces (``torchvision:<name>``,
``timm:<name>``) and user factories."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torchvision
from torch import nn

from torchslim.errors import ModelError
from torchslim.registry import Registry

from . import mobilenet_v1 as _mobilenet_v1
from . import seed_names as _seed_names
from .spec import ModelSpec, Namespace
from .timm_zoo import TIMM

MODELS: Registry[ModelSpec] = Registry("model")


def _register(spec: ModelSpec, aliases: tuple[str, ...] = ()) -> None:
    MODELS.register(spec.name, spec, aliases=aliases)


_register(
    ModelSpec(
        "mobilenet_v1",
        _mobilenet_v1.MobileNetV1,
        seed_names=_mobilenet_v1.seed_names,
        description="MobileNetV1 (torchslim's own, 13 depthwise-separable blocks, width_mult)",
    ),
    aliases=("MobileNet", "MobileNetV1"),
)


def _register_torchvision(name: str, alias: str, seed_names: Callable[[nn.Module], dict[str, str]]) -> None:
    description = f"torchvision {alias} (torchvision weight files load unchanged)"
    spec = ModelSpec(name, getattr(torchvision.models, name), seed_names=seed_names, description=description)
    _register(spec, aliases=(alias,))


_register_torchvision("mobilenet_v2", "MobileNetV2", _seed_names.mobilenet_v2_seed_names)
_register_torchvision("resnet34", "ResNet34", _seed_names.resnet_seed_names)

TORCHVISION_PREFIX = "torchvision:"

# Zoos of models named <prefix><name>: each resolves its own names; the commands never special-case one.
NAMESPACES: Registry[Namespace] = Registry("model namespace")


def torchvision_classifiers() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _torchvision_names(pattern: str | None = None) -> list[str]:
    names = torchvision_classifiers()
    return [n for n in names if pattern.lower() in n] if pattern else names


def _resolve_torchvision(tv_name: str) -> ModelSpec:
    if tv_name not in torchvision_classifiers():
        raise ModelError(
            f"unknown torchvision classifier {tv_name!r} "
            f"(see `torchslim models --torchvision`, e.g. resnet18, efficientnet_b0)"
        )
    seed = _seed_names.resnet_seed_names if tv_name.startswith("resnet") else None
    return ModelSpec(
        TORCHVISION_PREFIX + tv_name, torchvision.models.get_model_builder(tv_name), seed_names=seed
    )


NAMESPACES.register(
    "torchvision",
    Namespace(TORCHVISION_PREFIX, _resolve_torchvision, _torchvision_names, "torchvision's classifiers"),
)
NAMESPACES.register("timm", TIMM)


def namespace_of(name: str) -> Namespace | None:
    """The namespace whose prefix ``name`` carries, if any."""
    for key in NAMESPACES:
        namespace = NAMESPACES.get(key)
        if name.startswith(namespace.prefix):
            return namespace
    return None


def list_models(include_torchvision: bool = False) -> list[str]:
    """Registered names, optionally followed by every torchvision classifier."""
    names = MODELS.list()
    if include_torchvision:
        names += [TORCHVISION_PREFIX + n for n in torchvision_classifiers()]
    return names


def namespace_models(namespace: str, pattern: str | None = None) -> list[str]:
    """``<prefix><name>`` for every model of ``namespace`` (e.g. "timm") matching ``pattern``."""
    try:
        zoo = NAMESPACES.get(namespace)
    except KeyError as error:
        raise ModelError(error.args[0]) from None
    return [zoo.prefix + n for n in zoo.names(pattern)]


def is_user_factory(name: str) -> bool:
    """``path/to/file.py:factory`` or ``package.module:factory``."""
    return ":" in name and namespace_of(name) is None


def resolve_spec(name: str) -> ModelSpec:
    """The spec for a registered name, alias, ``<namespace>:<name>`` or user factory."""
    namespace = namespace_of(name)
    if namespace is not None:
        return namespace.resolve(name[len(namespace.prefix) :])
    if is_user_factory(name):
        return ModelSpec(name, _load_factory(name), description="user factory")
    try:
        return MODELS.get(name)
    except KeyError as error:
        raise ModelError(error.args[0]) from None


def canonical_name(name: str) -> str:
    if ":" in name:  # namespaced names and user factories are kept as given
        return name
    return resolve_spec(name).name


def build_model(name: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """Build a fresh model. User factories get ``num_classes`` only when they accept it."""
    spec = resolve_spec(name)
    if spec.description == "user factory":
        if "num_classes" in inspect.signature(spec.build).parameters:
            kwargs["num_classes"] = num_classes
        model = spec.build(**kwargs)
        if not isinstance(model, nn.Module):
            raise ModelError(f"factory {name!r} returned {type(model).__name__}, not an nn.Module")
        return model
    try:
        return spec.build(num_classes=num_classes, **kwargs)
    except TypeError as error:
        raise ModelError(f"cannot build {spec.name} with {kwargs}: {error}") from None


def seed_param_names(name: str, model: nn.Module) -> dict[str, str]:
    """PyTorch parameter name -> seed (Paddle) name, for models the seed knew; else empty."""
    spec = resolve_spec(name)
    if spec.seed_names is None:
        return {}
    try:
        return spec.seed_names(model)
    except (AttributeError, IndexError, TypeError):
        return {}


def _load_factory(reference: str) -> Callable[..., nn.Module]:
    module_ref, _, attr = reference.rpartition(":")
    if module_ref.endswith(".py"):
        path = Path(module_ref)
        if not path.is_file():
            raise ModelError(f"model factory file {path} does not exist")
        import_spec = importlib.util.spec_from_file_location(f"torchslim_user_{path.stem}", path)
        module = importlib.util.module_from_spec(import_spec)
        try:
            import_spec.loader.exec_module(module)
        except Exception as error:  # the user's file: report any failure as theirs
            raise ModelError(f"importing {path} failed: {type(error).__name__}: {error}") from error
    else:
        try:
            module = importlib.import_module(module_ref)
        except ImportError as error:
            raise ModelError(f"cannot import {module_ref!r} for model {reference!r}: {error}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"{module_ref} has no callable {attr!r} (model {reference!r})")
    return factory
