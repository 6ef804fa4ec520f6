"""Reading configs: YAML files, ``include`` merging, section dispatch, cross references,
and dotted-key overrides from the command line."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from torchslim.config.classes import (
    CONTROLLER_CONFIGS,
    PRUNER_CONFIGS,
    STRATEGY_CONFIGS,
    UNSUPPORTED_CLASSES,
    class_names,
)
from torchslim.config.messages import Context, KeyPath, Origins, did_you_mean, got, make_error, short_repr
from torchslim.config.schema import SECTIONS, CompressorConfig, SlimConfig, TrainConfig
from torchslim.config.validation import build, plain, require_mapping, unknown_key_error
from torchslim.registry import Registry

OVERRIDE_SOURCE = "<overrides>"
_INSTANCE_NAME = re.compile(r"[^\s.\[\]'\"]+")
_MERGE_TAG = "tag:yaml.org,2002:merge"


# ----------------------------------------------------------------------------- public entry points


def load_config(path: str | os.PathLike) -> SlimConfig:
    """Read, merge (``include``) and validate a YAML config file."""
    source = os.fspath(path)
    data, origins = _load_file(Path(source), source, stack=(), site=None)
    return _parse(data, origins, source)


def loads_config(
    text: str, source: str = "<string>", base_dir: str | os.PathLike | None = None
) -> SlimConfig:
    """Validate YAML text; ``include`` paths are relative to ``base_dir`` (default: cwd)."""
    data, lines = _parse_yaml(text, source)
    data = _top_mapping(data, source)
    origins = Origins(source, {path: (source, line) for path, line in lines.items()})
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    data, origins = _resolve_includes(data, origins, source, base, stack=())
    return _parse(data, origins, source)


def parse_config(
    mapping: Mapping[str, Any], source: str = "<string>", base_dir: str | os.PathLike | None = None
) -> SlimConfig:
    """Validate an already-loaded mapping (e.g. from YAML or JSON).

    ``include`` paths are relative to ``base_dir``, else to the folder of ``source`` when
    that is an existing file, else to the working directory.
    """
    data = _top_mapping(mapping, source)
    if base_dir is None:
        base_dir = os.path.dirname(source) if os.path.isfile(source) else os.getcwd()
    data, origins = _resolve_includes(data, Origins(source), source, Path(base_dir), stack=())
    return _parse(data, origins, source)


def apply_overrides(
    config: SlimConfig, overrides: Mapping[str, Any], source: str = OVERRIDE_SOURCE
) -> SlimConfig:
    """A new config with dotted keys set, e.g. ``{"compressor.epoch": 3, "train.lr": 0.01}``.

    Missing intermediate mappings are created; the result is validated like a file, and
    problems caused by an override are reported against ``source``.
    """
    data = config.to_dict()
    origins = getattr(config, "_origins", None) or Origins(config.source)
    origins = origins.copy()
    for key, value in overrides.items():
        if not isinstance(key, str) or not key:
            raise make_error(source, (), f"override keys must be dotted key strings, {got(key)}")
        parts = tuple(key.split("."))
        if any(not part for part in parts):
            raise make_error(source, (), f"bad override key {short_repr(key)}: empty part")
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise make_error(
                    source, parts[: i + 1], f"cannot set {key!r}: this is not a mapping, {got(child)}"
                )
            node = child
        node[parts[-1]] = value
        origins.forget_below(parts)
        origins.where[parts] = (source, None)
    return _parse(data, origins, config.source)


def parse_override(text: str, source: str = OVERRIDE_SOURCE) -> tuple[str, Any]:
    """``"train.lr=0.01"`` -> ``("train.lr", 0.01)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise make_error(source, (), f"expected KEY=VALUE, got {short_repr(text)}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise make_error(
            source, tuple(key.split(".")), f"cannot read value {short_repr(raw)}: {_one_line(exc)}"
        ) from None
    return key, value


# ----------------------------------------------------------------------------- files, YAML, includes


def _load_file(
    path: Path, source: str, stack: tuple[Path, ...], site: tuple[Context, KeyPath] | None
) -> tuple[dict, Origins]:
    """Load one file and, recursively, what it includes. ``site`` is where an include
    was written (to report a missing file or a cycle there)."""

    def fail(problem: str):
        if site is None:
            return make_error(source, (), problem)
        ctx, where = site
        return ctx.error(where, f"included file {source}: {problem}")

    try:
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise fail(f"bad path: {exc}") from None
    if resolved in stack:
        chain = " -> ".join(str(p) for p in (*stack[stack.index(resolved) :], resolved))
        raise fail(f"include cycle: {chain}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise fail("file not found") from None
    except IsADirectoryError:
        raise fail("is a directory, not a config file") from None
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    data, lines = _parse_yaml(text, source)
    data = _top_mapping(data, source)
    origins = Origins(source, {key: (source, line) for key, line in lines.items()})
    return _resolve_includes(data, origins, source, path.parent, (*stack, resolved))


def _resolve_includes(
    data: dict, origins: Origins, source: str, base: Path, stack: tuple[Path, ...]
) -> tuple[dict, Origins]:
    """Merge the files named by ``include`` under ``data`` (``data`` wins)."""
    if "include" not in data:
        return data, origins
    data = dict(data)
    value = data.pop("include")
    ctx = Context(origins)
    if value is None:
        names: list[tuple[KeyPath, Any]] = []
    elif isinstance(value, list):
        names = [(("include", i), item) for i, item in enumerate(value)]
    else:
        names = [(("include",), value)]
    merged: dict = {}
    merged_origins = Origins(origins.default)
    for where, name in names:
        if not isinstance(name, str) or not name.strip():
            raise ctx.error(where, f"expected a file path (or a list of them), {got(name)}")
        target = Path(os.path.normpath(base / os.path.expanduser(name)))
        child, child_origins = _load_file(target, str(target), stack, site=(ctx, where))
        merged = _merge(merged, child, (), merged_origins)
        merged_origins.update(child_origins)
    merged = _merge(merged, data, (), merged_origins)
    origins.forget_below(("include",))
    merged_origins.update(origins)
    return merged, merged_origins


def _merge(base: dict, over: dict, path: KeyPath, origins: Origins) -> dict:
    """Deep merge: mappings merge key by key, anything else in ``over`` replaces."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            out[key] = _merge(old, value, (*path, key), origins)
        else:
            if key in out:
                origins.forget_below((*path, key))
            out[key] = value
    return out


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _parse_yaml(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    """YAML text -> (data, line of each key path). Duplicate keys are errors."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        lines: dict[KeyPath, int] = {}
        if node is not None:
            _walk(node, (), lines, set(), source)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        where = f"line {line}, column {mark.column + 1}" if mark is not None else "YAML"
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        error = make_error(source, (), f"{where}: invalid YAML: {' '.join(problem.split())}")
        error.line = line
        raise error from None
    except yaml.YAMLError as exc:
        raise make_error(source, (), f"invalid YAML: {_one_line(exc)}") from None
    except RecursionError:
        raise make_error(source, (), "invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        # PyYAML's constructors let these escape for values such as 2020-13-45 or !!int abc
        raise make_error(source, (), f"invalid YAML value: {_one_line(exc)}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, lines


def _walk(node: Node, path: KeyPath, lines: dict[KeyPath, int], seen: set[int], source: str) -> None:
    """Record the line of every key and list item; reject duplicate keys."""
    if id(node) in seen:  # an alias: already walked
        return
    seen.add(id(node))
    if isinstance(node, MappingNode):
        keys: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                _walk(value_node, path, lines, seen, source)
                continue
            line = key_node.start_mark.line + 1
            ident = (key_node.tag, key_node.value)
            child = (*path, key_node.value)
            if ident in keys:
                error = make_error(
                    source, child, f"duplicate key (first defined on line {keys[ident]})", line
                )
                raise error
            keys[ident] = line
            lines.setdefault(child, line)
            _walk(value_node, child, lines, seen, source)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            lines.setdefault((*path, i), item.start_mark.line + 1)
            _walk(item, (*path, i), lines, seen, source)


def _top_mapping(data: Any, source: str) -> dict:
    if data is None:
        raise make_error(source, (), "the config is empty; expected a mapping of sections")
    if not isinstance(data, Mapping):
        raise make_error(source, (), f"the top level must be a mapping of sections, {got(data)}")
    for key in data:
        if not isinstance(key, str):
            raise make_error(source, (), f"section names must be strings, {got(key)}")
    return dict(data)


# ----------------------------------------------------------------------------- validation


def _parse(data: dict, origins: Origins, source: str) -> SlimConfig:
    ctx = Context(origins)
    for key in data:
        if key not in SECTIONS:
            raise unknown_key_error(ctx, (), key, [*SECTIONS, "include"], {})
    if "compressor" not in data:
        raise ctx.error(("compressor",), "required section is missing")
    config = SlimConfig(
        version=_version(ctx, data.get("version", 1.0)),
        pruners=_instances(ctx, data, "pruners", PRUNER_CONFIGS),
        controllers=_instances(ctx, data, "controllers", CONTROLLER_CONFIGS),
        distillers=_raw_instances(ctx, data, "distillers"),
        quantizers=_raw_instances(ctx, data, "quantizers"),
        strategies=_instances(ctx, data, "strategies", STRATEGY_CONFIGS),
        compressor=build(CompressorConfig, ctx, ("compressor",), data["compressor"]),
        train=build(TrainConfig, ctx, ("train",), data.get("train")),
        source=source,
    )
    _check_references(ctx, config)
    config._origins = origins
    return config


def _version(ctx: Context, value: Any) -> float:
    text = value if isinstance(value, str) else repr(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | str)
        or text.strip() not in ("1", "1.0")
    ):
        raise ctx.error(("version",), f"unsupported version {short_repr(value)}; torchslim reads version 1.0")
    return 1.0


def _check_name(ctx: Context, path: KeyPath, name: str) -> None:
    if not _INSTANCE_NAME.fullmatch(name):
        raise ctx.error(
            path, "instance names must be non-empty and contain no spaces, dots, brackets or quotes"
        )


def _class_of(ctx: Context, path: KeyPath, entry: dict, classes: Registry[type], section: str) -> type:
    """The config dataclass that ``entry``'s ``class`` names, looked up in the section's registry."""
    name = _class_name(ctx, path, entry)
    if name in classes:
        return classes.get(name)
    supported = f"(supported {section}: {', '.join(class_names(classes))})"
    if name in UNSUPPORTED_CLASSES:
        raise ctx.error((*path, "class"), f"{name}: {UNSUPPORTED_CLASSES[name]} {supported}")
    close = did_you_mean(name, class_names(classes))
    raise ctx.error((*path, "class"), f"unknown class {short_repr(name)}{close} {supported}")


def _class_name(ctx: Context, path: KeyPath, entry: dict) -> str:
    if "class" not in entry:
        raise ctx.error((*path, "class"), "required key is missing")
    name = entry["class"]
    if not isinstance(name, str) or not name.strip():
        raise ctx.error((*path, "class"), f"expected a class name string, {got(name)}")
    return name


def _entries(ctx: Context, data: dict, section: str) -> Iterator[tuple[KeyPath, str, dict]]:
    """``(path, instance name, mapping)`` of every entry of a section of named instances."""
    entries = require_mapping(ctx, (section,), data.get(section), allow_null=True)
    for name, entry in entries.items():
        path = (section, name)
        _check_name(ctx, path, name)
        yield path, name, require_mapping(ctx, path, entry)


def _instances(ctx: Context, data: dict, section: str, classes: Registry[type]) -> dict[str, Any]:
    out = {}
    for path, name, entry in _entries(ctx, data, section):
        cls = _class_of(ctx, path, entry, classes, section)
        out[name] = build(cls, ctx, path, entry, ignore=("class",), name=name)
    return out


def _raw_instances(ctx: Context, data: dict, section: str) -> dict[str, dict[str, Any]]:
    """distillers / quantizers: kept raw, checked only as mappings with a ``class``."""
    out = {}
    for path, name, entry in _entries(ctx, data, section):
        _class_name(ctx, path, entry)
        out[name] = plain(ctx, path, entry)
    return out


def _check_references(ctx: Context, config: SlimConfig) -> None:
    for name, strategy in config.strategies.items():
        for field_name, section in strategy.references:
            value = getattr(strategy, field_name)
            targets = value if isinstance(value, list) else [value]
            defined = getattr(config, section)
            for i, target in enumerate(targets):
                if target is None or target in defined:
                    continue
                where = ("strategies", name, field_name) + ((i,) if isinstance(value, list) else ())
                listing = (
                    f"defined {section}: {', '.join(defined)}" if defined else f"no {section} are defined"
                )
                raise ctx.error(
                    where,
                    f"unknown {section[:-1]} {short_repr(target)}{did_you_mean(target, defined)} ({listing})",
                )
    for i, name in enumerate(config.compressor.strategies):
        if name not in config.strategies:
            defined = config.strategies
            listing = f"defined strategies: {', '.join(defined)}" if defined else "no strategies are defined"
            raise ctx.error(
                ("compressor", "strategies", i),
                f"unknown strategy {short_repr(name)}{did_you_mean(name, defined)} ({listing})",
            )
